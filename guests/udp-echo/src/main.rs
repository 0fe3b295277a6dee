//! UDP echo (RFC 862): every datagram to the port goes back to its sender.
//!
//! `lightvm run udp-echo --net tap=NAME --cmdline "ip=10.0.0.2/24 [port=7]"`.
#![no_std]
#![no_main]

use libos::net::Net;
use libos::println;

libos::entry!(main);

fn main() -> i32 {
    let mut net = match Net::from_cmdline() {
        Ok(net) => net,
        Err(e) => {
            println!("udp-echo: {e}");
            return 1;
        }
    };
    let port = libos::cmdline_arg("port")
        .and_then(|p| p.parse().ok())
        .unwrap_or(7);
    let socket = net.udp_bind(port, 256 << 10);
    println!("udp-echo: listening on {}:{port}", net.address().address());
    let mut buf = [0u8; 65536];
    loop {
        net.wait();
        let udp = net.udp(socket);
        while let Ok((len, meta)) = udp.recv_slice(&mut buf) {
            // A full transmit buffer drops the echo, as a UDP server may.
            let _ = udp.send_slice(&buf[..len], meta.endpoint);
        }
    }
}
