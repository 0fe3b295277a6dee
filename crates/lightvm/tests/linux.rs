//! End-to-end: a kernel built by `lightvm kernel build --profile base` boots under
//! `lightvm run --kernel`. On hosts whose KVM emulates guest kernel mode (our
//! development machines), a Linux kernel needs minutes to reach init, so the
//! first test stops the VM as soon as the console shows the kernel banner, the
//! e820 map lightvm gave it and its command line. The boot-to-init test needs
//! hardware virtualization and is ignored here; every test is skipped, with the
//! reason, on hosts without KVM.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{mpsc, OnceLock};
use std::time::{Duration, Instant};

use common::{can_use_netns, Netns, LIGHTVM, TAP};

// `common`'s helpers use libc; name it for this binary's own use too.
use libc as _;

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

/// What a kernel printed before the test stopped it.
struct Banner {
    /// `wanted` strings that never appeared.
    missing: Vec<String>,
    console: Vec<String>,
    stderr: String,
    after: Duration,
}

impl Banner {
    fn assert_complete(&self) {
        assert!(
            self.missing.is_empty(),
            "missing {:?} after {:.1} s; console:\n{}\nstderr:\n{}",
            self.missing,
            self.after.as_secs_f64(),
            self.console.join("\n"),
            self.stderr
        );
    }
}

/// Runs `command` (a `lightvm run --kernel …`), reads its console until every
/// `wanted` string has appeared (or 60 s passed), and stops the VM: never waits
/// for init, which takes minutes where guest kernel mode is emulated.
fn boot_to_banner(command: &mut Command, wanted: &[String]) -> Banner {
    let started = Instant::now();
    let mut child = command
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
    let mut seen = vec![false; wanted.len()];
    let mut console = Vec::new();
    let deadline = started + Duration::from_secs(60);
    while !seen.iter().all(|s| *s) {
        let Ok(line) = inbox.recv_timeout(deadline.saturating_duration_since(Instant::now()))
        else {
            break;
        };
        for (want, seen) in wanted.iter().zip(seen.iter_mut()) {
            *seen |= line.contains(want.as_str());
        }
        console.push(line);
    }
    // Never wait for init: stop the VM now.
    let _ = child.kill();
    let output = child.wait_with_output().expect("wait for lightvm");
    Banner {
        missing: wanted
            .iter()
            .zip(&seen)
            .filter(|(_, s)| !**s)
            .map(|(w, _)| w.clone())
            .collect(),
        console,
        stderr: stderr(&output),
        after: started.elapsed(),
    }
}

lightvm_testkit::kvm_test! {
    fn a_base_kernel_prints_its_banner_e820_map_and_command_line() {
        let kernel = base_kernel();
        let cmdline = "console=ttyS0 earlyprintk=serial reboot=k panic=1 lightvm.e2e=1";
        let mut command = Command::new(LIGHTVM);
        command
            .args([
                "run",
                "--kernel",
                kernel.to_str().expect("utf-8 path"),
                "--mem",
                "128M",
            ])
            .args(["--cmdline", cmdline, "--timeout", "60s"]);
        let wanted = [
            "Linux version 6.".to_owned(),
            "BIOS-e820: [mem 0x0000000000000000-0x000000000009fbff] usable".to_owned(),
            "BIOS-e820: [mem 0x000000000009fc00-0x00000000000fffff] reserved".to_owned(),
            "BIOS-e820: [mem 0x0000000000100000-0x0000000007ffffff] usable".to_owned(),
            format!("Command line: {cmdline}"),
        ];
        let banner = boot_to_banner(&mut command, &wanted);
        banner.assert_complete();
        note(&format!(
            "linux e2e: banner, e820 map and command line on the console after {:.1} s",
            banner.after.as_secs_f64()
        ));
    }
}

lightvm_testkit::kvm_test! {
    /// A VM with `--net` opens its tap once (a second TUNSETIFF on the same tap
    /// failed with EBUSY before the kernel ever ran) and announces the device on
    /// the command line; the kernel prints it. Reaching the driver needs init,
    /// which is for hosts with hardware virtualization (the ignored test below).
    fn a_kernel_with_a_network_device_starts_and_is_told_of_it() {
        if !can_use_netns() {
            return;
        }
        let kernel = base_kernel();
        let ns = Netns::new();
        let cmdline = "console=ttyS0 earlyprintk=serial reboot=k panic=1";
        let mut command = ns.command(&[
            LIGHTVM,
            "run",
            "--kernel",
            kernel.to_str().expect("utf-8 path"),
            "--net",
            &format!("tap={TAP}"),
            "--cmdline",
            cmdline,
            "--timeout",
            "60s",
        ]);
        let wanted = [
            "Linux version 6.".to_owned(),
            // lightvm appends the device: the MMIO window of slot 0 and its IRQ.
            "virtio_mmio.device=4K@0xd0000000:".to_owned(),
        ];
        let banner = boot_to_banner(&mut command, &wanted);
        assert!(
            !banner.stderr.contains("EBUSY") && !banner.stderr.contains("busy"),
            "{}",
            banner.stderr
        );
        banner.assert_complete();
    }
}

