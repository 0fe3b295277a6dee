//! What a run produced: how the guest ended, and how long each phase took.

use std::fmt;
use std::time::Duration;

use serde::Serialize;

use crate::platform::Platform;

/// How a VM ended. Every guest outcome is a value, not an error: the VMM handled it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum VmExit {
    /// The guest called `exit`.
    Exited {
        /// Its status.
        status: u32,
        /// Its message (a panic message), if any.
        message: Option<String>,
    },
    /// The CPU faulted in the guest (no IDT: every exception ends the VM).
    Crashed(CrashReport),
    /// The guest broke the hypercall ABI (a wild pointer, an unknown call).
    AbiViolation {
        /// What it did.
        detail: String,
    },
    /// The timeout passed first.
    TimedOut {
        /// The timeout that expired, in milliseconds.
        after_ms: u64,
    },
}

/// Exit codes for a VM's end, chosen so a script can tell the guest's own status
/// (0–123) from the monitor's verdicts (the convention of `timeout(1)` and
/// `docker run`).
pub mod exit_code {
    /// The guest outran its timeout.
    pub const TIMED_OUT: u8 = 124;
    /// lightvm itself failed: bad flag, bad image, no usable platform.
    pub const LIGHTVM_ERROR: u8 = 125;
    /// The guest crashed (a CPU fault, a `syscall`).
    pub const GUEST_CRASHED: u8 = 126;
    /// The guest broke the hypercall ABI and was stopped.
    pub const ABI_VIOLATION: u8 = 127;
}

impl VmExit {
    /// The verdict on a guest that outran `timeout`.
    pub fn timed_out(timeout: Duration) -> Self {
        VmExit::TimedOut {
            after_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        }
    }

    /// The process exit code for this end. Guest statuses are 0..=123 (the monitor
    /// refuses others), so they never collide with the verdicts in [`exit_code`].
    pub fn exit_code(&self) -> u8 {
        match self {
            VmExit::Exited { status, .. } => {
                u8::try_from(*status).unwrap_or(exit_code::ABI_VIOLATION)
            }
            VmExit::TimedOut { .. } => exit_code::TIMED_OUT,
            VmExit::Crashed(_) => exit_code::GUEST_CRASHED,
            VmExit::AbiViolation { .. } => exit_code::ABI_VIOLATION,
        }
    }
}

/// The state of a crashed guest, enough to find the bug.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CrashReport {
    /// A human description: which exception, at what address.
    pub reason: String,
    /// The exception vector, when KVM reports it.
    pub vector: Option<u8>,
    /// General registers by name, in the order they are printed.
    pub registers: Vec<(&'static str, u64)>,
}

impl fmt::Display for CrashReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "guest crashed: {}.", self.reason)?;
        for (name, value) in &self.registers {
            write!(f, " {name}={value:#x}")?;
        }
        Ok(())
    }
}

impl fmt::Display for VmExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VmExit::Exited {
                status,
                message: Some(message),
            } => write!(f, "guest exited with status {status}: {message}"),
            VmExit::Exited {
                status,
                message: None,
            } => write!(f, "guest exited with status {status}"),
            VmExit::Crashed(report) => report.fmt(f),
            VmExit::AbiViolation { detail } => {
                write!(f, "guest stopped: it broke the hypercall ABI: {detail}")
            }
            VmExit::TimedOut { after_ms } => {
                write!(
                    f,
                    "guest stopped: still running after the {after_ms} ms timeout"
                )
            }
        }
    }
}

/// Where the time went, each phase measured from the start of `build`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Timings {
    /// Reading and validating the image file.
    pub image_load_us: f64,
    /// Creating the KVM VM, its memory and its vCPU and writing the initial state.
    pub vm_setup_us: f64,
    /// From the start of `build` to the guest's boot-done hypercall (its `main`).
    pub boot_done_us: Option<f64>,
    /// From the start of `build` to the end of the run.
    pub total_us: f64,
}

