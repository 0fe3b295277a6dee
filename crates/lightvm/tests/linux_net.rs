//! End-to-end: unmodified Linux programs that use the network, pipes and epoll,
//! run on the Linux personality (`lightvm run --rootfs DIR PROGRAM --net
//! tap=… --cmdline "ip=…"`) on every platform, checked from inside a private
//! network namespace the way a user would check them:
//!
//! - the bench's C baselines, built static with glibc: `udp-echo` echoes
//!   datagrams, `tcp-server` echoes TCP (one connection and fifty at once) and
//!   serves HTTP byte for byte as the same binary does on Linux;
//! - Debian's busybox `nc`, listening and connecting; Debian's iperf3 and
//!   nginx (dynamically linked) serving;
//! - `linux_net/lxnet.c`, a program that prints what it sees of pipes,
//!   eventfds, socketpairs, epoll (level- and edge-triggered), poll, select and
//!   sockets (blocking and non-blocking connects, refusals, resets, options):
//!   its output in the guest must equal its output on Linux, for glibc and musl
//!   builds alike.
//!
//! Servers the programs talk to run in the namespace at 10.0.0.1; the guest is
//! 10.0.0.2 (smoltcp on one tap has no loopback, so a guest cannot talk to
//! itself).

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::programs::{compile, Libc, Rootfs};
use common::{can_use_netns, repo, Netns, Vm, GUEST_IP};
use lightvm_vmm::Platform;

/// `source` compiled statically with `compiler` (gcc or musl-gcc) into `/NAME`
/// of `root`.
fn compile_into(
    root: &Rootfs,
    compiler: &str,
    source: &Path,
    name: &str,
    flags: &[&str],
) -> PathBuf {
    let libc = if compiler == "musl-gcc" {
        Libc::Musl
    } else {
        Libc::Glibc
    };
    let binary = compile(source, libc, flags);
    root.add(&binary, &format!("/{name}"));
    binary
}

fn baseline(name: &str) -> PathBuf {
    repo().join("crates/bench/baselines").join(name)
}

/// Starts `program` in the guest and waits for its console to show `ready`.
fn start_guest(
    ns: &Netns,
    platform: Platform,
    root: &Rootfs,
    program: &str,
    args: &[&str],
    ready: &str,
) -> Vm {
    let vm = Vm::spawn(&mut root.command(Some(ns), platform, &[], program, args));
    vm.wait_for(ready, Duration::from_secs(60));
    vm
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Connects to `addr:port` in the namespace, retrying while nothing listens
/// yet (a guest that prints nothing when it listens).
fn connect_retrying(addr: &str, port: u16) -> TcpStream {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match TcpStream::connect((addr, port)) {
            Ok(stream) => return stream,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            Err(e) => panic!("connect to {addr}:{port}: {e}"),
        }
    }
}

/// Sends `data` on a fresh connection, half-closes, and reads everything back.
fn echo_once(addr: &str, port: u16, data: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect((addr, port)).expect("connect to the echo server");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    let sent = data.to_vec();
    let sender = std::thread::spawn(move || {
        writer.write_all(&sent).unwrap();
        writer.shutdown(Shutdown::Write).unwrap();
    });
    let mut back = Vec::new();
    stream.read_to_end(&mut back).expect("read the echo");
    sender.join().unwrap();
    back
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(seed) ^ seed)
        .collect()
}

