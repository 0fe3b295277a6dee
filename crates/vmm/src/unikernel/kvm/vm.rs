//! One unikernel VM: built from a validated [`VmConfig`], then run to its end.
//!
//! `build` does everything that can fail for host reasons (image, KVM, memory,
//! initial CPU state); `run` is the exit loop, in which every guest action either
//! continues the guest or ends it with a [`VmExit`]. Nothing the guest does can make
//! `run` panic or return an error: errors from `run` are host failures only.

use std::io::Write;
use std::time::{Duration, Instant};

use kvm_ioctls::{VcpuExit, VcpuFd, VmFd};
use lightvm_abi::{layout, limits, ConsoleWriteArgs, ExitArgs, Hypercall, PollArgs};
use vm_memory::GuestMemoryMmap;

use crate::arch::cpu::SYSCALL_TRAP;
use crate::config::VmConfig;
use crate::console::Console;
use crate::error::{kvm_op, VmmError};
use crate::hypercall::{self, AbiViolation};
use crate::loader::UnikernelImage;
use crate::report::{micros, CrashReport, RunReport, Timings, VmExit};
use crate::shell::{Shell, ShellParts};
use crate::timer::DeadlineTimer;
use crate::unikernel_devices::Devices;

/// A built VM, ready to run its guest.
pub struct Vm {
    // Field order is drop order: the vCPU and VM file descriptors go before the
    // memory they map.
    vcpu: VcpuFd,
    _vm: VmFd,
    memory: GuestMemoryMmap,
    console: Console,
    timeout: Option<Duration>,
    started: Instant,
    timings: Timings,
    scratch: Vec<u8>,
    boot_listener: Option<BootListener>,
    devices: Devices,
}

/// Called once when the guest reaches its `main`, with µs since the boot started.
pub type BootListener = Box<dyn FnMut(f64) + Send>;

impl Vm {
    /// Boots a unikernel the cold way: validates the image, then creates a new KVM
    /// VM for it ([`Shell::create`]) and loads it. Guest console output goes to
    /// `console`. For VMs on the request path, prepare a [`Shell`] ahead of time and
    /// call [`Shell::boot`] instead.
    pub fn build(config: &VmConfig, console: Box<dyn Write + Send>) -> Result<Self, VmmError> {
        let started = Instant::now();
        let image = UnikernelImage::from_file(config.image())?;
        image.check_fits(config.mem_size())?;
        let image_loaded = started.elapsed();
        let shell = Shell::create(config.mem_size())?;
        shell.start(&image, config, console, started, image_loaded)
    }

    /// Wraps a vCPU that is about to run a loaded image.
    pub(crate) fn new(
        parts: ShellParts,
        devices: Devices,
        console: Box<dyn Write + Send>,
        timeout: Option<Duration>,
        started: Instant,
        timings: Timings,
    ) -> Self {
        Self {
            vcpu: parts.vcpu,
            _vm: parts.vm,
            memory: parts.memory,
            console: Console::new(console),
            timeout,
            started,
            timings,
            scratch: Vec::new(),
            boot_listener: None,
            devices,
        }
    }

    /// Timings so far (image load and setup are known before `run`).
    pub fn timings(&self) -> &Timings {
        &self.timings
    }

    /// Registers `listener` for the guest's boot-done hypercall: the toolstack
    /// answers "VM created" at that moment, while the guest runs on.
    pub fn on_boot_done(&mut self, listener: BootListener) {
        self.boot_listener = Some(listener);
    }

    /// Runs the guest until it exits, crashes, breaks the ABI or times out.
    pub fn run(mut self) -> Result<RunReport, VmmError> {
        let deadline = self.timeout.map(|t| (Instant::now() + t, t));
        let _timer = self.timeout.map(DeadlineTimer::arm).transpose()?;
        let exit = loop {
            if let Some(exit) = self.step(deadline)? {
                break exit;
            }
        };
        self.timings.total_us = micros(self.started.elapsed());
        Ok(RunReport {
            exit,
            timings: self.timings,
            console_bytes: self.console.written(),
            console_dropped: self.console.dropped(),
        })
    }

