//! What a run produced: how the guest ended, and how long each phase took.

use std::fmt;
use std::time::Duration;

use serde::Serialize;

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

/// The result of [`crate::Vm::run`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunReport {
    /// How the guest ended.
    pub exit: VmExit,
    /// Phase timings.
    pub timings: Timings,
    /// Console bytes delivered.
    pub console_bytes: u64,
    /// Console bytes dropped by the rate limit.
    pub console_dropped: u64,
}

pub(crate) fn micros(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e6
}