lightvm_testkit::kvm_test! {
    /// virtio-blk locks its image as the unikernel disk does: a second VM asking
    /// to write an image a running VM writes is refused with one line.
    fn two_linux_vms_never_write_one_disk_image() {
        let kernel = base_kernel();
        let kernel = kernel.to_str().unwrap();
        let image = std::env::temp_dir().join(format!("lightvm-linux-disk-{}", std::process::id()));
        std::fs::File::create(&image).unwrap().set_len(1 << 20).unwrap();
        let disk = image.to_str().unwrap();
        let mut first = Command::new(LIGHTVM)
            .args(["run", "--kernel", kernel, "--disk", disk, "--timeout", "60s"])
            .args(["--cmdline", "console=ttyS0 earlyprintk=serial"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start lightvm run");
        // Its first console line: the VM is built, its disk open and locked.
        let started = BufReader::new(first.stdout.take().unwrap())
            .lines()
            .map_while(Result::ok)
            .next()
            .is_some();
        let second = lightvm(&["run", "--kernel", kernel, "--disk", disk, "--timeout", "5s"]);
        let _ = first.kill();
        let _ = first.wait();
        let _ = std::fs::remove_file(&image);
        assert!(started, "the first VM printed nothing");
        assert_refused(&second, "in use by another VM");
    }
}

lightvm_testkit::kvm_test! {
    /// A Linux microVM's process is jailed as a unikernel's is: the report of a
    /// VM stopped at its timeout (its kernel still booting) says so.
    fn a_linux_vm_runs_in_its_jail() {
        let kernel = base_kernel();
        let output = lightvm(&[
            "run",
            "--kernel",
            kernel.to_str().unwrap(),
            "--vcpus",
            "2",
            "--timeout",
            "2s",
            "--json",
        ]);
        assert_eq!(output.status.code(), Some(124), "{}", stderr(&output));
        let result: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
        let jail = &result["jail"];
        assert_eq!(jail["root"], "empty", "{jail}");
        assert_eq!(jail["rlimits"]["core"], 0);
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            assert_eq!(jail["uid"], 65534);
            let namespaces = jail["namespaces"].to_string();
            for ns in ["pid", "mount", "ipc", "uts", "net"] {
                assert!(namespaces.contains(ns), "{jail}");
            }
            if jail["cgroup"]["paths"].is_array() {
                // main, two vCPUs, and the slack for KVM's and libc's own tasks
                let pids = 1 + 2 + lightvm_vmm::jail::PIDS_SLACK;
                assert_eq!(jail["cgroup"]["pids_max"], pids, "{jail}");
            }
        }
    }
}

/// An init for the network test: brings eth0 up at 10.0.0.2 with busybox and
/// waits to be pinged.
const NET_INIT: &str = "#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
/bin/busybox ip link set lo up
/bin/busybox ip link set eth0 up
/bin/busybox ip addr add 10.0.0.2/24 dev eth0
echo lightvm-init: network up
/bin/busybox sleep 60
";

#[test]
#[ignore = "needs hardware virtualization: a Linux guest reaches userspace and answers ping through virtio-net (minutes to boot where guest kernel mode is emulated)"]
fn a_linux_guest_answers_ping_through_its_tap() {
    if !can_use_netns() {
        return;
    }
    let kernel = base_kernel();
    let dir = std::env::temp_dir().join(format!("lightvm-linux-net-{}", std::process::id()));
    let root = dir.join("root");
    for sub in ["bin", "proc", "dev"] {
        std::fs::create_dir_all(root.join(sub)).unwrap();
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).expect("a static /bin/busybox");
    std::fs::write(root.join("init"), NET_INIT).unwrap();
    std::fs::set_permissions(
        root.join("init"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let cpio = dir.join("initramfs.cpio");
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "cd {} && find . | cpio -o -H newc > {}",
            root.display(),
            cpio.display()
        ))
        .status()
        .expect("run cpio");
    assert!(status.success());
    let ns = Netns::new();
    let mut command = ns.command(&[
        LIGHTVM,
        "run",
        "--kernel",
        kernel.to_str().unwrap(),
        "--initrd",
        cpio.to_str().unwrap(),
        "--net",
        &format!("tap={TAP}"),
        "--cmdline",
        "console=ttyS0 reboot=k panic=1 quiet",
        "--timeout",
        "120s",
    ]);
    let mut vm = command
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start lightvm run");
    let stdout = vm.stdout.take().expect("piped stdout");
    let up = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .any(|line| line.contains("network up"));
    let ping = ns.exec(&["ping", "-c", "3", "-W", "2", "10.0.0.2"]);
    let _ = vm.kill();
    let _ = vm.wait();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(up, "the guest never brought its network up");
    assert!(
        ping.status.success(),
        "{}",
        String::from_utf8_lossy(&ping.stdout)
    );
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
        let fifo = dir.join("fifo-disk");
        let name = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo reads a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o600) }, 0);
        for (not_a_file, why) in [
            (dir.to_str().unwrap(), "Is a directory"),
            (fifo.to_str().unwrap(), "not a regular file"),
        ] {
            assert_refused(
                &lightvm(&["run", "--kernel", kernel, "--disk", not_a_file]),
                why,
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
