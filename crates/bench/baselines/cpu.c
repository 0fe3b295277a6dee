/* The CPU suite's fixed compute kernel, as a process. guests/cpu is the same
 * kernel as a unikernel: a serial xorshift64 chain (every step depends on the one
 * before, so no compiler can vectorise or shorten it) folded into a checksum that
 * both must print identically, proving they did the same work.
 *
 * Prints: lightvm-bench cpu iterations=N ns=T checksum=0xHEX */
#include <inttypes.h>
#include <stdio.h>
#include <time.h>

#define ITERATIONS 20000000ULL

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static uint64_t kernel(uint64_t iterations) {
    uint64_t x = 0x9E3779B97F4A7C15ULL, acc = 0;
    for (uint64_t i = 0; i < iterations; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        acc += x * (i | 1);
    }
    return acc ^ x;
}

int main(void) {
    uint64_t start = now_ns();
    uint64_t checksum = kernel(ITERATIONS);
    uint64_t elapsed = now_ns() - start;
    printf("lightvm-bench cpu iterations=%llu ns=%" PRIu64 " checksum=0x%016" PRIx64 "\n",
           ITERATIONS, elapsed, checksum);
    return 0;
}
