//! End-to-end: a kernel built by `lightvm kernel build --profile base` boots under
//! `lightvm run --kernel`. On hosts whose KVM emulates guest kernel mode (our
//! development machines), a Linux kernel needs minutes to reach init, so the
//! first test stops the VM as soon as the console shows the kernel banner, the
//! e820 map lightvm gave it and its command line. The boot-to-init test needs
//! hardware virtualization and is ignored here; every test is skipped, with the
//! reason, on hosts without KVM.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{mpsc, OnceLock};
use std::time::{Duration, Instant};

const LIGHTVM: &str = env!("CARGO_BIN_EXE_lightvm");

/// Writes past the test harness's output capture, so the line shows in every run.
fn note(text: &str) {
    let _ = writeln!(std::io::stderr(), "{text}");
}

/// The base kernel, built (or taken from the cache) once per test binary.
fn base_kernel() -> PathBuf {
    static KERNEL: OnceLock<PathBuf> = OnceLock::new();
    KERNEL
        .get_or_init(|| {
            let started = Instant::now();
            let output = Command::new(LIGHTVM)
                .args(["kernel", "build", "--profile", "base"])
                .output()
                .expect("run lightvm kernel build");
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(
                output.status.success(),
                "lightvm kernel build failed:\n{stderr}"
            );
            note(&format!(
                "linux e2e: `lightvm kernel build --profile base` took {:.1} s here ({})",
                started.elapsed().as_secs_f64(),
                stderr
                    .lines()
                    .last()
                    .unwrap_or_default()
                    .trim_start_matches("lightvm: ")
            ));
            PathBuf::from(String::from_utf8_lossy(&output.stdout).trim())
        })
        .clone()
}

fn lightvm(args: &[&str]) -> Output {
    Command::new(LIGHTVM)
        .args(args)
        .output()
        .expect("run lightvm")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// lightvm refused to start, with exit code 125 and one line saying why.
fn assert_refused(output: &Output, expected: &str) {
    let err = stderr(output);
    assert_eq!(output.status.code(), Some(125), "{err}");
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "one line expected:\n{err}"
    );
    assert!(err.contains(expected), "expected {expected:?} in:\n{err}");
}

lightvm_testkit::kvm_test! {
    fn a_base_kernel_prints_its_banner_e820_map_and_command_line() {
        let kernel = base_kernel();
        let cmdline = "console=ttyS0 earlyprintk=serial reboot=k panic=1 lightvm.e2e=1";
        let started = Instant::now();
        let mut child = Command::new(LIGHTVM)
            .args([
                "run",
                "--kernel",
                kernel.to_str().expect("utf-8 path"),
                "--mem",
                "128M",
            ])
            .args(["--cmdline", cmdline, "--timeout", "60s"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start lightvm run");
        let stdout = child.stdout.take().expect("piped stdout");
        let (lines, inbox) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if lines.send(line).is_err() {
                    break;
                }
            }
        });
        let wanted = [
            "Linux version 6.",
            "BIOS-e820: [mem 0x0000000000000000-0x000000000009fbff] usable",
            "BIOS-e820: [mem 0x000000000009fc00-0x00000000000fffff] reserved",
            "BIOS-e820: [mem 0x0000000000100000-0x0000000007ffffff] usable",
            &format!("Command line: {cmdline}"),
        ];
        let mut seen = vec![false; wanted.len()];
        let mut console = Vec::new();
        let deadline = started + Duration::from_secs(60);
        while !seen.iter().all(|s| *s) {
            let Ok(line) = inbox.recv_timeout(deadline.saturating_duration_since(Instant::now()))
            else {
                break;
            };
            for (want, seen) in wanted.iter().zip(seen.iter_mut()) {
                *seen |= line.contains(want);
            }
            console.push(line);
        }
        // Never wait for init: stop the VM now.
        let _ = child.kill();
        let output = child.wait_with_output().expect("wait for lightvm");
        let missing: Vec<_> = wanted
            .iter()
            .zip(&seen)
            .filter(|(_, s)| !**s)
            .map(|(w, _)| *w)
            .collect();
        assert!(
            missing.is_empty(),
            "missing {missing:?} after {:.1} s; console:\n{}\nstderr:\n{}",
            started.elapsed().as_secs_f64(),
            console.join("\n"),
            stderr(&output)
        );
        note(&format!(
            "linux e2e: banner, e820 map and command line on the console after {:.1} s",
            started.elapsed().as_secs_f64()
        ));
    }
}

