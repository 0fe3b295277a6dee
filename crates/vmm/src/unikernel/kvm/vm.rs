//! A kvm unikernel VM: the exit loop. The vCPU runs the guest until an exit; an
//! `out` to a hypercall port goes to the shared hypercall core, anything else ends
//! the guest (a fault, an unknown port, KVM's failure to emulate). Nothing the guest
//! does can make `run` panic or return an error: errors from `run` are host
//! failures only.
//!
//! The one thread runs under the `kvm-unikernel` seccomp list from its first
//! `KVM_RUN` on (see [`crate::seccomp`]), bound to this VM's vCPU, console, tap,
//! disk and wait set.

use std::os::fd::AsRawFd;

use kvm_ioctls::{VcpuExit, VcpuFd, VmFd};
use lightvm_abi::Hypercall;

use crate::kvm::arch::cpu::{self, SYSCALL_STUB};
use crate::kvm::vcpu::{self, Run, Shown, VcpuRegisters};
use crate::platform::Platform;
use crate::report::{describe_fault, describe_syscall, CrashReport, RunReport, VmExit};
use crate::seccomp::{self, ThreadFds, ThreadKind};
use crate::unikernel::core::{Core, Flow};
use crate::unikernel::error::UnikernelError;
use crate::unikernel::guest::{violation, AbiViolation};
use crate::unikernel::process::signals;
use crate::unikernel::SandboxPolicy;
use lightvm_abi::layout;

/// A loaded kvm VM, ready to run its guest.
pub struct KvmVm {
    // Field order is drop order: the vCPU and VM file descriptors go before the
    // memory (in the core) they map.
    vcpu: VcpuFd,
    _vm: VmFd,
    core: Core,
    sandbox: SandboxPolicy,
}

impl KvmVm {
    /// Wraps a vCPU that is about to run a loaded image.
    pub(crate) fn new(vcpu: VcpuFd, vm: VmFd, core: Core) -> Self {
        Self {
            vcpu,
            _vm: vm,
            core,
            sandbox: SandboxPolicy::default(),
        }
    }

    /// What the seccomp filter must leave the monitor beyond its devices (the
    /// descriptors it writes after the guest started), and whether to install it.
    pub fn set_sandbox(&mut self, policy: SandboxPolicy) {
        self.sandbox = policy;
    }

    /// The platform-independent state.
    pub fn core(&mut self) -> &mut Core {
        &mut self.core
    }

    /// Runs the guest until it exits, crashes, breaks the ABI or times out.
    pub fn run(mut self) -> Result<RunReport, UnikernelError> {
        // The deadline timer's kick only has to make KVM_RUN return.
        signals::install_kick()?;
        let _timer = self.core.arm_deadline()?;
        if self.sandbox.enforce {
            let devices = self.core.devices().fds();
            let fds = ThreadFds {
                vcpu: vec![self.vcpu.as_raw_fd()],
                output: self.sandbox.writable.clone(),
                tap: devices.tap.into_iter().collect(),
                disk: devices.disk.into_iter().collect(),
                events: devices.events.into_iter().collect(),
                eventfd: Vec::new(),
            };
            seccomp::apply(&seccomp::compile(ThreadKind::KvmUnikernel, &fds)?)?;
        }
        let exit = loop {
            if let Some(exit) = self.step()? {
                break exit;
            }
        };
        Ok(self.core.report(Platform::Kvm, exit))
    }

