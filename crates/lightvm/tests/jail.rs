//! End-to-end: the jail every `lightvm run` puts its VM process in, on every
//! platform the host has — looked at from the outside, through `/proc` and the
//! cgroup file systems, while the VM runs, and through the run report.
//!
//! As root the VM process runs as uid 65534 in its own PID, mount, IPC, UTS and
//! network namespaces, with an empty root and a cgroup of its own; as another
//! user the tests check what that user gets (the report says what was skipped).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::{image, vm_process, Vm, LIGHTVM};
use lightvm_vmm::jail::Limits;
use lightvm_vmm::Platform;

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn field(status: &str, name: &str) -> String {
    status
        .lines()
        .find_map(|line| line.strip_prefix(name))
        .map(|value| value.trim().to_owned())
        .unwrap_or_default()
}

/// The directory of a process's group in the hierarchy of `controller`, from
/// its `/proc/PID/cgroup` (v1: `/sys/fs/cgroup/<controller>`; v2: the unified
/// mount, wherever this host has it).
fn group_dir(pid: u32, controller: &str) -> Option<PathBuf> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let v1 = text.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        controllers.split(',').any(|c| c == controller).then(|| {
            Path::new("/sys/fs/cgroup")
                .join(controller)
                .join(&path[1..])
        })
    });
    if v1.as_ref().is_some_and(|dir| dir.exists()) {
        return v1;
    }
    let path = text.lines().find_map(|line| line.strip_prefix("0::"))?;
    ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
        .iter()
        .map(|root| Path::new(root).join(&path[1..]))
        .find(|dir| {
            std::fs::read_to_string(dir.join("cgroup.controllers"))
                .is_ok_and(|c| c.split_whitespace().any(|c| c == controller))
        })
}

fn read(dir: &Path, file: &str) -> String {
    std::fs::read_to_string(dir.join(file))
        .unwrap_or_default()
        .trim()
        .to_owned()
}

fn start_idle(platform: Platform, extra: &[&str]) -> Vm {
    let idle = image("idle");
    let vm = Vm::spawn(
        Command::new(LIGHTVM)
            .args(["run", "--platform", platform.name(), "--timeout", "60s"])
            .args(extra)
            .arg(&idle),
    );
    vm.wait_for("idle: up", Duration::from_secs(20));
    vm
}

/// The VM process of a running idle guest: its credentials, namespaces, root,
/// limits and cgroup; and a SIGTERM to `lightvm run` stops it and removes the
/// cgroup.
fn the_vm_process_runs_in_its_jail(platform: Platform) {
    let vm = start_idle(platform, &["--cpu-limit", "0.5", "--pids-limit", "12"]);
    let supervisor = vm.child.lock().unwrap().id();
    let pid = vm_process(supervisor);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    // Its own PID namespace: pid 1 there.
    assert!(field(&status, "NSpid:").ends_with("\t1"), "{status}");
    assert_eq!(field(&status, "NoNewPrivs:"), "1");
    // Both platforms filter the monitor's system calls.
    assert_eq!(field(&status, "Seccomp:"), "2");
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let limit = |name: &str| {
        limits
            .lines()
            .find(|l| l.starts_with(name))
            .map(|l| l.split_whitespace().rev().nth(1).unwrap_or("").to_owned())
            .unwrap_or_default()
    };
    assert_eq!(limit("Max core file size"), "0", "{limits}");
    let nofile: u64 = limit("Max open files").parse().unwrap();
    assert!(nofile < 100, "{limits}");
    for ns in ["pid", "mnt", "ipc", "uts", "net"] {
        let theirs = std::fs::read_link(format!("/proc/{pid}/ns/{ns}")).unwrap();
        let ours = std::fs::read_link(format!("/proc/self/ns/{ns}")).unwrap();
        assert_ne!(theirs, ours, "the VM process shares our {ns} namespace");
    }
    // Its root is empty: no host path leads anywhere from it.
    let root: Vec<_> = std::fs::read_dir(format!("/proc/{pid}/root"))
        .unwrap()
        .collect();
    assert!(root.is_empty(), "{root:?}");
    let mounts = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
    assert_eq!(mounts.lines().count(), 1, "{mounts}");
    assert!(
        mounts.contains(" / ro,") && mounts.contains("tmpfs"),
        "{mounts}"
    );

    let name = format!("lightvm-{supervisor}");
    let mut groups = Vec::new();
    if is_root() {
        assert_eq!(field(&status, "Uid:"), "65534\t65534\t65534\t65534");
        assert_eq!(field(&status, "Gid:"), "65534\t65534\t65534\t65534");
        assert_eq!(field(&status, "Groups:"), "");
        let memory = group_dir(pid, "memory").expect("a memory cgroup");
        assert!(memory.ends_with(&name), "{}", memory.display());
        let expected = Limits::for_guest(2 << 20, 1).memory_max.unwrap();
        let max = match read(&memory, "memory.max") {
            v2 if !v2.is_empty() => v2,
            _ => read(&memory, "memory.limit_in_bytes"),
        };
        assert_eq!(max, expected.to_string());
        let pids = group_dir(pid, "pids").expect("a pids cgroup");
        assert_eq!(read(&pids, "pids.max"), "12");
        let cpu = group_dir(pid, "cpu").expect("a cpu cgroup");
        let quota = match read(&cpu, "cpu.max") {
            v2 if !v2.is_empty() => v2,
            _ => format!(
                "{} {}",
                read(&cpu, "cpu.cfs_quota_us"),
                read(&cpu, "cpu.cfs_period_us")
            ),
        };
        assert_eq!(quota, "50000 100000");
        groups = vec![memory, pids, cpu];
    } else {
        // SAFETY: getuid has no preconditions.
        let uid = unsafe { libc::getuid() };
        assert!(
            field(&status, "Uid:").starts_with(&uid.to_string()),
            "{status}"
        );
    }

    // Interrupted, lightvm stops its VM, cleans up, and ends as the signal says.
    // SAFETY: signals our own child, which is running.
    unsafe { libc::kill(supervisor as i32, libc::SIGTERM) };
    let code = vm.child.lock().unwrap().wait().unwrap().code();
    assert_eq!(code, Some(128 + libc::SIGTERM));
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "the VM process outlived its supervisor"
    );
    for group in groups {
        assert!(!group.exists(), "{} was left behind", group.display());
    }
}

