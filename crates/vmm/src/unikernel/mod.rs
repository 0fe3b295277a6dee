//! Unikernels: one image, two platforms, shared parts (Solo5's tenders — common,
//! hvt, spt — are the model).
//!
//! * shared by both platforms: [`core`] (what each hypercall does), [`guest`]
//!   (checked access to guest memory), [`boot`] (boot info and image loading) and
//!   [`devices`] (the network and disk backends and their wait);
//! * [`kvm`]: a KVM VM; hypercalls arrive as `out` exits;
//! * [`process`]: a sandboxed host process; hypercalls arrive as calls of the gate;
//! * [`error`]: what building, booting or running a unikernel fails with, on either
//!   platform.
//!
//! A request flows one way: [`VmConfig`] (validated) → [`Shell`] (prepared ahead of
//! time, or cold by [`Vm::build`]) → [`Shell::boot`] (image, boot state) →
//! [`Vm::run`] (until the guest exits, crashes, breaks the ABI or times out) →
//! [`RunReport`].

pub mod boot;
pub mod core;
pub mod devices;
pub mod error;
pub mod guest;
pub mod kvm;
pub mod process;
#[cfg(test)]
mod tests;

use std::io::Write;
use std::time::Instant;

pub use self::core::BootListener;
pub use self::error::UnikernelError;
pub use self::process::sandbox::{SandboxPolicy, ALLOWED};
use crate::config::VmConfig;
use crate::loader::UnikernelImage;
use crate::platform::Platform;
use crate::report::{RunReport, Timings};
use boot::Module;
use devices::Devices;
use kvm::{KvmShell, KvmVm};
use process::{ProcessShell, ProcessVm};

/// A prepared VM without an image (LightVM's *prepare* phase), on one platform.
pub enum Shell {
    /// A KVM VM, its memory, vCPU, GDT, TSS and gate stub.
    Kvm(KvmShell),
    /// A process's mapped guest memory and signal handling.
    Process(ProcessShell),
}

impl Shell {
    /// Prepares a shell for unikernels of `mem_size` bytes on `platform`.
    pub fn create(platform: Platform, mem_size: u64) -> Result<Self, UnikernelError> {
        Self::create_for(platform, mem_size, false)
    }

    /// Prepares a shell for a unikernel that runs Linux programs (the Linux
    /// personality), or for a plain one: a kvm vCPU's CPU features are set before
    /// it first runs, so a shell is made for one kind or the other.
    pub fn create_for(
        platform: Platform,
        mem_size: u64,
        linux: bool,
    ) -> Result<Self, UnikernelError> {
        platform.check()?;
        Ok(match platform {
            Platform::Kvm => Shell::Kvm(KvmShell::create(mem_size, linux)?),
            Platform::Process => Shell::Process(ProcessShell::create(mem_size, linux)?),
        })
    }

    /// The platform it runs on.
    pub fn platform(&self) -> Platform {
        match self {
            Shell::Kvm(_) => Platform::Kvm,
            Shell::Process(_) => Platform::Process,
        }
    }

    /// Guest memory of this shell: only images configured for this size boot in it.
    pub fn mem_size(&self) -> u64 {
        match self {
            Shell::Kvm(shell) => shell.mem_size(),
            Shell::Process(shell) => shell.mem_size(),
        }
    }

    /// Pays the first-use costs now rather than at boot: on kvm the vCPU runs once
    /// through a parking stub, on process the first guest pages are touched.
    pub fn warm(&mut self) -> Result<(), UnikernelError> {
        match self {
            Shell::Kvm(shell) => shell.warm(),
            Shell::Process(shell) => shell.warm(),
        }
    }

