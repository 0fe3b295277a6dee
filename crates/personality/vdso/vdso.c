/*
 * The Linux personality's vDSO: clock_gettime, gettimeofday, time,
 * clock_getres and getcpu answered in the program's own code, as Linux's vDSO
 * answers them, so that reading the clock costs an `rdtsc` and a few multiplies
 * instead of a trip through the personality's entry (which saves and restores
 * every register and the vector state).
 *
 * The personality maps this object's file image (linked at 0) with one data page
 * (`vvar`) right below it, as Linux lays out [vvar][vdso], and fills that page
 * once at start with the calibration its own clocks use (libos::time). The
 * values never change afterwards, so no sequence counter is needed and any
 * thread may read them at any time. The arithmetic below is exactly that of
 * libos::time::monotonic and wall_clock, so a program sees one clock whether it
 * asks here or through the system call.
 *
 * Clocks this file does not handle (the CPU-time clocks, the alarm clocks, any
 * other number) go to the real `syscall` instruction, which the personality
 * answers, as Linux's vDSO falls back to its system call.
 *
 * Built freestanding (no libc, no libgcc: no 128-bit division helper, so the one
 * 128-by-64-bit division is `divq` itself), position-independent and with no
 * dynamic relocation: the data page is reached RIP-relative through a hidden
 * symbol the linker script places a page below the image.
 */

typedef unsigned long u64;
typedef long i64;

struct timespec_ {
	i64 tv_sec;
	i64 tv_nsec;
};
struct timeval_ {
	i64 tv_sec;
	i64 tv_usec;
};

/* Must match `VvarData` in crates/personality/src/vdso.rs. */
struct vvar_data {
	u64 magic;           /* VVAR_MAGIC once the personality filled the page */
	u64 boot_tsc;        /* the TSC when the guest started */
	u64 tsc_hz;          /* TSC ticks per second, never 0 once filled */
	u64 wall_at_boot_ns; /* the host's wall-clock time at start, ns since the epoch */
};

#define VVAR_MAGIC 0x7261767673706c6cUL /* "llpsvvar" */
#define NSEC_PER_SEC 1000000000UL

extern const volatile struct vvar_data vvar_page __attribute__((visibility("hidden")));

#define CLOCK_REALTIME 0
#define CLOCK_MONOTONIC 1
#define CLOCK_MONOTONIC_RAW 4
#define CLOCK_REALTIME_COARSE 5
#define CLOCK_MONOTONIC_COARSE 6
#define CLOCK_BOOTTIME 7
#define CLOCK_TAI 11

#define NR_gettimeofday 96
#define NR_time 201
#define NR_clock_gettime 228
#define NR_clock_getres 229
#define NR_getcpu 309

/* The system call itself, in the `mov $NR, %eax; syscall` form the personality
 * rewrites into a direct jump after its first trap. */
#define SYSCALL2(nr, a, b)                                                      \
	({                                                                      \
		long ret_;                                                      \
		register long a_ __asm__("rdi") = (long)(a);                    \
		register long b_ __asm__("rsi") = (long)(b);                    \
		__asm__ volatile("mov %[n], %%eax\n\tsyscall"                   \
				 : "=a"(ret_)                                   \
				 : [n] "i"(nr), "r"(a_), "r"(b_)                \
				 : "rcx", "r11", "memory");                     \
		ret_;                                                           \
	})

static inline u64 rdtsc(void)
{
	unsigned int lo, hi;
	__asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
	return ((u64)hi << 32) | lo;
}

/* (hi:lo) / d, where hi < d so the quotient fits in 64 bits. */
static inline u64 div128(u64 hi, u64 lo, u64 d)
{
	u64 q, r;
	__asm__("divq %4" : "=a"(q), "=d"(r) : "a"(lo), "d"(hi), "rm"(d));
	return q;
}

/* libos::time::monotonic: TSC ticks since start (never below 0), as seconds and
 * nanoseconds, each rounded down exactly as ticks_to_duration does. */
