//! The hypercall core: what a unikernel's hypercalls do, the same on every platform.
//!
//! A platform only finds out *that* the guest made a call and with which number and
//! argument address — the kvm platform from an `out` exit, the process platform from
//! a call of its gate — and hands it to [`Core::hypercall`]. Everything after that is
//! here, once: argument checks, the console with its rate limit, the devices and the
//! `poll` wait, boot-done timing, the exit status, and the deadline.

use std::io::Write;
use std::time::{Duration, Instant};

use lightvm_abi::{
    layout, limits, ConsoleWriteArgs, ExitArgs, Hypercall, PollArgs, SyscallEntryArgs,
};
use vm_memory::GuestMemoryMmap;

use super::devices::Devices;
use super::guest::{violation, AbiViolation, Guest, Ownership};
use crate::console::Console;
use crate::platform::Platform;
use crate::report::{micros, RunReport, Timings, VmExit};
use crate::timer::{DeadlineTimer, TimerError};

/// Called once when the guest reaches its `main`, with µs since the boot started.
pub type BootListener = Box<dyn FnMut(f64) + Send>;

/// What the guest does after a hypercall.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Flow {
    /// It carries on.
    Continue,
    /// It is over.
    Exit(VmExit),
}

/// Where the guest's `syscall`s go (`Hypercall::SyscallEntry`), checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyscallDelivery {
    /// Where the guest resumes.
    pub entry: u64,
    /// Where the call's return address is left (guest-owned, writable, 8-aligned,
    /// below 2 GiB).
    pub return_slot: u64,
}

/// A writable view of a VM's syscall sled page
/// ([`layout::SYSCALL_SLED_ADDR`]), which the guest sees read-and-execute only.
pub struct SledPage(*mut u8);

// SAFETY: the page belongs to the one VM whose core holds this view; only that
// core writes it, from whichever thread runs the VM.
unsafe impl Send for SledPage {}

impl SledPage {
    /// The view at `page`.
    ///
    /// # Safety
    ///
    /// `page` is valid for writes of [`layout::SYSCALL_SLED_BYTES`] bytes for as
    /// long as the core that gets this view lives, and nothing else writes them.
    pub unsafe fn new(page: *mut u8) -> Self {
        Self(page)
    }

    /// Fills the page: `nop`s up to [`layout::SYSCALL_SLED_REACH`], then `pop
    /// %rcx; jmp *entry` (an absolute jump through the address stored after it),
    /// and the same after a second run of `nop`s at the page's end.
    fn fill(&mut self, call_entry: u64) {
        let mut sled = [0x90u8; layout::SYSCALL_SLED_BYTES as usize];
        let mut handler = [0u8; 15];
        handler[0] = 0x59; // pop rcx
        handler[1..7].copy_from_slice(&[0xff, 0x25, 0, 0, 0, 0]); // jmp [rip]
        handler[7..].copy_from_slice(&call_entry.to_le_bytes());
        let first = layout::SYSCALL_SLED_REACH as usize;
        let last = sled.len() - 16;
        sled[first..first + handler.len()].copy_from_slice(&handler);
        sled[last..last + handler.len()].copy_from_slice(&handler);
        // SAFETY: `new`'s contract: the page is this view's to write, whole.
        unsafe { std::ptr::copy_nonoverlapping(sled.as_ptr(), self.0, sled.len()) };
    }
}

/// The platform-independent state of one running unikernel.
pub struct Core {
    memory: GuestMemoryMmap,
    owned: Ownership,
    console: Console,
    devices: Devices,
    scratch: Vec<u8>,
    boot_listener: Option<BootListener>,
    started: Instant,
    timings: Timings,
    timeout: Option<Duration>,
    deadline: Option<Instant>,
    exit: Option<VmExit>,
    syscall_entry: Option<SyscallDelivery>,
    sled: Option<SledPage>,
}

impl Core {
    /// The core of a guest loaded into `memory`, which `owned` describes; its
    /// timings count from `started`.
    pub fn new(
        memory: GuestMemoryMmap,
        owned: Ownership,
        devices: Devices,
        console: Box<dyn Write + Send>,
        timeout: Option<Duration>,
        (started, timings): (Instant, Timings),
    ) -> Self {
        Self {
            memory,
            owned,
            console: Console::new(console),
            devices,
            scratch: Vec::new(),
            boot_listener: None,
            started,
            timings,
            timeout,
            deadline: None,
            exit: None,
            syscall_entry: None,
            sled: None,
        }
    }

    /// Gives the core the VM's syscall sled, which it fills when the guest
    /// registers a `call_entry` (the VM's boot info says it has one).
    pub fn set_syscall_sled(&mut self, sled: SledPage) {
        self.sled = Some(sled);
    }

    /// Guest memory.
    pub fn memory(&self) -> &GuestMemoryMmap {
        &self.memory
    }

    /// The devices (their descriptors, for a sandbox).
    pub fn devices(&self) -> &Devices {
        &self.devices
    }

    /// Timings so far.
    pub fn timings(&self) -> &Timings {
        &self.timings
    }

    /// Where the guest asked its `syscall`s to go (`Hypercall::SyscallEntry`), if
    /// it did: the platform resumes it there instead of ending it.
    pub fn syscall_entry(&self) -> Option<SyscallDelivery> {
        self.syscall_entry
    }

    /// Registers `listener` for the guest's boot-done hypercall.
    pub fn on_boot_done(&mut self, listener: BootListener) {
        self.boot_listener = Some(listener);
    }