impl Timings {
    /// The timings of a boot that started at `started` and spent `image_loaded` of
    /// the time until now reading its image; the rest went to setting the VM up.
    pub fn setup(started: std::time::Instant, image_loaded: Duration) -> Self {
        Self {
            image_load_us: micros(image_loaded),
            vm_setup_us: micros(started.elapsed().saturating_sub(image_loaded)),
            ..Self::default()
        }
    }
}

/// The result of running a guest.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunReport {
    /// Where it ran.
    pub platform: Platform,
    /// How the guest ended.
    pub exit: VmExit,
    /// Phase timings.
    pub timings: Timings,
    /// Console bytes delivered.
    pub console_bytes: u64,
    /// Console bytes dropped by the rate limit.
    pub console_dropped: u64,
    /// What the VM process's jail applied, when it ran in one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jail: Option<crate::jail::JailReport>,
}

/// The registers a unikernel crash report shows, on either platform.
#[derive(Debug, Clone, Copy, Default)]
pub struct GuestRegisters {
    /// The faulting (or next) instruction.
    pub rip: u64,
    /// Stack pointer.
    pub rsp: u64,
    /// Frame pointer.
    pub rbp: u64,
    /// Flags.
    pub rflags: u64,
    /// The page-fault address.
    pub cr2: u64,
    /// rax, rbx, rcx, rdx, rsi, rdi, r8 … r15, in that order.
    pub general: [u64; 14],
}

impl GuestRegisters {
    /// Name and value of each, in the order a report prints them.
    pub fn named(&self) -> Vec<(&'static str, u64)> {
        const GENERAL: [&str; 14] = [
            "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12", "r13",
            "r14", "r15",
        ];
        let mut named = vec![
            ("rip", self.rip),
            ("rsp", self.rsp),
            ("rbp", self.rbp),
            ("rflags", self.rflags),
            ("cr2", self.cr2),
        ];
        named.extend(GENERAL.into_iter().zip(self.general));
        named
    }

    /// rcx: where a `syscall` returns to.
    pub fn rcx(&self) -> u64 {
        self.general[2]
    }
}

/// Names a unikernel's CPU exception the way a developer would want to read it.
pub fn describe_fault(vector: Option<u8>, rip: u64, cr2: u64) -> String {
    use lightvm_abi::layout;
    let guard = layout::STACK_BOTTOM - layout::PAGE_SIZE..layout::STACK_BOTTOM;
    match vector {
        Some(14) if guard.contains(&cr2) => format!(
            "stack overflow (page fault in the guard page at {cr2:#x}; the stack is {} KiB)",
            layout::STACK_SIZE >> 10
        ),
        Some(14) if cr2 == rip => {
            format!("page fault: jumped to {rip:#x}, which is not mapped executable")
        }
        Some(14) => format!("page fault (#PF, vector 14) accessing {cr2:#x} at rip {rip:#x}"),
        Some(vector) => format!(
            "{} (vector {vector}) at rip {rip:#x}",
            exception_name(vector)
        ),
        None => format!("triple fault at rip {rip:#x}"),
    }
}

/// The reason of a crash by `syscall`: no unikernel may make one, on any platform.
pub fn describe_syscall(number: Option<i64>, return_address: u64) -> String {
    let number = number.map_or(String::new(), |n| format!("system call {n}, "));
    format!(
        "the guest executed `syscall` ({number}return address {return_address:#x}); unikernels make hypercalls, not system calls, and none reaches the host"
    )
}

fn exception_name(vector: u8) -> &'static str {
    match vector {
        0 => "divide error (#DE)",
        1 => "debug exception (#DB)",
        3 => "breakpoint (#BP)",
        4 => "overflow (#OF)",
        5 => "bound range exceeded (#BR)",
        6 => "invalid opcode (#UD)",
        7 => "device not available (#NM)",
        8 => "double fault (#DF)",
        10 => "invalid TSS (#TS)",
        11 => "segment not present (#NP)",
        12 => "stack-segment fault (#SS)",
        13 => "general protection fault (#GP)",
        14 => "page fault (#PF)",
        16 => "x87 floating-point error (#MF)",
        17 => "alignment check (#AC)",
        18 => "machine check (#MC)",
        19 => "SIMD floating-point exception (#XM)",
        _ => "CPU exception",
    }
}

pub(crate) fn micros(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e6
}
