//! Hand-assembled guests on every platform the host has: the monitor's behaviour
//! without libos or the image builder in the way. Each test runs once per platform
//! (`kvm::NAME`, `process::NAME`); the kvm ones are skipped, with the reason, on
//! hosts without KVM. The process platform runs here without its sandbox (the test
//! harness's thread must go on after the guest); the end-to-end tests run it whole.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use lightvm_abi::{layout, BootInfo, ConsoleWriteArgs, ExitArgs, Hypercall};
use object::elf::{PF_R, PF_W, PF_X};
use zerocopy::IntoBytes;

use super::{SandboxPolicy, Shell, Vm};
use crate::config::VmConfig;
use crate::console::test_util::Shared;
use crate::loader::tests::make_elf;
use crate::platform::Platform;
use crate::report::{RunReport, VmExit};

/// One process-platform guest per process: the process tests of this binary take
/// turns (the kvm ones run in parallel).
static PROCESS_GUESTS: Mutex<()> = Mutex::new(());

fn one_guest(platform: Platform) -> Option<std::sync::MutexGuard<'static, ()>> {
    (platform == Platform::Process).then(|| {
        PROCESS_GUESTS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    })
}

const CODE: u64 = 0x10_0000;
const DATA: u64 = 0x10_1000;

/// `mov edi, call; mov esi, arg; call [boot_info.hypercall_gate]`: a hypercall as
/// the ABI defines it, the same bytes on every platform.
fn hypercall(call: u32, arg: u32) -> Vec<u8> {
    let gate = layout::BOOT_INFO_ADDR + std::mem::offset_of!(BootInfo, hypercall_gate) as u64;
    let mut code = vec![0xbf];
    code.extend_from_slice(&call.to_le_bytes());
    code.push(0xbe);
    code.extend_from_slice(&arg.to_le_bytes());
    code.extend_from_slice(&[0xff, 0x14, 0x25]);
    code.extend_from_slice(&(gate as u32).to_le_bytes());
    code
}

fn call(call: Hypercall, arg: u32) -> Vec<u8> {
    hypercall(call as u32, arg)
}

fn exit_args(status: u32) -> Vec<u8> {
    ExitArgs {
        status,
        ..Default::default()
    }
    .as_bytes()
    .to_vec()
}

/// An image of `code` (read + execute) and `data` (a read-write page), on disk.
struct TestImage(std::path::PathBuf);

impl TestImage {
    fn new(code: &[u8], data: &[u8]) -> Self {
        let elf = make_elf(
            CODE,
            &[
                (CODE, code, code.len() as u64, PF_R | PF_X),
                (DATA, data, 0x1000, PF_R | PF_W),
            ],
        );
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("lightvm-vmm-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{n}.elf"));
        std::fs::write(&path, elf).unwrap();
        Self(path)
    }

    fn config(&self, timeout: Option<Duration>) -> VmConfig {
        VmConfig::new(&self.0, 2 << 20, "", timeout).unwrap()
    }
}

