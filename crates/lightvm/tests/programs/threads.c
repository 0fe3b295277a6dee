/* Threads as a program uses them: four pthreads contend for a mutex (futex
 * waits and wakes, sched_yield), wait on a condition variable broadcast by main,
 * sleep, keep thread-local values, and return them through pthread_join. */
#include <pthread.h>
#include <stdio.h>
#include <unistd.h>
#include <time.h>
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static long counter;
static int ready;
static __thread int mine;
static void *worker(void *arg) {
    long id = (long)arg;
    mine = (int)id;
    for (int i = 0; i < 100000; i++) {
        pthread_mutex_lock(&lock);
        counter++;
        pthread_mutex_unlock(&lock);
        if (i % 10000 == 0) sched_yield();
    }
    pthread_mutex_lock(&lock);
    while (!ready) pthread_cond_wait(&cond, &lock);
    pthread_mutex_unlock(&lock);
    usleep(1000 * id);
    return (void *)(long)(mine * 10);
}
int main(void) {
    pthread_t t[4];
    for (long i = 0; i < 4; i++) pthread_create(&t[i], NULL, worker, (void *)(i + 1));
    usleep(20000);
    pthread_mutex_lock(&lock);
    ready = 1;
    pthread_cond_broadcast(&cond);
    pthread_mutex_unlock(&lock);
    long sum = 0;
    for (int i = 0; i < 4; i++) { void *r; pthread_join(t[i], &r); sum += (long)r; }
    printf("counter=%ld sum=%ld\n", counter, sum);
    return 0;
}
