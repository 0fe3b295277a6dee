//! The daemon against careless and hostile clients, and its own crashes: bad image
//! files, a file open that blocks, clients that go away mid-create, clients of
//! another uid, planted state, load, SIGKILL mid-creates and a full disk. These
//! test the daemon's own logic, the same on both platforms, so they run on the
//! process platform, which every host has.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use hyper::{Method, StatusCode};
use lightvm_toolstack::api::{VmState, VmView};
use lightvm_vmm::Platform;
use serde_json::json;

use super::{fd_count, fd_count_settled, fd_targets, image, rss_kib};
use super::{shell_processes, wait_pool_ready, zombie_children};
use super::{TestDaemon, LIGHTVM};

/// The uid and gid of `nobody`.
pub(super) const NOBODY: u32 = 65534;

pub(super) fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn mkfifo(path: &Path) {
    let c_path = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo reads a NUL-terminated path that outlives the call.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o666) }, 0);
}

/// A copy of guest `name`'s image at `path`, with `mode`.
fn copy_image(name: &str, path: &Path, mode: u32) -> PathBuf {
    std::fs::copy(image(name), path).expect("copy the image");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    path.to_owned()
}

/// A write lease on a file: while it is held, another process's open of that file
/// waits — until the lease is let go (or the kernel's lease-break-time passes,
/// 45 s by default). It makes "a file open that blocks" on demand, and lets a test
/// see the moment another process is waiting in that open.
struct Lease {
    file: std::fs::File,
}

impl Lease {
    fn take(path: &Path) -> Lease {
        // A lease break is announced with SIGIO, whose default action ends the
        // process: this test only polls for it.
        // SAFETY: setting a signal's disposition to "ignore".
        unsafe { libc::signal(libc::SIGIO, libc::SIG_IGN) };
        let file = std::fs::File::open(path).expect("open the leased file");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            // SAFETY: fcntl on a descriptor we own.
            if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETLEASE, libc::F_WRLCK) } == 0 {
                return Lease { file };
            }
            // EAGAIN while someone else (the daemon, just done) still has it open.
            assert!(
                Instant::now() < deadline,
                "no lease on {}: {}",
                path.display(),
                std::io::Error::last_os_error()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits until another process is blocked opening the file.
    fn wait_broken(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        // SAFETY: fcntl on a descriptor we own.
        while unsafe { libc::fcntl(self.file.as_raw_fd(), libc::F_GETLEASE) } == libc::F_WRLCK {
            assert!(Instant::now() < deadline, "no one opened the leased file");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn release(self) {
        // SAFETY: fcntl on a descriptor we own.
        unsafe { libc::fcntl(self.file.as_raw_fd(), libc::F_SETLEASE, libc::F_UNLCK) };
    }
}

/// A raw HTTP/1.1 create request for `image` (a JSON body of `extra` merged in).
fn create_request(image: &Path, extra: serde_json::Value) -> Vec<u8> {
    let mut body = json!({ "image": image });
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        body.extend(extra.clone());
    }
    let body = body.to_string();
    format!(
        "POST /vms HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Sends a request on a connection of its own and returns the connection, the
/// answer unread.
fn send_raw(socket: &Path, request: &[u8]) -> UnixStream {
    let mut stream = UnixStream::connect(socket).expect("connect to the daemon");
    stream.write_all(request).expect("send the request");
    stream
}

/// The status of a raw answer.
pub(super) fn status_of(answer: &str) -> u16 {
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}

/// Sends `request` to the daemon at `socket` from a child process running as
/// `uid` (and gid `uid`, no supplementary groups); the raw answer.
pub(super) fn request_as(uid: u32, socket: &Path, request: &[u8]) -> String {
    // Everything the child needs is made before fork: after it, the child of this
    // multi-threaded process makes only async-signal-safe system calls.
    // SAFETY: sockaddr_un is plain data; all-zero is a valid value.
    let mut address: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    address.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let path = socket.as_os_str().as_encoded_bytes();
    assert!(path.len() < address.sun_path.len());
    for (slot, &byte) in address.sun_path.iter_mut().zip(path) {
        *slot = byte as libc::c_char;
    }
    let mut pipe = [0; 2];
    // SAFETY: pipe writes two descriptors into the array.
    assert_eq!(unsafe { libc::pipe(pipe.as_mut_ptr()) }, 0);
    // SAFETY: see above; the child only makes raw system calls and _exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: raw system calls on values prepared before the fork.
        unsafe {
            libc::close(pipe[0]);
            if libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()) != 0
                || libc::syscall(libc::SYS_setgid, uid) != 0
                || libc::syscall(libc::SYS_setuid, uid) != 0
            {
                libc::_exit(2);
            }
            let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
            if libc::connect(
                fd,
                (&raw const address).cast(),
                std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
            ) != 0
            {
                libc::_exit(3);
            }
            libc::write(fd, request.as_ptr().cast(), request.len());
            let mut buf = [0u8; 4096];
            loop {
                let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
                if n <= 0 {
                    break;
                }
                libc::write(pipe[1], buf.as_ptr().cast(), n as usize);
            }
            libc::_exit(0);
        }
    }
    assert!(pid > 0, "fork: {}", std::io::Error::last_os_error());
    // SAFETY: closing our copy of the write end; the read end becomes a File.
    let mut answer = unsafe {
        libc::close(pipe[1]);
        <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(pipe[0])
    };
    let mut text = String::new();
    answer
        .read_to_string(&mut text)
        .expect("the child's answer");
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "the client as uid {uid} failed ({status:#x})"
    );
    text
}

