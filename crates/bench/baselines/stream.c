/* The CPU suite's memory-bandwidth kernel, as a process: STREAM's copy, scale,
 * add and triad (McCalpin) over three arrays of N doubles, each kernel run NTIMES
 * and the best time kept, as STREAM reports it. guests/stream is the same kernel
 * as a unikernel. The arrays (3 x 32 MiB) are larger than the last-level cache.
 *
 * Prints: lightvm-bench stream n=N copy=MB/s scale=MB/s add=MB/s triad=MB/s checksum=X */
#include <stdint.h>
#include <stdio.h>
#include <time.h>

#define N (4 * 1024 * 1024)
#define NTIMES 5

static double a[N], b[N], c[N];

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static double mbps(double bytes, uint64_t ns) { return ns ? bytes * 1000.0 / (double)ns : 0.0; }

int main(void) {
    const double scalar = 3.0;
    uint64_t best[4] = {UINT64_MAX, UINT64_MAX, UINT64_MAX, UINT64_MAX};
    for (long j = 0; j < N; j++) {
        a[j] = 1.0;
        b[j] = 2.0;
        c[j] = 0.0;
    }
    for (int k = 0; k < NTIMES; k++) {
        uint64_t t[5];
        t[0] = now_ns();
        for (long j = 0; j < N; j++) c[j] = a[j];
        t[1] = now_ns();
        for (long j = 0; j < N; j++) b[j] = scalar * c[j];
        t[2] = now_ns();
        for (long j = 0; j < N; j++) c[j] = a[j] + b[j];
        t[3] = now_ns();
        for (long j = 0; j < N; j++) a[j] = b[j] + scalar * c[j];
        t[4] = now_ns();
        for (int i = 0; i < 4; i++)
            if (t[i + 1] - t[i] < best[i]) best[i] = t[i + 1] - t[i];
    }
    double sum = 0.0;
    for (long j = 0; j < N; j++) sum += a[j] + b[j] + c[j];
    const double words = (double)N * sizeof(double);
    printf("lightvm-bench stream n=%d copy=%.0f scale=%.0f add=%.0f triad=%.0f checksum=%.0f\n", N,
           mbps(2 * words, best[0]), mbps(2 * words, best[1]), mbps(3 * words, best[2]),
           mbps(3 * words, best[3]), sum);
    return 0;
}
