//! End-to-end: `lightvm build` the guest applications, then `lightvm run` them on
//! every platform the host has — the real `/dev/kvm`, and a real sandboxed process —
//! checking what a user would check: output, exit code, the one line of explanation
//! on stderr. Each platform test runs as `kvm::NAME` and `process::NAME`; the kvm
//! ones are reported as skipped, with the reason, on hosts without KVM.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use common::{image, vm_process, Vm, LIGHTVM};
use lightvm_vmm::Platform;

fn lightvm(args: &[&str]) -> Output {
    Command::new(LIGHTVM)
        .args(args)
        .output()
        .expect("run lightvm")
}

fn run(platform: Platform, name: &str, extra: &[&str]) -> Output {
    let image = image(name);
    let mut args = vec![
        "run",
        "--platform",
        platform.name(),
        image.to_str().expect("utf-8 path"),
    ];
    args.extend_from_slice(extra);
    lightvm(&args)
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The VMM handled the situation: no Rust panic of its own, no backtrace.
fn assert_no_vmm_panic(output: &Output) {
    let err = stderr(output);
    assert!(
        !err.contains("thread 'main' panicked"),
        "the VMM panicked:\n{err}"
    );
    assert!(!err.contains("RUST_BACKTRACE"), "the VMM panicked:\n{err}");
}

fn hello_prints_and_exits_zero(platform: Platform) {
    let output = run(platform, "hello", &[]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(stdout(&output).contains("Hello from a lightvm unikernel!"));
}

fn the_guest_library_passes_its_self_test_on_small_and_large_vms(platform: Platform) {
    // Heap, mem* functions, clocks, sleep through the poll hypercall, boot info.
    for mem in ["2M", "64M"] {
        let output = run(platform, "selftest", &["--mem", mem, "--timeout", "30s"]);
        assert_eq!(
            output.status.code(),
            Some(0),
            "selftest failed at --mem {mem}:\n{}{}",
            stdout(&output),
            stderr(&output)
        );
    }
}

fn the_command_line_reaches_the_guest(platform: Platform) {
    let output = run(platform, "hello", &["--cmdline", "answer=42 mode=test"]);
    assert_eq!(output.status.code(), Some(0));
    assert!(
        stdout(&output).contains("answer=42 mode=test"),
        "{}",
        stdout(&output)
    );
}

fn the_guest_status_is_the_exit_code(platform: Platform) {
    for status in ["0", "7", "123"] {
        let output = run(platform, "exitcode", &["--cmdline", status]);
        assert_eq!(
            output.status.code(),
            status.parse().ok(),
            "{}",
            stderr(&output)
        );
    }
}

fn json_reports_the_exit_and_the_timings(platform: Platform) {
    let output = run(platform, "hello", &["--json"]);
    assert_eq!(output.status.code(), Some(0));
    let result: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON on stdout");
    assert_eq!(result["exit_code"], 0);
    assert_eq!(result["platform"], platform.name());
    assert_eq!(result["exit"]["kind"], "exited");
    let timings = &result["timings"];
    for key in ["image_load_us", "vm_setup_us", "boot_done_us", "total_us"] {
        assert!(
            timings[key].as_f64().is_some_and(|t| t > 0.0),
            "{key}: {timings}"
        );
    }
    let boot_done = timings["boot_done_us"].as_f64().unwrap_or_default();
    assert!(boot_done <= timings["total_us"].as_f64().unwrap_or_default());
    assert!(
        stderr(&output).contains("Hello from a lightvm unikernel!"),
        "console goes to stderr"
    );
}

fn report_writes_the_json_result_and_leaves_the_console_on_stdout(platform: Platform) {
    let report = image("hello").with_file_name(format!("hello-report-{platform}.json"));
    let output = run(platform, "hello", &["--report", report.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0));
    assert!(stdout(&output).contains("Hello from a lightvm unikernel!"));
    let result: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).expect("the report file")).expect("JSON");
    assert_eq!(result["exit_code"], 0);
    assert!(result["timings"]["boot_done_us"]
        .as_f64()
        .is_some_and(|t| t > 0.0));
}