/// Every entry of the daemon's `vms/` directory.
fn state_entries(daemon: &TestDaemon) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(daemon.state().join("vms"))
        .map(|entries| {
            entries
                .filter_map(|e| Some(e.ok()?.file_name().to_str()?.to_owned()))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Removes every VM the daemon lists.
fn remove_all(daemon: &TestDaemon) {
    let vms: Vec<VmView> = daemon.ok(Method::GET, "/vms", None, StatusCode::OK);
    for vm in vms {
        let answer = daemon
            .call(Method::DELETE, &format!("/vms/{}", vm.id), None)
            .expect("answer");
        assert_eq!(
            answer.status,
            StatusCode::NO_CONTENT,
            "{}",
            answer.error_message()
        );
    }
}

/// Waits until the `lightvm shell` processes of `daemon` (its children, and those
/// its records name) are `expected` in number; what they are then.
fn wait_shells(daemon: &TestDaemon, expected: usize) -> Vec<u32> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let shells = daemon.shell_pids();
        if shells.len() == expected || Instant::now() > deadline {
            return shells;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The books the daemon keeps must match what runs: after the given creates, the
/// shells that run are the pool's and the listed VMs', nothing is a zombie, every
/// directory in the state is a listed VM's, and — once those VMs are removed —
/// `max_vms` creates succeed and one more is refused.
fn assert_books_balanced(daemon: &TestDaemon, pool: usize, max_vms: usize) {
    wait_pool_ready(daemon, pool);
    // Creates whose clients left may still be finishing or rolling back: wait
    // until what the daemon lists, what runs and what is on disk agree.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let vms: Vec<VmView> = daemon.ok(Method::GET, "/vms", None, StatusCode::OK);
        let running = vms.iter().filter(|v| v.state == VmState::Running).count();
        let shells = daemon.shell_pids();
        let mut listed: Vec<String> = vms.iter().map(|v| v.id.clone()).collect();
        listed.sort();
        let entries = state_entries(daemon);
        if shells.len() == pool + running && entries == listed {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "shells {shells:?} are not the pool's {pool} and {running} listed VMs', \
             or the state {entries:?} is not a directory per listed VM {listed:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // A stopped shell is reaped on a blocking thread, just after it dies.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !zombie_children(daemon.pid()).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(zombie_children(daemon.pid()), Vec::<u32>::new());
    remove_all(daemon);
    let made: Vec<VmView> = (0..max_vms).map(|_| daemon.create("idle")).collect();
    let (status, message) = daemon.error(
        Method::POST,
        "/vms",
        Some(json!({ "image": image("idle") })),
    );
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{message}");
    assert_eq!(made.len(), max_vms, "the count was given back every time");
    remove_all(daemon);
}

#[test]
fn image_files_that_are_no_image_get_one_line_4xx_while_other_requests_answer() {
    let daemon = TestDaemon::start(Platform::Process, "badfiles", &["--pool", "0"]);
    let dir = daemon.dir.join("files");
    std::fs::create_dir_all(&dir).unwrap();
    let fifo = dir.join("fifo");
    mkfifo(&fifo);
    let huge = dir.join("huge.elf");
    std::fs::File::create(&huge)
        .unwrap()
        .set_len((1 << 30) + 1)
        .unwrap();
    let link = dir.join("zero.elf");
    std::os::unix::fs::symlink("/dev/zero", &link).unwrap();

    // Another client lists VMs all along.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let lister = {
        let (socket, stop) = (daemon.socket(), stop.clone());
        std::thread::spawn(move || {
            let client = lightvm_toolstack::Client::new(socket);
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let mut answers = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let answer = runtime.block_on(client.call(Method::GET, "/vms", None));
                answers.push(answer.map(|a| a.status).map_err(|e| e.to_string()));
            }
            answers
        })
    };
    for (path, needle) in [
        (
            Path::new("/dev/zero"),
            "not a regular file (a character device)",
        ),
        (&link, "not a regular file (a character device)"),
        (&fifo, "not a regular file (a FIFO)"),
        (&dir, "not a regular file (a directory)"),
        (&huge, "1073741825 bytes, larger than the 1024 MiB limit"),
        (Path::new("relative.elf"), "not an absolute path"),
    ] {
        let (status, message) = daemon.error(Method::POST, "/vms", Some(json!({ "image": path })));
        eprintln!("image {}: {status} {message}", path.display());
        assert_eq!(status, StatusCode::BAD_REQUEST, "{message}");
        assert!(message.contains(needle), "{needle:?} in {message:?}");
        assert!(!message.contains('\n'), "one line: {message:?}");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let answers = lister.join().expect("the lister");
    assert!(!answers.is_empty());
    assert!(
        answers.iter().all(|a| a.as_ref() == Ok(&StatusCode::OK)),
        "{answers:?}"
    );
    // The FIFO was never opened for reading: a writer would find no reader.
    let c_fifo = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: open reads a NUL-terminated path; the descriptor is closed at once.
    let fd = unsafe { libc::open(c_fifo.as_ptr(), libc::O_WRONLY | libc::O_NONBLOCK) };
    assert_eq!(
        std::io::Error::last_os_error().raw_os_error(),
        Some(libc::ENXIO),
        "no reader on the FIFO"
    );
    assert_eq!(fd, -1);
    assert!(daemon.create("hello").timings.is_some());
}

#[test]
fn an_image_open_that_blocks_stalls_its_own_create_only() {
    if !is_root() {
        eprintln!("skipping: a lease on a file the daemon opens needs root");
        return;
    }
    let daemon = TestDaemon::start(Platform::Process, "lease", &["--pool", "2"]);
    wait_pool_ready(&daemon, 2);
    let leased = copy_image("hello", &daemon.dir.join("leased.elf"), 0o644);
    let lease = Lease::take(&leased);
    let blocked = {
        let socket = daemon.socket();
        let request = create_request(&leased, json!({}));
        std::thread::spawn(move || {
            let mut stream = send_raw(&socket, &request);
            let mut answer = String::new();
            stream.read_to_string(&mut answer).expect("the answer");
            answer
        })
    };
    // The daemon is now inside open(2) of the image, on a blocking thread.
    lease.wait_broken();
    // Every other request is served meanwhile, creates included.
    let vms: Vec<VmView> = daemon.ok(Method::GET, "/vms", None, StatusCode::OK);
    assert!(vms.is_empty());
    let other = daemon.create("hello");
    assert_eq!(daemon.inspect(&other.id).id, other.id);
    let _: lightvm_toolstack::api::PoolStatus =
        daemon.ok(Method::GET, "/pool", None, StatusCode::OK);
    assert!(!blocked.is_finished(), "the leased create still waits");
    lease.release();
    let answer = blocked.join().expect("the blocked client");
    assert_eq!(status_of(&answer), 201, "{answer}");
}

#[test]
fn creates_whose_clients_go_away_are_rolled_back() {
    if !is_root() {
        eprintln!("skipping: a lease on a file the daemon opens needs root");
        return;
    }
    const MAX: usize = 2;
    let daemon = TestDaemon::start(
        Platform::Process,
        "cancel",
        &["--pool", "1", "--max-vms", &MAX.to_string()],
    );
    wait_pool_ready(&daemon, 1);
    // Deterministically mid-create: the client leaves while the daemon is inside
    // the image's open — more times than the VM limit.
    let leased = copy_image("idle", &daemon.dir.join("leased.elf"), 0o644);
    for _ in 0..=MAX {
        let lease = Lease::take(&leased);
        let client = send_raw(&daemon.socket(), &create_request(&leased, json!({})));
        lease.wait_broken();
        drop(client);
        // The daemon notices the client is gone whenever the open returns.
        std::thread::sleep(Duration::from_millis(50));
        lease.release();
    }
    assert_books_balanced(&daemon, 1, MAX);

    // At every other point too: clients that leave after 0 to 60 ms, from pooled
    // and from cold (4 MiB: not the pool's size) creates, so they leave while the
    // image is checked, a shell is prepared, the guest boots or the answer is on
    // its way. Whatever each got to, the books balance.
    for round in 0..24u64 {
        let extra = if round % 2 == 0 {
            json!({})
        } else {
            json!({ "mem": "4M" })
        };
        let client = send_raw(&daemon.socket(), &create_request(&image("idle"), extra));
        std::thread::sleep(Duration::from_micros(round * 2_500));
        drop(client);
    }
    // A create that completed before its client left is listed (and removed by
    // the check); the rest were rolled back.
    std::thread::sleep(Duration::from_millis(500));
    assert_books_balanced(&daemon, 1, MAX);
}

#[test]
fn a_client_of_another_uid_gets_only_what_its_own_rights_allow() {
    if !is_root() {
        eprintln!("skipping: clients of another uid need a root daemon");
        return;
    }
    let daemon = TestDaemon::start(
        Platform::Process,
        "peer",
        &["--pool", "1", "--socket-mode", "0666"],
    );
    let dir = daemon.dir.join("images");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let secret = copy_image("hello", &dir.join("secret.elf"), 0o600);
    let public = copy_image("idle", &dir.join("public.elf"), 0o644);

    // A root-only file: the daemon (root) could read it, the client cannot.
    let answer = request_as(
        NOBODY,
        &daemon.socket(),
        &create_request(&secret, json!({})),
    );
    eprintln!("nobody, root-only image: {answer}");
    assert_eq!(status_of(&answer), 403, "{answer}");
    assert!(
        answer.contains("permission denied to uid 65534"),
        "{answer}"
    );
    // A file in a directory it cannot search.
    let hidden = daemon.dir.join("hidden");
    std::fs::create_dir_all(&hidden).unwrap();
    std::fs::set_permissions(&hidden, std::fs::Permissions::from_mode(0o700)).unwrap();
    let buried = copy_image("hello", &hidden.join("buried.elf"), 0o644);
    let answer = request_as(
        NOBODY,
        &daemon.socket(),
        &create_request(&buried, json!({})),
    );
    assert_eq!(status_of(&answer), 403, "{answer}");
    // The CLI says the same in one line.
    let cli = Command::new(LIGHTVM)
        .args(["create", secret.to_str().unwrap(), "--socket"])
        .arg(daemon.socket())
        .uid(NOBODY)
        .gid(NOBODY)
        .output()
        .expect("run the CLI as nobody");
    assert_eq!(cli.status.code(), Some(125));
    let stderr = String::from_utf8_lossy(&cli.stderr);
    assert!(
        stderr.contains("permission denied to uid 65534") && stderr.lines().count() == 1,
        "{stderr}"
    );

    // What it may read, it may boot; the VM is its own.
    let answer = request_as(
        NOBODY,
        &daemon.socket(),
        &create_request(&public, json!({})),
    );
    assert_eq!(status_of(&answer), 201, "{answer}");
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
    let own: VmView = serde_json::from_str(body).expect("the VM");
    // Root's VMs are not its to stop, remove or read.
    let roots = daemon.create("idle");
    for (method, path) in [
        ("POST", format!("/vms/{}/stop", roots.id)),
        ("DELETE", format!("/vms/{}", roots.id)),
        ("GET", format!("/vms/{}/console", roots.id)),
    ] {
        let request = format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let answer = request_as(NOBODY, &daemon.socket(), request.as_bytes());
        assert_eq!(status_of(&answer), 403, "{method} {path}: {answer}");
    }
    assert_eq!(daemon.inspect(&roots.id).state, VmState::Running);
    // Nor is the pool its to resize.
    let body = r#"{"size": 9}"#;
    let request = format!(
        "PUT /pool HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let answer = request_as(NOBODY, &daemon.socket(), request.as_bytes());
    assert_eq!(status_of(&answer), 403, "{answer}");
    // Its own, it may.
    let request = format!(
        "DELETE /vms/{} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        own.id
    );
    let answer = request_as(NOBODY, &daemon.socket(), request.as_bytes());
    assert_eq!(status_of(&answer), 204, "{answer}");
}

#[test]
fn the_socket_has_the_group_and_mode_asked_for() {
    use std::os::unix::fs::MetadataExt;
    let daemon = TestDaemon::start(Platform::Process, "sockmode", &["--pool", "0"]);
    let metadata = std::fs::metadata(daemon.socket()).unwrap();
    assert_eq!(metadata.mode() & 0o777, 0o600, "the daemon's user alone");
    drop(daemon);
    let daemon = TestDaemon::start(
        Platform::Process,
        "sockgroup",
        &["--pool", "0", "--socket-group", "4242"],
    );
    let metadata = std::fs::metadata(daemon.socket()).unwrap();
    assert_eq!(metadata.mode() & 0o777, 0o660, "the group may connect");
    assert_eq!(metadata.gid(), 4242);
    let refused = Command::new(LIGHTVM)
        .args([
            "daemon",
            "--socket-group",
            "no-such-group-here",
            "--state-dir",
        ])
        .arg(daemon.dir.join("other-state"))
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("no-such-group-here"));
}

#[test]
fn planted_and_corrupt_records_are_refused_and_the_good_ones_adopted() {
    let mut daemon = TestDaemon::start(Platform::Process, "planted", &["--pool", "1"]);
    let good: Vec<VmView> = (0..2).map(|_| daemon.create("idle")).collect();
    daemon.kill();
    let vms = daemon.state().join("vms");
    let plant = |dir: &str, record: serde_json::Value| {
        std::fs::create_dir_all(vms.join(dir)).unwrap();
        std::fs::write(vms.join(dir).join("vm.json"), record.to_string()).unwrap();
    };
    let record = |id: &str, pid: u32, start: u64| {
        json!({
            "id": id, "image": "/img", "mem_size": 2097152, "cmdline": "",
            "pid": pid, "pid_start_time": start, "created_unix_ms": 1
        })
    };
    // A corrupt record among the good ones.
    std::fs::create_dir_all(vms.join("00000000000000c0")).unwrap();
    std::fs::write(vms.join("00000000000000c0").join("vm.json"), "{\"id\": ").unwrap();
    // An id that climbs out of the state directory.
    plant("00000000000000c1", record("../../escaped", 1, 0));
    // A record naming an unrelated process, with its true start time.
    let mut bystander = Command::new("sleep").arg("120").spawn().unwrap();
    let start = lightvm_toolstack::process::start_time(bystander.id()).unwrap();
    plant(
        "00000000000000c2",
        record("00000000000000c2", bystander.id(), start),
    );
    daemon.spawn();

    for vm in &good {
        assert_eq!(daemon.inspect(&vm.id).state, VmState::Running, "adopted");
    }
    let list: Vec<VmView> = daemon.ok(Method::GET, "/vms", None, StatusCode::OK);
    assert_eq!(
        list.len(),
        3,
        "the two good VMs and the impostor's, as lost"
    );
    let impostor = daemon.inspect("00000000000000c2");
    let exit = impostor.exit.expect("recorded as ended");
    assert_eq!(format!("{:?}", exit.outcome), "Lost");
    let log = std::fs::read_to_string(daemon.dir.join("daemon.err")).unwrap();
    for needle in [
        "not adopting vms/00000000000000c0: vm.json: ",
        "not adopting vms/00000000000000c1: vm.json names the id \"../../escaped\"",
        "VM 00000000000000c2: not adopting its process: pid",
    ] {
        assert_eq!(log.matches(needle).count(), 1, "{needle:?} once in:\n{log}");
    }
    // Neither stop nor remove touches the bystander.
    let _: VmView = daemon.ok(
        Method::POST,
        "/vms/00000000000000c2/stop",
        None,
        StatusCode::OK,
    );
    let answer = daemon
        .call(Method::DELETE, "/vms/00000000000000c2", None)
        .unwrap();
    assert_eq!(answer.status, StatusCode::NO_CONTENT);
    assert_eq!(bystander.try_wait().unwrap(), None, "the bystander runs on");
    bystander.kill().unwrap();
    bystander.wait().unwrap();
    assert!(!daemon.state().join("escaped").exists());
    assert!(!daemon.dir.join("escaped").exists());
    // The refused directories are left as they were, for a person to look at.
    assert!(vms.join("00000000000000c0").join("vm.json").exists());
    assert!(!vms.join("00000000000000c1").join("result.json").exists());
}

/// Many clients creating and deleting VMs at once. `LIGHTVM_LOAD_CLIENTS` and
/// `LIGHTVM_LOAD_ROUNDS` scale it up for a long run (the README's).
fn concurrent_clients_create_and_delete_and_nothing_leaks(platform: Platform) {
    let number = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let clients = number("LIGHTVM_LOAD_CLIENTS", 16);
    let rounds = number("LIGHTVM_LOAD_ROUNDS", 6);
    let daemon = TestDaemon::start(
        platform,
        "load",
        &["--pool", "4", "--max-vms", &clients.to_string()],
    );
    let pid = daemon.pid();
    for _ in 0..4 {
        let vm = daemon.create("idle");
        daemon
            .call(Method::DELETE, &format!("/vms/{}", vm.id), None)
            .unwrap();
    }
    wait_pool_ready(&daemon, 4);
    let (fds_before, rss_before) = (fd_count(pid), rss_kib(pid));
    let started = Instant::now();
    let workers: Vec<_> = (0..clients)
        .map(|n| {
            let socket = daemon.socket();
            let image = image(if n % 2 == 0 { "idle" } else { "hello" });
            std::thread::spawn(move || {
                let client = lightvm_toolstack::Client::new(socket);
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                let mut failures = Vec::new();
                for _ in 0..rounds {
                    let body = json!({ "image": image });
                    let created = runtime
                        .block_on(client.call(Method::POST, "/vms", Some(&body)))
                        .map_err(|e| e.to_string());
                    let id = match created {
                        Ok(answer) if answer.status == StatusCode::CREATED => {
                            serde_json::from_slice::<VmView>(&answer.body).map(|vm| vm.id)
                        }
                        Ok(answer) => {
                            failures.push(format!("{}: {}", answer.status, answer.error_message()));
                            continue;
                        }
                        Err(e) => {
                            failures.push(e);
                            continue;
                        }
                    };
                    let Ok(id) = id else { continue };
                    let removed = runtime
                        .block_on(client.call(Method::DELETE, &format!("/vms/{id}"), None))
                        .map(|a| (a.status, a.error_message()));
                    if removed.as_ref().map(|a| a.0).ok() != Some(StatusCode::NO_CONTENT) {
                        failures.push(format!("delete {id}: {removed:?}"));
                    }
                }
                failures
            })
        })
        .collect();
    let failures: Vec<String> = workers
        .into_iter()
        .flat_map(|w| w.join().expect("a client"))
        .collect();
    let elapsed = started.elapsed();
    wait_pool_ready(&daemon, 4);
    let shells = wait_shells(&daemon, 4);
    let (fds_after, rss_after) = (fd_count_settled(pid, fds_before + 1), rss_kib(pid));
    eprintln!(
        "{clients} clients x {rounds} creates+deletes in {:.1} s: daemon fds {fds_before} -> {fds_after}, \
         RSS {rss_before} -> {rss_after} KiB, shells after {}",
        elapsed.as_secs_f64(),
        shells.len()
    );
    assert_eq!(
        failures,
        Vec::<String>::new(),
        "every create and delete succeeded"
    );
    assert_eq!(shells.len(), 4, "the pool's shells only");
    assert!(
        fds_after <= fds_before + 1,
        "file descriptors leaked: {:?}",
        fd_targets(pid)
    );
    assert!(
        rss_after < rss_before + 16 * 1024,
        "daemon memory grew by 16 MiB"
    );
    let vms: Vec<VmView> = daemon.ok(Method::GET, "/vms", None, StatusCode::OK);
    assert!(vms.is_empty());
    assert!(state_entries(&daemon).is_empty());
    assert_eq!(zombie_children(pid), Vec::<u32>::new());
}

lightvm_testkit::platform_tests!(
    lightvm_vmm::Platform;
    concurrent_clients_create_and_delete_and_nothing_leaks,
);

#[test]
fn a_daemon_killed_mid_creates_leaks_nothing_after_its_restart() {
    const MAX: usize = 12;
    let mut daemon = TestDaemon::start(
        Platform::Process,
        "midkill",
        &["--pool", "2", "--max-vms", &MAX.to_string()],
    );
    wait_pool_ready(&daemon, 2);
    let pid = daemon.pid();
    let (fds_fresh, rss_fresh) = (fd_count(pid), rss_kib(pid));
    // Clients creating as fast as they can, pooled and cold.
    let clients: Vec<_> = (0..6)
        .map(|n| {
            let socket = daemon.socket();
            let mem = if n % 2 == 0 { "2M" } else { "4M" };
            let request = create_request(&image("idle"), json!({ "mem": mem }));
            std::thread::spawn(move || {
                for _ in 0..10 {
                    let Ok(mut stream) = UnixStream::connect(&socket) else {
                        return;
                    };
                    if stream.write_all(&request).is_err() {
                        return;
                    }
                    let mut answer = String::new();
                    if stream.read_to_string(&mut answer).is_err() || answer.is_empty() {
                        return;
                    }
                }
            })
        })
        .collect();
    // Killed once a few VMs run, with creates under way.
    let deadline = Instant::now() + Duration::from_secs(20);
    while state_entries(&daemon).len() < 4 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    daemon.kill();
    for client in clients {
        client.join().expect("a client");
    }
    daemon.spawn();
    let pid = daemon.pid();
    // Running VMs were adopted; a VM whose create was cut short is lost or gone.
    let vms: Vec<VmView> = daemon.ok(Method::GET, "/vms", None, StatusCode::OK);
    eprintln!(
        "after the kill: {} VMs listed ({} running)",
        vms.len(),
        vms.iter().filter(|v| v.state == VmState::Running).count()
    );
    // The killed daemon's pool shells exit once their control socket is gone; the
    // shells left are the new pool's.
    remove_all(&daemon);
    wait_pool_ready(&daemon, 2);
    let deadline = Instant::now() + Duration::from_secs(20);
    while shells_of_state(&daemon).len() > 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let (fds_after, rss_after) = (fd_count_settled(pid, fds_fresh + 1), rss_kib(pid));
    let shells = shells_of_state(&daemon);
    eprintln!(
        "daemon fds {fds_fresh} -> {fds_after}, RSS {rss_fresh} -> {rss_after} KiB, \
         shells of this state {}",
        shells.len()
    );
    assert_eq!(
        shells.len(),
        2,
        "no shell outlived its VM or its pool: {shells:?}"
    );
    assert!(shells.iter().all(|&shell| super::is_child_of(shell, pid)));
    assert!(
        state_entries(&daemon).is_empty(),
        "{:?}",
        state_entries(&daemon)
    );
    assert!(
        fds_after <= fds_fresh + 1,
        "file descriptors leaked: {:?}",
        fd_targets(pid)
    );
    assert!(rss_after < rss_fresh + 16 * 1024, "daemon memory");
    assert_books_balanced(&daemon, 2, MAX);
}

/// Every `lightvm shell` process started for `daemon`'s state directory, by any
/// daemon: a shell's stderr is that state's `shells.log`.
fn shells_of_state(daemon: &TestDaemon) -> Vec<u32> {
    let log = daemon.state().join("shells.log");
    shell_processes()
        .into_iter()
        .filter(|pid| std::fs::read_link(format!("/proc/{pid}/fd/2")).is_ok_and(|l| l == log))
        .collect()
}

/// A small tmpfs, unmounted on drop.
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(path).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "lightvm-test"])
            .arg(path)
            .status()
            .expect("mount");
        assert!(status.success(), "mount a tmpfs at {}", path.display());
        Tmpfs {
            path: path.to_owned(),
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// Fills the file system of `dir` with one file; returns it.
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).unwrap();
    let block = vec![0u8; 4096];
    while file.write_all(&block).is_ok() {}
    let _ = file.sync_all();
    path
}