    /// Starts the clock of the timeout, if there is one: the returned timer
    /// interrupts the calling thread (the one that runs the guest) once it passes,
    /// and again every millisecond after, until it is dropped.
    pub fn arm_deadline(&mut self) -> Result<Option<DeadlineTimer>, TimerError> {
        let Some(timeout) = self.timeout else {
            return Ok(None);
        };
        self.deadline = Some(Instant::now() + timeout);
        DeadlineTimer::arm(timeout).map(Some)
    }

    /// The timeout's verdict, once the deadline has passed.
    pub fn timed_out(&self) -> Option<VmExit> {
        let (deadline, timeout) = self.deadline.zip(self.timeout)?;
        (Instant::now() >= deadline).then(|| VmExit::timed_out(timeout))
    }

    /// The verdict of a guest stopped by the deadline timer.
    pub fn timeout_exit(&self) -> VmExit {
        VmExit::timed_out(self.timeout.unwrap_or_default())
    }

    /// Answers hypercall number `number` with its argument at `arg`. Nothing the
    /// guest passes can make this fail: a broken call ends the guest as an ABI
    /// violation, and a deadline that passed during the call ends it as timed out.
    pub fn hypercall(&mut self, call: Hypercall, arg: u64) -> Flow {
        match self.dispatch(call, arg) {
            Ok(Flow::Continue) => match self.timed_out() {
                Some(exit) => Flow::Exit(exit),
                None => Flow::Continue,
            },
            Ok(exit) => exit,
            Err(AbiViolation(detail)) => Flow::Exit(VmExit::AbiViolation { detail }),
        }
    }

    fn dispatch(&mut self, call: Hypercall, addr: u64) -> Result<Flow, AbiViolation> {
        let guest = Guest::new(&self.memory, &self.owned);
        match call {
            Hypercall::BootDone => {
                if self.timings.boot_done_us.is_none() {
                    let boot_done = micros(self.started.elapsed());
                    self.timings.boot_done_us = Some(boot_done);
                    if let Some(mut listener) = self.boot_listener.take() {
                        listener(boot_done);
                    }
                }
            }
            Hypercall::ConsoleWrite => {
                let args: ConsoleWriteArgs = guest.read_args(call, addr)?;
                guest.read_buffer(
                    call,
                    (args.buf, args.len),
                    limits::CONSOLE_WRITE_MAX,
                    false,
                    &mut self.scratch,
                )?;
                self.console.write(&self.scratch);
            }
            Hypercall::Poll => {
                let mut args: PollArgs = guest.read_inout(call, addr)?;
                let timeout =
                    (args.timeout_ns != u64::MAX).then(|| Duration::from_nanos(args.timeout_ns));
                // Services the devices, then waits on their descriptors (or just the
                // timeout and the deadline timer's signal when there are none).
                args.ready = self.devices.poll(&guest, timeout)?;
                guest.write_args(call, addr, &args)?;
            }
            Hypercall::SyscallEntry => {
                let args: SyscallEntryArgs = guest.read_args(call, addr)?;
                self.syscall_entry = match args.entry {
                    0 => None,
                    entry => {
                        guest.check(&|| format!("{}: entry", call.name()), entry, 1)?;
                        let slot = args.return_slot;
                        let what = || format!("{}: return_slot", call.name());
                        guest.check_writable(&what, slot, 8)?;
                        if !slot.is_multiple_of(8) || slot >= 1 << 31 {
                            return Err(violation(
                                call,
                                format!("return_slot {slot:#x} must be 8-aligned and below 2 GiB"),
                            ));
                        }
                        if let (Some(sled), call_entry @ 1..) = (&mut self.sled, args.call_entry) {
                            let what = || format!("{}: call_entry", call.name());
                            guest.check(&what, call_entry, 1)?;
                            sled.fill(call_entry);
                        }
                        Some(SyscallDelivery {
                            entry,
                            return_slot: slot,
                        })
                    }
                };
            }
            // Device hypercalls (net/block rings, notify): see `devices`.
            Hypercall::NetSetup | Hypercall::BlockSetup | Hypercall::Notify => {
                self.devices.hypercall(&guest, call, addr)?;
            }
            Hypercall::Exit => {
                let args: ExitArgs = guest.read_args(call, addr)?;
                let message = if args.msg_len == 0 {
                    None
                } else {
                    guest.read_buffer(
                        call,
                        (args.msg, args.msg_len),
                        limits::EXIT_MESSAGE_MAX,
                        true,
                        &mut self.scratch,
                    )?;
                    Some(String::from_utf8_lossy(&self.scratch).into_owned())
                };
                if args.status > limits::GUEST_STATUS_MAX {
                    return Err(violation(
                        call,
                        format!(
                            "status {} is above {}, the highest a guest may use",
                            args.status,
                            limits::GUEST_STATUS_MAX
                        ),
                    ));
                }
                return Ok(Flow::Exit(VmExit::Exited {
                    status: args.status,
                    message,
                }));
            }
        }
        Ok(Flow::Continue)
    }

    /// Keeps how the guest ended, for a platform whose way out of the guest cannot
    /// carry it (the process platform's gate returns through assembly).
    pub fn set_exit(&mut self, exit: VmExit) {
        self.exit = Some(exit);
    }

    /// What [`Core::set_exit`] kept.
    pub fn take_exit(&mut self) -> Option<VmExit> {
        self.exit.take()
    }

    /// The report of a guest that ran on `platform` and ended with `exit`.
    pub fn report(&mut self, platform: Platform, exit: VmExit) -> RunReport {
        self.timings.total_us = micros(self.started.elapsed());
        RunReport {
            platform,
            exit,
            timings: self.timings,
            console_bytes: self.console.written(),
            console_dropped: self.console.dropped(),
            jail: None,
        }
    }
}