/// A static init that reports to the boot timer and reboots (ends the VM).
const INIT_C: &str = r#"
#include <sys/io.h>
#include <sys/reboot.h>
#include <unistd.h>
int main(void) {
    static const char msg[] = "lightvm-init: hello from init\n";
    write(1, msg, sizeof msg - 1);
    if (ioperm(0x3f0, 1, 1) == 0) outb(123, 0x3f0);
    reboot(RB_AUTOBOOT);
    return 0;
}
"#;

fn initramfs(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir.join("root/dev")).unwrap();
    std::fs::write(dir.join("init.c"), INIT_C).unwrap();
    let status = Command::new("cc")
        .args(["-static", "-Os", "-o"])
        .arg(dir.join("root/init"))
        .arg(dir.join("init.c"))
        .status()
        .expect("run cc");
    assert!(status.success());
    let cpio = dir.join("initramfs.cpio");
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "cd {} && echo init | cpio -o -H newc > {}",
            dir.join("root").display(),
            cpio.display()
        ))
        .status()
        .expect("run cpio");
    assert!(status.success());
    cpio
}

#[test]
#[ignore = "needs hardware virtualization: boots to init and reads the boot timer"]
fn a_base_kernel_boots_to_init_and_reports_the_boot_time() {
    let kernel = base_kernel();
    let dir = std::env::temp_dir().join(format!("lightvm-linux-e2e-{}", std::process::id()));
    let initrd = initramfs(&dir);
    let output = lightvm(&[
        "run",
        "--kernel",
        kernel.to_str().unwrap(),
        "--initrd",
        initrd.to_str().unwrap(),
        "--vcpus",
        "2",
        "--cmdline",
        "console=ttyS0 reboot=k panic=1 quiet",
        "--timeout",
        "60s",
    ]);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(String::from_utf8_lossy(&output.stdout).contains("hello from init"));
    assert!(
        stderr(&output).contains("guest boot time"),
        "{}",
        stderr(&output)
    );
}

lightvm_testkit::kvm_test! {
    fn bad_kernels_and_requests_are_refused_with_one_line() {
        let dir = std::env::temp_dir().join(format!("lightvm-linux-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let text = dir.join("not-a-kernel");
        std::fs::write(&text, "#!/bin/sh\necho hi\n").unwrap();
        let text = text.to_str().unwrap();
        assert_refused(
            &lightvm(&["run", "--kernel", text]),
            "is not a Linux kernel",
        );
        assert_refused(
            &lightvm(&["run", "--kernel", "/nonexistent/vmlinux"]),
            "cannot read kernel",
        );
        // An x86-64 ELF that is no kernel (linked below 1 MiB).
        assert_refused(
            &lightvm(&["run", "--kernel", LIGHTVM]),
            "not an x86-64 Linux kernel",
        );
        assert_refused(
            &lightvm(&["run", "--kernel", text, "--mem", "16M"]),
            "memory size",
        );
        assert_refused(
            &lightvm(&["run", "--kernel", text, "--vcpus", "0"]),
            "vCPUs",
        );
        assert_refused(
            &lightvm(&["run", "--kernel", text, "--cpu-clear", "warp"]),
            "unknown CPU feature",
        );
        assert_refused(
            &lightvm(&["run", "--kernel", text, "--disk", "a,rx"]),
            "--disk \"a,rx\": unknown option",
        );
        assert_refused(
            &lightvm(&["run", "--kernel", text, "--net", "bridge=x"]),
            "--net \"bridge=x\": expected tap=NAME",
        );
        let initrd_without_kernel = lightvm(&["run", "x.elf", "--initrd", "i"]);
        assert_eq!(initrd_without_kernel.status.code(), Some(125));

        let kernel = base_kernel();
        let kernel = kernel.to_str().unwrap();
        let big = dir.join("big-initrd");
        std::fs::File::create(&big)
            .unwrap()
            .set_len(40 << 20)
            .unwrap();
        assert_refused(
            &lightvm(&[
                "run",
                "--kernel",
                kernel,
                "--mem",
                "32M",
                "--initrd",
                big.to_str().unwrap(),
            ]),
            "initrd",
        );
        assert_refused(
            &lightvm(&["run", "--kernel", kernel, "--disk", "/nonexistent/disk.img"]),
            "disk.img",
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
