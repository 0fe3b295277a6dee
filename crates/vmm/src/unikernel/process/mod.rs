//! The process platform (Solo5's spt, Nabla containers, gVisor's systrap in spirit):
//! a unikernel image runs unchanged in a host process, for hosts without KVM.
//!
//! The guest is mapped at its own addresses in the monitor's address space
//! ([`memory`]), starts and makes hypercalls through [`gate`] (a function call, no
//! exit, no host system call), is stopped by [`signals`] when it faults or outruns
//! its deadline, and runs behind [`sandbox`]'s seccomp filter, which is in force
//! before its first instruction. The hypercall core, the devices and the reports are
//! the ones the kvm platform uses.
//!
//! As on kvm, a guest is prepared in two steps: a [`ProcessShell`] (memory mapped,
//! signal handlers and stack in place, first pages touched) is the *prepare* phase;
//! [`ProcessShell::start`] loads the image (*execute*), and [`ProcessVm::run`] enters
//! the sandbox and the guest.

pub mod gate;
pub mod memory;
pub mod sandbox;
pub mod signals;
pub mod tsc;

use std::io::Write;
use std::time::{Duration, Instant};

use lightvm_abi::{layout, PLATFORM_PROCESS};

use self::memory::{FixedMapping, ProcessMemory, SyscallSled};
use self::sandbox::SandboxPolicy;
use crate::config::VmConfig;
use crate::loader::UnikernelImage;
use crate::platform::Platform;
use crate::report::{
    describe_fault, describe_syscall, CrashReport, GuestRegisters, RunReport, Timings, VmExit,
};
use crate::unikernel::boot::{self, BootFacts, GuestLayout, Module};
use crate::unikernel::core::{Core, SledPage};
use crate::unikernel::error::UnikernelError;
use crate::unikernel::guest::{self, Ownership};
use crate::unikernel::GuestParts;

/// A prepared process-platform VM without an image: guest memory mapped, signal
/// handling installed, the TSC's frequency known or being measured.
pub struct ProcessShell {
    slot: gate::GuestSlot,
    memory: ProcessMemory,
    mem_size: u64,
    /// The host's TSC frequency, when a measurement of it is kept; otherwise
    /// `tsc` measures it over this shell's set-up.
    tsc_hz: Option<u64>,
    tsc: tsc::Calibration,
    warmed: bool,
    isolated: bool,
    /// The syscall sled of a shell for Linux programs, where address 0 could be
    /// mapped.
    sled: Option<SyscallSled>,
    linux: bool,
}

impl ProcessShell {
    /// Maps guest memory of `mem_size` bytes (valid for [`VmConfig`]) and installs
    /// the signal handling a guest needs; for Linux programs (`linux`), also the
    /// syscall sled at address 0 where this process may map it.
    pub fn create(mem_size: u64, linux: bool) -> Result<Self, UnikernelError> {
        let tsc = tsc::Calibration::start();
        VmConfig::check_mem_size(mem_size)?;
        let slot = gate::GuestSlot::claim().ok_or(UnikernelError::Internal(
            "a process-platform guest already lives in this process (one per process)",
        ))?;
        signals::install()?;
        let memory = memory::map_guest(mem_size)?;
        Ok(Self {
            slot,
            memory,
            mem_size,
            tsc_hz: tsc::host_hz(),
            tsc,
            warmed: false,
            isolated: false,
            sled: if linux { SyscallSled::map() } else { None },
            linux,
        })
    }

    /// Builds the part of the sandbox that needs no guest (namespaces, limits,
    /// `no_new_privs`) now, in the prepare phase; only the filter is left for the
    /// guest's start. After this the process can open nothing a namespace hides:
    /// the image, console and devices must come to it as open descriptors.
    pub fn isolate(&mut self) -> Result<Vec<&'static str>, UnikernelError> {
        let namespaces = sandbox::isolate()?;
        self.isolated = true;
        Ok(namespaces)
    }

    /// Guest memory of this shell.
    pub fn mem_size(&self) -> u64 {
        self.mem_size
    }

    /// Whether [`ProcessShell::warm`] has run.
    pub fn is_warm(&self) -> bool {
        self.warmed
    }

    /// Touches the pages every guest uses first.
    pub fn warm(&mut self) -> Result<(), UnikernelError> {
        memory::pre_touch(&self.memory)?;
        self.warmed = true;
        Ok(())
    }

    /// Loads the image and its boot state (the execute phase); see
    /// `KvmShell::start` for the arguments.
    pub fn start(
        self,
        image: &UnikernelImage,
        parts: GuestParts,
        config: &VmConfig,
        console: Box<dyn Write + Send>,
        (started, image_loaded): (Instant, Duration),
    ) -> Result<ProcessVm, UnikernelError> {
        let ProcessMemory { memory, mapping } = self.memory;
        let module_len = parts.module.as_ref().map(Module::len);
        let plan = GuestLayout::plan(
            image,
            self.mem_size,
            module_len,
            config.runs_linux_programs(),
        )?;
        let facts = BootFacts {
            mem_size: self.mem_size,
            tsc_hz: self.tsc_hz.unwrap_or_else(|| self.tsc.finish()),
            platform: PLATFORM_PROCESS,
            hypercall_gate: gate::gate_address(),
            module_len: module_len.unwrap_or(0),
            syscall_sled: self.sled.is_some(),
        };
        if config.runs_linux_programs() != self.linux {
            return Err(UnikernelError::Internal(
                "a shell boots Linux programs only if it was made for them, and only them",
            ));
        }
        boot::write_boot_info(&memory, &facts, &plan, config.cmdline())?;
        boot::load_segments(&memory, image)?;
        if let (Some(module), Some(place)) = (&parts.module, &plan.module) {
            boot::load_module(&memory, module, place)?;
        }
        memory::protect_image(image, &plan)?;
        let timings = Timings::setup(started, image_loaded);
        let mut read_only = guest::read_only_ranges(image);
        read_only.extend(plan.module.clone());
        let owned = Ownership::new(self.mem_size, read_only);
        let mut core = Core::new(
            memory,
            owned,
            parts.devices,
            console,
            config.timeout(),
            (started, timings),
        );
        if let Some(sled) = &self.sled {
            // SAFETY: the alias is a writable view of the sled page, which the
            // VM keeps mapped (`_sled`, dropped after the core) and only the core
            // writes.
            core.set_syscall_sled(unsafe { SledPage::new(sled.alias()) });
        }
        Ok(ProcessVm {
            core,
            _sled: self.sled,
            _mapping: mapping,
            _slot: self.slot,
            entry: image.entry(),
            mem_size: self.mem_size,
            sandbox: SandboxPolicy::default(),
            isolated: self.isolated,
        })
    }
}

