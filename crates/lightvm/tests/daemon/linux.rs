//! Linux programs through the daemon, as `lightvm run --rootfs` runs them: a
//! static C program created from the Linux-program pool (and cold) through the
//! API and the CLI, its console, arguments, environment and exit code read back
//! through the API; root filesystems a client may not read, that are too large,
//! or that lack the program, refused in one line; a running program adopted by
//! a restarted daemon; and a networked program that answers over its tap (once
//! the personality has sockets).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use hyper::{Method, StatusCode};
use lightvm_toolstack::api::{PoolStatus, VmState, VmView};
use lightvm_vmm::Platform;
use serde_json::json;

use super::common::programs::{compile, personality, Libc, Rootfs};
use super::common::{can_use_netns, Netns, GUEST_CMDLINE, GUEST_IP, TAP};
use super::hardening::{is_root, request_as, status_of, NOBODY};
use super::{stdout, zombie_children, TestDaemon};

/// A root holding the static `hello` (glibc) at `/hello`, a link to it and a
/// directory, so packing lists, copies and stores a link.
pub(super) fn hello_root(name: &str) -> Rootfs {
    let root = Rootfs::new(name);
    root.add(&compile(Path::new("hello.c"), Libc::Glibc, &[]), "/hello");
    std::fs::create_dir_all(root.dir.join("etc")).unwrap();
    std::fs::write(root.dir.join("etc/motd"), "packed by the daemon\n").unwrap();
    std::os::unix::fs::symlink("/hello", root.dir.join("hello-link")).unwrap();
    root
}

