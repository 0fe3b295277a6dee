//! What both KVM exit loops — the unikernel's and Linux's — do alike with a vCPU:
//! run it to its next exit, and turn a stopped one into a crash report.

use kvm_bindings::{kvm_regs, kvm_sregs};
use kvm_ioctls::{VcpuExit, VcpuFd};

use super::{kvm_op, KvmError};
use crate::report::{CrashReport, GuestRegisters};

/// How one `KVM_RUN` ended.
pub enum Run<'a> {
    /// The guest exited to the monitor, for this reason.
    Exit(VcpuExit<'a>),
    /// A signal interrupted the run before the guest exited (`EINTR`, or `EAGAIN`
    /// when it was pending at entry): the deadline timer's, or a stop request's
    /// kick. The loop checks whether that ended the guest, and otherwise runs it
    /// again.
    Interrupted,
}

/// Runs `vcpu` to its next exit. A hardware entry failure is an error, not an
/// exit: the CPU refused the state the monitor set up, which no guest can cause.
pub fn run(vcpu: &mut VcpuFd) -> Result<Run<'_>, KvmError> {
    match vcpu.run() {
        Ok(VcpuExit::FailEntry(reason, _)) => Err(KvmError::FailEntry { reason }),
        Ok(exit) => Ok(Run::Exit(exit)),
        Err(error) if matches!(error.errno(), libc::EINTR | libc::EAGAIN) => Ok(Run::Interrupted),
        Err(error) => Err(kvm_op("KVM_RUN")(error)),
    }
}

/// Which registers a crash report lists, in the order it prints them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shown {
    /// A unikernel's: the [`GuestRegisters`] a report shows on either platform.
    Unikernel,
    /// A kernel's: rip, rsp, rflags, the control registers and EFER (which say
    /// what mode it crashed in), and the first six general registers.
    Kernel,
}

/// The registers of a stopped vCPU, read for a crash report.
#[derive(Debug, Clone, Copy)]
pub struct VcpuRegisters {
    /// General registers, rip and rflags.
    pub regs: kvm_regs,
    /// Segment, control and descriptor-table registers, EFER.
    pub sregs: kvm_sregs,
}

impl VcpuRegisters {
    /// Reads them (`KVM_GET_REGS`, `KVM_GET_SREGS`).
    pub fn read(vcpu: &VcpuFd) -> Result<Self, KvmError> {
        Ok(Self {
            regs: vcpu.get_regs().map_err(kvm_op("KVM_GET_REGS"))?,
            sregs: vcpu.get_sregs().map_err(kvm_op("KVM_GET_SREGS"))?,
        })
    }

    /// The registers a unikernel's report shows, as the process platform shows
    /// them from a signal's context.
    pub fn guest(&self) -> GuestRegisters {
        let r = &self.regs;
        GuestRegisters {
            rip: r.rip,
            rsp: r.rsp,
            rbp: r.rbp,
            rflags: r.rflags,
            cr2: self.sregs.cr2,
            general: [
                r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi, r.r8, r.r9, r.r10, r.r11, r.r12, r.r13,
                r.r14, r.r15,
            ],
        }
    }

    /// Name and value of each register `shown` lists.
    pub fn named(&self, shown: Shown) -> Vec<(&'static str, u64)> {
        let (r, s) = (&self.regs, &self.sregs);
        match shown {
            Shown::Unikernel => self.guest().named(),
            Shown::Kernel => vec![
                ("rip", r.rip),
                ("rsp", r.rsp),
                ("rflags", r.rflags),
                ("cr0", s.cr0),
                ("cr2", s.cr2),
                ("cr3", s.cr3),
                ("cr4", s.cr4),
                ("efer", s.efer),
                ("rax", r.rax),
                ("rbx", r.rbx),
                ("rcx", r.rcx),
                ("rdx", r.rdx),
                ("rsi", r.rsi),
                ("rdi", r.rdi),
            ],
        }
    }
}

/// The vector of the exception that stopped the guest: with no IDT every
/// exception ends in a triple fault, after which KVM leaves the last exception's
/// vector in the vCPU's events (`KVM_GET_VCPU_EVENTS`).
pub fn exception_vector(vcpu: &VcpuFd) -> Result<u8, KvmError> {
    let events = vcpu
        .get_vcpu_events()
        .map_err(kvm_op("KVM_GET_VCPU_EVENTS"))?;
    Ok(events.exception.nr)
}

/// The crash report of a stopped vCPU: `reason`, the exception `vector`, and the
/// registers `shown` — none when they could not be read, for a monitor that
/// reports a crash even then.
pub fn crash_report(
    reason: String,
    vector: Option<u8>,
    registers: Option<&VcpuRegisters>,
    shown: Shown,
) -> CrashReport {
    CrashReport {
        reason,
        vector,
        registers: registers.map_or_else(Vec::new, |r| r.named(shown)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_report_lists_its_registers_in_order() {
        let registers = VcpuRegisters {
            regs: kvm_regs {
                rip: 0x1000,
                rcx: 0x2000,
                ..Default::default()
            },
            sregs: kvm_sregs {
                cr2: 0x3000,
                efer: 0x500,
                ..Default::default()
            },
        };
        let kernel: Vec<_> = registers.named(Shown::Kernel);
        let names: Vec<_> = kernel.iter().map(|(name, _)| *name).collect();
        assert_eq!(
            names,
            [
                "rip", "rsp", "rflags", "cr0", "cr2", "cr3", "cr4", "efer", "rax", "rbx", "rcx",
                "rdx", "rsi", "rdi"
            ]
        );
        assert!(kernel.contains(&("efer", 0x500)) && kernel.contains(&("cr2", 0x3000)));
        let unikernel = registers.named(Shown::Unikernel);
        assert_eq!(unikernel, registers.guest().named());
        assert!(unikernel.contains(&("rcx", 0x2000)) && unikernel.contains(&("r15", 0)));

        let report = crash_report("why".into(), Some(14), None, Shown::Kernel);
        assert_eq!((report.vector, report.registers.len()), (Some(14), 0));
    }
}
