//! End-to-end: `lightvm build` the guest applications, then `lightvm run` them on the
//! real `/dev/kvm`, checking what a user would check — output, exit code, the one
//! line of explanation on stderr.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};

use common::{image, LIGHTVM};

fn lightvm(args: &[&str]) -> Output {
    Command::new(LIGHTVM)
        .args(args)
        .output()
        .expect("run lightvm")
}

fn run(name: &str, extra: &[&str]) -> Output {
    let image = image(name);
    let mut args = vec!["run", image.to_str().expect("utf-8 path")];
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

#[test]
fn hello_prints_and_exits_zero() {
    let output = run("hello", &[]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(stdout(&output).contains("Hello from a lightvm unikernel!"));
}

#[test]
fn the_guest_library_passes_its_self_test_on_small_and_large_vms() {
    // Heap, mem* functions, clocks, sleep through the poll hypercall, boot info.
    for mem in ["2M", "64M"] {
        let output = run("selftest", &["--mem", mem, "--timeout", "30s"]);
        assert_eq!(
            output.status.code(),
            Some(0),
            "selftest failed at --mem {mem}:\n{}{}",
            stdout(&output),
            stderr(&output)
        );
    }
}

#[test]
fn the_command_line_reaches_the_guest() {
    let output = run("hello", &["--cmdline", "answer=42 mode=test"]);
    assert_eq!(output.status.code(), Some(0));
    assert!(
        stdout(&output).contains("answer=42 mode=test"),
        "{}",
        stdout(&output)
    );
}

#[test]
fn the_guest_status_is_the_exit_code() {
    for status in ["0", "7", "123"] {
        let output = run("exitcode", &["--cmdline", status]);
        assert_eq!(
            output.status.code(),
            status.parse().ok(),
            "{}",
            stderr(&output)
        );
    }
}

#[test]
fn json_reports_the_exit_and_the_timings() {
    let output = run("hello", &["--json"]);
    assert_eq!(output.status.code(), Some(0));
    let result: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON on stdout");
    assert_eq!(result["exit_code"], 0);
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

#[test]
fn report_writes_the_json_result_and_leaves_the_console_on_stdout() {
    let report = image("hello").with_file_name("hello-report.json");
    let output = run("hello", &["--report", report.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0));
    assert!(stdout(&output).contains("Hello from a lightvm unikernel!"));
    let result: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).expect("the report file")).expect("JSON");
    assert_eq!(result["exit_code"], 0);
    assert!(result["timings"]["boot_done_us"]
        .as_f64()
        .is_some_and(|t| t > 0.0));
}

#[test]
fn a_panic_message_reaches_the_host() {
    let output = run("panic", &[]);
    assert_eq!(output.status.code(), Some(101));
    assert!(
        stderr(&output).contains("deliberate panic for testing"),
        "{}",
        stderr(&output)
    );
    assert_no_vmm_panic(&output);
}

#[test]
fn a_wild_pointer_stops_the_vm_and_names_the_call() {
    let output = run("badptr", &[]);
    assert_eq!(output.status.code(), Some(127), "{}", stderr(&output));
    let err = stderr(&output);
    assert!(
        err.contains("console_write") && err.contains("outside"),
        "{err}"
    );
    assert_no_vmm_panic(&output);
}

#[test]
fn a_spinning_guest_is_killed_by_the_timeout() {
    let output = run("spin", &["--timeout", "1s"]);
    assert_eq!(output.status.code(), Some(124), "{}", stderr(&output));
    assert!(stderr(&output).contains("timeout"), "{}", stderr(&output));
}

#[test]
fn a_fault_is_reported_as_a_crash_with_registers() {
    let output = run("fault", &[]);
    assert_eq!(output.status.code(), Some(126), "{}", stderr(&output));
    let err = stderr(&output);
    assert!(
        err.contains("page fault") && err.contains("accessing 0x0"),
        "{err}"
    );
    assert!(err.contains("rip=0x") && err.contains("rsp=0x"), "{err}");
    assert_no_vmm_panic(&output);
}

#[test]
fn a_console_flood_is_rate_limited_and_reported() {
    let output = run("flood", &["--timeout", "2s"]);
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

#[test]
fn bad_images_get_one_clear_line() {
    let text = image("hello").with_file_name("not-an-elf.txt");
    std::fs::write(&text, "just some text\n").expect("write");
    assert_refused(&lightvm(&["run", text.to_str().unwrap()]), "not an ELF");

    let arm = patched_hello("arm.elf", |b| {
        b[18..20].copy_from_slice(&183u16.to_le_bytes())
    });
    assert_refused(
        &lightvm(&["run", arm.to_str().unwrap()]),
        "wrong architecture",
    );

    let elf32 = patched_hello("elf32.elf", |b| b[4] = 1);
    assert_refused(&lightvm(&["run", elf32.to_str().unwrap()]), "64-bit");

    let truncated = patched_hello("truncated.elf", |b| b.truncate(100));
    assert_refused(&lightvm(&["run", truncated.to_str().unwrap()]), "malformed");

    // Grow the last segment's memory size (p_memsz of program header 2) to 4 MiB.
    let big = patched_hello("big.elf", |b| {
        let phoff = u64::from_le_bytes(b[32..40].try_into().unwrap()) as usize;
        let memsz = phoff + 2 * 56 + 40;
        b[memsz..memsz + 8].copy_from_slice(&(4u64 << 20).to_le_bytes());
    });
    assert_refused(&lightvm(&["run", big.to_str().unwrap()]), "raise --mem");
    let output = lightvm(&["run", big.to_str().unwrap(), "--mem", "8M"]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "fits with more memory: {}",
        stderr(&output)
    );

    assert_refused(
        &lightvm(&["run", "/nonexistent/image.elf"]),
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

#[test]
fn missing_kvm_is_named() {
    if !is_root() {
        eprintln!("skipped: hiding /dev/kvm needs a mount namespace (root)");
        return;
    }
    let hello = image("hello");
    // An empty /dev in a private mount namespace: lightvm finds no /dev/kvm.
    let script = format!(
        "mount -t tmpfs none /dev && exec {LIGHTVM} run {}",
        hello.display()
    );
    let output = Command::new("unshare")
        .args(["--mount", "sh", "-c", &script])
        .output()
        .expect("run unshare");
    assert_refused(&output, "/dev/kvm does not exist");
}

#[test]
fn kvm_without_permission_is_named() {
    if !is_root() {
        eprintln!("skipped: dropping privileges needs root");
        return;
    }
    let hello = image("hello");
    let dir = hello.parent().unwrap();
    std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let output = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            LIGHTVM,
            "run",
        ])
        .arg(&hello)
        .output()
        .expect("run setpriv");
    assert_refused(&output, "permission denied opening /dev/kvm");
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