    /// Builds what of the guest's sandbox needs no guest, in the prepare phase: on
    /// process, the namespaces, limits and `no_new_privs` (the filter follows at
    /// the guest's start); on kvm nothing yet. Afterwards the shell can boot only
    /// images and devices handed to it open ([`Shell::boot_opened`]). Returns the
    /// namespaces entered.
    pub fn isolate(&mut self) -> Result<Vec<&'static str>, UnikernelError> {
        match self {
            Shell::Kvm(_) => Ok(Vec::new()),
            Shell::Process(shell) => shell.isolate(),
        }
    }

    /// Whether [`Shell::warm`] has run.
    pub fn is_warm(&self) -> bool {
        match self {
            Shell::Kvm(shell) => shell.is_warm(),
            Shell::Process(shell) => shell.is_warm(),
        }
    }

    /// Opens what `config` names (image, tap, disk, module) and loads the image
    /// (the execute phase). The VM's timings count from this call.
    pub fn boot(
        self,
        config: &VmConfig,
        console: Box<dyn Write + Send>,
    ) -> Result<Vm, UnikernelError> {
        let started = Instant::now();
        let opened = Opened::open(config)?;
        let image_loaded = started.elapsed();
        self.boot_opened(
            &opened.image,
            opened.parts,
            config,
            console,
            (started, image_loaded),
        )
    }

    /// Loads an image and the parts that were already opened (by a daemon that
    /// hands them over, say); `started` and `image_loaded` as for
    /// `KvmShell::start`.
    pub fn boot_opened(
        self,
        image: &UnikernelImage,
        parts: GuestParts,
        config: &VmConfig,
        console: Box<dyn Write + Send>,
        times: (Instant, std::time::Duration),
    ) -> Result<Vm, UnikernelError> {
        if config.mem_size() != self.mem_size() {
            return Err(UnikernelError::Internal(
                "a shell can only boot images configured for its memory size",
            ));
        }
        image.check_fits(config.mem_size())?;
        Ok(match self {
            Shell::Kvm(shell) => Vm::Kvm(shell.start(image, parts, config, console, times)?),
            Shell::Process(shell) => {
                Vm::Process(shell.start(image, parts, config, console, times)?)
            }
        })
    }
}

/// What a guest takes beside its image, opened: its devices and its module.
pub struct GuestParts {
    /// The network interface and disk.
    pub devices: Devices,
    /// The root filesystem archive of a Linux program, if any.
    pub module: Option<Module>,
}

/// Everything a config names, opened and checked, before any guest memory is
/// touched: a missing tap, disk or module fails first.
pub struct Opened {
    /// The image.
    pub image: UnikernelImage,
    /// The rest.
    pub parts: GuestParts,
}

impl Opened {
    /// Opens the image, the devices and the module `config` names.
    pub fn open(config: &VmConfig) -> Result<Self, UnikernelError> {
        let image = UnikernelImage::from_file(config.image())?;
        image.check_fits(config.mem_size())?;
        let devices = Devices::open(config.net(), config.disk())?;
        let module = config.module().map(Module::open).transpose()?;
        Ok(Self {
            image,
            parts: GuestParts { devices, module },
        })
    }
}

/// A loaded unikernel, ready to run.
pub enum Vm {
    /// On kvm.
    Kvm(KvmVm),
    /// On process.
    Process(ProcessVm),
}

impl Vm {
    /// Boots a unikernel the cold way: validates the image, creates a shell for it
    /// on `platform` and loads it. Guest console output goes to `console`. For VMs
    /// on the request path, prepare a [`Shell`] ahead of time instead.
    pub fn build(
        platform: Platform,
        config: &VmConfig,
        console: Box<dyn Write + Send>,
    ) -> Result<Self, UnikernelError> {
        let started = Instant::now();
        let opened = Opened::open(config)?;
        let image_loaded = started.elapsed();
        Shell::create_for(platform, config.mem_size(), config.runs_linux_programs())?.boot_opened(
            &opened.image,
            opened.parts,
            config,
            console,
            (started, image_loaded),
        )
    }

    fn core(&mut self) -> &mut core::Core {
        match self {
            Vm::Kvm(vm) => vm.core(),
            Vm::Process(vm) => vm.core(),
        }
    }

    /// The platform it runs on.
    pub fn platform(&self) -> Platform {
        match self {
            Vm::Kvm(_) => Platform::Kvm,
            Vm::Process(_) => Platform::Process,
        }
    }

    /// Timings so far (image load and setup are known before `run`).
    pub fn timings(&mut self) -> Timings {
        *self.core().timings()
    }

    /// Registers `listener` for the guest's boot-done hypercall: the toolstack
    /// answers "VM created" at that moment, while the guest runs on.
    pub fn on_boot_done(&mut self, listener: BootListener) {
        self.core().on_boot_done(listener);
    }

    /// What the monitor's seccomp filter must leave it (descriptors it writes
    /// after the guest started): the process platform's sandbox, or the kvm
    /// platform's `kvm-unikernel` thread filter.
    pub fn set_sandbox(&mut self, policy: SandboxPolicy) {
        match self {
            Vm::Kvm(vm) => vm.set_sandbox(policy),
            Vm::Process(vm) => vm.set_sandbox(policy),
        }
    }

    /// Runs the guest until it exits, crashes, breaks the ABI or times out.
    pub fn run(self) -> Result<RunReport, UnikernelError> {
        match self {
            Vm::Kvm(vm) => vm.run(),
            Vm::Process(vm) => vm.run(),
        }
    }
}