/// Waits until the Linux-program pool has `ready` shells and prepares none.
pub(super) fn wait_linux_pool_ready(daemon: &TestDaemon, ready: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let pool: PoolStatus = daemon.ok(Method::GET, "/pool", None, StatusCode::OK);
        if pool.linux.ready >= ready && pool.linux.preparing == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the Linux-program pool never reached {ready}: {pool:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn console_of(daemon: &TestDaemon, id: &str) -> String {
    let answer = daemon
        .call(Method::GET, &format!("/vms/{id}/console"), None)
        .expect("daemon answers");
    assert_eq!(answer.status, StatusCode::OK);
    String::from_utf8_lossy(&answer.body).into_owned()
}

/// What the daemon's state holds of packed archives: nothing, ever (they have
/// no name).
fn archives(daemon: &TestDaemon) -> Vec<String> {
    std::fs::read_dir(daemon.state().join("archives"))
        .map(|entries| {
            entries
                .filter_map(|e| Some(e.ok()?.file_name().to_string_lossy().into_owned()))
                .collect()
        })
        .unwrap_or_default()
}

pub(super) fn a_linux_program_is_created_from_its_pool_through_the_api(platform: Platform) {
    let daemon = TestDaemon::start(platform, "lx-api", &["--pool", "0", "--linux-pool", "1"]);
    wait_linux_pool_ready(&daemon, 1);
    let root = hello_root(&format!("daemon-api-{}", platform.name()));
    let create = |extra: serde_json::Value| -> VmView {
        let mut body = json!({
            "rootfs": root.dir,
            "program": "/hello",
            "env": ["GREETING=from the daemon"],
        });
        if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
            body.extend(extra.clone());
        }
        daemon.ok(Method::POST, "/vms", Some(body), StatusCode::CREATED)
    };

    let pooled = create(json!({ "args": ["7", "two words"] }));
    let timings = pooled.timings.expect("a created VM reports its timings");
    assert!(timings.pooled, "served from the Linux-program pool");
    let linux = pooled.linux.clone().expect("the VM shows its program");
    assert_eq!(linux.program, "/hello");
    assert_eq!(linux.args, ["7", "two words"]);
    assert_eq!(linux.rootfs, root.dir);
    assert!(linux.archive_bytes > 500 << 10, "{linux:?}");
    assert_eq!(pooled.image, personality(), "it boots the personality");
    assert_eq!(pooled.mem_size, 512 << 20, "the Linux pool's default size");
    let exit = daemon.wait_exited(&pooled.id).exit.expect("exit recorded");
    assert_eq!(exit.status, Some(7), "{exit:?}");
    let console = console_of(&daemon, &pooled.id);
    for line in [
        "hello from a Linux program: argc=3 [7] [two words]",
        "GREETING=from the daemon",
        "cwd=/",
    ] {
        assert!(console.contains(line), "{line:?} not in:\n{console}");
    }

    // A size the pool does not keep: a cold shell for Linux programs.
    let cold = create(json!({ "mem": "256M", "cwd": "/etc" }));
    let cold_timings = cold.timings.expect("timings");
    assert!(!cold_timings.pooled);
    assert_eq!(cold.mem_size, 256 << 20);
    let exit = daemon.wait_exited(&cold.id).exit.expect("exit recorded");
    assert_eq!(exit.status, Some(0), "{exit:?}");
    assert!(console_of(&daemon, &cold.id).contains("cwd=/etc"));
    eprintln!(
        "{platform}: request -> main of a Linux program: pooled {:.0} us (shell {:.0}), cold {:.0} us (shell {:.0})",
        timings.api_to_boot_done_us,
        timings.shell_boot_done_us,
        cold_timings.api_to_boot_done_us,
        cold_timings.shell_boot_done_us
    );

    assert_eq!(
        archives(&daemon),
        Vec::<String>::new(),
        "no archive on disk"
    );
    for id in [&pooled.id, &cold.id] {
        let answer = daemon
            .call(Method::DELETE, &format!("/vms/{id}"), None)
            .unwrap();
        assert_eq!(answer.status, StatusCode::NO_CONTENT);
    }
    wait_linux_pool_ready(&daemon, 1);
    let metrics = daemon.call(Method::GET, "/metrics", None).unwrap();
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(text.contains("lightvm_linux_pool_target 1"), "{text}");
}

pub(super) fn the_cli_creates_a_linux_program_as_lightvm_run_does(platform: Platform) {
    let daemon = TestDaemon::start(platform, "lx-cli", &["--pool", "0", "--linux-pool", "1"]);
    let root = hello_root(&format!("daemon-cli-{}", platform.name()));
    let created = daemon.cli(&[
        "create",
        "--rootfs",
        root.dir.to_str().unwrap(),
        "--env",
        "GREETING=cli",
        "--trace-syscalls",
        "hello",
        "--",
        "3",
        "x y",
    ]);
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let id = stdout(&created).trim().to_owned();
    assert_eq!(id.len(), 16, "prints the id: {id:?}");
    let vm = daemon.wait_exited(&id);
    assert_eq!(vm.exit.and_then(|e| e.status), Some(3));
    let linux = vm.linux.expect("a Linux program");
    assert_eq!(linux.program, "/hello", "made absolute from the root's top");
    assert!(linux.trace_syscalls);

    let logs = stdout(&daemon.cli(&["logs", &id]));
    for line in ["argc=3 [3] [x y]", "GREETING=cli", "[lx] write("] {
        assert!(logs.contains(line), "{line:?} not in:\n{logs}");
    }
    let ps = stdout(&daemon.cli(&["ps"]));
    let row = ps.lines().find(|l| l.starts_with(&id)).unwrap_or_default();
    assert!(row.contains("hello") && row.contains("exited (3)"), "{ps}");
    let pool = stdout(&daemon.cli(&["pool", "--linux-size", "2"]));
    assert!(
        pool.contains("linux pool:") && pool.contains("target 2"),
        "{pool}"
    );
    // The one-line error of a program the root does not hold.
    let missing = daemon.cli(&["create", "--rootfs", root.dir.to_str().unwrap(), "/bin/sh"]);
    assert_eq!(missing.status.code(), Some(125));
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(
        stderr.contains("/bin/sh is not a file in the root filesystem")
            && stderr.lines().count() == 1,
        "{stderr}"
    );
}

pub(super) fn a_killed_daemon_adopts_its_running_linux_programs(platform: Platform) {
    let mut daemon = TestDaemon::start(platform, "lx-adopt", &["--pool", "0", "--linux-pool", "1"]);
    let root = Rootfs::new(&format!("daemon-adopt-{}", platform.name()));
    root.add(Path::new("/bin/busybox"), "/bin/busybox");
    let vm: VmView = daemon.ok(
        Method::POST,
        "/vms",
        Some(json!({
            "rootfs": root.dir,
            "program": "/bin/busybox",
            // A shell would fork for `sleep`, which a unikernel cannot.
            "args": ["sleep", "120"],
        })),
        StatusCode::CREATED,
    );
    assert_eq!(daemon.inspect(&vm.id).state, VmState::Running);
    // SIGKILL: the next daemon finds a shell prepared for Linux programs (its
    // command line says `--linux`) and adopts it.
    daemon.kill();
    daemon.spawn();
    let adopted = daemon.inspect(&vm.id);
    assert_eq!(adopted.state, VmState::Running, "{adopted:?}");
    assert_eq!(
        adopted.linux.map(|linux| linux.program).as_deref(),
        Some("/bin/busybox")
    );
    let stopped: VmView = daemon.ok(
        Method::POST,
        &format!("/vms/{}/stop", vm.id),
        None,
        StatusCode::OK,
    );
    assert_eq!(stopped.id, vm.id);
    let exit = daemon.wait_exited(&vm.id).exit.expect("exit recorded");
    assert_eq!(format!("{:?}", exit.outcome), "Stopped");
}

pub(super) fn a_networked_linux_program_answers_over_its_tap(platform: Platform) {
    if !can_use_netns() {
        return;
    }
    let netns = Netns::new();
    let daemon = TestDaemon::start_in(
        platform,
        &netns,
        "lx-net",
        &["--pool", "0", "--linux-pool", "1"],
    );
    let root = Rootfs::new(&format!("daemon-net-{}", platform.name()));
    root.add(
        &compile(Path::new("tcp_echo.c"), Libc::Glibc, &[]),
        "/tcp_echo",
    );
    let vm: VmView = daemon.ok(
        Method::POST,
        "/vms",
        Some(json!({
            "rootfs": root.dir,
            "program": "/tcp_echo",
            "args": ["7777"],
            "net": format!("tap={TAP}"),
            "cmdline": GUEST_CMDLINE,
        })),
        StatusCode::CREATED,
    );
    daemon.wait_console(&vm.id, "tcp_echo: listening on 7777");
    let answer = netns.run_inside(|| {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut stream = loop {
            match TcpStream::connect((GUEST_IP, 7777)) {
                Ok(stream) => break stream,
                Err(e) => {
                    assert!(Instant::now() < deadline, "no connection: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        stream.write_all(b"over the tap\n").unwrap();
        stream.shutdown(std::net::Shutdown::Write).unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        answer
    });
    assert_eq!(answer, "over the tap\n");
    let answer = daemon
        .call(Method::DELETE, &format!("/vms/{}", vm.id), None)
        .unwrap();
    assert_eq!(answer.status, StatusCode::NO_CONTENT);
}

/// A raw create of `program` in `rootfs`.
fn create_linux_request(rootfs: &Path, program: &str) -> Vec<u8> {
    let body = json!({ "rootfs": rootfs, "program": program }).to_string();
    format!(
        "POST /vms HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[test]
fn a_client_packs_only_a_root_it_may_read() {
    use std::os::unix::fs::PermissionsExt;
    if !is_root() {
        eprintln!("skipping: clients of another uid need a root daemon");
        return;
    }
    let daemon = TestDaemon::start(
        Platform::Process,
        "lx-peer",
        &["--pool", "0", "--socket-mode", "0666"],
    );
    let root = hello_root("daemon-peer");
    let mode = |path: &Path, mode| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    for (path, unreadable) in [
        // The root itself, then one file in it that nobody may read.
        (root.dir.clone(), 0o700),
        (root.dir.join("etc/motd"), 0o600),
    ] {
        mode(&path, unreadable);
        let answer = request_as(
            NOBODY,
            &daemon.socket(),
            &create_linux_request(&root.dir, "/hello"),
        );
        assert_eq!(status_of(&answer), 403, "{answer}");
        assert!(
            answer.contains("permission denied to uid 65534"),
            "{answer}"
        );
        mode(&path, if unreadable == 0o700 { 0o755 } else { 0o644 });
    }
    // What it may read, it may run; the VM is its own.
    let answer = request_as(
        NOBODY,
        &daemon.socket(),
        &create_linux_request(&root.dir, "/hello"),
    );
    assert_eq!(status_of(&answer), 201, "{answer}");
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
    let own: VmView = serde_json::from_str(body).expect("the VM");
    assert_eq!(own.owner_uid, NOBODY);
    assert_eq!(
        daemon.wait_exited(&own.id).exit.and_then(|e| e.status),
        Some(0)
    );
    assert_eq!(archives(&daemon), Vec::<String>::new());
}

#[test]
fn roots_that_cannot_run_get_one_line_4xx_and_the_daemon_goes_on() {
    let daemon = TestDaemon::start(Platform::Process, "lx-bad", &["--pool", "0"]);
    let root = hello_root("daemon-bad");
    // A file as large as the VM's whole memory cannot be packed beside the
    // personality (sparse: refused before a byte of it is read).
    let big = Rootfs::new("daemon-big");
    big.add(&root.dir.join("hello"), "/hello");
    std::fs::File::create(big.dir.join("data"))
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    let root_path = root.dir.to_str().unwrap().to_owned();
    let cases = [
        (
            json!({ "rootfs": big.dir, "program": "/hello", "mem": "64M" }),
            413,
            "packs to more than",
        ),
        (
            json!({ "rootfs": root.dir, "program": "/missing" }),
            400,
            "/missing is not a file in the root filesystem",
        ),
        (
            json!({ "rootfs": root.dir.join("hello"), "program": "/hello" }),
            400,
            "not a directory",
        ),
        (
            json!({ "rootfs": "relative/root", "program": "/hello" }),
            400,
            "not an absolute path",
        ),
        (
            json!({ "rootfs": root_path, "program": "hello" }),
            400,
            "not an absolute path inside the root filesystem",
        ),
        (
            json!({ "rootfs": root.dir, "image": "/bin/true", "program": "/hello" }),
            400,
            "exclude each other",
        ),
        (
            json!({ "rootfs": root.dir, "program": "/hello", "mem": "2M" }),
            422,
            "ask for more memory",
        ),
    ];
    for (body, status, needle) in cases {
        let (got, message) = daemon.error(Method::POST, "/vms", Some(body.clone()));
        assert_eq!(got.as_u16(), status, "{body}: {message}");
        assert!(message.contains(needle), "{body}: {message}");
        assert!(!message.contains('\n'), "{body}: {message}");
    }
    // Nothing was made of them, and the daemon serves on.
    let vms: Vec<VmView> = daemon.ok(Method::GET, "/vms", None, StatusCode::OK);
    assert!(vms.is_empty(), "{vms:?}");
    assert_eq!(archives(&daemon), Vec::<String>::new());
    assert_eq!(zombie_children(daemon.pid()), Vec::<u32>::new());
    let ok: VmView = daemon.ok(
        Method::POST,
        "/vms",
        Some(json!({ "rootfs": root.dir, "program": "/hello-link" })),
        StatusCode::CREATED,
    );
    assert_eq!(
        daemon.wait_exited(&ok.id).exit.and_then(|e| e.status),
        Some(0)
    );
}
