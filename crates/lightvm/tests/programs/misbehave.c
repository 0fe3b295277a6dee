/* Programs that go wrong, one way per argument:
 *   wild    writes through a pointer to memory it never mapped;
 *   enosys  makes a system call no kernel has (number 1000), through glibc's
 *           syscall(), whose site an earlier call got rewritten;
 *   fork    forks, which a unikernel's one process cannot;
 *   spin    has a thread spin forever while main waits for it. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

static void *spin(void *arg) {
    volatile unsigned long *counter = arg;
    for (;;)
        (*counter)++;
    return NULL;
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "";
    if (!strcmp(mode, "wild")) {
        printf("writing to 0x7ead00000000\n");
        fflush(stdout);
        *(volatile int *)0x7ead00000000UL = 1;
        printf("the write went through\n");
        return 0;
    }
    if (!strcmp(mode, "enosys")) {
        syscall(SYS_getppid);
        long result = syscall(1000, 1, 2, 3);
        printf("syscall 1000 = %ld errno=%d\n", result, errno);
        return 0;
    }
    if (!strcmp(mode, "fork")) {
        pid_t pid = fork();
        printf("fork = %d errno=%d\n", (int)pid, pid < 0 ? errno : 0);
        return pid < 0 ? 3 : 0;
    }
    if (!strcmp(mode, "spin")) {
        static unsigned long counter;
        pthread_t thread;
        pthread_create(&thread, NULL, spin, &counter);
        printf("spinning\n");
        fflush(stdout);
        pthread_join(thread, NULL);
        return 0;
    }
    fprintf(stderr, "usage: misbehave wild|enosys|fork|spin\n");
    return 2;
}