fn bench_udp_echo_answers_every_datagram(platform: Platform) {
    if !can_use_netns() {
        return;
    }
    let root = Rootfs::new(&format!("udp-echo-{}", platform.name()));
    compile_into(&root, "gcc", &baseline("udp-echo.c"), "udp-echo", &[]);
    let ns = Netns::new();
    let _vm = start_guest(&ns, platform, &root, "/udp-echo", &[], "listening");
    ns.run_inside(|| {
        let socket = UdpSocket::bind("10.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut buf = [0u8; 2048];
        for i in 0..200u32 {
            let message = pattern((i as usize % 1400) + 1, i as u8 | 1);
            socket.send_to(&message, (GUEST_IP, 7)).unwrap();
            let (len, from) = socket.recv_from(&mut buf).expect("an echo");
            assert_eq!(from.ip().to_string(), GUEST_IP);
            assert_eq!(from.port(), 7);
            assert_eq!(&buf[..len], &message[..], "datagram {i}");
        }
    });
}

fn bench_tcp_server_echoes_one_and_fifty_connections(platform: Platform) {
    if !can_use_netns() {
        return;
    }
    let root = Rootfs::new(&format!("tcp-echo-{}", platform.name()));
    compile_into(
        &root,
        "gcc",
        &baseline("tcp-server.c"),
        "tcp-server",
        &["-DSERVER=1"],
    );
    let ns = Netns::new();
    let _vm = start_guest(&ns, platform, &root, "/tcp-server", &[], "listening");
    ns.run_inside(|| {
        for (len, seed) in [(1, 3), (1000, 5), (300_000, 7)] {
            let data = pattern(len, seed);
            assert!(
                echo_once(GUEST_IP, 7, &data) == data,
                "{len} bytes did not come back intact"
            );
        }
        let clients: Vec<_> = (0..50)
            .map(|i| {
                std::thread::spawn(move || {
                    let data = pattern(20_000 + i * 97, i as u8 | 1);
                    echo_once(GUEST_IP, 7, &data) == data
                })
            })
            .collect();
        let intact = clients
            .into_iter()
            .map(|client| client.join().unwrap_or(false))
            .filter(|&intact| intact)
            .count();
        assert_eq!(intact, 50, "only {intact} of 50 connections echoed intact");
    });
}

/// Two requests with curl on one connection, then three pipelined ones on a
/// raw connection: everything the server sent, as bytes.
fn http_exchange(addr: &'static str, ns: &Netns) -> (String, Vec<u8>) {
    let url = format!("http://{addr}/");
    let output = ns.exec(&["curl", "-sS", "-i", "--max-time", "10", &url, &url]);
    assert!(
        output.status.success(),
        "curl failed:\n{}",
        text(&output.stderr)
    );
    let curl = text(&output.stdout);
    let pipelined = ns.run_inside(move || {
        let mut stream = connect_retrying(addr, 80);
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let request = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        stream.write_all(request.repeat(3).as_bytes()).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while got
            .windows(32)
            .filter(|w| w == b"Hello from a lightvm unikernel!\n")
            .count()
            < 3
        {
            match stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => panic!("read the pipelined responses: {e}"),
            }
        }
        got
    });
    (curl, pipelined)
}

fn bench_tcp_server_serves_http_as_on_linux(platform: Platform) {
    if !can_use_netns() {
        return;
    }
    let root = Rootfs::new(&format!("httpd-{}", platform.name()));
    let binary = compile_into(
        &root,
        "gcc",
        &baseline("tcp-server.c"),
        "httpd",
        &["-DSERVER=3"],
    );
    let ns = Netns::new();
    // The same binary on Linux first, in the namespace, at 10.0.0.1.
    let host = Vm::spawn(&mut ns.command(&[binary.to_str().expect("utf-8 path")]));
    host.wait_for("listening", Duration::from_secs(10));
    let on_linux = http_exchange("10.0.0.1", &ns);
    host.kill();
    let _vm = start_guest(&ns, platform, &root, "/httpd", &[], "listening");
    let in_guest = http_exchange(GUEST_IP, &ns);
    assert!(
        on_linux.0.contains("HTTP/1.1 200 OK"),
        "curl on Linux:\n{}",
        on_linux.0
    );
    assert_eq!(in_guest.0, on_linux.0, "curl's view differs from Linux's");
    assert_eq!(
        text(&in_guest.1),
        text(&on_linux.1),
        "the pipelined responses differ from Linux's"
    );
}

fn busybox_root(name: &str) -> Rootfs {
    let root = Rootfs::new(name);
    root.add(Path::new("/bin/busybox"), "/bin/busybox");
    root
}

/// `busybox nc -l -p 7`: what a client sends appears on the guest's console;
/// the guest's stdin (the console) is at end of file, so nc half-closes at
/// once (the client reads EOF), and exits when the client closes.
fn busybox_nc_listens_and_prints_what_a_client_sends(platform: Platform) {
    if !can_use_netns() {
        return;
    }
    let root = busybox_root(&format!("nc-listen-{}", platform.name()));
    let ns = Netns::new();
    let vm = Vm::spawn(&mut root.command(
        Some(&ns),
        platform,
        &[],
        "/bin/busybox",
        &["nc", "-l", "-p", "7"],
    ));
    let rest = ns.run_inside(|| {
        let mut stream = connect_retrying(GUEST_IP, 7);
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        stream
            .write_all(b"hello from the namespace\n")
            .expect("send to nc");
        let mut rest = Vec::new();
        let read = stream.read_to_end(&mut rest);
        stream.shutdown(Shutdown::Both).ok();
        (read.map_err(|e| e.kind()), rest)
    });
    assert_eq!(
        rest,
        (Ok(0), Vec::new()),
        "nc should half-close at once, sending nothing (its stdin is empty)"
    );
    vm.wait_for("hello from the namespace", Duration::from_secs(20));
    let (code, output) = vm.wait(Duration::from_secs(30));
    assert_eq!(code, Some(0), "nc -l exited badly:\n{output}");
}

