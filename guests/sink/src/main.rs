//! TCP discard (RFC 863): reads and drops everything; when a connection closes it
//! prints `sink: N bytes in T s (R MB/s)`. With `once`, the VM exits after the first
//! connection (status 0).
//!
//! `lightvm run sink --mem 64M --net tap=NAME --cmdline "ip=10.0.0.2/24 [port=9] [once]"`.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::vec::Vec;
use core::time::Duration;
use libos::net::smoltcp::iface::SocketHandle;
use libos::net::Net;
use libos::println;

libos::entry!(main);

const BUFFER: usize = 256 << 10;

struct Connection {
    handle: SocketHandle,
    bytes: u64,
    started: Duration,
    reported: bool,
}

fn main() -> i32 {
    let mut net = match Net::from_cmdline() {
        Ok(net) => net,
        Err(e) => {
            println!("sink: {e}");
            return 1;
        }
    };
    let port = libos::cmdline_arg("port")
        .and_then(|p| p.parse().ok())
        .unwrap_or(9);
    let once = libos::cmdline_arg("once").is_some();
    let mut listener = net.tcp_listen(port, 4, BUFFER, 1024);
    println!("sink: listening on {}:{port}", net.address().address());
    let mut connections: Vec<Connection> = Vec::new();
    let mut finished = false;
    loop {
        net.wait();
        while let Some(handle) = net.accept(&mut listener) {
            connections.push(Connection {
                handle,
                bytes: 0,
                started: libos::time::monotonic(),
                reported: false,
            });
        }
        connections.retain_mut(|conn| {
            let socket = net.tcp(conn.handle);
            while let Ok(n) = socket.recv(|data| (data.len(), data.len())) {
                if n == 0 {
                    break;
                }
                conn.bytes += n as u64;
            }
            if !socket.may_recv() && !conn.reported {
                conn.reported = true;
                let secs = (libos::time::monotonic() - conn.started).as_secs_f64();
                let rate = if secs > 0.0 {
                    conn.bytes as f64 / secs / 1e6
                } else {
                    0.0
                };
                println!(
                    "sink: {} bytes in {:.3} s ({:.1} MB/s)",
                    conn.bytes, secs, rate
                );
                socket.close();
                finished = true;
            }
            !net.reap(conn.handle)
        });
        if once && finished && connections.is_empty() {
            return 0;
        }
    }
}
