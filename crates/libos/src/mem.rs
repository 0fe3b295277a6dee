//! `memcpy`, `memmove`, `memset`, `memcmp` and `bcmp`: the C functions the compiler
//! calls for copies, fills and comparisons.
//!
//! On `x86_64-unknown-linux-gnu` the C library provides them, and guests link with
//! `-nostdlib`, so `libos` must. `memcpy` and `memset` use `rep movsb` / `rep stosb`
//! in inline assembly: a plain Rust loop is exactly what LLVM recognises and turns
//! back into a call to `memcpy`, which would then call itself forever. On CPUs with
//! ERMSB (every recent x86) these instructions are also the fast way to copy.
//! The comparisons are byte loops, which LLVM does not turn into calls.

/// Copies `n` bytes from `src` to `dest`, which must not overlap; returns `dest`.
///
/// # Safety
///
/// `src` must be valid for reads and `dest` for writes of `n` bytes, and the two
/// ranges must not overlap.
#[no_mangle]
pub unsafe extern "C" fn memcpy(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // SAFETY: the caller guarantees both ranges; `rep movsb` copies rcx bytes forward
    // from rsi to rdi and touches nothing else. DF is clear, as the ABI requires.
    unsafe {
        core::arch::asm!(
            "rep movsb",
            inout("rcx") n => _,
            inout("rsi") src => _,
            inout("rdi") dest => _,
            options(nostack, preserves_flags),
        );
    }
    dest
}

/// Copies `n` bytes from `src` to `dest`, which may overlap; returns `dest`.
///
/// # Safety
///
/// `src` must be valid for reads and `dest` for writes of `n` bytes.
#[no_mangle]
pub unsafe extern "C" fn memmove(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // `dest - src` (mod 2^64) is at least `n` exactly when `dest` lies before `src` or
    // at or after its end: then a forward copy never reads a byte it already wrote.
    if (dest as usize).wrapping_sub(src as usize) >= n {
        // SAFETY: the caller guarantees both ranges; forward copying is correct here
        // (see above), byte by byte as `rep movsb` is architecturally defined.
        unsafe {
            core::arch::asm!(
                "rep movsb",
                inout("rcx") n => _,
                inout("rsi") src => _,
                inout("rdi") dest => _,
                options(nostack, preserves_flags),
            );
        }
    } else {
        // `dest` lies inside `src..src+n` (so n > 0): copy from the last byte down.
        // SAFETY: the caller guarantees both ranges; with DF set `rep movsb` walks them
        // backwards from their last bytes (n > 0, so `add(n - 1)` stays inside), and DF
        // is cleared again before the block ends, as Rust's asm rules require.
        unsafe {
            core::arch::asm!(
                "std",
                "rep movsb",
                "cld",
                inout("rcx") n => _,
                inout("rsi") src.add(n - 1) => _,
                inout("rdi") dest.add(n - 1) => _,
                options(nostack),
            );
        }
    }
    dest
}

/// Fills `n` bytes at `dest` with the byte `c`; returns `dest`.
///
/// # Safety
///
/// `dest` must be valid for writes of `n` bytes.
#[no_mangle]
pub unsafe extern "C" fn memset(dest: *mut u8, c: i32, n: usize) -> *mut u8 {
    // SAFETY: the caller guarantees the range; `rep stosb` stores al rcx times from rdi
    // forward and touches nothing else. C converts `c` to unsigned char: the low byte.
    unsafe {
        core::arch::asm!(
            "rep stosb",
            inout("rcx") n => _,
            inout("rdi") dest => _,
            in("al") c as u8,
            options(nostack, preserves_flags),
        );
    }
    dest
}

/// Compares `n` bytes as unsigned chars: negative, zero or positive as `a` sorts
/// before, equal to or after `b`.
///
/// # Safety
///
/// `a` and `b` must be valid for reads of `n` bytes.
#[no_mangle]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    let mut i = 0;
    while i < n {
        // SAFETY: i < n, and the caller guarantees n readable bytes at both.
        let (x, y) = unsafe { (*a.add(i), *b.add(i)) };
        if x != y {
            return i32::from(x) - i32::from(y);
        }
        i += 1;
    }
    0
}

/// Compares `n` bytes for equality only: zero if equal. LLVM turns `memcmp(..) == 0`
/// into calls to this.
///
/// # Safety
///
/// `a` and `b` must be valid for reads of `n` bytes.
#[no_mangle]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: same contract as memcmp.
    unsafe { memcmp(a, b, n) }
}