#[test]
fn a_full_state_directory_gives_a_clear_error_and_loses_nothing() {
    if !is_root() {
        eprintln!("skipping: mounting a small tmpfs needs root");
        return;
    }
    const MAX: usize = 2;
    let mut daemon = TestDaemon {
        child: None,
        dir: std::env::temp_dir().join(format!("lightvm-daemon-{}-full", std::process::id())),
        extra_args: ["--pool", "1", "--max-vms", "2", "--platform", "process"]
            .map(str::to_owned)
            .to_vec(),
        limits: Vec::new(),
        netns: None,
    };
    let _ = std::fs::remove_dir_all(&daemon.dir);
    let disk = Tmpfs::mount(&daemon.state(), "2m");
    daemon.spawn();
    wait_pool_ready(&daemon, 1);
    let first = daemon.create("idle");
    let record =
        std::fs::read_to_string(daemon.state().join("vms").join(&first.id).join("vm.json"))
            .unwrap();

    let filler = fill(&disk.path);
    for _ in 0..=MAX {
        let (status, message) = daemon.error(
            Method::POST,
            "/vms",
            Some(json!({ "image": image("idle") })),
        );
        eprintln!("full disk: {status} {message}");
        assert_eq!(status, StatusCode::INSUFFICIENT_STORAGE, "{message}");
        assert!(
            message.contains("is full") && message.contains("the VM was not created"),
            "{message}"
        );
    }
    // Nothing was lost, nothing half-made is left.
    let list: Vec<VmView> = daemon.ok(Method::GET, "/vms", None, StatusCode::OK);
    assert_eq!(list.len(), 1);
    assert_eq!(daemon.inspect(&first.id).state, VmState::Running);
    assert_eq!(state_entries(&daemon), vec![first.id.clone()]);
    assert_eq!(
        std::fs::read_to_string(daemon.state().join("vms").join(&first.id).join("vm.json"))
            .unwrap(),
        record
    );
    // A restart on the full disk adopts it.
    daemon.kill();
    daemon.spawn();
    assert_eq!(daemon.inspect(&first.id).state, VmState::Running);

    std::fs::remove_file(filler).unwrap();
    assert_books_balanced(&daemon, 1, MAX);
    let dir = daemon.dir.clone();
    drop(daemon);
    drop(disk);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn console_reads_are_streamed_and_bounded_in_number() {
    let daemon = TestDaemon::start(Platform::Process, "console", &["--pool", "1"]);
    // A guest that writes to its console as fast as the VMM lets it.
    let flood: VmView = daemon.ok(
        Method::POST,
        "/vms",
        Some(json!({ "image": image("flood"), "timeout_ms": 1500 })),
        StatusCode::CREATED,
    );
    daemon.wait_exited(&flood.id);
    let log = daemon
        .state()
        .join("vms")
        .join(&flood.id)
        .join("console.log");
    let size = std::fs::metadata(&log).unwrap().len();
    let whole = daemon
        .call(Method::GET, &format!("/vms/{}/console", flood.id), None)
        .unwrap();
    assert_eq!(whole.status, StatusCode::OK);
    assert_eq!(whole.body.len() as u64, size, "the whole log, streamed");
    let tail = daemon
        .call(
            Method::GET,
            &format!("/vms/{}/console?tail=2", flood.id),
            None,
        )
        .unwrap();
    let text = String::from_utf8_lossy(&tail.body);
    assert!(text.lines().count() <= 2 && !text.is_empty(), "{text:?}");

    // Followers of a running VM's console hold their place until they leave; one
    // more than the bound is refused.
    let idle = daemon.create("idle");
    let request = format!(
        "GET /vms/{}/console?follow=true HTTP/1.1\r\nHost: x\r\n\r\n",
        idle.id
    );
    let mut followers: Vec<UnixStream> = Vec::new();
    for _ in 0..lightvm_toolstack::console::MAX_READERS {
        let mut stream = send_raw(&daemon.socket(), request.as_bytes());
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).expect("a follower's answer");
        assert_eq!(&head, b"HTTP/1.1 200");
        followers.push(stream);
    }
    let (status, message) = daemon.error(Method::GET, &format!("/vms/{}/console", idle.id), None);
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{message}");
    assert!(message.contains("console reads"), "{message}");
    assert_eq!(daemon.inspect(&idle.id).state, VmState::Running);
    followers.pop();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let answer = daemon
            .call(Method::GET, &format!("/vms/{}/console", idle.id), None)
            .unwrap();
        if answer.status == StatusCode::OK {
            assert!(String::from_utf8_lossy(&answer.body).contains("idle: up"));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a freed place is never taken again"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_daemon_runs_under_its_seccomp_filter_and_stops_cleanly() {
    let mut daemon = TestDaemon::start(Platform::Process, "seccomp", &["--pool", "1"]);
    // A create and a console read: the runtime has started blocking threads.
    let vm = daemon.create("idle");
    daemon.wait_console(&vm.id, "idle: up");
    let pid = daemon.pid();
    let mut threads = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let status = std::fs::read_to_string(task.unwrap().path().join("status")).unwrap();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_owned())
                .unwrap_or_default()
        };
        threads.push((field("Name:"), field("Seccomp:"), field("Seccomp_filters:")));
    }
    eprintln!("daemon threads (name, seccomp mode, filters): {threads:?}");
    assert!(threads.len() >= 2, "{threads:?}");
    for (name, mode, filters) in &threads {
        if name == "lightvm-spawner" {
            assert_eq!(mode, "0", "the spawner starts shells unfiltered");
        } else {
            assert_eq!((mode.as_str(), filters.as_str()), ("2", "2"), "{name}");
        }
    }
    assert_eq!(
        threads.iter().filter(|t| t.0 == "lightvm-spawner").count(),
        1
    );
    // SIGTERM: it stops on its own, by the calls on its list (no SIGSYS), and
    // leaves its VM running for the next daemon.
    let mut child = daemon.child.take().expect("the daemon");
    // SAFETY: kill(2) on the daemon we started.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{status:?}");
    assert!(
        Path::new(&format!("/proc/{}", vm.pid)).exists(),
        "the VM runs on"
    );
    daemon.spawn();
    assert_eq!(daemon.inspect(&vm.id).state, VmState::Running);
}

#[test]
fn shrinking_the_pool_stops_and_reaps_the_shells_it_lets_go() {
    let daemon = TestDaemon::start(Platform::Process, "shrink", &["--pool", "3"]);
    wait_pool_ready(&daemon, 3);
    assert_eq!(wait_shells(&daemon, 3).len(), 3);
    let _: lightvm_toolstack::api::PoolStatus = daemon.ok(
        Method::PUT,
        "/pool",
        Some(json!({ "size": 0 })),
        StatusCode::OK,
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while !(daemon.shell_pids().is_empty() && zombie_children(daemon.pid()).is_empty()) {
        assert!(
            Instant::now() < deadline,
            "shells {:?}, zombies {:?}",
            daemon.shell_pids(),
            zombie_children(daemon.pid())
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
