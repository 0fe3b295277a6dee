//! A minimal HTTP/1.1 server: every request gets the same small body, and
//! connections stay open (keep-alive) until the client closes them or sends
//! `Connection: close`. Enough for curl, wrk and ab.
//!
//! `lightvm run httpd --mem 64M --net tap=NAME --cmdline "ip=10.0.0.2/24 [port=80]"`.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::vec::Vec;
use libos::net::smoltcp::iface::SocketHandle;
use libos::net::Net;
use libos::println;

libos::entry!(main);

const BODY: &str = "Hello from a lightvm unikernel!\n";
const BACKLOG: usize = 128;
const BUFFER: usize = 8 << 10;

/// A connection and the request bytes it has gathered so far.
struct Connection {
    handle: SocketHandle,
    request: Vec<u8>,
    closing: bool,
}

fn main() -> i32 {
    let mut net = match Net::from_cmdline() {
        Ok(net) => net,
        Err(e) => {
            println!("httpd: {e}");
            return 1;
        }
    };
    let port = libos::cmdline_arg("port")
        .and_then(|p| p.parse().ok())
        .unwrap_or(80);
    let mut listener = net.tcp_listen(port, BACKLOG, BUFFER, BUFFER);
    println!("httpd: serving http://{}:{port}/", net.address().address());
    // HTTP/1.1 keeps connections open by default; an HTTP/1.0 client (ab) asks for
    // it with `Connection: keep-alive` and must be told it got it.
    let response = make_response("");
    let response_keep_alive = make_response("Connection: keep-alive\r\n");
    let mut connections: Vec<Connection> = Vec::new();
    loop {
        net.wait();
        while let Some(handle) = net.accept(&mut listener) {
            connections.push(Connection {
                handle,
                request: Vec::new(),
                closing: false,
            });
        }
        connections.retain_mut(|conn| {
            let socket = net.tcp(conn.handle);
            let mut buf = [0u8; 2048];
            while let Ok(n) = socket.recv_slice(&mut buf) {
                if n == 0 {
                    break;
                }
                conn.request.extend_from_slice(&buf[..n]);
            }
            // Answer every complete request (pipelined ones too) while there is room.
            while let Some(end) = find(&conn.request, b"\r\n\r\n") {
                if socket.send_capacity() - socket.send_queue() < response_keep_alive.len() {
                    break;
                }
                let head = &conn.request[..end];
                let http10 = head
                    .split(|&b| b == b'\r')
                    .next()
                    .is_some_and(|line| line.ends_with(b"HTTP/1.0"));
                let keep_alive = contains_ignore_case(head, b"connection: keep-alive");
                if contains_ignore_case(head, b"connection: close") || (http10 && !keep_alive) {
                    conn.closing = true;
                }
                let reply = if http10 && keep_alive {
                    &response_keep_alive
                } else {
                    &response
                };
                let _ = socket.send_slice(reply);
                conn.request.drain(..end + 4);
            }
            if conn.request.len() > BUFFER {
                // Headers that never end: not a client worth keeping.
                socket.abort();
            }
            if (conn.closing || !socket.may_recv()) && socket.send_queue() == 0 && socket.is_open()
            {
                socket.close();
            }
            !net.reap(conn.handle)
        });
    }
}

fn make_response(extra_headers: &str) -> Vec<u8> {
    let mut response = Vec::new();
    let _ = core::fmt::write(
        &mut Bytes(&mut response),
        format_args!(
            "HTTP/1.1 200 OK\r\nServer: lightvm-httpd\r\nContent-Type: text/plain\r\n{extra_headers}Content-Length: {}\r\n\r\n{BODY}",
            BODY.len()
        ),
    );
    response
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn contains_ignore_case(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

struct Bytes<'a>(&'a mut Vec<u8>);

impl core::fmt::Write for Bytes<'_> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}