fn a_panic_message_reaches_the_host(platform: Platform) {
    let output = run(platform, "panic", &[]);
    assert_eq!(output.status.code(), Some(101));
    assert!(
        stderr(&output).contains("deliberate panic for testing"),
        "{}",
        stderr(&output)
    );
    assert_no_vmm_panic(&output);
}

fn a_wild_pointer_stops_the_vm_and_names_the_call(platform: Platform) {
    let output = run(platform, "badptr", &[]);
    assert_eq!(output.status.code(), Some(127), "{}", stderr(&output));
    let err = stderr(&output);
    assert!(
        err.contains("console_write") && err.contains("outside"),
        "{err}"
    );
    assert_no_vmm_panic(&output);
}

fn a_spinning_guest_is_killed_by_the_timeout(platform: Platform) {
    let output = run(platform, "spin", &["--timeout", "1s"]);
    assert_eq!(output.status.code(), Some(124), "{}", stderr(&output));
    assert!(stderr(&output).contains("timeout"), "{}", stderr(&output));
}

fn a_fault_is_reported_as_a_crash_with_registers(platform: Platform) {
    let output = run(platform, "fault", &[]);
    assert_eq!(output.status.code(), Some(126), "{}", stderr(&output));
    let err = stderr(&output);
    assert!(
        err.contains("page fault") && err.contains("accessing 0x0"),
        "{err}"
    );
    assert!(err.contains("rip=0x") && err.contains("rsp=0x"), "{err}");
    assert_no_vmm_panic(&output);
}

fn a_console_flood_is_rate_limited_and_reported(platform: Platform) {
    let output = run(platform, "flood", &["--timeout", "2s"]);
    assert_eq!(output.status.code(), Some(124), "{}", stderr(&output));
    // 1 MiB/s with a 1 MiB burst: two seconds let at most ~3 MiB through.
    assert!(
        output.stdout.len() < 4 << 20,
        "{} bytes got through",
        output.stdout.len()
    );
    assert!(!output.stdout.is_empty());
    assert!(stderr(&output).contains("dropped"), "{}", stderr(&output));
}

/// One line on stderr, exit code 125, and the line names the problem.
fn assert_refused(output: &Output, needle: &str) {
    assert_eq!(output.status.code(), Some(125), "{}", stderr(output));
    let err = stderr(output);
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "one line expected:\n{err}"
    );
    assert!(err.contains(needle), "expected {needle:?} in:\n{err}");
    assert_no_vmm_panic(output);
}

fn patched_hello(name: &str, patch: impl FnOnce(&mut Vec<u8>)) -> PathBuf {
    let mut bytes = std::fs::read(image("hello")).expect("read hello");
    patch(&mut bytes);
    let path = image("hello").with_file_name(name);
    std::fs::write(&path, bytes).expect("write patched image");
    path
}

fn bad_images_get_one_clear_line(platform: Platform) {
    let run_file = |path: &std::path::Path, extra: &[&str]| {
        let mut args = vec!["run", "--platform", platform.name(), path.to_str().unwrap()];
        args.extend_from_slice(extra);
        lightvm(&args)
    };
    let text = image("hello").with_file_name("not-an-elf.txt");
    std::fs::write(&text, "just some text\n").expect("write");
    assert_refused(&run_file(&text, &[]), "not an ELF");

    let arm = patched_hello("arm.elf", |b| {
        b[18..20].copy_from_slice(&183u16.to_le_bytes())
    });
    assert_refused(&run_file(&arm, &[]), "wrong architecture");

    let elf32 = patched_hello("elf32.elf", |b| b[4] = 1);
    assert_refused(&run_file(&elf32, &[]), "64-bit");

    let truncated = patched_hello("truncated.elf", |b| b.truncate(100));
    assert_refused(&run_file(&truncated, &[]), "malformed");

    // Grow the last segment's memory size (p_memsz of program header 2) to 4 MiB.
    let big = patched_hello("big.elf", |b| {
        let phoff = u64::from_le_bytes(b[32..40].try_into().unwrap()) as usize;
        let memsz = phoff + 2 * 56 + 40;
        b[memsz..memsz + 8].copy_from_slice(&(4u64 << 20).to_le_bytes());
    });
    assert_refused(&run_file(&big, &[]), "raise --mem");
    let output = run_file(&big, &["--mem", "8M"]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "fits with more memory: {}",
        stderr(&output)
    );

    assert_refused(
        &run_file(std::path::Path::new("/nonexistent/image.elf"), &[]),
        "cannot read image",
    );
}

