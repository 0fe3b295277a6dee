//! Networking: a TCP/IP stack (smoltcp) on the VM's network device.
//!
//! ```ignore
//! let mut net = libos::net::Net::from_cmdline().expect("network");
//! let udp = net.udp_bind(7, 64 << 10);
//! loop {
//!     net.wait(); // one VM exit: sends what is queued, sleeps until a frame arrives
//!     let socket = net.udp(udp);
//!     while let Ok((len, from)) = socket.recv_slice(&mut buf) {
//!         let _ = socket.send_slice(&buf[..len], from);
//!     }
//! }
//! ```
//!
//! The address comes from the command line: `ip=10.0.0.2/24` (and optionally
//! `gw=10.0.0.1`), or `dhcp` to ask a DHCP server. The interface answers ARP and ICMP
//! echo (ping) by itself in every application.
//!
//! # Costs
//!
//! The device is two rings in guest memory (`lightvm_abi::devices`): frames are
//! written into transmit buffers and read from receive buffers without a VM exit.
//! [`Net::wait`] makes exactly one exit (the `poll` hypercall), in which the VMM
//! sends every queued frame, delivers every frame that has arrived and, if there
//! was none, sleeps until one does or smoltcp's next timer is due. A full transmit
//! ring is flushed with one `notify` exit. So the exits are per batch, not per
//! packet; what is left per packet is one copy each way between smoltcp's socket
//! buffers and the ring buffers, and one `read`/`writev` on the tap in the VMM.

use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

pub use smoltcp;
use smoltcp::iface::{Config, Interface, PollIngressSingleResult, SocketHandle, SocketSet};
use smoltcp::phy::{self, DeviceCapabilities, Medium};
use smoltcp::socket::{dhcpv4, icmp, tcp, udp};
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, IpCidr, IpEndpoint, IpListenEndpoint, Ipv4Address, Ipv4Cidr};

use crate::abi::devices::{NetDesc, NetSetupArgs, NET_DESC_MORE};
use crate::abi::Hypercall;
use crate::hypercall;
use crate::ring::GuestRing;

/// Slots in each ring.
const RING_SIZE: u32 = 256;
/// Bytes of each frame buffer (a 1514-byte frame fits, with room to spare).
const BUFFER: usize = 2048;

/// Why the network could not be brought up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetError {
    /// The VM has no network device (`lightvm run` without `--net`).
    NoDevice,
    /// The command line has neither `ip=ADDR/PREFIX` nor `dhcp`.
    NoAddress,
    /// A command-line value could not be read.
    BadArgument(&'static str),
    /// DHCP found no server in time.
    DhcpTimeout,
}

impl fmt::Display for NetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetError::NoDevice => {
                f.write_str("this VM has no network device (run it with --net tap=NAME)")
            }
            NetError::NoAddress => f.write_str(
                "no address: put ip=ADDR/PREFIX (and gw=ADDR) or dhcp on the command line",
            ),
            NetError::BadArgument(key) => write!(f, "cannot read {key}= on the command line"),
            NetError::DhcpTimeout => f.write_str("no DHCP server answered"),
        }
    }
}

/// The receive side of the device: buffers posted to the VMM, frames coming back.
struct RxQueue {
    ring: GuestRing<NetDesc>,
    buffers: Vec<u8>,
    /// Next entry to hand to smoltcp.
    next: u32,
}

/// The transmit side: frames written into buffers and published.
struct TxQueue {
    ring: GuestRing<NetDesc>,
    buffers: Vec<u8>,
}

/// The VM's network device, as a smoltcp [`phy::Device`].
pub struct NetDevice {
    rx: RxQueue,
    tx: TxQueue,
    mac: [u8; 6],
    mtu: usize,
}

