/* The system-call cost benchmark: nanoseconds per call of
 *
 *   getppid        glibc's getppid() wrapper, whose site is `mov $110,%eax;
 *                  syscall`: under lightvm's Linux personality the first call
 *                  traps into the monitor and the site is rewritten into a jump
 *                  into the library OS, so the timed calls (after a warm-up)
 *                  take the rewritten path;
 *   syscall        syscall(SYS_getppid) through glibc's generic syscall(), which
 *                  loads the number with `mov %rdi,%rax`: its site is never
 *                  rewritten, so in the guest every call traps (the cost of a
 *                  call's first use, paid every time);
 *   clock_gettime  clock_gettime(CLOCK_MONOTONIC): the kernel's vDSO on a
 *                  host, the personality's vDSO in the guest (no system call
 *                  on either);
 *   first_getppid  the very first getppid() of the program, timed alone: in the
 *                  guest, the trap that finds the site and rewrites it.
 *
 * Each kind is timed in batches of a calibrated number of calls lasting at
 * least BATCH_NS, so that the clock's own cost is under a percent of a batch;
 * the figure printed is the median batch's ns per call. One machine-readable
 * line, parsed by `lightvm bench syscall`:
 *
 *   lightvm-bench syscall getppid=NS syscall=NS clock_gettime=NS first_getppid=NS
 *
 * The same static binary runs as a host process, in a container and, unmodified,
 * through the personality on each lightvm platform. */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define BATCH_NS 4000000ull /* 4 ms */
#define BATCHES 5
#define WARMUP_CALLS 64

static volatile long sink;

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Each kind is a function called in a loop; noinline keeps one call site of
 * each library function, so that the site warmed up is the one timed. */
static __attribute__((noinline)) void call_getppid(void) { sink += getppid(); }

static __attribute__((noinline)) void call_syscall(void) { sink += syscall(SYS_getppid); }

static __attribute__((noinline)) void call_clock_gettime(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    sink += ts.tv_nsec;
}

static uint64_t batch(void (*call)(void), uint64_t calls) {
    uint64_t start = now_ns();
    for (uint64_t i = 0; i < calls; i++) {
        call();
    }
    return now_ns() - start;
}

static int by_value(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Median ns per call over BATCHES batches of at least BATCH_NS each. */
static double per_call(void (*call)(void)) {
    for (int i = 0; i < WARMUP_CALLS; i++) {
        call();
    }
    uint64_t calls = 16;
    while (batch(call, calls) < BATCH_NS / 4 && calls < (1ull << 40)) {
        calls *= 2;
    }
    calls *= 4;
    double figures[BATCHES];
    for (int i = 0; i < BATCHES; i++) {
        figures[i] = (double)batch(call, calls) / (double)calls;
    }
    qsort(figures, BATCHES, sizeof figures[0], by_value);
    return figures[BATCHES / 2];
}

int main(void) {
    /* The clock first (its own site warmed up), then the first getppid alone. */
    for (int i = 0; i < WARMUP_CALLS; i++) {
        sink += (long)now_ns();
    }
    uint64_t start = now_ns();
    call_getppid();
    uint64_t first = now_ns() - start;

    double getppid_ns = per_call(call_getppid);
    double syscall_ns = per_call(call_syscall);
    double clock_ns = per_call(call_clock_gettime);
    printf("lightvm-bench syscall getppid=%.1f syscall=%.1f clock_gettime=%.1f first_getppid=%llu\n",
           getppid_ns, syscall_ns, clock_ns, (unsigned long long)first);
    return 0;
}
