//! End-to-end: the toolstack daemon on every platform the host has — creating VMs
//! from its pool through the API and the CLI, surviving SIGKILL (VMs adopted),
//! noticing killed VMs, refusing bad input with JSON errors, and leaking nothing
//! over 500 VMs; and Linux programs created through it (`daemon/linux.rs`).

mod common;
#[path = "daemon/hardening.rs"]
mod hardening;
#[path = "daemon/jail.rs"]
mod jail;
#[path = "daemon/linux.rs"]
mod linux;

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{can_use_netns, image, Netns, GUEST_CMDLINE, GUEST_IP, LIGHTVM, TAP};
use hyper::{Method, StatusCode};
use jail::{
    a_guest_over_its_memory_limit_ends_out_of_memory_and_the_daemon_goes_on,
    a_pooled_vm_runs_in_its_jail_with_the_limits_it_asked_for,
    the_linux_program_pool_runs_in_the_jail,
};
use lightvm_toolstack::api::{PoolStatus, VmState, VmView};
use lightvm_toolstack::client::Answer;
use lightvm_toolstack::Client;
use lightvm_vmm::Platform;
use linux::{
    a_killed_daemon_adopts_its_running_linux_programs,
    a_linux_program_is_created_from_its_pool_through_the_api,
    a_networked_linux_program_answers_over_its_tap,
    the_cli_creates_a_linux_program_as_lightvm_run_does,
};
use serde_json::json;

/// A daemon with its own socket and state directory; on drop it stops every VM it
/// knows, kills any shell process left in its state and removes the directory.
struct TestDaemon {
    child: Option<Child>,
    dir: PathBuf,
    extra_args: Vec<String>,
    /// Runs the daemon under these resource limits (`prlimit` options), if any.
    limits: Vec<String>,
    /// The network namespace it runs in (`ip netns exec`), if not the test's own.
    netns: Option<String>,
}

impl TestDaemon {
    fn start(platform: Platform, name: &str, extra_args: &[&str]) -> Self {
        Self::start_with(platform, name, extra_args, None)
    }

    /// A daemon inside `netns`: its shells, and the taps they open, live there. Its
    /// socket is a path, so the test still reaches it from outside.
    fn start_in(platform: Platform, netns: &Netns, name: &str, extra_args: &[&str]) -> Self {
        Self::start_with(platform, name, extra_args, Some(netns.name.clone()))
    }