/// A loaded process-platform VM, ready to run its guest.
pub struct ProcessVm {
    core: Core,
    /// The syscall sled, if any: declared after `core`, which writes it.
    _sled: Option<SyscallSled>,
    /// The guest's pages: declared after `core`, whose view of them drops first.
    _mapping: FixedMapping,
    /// Declared last: the slot is free once the pages are gone.
    _slot: gate::GuestSlot,
    entry: u64,
    mem_size: u64,
    sandbox: SandboxPolicy,
    isolated: bool,
}

impl ProcessVm {
    /// The platform-independent state.
    pub fn core(&mut self) -> &mut Core {
        &mut self.core
    }

    /// What the sandbox must leave the monitor beyond the devices.
    pub fn set_sandbox(&mut self, policy: SandboxPolicy) {
        self.sandbox = policy;
    }

    /// Enters the sandbox and runs the guest until it exits, crashes, breaks the ABI
    /// or times out. The process stays sandboxed afterwards: what it does after the
    /// run (print, write a report, exit) must fit the sandbox's allow-list.
    pub fn run(mut self) -> Result<RunReport, UnikernelError> {
        // This thread may not be the one that created the shell.
        signals::install()?;
        let _timer = self.core.arm_deadline()?;
        if self.sandbox.enforce {
            let program =
                sandbox::compile(&self.sandbox, self.core.devices().fds(), self.mem_size)?;
            if !self.isolated {
                sandbox::isolate()?;
            }
            sandbox::apply(&program)?;
        }
        // SAFETY: this VM holds the guest slot; the image is loaded at its addresses with its
        // entry point `entry`, the stack lies below STACK_TOP, and `signals::install`
        // put the handlers and this thread's alternate stack in place.
        let ended = unsafe {
            gate::enter(
                &mut self.core,
                self.entry,
                (layout::STACK_TOP - 8, layout::BOOT_INFO_ADDR),
                signals::gettid(),
            )
        };
        let exit = match ended {
            gate::STOPPED_BY_SIGNAL => {
                // SAFETY: this thread ran the guest, and `enter` said a signal stopped it.
                let stop = unsafe { signals::last_stop() };
                stop_exit(&stop, &self.core)
            }
            _ => self.core.take_exit().unwrap_or(VmExit::AbiViolation {
                detail: "the guest left through the gate without an exit".into(),
            }),
        };
        Ok(self.core.report(Platform::Process, exit))
    }
}

/// How a signal's stop of the guest reads in a report.
fn stop_exit(stop: &signals::StopRecord, core: &Core) -> VmExit {
    if stop.signal == crate::timer::kick_signal() {
        return core.timed_out().unwrap_or_else(|| core.timeout_exit());
    }
    let reg = |index: libc::c_int| {
        usize::try_from(index)
            .ok()
            .and_then(|i| stop.gregs.get(i))
            .map_or(0, |&value| value as u64)
    };
    let registers = GuestRegisters {
        rip: reg(libc::REG_RIP),
        rsp: reg(libc::REG_RSP),
        rbp: reg(libc::REG_RBP),
        rflags: reg(libc::REG_EFL),
        cr2: stop.cr2,
        general: [
            reg(libc::REG_RAX),
            reg(libc::REG_RBX),
            reg(libc::REG_RCX),
            reg(libc::REG_RDX),
            reg(libc::REG_RSI),
            reg(libc::REG_RDI),
            reg(libc::REG_R8),
            reg(libc::REG_R9),
            reg(libc::REG_R10),
            reg(libc::REG_R11),
            reg(libc::REG_R12),
            reg(libc::REG_R13),
            reg(libc::REG_R14),
            reg(libc::REG_R15),
        ],
    };
    let (reason, vector) = if stop.signal == libc::SIGSYS {
        // The kernel reports the address after the `syscall`, as rcx would hold.
        (describe_syscall(Some(stop.syscall), registers.rip), None)
    } else {
        let vector = u8::try_from(stop.trapno).ok();
        // A trap (int3) reports the address after the instruction, as on hardware.
        (describe_fault(vector, registers.rip, stop.cr2), vector)
    };
    VmExit::Crashed(CrashReport {
        reason,
        vector,
        registers: registers.named(),
    })
}
