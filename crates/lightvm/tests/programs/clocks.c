/* The clocks through the vDSO: the program finds the vDSO the kernel (or the
 * personality) names in its auxiliary vector, finds __vdso_clock_gettime in its
 * dynamic symbol table as musl does (DT_HASH, version LINUX_2.6), and checks that
 * the C library's clock_gettime, gettimeofday and time agree with the system
 * call's answers: each read lies between two system calls made around it, from
 * two threads at once. `libc-only` just reads each clock through the C library,
 * for a trace that should show no clock system call. */
#include <elf.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define ROUNDS 20000

static void fail(const char *what, long long a, long long b, long long c) {
    printf("FAIL %s: %lld %lld %lld\n", what, a, b, c);
    fflush(stdout);
    exit(1);
}

static long long ns(struct timespec t) { return t.tv_sec * 1000000000LL + t.tv_nsec; }

static long long sys_clock(clockid_t clock) {
    struct timespec t;
    if (syscall(SYS_clock_gettime, clock, &t) != 0)
        fail("syscall clock_gettime", clock, 0, 0);
    return ns(t);
}

/* The address of `name` (version LINUX_2.6) in the vDSO at `base`, or NULL. */
static void *vdso_symbol(unsigned long base, const char *name) {
    Elf64_Ehdr *eh = (Elf64_Ehdr *)base;
    Elf64_Phdr *ph = (Elf64_Phdr *)(base + eh->e_phoff);
    Elf64_Dyn *dyn = NULL;
    unsigned long bias = 0;
    for (int i = 0; i < eh->e_phnum; i++) {
        if (ph[i].p_type == PT_LOAD)
            bias = base + ph[i].p_offset - ph[i].p_vaddr;
        else if (ph[i].p_type == PT_DYNAMIC)
            dyn = (Elf64_Dyn *)(base + ph[i].p_offset);
    }
    if (!dyn)
        return NULL;
    const char *strings = NULL;
    Elf64_Sym *syms = NULL;
    Elf32_Word *hash = NULL;
    Elf64_Versym *versym = NULL;
    Elf64_Verdef *verdef = NULL;
    for (; dyn->d_tag != DT_NULL; dyn++) {
        void *p = (void *)(bias + dyn->d_un.d_ptr);
        switch (dyn->d_tag) {
        case DT_STRTAB: strings = p; break;
        case DT_SYMTAB: syms = p; break;
        case DT_HASH: hash = p; break;
        case DT_VERSYM: versym = p; break;
        case DT_VERDEF: verdef = p; break;
        }
    }
    if (!strings || !syms || !hash || !versym || !verdef)
        return NULL;
    for (Elf32_Word i = 0; i < hash[1]; i++) {
        if (!syms[i].st_shndx || ELF64_ST_TYPE(syms[i].st_info) != STT_FUNC)
            continue;
        if (strcmp(strings + syms[i].st_name, name) != 0)
            continue;
        /* Its version must be LINUX_2.6. */
        Elf64_Verdef *d = verdef;
        for (;;) {
            if (!(d->vd_flags & VER_FLG_BASE) && (d->vd_ndx & 0x7fff) == (versym[i] & 0x7fff)) {
                Elf64_Verdaux *aux = (Elf64_Verdaux *)((char *)d + d->vd_aux);
                if (strcmp(strings + aux->vda_name, "LINUX_2.6") == 0)
                    return (void *)(bias + syms[i].st_value);
            }
            if (!d->vd_next)
                break;
            d = (Elf64_Verdef *)((char *)d + d->vd_next);
        }
    }
    return NULL;
}

static void *check_clocks(void *arg) {
    (void)arg;
    long long last_mono = 0;
    for (int i = 0; i < ROUNDS; i++) {
        static const clockid_t clocks[] = {CLOCK_MONOTONIC, CLOCK_REALTIME};
        for (int c = 0; c < 2; c++) {
            struct timespec t;
            long long before = sys_clock(clocks[c]);
            if (clock_gettime(clocks[c], &t) != 0)
                fail("clock_gettime", clocks[c], 0, 0);
            long long after = sys_clock(clocks[c]);
            if (t.tv_nsec < 0 || t.tv_nsec >= 1000000000 || before > ns(t) || ns(t) > after)
                fail(c ? "realtime" : "monotonic", before, ns(t), after);
            if (c == 0) {
                if (ns(t) < last_mono)
                    fail("monotonic went backwards", last_mono, ns(t), 0);
                last_mono = ns(t);
            }
        }
        struct timeval tv, sys_tv;
        long long before = sys_clock(CLOCK_REALTIME) / 1000;
        gettimeofday(&tv, NULL);
        syscall(SYS_gettimeofday, &sys_tv, NULL);
        long long got = tv.tv_sec * 1000000LL + tv.tv_usec;
        if (before > got || got > sys_tv.tv_sec * 1000000LL + sys_tv.tv_usec || tv.tv_usec >= 1000000)
            fail("gettimeofday", before, got, sys_tv.tv_sec * 1000000LL + sys_tv.tv_usec);
        long long secs_before = sys_clock(CLOCK_REALTIME) / 1000000000LL;
        time_t stored = 0;
        time_t secs = time(&stored);
        long long secs_after = syscall(SYS_time, NULL);
        if (secs != stored || secs_before > secs || secs > secs_after)
            fail("time", secs_before, secs, secs_after);
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "libc-only") == 0) {
        struct timespec mono, real;
        clock_gettime(CLOCK_MONOTONIC, &mono);
        clock_gettime(CLOCK_REALTIME, &real);
        struct timeval tv;
        gettimeofday(&tv, NULL);
        time_t secs = time(NULL);
        printf("libc-only: %d\n", mono.tv_sec >= 0 && real.tv_sec > 1000000000 &&
                                       tv.tv_sec >= real.tv_sec && secs >= tv.tv_sec);
        return 0;
    }
    unsigned long base = getauxval(AT_SYSINFO_EHDR);
    printf("AT_SYSINFO_EHDR: %s\n", base ? "present" : "missing");
    if (!base)
        return 1;
    int (*vdso_gettime)(clockid_t, struct timespec *) = vdso_symbol(base, "__vdso_clock_gettime");
    const char *names[] = {"__vdso_gettimeofday", "__vdso_time", "__vdso_clock_getres",
                           "__vdso_getcpu", "clock_gettime"};
    int found = vdso_gettime != NULL;
    for (unsigned i = 0; i < sizeof names / sizeof *names; i++)
        found += vdso_symbol(base, names[i]) != NULL;
    printf("vDSO symbols found: %d of 6\n", found);
    if (!vdso_gettime)
        return 1;
    struct timespec t;
    long long before = sys_clock(CLOCK_MONOTONIC);
    int rc = vdso_gettime(CLOCK_MONOTONIC, &t);
    long long after = sys_clock(CLOCK_MONOTONIC);
    if (rc != 0 || before > ns(t) || ns(t) > after)
        fail("__vdso_clock_gettime", before, ns(t), after);
    /* A clock the vDSO leaves to the system call still gets an answer, also
     * once the vDSO's own `syscall` site is rewritten after its first trap. */
    for (int i = 0; i < 3; i++)
        if (vdso_gettime(CLOCK_PROCESS_CPUTIME_ID, &t) != 0)
            fail("__vdso_clock_gettime(CLOCK_PROCESS_CPUTIME_ID)", i, 0, 0);
    pthread_t other;
    pthread_create(&other, NULL, check_clocks, NULL);
    check_clocks(NULL);
    pthread_join(other, NULL);
    printf("clocks agree with the system calls\n");
    return 0;
}