    fn start_with(
        platform: Platform,
        name: &str,
        extra_args: &[&str],
        netns: Option<String>,
    ) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "lightvm-daemon-{}-{platform}-{name}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let mut extra_args: Vec<String> = extra_args.iter().map(|s| (*s).to_owned()).collect();
        extra_args.extend(["--platform".to_owned(), platform.name().to_owned()]);
        let mut daemon = Self {
            child: None,
            dir,
            extra_args,
            limits: Vec::new(),
            netns,
        };
        daemon.spawn();
        daemon
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("api.sock")
    }

    fn state(&self) -> PathBuf {
        self.dir.join("state")
    }

    fn spawn(&mut self) {
        let _ = std::fs::remove_file(self.socket());
        // `ip netns exec` execs the daemon in place: the child's pid is the daemon's.
        let mut command = match &self.netns {
            Some(netns) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", netns]);
                command
            }
            None if !self.limits.is_empty() => Command::new("prlimit"),
            None => Command::new(LIGHTVM),
        };
        if self.netns.is_some() || !self.limits.is_empty() {
            if !self.limits.is_empty() {
                command.arg("prlimit").args(&self.limits).arg("--");
            }
            command.arg(LIGHTVM);
        }
        std::fs::create_dir_all(&self.dir).expect("the test daemon's directory");
        let stderr = std::fs::File::options()
            .create(true)
            .append(true)
            .open(self.dir.join("daemon.err"))
            .expect("the daemon's log");
        let child = command
            .arg("daemon")
            .arg("--socket")
            .arg(self.socket())
            .arg("--state-dir")
            .arg(self.state())
            .args(&self.extra_args)
            .args(self.default_args())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start the daemon");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.call(Method::GET, "/pool", None).is_err() {
            assert!(Instant::now() < deadline, "the daemon did not come up");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// What every test daemon gets unless its test says otherwise: the
    /// personality built once for this test binary (a daemon would otherwise
    /// build it at start), and no shells kept for Linux programs (the unikernel
    /// tests count shells).
    fn default_args(&self) -> Vec<String> {
        let given = |flag: &str| self.extra_args.iter().any(|arg| arg == flag);
        let mut args = Vec::new();
        if !given("--personality") {
            args.push("--personality".to_owned());
            args.push(common::programs::personality().display().to_string());
        }
        if !given("--linux-pool") {
            args.extend(["--linux-pool".to_owned(), "0".to_owned()]);
        }
        args
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn client(&self) -> Client {
        Client::new(self.socket())
    }

    fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<Answer, String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        runtime
            .block_on(self.client().call(method, path, body.as_ref()))
            .map_err(|e| e.to_string())
    }

    fn ok<T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
        status: StatusCode,
    ) -> T {
        let answer = self.call(method, path, body).expect("daemon answers");
        assert_eq!(answer.status, status, "{}", answer.error_message());
        serde_json::from_slice(&answer.body).expect("JSON answer")
    }

    fn create(&self, guest: &str) -> VmView {
        self.ok(
            Method::POST,
            "/vms",
            Some(json!({ "image": image(guest) })),
            StatusCode::CREATED,
        )
    }

    fn inspect(&self, id: &str) -> VmView {
        self.ok(Method::GET, &format!("/vms/{id}"), None, StatusCode::OK)
    }

    fn wait_exited(&self, id: &str) -> VmView {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let vm = self.inspect(id);
            if vm.state == VmState::Exited {
                return vm;
            }
            assert!(Instant::now() < deadline, "{id} did not exit");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends a request that must fail; its status and error message.
    fn error(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (StatusCode, String) {
        let answer = self.call(method, path, body).expect("daemon answers");
        let error: serde_json::Value =
            serde_json::from_slice(&answer.body).expect("a JSON error body");
        (
            answer.status,
            error["error"].as_str().unwrap_or_default().to_owned(),
        )
    }

    /// Waits until a VM's console holds `text`.
    fn wait_console(&self, id: &str, text: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let answer = self
                .call(Method::GET, &format!("/vms/{id}/console"), None)
                .expect("daemon answers");
            let console = String::from_utf8_lossy(&answer.body).into_owned();
            if console.contains(text) {
                return console;
            }
            assert!(
                Instant::now() < deadline,
                "no {text:?} on {id}'s console; it holds:\n{console}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn cli(&self, args: &[&str]) -> Output {
        Command::new(LIGHTVM)
            .args(args)
            .env("LIGHTVM_SOCKET", self.socket())
            .output()
            .expect("run the CLI")
    }

    /// Pids of the shell processes recorded in this daemon's state that still run.
    fn shell_pids(&self) -> Vec<u32> {
        shell_processes()
            .into_iter()
            .filter(|pid| is_child_of(*pid, self.pid()) || self.recorded_pids().contains(pid))
            .collect()
    }

    fn recorded_pids(&self) -> Vec<u32> {
        let Ok(entries) = std::fs::read_dir(self.state().join("vms")) else {
            return Vec::new();
        };
        entries
            .filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("vm.json")).ok())
            .filter_map(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
            .filter_map(|v| v["pid"].as_u64().and_then(|p| u32::try_from(p).ok()))
            .collect()
    }
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        for pid in self.shell_pids() {
            // SAFETY: kill(2) with a pid we found running a lightvm shell.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        }
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Every running `lightvm shell` process on the machine.
fn shell_processes() -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
                let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
                args.first().is_some_and(|a| a.ends_with(b"lightvm"))
                    && args.get(1) == Some(&&b"shell"[..])
            })
        })
        .collect()
}

fn is_child_of(pid: u32, parent: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit(')')
            .next()
            .and_then(|rest| rest.split_whitespace().nth(1))
            .and_then(|ppid| ppid.parse::<u32>().ok())
            == Some(parent)
    })
}