    /// Runs the vCPU to its next exit and handles it; `Some` when the VM is over.
    fn step(&mut self) -> Result<Option<VmExit>, UnikernelError> {
        let exit = match vcpu::run(&mut self.vcpu)? {
            Run::Interrupted => return Ok(self.core.timed_out()),
            // Only the stub of a guest that registered no entry exits: its
            // `syscall` is a crash, as on the process platform.
            Run::Exit(VcpuExit::IoOut(lightvm_abi::KVM_SYSCALL_PORT, _)) => {
                VmExit::Crashed(self.crash_report(None)?)
            }
            Run::Exit(VcpuExit::IoOut(port, data)) => {
                let Some(call) = Hypercall::from_port(port) else {
                    let detail = if port == lightvm_abi::HYPERCALL_PORT_BASE + 15 {
                        "called the hypercall gate with an unknown hypercall number".to_owned()
                    } else {
                        format!("wrote to I/O port {port:#x}, which is not a hypercall")
                    };
                    return Ok(Some(VmExit::AbiViolation { detail }));
                };
                match argument_address(call, data) {
                    Ok(addr) => match self.core.hypercall(call, addr) {
                        Flow::Continue if call == Hypercall::SyscallEntry => {
                            self.install_syscall_stub()?;
                            return Ok(None);
                        }
                        Flow::Continue => return Ok(None),
                        Flow::Exit(exit) => exit,
                    },
                    Err(AbiViolation(detail)) => VmExit::AbiViolation { detail },
                }
            }
            Run::Exit(VcpuExit::IoIn(port, _)) => VmExit::AbiViolation {
                detail: format!("read I/O port {port:#x}; unikernels have no port devices"),
            },
            Run::Exit(VcpuExit::MmioRead(addr, _) | VcpuExit::MmioWrite(addr, _)) => {
                VmExit::AbiViolation {
                    detail: format!("accessed {addr:#x}, outside guest memory"),
                }
            }
            Run::Exit(VcpuExit::Shutdown) => VmExit::Crashed(self.crash_report(None)?),
            Run::Exit(VcpuExit::InternalError) => {
                VmExit::Crashed(self.crash_report(Some("KVM could not emulate an instruction"))?)
            }
            Run::Exit(other) => {
                let reason = format!("unexpected VM exit {other:?}");
                VmExit::Crashed(self.crash_report(Some(&reason))?)
            }
        };
        Ok(Some(exit))
    }

    /// The report of a guest stopped by a fault, or by an exit no unikernel makes
    /// (`reason`): a fault or `syscall` is named from the registers.
    fn crash_report(&self, reason: Option<&str>) -> Result<CrashReport, UnikernelError> {
        let registers = VcpuRegisters::read(&self.vcpu)?;
        let vector = Some(vcpu::exception_vector(&self.vcpu)?);
        let regs = &registers.regs;
        let reason = match reason {
            Some(reason) => reason.to_owned(),
            // In the monitor's stub, after its `out`: rax still holds the number
            // and rcx the return address.
            None if (SYSCALL_STUB..SYSCALL_STUB + layout::KVM_SYSCALL_STUB_BYTES)
                .contains(&regs.rip) =>
            {
                describe_syscall(Some(regs.rax as i64), regs.rcx)
            }
            None => describe_fault(vector, regs.rip, registers.sregs.cr2),
        };
        Ok(vcpu::crash_report(
            reason,
            vector,
            Some(&registers),
            Shown::Unikernel,
        ))
    }

    /// Writes the `syscall` stub that matches the guest's registration: straight
    /// to its entry, or (none registered) out to the monitor, which ends it.
    fn install_syscall_stub(&mut self) -> Result<(), UnikernelError> {
        let mut stub = [0xccu8; layout::KVM_SYSCALL_STUB_BYTES as usize];
        match self.core.syscall_entry() {
            Some(delivery) => {
                // The core checked the slot lies below 2 GiB.
                let slot = u32::try_from(delivery.return_slot).unwrap_or(0);
                let code = cpu::delivering_syscall_stub(delivery.entry, slot);
                stub[..code.len()].copy_from_slice(&code);
            }
            None => stub[..cpu::SYSCALL_STUB_CODE.len()].copy_from_slice(&cpu::SYSCALL_STUB_CODE),
        }
        crate::memory::write(self.core.memory(), SYSCALL_STUB, &stub)?;
        Ok(())
    }
}

/// Decodes the `eax` of an `out` to a hypercall port: the argument's guest address.
/// Only 32-bit writes are hypercalls; `out dx, al` to a hypercall port is a mistake.
fn argument_address(call: Hypercall, data: &[u8]) -> Result<u64, AbiViolation> {
    let bytes: [u8; 4] = data.try_into().map_err(|_| {
        violation(
            call,
            format!(
                "made with a {}-byte out; hypercalls use a 4-byte out of the argument address",
                data.len()
            ),
        )
    })?;
    Ok(u64::from(u32::from_le_bytes(bytes)))
}