/// A server in the namespace that sends a greeting, then reads until the
/// client's end of file; what it read.
fn greeting_server(listener: TcpListener, greeting: &'static [u8]) -> Vec<u8> {
    listener.set_nonblocking(false).unwrap();
    let (mut stream, _) = listener.accept().expect("nc connects");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream.write_all(greeting).unwrap();
    let mut got = Vec::new();
    let _ = stream.read_to_end(&mut got);
    got
}

/// `busybox nc 10.0.0.1 PORT`: the server's greeting appears on the console;
/// nc sends its (empty) stdin and half-closes; the server closes; nc exits 0.
fn busybox_nc_connects_and_prints_what_the_server_sends(platform: Platform) {
    if !can_use_netns() {
        return;
    }
    let root = busybox_root(&format!("nc-connect-{}", platform.name()));
    let ns = Netns::new();
    let listener =
        ns.run_inside(|| TcpListener::bind("10.0.0.1:7070").expect("listen in the namespace"));
    let server =
        std::thread::spawn(move || greeting_server(listener, b"greetings from 10.0.0.1\n"));
    let vm = Vm::spawn(&mut root.command(
        Some(&ns),
        platform,
        &[],
        "/bin/busybox",
        &["nc", "10.0.0.1", "7070"],
    ));
    vm.wait_for("greetings from 10.0.0.1", Duration::from_secs(30));
    let received = server.join().expect("the server thread");
    assert!(
        received.is_empty(),
        "nc sent {received:?} with an empty stdin"
    );
    let (code, output) = vm.wait(Duration::from_secs(30));
    assert_eq!(code, Some(0), "nc exited badly:\n{output}");
}

/// Debian's iperf3 (dynamically linked) as a server in the guest: iperf3
/// clients in the namespace measure both directions and finish cleanly. It
/// falls back from IPv6 to IPv4, and uses pselect6, TCP_INFO and a temporary
/// file.
fn iperf3_serves_both_directions(platform: Platform) {
    if !can_use_netns() {
        return;
    }
    let root = Rootfs::of_host_programs(
        &format!("iperf3-{}", platform.name()),
        &["/usr/bin/iperf3"],
        &[],
    );
    let ns = Netns::new();
    let _vm = start_guest(
        &ns,
        platform,
        &root,
        "/usr/bin/iperf3",
        // Its stdout is a pipe here: without this its lines stay in its buffer.
        &["-s", "--forceflush"],
        "Server listening",
    );
    for reverse in [false, true] {
        let mut args = vec!["iperf3", "-c", GUEST_IP, "-t", "1", "-f", "m"];
        if reverse {
            args.push("-R");
        }
        let output = ns.exec(&args);
        let report = text(&output.stdout);
        assert!(
            output.status.success() && report.contains("receiver"),
            "iperf3 {args:?} failed:\n{report}{}",
            text(&output.stderr)
        );
    }
}

/// nginx's configuration for the guest: one process, no daemon, files from
/// /www with sendfile.
const NGINX_CONF: &str = "daemon off;
master_process off;
worker_processes 1;
error_log stderr notice;
pid /run/nginx.pid;
events { worker_connections 256; }
http {
    include mime.types;
    access_log off;
    sendfile on;
    tcp_nopush on;
    server {
        listen 80;
        root /www;
    }
}
";

