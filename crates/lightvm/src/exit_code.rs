//! Exit codes of `lightvm run`, chosen so a script can tell the guest's own status
//! from the VMM's verdicts (the same convention as `timeout(1)` and `docker run`).

use lightvm_vmm::VmExit;

/// The guest outran `--timeout`.
pub const TIMED_OUT: u8 = 124;
/// lightvm itself failed: bad flag, bad image, no KVM.
pub const LIGHTVM_ERROR: u8 = 125;
/// The guest crashed (a CPU fault).
pub const GUEST_CRASHED: u8 = 126;
/// The guest broke the hypercall ABI and was stopped.
pub const ABI_VIOLATION: u8 = 127;

/// The process exit code for a VM's end. Guest statuses are 0..=123 (the VMM refuses
/// others), so they never collide with the codes above.
pub fn for_exit(exit: &VmExit) -> u8 {
    match exit {
        VmExit::Exited { status, .. } => u8::try_from(*status).unwrap_or(ABI_VIOLATION),
        VmExit::TimedOut { .. } => TIMED_OUT,
        VmExit::Crashed(_) => GUEST_CRASHED,
        VmExit::AbiViolation { .. } => ABI_VIOLATION,
    }
}
