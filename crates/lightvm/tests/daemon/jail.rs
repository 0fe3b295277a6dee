//! The jail of the daemon's VMs, seen from outside as a user would check it: a
//! pooled VM's process is in PID, mount, IPC, UTS and network namespaces of its
//! own, runs as nobody, under seccomp with no_new_privs, in a cgroup whose files
//! hold the limits its create asked for — which inspect and /metrics show; a
//! guest that outgrows its memory limit ends as out of memory while the daemon
//! goes on; a bad limit is a 400.

use std::path::Path;
use std::time::{Duration, Instant};

use hyper::{Method, StatusCode};
use lightvm_toolstack::api::VmView;
use lightvm_toolstack::state::Outcome;
use lightvm_vmm::jail::CgroupReport;
use lightvm_vmm::Platform;
use serde_json::json;

use super::hardening::{is_root, NOBODY};
use super::linux::{hello_root, wait_linux_pool_ready};
use super::{image, wait_pool_ready, TestDaemon};

/// The namespaces a VM process must not share with the daemon.
const OWN_NAMESPACES: [&str; 5] = ["pid", "mnt", "net", "ipc", "uts"];

fn status_field(pid: u32, field: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{field}:")))
        .map(|value| value.split_whitespace().next().unwrap_or("").to_owned())
        .unwrap_or_default()
}

fn namespace(pid: u32, name: &str) -> String {
    std::fs::read_link(format!("/proc/{pid}/ns/{name}"))
        .map(|link| link.display().to_string())
        .unwrap_or_else(|e| panic!("/proc/{pid}/ns/{name}: {e}"))
}

/// Checks what the process `pid` of a daemon `daemon_pid` is in: namespaces of
/// its own, nobody's uid (when the daemon is root), no_new_privs.
fn assert_jailed_process(pid: u32, daemon_pid: u32) {
    for name in OWN_NAMESPACES {
        assert_ne!(
            namespace(pid, name),
            namespace(daemon_pid, name),
            "the VM process shares the daemon's {name} namespace"
        );
    }
    assert_eq!(status_field(pid, "NoNewPrivs"), "1");
    if is_root() {
        assert_eq!(status_field(pid, "Uid"), NOBODY.to_string());
        assert_eq!(status_field(pid, "Gid"), NOBODY.to_string());
    }
    // It is the first process of its PID namespace.
    let nspid = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("NSpid:").map(str::to_owned))
        .unwrap_or_default();
    assert_eq!(nspid.split_whitespace().last(), Some("1"), "NSpid: {nspid}");
}

fn read_trimmed(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .to_owned()
}

/// The cgroup a VM's inspect names: its paths, which hold the limits it says.
fn assert_cgroup_holds(vm: &VmView, memory: u64, cpu: &str, pids: u64) {
    let jail = vm.jail.as_ref().expect("inspect shows the jail");
    let CgroupReport::Applied {
        paths,
        memory_max,
        cpu_max,
        pids_max,
        ..
    } = &jail.cgroup
    else {
        panic!("no cgroup: {:?}", jail.cgroup);
    };
    assert_eq!(*memory_max, Some(memory));
    assert_eq!(cpu_max.as_deref(), Some(cpu));
    assert_eq!(*pids_max, Some(pids));
    let proc_cgroup = std::fs::read_to_string(format!("/proc/{}/cgroup", vm.pid)).unwrap();
    let (mut saw_memory, mut saw_cpu, mut saw_pids) = (false, false, false);
    for path in paths {
        let dir = Path::new(path);
        let leaf = dir.file_name().unwrap().to_str().unwrap();
        assert!(
            proc_cgroup.contains(&format!("/{leaf}\n")),
            "the process is not in {path}:\n{proc_cgroup}"
        );
        if dir.join("memory.max").exists() {
            assert_eq!(read_trimmed(&dir.join("memory.max")), memory.to_string());
            saw_memory = true;
        } else if dir.join("memory.limit_in_bytes").exists() {
            assert_eq!(
                read_trimmed(&dir.join("memory.limit_in_bytes")),
                memory.to_string()
            );
            saw_memory = true;
        }
        if dir.join("cpu.max").exists() {
            assert_eq!(read_trimmed(&dir.join("cpu.max")), cpu);
            saw_cpu = true;
        } else if dir.join("cpu.cfs_quota_us").exists() {
            let (quota, period) = cpu.split_once(' ').unwrap();
            assert_eq!(read_trimmed(&dir.join("cpu.cfs_quota_us")), quota);
            assert_eq!(read_trimmed(&dir.join("cpu.cfs_period_us")), period);
            saw_cpu = true;
        }
        if dir.join("pids.max").exists() {
            assert_eq!(read_trimmed(&dir.join("pids.max")), pids.to_string());
            saw_pids = true;
        }
    }
    assert!(saw_memory && saw_cpu && saw_pids, "{paths:?}");
}

