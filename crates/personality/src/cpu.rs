//! The program's thread registers the kernel keeps: FS and GS bases, set with
//! `wrfsbase`/`wrgsbase` in user mode (the monitor enables them for VMs that run
//! Linux programs). The personality itself never uses FS or GS.

/// Whether the CPU saves the vector state as the entry does (`xsaveopt`, with
/// the OS's XSAVE enabled): every x86-64 CPU since 2011.
pub fn saves_vector_state() -> bool {
    let leaf1 = core::arch::x86_64::__cpuid(1);
    let osxsave = leaf1.ecx & (1 << 27) != 0;
    osxsave && core::arch::x86_64::__cpuid_count(0xd, 1).eax & 1 != 0
}

/// Sets the FS base (the program's thread-local storage).
pub fn set_fs(value: u64) {
    // SAFETY: the monitor set CR4.FSGSBASE (kvm) or the host kernel allows it
    // (process); writing FS affects only the program's thread-locals.
    unsafe { core::arch::asm!("wrfsbase {}", in(reg) value, options(nostack, preserves_flags)) };
}

/// The FS base.
pub fn fs() -> u64 {
    let value: u64;
    // SAFETY: as for `set_fs`; reading has no effect.
    unsafe {
        core::arch::asm!("rdfsbase {}", out(reg) value, options(nomem, nostack, preserves_flags))
    };
    value
}

/// Sets the GS base.
pub fn set_gs(value: u64) {
    // SAFETY: as for `set_fs`.
    unsafe { core::arch::asm!("wrgsbase {}", in(reg) value, options(nostack, preserves_flags)) };
}

/// The GS base.
pub fn gs() -> u64 {
    let value: u64;
    // SAFETY: as for `fs`.
    unsafe {
        core::arch::asm!("rdgsbase {}", out(reg) value, options(nomem, nostack, preserves_flags))
    };
    value
}