/// Debian's nginx (dynamically linked; epoll edge-triggered, accept4,
/// eventfd, sendfile) serves a page, a 300 KB file byte for byte, both on one
/// keep-alive connection, and a 404.
fn nginx_serves_files_with_sendfile_and_keep_alive(platform: Platform) {
    if !can_use_netns() {
        eprintln!("skipping where nginx, curl or ldd is missing");
        return;
    }
    let root = Rootfs::of_host_programs(
        &format!("nginx-{}", platform.name()),
        &["/usr/sbin/nginx"],
        &[],
    );
    for dir in ["etc/nginx", "var/lib/nginx", "var/log/nginx", "run", "www"] {
        std::fs::create_dir_all(root.dir.as_path().join(dir)).unwrap();
    }
    std::fs::copy(
        "/etc/nginx/mime.types",
        root.dir.as_path().join("etc/nginx/mime.types"),
    )
    .expect("copy mime.types");
    std::fs::write(root.dir.as_path().join("etc/nginx/nginx.conf"), NGINX_CONF).unwrap();
    std::fs::write(
        root.dir.as_path().join("etc/passwd"),
        "root:x:0:0::/root:/bin/sh\nnobody:x:65534:65534::/nonexistent:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(
        root.dir.as_path().join("etc/group"),
        "root:x:0:\nnogroup:x:65534:\n",
    )
    .unwrap();
    std::fs::write(
        root.dir.as_path().join("www/index.html"),
        "hello from nginx\n",
    )
    .unwrap();
    let big = pattern(300_000, 11);
    std::fs::write(root.dir.as_path().join("www/big.bin"), &big).unwrap();
    let ns = Netns::new();
    let _vm = start_guest(
        &ns,
        platform,
        &root,
        "/usr/sbin/nginx",
        &[],
        "using the \"epoll\" event method",
    );
    let page = format!("http://{GUEST_IP}/");
    let file = format!("http://{GUEST_IP}/big.bin");
    let output = ns.exec(&[
        "curl",
        "-sS",
        "-v",
        "--retry-connrefused",
        "--retry",
        "20",
        "--retry-delay",
        "1",
        "--max-time",
        "20",
        &page,
        &file,
    ]);
    let log = text(&output.stderr);
    assert!(output.status.success(), "curl failed:\n{log}");
    let mut expected = b"hello from nginx\n".to_vec();
    expected.extend_from_slice(&big);
    assert!(
        output.stdout == expected,
        "nginx served {} bytes, not the page and the file",
        output.stdout.len()
    );
    assert!(
        log.contains("Re-using existing connection") || log.contains("Reusing existing connection"),
        "no keep-alive:\n{log}"
    );
    let missing = ns.exec(&[
        "curl",
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--max-time",
        "10",
        &format!("http://{GUEST_IP}/missing"),
    ]);
    assert_eq!(text(&missing.stdout), "404");
}