fn metrics(daemon: &TestDaemon) -> String {
    let answer = daemon
        .call(Method::GET, "/metrics", None)
        .expect("daemon answers");
    String::from_utf8_lossy(&answer.body).into_owned()
}

/// Whether this host gives a root daemon's VMs a memory cgroup (and no swap,
/// under which a memory limit swaps instead of stopping a VM).
fn memory_cgroups() -> bool {
    let swaps = std::fs::read_to_string("/proc/swaps").unwrap_or_default();
    is_root() && swaps.lines().count() <= 1
}

pub(super) fn a_pooled_vm_runs_in_its_jail_with_the_limits_it_asked_for(platform: Platform) {
    let daemon = TestDaemon::start(platform, "jail", &["--pool", "1"]);
    wait_pool_ready(&daemon, 1);
    let vm: VmView = daemon.ok(
        Method::POST,
        "/vms",
        Some(json!({
            "image": image("idle"),
            "memory_limit": "40M",
            "cpu_limit": 0.5,
            "pids_limit": 20,
        })),
        StatusCode::CREATED,
    );
    assert!(vm.timings.expect("timings").pooled, "served from the pool");
    assert_jailed_process(vm.pid, daemon.pid());
    // Its filter is in force once the guest runs.
    assert_eq!(status_field(vm.pid, "Seccomp"), "2");

    let vm = daemon.inspect(&vm.id);
    let jail = vm.jail.clone().expect("inspect shows the jail");
    assert_eq!(jail.root, "empty");
    for name in ["pid", "mount", "ipc", "uts", "net"] {
        assert!(jail.namespaces.iter().any(|n| n == name), "{jail:?}");
    }
    if !is_root() {
        assert!(
            matches!(jail.cgroup, CgroupReport::Skipped { .. }),
            "{jail:?}"
        );
        return;
    }
    assert_eq!(jail.uid, NOBODY);
    assert_cgroup_holds(&vm, 40 << 20, "50000 100000", 20);

    let text = metrics(&daemon);
    for line in [
        format!("lightvm_vm_jailed{{id=\"{}\"}} 1", vm.id),
        format!(
            "lightvm_vm_memory_max_bytes{{id=\"{}\"}} {}",
            vm.id,
            40 << 20
        ),
        format!("lightvm_vm_cpu_max_cpus{{id=\"{}\"}} 0.5", vm.id),
        format!("lightvm_vm_pids_max{{id=\"{}\"}} 20", vm.id),
        format!("lightvm_vm_uid{{id=\"{}\"}} {NOBODY}", vm.id),
    ] {
        assert!(text.lines().any(|l| l == line), "{line:?} not in:\n{text}");
    }

    // A create that asks for nothing gets lightvm run's defaults.
    wait_pool_ready(&daemon, 1);
    let plain = daemon.create("idle");
    let plain = daemon.inspect(&plain.id);
    let Some(CgroupReport::Applied {
        memory_max,
        pids_max,
        ..
    }) = plain.jail.as_ref().map(|j| j.cgroup.clone())
    else {
        panic!("no cgroup: {:?}", plain.jail);
    };
    let defaults = lightvm_vmm::jail::Limits::for_guest(plain.mem_size, 1);
    assert_eq!(memory_max, defaults.memory_max);
    assert_eq!(pids_max, defaults.pids_max);

    // The groups go with their VMs.
    let paths: Vec<String> = [&vm, &plain]
        .iter()
        .flat_map(|vm| match &vm.jail.as_ref().unwrap().cgroup {
            CgroupReport::Applied { paths, .. } => paths.clone(),
            CgroupReport::Skipped { .. } => Vec::new(),
        })
        .collect();
    for vm in [&vm, &plain] {
        daemon.ok::<VmView>(
            Method::POST,
            &format!("/vms/{}/stop", vm.id),
            None,
            StatusCode::OK,
        );
        daemon.wait_exited(&vm.id);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while paths.iter().any(|p| Path::new(p).exists()) {
        assert!(Instant::now() < deadline, "groups left behind: {paths:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub(super) fn a_guest_over_its_memory_limit_ends_out_of_memory_and_the_daemon_goes_on(
    platform: Platform,
) {
    if !memory_cgroups() {
        eprintln!("skipped: no memory cgroup for the daemon's VMs here (not root, or swap)");
        return;
    }
    let daemon = TestDaemon::start(platform, "oom", &["--pool", "1", "--pool-mem", "64M"]);
    wait_pool_ready(&daemon, 1);
    // The self-test fills half its heap: ~30 MiB of a 64 MiB guest.
    let vm: VmView = daemon.ok(
        Method::POST,
        "/vms",
        Some(json!({ "image": image("selftest"), "memory_limit": "16M", "timeout_ms": 60000 })),
        StatusCode::CREATED,
    );
    let ended = daemon.wait_exited(&vm.id);
    let exit = ended.exit.expect("exit recorded");
    assert_eq!(exit.outcome, Outcome::OutOfMemory, "{exit:?}");
    assert!(exit.detail.contains("memory_limit"), "{exit:?}");
    // The daemon answers, and the same guest within its default limit passes.
    wait_pool_ready(&daemon, 1);
    let vm = daemon.create("selftest");
    let exit = daemon.wait_exited(&vm.id).exit.expect("exit recorded");
    assert_eq!(exit.status, Some(0), "{exit:?}");
}

pub(super) fn the_linux_program_pool_runs_in_the_jail(platform: Platform) {
    let daemon = TestDaemon::start(platform, "lx-jail", &["--pool", "0", "--linux-pool", "1"]);
    wait_linux_pool_ready(&daemon, 1);
    // Jailed while it waits in the pool: in prepare.
    let shells = daemon.shell_pids();
    assert_eq!(shells.len(), 1, "{shells:?}");
    assert_jailed_process(shells[0], daemon.pid());

    let root = hello_root(&format!("daemon-jail-{}", platform.name()));
    let vm: VmView = daemon.ok(
        Method::POST,
        "/vms",
        Some(json!({
            "rootfs": root.dir,
            "program": "/hello",
            "memory_limit": "900M",
            "pids_limit": 12,
        })),
        StatusCode::CREATED,
    );
    let jail = vm.jail.clone().expect("inspect shows the jail");
    assert_eq!(jail.root, "empty");
    if is_root() {
        let CgroupReport::Applied {
            memory_max,
            pids_max,
            ..
        } = jail.cgroup
        else {
            panic!("no cgroup: {jail:?}");
        };
        assert_eq!(memory_max, Some(900 << 20));
        assert_eq!(pids_max, Some(12));
    }
    let exit = daemon.wait_exited(&vm.id).exit.expect("exit recorded");
    assert_eq!(exit.outcome, Outcome::Exited, "{exit:?}");
}

#[test]
fn bad_limits_get_a_400_and_leave_the_pool_alone() {
    let daemon = TestDaemon::start(Platform::Process, "bad-limits", &["--pool", "1"]);
    wait_pool_ready(&daemon, 1);
    for (field, value, needle) in [
        ("memory_limit", json!("much"), "memory_limit"),
        ("memory_limit", json!("0"), "memory_limit"),
        ("cpu_limit", json!(0), "cpu_limit"),
        ("cpu_limit", json!("lots"), "cpu_limit"),
        ("cpu_limit", json!(5000), "cpu_limit"),
        ("pids_limit", json!(0), "pids_limit"),
        ("pids_limit", json!(-1), ""),
    ] {
        let mut body = json!({ "image": image("hello") });
        body[field] = value.clone();
        let (status, error) = daemon.error(Method::POST, "/vms", Some(body));
        assert_eq!(status, StatusCode::BAD_REQUEST, "{field}={value}: {error}");
        assert!(error.contains(needle), "{field}={value}: {error}");
    }
    let pool: lightvm_toolstack::api::PoolStatus =
        daemon.ok(Method::GET, "/pool", None, StatusCode::OK);
    assert_eq!(pool.ready, 1, "no shell was used");

    // The CLI takes the same limits, and its errors are the daemon's.
    let hello = image("hello");
    let hello = hello.to_str().unwrap();
    let output = daemon.cli(&["create", "--pids-limit", "0", hello]);
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(err.contains("pids_limit"), "{err}");
    let output = daemon.cli(&[
        "create",
        "--memory-limit",
        "40M",
        "--cpu-limit",
        "0.5",
        "--json",
        hello,
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let vm: VmView = serde_json::from_slice(&output.stdout).expect("the VM as JSON");
    if is_root() {
        let Some(CgroupReport::Applied {
            memory_max,
            cpu_max,
            ..
        }) = vm.jail.map(|jail| jail.cgroup)
        else {
            panic!("no cgroup");
        };
        assert_eq!(memory_max, Some(40 << 20));
        assert_eq!(cpu_max.as_deref(), Some("50000 100000"));
    }
}