    /// Runs the vCPU to its next exit and handles it; `Some` when the VM is over.
    fn step(&mut self, deadline: Option<(Instant, Duration)>) -> Result<Option<VmExit>, VmmError> {
        let timed_out = |deadline: Option<(Instant, Duration)>| {
            deadline
                .filter(|(at, _)| Instant::now() >= *at)
                .map(|(_, after)| VmExit::TimedOut {
                    after_ms: u64::try_from(after.as_millis()).unwrap_or(u64::MAX),
                })
        };
        let exit = match self.vcpu.run() {
            Ok(VcpuExit::IoOut(port, data)) => {
                let Some(call) = Hypercall::from_port(port) else {
                    return Ok(Some(VmExit::AbiViolation {
                        detail: format!("wrote to I/O port {port:#x}, which is not a hypercall"),
                    }));
                };
                let argument = hypercall::argument_address(call, data);
                match argument.and_then(|addr| self.hypercall(call, addr)) {
                    Ok(HypercallResult::Continue) => return Ok(timed_out(deadline)),
                    Ok(HypercallResult::Exit(exit)) => exit,
                    Err(AbiViolation(detail)) => VmExit::AbiViolation { detail },
                }
            }
            Ok(VcpuExit::IoIn(port, _)) => VmExit::AbiViolation {
                detail: format!("read I/O port {port:#x}; unikernels have no port devices"),
            },
            Ok(VcpuExit::MmioRead(addr, _) | VcpuExit::MmioWrite(addr, _)) => {
                VmExit::AbiViolation {
                    detail: format!("accessed {addr:#x}, outside guest memory"),
                }
            }
            Ok(VcpuExit::Shutdown) => VmExit::Crashed(self.crash_report(None)?),
            Ok(VcpuExit::InternalError) => {
                VmExit::Crashed(self.crash_report(Some("KVM could not emulate an instruction"))?)
            }
            Ok(VcpuExit::FailEntry(reason, _)) => {
                return Err(VmmError::Host {
                    op: "entering the guest",
                    source: std::io::Error::other(format!(
                        "hardware entry failure reason {reason:#x}"
                    )),
                })
            }
            Ok(other) => {
                let reason = format!("unexpected VM exit {other:?}");
                VmExit::Crashed(self.crash_report(Some(&reason))?)
            }
            Err(error) if matches!(error.errno(), libc::EINTR | libc::EAGAIN) => {
                return Ok(timed_out(deadline));
            }
            Err(error) => return Err(kvm_op("KVM_RUN")(error)),
        };
        Ok(Some(exit))
    }

    fn hypercall(&mut self, call: Hypercall, addr: u64) -> Result<HypercallResult, AbiViolation> {
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
                let args: ConsoleWriteArgs = hypercall::read_args(&self.memory, call, addr)?;
                hypercall::read_buffer(
                    &self.memory,
                    call,
                    args.buf,
                    args.len,
                    limits::CONSOLE_WRITE_MAX,
                    false,
                    &mut self.scratch,
                )?;
                self.console.write(&self.scratch);
            }
            Hypercall::Poll => {
                let mut args: PollArgs = hypercall::read_args(&self.memory, call, addr)?;
                let timeout =
                    (args.timeout_ns != u64::MAX).then(|| Duration::from_nanos(args.timeout_ns));
                // Services the devices, then waits on their descriptors (or just the
                // timeout and the deadline timer's signal when there are none).
                args.ready = self.devices.poll(&self.memory, timeout)?;
                hypercall::write_args(&self.memory, call, addr, &args)?;
            }
            // Device hypercalls (net/block rings, notify): see `unikernel_devices`.
            Hypercall::NetSetup | Hypercall::BlockSetup | Hypercall::Notify => {
                self.devices.hypercall(&self.memory, call, addr)?;
            }
            Hypercall::Exit => {
                let args: ExitArgs = hypercall::read_args(&self.memory, call, addr)?;
                let message = if args.msg_len == 0 {
                    None
                } else {
                    hypercall::read_buffer(
                        &self.memory,
                        call,
                        args.msg,
                        args.msg_len,
                        limits::EXIT_MESSAGE_MAX,
                        true,
                        &mut self.scratch,
                    )?;
                    Some(String::from_utf8_lossy(&self.scratch).into_owned())
                };
                if args.status > limits::GUEST_STATUS_MAX {
                    return Err(AbiViolation(format!(
                        "exit: status {} is above {}, the highest a guest may use",
                        args.status,
                        limits::GUEST_STATUS_MAX
                    )));
                }
                return Ok(HypercallResult::Exit(VmExit::Exited {
                    status: args.status,
                    message,
                }));
            }
        }
        Ok(HypercallResult::Continue)
    }

    fn crash_report(&self, reason: Option<&str>) -> Result<CrashReport, VmmError> {
        let regs = self.vcpu.get_regs().map_err(kvm_op("KVM_GET_REGS"))?;
        let sregs = self.vcpu.get_sregs().map_err(kvm_op("KVM_GET_SREGS"))?;
        let events = self
            .vcpu
            .get_vcpu_events()
            .map_err(kvm_op("KVM_GET_VCPU_EVENTS"))?;
        let exception = &events.exception;
        // After a triple fault KVM leaves the last exception's vector here.
        let vector = Some(exception.nr);
        let reason = match reason {
            Some(reason) => reason.to_owned(),
            None => describe_fault(vector, regs.rip, sregs.cr2, regs.rcx),
        };
        Ok(CrashReport {
            reason,
            vector,
            registers: vec![
                ("rip", regs.rip),
                ("rsp", regs.rsp),
                ("rbp", regs.rbp),
                ("rflags", regs.rflags),
                ("cr2", sregs.cr2),
                ("rax", regs.rax),
                ("rbx", regs.rbx),
                ("rcx", regs.rcx),
                ("rdx", regs.rdx),
                ("rsi", regs.rsi),
                ("rdi", regs.rdi),
                ("r8", regs.r8),
                ("r9", regs.r9),
                ("r10", regs.r10),
                ("r11", regs.r11),
                ("r12", regs.r12),
                ("r13", regs.r13),
                ("r14", regs.r14),
                ("r15", regs.r15),
            ],
        })
    }
}