impl Drop for TestImage {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn run(mut vm: Vm) -> RunReport {
    vm.set_sandbox(SandboxPolicy::disabled_for_tests());
    vm.run().unwrap()
}

fn boot(
    platform: Platform,
    code: &[u8],
    data: &[u8],
    timeout: Option<Duration>,
) -> (RunReport, String) {
    boot_in(platform, None, code, data, timeout)
}

/// Boots in `shell` (prepared by the caller) or, with `None`, the cold way.
fn boot_in(
    platform: Platform,
    shell: Option<Shell>,
    code: &[u8],
    data: &[u8],
    timeout: Option<Duration>,
) -> (RunReport, String) {
    let image = TestImage::new(code, data);
    let config = image.config(timeout);
    let capture = Shared::default();
    let vm = match shell {
        Some(shell) => shell.boot(&config, Box::new(capture.clone())),
        None => Vm::build(platform, &config, Box::new(capture.clone())),
    };
    let report = run(vm.unwrap());
    assert_eq!(report.platform, platform);
    let console = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    (report, console)
}

fn crash(report: RunReport) -> crate::report::CrashReport {
    match report.exit {
        VmExit::Crashed(crash) => crash,
        other => panic!("expected a crash, got {other:?}"),
    }
}

fn a_guest_reports_boot_done_and_exits_with_its_status(platform: Platform) {
    let _one = one_guest(platform);
    let mut code = call(Hypercall::BootDone, 0);
    code.extend(call(Hypercall::Exit, DATA as u32));
    let (report, _) = boot(platform, &code, &exit_args(42), None);
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

fn a_warmed_shell_boots_a_guest_like_a_cold_vm(platform: Platform) {
    let _one = one_guest(platform);
    let mut code = call(Hypercall::BootDone, 0);
    code.extend(call(Hypercall::Exit, DATA as u32));
    let mut shell = Shell::create(platform, 2 << 20).unwrap();
    shell.warm().unwrap();
    assert!(shell.is_warm());
    let (report, _) = boot_in(platform, Some(shell), &code, &exit_args(9), None);
    assert_eq!(
        report.exit,
        VmExit::Exited {
            status: 9,
            message: None
        }
    );
    assert!(report.timings.boot_done_us.is_some());
}

fn a_warmed_shell_still_enforces_the_image_permissions(platform: Platform) {
    let _one = one_guest(platform);
    // mov byte ptr [CODE], 1: the image's code is read-only, whatever the shell's
    // warm-up did.
    let mut code = vec![0xc6, 0x04, 0x25];
    code.extend_from_slice(&(CODE as u32).to_le_bytes());
    code.push(1);
    let mut shell = Shell::create(platform, 2 << 20).unwrap();
    shell.warm().unwrap();
    let (report, _) = boot_in(platform, Some(shell), &code, &[], None);
    let crash = crash(report);
    assert!(crash.reason.contains(&format!("{CODE:#x}")), "{crash}");
}

fn the_boot_listener_hears_boot_done_once(platform: Platform) {
    let _one = one_guest(platform);
    let mut code = call(Hypercall::BootDone, 0);
    code.extend(call(Hypercall::BootDone, 0));
    code.extend(call(Hypercall::Exit, DATA as u32));
    let image = TestImage::new(&code, &exit_args(0));
    let mut vm = Vm::build(platform, &image.config(None), Box::new(std::io::sink())).unwrap();
    let heard = Arc::new(Mutex::new(Vec::new()));
    let sink = heard.clone();
    vm.on_boot_done(Box::new(move |us| sink.lock().unwrap().push(us)));
    let report = run(vm);
    let heard = heard.lock().unwrap();
    assert_eq!(heard.len(), 1);
    assert_eq!(Some(heard[0]), report.timings.boot_done_us);
}

fn a_shell_refuses_a_config_of_another_memory_size(platform: Platform) {
    let _one = one_guest(platform);
    let shell = Shell::create(platform, 4 << 20).unwrap();
    let config = VmConfig::new("/nonexistent", 2 << 20, "", None).unwrap();
    assert!(shell.boot(&config, Box::new(std::io::sink())).is_err());
}

fn console_bytes_reach_the_writer(platform: Platform) {
    let _one = one_guest(platform);
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
    let mut code = call(Hypercall::ConsoleWrite, DATA as u32);
    code.extend(call(Hypercall::Exit, DATA as u32 + 0x80));
    let (report, console) = boot(platform, &code, &data, None);
    assert_eq!(console, "hi from ring 3\n");
    assert_eq!(report.console_bytes, text.len() as u64);
    assert!(matches!(report.exit, VmExit::Exited { status: 0, .. }));
}

/// Callee-saved registers survive a hypercall, as the ABI promises: rbx and r12
/// hold values across a console write and are then the exit status's parts.
fn a_hypercall_preserves_the_callee_saved_registers(platform: Platform) {
    let _one = one_guest(platform);
    let text = b"x";
    let mut data = ConsoleWriteArgs {
        buf: DATA + 0x100,
        len: 1,
    }
    .as_bytes()
    .to_vec();
    data.resize(0x100, 0);
    data.extend_from_slice(text);
    // mov ebx, 40; mov r12d, 2
    let mut code = vec![0xbb, 40, 0, 0, 0, 0x41, 0xbc, 2, 0, 0, 0];
    code.extend(call(Hypercall::ConsoleWrite, DATA as u32));
    // lea eax, [rbx + r12]; mov [DATA + 0x80], eax  (ExitArgs.status)
    code.extend_from_slice(&[0x42, 0x8d, 0x04, 0x23]);
    code.extend_from_slice(&[0x89, 0x04, 0x25]);
    code.extend_from_slice(&((DATA + 0x80) as u32).to_le_bytes());
    code.extend(call(Hypercall::Exit, DATA as u32 + 0x80));
    let (report, _) = boot(platform, &code, &data, None);
    assert_eq!(
        report.exit,
        VmExit::Exited {
            status: 42,
            message: None
        }
    );
}

fn a_wild_console_pointer_stops_the_vm_with_a_named_error(platform: Platform) {
    let _one = one_guest(platform);
    let data = ConsoleWriteArgs {
        buf: 0xdead_0000_0000,
        len: 16,
    };
    let code = call(Hypercall::ConsoleWrite, DATA as u32);
    let (report, _) = boot(platform, &code, data.as_bytes(), None);
    let VmExit::AbiViolation { detail } = report.exit else {
        panic!("expected an ABI violation, got {:?}", report.exit);
    };
    assert!(
        detail.contains("console_write") && detail.contains("0xdead00000000"),
        "{detail}"
    );
}

fn an_argument_struct_outside_memory_is_refused(platform: Platform) {
    let _one = one_guest(platform);
    for addr in [
        0xffff_fff0,
        layout::BOOT_INFO_ADDR as u32,
        layout::GDT_ADDR as u32,
    ] {
        let code = call(Hypercall::Exit, addr);
        let (report, _) = boot(platform, &code, &[], None);
        assert!(
            matches!(report.exit, VmExit::AbiViolation { .. }),
            "{addr:#x}: {:?}",
            report.exit
        );
    }
}

fn results_are_never_written_into_the_guests_code(platform: Platform) {
    let _one = one_guest(platform);
    // A poll whose argument struct is the code itself: the monitor must refuse to
    // write its result there (the process platform maps it read-only).
    let code = call(Hypercall::Poll, CODE as u32);
    let (report, _) = boot(platform, &code, &[], None);
    let VmExit::AbiViolation { detail } = report.exit else {
        panic!("expected an ABI violation, got {:?}", report.exit);
    };
    assert!(detail.contains("read-only"), "{detail}");
}

fn an_unknown_hypercall_number_is_an_abi_violation(platform: Platform) {
    let _one = one_guest(platform);
    for number in [0, 15, 16, 0xffff_ffff] {
        let (report, _) = boot(platform, &hypercall(number, 0), &[], None);
        assert!(
            matches!(report.exit, VmExit::AbiViolation { .. }),
            "{number}: {:?}",
            report.exit
        );
    }
}

fn a_null_write_is_a_page_fault_crash_with_registers(platform: Platform) {
    let _one = one_guest(platform);
    // mov byte ptr [0], 1
    let code = [0xc6, 0x04, 0x25, 0, 0, 0, 0, 0x01];
    let (report, _) = boot(platform, &code, &[], None);
    let crash = crash(report);
    assert_eq!(crash.vector, Some(14), "{crash}");
    assert!(crash.reason.contains("accessing 0x0"), "{crash}");
    assert!(crash.registers.contains(&("rip", CODE)), "{crash}");
}

fn writing_to_code_and_executing_data_fault(platform: Platform) {
    let _one = one_guest(platform);
    // mov byte ptr [CODE], 1
    let mut code = vec![0xc6, 0x04, 0x25];
    code.extend_from_slice(&(CODE as u32).to_le_bytes());
    code.push(1);
    let (report, _) = boot(platform, &code, &[], None);
    assert!(
        matches!(report.exit, VmExit::Crashed(_)),
        "{:?}",
        report.exit
    );

    // mov eax, DATA; jmp rax
    let mut code = vec![0xb8];
    code.extend_from_slice(&(DATA as u32).to_le_bytes());
    code.extend_from_slice(&[0xff, 0xe0]);
    let (report, _) = boot(platform, &code, &[0xc3], None);
    let crash = crash(report);
    assert!(crash.reason.contains("not mapped executable"), "{crash}");
}

/// Boots with the process platform's sandbox in force, on a thread of its own
/// (the filter stays with the thread, which ends after the guest).
fn boot_sandboxed(platform: Platform, code: &[u8]) -> RunReport {
    boot_sandboxed_with(platform, code, &[])
}

fn boot_sandboxed_with(platform: Platform, code: &[u8], data: &[u8]) -> RunReport {
    let image = TestImage::new(code, data);
    let config = image.config(None);
    std::thread::spawn(move || {
        let vm = Vm::build(platform, &config, Box::new(std::io::sink())).unwrap();
        vm.run().unwrap()
    })
    .join()
    .unwrap()
}

/// With a `syscall` entry registered, a `syscall` resumes the guest there with its
/// number and arguments, and its return address in the registered slot, as a
/// kernel's entry would see them.
fn a_registered_entry_receives_the_guests_system_calls(platform: Platform) {
    let _one = one_guest(platform);
    // The code: register the entry, make getpid(7), exit with what the handler
    // stored. The handler (at HANDLER) stores rax + rdi and returns through the
    // slot.
    const HANDLER: u64 = CODE + 0x100;
    const SLOT: u64 = DATA + 0x70;
    let mut code = call(Hypercall::SyscallEntry, DATA as u32);
    code.extend_from_slice(&[0xb8, 39, 0, 0, 0, 0xbf, 7, 0, 0, 0, 0x0f, 0x05]);
    code.extend(call(Hypercall::Exit, DATA as u32 + 0x80));
    code.resize((HANDLER - CODE) as usize, 0xcc);
    // lea eax, [rdi + rax]; mov [DATA + 0x80], eax; jmp qword ptr [SLOT]
    code.extend_from_slice(&[0x8d, 0x04, 0x07, 0x89, 0x04, 0x25]);
    code.extend_from_slice(&((DATA + 0x80) as u32).to_le_bytes());
    code.extend_from_slice(&[0xff, 0x24, 0x25]);
    code.extend_from_slice(&(SLOT as u32).to_le_bytes());
    let mut data = lightvm_abi::SyscallEntryArgs {
        entry: HANDLER,
        return_slot: SLOT,
        call_entry: 0,
    }
    .as_bytes()
    .to_vec();
    data.resize(0x80, 0);
    data.extend(exit_args(0));
    let report = boot_sandboxed_with(platform, &code, &data);
    assert_eq!(
        report.exit,
        VmExit::Exited {
            status: 46,
            message: None
        }
    );
}

/// A return slot the guest does not own (the monitor's page tables) is refused:
/// the stub must never write there for it.
fn a_return_slot_outside_the_guests_memory_is_refused(platform: Platform) {
    let _one = one_guest(platform);
    let mut code = call(Hypercall::SyscallEntry, DATA as u32);
    code.extend(call(Hypercall::Exit, DATA as u32 + 0x80));
    let mut data = lightvm_abi::SyscallEntryArgs {
        entry: CODE,
        return_slot: lightvm_abi::layout::PAGE_TABLES_ADDR,
        call_entry: 0,
    }
    .as_bytes()
    .to_vec();
    data.resize(0x80, 0);
    data.extend(exit_args(0));
    let report = boot_sandboxed_with(platform, &code, &data);
    match report.exit {
        VmExit::AbiViolation { detail } => {
            assert!(detail.contains("return_slot"), "{detail}")
        }
        other => panic!("expected an ABI violation, got {other:?}"),
    }
}

fn a_system_call_is_reported_as_such(platform: Platform) {
    let _one = one_guest(platform);
    // mov eax, 39 (getpid); syscall
    let code = [0xb8, 39, 0, 0, 0, 0x0f, 0x05];
    let report = boot_sandboxed(platform, &code);
    let crash = crash(report);
    assert!(crash.reason.contains("syscall"), "{crash}");
    assert!(crash.reason.contains("system call 39"), "{crash}");
}

fn a_spinning_guest_is_stopped_by_the_timeout(platform: Platform) {
    let _one = one_guest(platform);
    let code = [0xeb, 0xfe]; // jmp $
    let (report, _) = boot(platform, &code, &[], Some(Duration::from_millis(100)));
    assert_eq!(report.exit, VmExit::TimedOut { after_ms: 100 });
}

fn the_guest_can_reach_no_io_port(platform: Platform) {
    let _one = one_guest(platform);
    // mov dx, 0x3f8; out dx, al: a serial port, closed to unikernels.
    let code = [0x66, 0xba, 0xf8, 0x03, 0xee];
    let (report, _) = boot(platform, &code, &[], None);
    let crash = crash(report);
    assert_eq!(crash.vector, Some(13), "{crash}");
}

fn the_guest_starts_in_the_state_the_abi_describes(platform: Platform) {
    let _one = one_guest(platform);
    // rdi = boot info, rsp = STACK_TOP - 8, and a zeroed heap: exit with
    // (rdi == BOOT_INFO) + 2 * (rsp == STACK_TOP - 8) + 4 * (first heap byte == 0).
    // mov r8, rdi; xor eax, eax; cmp r8, BOOT; sete al; mov ecx, eax;
    // mov r9, rsp; cmp r9, TOP; sete al; lea ecx, [rcx + 2*rax];
    // cmp byte ptr [HEAP], 0; sete al; lea ecx, [rcx + 4*rax]; mov [DATA], ecx
    let heap = DATA + 0x1000;
    let mut code = vec![0x49, 0x89, 0xf8, 0x31, 0xc0, 0x49, 0x81, 0xf8];
    code.extend_from_slice(&(layout::BOOT_INFO_ADDR as u32).to_le_bytes());
    code.extend_from_slice(&[
        0x0f, 0x94, 0xc0, 0x89, 0xc1, 0x49, 0x89, 0xe1, 0x49, 0x81, 0xf9,
    ]);
    code.extend_from_slice(&((layout::STACK_TOP - 8) as u32).to_le_bytes());
    code.extend_from_slice(&[0x0f, 0x94, 0xc0, 0x8d, 0x0c, 0x41, 0x80, 0x3c, 0x25]);
    code.extend_from_slice(&(heap as u32).to_le_bytes());
    code.extend_from_slice(&[0x00, 0x0f, 0x94, 0xc0, 0x8d, 0x0c, 0x81, 0x89, 0x0c, 0x25]);
    code.extend_from_slice(&(DATA as u32).to_le_bytes());
    code.extend(call(Hypercall::Exit, DATA as u32));
    let (report, _) = boot(platform, &code, &exit_args(0), None);
    assert_eq!(
        report.exit,
        VmExit::Exited {
            status: 7,
            message: None
        }
    );
}

lightvm_testkit::platform_tests!(
    crate::Platform;
    a_guest_reports_boot_done_and_exits_with_its_status,
    a_warmed_shell_boots_a_guest_like_a_cold_vm,
    a_warmed_shell_still_enforces_the_image_permissions,
    the_boot_listener_hears_boot_done_once,
    a_shell_refuses_a_config_of_another_memory_size,
    console_bytes_reach_the_writer,
    a_hypercall_preserves_the_callee_saved_registers,
    a_wild_console_pointer_stops_the_vm_with_a_named_error,
    an_argument_struct_outside_memory_is_refused,
    results_are_never_written_into_the_guests_code,
    an_unknown_hypercall_number_is_an_abi_violation,
    a_null_write_is_a_page_fault_crash_with_registers,
    writing_to_code_and_executing_data_fault,
    a_system_call_is_reported_as_such,
    a_registered_entry_receives_the_guests_system_calls,
    a_return_slot_outside_the_guests_memory_is_refused,
    a_spinning_guest_is_stopped_by_the_timeout,
    the_guest_can_reach_no_io_port,
    the_guest_starts_in_the_state_the_abi_describes,
);