static inline void monotonic(const volatile struct vvar_data *d, u64 *secs, u64 *nanos)
{
	u64 now = rdtsc(), boot = d->boot_tsc, hz = d->tsc_hz;
	u64 ticks = now > boot ? now - boot : 0;
	u64 rem = ticks % hz;
	unsigned __int128 product = (unsigned __int128)rem * NSEC_PER_SEC;
	*secs = ticks / hz;
	*nanos = div128((u64)(product >> 64), (u64)product, hz);
}

/* libos::time::wall_clock: the wall-clock time at start plus monotonic. */
static inline void wall_clock(const volatile struct vvar_data *d, u64 *secs, u64 *nanos)
{
	u64 boot_ns = d->wall_at_boot_ns;
	u64 s, n;
	monotonic(d, &s, &n);
	s += boot_ns / NSEC_PER_SEC;
	n += boot_ns % NSEC_PER_SEC;
	if (n >= NSEC_PER_SEC) {
		n -= NSEC_PER_SEC;
		s += 1;
	}
	*secs = s;
	*nanos = n;
}

static inline const volatile struct vvar_data *data(void)
{
	const volatile struct vvar_data *d = &vvar_page;
	return d->magic == VVAR_MAGIC && d->tsc_hz != 0 ? d : 0;
}

static inline int is_realtime(long clock)
{
	return clock == CLOCK_REALTIME || clock == CLOCK_REALTIME_COARSE || clock == CLOCK_TAI;
}

static inline int is_monotonic(long clock)
{
	return clock == CLOCK_MONOTONIC || clock == CLOCK_MONOTONIC_RAW ||
	       clock == CLOCK_MONOTONIC_COARSE || clock == CLOCK_BOOTTIME;
}

int __vdso_clock_gettime(long clock, struct timespec_ *ts)
{
	const volatile struct vvar_data *d = data();
	u64 secs, nanos;
	if (!d || !ts)
		return SYSCALL2(NR_clock_gettime, clock, ts);
	if (is_realtime(clock))
		wall_clock(d, &secs, &nanos);
	else if (is_monotonic(clock))
		monotonic(d, &secs, &nanos);
	else
		return SYSCALL2(NR_clock_gettime, clock, ts);
	ts->tv_sec = (i64)secs;
	ts->tv_nsec = (i64)nanos;
	return 0;
}

int __vdso_gettimeofday(struct timeval_ *tv, void *tz)
{
	const volatile struct vvar_data *d = data();
	u64 secs, nanos;
	if (!d)
		return SYSCALL2(NR_gettimeofday, tv, tz);
	/* The personality's gettimeofday leaves `tz` alone; so does this one. */
	if (tv) {
		wall_clock(d, &secs, &nanos);
		tv->tv_sec = (i64)secs;
		tv->tv_usec = (i64)(nanos / 1000);
	}
	return 0;
}

i64 __vdso_time(i64 *t)
{
	const volatile struct vvar_data *d = data();
	u64 secs, nanos;
	if (!d)
		return SYSCALL2(NR_time, t, 0);
	wall_clock(d, &secs, &nanos);
	if (t)
		*t = (i64)secs;
	return (i64)secs;
}

int __vdso_clock_getres(long clock, struct timespec_ *res)
{
	/* The clocks count TSC ticks; like the personality, report a nanosecond. */
	if (!is_realtime(clock) && !is_monotonic(clock))
		return SYSCALL2(NR_clock_getres, clock, res);
	if (res) {
		res->tv_sec = 0;
		res->tv_nsec = 1;
	}
	return 0;
}

long __vdso_getcpu(unsigned *cpu, unsigned *node, void *cache)
{
	/* One vCPU, one node: what the personality's getcpu answers. */
	(void)cache;
	if (cpu)
		*cpu = 0;
	if (node)
		*node = 0;
	return 0;
}

/* The unprefixed names Linux's vDSO exports too, same code. */
int clock_gettime(long, struct timespec_ *) __attribute__((weak, alias("__vdso_clock_gettime")));
int gettimeofday(struct timeval_ *, void *) __attribute__((weak, alias("__vdso_gettimeofday")));
i64 time(i64 *) __attribute__((weak, alias("__vdso_time")));
int clock_getres(long, struct timespec_ *) __attribute__((weak, alias("__vdso_clock_getres")));
long getcpu(unsigned *, unsigned *, void *) __attribute__((weak, alias("__vdso_getcpu")));
