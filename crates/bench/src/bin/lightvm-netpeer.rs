//! The host-side half of the network benchmarks (`scripts/bench-net.sh`): the same
//! servers as the unikernels, as plain host processes, and the clients that measure
//! both. Standard library only, blocking sockets, a thread per connection.
//!
//! ```text
//! lightvm-netpeer udp-echo ADDR:PORT          UDP echo server
//! lightvm-netpeer sink ADDR:PORT              TCP discard server
//! lightvm-netpeer httpd ADDR:PORT             HTTP/1.1 keep-alive, the httpd guest's body
//! lightvm-netpeer udp-rtt ADDR:PORT N [SIZE]  N echo round trips: p50/p99 in µs
//! lightvm-netpeer tcp-send ADDR:PORT MIB      MIB MiB to a sink: MB/s (until it closes)
//! ```

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use lightvm_bench::Summary;

const BODY: &str = "Hello from a lightvm unikernel!\n";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).map(String::as_str).unwrap_or_else(|| usage());
    let result = match arg(0) {
        "udp-echo" => udp_echo(arg(1)),
        "sink" => serve_tcp(arg(1), sink),
        "httpd" => serve_tcp(arg(1), http),
        "udp-rtt" => udp_rtt(
            arg(1),
            number(arg(2)),
            args.get(3).map_or(64, |s| number(s)),
        ),
        "tcp-send" => tcp_send(arg(1), number(arg(2))),
        _ => usage(),
    };
    if let Err(error) = result {
        eprintln!("lightvm-netpeer: {error}");
        std::process::exit(1);
    }
}

/// Names the operation in an I/O error, so the one line printed says what failed.
fn context(what: String) -> impl FnOnce(io::Error) -> io::Error {
    move |e| io::Error::new(e.kind(), format!("{what}: {e}"))
}

fn usage() -> ! {
    eprintln!("usage: lightvm-netpeer udp-echo|sink|httpd ADDR:PORT | udp-rtt ADDR:PORT N [SIZE] | tcp-send ADDR:PORT MIB");
    std::process::exit(2)
}

fn number(text: &str) -> usize {
    text.parse().unwrap_or_else(|_| usage())
}

fn udp_echo(addr: &str) -> io::Result<()> {
    let socket = UdpSocket::bind(addr).map_err(context(format!("bind {addr}")))?;
    let mut buf = [0u8; 65536];
    loop {
        if let Ok((len, from)) = socket.recv_from(&mut buf) {
            let _ = socket.send_to(&buf[..len], from);
        }
    }
}

fn serve_tcp(addr: &str, handler: fn(TcpStream)) -> io::Result<()> {
    let listener = TcpListener::bind(addr).map_err(context(format!("bind {addr}")))?;
    for stream in listener.incoming().flatten() {
        let _ = stream.set_nodelay(true);
        std::thread::spawn(move || handler(stream));
    }
    Ok(())
}

fn sink(mut stream: TcpStream) {
    let mut buf = vec![0u8; 256 << 10];
    let started = Instant::now();
    let mut total = 0u64;
    while let Ok(n) = stream.read(&mut buf) {
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "sink: {total} bytes in {secs:.3} s ({:.1} MB/s)",
        total as f64 / secs / 1e6
    );
}

fn http(mut stream: TcpStream) {
    let response = format!(
        "HTTP/1.1 200 OK\r\nServer: lightvm-netpeer\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{BODY}",
        BODY.len()
    );
    let mut request = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        request.extend_from_slice(&buf[..n]);
        let mut out = Vec::new();
        while let Some(end) = request.windows(4).position(|w| w == b"\r\n\r\n") {
            out.extend_from_slice(response.as_bytes());
            request.drain(..end + 4);
        }
        if !out.is_empty() && stream.write_all(&out).is_err() {
            return;
        }
    }
}

fn udp_rtt(addr: &str, count: usize, size: usize) -> io::Result<()> {
    let socket = UdpSocket::bind("0.0.0.0:0").map_err(context("bind".to_owned()))?;
    socket
        .connect(addr)
        .map_err(context(format!("connect {addr}")))?;
    socket.set_read_timeout(Some(Duration::from_secs(1)))?;
    let message = vec![0x42u8; size];
    let mut buf = vec![0u8; 65536];
    let mut samples = Vec::with_capacity(count);
    let mut lost = 0;
    // Warm-up: ARP, caches.
    for _ in 0..100 {
        let _ = socket.send(&message);
        let _ = socket.recv(&mut buf);
    }
    for _ in 0..count {
        let start = Instant::now();
        socket
            .send(&message)
            .map_err(context(format!("send to {addr}")))?;
        match socket.recv(&mut buf) {
            Ok(_) => samples.push(start.elapsed().as_secs_f64() * 1e6),
            Err(_) => lost += 1,
        }
    }
    let s = Summary::of(&samples)
        .ok_or_else(|| io::Error::other(format!("no echo came back from {addr}")))?;
    println!(
        "udp-rtt {addr}: {} round trips of {size} B, lost {lost}: p50 {:.1} us, p99 {:.1} us, mean {:.1} us",
        s.count, s.median, s.p99, s.mean
    );
    Ok(())
}

fn tcp_send(addr: &str, mib: usize) -> io::Result<()> {
    let chunk = vec![0x5au8; 1 << 20];
    let started = Instant::now();
    let mut stream = TcpStream::connect(addr).map_err(context(format!("connect {addr}")))?;
    for _ in 0..mib {
        stream
            .write_all(&chunk)
            .map_err(context(format!("send to {addr}")))?;
    }
    stream.shutdown(Shutdown::Write)?;
    // The sink closes once it has everything: that is when the transfer is done.
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest);
    let secs = started.elapsed().as_secs_f64();
    let bytes = (mib << 20) as f64;
    println!(
        "tcp-send {addr}: {mib} MiB in {secs:.3} s: {:.1} MB/s ({:.2} Gbit/s)",
        bytes / secs / 1e6,
        bytes * 8.0 / secs / 1e9
    );
    Ok(())
}