/// `--json` says what the jail applied; `--no-jail` runs the VM without one.
fn the_report_names_what_the_jail_applied(platform: Platform) {
    let hello = image("hello");
    let output = Command::new(LIGHTVM)
        .args(["run", "--platform", platform.name(), "--json"])
        .arg(&hello)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let result: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let jail = &result["jail"];
    let namespaces: Vec<&str> = jail["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n.as_str())
        .collect();
    if is_root() {
        assert_eq!(namespaces, ["pid", "mount", "ipc", "uts", "net"], "{jail}");
        assert_eq!(jail["uid"], 65534);
        assert_eq!(jail["root"], "empty");
        let cgroup = &jail["cgroup"];
        assert!(
            cgroup["paths"].as_array().is_some_and(|p| !p.is_empty())
                || cgroup["skipped"].is_string(),
            "{jail}"
        );
        if cgroup["paths"].is_array() {
            assert_eq!(
                cgroup["memory_max"],
                Limits::for_guest(2 << 20, 1).memory_max.unwrap()
            );
        }
    } else {
        assert!(
            jail["skipped"].as_array().is_some_and(|s| !s.is_empty()),
            "a user's run says what it could not apply: {jail}"
        );
    }
    assert_eq!(jail["rlimits"]["core"], 0);

    let output = Command::new(LIGHTVM)
        .args(["run", "--platform", platform.name(), "--json", "--no-jail"])
        .arg(&hello)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let result: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(result.get("jail").is_none(), "{result}");
}

/// A guest that uses more memory than its cgroup allows (the self-test fills
/// half its heap: ~30 MiB of a 64 MiB guest, against a 16 MiB limit) is stopped
/// by the cgroup's OOM killer, and lightvm says so in one line.
fn a_guest_that_outgrows_its_memory_limit_is_stopped_with_one_line(platform: Platform) {
    if !is_root() {
        eprintln!("skipped: a memory cgroup needs root");
        return;
    }
    let swaps = std::fs::read_to_string("/proc/swaps").unwrap_or_default();
    if swaps.lines().count() > 1 {
        eprintln!("skipped: with swap, a memory limit swaps instead of stopping the VM");
        return;
    }
    let selftest = image("selftest");
    let output = Command::new(LIGHTVM)
        .args(["run", "--platform", platform.name(), "--mem", "64M"])
        .args(["--memory-limit", "16M", "--timeout", "60s"])
        .arg(&selftest)
        .output()
        .unwrap();
    let err = stderr(&output);
    if err.contains("without a cgroup of its own") {
        eprintln!("skipped: no memory cgroup on this host: {err}");
        return;
    }
    assert_eq!(output.status.code(), Some(137), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line:\n{err}");
    assert!(
        err.contains("memory its cgroup allows (16 MiB") && err.contains("--memory-limit"),
        "{err}"
    );
    // The same guest within its default limit passes.
    let output = Command::new(LIGHTVM)
        .args(["run", "--platform", platform.name(), "--mem", "64M"])
        .arg(&selftest)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
}

lightvm_testkit::platform_tests!(
    lightvm_vmm::Platform;
    the_vm_process_runs_in_its_jail,
    the_report_names_what_the_jail_applied,
    a_guest_that_outgrows_its_memory_limit_is_stopped_with_one_line,
);

#[test]
fn bad_limits_get_one_clear_line() {
    let hello = image("hello");
    for (flag, value, needle) in [
        ("--cpu-limit", "0", "invalid CPU limit"),
        ("--cpu-limit", "lots", "invalid CPU limit"),
        ("--memory-limit", "0", "--memory-limit"),
        ("--memory-limit", "much", "invalid memory size"),
        ("--pids-limit", "0", "--pids-limit"),
    ] {
        let output = Command::new(LIGHTVM)
            .args(["run", flag, value])
            .arg(&hello)
            .output()
            .unwrap();
        let err = stderr(&output);
        assert_eq!(output.status.code(), Some(125), "{flag} {value}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(err.contains(needle), "{flag} {value}: {err}");
    }
}