impl NetDevice {
    /// Attaches the rings; `None` if the VM has no network device. Call once.
    pub fn open() -> Option<NetDevice> {
        let mut rx = RxQueue {
            ring: GuestRing::new(RING_SIZE),
            buffers: vec![0; RING_SIZE as usize * BUFFER],
            next: 0,
        };
        let tx = TxQueue {
            ring: GuestRing::new(RING_SIZE),
            buffers: vec![0; RING_SIZE as usize * BUFFER],
        };
        let mut args = NetSetupArgs {
            rx_ring: rx.ring.addr(),
            tx_ring: tx.ring.addr(),
            rx_size: RING_SIZE,
            tx_size: RING_SIZE,
            ..Default::default()
        };
        // SAFETY: `args` is a live NetSetupArgs; the rings it names are allocated and
        // never freed (the device lives for the rest of the VM, see `GuestRing`).
        unsafe { hypercall::raw(Hypercall::NetSetup, &mut args) };
        if args.present != 1 {
            return None;
        }
        for i in 0..RING_SIZE {
            rx.post(i);
        }
        rx.ring.publish(RING_SIZE);
        let mut mac = [0; 6];
        mac.copy_from_slice(&args.mac[..6]);
        Some(NetDevice {
            rx,
            tx,
            mac,
            mtu: args.mtu as usize,
        })
    }

    /// The MAC address the VMM assigned.
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// Whether frames the VMM delivered wait to be read.
    pub fn rx_pending(&self) -> bool {
        self.rx.next != self.rx.ring.used()
    }

    /// Whether frames wait in the transmit ring for the next exit.
    pub fn tx_pending(&self) -> bool {
        self.tx.ring.avail() != self.tx.ring.used()
    }

    /// Hands the transmit ring to the VMM now (one `notify` exit).
    pub fn flush(&mut self) {
        hypercall::notify();
    }

    /// Publishes raw descriptors on the transmit ring, as given, and notifies: for
    /// the test guest that shows the VMM refusing a broken ring, nothing else.
    #[doc(hidden)]
    pub fn raw_tx_for_tests(&mut self, descriptors: &[NetDesc], avail: u32) {
        let first = self.tx.ring.avail();
        for (i, desc) in descriptors.iter().enumerate() {
            self.tx.ring.write(first.wrapping_add(i as u32), *desc);
        }
        self.tx.ring.force_avail(first.wrapping_add(avail));
        hypercall::notify();
    }
}

/// [`NET_DESC_MORE`], re-exported for the broken-ring test guest.
#[doc(hidden)]
pub const DESC_MORE: u16 = NET_DESC_MORE;

impl RxQueue {
    fn buffer_addr(&self, index: u32) -> u64 {
        let slot = (index & (RING_SIZE - 1)) as usize;
        self.buffers.as_ptr() as u64 + (slot * BUFFER) as u64
    }

    /// Writes the empty-buffer descriptor of entry `index` (not yet published).
    fn post(&mut self, index: u32) {
        let desc = NetDesc {
            addr: self.buffer_addr(index),
            len: BUFFER as u32,
            flags: 0,
            reserved: 0,
        };
        self.ring.write(index, desc);
    }
}

impl TxQueue {
    fn free(&self) -> u32 {
        RING_SIZE - self.ring.avail().wrapping_sub(self.ring.used())
    }
}

/// A received frame, lent to smoltcp.
pub struct RxToken<'a> {
    rx: &'a mut RxQueue,
}

/// A transmit slot, lent to smoltcp.
pub struct TxToken<'a> {
    tx: &'a mut TxQueue,
}

impl phy::RxToken for RxToken<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        let index = self.rx.next;
        let desc = self.rx.ring.read(index);
        let slot = (index & (RING_SIZE - 1)) as usize * BUFFER;
        let len = (desc.len as usize).min(BUFFER);
        let result = f(&self.rx.buffers[slot..slot + len]);
        // Give the buffer back: it is reposted in the same slot, one lap later.
        self.rx.next = index.wrapping_add(1);
        self.rx.post(index);
        self.rx.ring.publish(1);
        result
    }
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let index = self.tx.ring.avail();
        let slot = (index & (RING_SIZE - 1)) as usize * BUFFER;
        let len = len.min(BUFFER);
        let result = f(&mut self.tx.buffers[slot..slot + len]);
        let desc = NetDesc {
            addr: self.tx.buffers.as_ptr() as u64 + slot as u64,
            len: len as u32,
            flags: 0,
            reserved: 0,
        };
        self.tx.ring.write(index, desc);
        self.tx.ring.publish(1);
        result
    }
}