/// Children of `parent` that exited and were never reaped.
fn zombie_children(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                let mut fields = stat.rsplit(')').next().unwrap_or("").split_whitespace();
                let state = fields.next();
                let ppid = fields.next().and_then(|p| p.parse::<u32>().ok());
                state == Some("Z") && ppid == Some(parent)
            })
        })
        .collect()
}

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// The daemon's open descriptors once they are at most `bound`, or its count
/// after 5 s: a connection the daemon is still closing, or a shell being handed
/// over, holds one or two for a moment after the client has its answer (seen
/// with the whole suite loading both cores); a leak stays.
fn fd_count_settled(pid: u32, bound: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let count = fd_count(pid);
        if count <= bound || Instant::now() >= deadline {
            return count;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What each of the daemon's descriptors refers to, for a failure's message.
fn fd_targets(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|entries| {
            entries
                .filter_map(|entry| {
                    let entry = entry.ok()?;
                    let target = std::fs::read_link(entry.path()).ok()?;
                    Some(format!(
                        "{}: {}",
                        entry.file_name().to_string_lossy(),
                        target.display()
                    ))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

fn mem_available_kib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemAvailable:"))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

fn wait_pool_ready(daemon: &TestDaemon, ready: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let pool: PoolStatus = daemon.ok(Method::GET, "/pool", None, StatusCode::OK);
        if pool.ready >= ready && pool.preparing == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "pool never reached {ready}: {pool:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn create_list_logs_stop_and_remove_through_the_api(platform: Platform) {
    let daemon = TestDaemon::start(platform, "api", &["--pool", "2"]);
    wait_pool_ready(&daemon, 2);
    let hello = daemon.create("hello");
    let timings = hello.timings.expect("a created VM reports its timings");
    assert!(timings.pooled, "served from the pool");
    assert!(timings.shell_boot_done_us <= timings.api_to_boot_done_us);

    let exited = daemon.wait_exited(&hello.id);
    let exit = exited.exit.expect("exit recorded");
    assert_eq!(exit.status, Some(0));
    let console = daemon
        .call(Method::GET, &format!("/vms/{}/console", hello.id), None)
        .unwrap();
    assert_eq!(console.status, StatusCode::OK);
    assert!(String::from_utf8_lossy(&console.body).contains("Hello from a lightvm unikernel!"));

    let idle = daemon.create("idle");
    let list: Vec<VmView> = daemon.ok(Method::GET, "/vms", None, StatusCode::OK);
    let ids: Vec<&str> = list.iter().map(|v| v.id.as_str()).collect();
    assert!(ids.contains(&hello.id.as_str()) && ids.contains(&idle.id.as_str()));
    assert_eq!(daemon.inspect(&idle.id).state, VmState::Running);

    let stopped: VmView = daemon.ok(
        Method::POST,
        &format!("/vms/{}/stop", idle.id),
        None,
        StatusCode::OK,
    );
    assert_eq!(stopped.id, idle.id);
    let exit = daemon.wait_exited(&idle.id).exit.expect("exit recorded");
    assert_eq!(format!("{:?}", exit.outcome), "Stopped");

    for id in [&hello.id, &idle.id] {
        let answer = daemon
            .call(Method::DELETE, &format!("/vms/{id}"), None)
            .unwrap();
        assert_eq!(answer.status, StatusCode::NO_CONTENT);
        let gone = daemon
            .call(Method::GET, &format!("/vms/{id}"), None)
            .unwrap();
        assert_eq!(gone.status, StatusCode::NOT_FOUND);
    }
    assert!(
        !daemon.state().join("vms").join(&hello.id).exists(),
        "state removed"
    );

    let metrics = daemon.call(Method::GET, "/metrics", None).unwrap();
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(text.contains("lightvm_vm_create_seconds_count 2"), "{text}");
    assert!(text.contains("lightvm_pool_target 2"), "{text}");
}

fn the_cli_drives_the_daemon(platform: Platform) {
    let daemon = TestDaemon::start(platform, "cli", &["--pool", "1"]);
    let hello = image("hello");
    let created = daemon.cli(&[
        "create",
        hello.to_str().unwrap(),
        "--cmdline",
        "via the cli",
    ]);
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let id = stdout(&created).trim().to_owned();
    assert_eq!(id.len(), 16, "prints the id: {id:?}");
    daemon.wait_exited(&id);

    let ps = daemon.cli(&["ps"]);
    assert!(
        stdout(&ps).contains(&id) && stdout(&ps).contains("exited (0)"),
        "{}",
        stdout(&ps)
    );
    let logs = daemon.cli(&["logs", &id]);
    assert!(
        stdout(&logs).contains("cmdline: via the cli"),
        "{}",
        stdout(&logs)
    );
    let followed = daemon.cli(&["logs", "--follow", "--tail", "1", &id]);
    assert_eq!(stdout(&followed), "cmdline: via the cli\n");
    let inspect = daemon.cli(&["inspect", &id]);
    let vm: VmView = serde_json::from_slice(&inspect.stdout).expect("inspect prints JSON");
    assert_eq!(vm.id, id);

    let idle = daemon.cli(&["create", image("idle").to_str().unwrap()]);
    let idle_id = stdout(&idle).trim().to_owned();
    assert!(daemon.cli(&["stop", &idle_id]).status.success());
    daemon.wait_exited(&idle_id);
    assert!(daemon.cli(&["rm", &id]).status.success());
    assert!(daemon.cli(&["rm", &idle_id]).status.success());
    let missing = daemon.cli(&["inspect", &id]);
    assert_eq!(missing.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no VM with id"));

    let resized = daemon.cli(&["pool", "--size", "3", "--json"]);
    let pool: PoolStatus = serde_json::from_slice(&resized.stdout).expect("pool JSON");
    assert_eq!(pool.target, 3);
}

fn a_killed_daemon_adopts_its_running_vms_on_restart(platform: Platform) {
    let mut daemon = TestDaemon::start(platform, "adopt", &["--pool", "2"]);
    let vms: Vec<VmView> = (0..3).map(|_| daemon.create("idle")).collect();
    let exited = daemon.create("hello");
    daemon.wait_exited(&exited.id);

    daemon.kill(); // SIGKILL: no chance to clean up
    for vm in &vms {
        assert!(
            Path::new(&format!("/proc/{}", vm.pid)).exists(),
            "VM {} survived the daemon",
            vm.id
        );
    }
    daemon.spawn();

    for vm in &vms {
        let adopted = daemon.inspect(&vm.id);
        assert_eq!(adopted.state, VmState::Running, "{} adopted", vm.id);
        assert_eq!(adopted.pid, vm.pid);
    }
    assert_eq!(
        daemon.inspect(&exited.id).exit.and_then(|e| e.status),
        Some(0)
    );

    // An adopted VM can be stopped, and one killed from outside is noticed.
    let _: VmView = daemon.ok(
        Method::POST,
        &format!("/vms/{}/stop", vms[0].id),
        None,
        StatusCode::OK,
    );
    assert_eq!(
        format!("{:?}", daemon.wait_exited(&vms[0].id).exit.unwrap().outcome),
        "Stopped"
    );
    // SAFETY: kill(2) on the VM's own shell process.
    unsafe { libc::kill(vms[1].pid as libc::pid_t, libc::SIGKILL) };
    assert_eq!(
        format!("{:?}", daemon.wait_exited(&vms[1].id).exit.unwrap().outcome),
        "Killed"
    );
    assert_eq!(daemon.inspect(&vms[2].id).state, VmState::Running);
}

fn a_vm_process_killed_from_outside_is_reported_as_an_exit(platform: Platform) {
    let daemon = TestDaemon::start(platform, "killed", &["--pool", "1"]);
    let vm = daemon.create("idle");
    // SAFETY: kill(2) on the VM's own shell process.
    unsafe { libc::kill(vm.pid as libc::pid_t, libc::SIGKILL) };
    let exit = daemon.wait_exited(&vm.id).exit.expect("exit recorded");
    assert_eq!(format!("{:?}", exit.outcome), "Killed");
    assert!(exit.detail.contains("signal 9"), "{}", exit.detail);
}

fn bad_requests_get_json_errors_and_the_daemon_survives(platform: Platform) {
    let daemon = TestDaemon::start(
        platform,
        "bad",
        &["--pool", "1", "--max-vms", "2", "--max-mem", "64M"],
    );
    let expect_error = |method: Method,
                        path: &str,
                        body: Option<serde_json::Value>,
                        status: StatusCode,
                        needle: &str| {
        let answer = daemon.call(method, path, body).expect("answer");
        assert_eq!(answer.status, status, "{path}: {}", answer.error_message());
        let error: serde_json::Value =
            serde_json::from_slice(&answer.body).expect("JSON error body");
        let message = error["error"].as_str().unwrap_or_default().to_owned();
        assert!(
            message.contains(needle),
            "expected {needle:?} in {message:?}"
        );
    };
    expect_error(
        Method::POST,
        "/vms",
        Some(json!({ "image": "/nonexistent.elf" })),
        StatusCode::BAD_REQUEST,
        "/nonexistent.elf",
    );
    let not_elf = daemon.dir.join("not-an-elf");
    std::fs::write(&not_elf, "text").unwrap();
    expect_error(
        Method::POST,
        "/vms",
        Some(json!({ "image": not_elf })),
        StatusCode::UNPROCESSABLE_ENTITY,
        "not-an-elf: not an ELF",
    );
    expect_error(
        Method::POST,
        "/vms",
        Some(json!({ "image": image("hello"), "mem": "128M" })),
        StatusCode::BAD_REQUEST,
        "limit",
    );
    expect_error(
        Method::POST,
        "/vms",
        Some(json!({ "image": image("hello"), "mem": "3M" })),
        StatusCode::BAD_REQUEST,
        "multiple of 2 MiB",
    );
    expect_error(
        Method::POST,
        "/vms",
        Some(json!({ "image": image("hello"), "colour": "blue" })),
        StatusCode::BAD_REQUEST,
        "colour",
    );
    expect_error(
        Method::POST,
        "/vms",
        Some(json!("just a string")),
        StatusCode::BAD_REQUEST,
        "",
    );
    expect_error(
        Method::GET,
        "/vms/0123456789abcdef",
        None,
        StatusCode::NOT_FOUND,
        "no VM with id",
    );
    expect_error(
        Method::DELETE,
        "/vms/nope",
        None,
        StatusCode::NOT_FOUND,
        "no VM with id",
    );
    expect_error(
        Method::GET,
        "/vms/nope/console?follow=maybe",
        None,
        StatusCode::BAD_REQUEST,
        "",
    );
    expect_error(
        Method::GET,
        "/nowhere",
        None,
        StatusCode::NOT_FOUND,
        "no such endpoint",
    );
    // A method the path does not take: a JSON 405, not axum's empty one.
    expect_error(
        Method::PATCH,
        "/pool",
        None,
        StatusCode::METHOD_NOT_ALLOWED,
        "does not take PATCH",
    );
    // A guest that ends before its main (the personality, booted bare as a
    // unikernel in 2 MiB, exits at once): a 422 saying how it ended, not a 500
    // about its shell (found by api-conformance).
    expect_error(
        Method::POST,
        "/vms",
        Some(json!({ "image": common::programs::personality() })),
        StatusCode::UNPROCESSABLE_ENTITY,
        "the guest ended before reaching its main: guest exited with status",
    );
    expect_error(
        Method::PUT,
        "/pool",
        Some(json!({ "size": 1_000_000 })),
        StatusCode::BAD_REQUEST,
        "larger than the VM limit",
    );

    // Malformed JSON, sent raw.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let raw = runtime.block_on(async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::UnixStream::connect(daemon.socket()).await.unwrap();
        let body = "{\"image\": ";
        let request = format!(
            "POST /vms HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        answer
    });
    assert!(raw.starts_with("HTTP/1.1 400"), "{raw}");
    assert!(raw.contains("\"error\""), "{raw}");

    // 3 MiB the daemon will not take, with a content type it refuses unread: it
    // reads the body anyway and answers, rather than closing on a client still
    // sending (which then saw a reset connection; found by api-conformance).
    let raw = runtime.block_on(async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::UnixStream::connect(daemon.socket()).await.unwrap();
        let body = vec![b'x'; 3 << 20];
        let head = format!(
            "PUT /pool HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all(&body).await.expect("the daemon reads the whole body");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        answer
    });
    assert!(raw.starts_with("HTTP/1.1 413"), "{raw}");
    assert!(raw.contains("over 2 MiB"), "{raw}");

    // The VM limit: two run, the third is refused.
    let first = daemon.create("idle");
    let second = daemon.create("idle");
    expect_error(
        Method::POST,
        "/vms",
        Some(json!({ "image": image("idle") })),
        StatusCode::TOO_MANY_REQUESTS,
        "limit",
    );
    let _: VmView = daemon.ok(
        Method::POST,
        &format!("/vms/{}/stop", first.id),
        None,
        StatusCode::OK,
    );
    daemon.wait_exited(&first.id);
    let third = daemon.create("idle");
    assert_eq!(daemon.inspect(&third.id).state, VmState::Running);
    assert_eq!(
        daemon.inspect(&second.id).state,
        VmState::Running,
        "the daemon lived through it all"
    );
}

fn five_hundred_vms_leak_no_fds_processes_or_memory(platform: Platform) {
    let daemon = TestDaemon::start(platform, "leak", &["--pool", "4"]);
    let pid = daemon.pid();
    // Warm up: the first VMs grow the daemon's maps and caches once.
    for _ in 0..20 {
        let vm = daemon.create("idle");
        let answer = daemon
            .call(Method::DELETE, &format!("/vms/{}", vm.id), None)
            .unwrap();
        assert_eq!(answer.status, StatusCode::NO_CONTENT);
    }
    wait_pool_ready(&daemon, 4);
    let (fds_before, rss_before, avail_before) = (fd_count(pid), rss_kib(pid), mem_available_kib());
    let shells_before = daemon.shell_pids().len();

    for _ in 0..500 {
        let vm = daemon.create("idle");
        let answer = daemon
            .call(Method::DELETE, &format!("/vms/{}", vm.id), None)
            .unwrap();
        assert_eq!(
            answer.status,
            StatusCode::NO_CONTENT,
            "{}",
            answer.error_message()
        );
    }
    wait_pool_ready(&daemon, 4);
    let fds_after = fd_count_settled(pid, fds_before + 1);
    let (rss_after, avail_after) = (rss_kib(pid), mem_available_kib());
    let shells_after = daemon.shell_pids().len();
    eprintln!(
        "500 VMs: daemon fds {fds_before} -> {fds_after}, shell processes {shells_before} -> {shells_after}, \
         daemon RSS {rss_before} -> {rss_after} KiB, host MemAvailable {avail_before} -> {avail_after} KiB"
    );
    // A leak grows with the 500 VMs; a connection closing at the first sample
    // moves the count by one at most.
    assert!(
        fds_after <= fds_before + 1,
        "file descriptors leaked: {:?}",
        fd_targets(pid)
    );
    assert_eq!(
        shells_after, shells_before,
        "shell processes leaked (the pool's are expected)"
    );
    assert_eq!(shells_after, 4, "exactly the pool's shells remain");
    assert!(
        rss_after < rss_before + 8 * 1024,
        "daemon memory grew by more than 8 MiB"
    );
    let vms: Vec<VmView> = daemon.ok(Method::GET, "/vms", None, StatusCode::OK);
    assert!(vms.is_empty(), "every VM was removed");
}

#[test]
fn the_density_run_times_every_vm_and_plots_them() {
    let out = std::env::temp_dir().join(format!("lightvm-density-{}", std::process::id()));
    // The baseline and every lightvm platform's pool; one this host lacks is
    // skipped with its reason.
    let pools: Vec<String> = Platform::ALL
        .iter()
        .map(|platform| format!("unikernel-{platform}-pool"))
        .collect();
    let output = Command::new(LIGHTVM)
        .args(["bench", "density", "--count", "20", "--pool", "2"])
        .arg("--platforms")
        .arg(format!("process,{}", pools.join(",")))
        .arg("--out")
        .arg(&out)
        .output()
        .expect("run the density bench");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report = stdout(&output);
    assert!(report.contains("density-latency"), "{report}");
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    let latency = results["suites"][0]["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == "density-latency")
        .expect("a latency metric");
    for series in latency["series"].as_array().unwrap() {
        assert_eq!(
            series["samples"].as_array().unwrap().len(),
            20,
            "a sample per instance: {series}"
        );
    }
    let measured: Vec<&str> = latency["series"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|series| series["platform"].as_str())
        .collect();
    let mut expected = vec!["process".to_owned()];
    expected.extend(
        Platform::available()
            .iter()
            .map(|platform| format!("unikernel-{platform}-pool")),
    );
    assert_eq!(
        measured, expected,
        "the baseline and each pool this host has"
    );
    let svg = std::fs::read_to_string(out.join("density-latency.svg")).expect("the plot");
    assert!(svg.starts_with("<svg") && svg.contains("Creation latency"));
    std::fs::remove_dir_all(&out).unwrap();
}

fn vms_of_one_image_map_its_read_only_pages_from_the_file(platform: Platform) {
    let daemon = TestDaemon::start(platform, "share", &["--pool", "2"]);
    let image = std::fs::canonicalize(image("idle")).unwrap();
    let vms: Vec<VmView> = (0..2).map(|_| daemon.create("idle")).collect();
    for vm in &vms {
        let maps = std::fs::read_to_string(format!("/proc/{}/maps", vm.pid)).expect("maps");
        let mapped: Vec<&str> = maps
            .lines()
            .filter(|line| line.ends_with(image.to_str().unwrap()))
            .collect();
        assert!(
            !mapped.is_empty(),
            "VM {} maps no page of {}:\n{maps}",
            vm.id,
            image.display()
        );
        let private = |line: &&str| {
            line.split_whitespace()
                .nth(1)
                .is_some_and(|perms| perms.ends_with('p'))
        };
        assert!(mapped.iter().all(private), "private mappings: {mapped:?}");
    }
}

/// The pool's shells must be as large as the networked guests need (udp-echo's heap
/// does not fit the default 2 MiB), so that the VMs below come from the pool.
const NET_POOL: &[&str] = &["--pool", "2", "--pool-mem", "64M"];

fn a_pooled_vm_gets_a_network_on_a_tap_in_the_daemons_namespace(platform: Platform) {
    if !can_use_netns() {
        return;
    }
    let ns = Netns::new();
    let daemon = TestDaemon::start_in(platform, &ns, "net", NET_POOL);
    wait_pool_ready(&daemon, 2);
    let udp_echo = image("udp-echo");
    let created = daemon.cli(&[
        "create",
        udp_echo.to_str().unwrap(),
        "--mem",
        "64M",
        "--net",
        &format!("tap={TAP}"),
        "--cmdline",
        GUEST_CMDLINE,
        "--json",
    ]);
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let vm: VmView = serde_json::from_slice(&created.stdout).expect("create --json");
    let net = vm.net.clone().expect("the VM's net");
    assert!(
        net.starts_with(&format!("tap={TAP},mac=06:")),
        "the tap and a MAC of the VM's own: {net}"
    );
    assert!(
        vm.timings.is_some_and(|t| t.pooled),
        "served from the pool: {:?}",
        vm.timings
    );
    assert_eq!(daemon.inspect(&vm.id).net.as_deref(), Some(net.as_str()));
    let list: Vec<VmView> = daemon.ok(Method::GET, "/vms", None, StatusCode::OK);
    assert!(list
        .iter()
        .any(|v| v.id == vm.id && v.net.as_deref() == Some(net.as_str())));
    let record: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(daemon.state().join("vms").join(&vm.id).join("vm.json"))
            .expect("vm.json"),
    )
    .expect("vm.json is JSON");
    assert_eq!(record["net"], json!(net));

    daemon.wait_console(&vm.id, "listening");
    let echoed = ns.run_inside(|| {
        let socket = UdpSocket::bind("10.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(1)))
            .unwrap();
        let mut buf = [0u8; 2048];
        // The first datagram waits for ARP; a lost one is sent again.
        for _ in 0..5 {
            socket.send_to(b"hello, pooled VM", (GUEST_IP, 7)).unwrap();
            if let Ok((len, from)) = socket.recv_from(&mut buf) {
                return Some((buf[..len].to_vec(), from.ip().to_string()));
            }
        }
        None
    });
    let (echo, from) = echoed.expect("an echo from the guest");
    assert_eq!(echo, b"hello, pooled VM");
    assert_eq!(from, GUEST_IP);

    // A second VM on the same tap: the tap is busy, that create fails alone.
    let (status, message) = daemon.error(
        Method::POST,
        "/vms",
        Some(json!({
            "image": udp_echo,
            "mem": "64M",
            "net": format!("tap={TAP}"),
            "cmdline": "ip=10.0.0.3/24",
        })),
    );
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{message}");
    assert!(
        message.contains(TAP) && message.contains("busy"),
        "{message}"
    );
    assert_eq!(daemon.inspect(&vm.id).state, VmState::Running);
    let _: VmView = daemon.ok(
        Method::POST,
        &format!("/vms/{}/stop", vm.id),
        None,
        StatusCode::OK,
    );
    daemon.wait_exited(&vm.id);
}

fn a_create_on_a_missing_tap_fails_alone_and_the_daemon_goes_on(platform: Platform) {
    if !can_use_netns() {
        return;
    }
    let ns = Netns::new();
    let daemon = TestDaemon::start_in(platform, &ns, "nonet", NET_POOL);
    wait_pool_ready(&daemon, 2);
    let body = |net: &str| {
        json!({
            "image": image("udp-echo"),
            "net": net,
            "cmdline": GUEST_CMDLINE,
        })
    };

    let (status, message) = daemon.error(Method::POST, "/vms", Some(body("tap0,mac=1")));
    assert_eq!(status, StatusCode::BAD_REQUEST, "{message}");
    assert!(message.starts_with("net: "), "{message}");

    let (status, message) = daemon.error(Method::POST, "/vms", Some(body("tap=lvmnosuch0")));
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{message}");
    assert!(
        message.contains("\"lvmnosuch0\" does not exist"),
        "{message}"
    );
    assert!(
        !ns.exec(&["ip", "link", "show", "lvmnosuch0"])
            .status
            .success(),
        "the daemon made the missing tap"
    );
    // The tap is opened before a shell is taken or a VM made: nothing is left.
    let list: Vec<VmView> = daemon.ok(Method::GET, "/vms", None, StatusCode::OK);
    assert!(list.is_empty(), "{list:?}");
    let created = daemon.cli(&[
        "create",
        image("hello").to_str().unwrap(),
        "--net",
        "tap=lvmnosuch1",
    ]);
    assert_eq!(created.status.code(), Some(125));
    assert!(
        String::from_utf8_lossy(&created.stderr).contains("lvmnosuch1"),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );

    // The pool refills, and plain and networked VMs are created from it as before.
    wait_pool_ready(&daemon, 2);
    let hello = daemon.create("hello");
    assert!(hello.timings.is_some_and(|t| t.pooled));
    assert_eq!(hello.net, None);
    assert_eq!(daemon.wait_exited(&hello.id).exit.unwrap().status, Some(0));
    let echo: VmView = daemon.ok(
        Method::POST,
        "/vms",
        Some(body(&format!("tap={TAP}"))),
        StatusCode::CREATED,
    );
    daemon.wait_console(&echo.id, "listening");
}

/// A host where shells cannot be prepared — here the guest memory asked for is more
/// than the address space the daemon (and so each shell) may have: the daemon says
/// so once, tries again with a growing delay instead of in a loop, leaves no
/// zombie, and keeps answering.
fn a_pool_that_cannot_be_prepared_backs_off_and_leaves_no_zombies(platform: Platform) {
    let mut daemon = TestDaemon {
        child: None,
        dir: std::env::temp_dir().join(format!(
            "lightvm-daemon-{}-{platform}-backoff",
            std::process::id()
        )),
        extra_args: [
            "--pool",
            "2",
            "--pool-mem",
            "2G",
            "--platform",
            platform.name(),
        ]
        .map(str::to_owned)
        .to_vec(),
        limits: vec![format!("--as={}", 1u64 << 30)],
        netns: None,
    };
    let _ = std::fs::remove_dir_all(&daemon.dir);
    daemon.spawn();
    std::thread::sleep(Duration::from_secs(3));
    let pool: PoolStatus = daemon.ok(Method::GET, "/pool", None, StatusCode::OK);
    let failing = pool.failing.expect("the pool reports its failures");
    assert!(
        (2..20).contains(&failing.in_a_row),
        "{} failed preparations in 3 s: a backoff makes a handful",
        failing.in_a_row
    );
    assert!(failing.error.contains("memory"), "{}", failing.error);
    assert_eq!(pool.ready, 0);
    let log = std::fs::read_to_string(daemon.dir.join("daemon.err")).unwrap();
    assert_eq!(
        log.matches("preparing a shell failed").count(),
        1,
        "said once:\n{log}"
    );
    assert_eq!(zombie_children(daemon.pid()), Vec::<u32>::new());
    // It still answers, and a smaller VM is created cold.
    let vm: VmView = daemon.ok(
        Method::POST,
        "/vms",
        Some(json!({ "image": image("hello"), "mem": "2M" })),
        StatusCode::CREATED,
    );
    assert!(vm.timings.is_some_and(|t| !t.pooled));
}

lightvm_testkit::platform_tests!(
    lightvm_vmm::Platform;
    create_list_logs_stop_and_remove_through_the_api,
    the_cli_drives_the_daemon,
    a_killed_daemon_adopts_its_running_vms_on_restart,
    a_vm_process_killed_from_outside_is_reported_as_an_exit,
    bad_requests_get_json_errors_and_the_daemon_survives,
    five_hundred_vms_leak_no_fds_processes_or_memory,
    vms_of_one_image_map_its_read_only_pages_from_the_file,
    a_pooled_vm_gets_a_network_on_a_tap_in_the_daemons_namespace,
    a_create_on_a_missing_tap_fails_alone_and_the_daemon_goes_on,
    a_pool_that_cannot_be_prepared_backs_off_and_leaves_no_zombies,
    a_linux_program_is_created_from_its_pool_through_the_api,
    the_cli_creates_a_linux_program_as_lightvm_run_does,
    a_killed_daemon_adopts_its_running_linux_programs,
    a_networked_linux_program_answers_over_its_tap,
    a_pooled_vm_runs_in_its_jail_with_the_limits_it_asked_for,
    a_guest_over_its_memory_limit_ends_out_of_memory_and_the_daemon_goes_on,
    the_linux_program_pool_runs_in_the_jail,
);
