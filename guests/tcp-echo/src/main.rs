//! TCP echo (RFC 862) for many connections at once: every byte received on a
//! connection goes back on it; a connection closes when its peer closes.
//!
//! `lightvm run tcp-echo --mem 64M --net tap=NAME --cmdline "ip=10.0.0.2/24 [port=7]"`.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::vec::Vec;
use libos::net::smoltcp::iface::SocketHandle;
use libos::net::Net;
use libos::println;

libos::entry!(main);

/// Handshakes that may be in flight at once.
const BACKLOG: usize = 128;
/// Socket buffer per direction and connection.
const BUFFER: usize = 16 << 10;

fn main() -> i32 {
    let mut net = match Net::from_cmdline() {
        Ok(net) => net,
        Err(e) => {
            println!("tcp-echo: {e}");
            return 1;
        }
    };
    let port = libos::cmdline_arg("port")
        .and_then(|p| p.parse().ok())
        .unwrap_or(7);
    let mut listener = net.tcp_listen(port, BACKLOG, BUFFER, BUFFER);
    println!("tcp-echo: listening on {}:{port}", net.address().address());
    let mut connections: Vec<SocketHandle> = Vec::new();
    loop {
        net.wait();
        while let Some(handle) = net.accept(&mut listener) {
            connections.push(handle);
        }
        connections.retain(|&handle| {
            let socket = net.tcp(handle);
            // Move as much as fits from the receive buffer to the send buffer.
            while socket.can_recv() && socket.can_send() {
                let mut chunk = [0u8; 4096];
                let room = socket.send_capacity() - socket.send_queue();
                let take = room.min(chunk.len());
                match socket.recv_slice(&mut chunk[..take]) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let _ = socket.send_slice(&chunk[..n]);
                    }
                }
            }
            if !socket.may_recv() && socket.send_queue() == 0 && socket.is_open() {
                socket.close();
            }
            !net.reap(handle)
        });
    }
}