#[test]
fn bad_flags_get_one_clear_line() {
    let hello = image("hello");
    let hello = hello.to_str().unwrap();
    assert_refused(
        &lightvm(&["run", hello, "--mem", "3M"]),
        "multiple of 2 MiB",
    );
    assert_refused(
        &lightvm(&["run", hello, "--mem", "lots"]),
        "invalid memory size",
    );
    let long = "x".repeat(5000);
    assert_refused(
        &lightvm(&["run", hello, "--cmdline", &long]),
        "command line",
    );
    let output = lightvm(&["run", hello, "--timeout", "soon"]);
    assert_eq!(output.status.code(), Some(125));
    assert!(stderr(&output).contains("--timeout"), "{}", stderr(&output));
    let output = lightvm(&["run", hello, "--frobnicate"]);
    assert_eq!(output.status.code(), Some(125));
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// `lightvm run ARGS… hello` on a host without /dev/kvm: an empty /dev in a private
/// mount namespace.
fn run_without_kvm(args: &[&str]) -> Output {
    let hello = image("hello");
    let script = format!(
        "mount -t tmpfs none /dev && exec {LIGHTVM} run {} {}",
        args.join(" "),
        hello.display()
    );
    Command::new("unshare")
        .args(["--mount", "sh", "-c", &script])
        .output()
        .expect("run unshare")
}

#[test]
fn without_kvm_the_process_platform_runs_the_guest_and_says_why() {
    if !is_root() {
        eprintln!("skipped: hiding /dev/kvm needs a mount namespace (root)");
        return;
    }
    let output = run_without_kvm(&["--json"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let result: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(result["platform"], "process");
    let err = stderr(&output);
    let notice: Vec<&str> = err.lines().filter(|l| l.starts_with("lightvm:")).collect();
    assert_eq!(
        notice.len(),
        1,
        "one line says which platform and why:\n{err}"
    );
    assert!(
        notice[0].contains("process platform") && notice[0].contains("no /dev/kvm"),
        "{err}"
    );
    assert_refused(
        &run_without_kvm(&["--platform", "kvm"]),
        "no /dev/kvm on this host",
    );
}

#[test]
fn kvm_without_permission_falls_back_or_is_named() {
    if !is_root() {
        eprintln!("skipped: dropping privileges needs root");
        return;
    }
    let hello = image("hello");
    let dir = hello.parent().unwrap();
    std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let as_nobody = |platform: &str| {
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .args([LIGHTVM, "run", "--platform", platform])
            .arg(&hello)
            .output()
            .expect("run setpriv")
    };
    let output = as_nobody("auto");
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(stdout(&output).contains("Hello from a lightvm unikernel!"));
    if std::path::Path::new("/dev/kvm").exists() {
        assert!(
            stderr(&output).contains("not accessible"),
            "{}",
            stderr(&output)
        );
        assert_refused(&as_nobody("kvm"), "/dev/kvm is not accessible");
    }
}

/// Each CPU exception a guest can raise is a crash report naming it, exit 126.
fn every_fault_is_a_crash_report_naming_it(platform: Platform) {
    for (mode, reason) in [
        ("null", "accessing 0x0"),
        ("ud2", "invalid opcode"),
        ("int3", "breakpoint"),
        ("hlt", "general protection fault"),
        ("divide", "divide error"),
        ("stack", "stack overflow"),
        ("jump", "not mapped executable"),
    ] {
        let output = run(platform, "fault", &["--cmdline", &format!("mode={mode}")]);
        let err = stderr(&output);
        assert_eq!(output.status.code(), Some(126), "{mode}: {err}");
        assert!(err.contains(reason), "{mode}: expected {reason:?} in {err}");
        assert!(err.contains("rip=0x"), "{mode}: {err}");
        assert!(!stdout(&output).contains("did not stop"), "{mode}");
        assert_no_vmm_panic(&output);
    }
}

/// A `syscall` in the guest — running a shell, opening a host file, making a
/// socket — ends it with a crash report, and the call never reaches the host.
fn a_guest_system_call_never_reaches_the_host(platform: Platform) {
    for mode in ["syscall", "execve", "open", "socket"] {
        let output = run(platform, "fault", &["--cmdline", &format!("mode={mode}")]);
        let err = stderr(&output);
        assert_eq!(output.status.code(), Some(126), "{mode}: {err}");
        assert!(err.contains("executed `syscall`"), "{mode}: {err}");
        let out = stdout(&output);
        assert!(!out.contains("returned"), "{mode} came back: {out}");
        assert!(!out.contains("/etc/passwd"), "{mode}: {out}");
        assert_no_vmm_panic(&output);
    }
}

fn status_field(status: &str, field: &str) -> Option<String> {
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .map(|value| value.trim().to_owned())
}

#[test]
fn the_process_platform_runs_the_guest_under_its_sandbox() {
    let idle = image("idle");
    let vm = Vm::spawn(Command::new(LIGHTVM).args([
        "run",
        "--platform",
        "process",
        "--timeout",
        "60s",
        idle.to_str().unwrap(),
    ]));
    vm.wait_for("idle: up", Duration::from_secs(20));
    let pid = vm_process(vm.child.lock().unwrap().id());
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert_eq!(
        status_field(&status, "Seccomp:").as_deref(),
        Some("2"),
        "{status}"
    );
    assert_eq!(
        status_field(&status, "NoNewPrivs:").as_deref(),
        Some("1"),
        "{status}"
    );
    if is_root() {
        // As root the jail makes them (and drops root instead of making a user
        // namespace): tests/jail.rs looks at the rest of the jail.
        for ns in ["pid", "mnt", "ipc", "uts", "net"] {
            let theirs = std::fs::read_link(format!("/proc/{pid}/ns/{ns}")).unwrap();
            let ours = std::fs::read_link(format!("/proc/self/ns/{ns}")).unwrap();
            assert_ne!(
                theirs, ours,
                "the guest's process shares our {ns} namespace"
            );
        }
    }
    // No core dumps of guest memory.
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .unwrap_or_default();
    assert!(core.split_whitespace().any(|w| w == "0"), "{core}");
    vm.kill();
}

lightvm_testkit::platform_tests!(
    lightvm_vmm::Platform;
    hello_prints_and_exits_zero,
    the_guest_library_passes_its_self_test_on_small_and_large_vms,
    the_command_line_reaches_the_guest,
    the_guest_status_is_the_exit_code,
    json_reports_the_exit_and_the_timings,
    report_writes_the_json_result_and_leaves_the_console_on_stdout,
    a_panic_message_reaches_the_host,
    a_wild_pointer_stops_the_vm_and_names_the_call,
    a_spinning_guest_is_killed_by_the_timeout,
    a_fault_is_reported_as_a_crash_with_registers,
    a_console_flood_is_rate_limited_and_reported,
    every_fault_is_a_crash_report_naming_it,
    a_guest_system_call_never_reaches_the_host,
    bad_images_get_one_clear_line,
);

#[test]
fn platforms_lists_what_this_host_can_run() {
    let output = lightvm(&["platforms", "--available"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let available: Vec<String> = stdout(&output).lines().map(str::to_owned).collect();
    let kvm_usable = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    assert!(available.contains(&"process".to_owned()), "{available:?}");
    assert_eq!(
        available.contains(&"kvm".to_owned()),
        kvm_usable,
        "{available:?}"
    );
    let table = stdout(&lightvm(&["platforms"]));
    assert_eq!(table.lines().count(), 2, "{table}");
    assert_eq!(table.contains("unavailable"), !kvm_usable, "{table}");
}

#[test]
fn build_errors_are_named() {
    let output = lightvm(&["build", "/nonexistent/app"]);
    assert_refused(&output, "does not exist");
    let empty = std::env::temp_dir().join(format!("lightvm-empty-{}", std::process::id()));
    std::fs::create_dir_all(&empty).unwrap();
    assert_refused(
        &lightvm(&["build", empty.to_str().unwrap()]),
        "not a Cargo package",
    );
}