/// The servers `lxnet.c` talks to: TCP echo on 7777 (a connection that sends
/// exactly "RST" is reset), UDP echo on 7778, nothing on 7779. They stop when
/// dropped.
struct LxnetServers {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl LxnetServers {
    fn start(ns: &Netns) -> LxnetServers {
        let (tcp, udp) = ns.run_inside(|| {
            let tcp = TcpListener::bind("10.0.0.1:7777").expect("bind 7777");
            let udp = UdpSocket::bind("10.0.0.1:7778").expect("bind 7778");
            (tcp, udp)
        });
        let stop = Arc::new(AtomicBool::new(false));
        tcp.set_nonblocking(true).unwrap();
        udp.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let tcp_stop = stop.clone();
        let tcp_thread = std::thread::spawn(move || {
            let mut connections = Vec::new();
            while !tcp_stop.load(Ordering::Relaxed) {
                match tcp.accept() {
                    Ok((stream, _)) => {
                        let stop = tcp_stop.clone();
                        connections
                            .push(std::thread::spawn(move || echo_connection(stream, &stop)));
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(_) => break,
                }
            }
            for connection in connections {
                let _ = connection.join();
            }
        });
        let udp_stop = stop.clone();
        let udp_thread = std::thread::spawn(move || {
            let mut buf = [0u8; 65536];
            while !udp_stop.load(Ordering::Relaxed) {
                if let Ok((len, from)) = udp.recv_from(&mut buf) {
                    let _ = udp.send_to(&buf[..len], from);
                }
            }
        });
        LxnetServers {
            stop,
            threads: vec![tcp_thread, udp_thread],
        }
    }
}

fn echo_connection(mut stream: TcpStream, stop: &AtomicBool) {
    stream
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let mut buf = [0u8; 65536];
    while !stop.load(Ordering::Relaxed) {
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(3) if &buf[..3] == b"RST" => {
                // SO_LINGER {on, 0}: the close sends a reset.
                let linger = libc::linger {
                    l_onoff: 1,
                    l_linger: 0,
                };
                // SAFETY: setsockopt on a socket this thread owns, with a
                // pointer to a live `linger` and its size.
                unsafe {
                    libc::setsockopt(
                        stream.as_raw_fd(),
                        libc::SOL_SOCKET,
                        libc::SO_LINGER,
                        std::ptr::addr_of!(linger).cast(),
                        std::mem::size_of::<libc::linger>() as libc::socklen_t,
                    );
                }
                return;
            }
            Ok(n) => {
                if stream.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return,
        }
    }
}

impl Drop for LxnetServers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

fn lxnet_source() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/linux_net/lxnet.c")
}

fn lines_of(output: &Output) -> String {
    text(&output.stdout)
}

/// Runs `lxnet` built with `compiler` on Linux and in the guest; their outputs
/// must be the same.
fn lxnet_matches_linux(platform: Platform, compiler: &str) {
    let root = Rootfs::new(&format!("lxnet-{compiler}-{}", platform.name()));
    let binary = compile_into(&root, compiler, &lxnet_source(), "lxnet", &[]);
    let ns = Netns::new();
    let _servers = LxnetServers::start(&ns);
    let on_linux = ns
        .command(&[binary.to_str().expect("utf-8 path"), "10.0.0.1"])
        .output()
        .expect("run lxnet on Linux");
    assert!(
        on_linux.status.success() && lines_of(&on_linux).ends_with("done\n"),
        "lxnet failed on Linux:\n{}{}",
        lines_of(&on_linux),
        text(&on_linux.stderr)
    );
    let in_guest = root
        .command(Some(&ns), platform, &[], "/lxnet", &["10.0.0.1"])
        .output()
        .expect("run lxnet in the guest");
    let (linux, guest) = (lines_of(&on_linux), lines_of(&in_guest));
    if linux != guest {
        let differences: Vec<String> = linux
            .lines()
            .zip(guest.lines().chain(std::iter::repeat("<missing>")))
            .filter(|(l, g)| l != g)
            .map(|(l, g)| format!("  Linux: {l}\n  guest: {g}"))
            .collect();
        panic!(
            "lxnet ({compiler}) differs from Linux:\n{}\nguest stderr:\n{}",
            differences.join("\n"),
            text(&in_guest.stderr)
        );
    }
    assert_eq!(
        in_guest.status.code(),
        Some(0),
        "{}",
        text(&in_guest.stderr)
    );
}

fn pipes_eventfds_epoll_and_sockets_behave_as_on_linux_with_glibc(platform: Platform) {
    if can_use_netns() {
        lxnet_matches_linux(platform, "gcc");
    }
}

fn pipes_eventfds_epoll_and_sockets_behave_as_on_linux_with_musl(platform: Platform) {
    if can_use_netns() {
        lxnet_matches_linux(platform, "musl-gcc");
    }
}

/// Debian's redis-server (dynamically linked), unmodified, from a root
/// `lightvm rootfs` made: redis-cli in the namespace sets and gets keys.
fn redis_answers_redis_cli(platform: Platform) {
    if !can_use_netns() {
        return;
    }
    let root = Rootfs::of_host_programs(
        &format!("redis-{}", platform.name()),
        &["/usr/bin/redis-server"],
        &[],
    );
    let ns = Netns::new();
    let _vm = start_guest(
        &ns,
        platform,
        &root,
        "/usr/bin/redis-server",
        &[
            "--bind",
            "0.0.0.0",
            "--port",
            "6379",
            "--protected-mode",
            "no",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
        ],
        "Ready to accept connections",
    );
    let cli = |args: &[&str]| {
        let mut all = vec!["redis-cli", "-h", GUEST_IP, "-p", "6379"];
        all.extend_from_slice(args);
        let output = ns.exec(&all);
        assert!(output.status.success(), "{args:?}: {output:?}");
        text(&output.stdout).trim().to_owned()
    };
    assert_eq!(cli(&["SET", "unikernel", "lightvm"]), "OK");
    assert_eq!(cli(&["GET", "unikernel"]), "lightvm");
    assert_eq!(cli(&["INCR", "counter"]), "1");
    assert_eq!(cli(&["INCR", "counter"]), "2");
    assert_eq!(cli(&["DBSIZE"]), "2");
}

lightvm_testkit::platform_tests!(
    lightvm_vmm::Platform;
    bench_udp_echo_answers_every_datagram,
    bench_tcp_server_echoes_one_and_fifty_connections,
    bench_tcp_server_serves_http_as_on_linux,
    busybox_nc_listens_and_prints_what_a_client_sends,
    busybox_nc_connects_and_prints_what_the_server_sends,
    iperf3_serves_both_directions,
    nginx_serves_files_with_sendfile_and_keep_alive,
    redis_answers_redis_cli,
    pipes_eventfds_epoll_and_sockets_behave_as_on_linux_with_glibc,
    pipes_eventfds_epoll_and_sockets_behave_as_on_linux_with_musl,
);