enum HypercallResult {
    Continue,
    Exit(VmExit),
}

/// Names the fault the way a developer would want to read it.
fn describe_fault(vector: Option<u8>, rip: u64, cr2: u64, rcx: u64) -> String {
    if rip == SYSCALL_TRAP {
        return format!(
            "the guest executed `syscall` (return address {rcx:#x}); unikernels make hypercalls, not system calls"
        );
    }
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

/// Boots hand-assembled guests on the real `/dev/kvm`: the VMM's behaviour without
/// libos or the image builder in the way.
#[cfg(test)]
mod kvm_tests {
    use super::*;
    use crate::console::test_util::Shared;
    use crate::loader::tests::make_elf;
    use object::elf::{PF_R, PF_W, PF_X};
    use std::sync::{Arc, Mutex};
    use zerocopy::IntoBytes;

    const CODE: u64 = 0x10_0000;
    const DATA: u64 = 0x10_1000;

    /// `mov eax, imm32; mov dx, port; out dx, eax`.
    fn hypercall(call: Hypercall, arg: u32) -> Vec<u8> {
        let mut code = vec![0xb8];
        code.extend_from_slice(&arg.to_le_bytes());
        code.extend_from_slice(&[0x66, 0xba]);
        code.extend_from_slice(&call.port().to_le_bytes());
        code.push(0xef);
        code
    }

    fn boot(code: &[u8], data: &[u8], timeout: Option<Duration>) -> (RunReport, String) {
        boot_in(None, code, data, timeout)
    }

    /// Boots in `shell` (prepared by the caller) or, with `None`, the cold way.
    fn boot_in(
        shell: Option<Shell>,
        code: &[u8],
        data: &[u8],
        timeout: Option<Duration>,
    ) -> (RunReport, String) {
        let elf = make_elf(
            CODE,
            &[
                (CODE, code, code.len() as u64, PF_R | PF_X),
                (DATA, data, 0x1000, PF_R | PF_W),
            ],
        );
        let dir = std::env::temp_dir().join(format!("lightvm-vmm-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{:x}.elf", code.as_ptr() as usize));
        std::fs::write(&path, elf).unwrap();
        let config = VmConfig::new(&path, 2 << 20, "", timeout).unwrap();
        let capture = Shared::default();
        let vm = match shell {
            Some(shell) => shell.boot(&config, Box::new(capture.clone())),
            None => Vm::build(&config, Box::new(capture.clone())),
        };
        let report = vm.unwrap().run().unwrap();
        std::fs::remove_file(&path).unwrap();
        let console = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
        (report, console)
    }

    fn exit_args(status: u32) -> Vec<u8> {
        ExitArgs {
            status,
            ..Default::default()
        }
        .as_bytes()
        .to_vec()
    }

    #[test]
    fn a_guest_reports_boot_done_and_exits_with_its_status() {
        let mut code = hypercall(Hypercall::BootDone, 0);
        code.extend(hypercall(Hypercall::Exit, DATA as u32));
        let (report, _) = boot(&code, &exit_args(42), None);
        assert_eq!(
            report.exit,
            VmExit::Exited {
                status: 42,
                message: None
            }
        );
        let boot_done = report.timings.boot_done_us.unwrap();
        assert!(boot_done <= report.timings.total_us);
    }

    #[test]
    fn a_warmed_shell_boots_a_guest_like_a_cold_vm() {
        let mut code = hypercall(Hypercall::BootDone, 0);
        code.extend(hypercall(Hypercall::Exit, DATA as u32));
        let mut shell = Shell::create(2 << 20).unwrap();
        shell.warm().unwrap();
        assert!(shell.is_warm());
        let (report, _) = boot_in(Some(shell), &code, &exit_args(9), None);
        assert_eq!(
            report.exit,
            VmExit::Exited {
                status: 9,
                message: None
            }
        );
        assert!(report.timings.boot_done_us.is_some());
    }

    #[test]
    fn a_warmed_shell_still_enforces_the_image_permissions() {
        // mov byte ptr [CODE], 1: the image's code is read-only in its own tables,
        // whatever the parking stub's tables allowed.
        let mut code = vec![0xc6, 0x04, 0x25];
        code.extend_from_slice(&(CODE as u32).to_le_bytes());
        code.push(1);
        let mut shell = Shell::create(2 << 20).unwrap();
        shell.warm().unwrap();
        let (report, _) = boot_in(Some(shell), &code, &[], None);
        assert!(
            matches!(report.exit, VmExit::Crashed(_)),
            "{:?}",
            report.exit
        );
    }

    #[test]
    fn the_boot_listener_hears_boot_done_once() {
        let mut code = hypercall(Hypercall::BootDone, 0);
        code.extend(hypercall(Hypercall::BootDone, 0));
        code.extend(hypercall(Hypercall::Exit, DATA as u32));
        let elf = make_elf(
            CODE,
            &[
                (CODE, &code, code.len() as u64, PF_R | PF_X),
                (DATA, &exit_args(0), 0x1000, PF_R | PF_W),
            ],
        );
        let path =
            std::env::temp_dir().join(format!("lightvm-listener-{}.elf", std::process::id()));
        std::fs::write(&path, elf).unwrap();
        let config = VmConfig::new(&path, 2 << 20, "", None).unwrap();
        let mut vm = Vm::build(&config, Box::new(std::io::sink())).unwrap();
        let heard = Arc::new(Mutex::new(Vec::new()));
        let sink = heard.clone();
        vm.on_boot_done(Box::new(move |us| sink.lock().unwrap().push(us)));
        let report = vm.run().unwrap();
        std::fs::remove_file(&path).unwrap();
        let heard = heard.lock().unwrap();
        assert_eq!(heard.len(), 1);
        assert_eq!(Some(heard[0]), report.timings.boot_done_us);
    }

    #[test]
    fn a_shell_refuses_a_config_of_another_memory_size() {
        let shell = Shell::create(4 << 20).unwrap();
        let config = VmConfig::new("/nonexistent", 2 << 20, "", None).unwrap();
        assert!(shell.boot(&config, Box::new(std::io::sink())).is_err());
    }

    #[test]
    fn console_bytes_reach_the_writer() {
        let text = b"hi from ring 3\n";
        let mut data = ConsoleWriteArgs {
            buf: DATA + 0x100,
            len: text.len() as u64,
        }
        .as_bytes()
        .to_vec();
        data.resize(0x80, 0);
        data.extend(exit_args(0));
        data.resize(0x100, 0);
        data.extend_from_slice(text);
        let mut code = hypercall(Hypercall::ConsoleWrite, DATA as u32);
        code.extend(hypercall(Hypercall::Exit, DATA as u32 + 0x80));
        let (report, console) = boot(&code, &data, None);
        assert_eq!(console, "hi from ring 3\n");
        assert_eq!(report.console_bytes, text.len() as u64);
        assert!(matches!(report.exit, VmExit::Exited { status: 0, .. }));
    }

    #[test]
    fn a_wild_console_pointer_stops_the_vm_with_a_named_error() {
        let data = ConsoleWriteArgs {
            buf: 0xdead_0000_0000,
            len: 16,
        };
        let code = hypercall(Hypercall::ConsoleWrite, DATA as u32);
        let (report, _) = boot(&code, data.as_bytes(), None);
        let VmExit::AbiViolation { detail } = report.exit else {
            panic!("expected an ABI violation, got {:?}", report.exit);
        };
        assert!(
            detail.contains("console_write") && detail.contains("0xdead00000000"),
            "{detail}"
        );
    }

    #[test]
    fn an_argument_struct_outside_memory_is_refused() {
        let code = hypercall(Hypercall::Exit, 0xffff_fff0);
        let (report, _) = boot(&code, &[], None);
        assert!(
            matches!(report.exit, VmExit::AbiViolation { .. }),
            "{:?}",
            report.exit
        );
    }

    #[test]
    fn a_null_write_is_a_page_fault_crash_with_registers() {
        // mov byte ptr [0], 1
        let code = [0xc6, 0x04, 0x25, 0, 0, 0, 0, 0x01];
        let (report, _) = boot(&code, &[], None);
        let VmExit::Crashed(crash) = report.exit else {
            panic!("expected a crash, got {:?}", report.exit);
        };
        assert_eq!(crash.vector, Some(14), "{crash}");
        assert!(crash.reason.contains("accessing 0x0"), "{crash}");
        assert!(crash.registers.contains(&("rip", CODE)), "{crash}");
    }

    #[test]
    fn writing_to_code_and_executing_data_fault() {
        // mov byte ptr [CODE], 1
        let mut code = vec![0xc6, 0x04, 0x25];
        code.extend_from_slice(&(CODE as u32).to_le_bytes());
        code.push(1);
        let (report, _) = boot(&code, &[], None);
        assert!(
            matches!(report.exit, VmExit::Crashed(_)),
            "{:?}",
            report.exit
        );

        // mov eax, DATA; jmp rax
        let mut code = vec![0xb8];
        code.extend_from_slice(&(DATA as u32).to_le_bytes());
        code.extend_from_slice(&[0xff, 0xe0]);
        let (report, _) = boot(&code, &[0xc3], None);
        let VmExit::Crashed(crash) = report.exit else {
            panic!("expected a crash, got {:?}", report.exit);
        };
        assert!(crash.reason.contains("not mapped executable"), "{crash}");
    }

    #[test]
    fn a_system_call_is_reported_as_such() {
        let code = [0x0f, 0x05];
        let (report, _) = boot(&code, &[], None);
        let VmExit::Crashed(crash) = report.exit else {
            panic!("expected a crash, got {:?}", report.exit);
        };
        assert!(crash.reason.contains("syscall"), "{crash}");
    }

    #[test]
    fn a_spinning_guest_is_stopped_by_the_timeout() {
        let code = [0xeb, 0xfe]; // jmp $
        let (report, _) = boot(&code, &[], Some(Duration::from_millis(100)));
        assert_eq!(report.exit, VmExit::TimedOut { after_ms: 100 });
    }

    #[test]
    fn ports_outside_the_hypercall_range_are_closed_to_the_guest() {
        let code = [0x66, 0xba, 0xf8, 0x03, 0xee]; // mov dx, 0x3f8; out dx, al
        let (report, _) = boot(&code, &[], None);
        let VmExit::Crashed(crash) = report.exit else {
            panic!("expected a #GP crash, got {:?}", report.exit);
        };
        assert_eq!(crash.vector, Some(13), "{crash}");
    }

    #[test]
    fn an_unassigned_hypercall_port_is_an_abi_violation() {
        let code = [0x66, 0xba, 0x0f, 0x05, 0xef]; // mov dx, 0x50f; out dx, eax
        let (report, _) = boot(&code, &[], None);
        let VmExit::AbiViolation { detail } = report.exit else {
            panic!("expected an ABI violation, got {:?}", report.exit);
        };
        assert!(detail.contains("0x50f"), "{detail}");
    }
}
