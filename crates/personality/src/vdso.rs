//! The vDSO: a tiny shared object mapped into every program and named in its
//! auxiliary vector (`AT_SYSINFO_EHDR`), so that glibc's and musl's
//! `clock_gettime`, `gettimeofday` and `time` read the clock in the program's own
//! code (an `rdtsc` and a few multiplies) instead of making a system call, which
//! here goes through the personality's entry and costs 5–6× as much.
//!
//! The object is `vdso/vdso.c`, built by `build.rs` with the host's C compiler.
//! It is laid out as Linux lays out its own vDSO: a data page (`[vvar]`) directly
//! below the image (`[vdso]`), which the code reaches RIP-relative, so the image is
//! copied as it is, with no relocation, wherever it goes. The data page holds the
//! calibration of `libos::time` (the TSC at start, its rate, the wall-clock time
//! at start), fixed once the guest has started: the vDSO computes exactly what the
//! personality's `clock_gettime` computes, and as the values never change no
//! sequence counter is needed for any thread to read them.
//!
//! The personality's memory model does not enforce protections (see
//! `personality_core::mm`): the data page is recorded read-only, as Linux maps it,
//! but a program that writes it only spoils its own vDSO's answers — the
//! personality's own clocks keep their copy of the values in `libos`.

use crate::kernel::kernel;
use crate::mm::{page_up, PAGE};

/// The vDSO's ELF image.
static IMAGE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/vdso.so"));

/// "llpsvvar": the data page is filled (the vDSO falls back to the system call
/// without it).
const VVAR_MAGIC: u64 = 0x7261_7676_7370_6c6c;

/// The data page's contents; `struct vvar_data` in `vdso/vdso.c`.
#[repr(C)]
struct VvarData {
    magic: u64,
    boot_tsc: u64,
    tsc_hz: u64,
    wall_at_boot_ns: u64,
}

/// Maps the data page and the vDSO into the program's memory; returns the
/// address of the vDSO's ELF header, for `AT_SYSINFO_EHDR`, or `None` if there is
/// no room (the program then uses the system calls, as without a vDSO).
pub fn map() -> Option<u64> {
    let image_bytes = page_up(IMAGE.len() as u64)?;
    let k = kernel();
    // Room for both, then the data page named apart (clearing it again, as
    // `map_fixed` does, settles the memory manager's note that it was replaced).
    let vvar =
        k.mm.map_anywhere(PAGE + image_bytes, 5, "[vdso]", true)
            .ok()?;
    k.mm.map_fixed(vvar..vvar + PAGE, 1, "[vvar]", true).ok()?;
    let image = vvar + PAGE;
    let data = VvarData {
        magic: VVAR_MAGIC,
        boot_tsc: libos::time::boot_tsc(),
        tsc_hz: libos::time::tsc_hz(),
        wall_at_boot_ns: libos::time::wall_at_boot_ns(),
    };
    // SAFETY: `vvar..vvar+PAGE+image_bytes` was just handed out to the vDSO in
    // program memory, which the monitor maps writable; the program runs no code
    // yet. The page is 4096-aligned, enough for `VvarData`, and the image fits in
    // `image_bytes`.
    unsafe {
        core::ptr::write(vvar as *mut VvarData, data);
        core::ptr::copy_nonoverlapping(IMAGE.as_ptr(), image as *mut u8, IMAGE.len());
    }
    Some(image)
}
