/* Vector registers survive system calls, as Linux promises: two threads fill
 * XMM (and, where the CPU has AVX, the upper halves of YMM) registers with
 * patterns of their own, then make system calls that switch between them
 * (sched_yield), and check their patterns after each one. */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

static int have_avx;
static int failures;

static void check_xmm(uint64_t pattern) {
    uint64_t out[2];
    __asm__ volatile(
        "movq %[p], %%xmm6\n\t"
        "pinsrq $1, %[p], %%xmm6\n\t"
        "mov $24, %%eax\n\t" /* sched_yield */
        "syscall\n\t"
        "movdqu %%xmm6, %[out]\n\t"
        : [out] "=m"(out)
        : [p] "r"(pattern)
        : "rax", "rcx", "r11", "xmm6", "memory");
    if (out[0] != pattern || out[1] != pattern)
        __atomic_add_fetch(&failures, 1, __ATOMIC_SEQ_CST);
}

__attribute__((target("avx"))) static void check_ymm(uint64_t pattern) {
    uint64_t out[4];
    __asm__ volatile(
        "vmovq %[p], %%xmm7\n\t"
        "vpinsrq $1, %[p], %%xmm7, %%xmm7\n\t"
        "vinsertf128 $1, %%xmm7, %%ymm7, %%ymm7\n\t"
        "mov $24, %%eax\n\t"
        "syscall\n\t"
        "vmovdqu %%ymm7, %[out]\n\t"
        : [out] "=m"(out)
        : [p] "r"(pattern)
        : "rax", "rcx", "r11", "xmm7", "memory");
    for (int i = 0; i < 4; i++)
        if (out[i] != pattern)
            __atomic_add_fetch(&failures, 1, __ATOMIC_SEQ_CST);
}

static void *work(void *arg) {
    uint64_t pattern = (uint64_t)(uintptr_t)arg;
    for (int i = 0; i < 1000; i++) {
        check_xmm(pattern + i);
        if (have_avx)
            check_ymm(~(pattern + i));
    }
    return NULL;
}

int main(void) {
    __builtin_cpu_init();
    have_avx = __builtin_cpu_supports("avx");
    pthread_t a, b;
    pthread_create(&a, NULL, work, (void *)0x1111111111111111ULL);
    pthread_create(&b, NULL, work, (void *)0x2222222222222222ULL);
    pthread_join(a, NULL);
    pthread_join(b, NULL);
    printf("vectors: %s, %d mismatches\n", have_avx ? "xmm and ymm" : "xmm", failures);
    return failures != 0;
}