impl phy::Device for NetDevice {
    type RxToken<'a> = RxToken<'a>;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, _now: Instant) -> Option<(RxToken<'_>, TxToken<'_>)> {
        if !self.rx_pending() {
            return None;
        }
        if self.tx.free() == 0 {
            // A reply needs a slot: send what is queued first (one exit).
            self.flush();
        }
        Some((RxToken { rx: &mut self.rx }, TxToken { tx: &mut self.tx }))
    }

    fn transmit(&mut self, _now: Instant) -> Option<TxToken<'_>> {
        if self.tx.free() == 0 {
            self.flush();
            if self.tx.free() == 0 {
                return None;
            }
        }
        Some(TxToken { tx: &mut self.tx })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = (self.mtu + 14).min(BUFFER);
        caps.max_burst_size = Some(RING_SIZE as usize);
        caps
    }
}

/// smoltcp's clock: the guest's TSC clock.
pub fn now() -> Instant {
    Instant::from_micros(crate::time::monotonic().as_micros() as i64)
}

/// A listening TCP port: a pool of sockets in LISTEN state, so that up to `backlog`
/// connections can be in their handshake at once (smoltcp has no accept queue).
pub struct TcpListener {
    port: u16,
    listening: Vec<SocketHandle>,
    rx_buffer: usize,
    tx_buffer: usize,
}

impl TcpListener {
    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }
}

