//! End-to-end networking: unikernel servers on a tap in a private network namespace,
//! reached by real host clients (ping, curl, std sockets) in that namespace, on every
//! platform the host has.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream, UdpSocket};
use std::time::Duration;

use common::{assert_no_vmm_panic, can_use_netns, image, Netns, GUEST_IP};
use lightvm_vmm::Platform;

fn ping_reaches_the_guest(platform: Platform) {
    if !can_use_netns() {
        return;
    }
    let ns = Netns::new();
    let _vm = ns.start_vm(platform, &image("udp-echo"), "", "listening");
    let output = ns.exec(&["ping", "-c", "3", "-i", "0.2", "-W", "2", GUEST_IP]);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "ping failed:\n{text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(text.contains("3 received"), "{text}");
}

fn udp_echo_round_trips(platform: Platform) {
    if !can_use_netns() {
        return;
    }
    let ns = Netns::new();
    let _vm = ns.start_vm(platform, &image("udp-echo"), "", "listening");
    ns.run_inside(|| {
        let socket = UdpSocket::bind("10.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let mut buf = [0u8; 2048];
        for i in 0..200u32 {
            let message: Vec<u8> = (0..(i % 1400) + 1).map(|b| (b ^ i) as u8).collect();
            socket.send_to(&message, (GUEST_IP, 7)).unwrap();
            let (len, from) = socket.recv_from(&mut buf).expect("an echo");
            assert_eq!(from.ip().to_string(), GUEST_IP);
            assert_eq!(&buf[..len], &message[..], "datagram {i}");
        }
    });
}

fn echo_once(len: usize, seed: u8) -> bool {
    let mut stream = TcpStream::connect((GUEST_IP, 7)).expect("connect to tcp-echo");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let data: Vec<u8> = (0..len)
        .map(|i| (i as u8).wrapping_mul(seed) ^ seed)
        .collect();
    let mut writer = stream.try_clone().unwrap();
    let sent = data.clone();
    let sender = std::thread::spawn(move || {
        writer.write_all(&sent).unwrap();
        writer.shutdown(Shutdown::Write).unwrap();
    });
    let mut back = Vec::new();
    stream.read_to_end(&mut back).expect("read the echo");
    sender.join().unwrap();
    back == data
}

fn tcp_echo_round_trips(platform: Platform) {
    if !can_use_netns() {
        return;
    }
    let ns = Netns::new();
    let _vm = ns.start_vm(platform, &image("tcp-echo"), "", "listening");
    ns.run_inside(|| {
        for (len, seed) in [(1, 3), (1000, 5), (300_000, 7)] {
            assert!(echo_once(len, seed), "{len} bytes did not come back intact");
        }
    });
}

fn a_hundred_parallel_tcp_connections_all_get_their_bytes_back(platform: Platform) {
    if !can_use_netns() {
        return;
    }
    let ns = Netns::new();
    let _vm = ns.start_vm(platform, &image("tcp-echo"), "", "listening");
    let intact = ns.run_inside(|| {
        let clients: Vec<_> = (0..100)
            .map(|i| std::thread::spawn(move || echo_once(20_000 + i * 97, i as u8 | 1)))
            .collect();
        clients
            .into_iter()
            .map(|c| c.join().unwrap_or(false))
            .filter(|&ok| ok)
            .count()
    });
    assert_eq!(
        intact, 100,
        "only {intact} of 100 connections echoed intact"
    );
}

fn curl_gets_the_http_body_with_keep_alive(platform: Platform) {
    if !can_use_netns() {
        return;
    }
    let ns = Netns::new();
    let _vm = ns.start_vm(platform, &image("httpd"), "", "serving");
    let url = format!("http://{GUEST_IP}/");
    // Two requests on one connection: curl reuses it ("Re-using existing connection").
    let output = ns.exec(&["curl", "-sS", "-v", "--max-time", "10", &url, &url]);
    let body = String::from_utf8_lossy(&output.stdout);
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "curl failed:\n{log}");
    assert_eq!(body, "Hello from a lightvm unikernel!\n".repeat(2));
    assert!(log.contains("HTTP/1.1 200 OK"), "{log}");
    assert!(
        log.contains("Re-using existing connection") || log.contains("Reusing existing"),
        "the connection was not kept alive:\n{log}"
    );
}

fn sixty_four_mib_reach_the_sink_complete(platform: Platform) {
    if !can_use_netns() {
        return;
    }
    const TOTAL: usize = 64 << 20;
    let ns = Netns::new();
    let vm = ns.start_vm(platform, &image("sink"), "once", "listening");
    ns.run_inside(|| {
        let mut stream = TcpStream::connect((GUEST_IP, 9)).expect("connect to sink");
        let chunk = vec![0x5au8; 1 << 20];
        for _ in 0..TOTAL / chunk.len() {
            stream.write_all(&chunk).unwrap();
        }
        stream.shutdown(Shutdown::Write).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest);
    });
    let line = vm.wait_for("bytes in", Duration::from_secs(30));
    assert!(line.contains(&format!("sink: {TOTAL} bytes")), "{line}");
    let (code, output) = vm.wait(Duration::from_secs(10));
    assert_eq!(code, Some(0), "{output}");
}

fn broken_rings_stop_the_vm_with_a_clear_error(platform: Platform) {
    if !can_use_netns() {
        return;
    }
    let ns = Netns::new();
    for (mode, expected) in [
        ("index", "index out of range"),
        ("length", "lies outside the"),
        ("loop", "loops around"),
    ] {
        let output = ns
            .command(&[
                common::LIGHTVM,
                "run",
                "--platform",
                platform.name(),
                image("brokenring").to_str().unwrap(),
                "--mem",
                "16M",
                "--timeout",
                "10s",
                "--net",
                &format!("tap={}", common::TAP),
                "--cmdline",
                &format!("mode={mode}"),
            ])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(127), "mode {mode}:\n{stderr}");
        assert!(
            stderr.contains("broke the hypercall ABI"),
            "mode {mode}:\n{stderr}"
        );
        assert!(stderr.contains("net tx ring"), "mode {mode}:\n{stderr}");
        assert!(stderr.contains(expected), "mode {mode}:\n{stderr}");
        assert_no_vmm_panic(&stderr);
    }
    // The host side is intact: the tap is still there, up, and serves the next VM.
    let link = ns.exec(&["ip", "link", "show", common::TAP]);
    assert!(link.status.success());
    let _vm = ns.start_vm(platform, &image("udp-echo"), "", "listening");
    let ping = ns.exec(&["ping", "-c", "1", "-W", "2", GUEST_IP]);
    assert!(
        ping.status.success(),
        "the next VM on the same tap is unreachable"
    );
}

lightvm_testkit::platform_tests!(
    lightvm_vmm::Platform;
    ping_reaches_the_guest,
    udp_echo_round_trips,
    tcp_echo_round_trips,
    a_hundred_parallel_tcp_connections_all_get_their_bytes_back,
    curl_gets_the_http_body_with_keep_alive,
    sixty_four_mib_reach_the_sink_complete,
    broken_rings_stop_the_vm_with_a_clear_error,
);