/// What [`Net::set_ingress_hook`] runs.
pub type IngressHook = fn(&mut SocketSet<'static>);

/// The TCP/IP stack: interface, device and sockets.
pub struct Net {
    iface: Interface,
    device: NetDevice,
    sockets: SocketSet<'static>,
    address: Ipv4Cidr,
    ingress_hook: Option<IngressHook>,
}

impl Net {
    /// Brings the network up as the command line says: `ip=ADDR/PREFIX [gw=ADDR]`,
    /// or `dhcp` (which waits up to 10 s for a lease).
    pub fn from_cmdline() -> Result<Net, NetError> {
        let device = NetDevice::open().ok_or(NetError::NoDevice)?;
        if crate::cmdline_arg("dhcp").is_some() && crate::cmdline_arg("ip").is_none() {
            return Self::dhcp(device);
        }
        let ip = crate::cmdline_arg("ip").ok_or(NetError::NoAddress)?;
        let address = parse_cidr(ip).ok_or(NetError::BadArgument("ip"))?;
        let gateway = match crate::cmdline_arg("gw") {
            Some(text) => Some(text.parse().map_err(|_| NetError::BadArgument("gw"))?),
            None => None,
        };
        Ok(Self::with_address(device, address, gateway))
    }

    /// The stack on `device` with a static address and an optional default route.
    pub fn with_address(
        mut device: NetDevice,
        address: Ipv4Cidr,
        gateway: Option<Ipv4Address>,
    ) -> Net {
        let mac = device.mac();
        let mut config = Config::new(EthernetAddress(mac).into());
        config.random_seed = crate::time::rdtsc()
            ^ u64::from_le_bytes([mac[0], mac[1], mac[2], mac[3], mac[4], mac[5], 0, 0]);
        let mut iface = Interface::new(config, &mut device, now());
        iface.update_ip_addrs(|addrs| {
            let _ = addrs.push(IpCidr::Ipv4(address));
        });
        if let Some(gw) = gateway {
            let _ = iface.routes_mut().add_default_ipv4_route(gw);
        }
        Net {
            iface,
            device,
            sockets: SocketSet::new(Vec::new()),
            address,
            ingress_hook: None,
        }
    }

    fn dhcp(device: NetDevice) -> Result<Net, NetError> {
        let unspecified = Ipv4Cidr::new(Ipv4Address::UNSPECIFIED, 0);
        let mut net = Self::with_address(device, unspecified, None);
        let handle = net.sockets.add(dhcpv4::Socket::new());
        let deadline = crate::time::monotonic() + core::time::Duration::from_secs(10);
        while crate::time::monotonic() < deadline {
            net.wait();
            if let Some(dhcpv4::Event::Configured(config)) =
                net.sockets.get_mut::<dhcpv4::Socket>(handle).poll()
            {
                net.address = config.address;
                net.iface.update_ip_addrs(|addrs| {
                    addrs.clear();
                    let _ = addrs.push(IpCidr::Ipv4(config.address));
                });
                if let Some(router) = config.router {
                    let _ = net.iface.routes_mut().add_default_ipv4_route(router);
                }
                // Leases are not renewed: a unikernel's life is usually shorter.
                net.sockets.remove(handle);
                return Ok(net);
            }
        }
        Err(NetError::DhcpTimeout)
    }

    /// The interface's address.
    pub fn address(&self) -> Ipv4Cidr {
        self.address
    }

    /// Runs the stack once without leaving the VM: reads the frames the VMM has
    /// delivered, runs the sockets' timers, queues what they have to send.
    pub fn poll(&mut self) {
        let Some(hook) = self.ingress_hook else {
            self.iface.poll(now(), &mut self.device, &mut self.sockets);
            return;
        };
        let now = now();
        self.iface.poll_maintenance(now);
        loop {
            match self
                .iface
                .poll_ingress_single(now, &mut self.device, &mut self.sockets)
            {
                PollIngressSingleResult::None => break,
                PollIngressSingleResult::PacketProcessed => {}
                PollIngressSingleResult::SocketStateChanged => hook(&mut self.sockets),
            }
        }
        while self
            .iface
            .poll_egress(now, &mut self.device, &mut self.sockets)
            != smoltcp::iface::PollResult::None
        {}
    }

    /// Runs `hook` after each received frame that changed a socket's state,
    /// before the next frame is read: a listener keeps a pool of LISTEN sockets
    /// (smoltcp has no accept queue) and can refill it between the SYNs of a
    /// burst, which would otherwise find none and be reset.
    pub fn set_ingress_hook(&mut self, hook: Option<IngressHook>) {
        self.ingress_hook = hook;
    }

    /// Runs the stack, then makes **one** VM exit (the `poll` hypercall) in which the
    /// VMM sends the queued frames and, unless frames are already waiting, blocks
    /// until one arrives or smoltcp's next timer is due; then runs the stack on what
    /// arrived. The loop of a server is `loop { net.wait(); /* serve sockets */ }`.
    pub fn wait(&mut self) {
        self.wait_at_most(None);
    }

    /// [`wait`](Self::wait), blocking no longer than `limit` (`None`: as long as
    /// the stack has nothing to do): for a guest that also waits for a clock.
    pub fn wait_at_most(&mut self, limit: Option<core::time::Duration>) {
        self.poll();
        let limit_ns = limit.map_or(u64::MAX, |limit| {
            u64::try_from(limit.as_nanos()).unwrap_or(u64::MAX)
        });
        let timeout_ns = if self.device.rx_pending() {
            0
        } else {
            match self.iface.poll_delay(now(), &self.sockets) {
                Some(delay) => delay.total_micros().saturating_mul(1000),
                None => u64::MAX,
            }
            .min(limit_ns)
        };
        if timeout_ns == 0 && !self.device.tx_pending() {
            // Nothing to send and the stack wants to run again at once.
            self.poll();
            return;
        }
        hypercall::poll(timeout_ns);
        self.poll();
    }

    /// Sends whatever the stack has queued now (one `notify` exit if anything is).
    pub fn flush(&mut self) {
        self.poll();
        if self.device.tx_pending() {
            self.device.flush();
        }
    }

    /// The socket set, for what the helpers below do not cover.
    pub fn sockets(&mut self) -> &mut SocketSet<'static> {
        &mut self.sockets
    }

    /// The underlying device.
    pub fn device(&mut self) -> &mut NetDevice {
        &mut self.device
    }

    /// A UDP socket bound to `port`, with `buffer` bytes each way.
    pub fn udp_bind(&mut self, port: u16, buffer: usize) -> SocketHandle {
        let packets = (buffer / 64).max(4);
        let rx = udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; packets], vec![0; buffer]);
        let tx = udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; packets], vec![0; buffer]);
        let mut socket = udp::Socket::new(rx, tx);
        // Binding a fresh socket to a non-zero port cannot fail.
        let _ = socket.bind(port);
        self.sockets.add(socket)
    }

    /// The UDP socket `handle`.
    pub fn udp(&mut self, handle: SocketHandle) -> &mut udp::Socket<'static> {
        self.sockets.get_mut(handle)
    }

    /// An ICMP socket (for applications that ping; echo replies need none).
    pub fn icmp_socket(&mut self, buffer: usize) -> SocketHandle {
        let rx = icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; 8], vec![0; buffer]);
        let tx = icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; 8], vec![0; buffer]);
        self.sockets.add(icmp::Socket::new(rx, tx))
    }

    /// Listens on TCP `port` with room for `backlog` simultaneous handshakes; each
    /// connection gets `rx_buffer` and `tx_buffer` bytes of socket buffers.
    pub fn tcp_listen(
        &mut self,
        port: u16,
        backlog: usize,
        rx_buffer: usize,
        tx_buffer: usize,
    ) -> TcpListener {
        let mut listener = TcpListener {
            port,
            listening: Vec::new(),
            rx_buffer,
            tx_buffer,
        };
        for _ in 0..backlog.max(1) {
            let handle = self.new_listening_socket(&listener);
            listener.listening.push(handle);
        }
        listener
    }

    fn new_listening_socket(&mut self, listener: &TcpListener) -> SocketHandle {
        let rx = tcp::SocketBuffer::new(vec![0; listener.rx_buffer]);
        let tx = tcp::SocketBuffer::new(vec![0; listener.tx_buffer]);
        let mut socket = tcp::Socket::new(rx, tx);
        socket.set_nagle_enabled(false);
        // A fresh socket on a non-zero port always listens.
        let _ = socket.listen(IpListenEndpoint::from(listener.port));
        self.sockets.add(socket)
    }

    /// The next connection that completed its handshake on the listener, if any. A
    /// fresh listening socket takes its place in the pool.
    pub fn accept(&mut self, listener: &mut TcpListener) -> Option<SocketHandle> {
        let position = listener.listening.iter().position(|&handle| {
            let socket = self.sockets.get::<tcp::Socket>(handle);
            !matches!(socket.state(), tcp::State::Listen | tcp::State::SynReceived)
        })?;
        let handle = listener.listening.swap_remove(position);
        let replacement = self.new_listening_socket(listener);
        listener.listening.push(replacement);
        Some(handle)
    }

    /// Starts connecting TCP socket `handle` from `local` (a non-zero port; the
    /// interface's address when `local` names none) to `remote`: it sends its
    /// SYN at the next [`poll`](Self::poll).
    pub fn tcp_connect(
        &mut self,
        handle: SocketHandle,
        remote: IpEndpoint,
        local: IpListenEndpoint,
    ) -> Result<(), tcp::ConnectError> {
        let socket = self.sockets.get_mut::<tcp::Socket>(handle);
        socket.connect(self.iface.context(), remote, local)
    }

    /// The largest IP packet the device sends (its MTU).
    pub fn mtu(&self) -> usize {
        self.device.mtu
    }

    /// The TCP socket `handle`.
    pub fn tcp(&mut self, handle: SocketHandle) -> &mut tcp::Socket<'static> {
        self.sockets.get_mut(handle)
    }

    /// Frees `handle` if its connection is over (closed, or in TIME-WAIT, which a
    /// server need not sit out); returns whether it did.
    pub fn reap(&mut self, handle: SocketHandle) -> bool {
        let state = self.sockets.get::<tcp::Socket>(handle).state();
        if matches!(state, tcp::State::Closed | tcp::State::TimeWait) {
            self.sockets.remove(handle);
            true
        } else {
            false
        }
    }
}

/// Reads `a.b.c.d/prefix`.
fn parse_cidr(text: &str) -> Option<Ipv4Cidr> {
    let (addr, prefix) = text.split_once('/')?;
    let addr: Ipv4Address = addr.parse().ok()?;
    let prefix: u8 = prefix.parse().ok()?;
    (prefix <= 32).then(|| Ipv4Cidr::new(addr, prefix))
}
