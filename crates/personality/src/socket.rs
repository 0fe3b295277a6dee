//! Sockets with BSD semantics: IPv4 TCP and UDP over the VM's smoltcp stack
//! ([`crate::net`]), and `AF_UNIX` stream pairs (`socketpair`) as two pipes.
//!
//! What the personality adds to smoltcp:
//!
//! - **Ports.** smoltcp does not reserve ports: `bind` does, here (EADDRINUSE,
//!   `SO_REUSEADDR` and `SO_REUSEPORT` as Linux decides them, ephemeral ports
//!   from 32768–60999 for port 0 and for unbound clients).
//! - **A listen backlog.** smoltcp has no accept queue: one socket in LISTEN
//!   takes one connection. A listening socket here is a [`Listener`]: a few
//!   LISTEN sockets, refilled after every received frame (the stack's ingress
//!   hook) so that a burst of SYNs finds them, the handshakes in progress, and a
//!   queue of established connections in arrival order; together at most the
//!   backlog.
//! - **Errors and end of file.** A reset becomes ECONNRESET once (then end of
//!   file), a refused connect ECONNREFUSED, a peer's FIN end of file; `SO_ERROR`
//!   reports and clears the pending error.
//! - **Closing.** `close` sends a FIN (an RST when unread data remains or
//!   `SO_LINGER` says 0), and the smoltcp socket stays, with its port, until its
//!   connection is over (at most a minute), then is freed.
//!
//! There is no loopback: smoltcp on one tap cannot reach its own address, so a
//! connection to 127.0.0.0/8 or to the guest's own address is refused (said in
//! the trace), and a datagram to one is dropped. UDP datagrams larger than the
//! MTU are refused with EMSGSIZE (the stack does not fragment). `AF_UNIX`
//! sockets exist (`socket` works, `connect` reports ENOENT or ECONNREFUSED, as
//! when nothing listens), but one cannot be bound to a path (EAFNOSUPPORT).

use alloc::collections::{BTreeMap, VecDeque};
use alloc::rc::{Rc, Weak};
use alloc::vec;
use alloc::vec::Vec;
use core::cell::{RefCell, UnsafeCell};
use core::sync::atomic::{AtomicU64, Ordering};
use core::time::Duration;

use libos::net::smoltcp::iface::{SocketHandle, SocketSet};
use libos::net::smoltcp::socket::{tcp, udp};
use libos::net::smoltcp::time::Duration as NetDuration;
use libos::net::smoltcp::wire::{IpAddress, IpEndpoint, IpListenEndpoint, Ipv4Address};
use libos::net::Net;

use crate::errno::{
    Errno, EACCES, EADDRINUSE, EADDRNOTAVAIL, EAFNOSUPPORT, EAGAIN, EALREADY, ECONNABORTED,
    ECONNREFUSED, ECONNRESET, EDESTADDRREQ, EDOM, EINPROGRESS, EINVAL, EISCONN, EMSGSIZE,
    ENETUNREACH, ENOBUFS, ENOENT, ENOPROTOOPT, ENOTCONN, EOPNOTSUPP, EPIPE, EPROTONOSUPPORT,
    ESOCKTNOSUPPORT, ETIMEDOUT,
};
use crate::objects::{
    self, trace_note, Global, Ready, Shared, POLLERR, POLLHUP, POLLRDHUP, READABLE, WRITABLE,
};
use crate::pipe::Pipe;

/// `AF_UNSPEC`.
pub const AF_UNSPEC: u16 = 0;
/// `AF_UNIX`.
pub const AF_UNIX: u16 = 1;
/// `AF_INET`.
pub const AF_INET: u16 = 2;
/// `AF_INET6`.
pub const AF_INET6: u16 = 10;

/// `SOCK_STREAM`.
pub const SOCK_STREAM: u32 = 1;
/// `SOCK_DGRAM`.
pub const SOCK_DGRAM: u32 = 2;

/// `MSG_OOB`.
pub const MSG_OOB: u32 = 0x1;
/// `MSG_PEEK`.
pub const MSG_PEEK: u32 = 0x2;
/// `MSG_TRUNC`.
pub const MSG_TRUNC: u32 = 0x20;
/// `MSG_DONTWAIT`.
pub const MSG_DONTWAIT: u32 = 0x40;
/// `MSG_WAITALL`.
pub const MSG_WAITALL: u32 = 0x100;
/// `MSG_ERRQUEUE`.
pub const MSG_ERRQUEUE: u32 = 0x2000;
/// `MSG_NOSIGNAL`.
pub const MSG_NOSIGNAL: u32 = 0x4000;

const SOL_SOCKET: u32 = 1;
const IPPROTO_IP: u32 = 0;
const IPPROTO_TCP: u32 = 6;
const IPPROTO_UDP: u32 = 17;
const IPPROTO_IPV6: u32 = 41;

/// Bytes of a TCP socket's buffers each way unless `SO_RCVBUF`/`SO_SNDBUF`
/// say otherwise (Linux reports twice what it uses: so does `getsockopt` here).
const TCP_BUFFER: usize = 64 << 10;
/// Bytes of a UDP socket's buffers each way by default.
const UDP_BUFFER: usize = 64 << 10;
/// Bounds of a socket buffer.
const BUFFER_MIN: usize = 2 << 10;
/// See [`BUFFER_MIN`].
const BUFFER_MAX: usize = 1 << 20;
/// Most connections a listener keeps (handshakes plus queue): `listen`'s
/// backlog is clamped to `1..=BACKLOG_MAX`.
pub const BACKLOG_MAX: usize = 1024;
/// LISTEN sockets a listener keeps ready for the next SYNs.
const LISTEN_SPARE: usize = 2;
/// How long a connect may take before ETIMEDOUT.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(75);
/// How long a handshake may wait for the client's ACK.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a closed connection may take to finish before it is dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the program's end waits for its connections' last bytes and FINs.
const EXIT_LINGER: Duration = Duration::from_secs(2);
/// The first and last ephemeral port (Linux's `ip_local_port_range`).
const EPHEMERAL: (u16, u16) = (32768, 60999);
/// The largest UDP payload IPv4 can carry.
const UDP_MAX: usize = 65507;

/// An IPv4 address and port.
pub type Addr = (Ipv4Address, u16);

/// What a socket carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Proto {
    /// TCP (`SOCK_STREAM`).
    Tcp,
    /// UDP (`SOCK_DGRAM`).
    Udp,
}

/// What `setsockopt` set.
#[derive(Debug, Clone)]
pub struct Options {
    reuseaddr: bool,
    reuseport: bool,
    keepalive: bool,
    nodelay: bool,
    /// `TCP_CORK`: hold partial segments (Nagle on, whatever `TCP_NODELAY`
    /// says) until the program uncorks, which pushes them out at once.
    cork: bool,
    broadcast: bool,
    /// `SO_RCVBUF` / `SO_SNDBUF` as `getsockopt` reports them.
    rcvbuf: usize,
    sndbuf: usize,
    rcvtimeo: Option<Duration>,
    sndtimeo: Option<Duration>,
    /// `SO_LINGER`: `Some(seconds)` when on.
    linger: Option<u32>,
    keepidle: u32,
    keepintvl: u32,
    keepcnt: u32,
    user_timeout_ms: u32,
    ttl: Option<u8>,
    /// Options accepted that change nothing here, as last set.
    other: BTreeMap<(u32, u32), Vec<u8>>,
}

impl Options {
    fn new(proto: Option<Proto>) -> Options {
        let buffer = if proto == Some(Proto::Udp) {
            UDP_BUFFER
        } else {
            TCP_BUFFER
        };
        Options {
            reuseaddr: false,
            reuseport: false,
            keepalive: false,
            nodelay: false,
            cork: false,
            broadcast: false,
            rcvbuf: buffer * 2,
            sndbuf: buffer * 2,
            rcvtimeo: None,
            sndtimeo: None,
            linger: None,
            keepidle: 7200,
            keepintvl: 75,
            keepcnt: 9,
            user_timeout_ms: 0,
            ttl: None,
            other: BTreeMap::new(),
        }
    }

    fn rx_bytes(&self) -> usize {
        (self.rcvbuf / 2).clamp(BUFFER_MIN, BUFFER_MAX)
    }

    fn tx_bytes(&self) -> usize {
        (self.sndbuf / 2).clamp(BUFFER_MIN, BUFFER_MAX)
    }

    /// Sets what smoltcp can do of these options on `socket`.
    fn tune(&self, socket: &mut tcp::Socket<'static>, connecting: bool) {
        socket.set_nagle_enabled(self.cork || !self.nodelay);
        socket.set_hop_limit(self.ttl);
        socket.set_keep_alive(
            self.keepalive
                .then(|| NetDuration::from_secs(u64::from(self.keepidle.max(1)))),
        );
        let timeout = if connecting {
            Some(NetDuration::from_millis(CONNECT_TIMEOUT.as_millis() as u64))
        } else if self.user_timeout_ms > 0 {
            Some(NetDuration::from_millis(u64::from(self.user_timeout_ms)))
        } else if self.keepalive {
            Some(NetDuration::from_secs(
                u64::from(self.keepidle)
                    + u64::from(self.keepintvl) * u64::from(self.keepcnt.max(1)),
            ))
        } else {
            None
        };
        socket.set_timeout(timeout);
    }
}

/// A TCP connection of a socket (or its attempt).
#[derive(Debug)]
struct Conn {
    handle: SocketHandle,
    local: Addr,
    peer: Addr,
    /// Its SYN is out and no answer has come.
    connecting: bool,
    /// When the connect started.
    started: Duration,
    /// The connect failed (refused or timed out).
    failed: bool,
    /// The peer sent its FIN.
    peer_fin: bool,
    /// The connection was reset.
    reset: bool,
    /// A `connect` returned its success (a non-blocking connect's success is
    /// returned once, by the next `connect`, as in Linux).
    reported: bool,
}

/// A listening TCP socket's connections (see the module docs).
#[derive(Debug)]
pub struct Listener {
    endpoint: IpListenEndpoint,
    backlog: usize,
    /// Sockets in LISTEN or SYN-RECEIVED.
    pool: Vec<SocketHandle>,
    /// Established connections not accepted yet, oldest first.
    queue: VecDeque<SocketHandle>,
    /// Options the accepted connections inherit.
    opts: Options,
    /// Connections queued so far.
    arrivals: u64,
    /// It stopped listening (closed, or shut down): it makes no new sockets.
    closed: bool,
}

impl Listener {
    fn new_listening(&self, sockets: &mut SocketSet<'static>) -> Option<SocketHandle> {
        let mut socket = new_tcp(&self.opts).ok()?;
        self.opts.tune(&mut socket, false);
        // A handshake the client abandons ends (its SYN-ACKs unanswered) instead
        // of holding a place in the backlog; `accept` sets the program's options.
        socket.set_timeout(Some(NetDuration::from_secs(HANDSHAKE_TIMEOUT.as_secs())));
        socket.listen(self.endpoint).ok()?;
        Some(sockets.add(socket))
    }

    /// Moves the connections that completed their handshake to the queue, and
    /// keeps [`LISTEN_SPARE`] sockets listening while the backlog has room.
    fn refresh(&mut self, sockets: &mut SocketSet<'static>) {
        if self.closed {
            return;
        }
        let mut listening = 0;
        let mut index = 0;
        while let Some(&handle) = self.pool.get(index) {
            match sockets.get::<tcp::Socket>(handle).state() {
                tcp::State::Listen => {
                    listening += 1;
                    index += 1;
                }
                tcp::State::SynReceived => index += 1,
                tcp::State::Closed => {
                    sockets.remove(handle);
                    self.pool.remove(index);
                }
                _ => {
                    self.pool.remove(index);
                    self.queue.push_back(handle);
                    self.arrivals += 1;
                }
            }
        }
        while listening < LISTEN_SPARE && self.pool.len() + self.queue.len() < self.backlog {
            let Some(handle) = self.new_listening(sockets) else {
                break;
            };
            self.pool.push(handle);
            listening += 1;
        }
    }

    /// Ends it: handshakes and unaccepted connections are reset.
    fn close(&mut self, sockets: &mut SocketSet<'static>) -> Vec<SocketHandle> {
        self.closed = true;
        let mut aborted = Vec::new();
        for handle in self.pool.drain(..).chain(self.queue.drain(..)) {
            let socket = sockets.get_mut::<tcp::Socket>(handle);
            if socket.state() == tcp::State::Listen {
                sockets.remove(handle);
            } else {
                socket.abort();
                aborted.push(handle);
            }
        }
        aborted
    }
}

/// What a socket is now.
#[derive(Debug)]
enum State {
    /// A stream socket neither connected nor listening.
    Fresh,
    Listening(Shared<Listener>),
    Tcp(Conn),
    /// A TCP socket whose connection failed or ended with its smoltcp socket.
    Dead,
    /// A UDP socket: its smoltcp socket once bound, its peer once connected.
    Udp {
        handle: Option<SocketHandle>,
        peer: Option<Addr>,
    },
    /// One end of a `socketpair`: it reads `rx` and writes `tx`.
    Pair {
        rx: Shared<Pipe>,
        tx: Shared<Pipe>,
        reading: bool,
        writing: bool,
    },
}

/// A socket.
#[derive(Debug)]
pub struct Socket {
    /// Names its port reservation.
    id: u64,
    unix: bool,
    stream: bool,
    state: State,
    opts: Options,
    /// Where it is bound (its port reserved under `id`).
    bound: Option<Addr>,
    /// `SO_ERROR`.
    error: Option<Errno>,
    shut_rd: bool,
    shut_wr: bool,
    gen_in: u64,
    gen_out: u64,
    /// Bytes queued to read when last looked.
    seen_rx: usize,
    /// A write found the send buffer full.
    tx_blocked: bool,
}

/// One port reservation.
#[derive(Debug, Clone, Copy)]
struct Binding {
    owner: u64,
    addr: Ipv4Address,
    reuseaddr: bool,
    reuseport: bool,
    listening: bool,
}

/// A closed connection finishing (FIN handshake, or an RST going out).
#[derive(Debug)]
struct Zombie {
    handle: SocketHandle,
    /// The port it keeps: (protocol, port, owner).
    binding: Option<(Proto, u16, u64)>,
    deadline: Duration,
}

/// Ports, listeners and closing connections.
struct Registry {
    next_id: u64,
    ports: BTreeMap<(Proto, u16), Vec<Binding>>,
    next_ephemeral: Option<u16>,
    listeners: Vec<Weak<RefCell<Listener>>>,
    zombies: Vec<Zombie>,
}

struct RegistryCell(UnsafeCell<Registry>);

// SAFETY: one vCPU; reached only from system calls and the stack's hooks, one
// at a time, for short operations that hold no reference across a switch.
unsafe impl Sync for RegistryCell {}

static REGISTRY: RegistryCell = RegistryCell(UnsafeCell::new(Registry {
    next_id: 1,
    ports: BTreeMap::new(),
    next_ephemeral: None,
    listeners: Vec::new(),
    zombies: Vec::new(),
}));

#[allow(clippy::mut_from_ref)]
fn registry() -> &'static mut Registry {
    // SAFETY: see `RegistryCell`.
    unsafe { &mut *REGISTRY.0.get() }
}

static SOCKETS: Global<Socket> = Global::new();

fn get(index: usize) -> Result<Shared<Socket>, Errno> {
    SOCKETS.get(index)
}

/// `len` zeroed bytes for a socket buffer, or ENOBUFS when the personality's
/// heap has no room: how many sockets a program opens is its choice, and
/// running out must be an error, not the end of the VM.
fn buffer(len: usize) -> Result<Vec<u8>, Errno> {
    let mut bytes = Vec::new();
    bytes.try_reserve_exact(len).map_err(|_| ENOBUFS)?;
    bytes.resize(len, 0);
    Ok(bytes)
}

/// A TCP socket with `opts`' buffer sizes.
fn new_tcp(opts: &Options) -> Result<tcp::Socket<'static>, Errno> {
    let rx = tcp::SocketBuffer::new(buffer(opts.rx_bytes())?);
    let tx = tcp::SocketBuffer::new(buffer(opts.tx_bytes())?);
    Ok(tcp::Socket::new(rx, tx))
}

fn v4(addr: IpAddress) -> Ipv4Address {
    match addr {
        IpAddress::Ipv4(addr) => addr,
    }
}

fn now() -> Duration {
    libos::time::monotonic()
}

/// When a send last left its frames for a later exit (nanoseconds on the
/// monotonic clock; 0: nothing left).
static UNSENT_SINCE: AtomicU64 = AtomicU64::new(0);

/// How long sent data may wait for a later exit before a system call sends it.
const FLUSH_DELAY: Duration = Duration::from_micros(100);

/// Sends what the stack has queued (one exit when there is something).
pub fn flush() {
    UNSENT_SINCE.store(0, Ordering::Relaxed);
    if let Some(net) = crate::net::stack() {
        net.flush();
    }
}

/// A send queued data: it goes out with the next exit the personality makes
/// anyway (the program's next wait sleeps in the monitor, which sends the
/// queued frames), or, if the program goes on making system calls without
/// waiting, with a flush at the first of them [`FLUSH_DELAY`] later
/// ([`flush_due`]). A server's write and its next `epoll_wait` so cost one
/// exit, not two.
fn defer_flush() {
    if UNSENT_SINCE.load(Ordering::Relaxed) == 0 {
        let now = u64::try_from(now().as_nanos()).unwrap_or(u64::MAX);
        UNSENT_SINCE.store(now.max(1), Ordering::Relaxed);
    }
}

/// The personality slept in the monitor, which sent every queued frame.
pub fn flushed() {
    UNSENT_SINCE.store(0, Ordering::Relaxed);
}

/// Called as each system call begins: sends what sends left behind once it has
/// waited [`FLUSH_DELAY`].
pub fn flush_due() {
    let since = UNSENT_SINCE.load(Ordering::Relaxed);
    if since == 0 {
        return;
    }
    let now = u64::try_from(now().as_nanos()).unwrap_or(u64::MAX);
    if now.saturating_sub(since) >= FLUSH_DELAY.as_nanos() as u64 {
        flush();
    }
}

/// The interface's address (unspecified without a network).
fn own_address() -> Ipv4Address {
    crate::net::stack().map_or(Ipv4Address::UNSPECIFIED, |net| net.address().address())
}

/// Whether `addr` would need a loopback, which smoltcp on a tap has not.
fn needs_loopback(addr: Ipv4Address) -> bool {
    addr.is_loopback() || addr.is_unspecified() || addr == own_address()
}

impl Socket {
    fn new(unix: bool, stream: bool) -> Socket {
        let registry = registry();
        let id = registry.next_id;
        registry.next_id += 1;
        let proto = match (unix, stream) {
            (true, _) => None,
            (false, true) => Some(Proto::Tcp),
            (false, false) => Some(Proto::Udp),
        };
        Socket {
            id,
            unix,
            stream,
            state: if !unix && !stream {
                State::Udp {
                    handle: None,
                    peer: None,
                }
            } else {
                State::Fresh
            },
            opts: Options::new(proto),
            bound: None,
            error: None,
            shut_rd: false,
            shut_wr: false,
            gen_in: 0,
            gen_out: 0,
            seen_rx: 0,
            tx_blocked: false,
        }
    }

    fn proto(&self) -> Proto {
        if self.stream {
            Proto::Tcp
        } else {
            Proto::Udp
        }
    }

    fn changed(&mut self) {
        self.gen_in += 1;
        self.gen_out += 1;
    }

    /// Takes note of what happened to its connection since it last looked:
    /// the end of a connect, the peer's FIN, a reset.
    fn observe(&mut self, net: &mut Net) {
        let State::Tcp(conn) = &mut self.state else {
            return;
        };
        let socket = net.sockets().get_mut::<tcp::Socket>(conn.handle);
        let state = socket.state();
        let mut changed = false;
        if conn.connecting {
            let waited = now().saturating_sub(conn.started);
            match state {
                // smoltcp's own timeout counts from the first SYN sent: one
                // that never left (no ARP answer) is timed out here.
                tcp::State::SynSent | tcp::State::SynReceived if waited >= CONNECT_TIMEOUT => {
                    socket.abort();
                    conn.connecting = false;
                    conn.failed = true;
                    self.error = Some(ETIMEDOUT);
                    changed = true;
                }
                tcp::State::SynSent | tcp::State::SynReceived => {}
                tcp::State::Closed => {
                    conn.connecting = false;
                    conn.failed = true;
                    self.error = Some(if waited + Duration::from_secs(1) >= CONNECT_TIMEOUT {
                        ETIMEDOUT
                    } else {
                        ECONNREFUSED
                    });
                    changed = true;
                }
                _ => {
                    conn.connecting = false;
                    self.opts.tune(socket, false);
                    if let Some(local) = socket.local_endpoint() {
                        conn.local = (v4(local.addr), local.port);
                    }
                    changed = true;
                }
            }
        }
        if !conn.peer_fin && !conn.failed {
            let fin = match state {
                tcp::State::CloseWait
                | tcp::State::LastAck
                | tcp::State::Closing
                | tcp::State::TimeWait => true,
                tcp::State::Closed => {
                    matches!(socket.recv_slice(&mut []), Err(tcp::RecvError::Finished))
                }
                _ => false,
            };
            if fin {
                conn.peer_fin = true;
                changed = true;
            }
        }
        if state == tcp::State::Closed
            && !conn.peer_fin
            && !conn.failed
            && !conn.reset
            && !socket.can_recv()
        {
            conn.reset = true;
            self.error = Some(ECONNRESET);
            changed = true;
        }
        let queued = socket.recv_queue();
        if queued > self.seen_rx {
            self.gen_in += 1;
        }
        self.seen_rx = queued;
        if self.tx_blocked && tcp_writable(socket) {
            self.tx_blocked = false;
            self.gen_out += 1;
        }
        if changed {
            self.changed();
        }
    }

    /// Its `poll` bits now.
    fn mask(&mut self) -> u32 {
        let error = if self.error.is_some() { POLLERR } else { 0 };
        match &self.state {
            State::Fresh if self.unix && !self.stream => WRITABLE,
            State::Fresh => WRITABLE | POLLHUP,
            State::Dead => READABLE | POLLRDHUP | WRITABLE | POLLHUP | error,
            State::Listening(listener) => {
                if let Some(net) = crate::net::stack() {
                    if let Ok(mut listener) = listener.try_borrow_mut() {
                        listener.refresh(net.sockets());
                    }
                }
                let queued = listener.borrow().queue.len();
                if queued > 0 {
                    READABLE
                } else {
                    0
                }
            }
            State::Tcp(_) => {
                let Some(net) = crate::net::stack() else {
                    return error;
                };
                self.observe(net);
                let State::Tcp(conn) = &self.state else {
                    return error;
                };
                let error = if self.error.is_some() { POLLERR } else { 0 };
                let socket = net.sockets().get_mut::<tcp::Socket>(conn.handle);
                let state = socket.state();
                let rcv_shut = self.shut_rd || conn.peer_fin || conn.reset || conn.failed;
                let snd_shut = self.shut_wr || conn.reset || conn.failed;
                let mut mask = error;
                if (rcv_shut && snd_shut) || state == tcp::State::Closed {
                    mask |= POLLHUP;
                }
                if rcv_shut {
                    mask |= READABLE | POLLRDHUP;
                }
                if !conn.connecting {
                    if socket.can_recv() {
                        mask |= READABLE;
                    }
                    if snd_shut || tcp_writable(socket) {
                        mask |= WRITABLE;
                    }
                }
                mask
            }
            State::Udp { handle, .. } => {
                let mut mask = WRITABLE | error;
                if let (Some(handle), Some(net)) = (*handle, crate::net::stack()) {
                    let socket = net.sockets().get_mut::<udp::Socket>(handle);
                    if socket.can_recv() {
                        mask |= READABLE;
                    }
                    let queued = socket.recv_queue();
                    if queued > self.seen_rx {
                        self.gen_in += 1;
                    }
                    self.seen_rx = queued;
                }
                if self.shut_rd {
                    mask |= READABLE | POLLRDHUP;
                }
                if self.shut_rd && self.shut_wr {
                    mask |= POLLHUP;
                }
                mask
            }
            State::Pair { rx, tx, .. } => {
                let (rx, tx) = (rx.borrow(), tx.borrow());
                let rcv_shut = self.shut_rd || rx.writers_gone();
                let snd_shut = self.shut_wr || tx.readers_gone();
                let mut mask = 0;
                if rx.len() > 0 {
                    mask |= READABLE;
                }
                if rcv_shut {
                    mask |= READABLE | POLLRDHUP;
                }
                if rcv_shut && snd_shut {
                    mask |= POLLHUP;
                }
                if snd_shut || tx.has_room() {
                    mask |= WRITABLE;
                }
                mask
            }
        }
    }

    fn readiness(&mut self) -> Ready {
        let mask = self.mask();
        let (extra_in, extra_out) = match &self.state {
            State::Listening(listener) => (listener.borrow().arrivals, 0),
            State::Pair { rx, tx, .. } => {
                let (rx, tx) = (rx.borrow(), tx.borrow());
                let (rx, tx) = (rx.read_readiness(), tx.write_readiness());
                (rx.gen_in, tx.gen_out)
            }
            _ => (0, 0),
        };
        Ready {
            mask,
            gen_in: self.gen_in.wrapping_add(extra_in),
            gen_out: self.gen_out.wrapping_add(extra_out),
        }
    }
}

/// Whether a writer would find room worth waking for (a quarter of the buffer,
/// or an empty buffer): a trickle of free bytes does not make a socket writable.
fn tcp_writable(socket: &tcp::Socket<'static>) -> bool {
    let capacity = socket.send_capacity();
    let queued = socket.send_queue();
    socket.can_send() && (queued == 0 || capacity - queued.min(capacity) >= capacity / 4)
}

// Ports.

fn conflicts(existing: &Binding, proto: Proto, addr: Ipv4Address, opts: &Options) -> bool {
    let overlap = existing.addr.is_unspecified() || addr.is_unspecified() || existing.addr == addr;
    if !overlap || (existing.reuseport && opts.reuseport) {
        return false;
    }
    match proto {
        Proto::Tcp => !(existing.reuseaddr && opts.reuseaddr && !existing.listening),
        Proto::Udp => !(existing.reuseaddr && opts.reuseaddr),
    }
}

/// Reserves `port` (0: an ephemeral one) on `addr` for socket `owner`.
fn reserve(
    proto: Proto,
    addr: Ipv4Address,
    port: u16,
    owner: u64,
    opts: &Options,
) -> Result<u16, Errno> {
    let registry = registry();
    let port = if port == 0 {
        let (low, high) = EPHEMERAL;
        let span = u32::from(high - low) + 1;
        let start = *registry.next_ephemeral.get_or_insert_with(|| {
            let mut seed = [0u8; 2];
            crate::random::fill(&mut seed);
            u16::from_le_bytes(seed)
        });
        let found = (0..span)
            .map(|step| low + ((u32::from(start) + step) % span) as u16)
            .find(|port| !registry.ports.contains_key(&(proto, *port)))
            .ok_or(EADDRINUSE)?;
        registry.next_ephemeral = Some(found.wrapping_sub(low).wrapping_add(1));
        found
    } else {
        let taken = registry.ports.get(&(proto, port)).is_some_and(|bindings| {
            bindings
                .iter()
                .any(|binding| conflicts(binding, proto, addr, opts))
        });
        if taken {
            return Err(EADDRINUSE);
        }
        port
    };
    registry
        .ports
        .entry((proto, port))
        .or_default()
        .push(Binding {
            owner,
            addr,
            reuseaddr: opts.reuseaddr,
            reuseport: opts.reuseport,
            listening: false,
        });
    Ok(port)
}

fn unreserve(proto: Proto, port: u16, owner: u64) {
    let ports = &mut registry().ports;
    if let Some(bindings) = ports.get_mut(&(proto, port)) {
        bindings.retain(|binding| binding.owner != owner);
        if bindings.is_empty() {
            ports.remove(&(proto, port));
        }
    }
}

/// Marks socket `owner`'s reservation of `port` listening: EADDRINUSE if
/// another socket listens there (without `SO_REUSEPORT` on both).
fn mark_listening(port: u16, owner: u64, opts: &Options) -> Result<(), Errno> {
    let Some(bindings) = registry().ports.get_mut(&(Proto::Tcp, port)) else {
        return Ok(());
    };
    let Some(mine) = bindings.iter().find(|b| b.owner == owner).copied() else {
        return Ok(());
    };
    let clash = bindings.iter().any(|other| {
        other.owner != owner
            && other.listening
            && (other.addr.is_unspecified()
                || mine.addr.is_unspecified()
                || other.addr == mine.addr)
            && !(other.reuseport && opts.reuseport)
    });
    if clash {
        return Err(EADDRINUSE);
    }
    for binding in bindings.iter_mut().filter(|b| b.owner == owner) {
        binding.listening = true;
    }
    Ok(())
}

/// Updates a reservation's flags after `setsockopt`.
fn update_binding(proto: Proto, port: u16, owner: u64, opts: &Options) {
    if let Some(bindings) = registry().ports.get_mut(&(proto, port)) {
        for binding in bindings.iter_mut().filter(|b| b.owner == owner) {
            binding.reuseaddr = opts.reuseaddr;
            binding.reuseport = opts.reuseport;
        }
    }
}

// The stack's side: listeners refilled, closed connections reaped.

/// The stack's ingress hook (see `Net::set_ingress_hook`): after each frame,
/// listeners move finished handshakes to their queues and refill their pools.
pub fn on_ingress(sockets: &mut SocketSet<'static>) {
    let registry = registry();
    if registry.listeners.is_empty() {
        return;
    }
    registry.listeners.retain(|listener| {
        let Some(listener) = listener.upgrade() else {
            return false;
        };
        if let Ok(mut listener) = listener.try_borrow_mut() {
            listener.refresh(sockets);
        }
        true
    });
}

/// Frees closed connections that are over (or took too long); called after
/// every poll of the stack.
pub fn reap() {
    let registry = registry();
    if registry.zombies.is_empty() {
        return;
    }
    let Some(net) = crate::net::stack() else {
        return;
    };
    let now = now();
    let mut freed = Vec::new();
    registry.zombies.retain(|zombie| {
        let state = net.sockets().get::<tcp::Socket>(zombie.handle).state();
        let over = matches!(state, tcp::State::Closed | tcp::State::TimeWait);
        if over || now >= zombie.deadline {
            net.sockets().remove(zombie.handle);
            freed.extend(zombie.binding);
            false
        } else {
            true
        }
    });
    for (proto, port, owner) in freed {
        unreserve(proto, port, owner);
    }
}

/// The program is ending: its connections close (FIN, or RST as `close`
/// would), and it waits briefly for their last bytes to be acknowledged, as a
/// Linux kernel would go on sending them after the process.
pub fn at_exit() {
    let indexes: Vec<usize> = SOCKETS.table().iter().map(|(index, _)| index).collect();
    if indexes.is_empty() {
        flush();
        return;
    }
    for index in indexes {
        release(index);
    }
    let deadline = now().saturating_add(EXIT_LINGER);
    while now() < deadline {
        let Some(net) = crate::net::stack() else {
            return;
        };
        let busy = registry().zombies.iter().any(|zombie| {
            let socket = net.sockets().get::<tcp::Socket>(zombie.handle);
            socket.send_queue() > 0
                || matches!(
                    socket.state(),
                    tcp::State::FinWait1 | tcp::State::Closing | tcp::State::LastAck
                )
        });
        if !busy {
            net.flush();
            return;
        }
        net.wait_at_most(Some(Duration::from_millis(20)));
    }
}

// The calls.

/// `socket`: a new socket's index.
pub fn create(domain: u64, kind: u32, protocol: u64) -> Result<usize, Errno> {
    let unix = match u16::try_from(domain) {
        Ok(AF_INET) => false,
        Ok(AF_UNIX) => true,
        Ok(AF_INET6) => {
            trace_note(format_args!(
                "socket: AF_INET6 is not supported (IPv4 only): EAFNOSUPPORT"
            ));
            return Err(EAFNOSUPPORT);
        }
        _ => return Err(EAFNOSUPPORT),
    };
    let stream = match kind {
        SOCK_STREAM => true,
        SOCK_DGRAM => false,
        _ => {
            trace_note(format_args!(
                "socket: type {kind} is not supported (stream and datagram only)"
            ));
            return Err(ESOCKTNOSUPPORT);
        }
    };
    let valid = match (unix, stream) {
        (true, _) => protocol == 0,
        (false, true) => protocol == 0 || protocol == u64::from(IPPROTO_TCP),
        (false, false) => protocol == 0 || protocol == u64::from(IPPROTO_UDP),
    };
    if !valid {
        return Err(EPROTONOSUPPORT);
    }
    Ok(SOCKETS.table().insert(Socket::new(unix, stream)).0)
}

/// `socketpair(AF_UNIX, SOCK_STREAM)`: two connected sockets' indexes.
pub fn create_pair() -> (usize, usize) {
    let a_to_b = Rc::new(RefCell::new(Pipe::new()));
    let b_to_a = Rc::new(RefCell::new(Pipe::new()));
    let mut a = Socket::new(true, true);
    a.state = State::Pair {
        rx: b_to_a.clone(),
        tx: a_to_b.clone(),
        reading: true,
        writing: true,
    };
    let mut b = Socket::new(true, true);
    b.state = State::Pair {
        rx: a_to_b,
        tx: b_to_a,
        reading: true,
        writing: true,
    };
    let table = SOCKETS.table();
    (table.insert(a).0, table.insert(b).0)
}

/// Whether socket `index` is an `AF_UNIX` one.
pub fn is_unix(index: usize) -> bool {
    get(index).is_ok_and(|socket| socket.borrow().unix)
}

/// Whether socket `index` is a stream socket.
pub fn is_stream(index: usize) -> bool {
    get(index).is_ok_and(|socket| socket.borrow().stream)
}

/// `bind` to an IPv4 address.
pub fn bind(index: usize, addr: Addr) -> Result<(), Errno> {
    let socket = get(index)?;
    let mut socket = socket.borrow_mut();
    if socket.unix {
        return Err(EINVAL);
    }
    if socket.bound.is_some() || !matches!(socket.state, State::Fresh | State::Udp { .. }) {
        return Err(EINVAL);
    }
    let (ip, port) = addr;
    if !(ip.is_unspecified() || ip.is_loopback() || ip == own_address()) {
        return Err(EADDRNOTAVAIL);
    }
    if ip.is_loopback() {
        trace_note(format_args!(
            "bind: {ip} is accepted, but nothing reaches it (no loopback in a unikernel)"
        ));
    }
    let proto = socket.proto();
    let port = reserve(proto, ip, port, socket.id, &socket.opts)?;
    socket.bound = Some((ip, port));
    if proto == Proto::Udp {
        if let Err(error) = open_udp(&mut socket) {
            let id = socket.id;
            socket.bound = None;
            unreserve(proto, port, id);
            return Err(error);
        }
    }
    Ok(())
}

/// `bind` of an `AF_UNIX` socket to a path: not supported.
pub fn bind_unix() -> Result<(), Errno> {
    trace_note(format_args!(
        "bind: AF_UNIX sockets cannot be bound to a path here (only socketpair): EAFNOSUPPORT"
    ));
    Err(EAFNOSUPPORT)
}

/// Binds an unbound socket to an ephemeral port on any address.
fn autobind(socket: &mut Socket) -> Result<Addr, Errno> {
    if let Some(bound) = socket.bound {
        return Ok(bound);
    }
    let port = reserve(
        socket.proto(),
        Ipv4Address::UNSPECIFIED,
        0,
        socket.id,
        &socket.opts,
    )?;
    socket.bound = Some((Ipv4Address::UNSPECIFIED, port));
    Ok((Ipv4Address::UNSPECIFIED, port))
}

/// Gives a UDP socket its smoltcp socket, bound where it is (binding it to an
/// ephemeral port first if it is not).
fn open_udp(socket: &mut Socket) -> Result<SocketHandle, Errno> {
    if let State::Udp {
        handle: Some(handle),
        ..
    } = socket.state
    {
        return Ok(handle);
    }
    let (ip, port) = autobind(socket)?;
    let net = crate::net::stack().ok_or(ENETUNREACH)?;
    let rx_bytes = socket.opts.rx_bytes();
    let tx_bytes = socket.opts.tx_bytes();
    let packets = (rx_bytes / 256).max(16);
    let rx = udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; packets], buffer(rx_bytes)?);
    let tx = udp::PacketBuffer::new(
        vec![udp::PacketMetadata::EMPTY; (tx_bytes / 256).max(16)],
        buffer(tx_bytes)?,
    );
    let mut udp = udp::Socket::new(rx, tx);
    udp.set_hop_limit(socket.opts.ttl);
    let endpoint = IpListenEndpoint {
        addr: (!ip.is_unspecified()).then_some(IpAddress::Ipv4(ip)),
        port,
    };
    udp.bind(endpoint).map_err(|_| EINVAL)?;
    let handle = net.sockets().add(udp);
    if let State::Udp { handle: slot, .. } = &mut socket.state {
        *slot = Some(handle);
    }
    Ok(handle)
}

/// `listen`.
pub fn listen(index: usize, backlog: i32) -> Result<(), Errno> {
    let backlog = usize::try_from(backlog).unwrap_or(0).clamp(1, BACKLOG_MAX);
    let socket = get(index)?;
    let mut socket = socket.borrow_mut();
    if socket.unix {
        // Linux: an unbound AF_UNIX socket cannot listen (EINVAL); none can be
        // bound here.
        trace_note(format_args!(
            "listen: AF_UNIX sockets cannot be bound, so cannot listen here (only socketpair): EINVAL"
        ));
        return Err(EINVAL);
    }
    if !socket.stream {
        return Err(EOPNOTSUPP);
    }
    match &socket.state {
        State::Listening(listener) => {
            listener.borrow_mut().backlog = backlog;
            return Ok(());
        }
        State::Fresh => {}
        _ => return Err(EINVAL),
    }
    let (ip, port) = autobind(&mut socket)?;
    mark_listening(port, socket.id, &socket.opts)?;
    let listener = Rc::new(RefCell::new(Listener {
        endpoint: IpListenEndpoint {
            addr: (!ip.is_unspecified()).then_some(IpAddress::Ipv4(ip)),
            port,
        },
        backlog,
        pool: Vec::new(),
        queue: VecDeque::new(),
        opts: socket.opts.clone(),
        arrivals: 0,
        closed: false,
    }));
    if let Some(net) = crate::net::stack() {
        listener.borrow_mut().refresh(net.sockets());
    }
    registry().listeners.push(Rc::downgrade(&listener));
    socket.state = State::Listening(listener);
    socket.changed();
    Ok(())
}

/// `accept`: the new socket's index and its peer.
pub fn accept(index: usize, nonblocking: bool) -> Result<(usize, Addr), Errno> {
    let socket = get(index)?;
    let (listener, deadline) = {
        let socket = socket.borrow();
        if !socket.stream {
            return Err(EOPNOTSUPP);
        }
        match &socket.state {
            State::Listening(listener) => {
                (listener.clone(), objects::deadline(socket.opts.rcvtimeo))
            }
            _ => return Err(EINVAL),
        }
    };
    let handle = objects::block(nonblocking, deadline, || {
        if !matches!(socket.borrow().state, State::Listening(_)) {
            return Some(Err(EINVAL));
        }
        let net = crate::net::stack()?;
        let mut listener = listener.borrow_mut();
        listener.refresh(net.sockets());
        listener.queue.pop_front().map(Ok)
    })?;
    let opts = listener.borrow().opts.clone();
    let net = crate::net::stack().ok_or(EINVAL)?;
    let tcp = net.sockets().get_mut::<tcp::Socket>(handle);
    let endpoint = |endpoint: Option<IpEndpoint>| {
        endpoint.map_or((Ipv4Address::UNSPECIFIED, 0), |e| (v4(e.addr), e.port))
    };
    opts.tune(tcp, false);
    let local = endpoint(tcp.local_endpoint());
    let peer = endpoint(tcp.remote_endpoint());
    let mut accepted = Socket::new(false, true);
    accepted.opts = opts;
    accepted.seen_rx = tcp.recv_queue();
    accepted.state = State::Tcp(Conn {
        handle,
        local,
        peer,
        connecting: false,
        started: now(),
        failed: false,
        peer_fin: false,
        reset: false,
        reported: true,
    });
    {
        let mut listener = listener.borrow_mut();
        listener.refresh(net.sockets());
    }
    Ok((SOCKETS.table().insert(accepted).0, peer))
}

/// `connect` of an `AF_UNIX` socket to `path`: nothing listens on a path here.
pub fn connect_unix(index: usize, path: &str) -> Result<(), Errno> {
    let socket = get(index)?;
    if !matches!(socket.borrow().state, State::Fresh) {
        return Err(EISCONN);
    }
    let exists = !path.is_empty()
        && !path.starts_with('\0')
        && crate::kernel::kernel()
            .vfs
            .lookup(crate::kernel::kernel().cwd, path, crate::vfs::Follow::Yes)
            .is_ok();
    trace_note(format_args!(
        "connect: no AF_UNIX socket listens on {path:?} (only socketpair is supported)"
    ));
    Err(if exists || path.starts_with('\0') || path.is_empty() {
        ECONNREFUSED
    } else {
        ENOENT
    })
}

/// `connect` of a UDP socket: sets (or with `None`, `AF_UNSPEC`, clears) its
/// peer.
fn connect_udp(socket: &mut Socket, peer: Option<Addr>) -> Result<(), Errno> {
    match peer {
        None => {
            if let State::Udp { peer, .. } = &mut socket.state {
                *peer = None;
            }
            Ok(())
        }
        Some(peer) => {
            if peer.1 == 0 {
                return Err(ECONNREFUSED);
            }
            open_udp(socket)?;
            if let State::Udp { peer: slot, .. } = &mut socket.state {
                *slot = Some(peer);
            }
            Ok(())
        }
    }
}

/// `connect` to an IPv4 address (`None`: `AF_UNSPEC`).
pub fn connect(index: usize, peer: Option<Addr>, nonblocking: bool) -> Result<(), Errno> {
    let shared = get(index)?;
    let deadline = {
        let mut socket = shared.borrow_mut();
        if socket.unix {
            return Err(EAFNOSUPPORT);
        }
        if !socket.stream {
            return connect_udp(&mut socket, peer);
        }
        let Some(peer) = peer else {
            return Err(EAFNOSUPPORT);
        };
        if let Some(net) = crate::net::stack() {
            socket.observe(net);
        }
        match &mut socket.state {
            State::Tcp(conn) if conn.connecting => return Err(EALREADY),
            State::Tcp(conn) if conn.failed => {
                // The failure is reported (ECONNABORTED if SO_ERROR took it),
                // and the socket can connect again.
                let error = socket.error.take().unwrap_or(ECONNABORTED);
                release_conn(&mut socket);
                return Err(error);
            }
            State::Tcp(conn) if !conn.reported => {
                conn.reported = true;
                return Ok(());
            }
            State::Tcp(_) => return Err(EISCONN),
            State::Listening(_) => return Err(EINVAL),
            State::Dead => {
                if let Some(error) = socket.error.take() {
                    return Err(error);
                }
            }
            _ => {}
        }
        if needs_loopback(peer.0) || peer.1 == 0 {
            trace_note(format_args!(
                "connect: {}:{} would need a loopback, which a unikernel on a tap has not: ECONNREFUSED",
                peer.0, peer.1
            ));
            return Err(ECONNREFUSED);
        }
        let net = crate::net::stack().ok_or(ENETUNREACH)?;
        let (ip, port) = autobind(&mut socket)?;
        let mut tcp = new_tcp(&socket.opts)?;
        socket.opts.tune(&mut tcp, true);
        let handle = net.sockets().add(tcp);
        let local = IpListenEndpoint {
            addr: (!ip.is_unspecified()).then_some(IpAddress::Ipv4(ip)),
            port,
        };
        if net
            .tcp_connect(
                handle,
                IpEndpoint::new(IpAddress::Ipv4(peer.0), peer.1),
                local,
            )
            .is_err()
        {
            net.sockets().remove(handle);
            return Err(ENETUNREACH);
        }
        let local_ip = if ip.is_unspecified() {
            net.address().address()
        } else {
            ip
        };
        socket.state = State::Tcp(Conn {
            handle,
            local: (local_ip, port),
            peer,
            connecting: true,
            started: now(),
            failed: false,
            peer_fin: false,
            reset: false,
            reported: false,
        });
        socket.error = None;
        socket.seen_rx = 0;
        socket.changed();
        // Wake up to time the connect out even if no frame comes.
        let give_up = now().saturating_add(CONNECT_TIMEOUT);
        Some(objects::deadline(socket.opts.sndtimeo).map_or(give_up, |d| d.min(give_up)))
    };
    flush();
    if nonblocking {
        return Err(EINPROGRESS);
    }
    let finished = crate::thread::wait_until(deadline, || {
        let mut socket = shared.borrow_mut();
        let net = crate::net::stack()?;
        socket.observe(net);
        match &socket.state {
            State::Tcp(conn) if conn.connecting => None,
            _ => Some(()),
        }
    });
    if finished.is_err() {
        // The deadline passed: SO_SNDTIMEO's (the connect goes on in the
        // background), or the connect's own (it failed).
        let mut socket = shared.borrow_mut();
        if let Some(net) = crate::net::stack() {
            socket.observe(net);
        }
        if !matches!(&socket.state, State::Tcp(conn) if conn.failed) {
            return Err(EINPROGRESS);
        }
    }
    let mut guard = shared.borrow_mut();
    let socket = &mut *guard;
    match socket.error.take() {
        Some(error) => {
            release_conn(socket);
            Err(error)
        }
        None => {
            if let State::Tcp(conn) = &mut socket.state {
                conn.reported = true;
            }
            Ok(())
        }
    }
}

/// Frees a TCP socket's failed connection, leaving it as new (bound as it was).
fn release_conn(socket: &mut Socket) {
    if let State::Tcp(conn) = &socket.state {
        if let Some(net) = crate::net::stack() {
            net.sockets().remove(conn.handle);
        }
    }
    socket.state = State::Fresh;
}

/// What a receive got.
#[derive(Debug, Clone, Copy)]
pub struct Received {
    /// Bytes copied to the caller.
    pub len: usize,
    /// The datagram's whole length (more than `len` when it was truncated).
    pub full: usize,
    /// Who sent it (UDP) or the peer (TCP).
    pub from: Option<Addr>,
}

/// A step of a receive that may wait.
enum Step<T> {
    Done(Result<T, Errno>),
    Wait,
}

/// `recv` (and `read`, `recvfrom`, `recvmsg`) into `buf`, with `MSG_*` `flags`.
pub fn recv(
    index: usize,
    buf: &mut [u8],
    flags: u32,
    nonblocking: bool,
) -> Result<Received, Errno> {
    let shared = get(index)?;
    if flags & (MSG_OOB | MSG_ERRQUEUE) != 0 {
        return Err(if flags & MSG_OOB != 0 { EINVAL } else { EAGAIN });
    }
    let nonblocking = nonblocking || flags & MSG_DONTWAIT != 0;
    let peek = flags & MSG_PEEK != 0;
    let deadline = objects::deadline(shared.borrow().opts.rcvtimeo);
    let waitall = flags & MSG_WAITALL != 0 && !peek && shared.borrow().stream;
    let mut got = 0;
    let mut from = None;
    loop {
        let step = objects::block(nonblocking, deadline, || {
            match recv_step(&shared, &mut buf[got..], peek) {
                Step::Done(result) => Some(result),
                Step::Wait => None,
            }
        });
        match step {
            Ok(received) => {
                got += received.len;
                from = received.from;
                if !waitall || received.len == 0 || got >= buf.len() {
                    let full = received.full.max(got);
                    return Ok(Received {
                        len: got,
                        full: if waitall { got } else { full },
                        from,
                    });
                }
            }
            Err(_) if got > 0 => {
                return Ok(Received {
                    len: got,
                    full: got,
                    from,
                })
            }
            Err(error) => return Err(error),
        }
    }
}

fn recv_step(shared: &Shared<Socket>, buf: &mut [u8], peek: bool) -> Step<Received> {
    let mut guard = shared.borrow_mut();
    let socket = &mut *guard;
    let done = |len: usize, from: Option<Addr>| {
        Step::Done(Ok(Received {
            len,
            full: len,
            from,
        }))
    };
    match &mut socket.state {
        State::Fresh | State::Listening(_) => Step::Done(Err(ENOTCONN)),
        State::Dead => match socket.error.take() {
            Some(error) => Step::Done(Err(error)),
            None => done(0, None),
        },
        State::Pair { rx, .. } => {
            let mut rx = rx.borrow_mut();
            if rx.len() > 0 {
                let len = if peek { rx.peek(buf) } else { rx.take(buf) };
                done(len, None)
            } else if socket.shut_rd || rx.writers_gone() || buf.is_empty() {
                done(0, None)
            } else {
                Step::Wait
            }
        }
        State::Tcp(_) => {
            let Some(net) = crate::net::stack() else {
                return Step::Done(Err(ENOTCONN));
            };
            socket.observe(net);
            let State::Tcp(conn) = &socket.state else {
                return Step::Done(Err(ENOTCONN));
            };
            if conn.connecting {
                return Step::Wait;
            }
            let peer = Some(conn.peer);
            let tcp = net.sockets().get_mut::<tcp::Socket>(conn.handle);
            if tcp.can_recv() && !conn.reset {
                let len = if peek {
                    tcp.peek_slice(buf).unwrap_or(0)
                } else {
                    tcp.recv_slice(buf).unwrap_or(0)
                };
                socket.seen_rx = tcp.recv_queue();
                return done(len, peer);
            }
            if let Some(error) = socket.error.take() {
                return Step::Done(Err(error));
            }
            let ended = socket.shut_rd
                || conn.peer_fin
                || conn.reset
                || conn.failed
                || tcp.state() == tcp::State::Closed;
            if ended || buf.is_empty() {
                done(0, peer)
            } else {
                Step::Wait
            }
        }
        State::Udp { handle, peer } => {
            if let Some(error) = socket.error.take() {
                return Step::Done(Err(error));
            }
            if socket.shut_rd {
                return done(0, None);
            }
            let (handle, peer) = (*handle, *peer);
            let handle = match handle {
                Some(handle) => handle,
                None => match open_udp(socket) {
                    Ok(handle) => handle,
                    Err(error) => return Step::Done(Err(error)),
                },
            };
            let Some(net) = crate::net::stack() else {
                return Step::Done(Err(ENETUNREACH));
            };
            let udp = net.sockets().get_mut::<udp::Socket>(handle);
            loop {
                let (size, sender) = match udp.peek() {
                    Ok((payload, meta)) => (payload.len(), meta.endpoint),
                    Err(_) => {
                        socket.seen_rx = udp.recv_queue();
                        return Step::Wait;
                    }
                };
                let sender = (v4(sender.addr), sender.port);
                if peer.is_some_and(|peer| peer != sender) {
                    // A connected UDP socket hears only its peer.
                    let _ = udp.recv();
                    continue;
                }
                let payload = if peek {
                    udp.peek().map(|(p, _)| p)
                } else {
                    udp.recv().map(|(p, _)| p)
                };
                let len = match payload {
                    Ok(payload) => {
                        let len = payload.len().min(buf.len());
                        buf[..len].copy_from_slice(&payload[..len]);
                        len
                    }
                    Err(_) => return Step::Wait,
                };
                socket.seen_rx = udp.recv_queue();
                return Step::Done(Ok(Received {
                    len,
                    full: size,
                    from: Some(sender),
                }));
            }
        }
    }
}

/// `send` (and `write`, `sendto`, `sendmsg`) of `data`, to `dest` for an
/// unconnected UDP socket.
pub fn send(
    index: usize,
    data: &[u8],
    dest: Option<Addr>,
    flags: u32,
    nonblocking: bool,
) -> Result<usize, Errno> {
    match send_any(index, data, dest, flags, nonblocking) {
        Err(EPIPE) => Err(objects::broken_pipe(flags & MSG_NOSIGNAL != 0)),
        result => result,
    }
}

fn send_any(
    index: usize,
    data: &[u8],
    dest: Option<Addr>,
    flags: u32,
    nonblocking: bool,
) -> Result<usize, Errno> {
    let shared = get(index)?;
    if flags & MSG_OOB != 0 {
        return Err(EOPNOTSUPP);
    }
    let nonblocking = nonblocking || flags & MSG_DONTWAIT != 0;
    let (stream, deadline) = {
        let socket = shared.borrow();
        (socket.stream, objects::deadline(socket.opts.sndtimeo))
    };
    let pair = match &shared.borrow().state {
        State::Pair { tx, .. } => Some(tx.clone()),
        _ => None,
    };
    if let Some(tx) = pair {
        if shared.borrow().shut_wr {
            return Err(EPIPE);
        }
        return crate::pipe::write_to(&tx, data, nonblocking, deadline, true);
    }
    if !stream {
        return send_udp(&shared, data, dest, nonblocking, deadline);
    }
    let mut sent = 0;
    loop {
        let step = send_tcp_step(&shared, &data[sent..]);
        match step {
            Step::Done(Ok(count)) => {
                sent += count;
                if sent == data.len() {
                    break;
                }
            }
            Step::Done(Err(error)) => {
                if sent > 0 {
                    break;
                }
                return Err(error);
            }
            Step::Wait => {}
        }
        if nonblocking {
            if sent == 0 {
                return Err(EAGAIN);
            }
            break;
        }
        flush();
        let room = crate::thread::wait_until(deadline, || {
            let mut socket = shared.borrow_mut();
            let net = crate::net::stack()?;
            socket.observe(net);
            let State::Tcp(conn) = &socket.state else {
                return Some(());
            };
            let tcp = net.sockets().get::<tcp::Socket>(conn.handle);
            let blocked = conn.connecting || (tcp.may_send() && !tcp.can_send());
            (!blocked || socket.error.is_some()).then_some(())
        });
        if room.is_err() {
            if sent == 0 {
                return Err(EAGAIN);
            }
            break;
        }
    }
    defer_flush();
    Ok(sent)
}

fn send_tcp_step(shared: &Shared<Socket>, data: &[u8]) -> Step<usize> {
    let mut guard = shared.borrow_mut();
    let socket = &mut *guard;
    match &socket.state {
        // Linux: a stream socket that is not connected takes no data (EPIPE).
        State::Fresh | State::Listening(_) => return Step::Done(Err(EPIPE)),
        State::Dead => {
            return Step::Done(Err(socket.error.take().unwrap_or(EPIPE)));
        }
        _ => {}
    }
    let Some(net) = crate::net::stack() else {
        return Step::Done(Err(ENOTCONN));
    };
    socket.observe(net);
    let State::Tcp(conn) = &socket.state else {
        return Step::Done(Err(EPIPE));
    };
    if let Some(error) = socket.error.take() {
        return Step::Done(Err(error));
    }
    if conn.connecting {
        return Step::Wait;
    }
    if socket.shut_wr || conn.reset || conn.failed {
        return Step::Done(Err(EPIPE));
    }
    let tcp = net.sockets().get_mut::<tcp::Socket>(conn.handle);
    if !tcp.may_send() {
        return Step::Done(Err(EPIPE));
    }
    let count = tcp.send_slice(data).unwrap_or(0);
    if count < data.len() {
        socket.tx_blocked = true;
    }
    if count == 0 && !data.is_empty() {
        Step::Wait
    } else {
        Step::Done(Ok(count))
    }
}

fn send_udp(
    shared: &Shared<Socket>,
    data: &[u8],
    dest: Option<Addr>,
    nonblocking: bool,
    deadline: Option<Duration>,
) -> Result<usize, Errno> {
    let (handle, to) = {
        let mut socket = shared.borrow_mut();
        if socket.shut_wr {
            return Err(EPIPE);
        }
        if let Some(error) = socket.error.take() {
            return Err(error);
        }
        let peer = match &socket.state {
            State::Udp { peer, .. } => *peer,
            _ => return Err(ENOTCONN),
        };
        let to = dest.or(peer).ok_or(EDESTADDRREQ)?;
        if to.1 == 0 {
            return Err(EINVAL);
        }
        if data.len() > UDP_MAX {
            return Err(EMSGSIZE);
        }
        if to.0.is_broadcast() && !socket.opts.broadcast {
            return Err(EACCES);
        }
        let handle = open_udp(&mut socket)?;
        if needs_loopback(to.0) {
            trace_note(format_args!(
                "sendto: {}:{} would need a loopback, which a unikernel on a tap has not: dropped",
                to.0, to.1
            ));
            return Ok(data.len());
        }
        (handle, to)
    };
    let net = crate::net::stack().ok_or(ENETUNREACH)?;
    if data.len() + 28 > net.mtu() {
        trace_note(format_args!(
            "sendto: {} bytes do not fit in one frame, and the stack does not fragment: EMSGSIZE",
            data.len()
        ));
        return Err(EMSGSIZE);
    }
    let endpoint = IpEndpoint::new(IpAddress::Ipv4(to.0), to.1);
    objects::block(nonblocking, deadline, || {
        let net = crate::net::stack()?;
        let udp = net.sockets().get_mut::<udp::Socket>(handle);
        match udp.send_slice(data, endpoint) {
            Ok(()) => Some(Ok(data.len())),
            Err(udp::SendError::BufferFull) => None,
            Err(_) => Some(Err(EINVAL)),
        }
    })?;
    defer_flush();
    Ok(data.len())
}

/// `shutdown`.
pub fn shutdown(index: usize, how: u64) -> Result<(), Errno> {
    let (rd, wr) = match how {
        0 => (true, false),
        1 => (false, true),
        2 => (true, true),
        _ => return Err(EINVAL),
    };
    let shared = get(index)?;
    let mut guard = shared.borrow_mut();
    let socket = &mut *guard;
    match &mut socket.state {
        State::Fresh | State::Dead => return Err(ENOTCONN),
        State::Listening(listener) => {
            if rd {
                // Stops listening: a blocked accept fails with EINVAL, as in Linux.
                let aborted = match crate::net::stack() {
                    Some(net) => listener.borrow_mut().close(net.sockets()),
                    None => Vec::new(),
                };
                bury(aborted, None);
                if let Some((_, port)) = socket.bound {
                    if let Some(bindings) = registry().ports.get_mut(&(Proto::Tcp, port)) {
                        for binding in bindings.iter_mut().filter(|b| b.owner == socket.id) {
                            binding.listening = false;
                        }
                    }
                }
                socket.state = State::Fresh;
            }
        }
        State::Tcp(conn) => {
            if conn.connecting {
                return Err(ENOTCONN);
            }
            if wr && !socket.shut_wr {
                if let Some(net) = crate::net::stack() {
                    net.sockets().get_mut::<tcp::Socket>(conn.handle).close();
                }
            }
        }
        State::Udp { peer, .. } => {
            if peer.is_none() {
                return Err(ENOTCONN);
            }
        }
        State::Pair {
            rx,
            tx,
            reading,
            writing,
        } => {
            if rd && *reading {
                rx.borrow_mut().drop_reader();
                *reading = false;
            }
            if wr && *writing {
                tx.borrow_mut().drop_writer();
                *writing = false;
            }
        }
    }
    socket.shut_rd |= rd;
    socket.shut_wr |= wr;
    socket.changed();
    drop(guard);
    flush();
    Ok(())
}

/// Where the socket is bound (`getsockname`); `None` for an `AF_UNIX` one.
pub fn local_name(index: usize) -> Result<Option<Addr>, Errno> {
    let shared = get(index)?;
    let socket = shared.borrow();
    if socket.unix {
        return Ok(None);
    }
    let bound = socket.bound.unwrap_or((Ipv4Address::UNSPECIFIED, 0));
    Ok(Some(match &socket.state {
        State::Tcp(conn) => conn.local,
        State::Udp { peer: Some(_), .. } if bound.0.is_unspecified() => (own_address(), bound.1),
        _ => bound,
    }))
}

/// The peer (`getpeername`); `None` for an `AF_UNIX` one.
pub fn peer_name(index: usize) -> Result<Option<Addr>, Errno> {
    let shared = get(index)?;
    let mut socket = shared.borrow_mut();
    if let Some(net) = crate::net::stack() {
        socket.observe(net);
    }
    match &socket.state {
        State::Tcp(conn) if !conn.connecting && !conn.failed => Ok(Some(conn.peer)),
        State::Udp {
            peer: Some(peer), ..
        } => Ok(Some(*peer)),
        State::Pair { .. } => Ok(None),
        _ => Err(ENOTCONN),
    }
}

/// What socket `index` is ready for.
pub fn readiness(index: usize) -> Ready {
    match get(index) {
        Ok(socket) => match socket.try_borrow_mut() {
            Ok(mut socket) => socket.readiness(),
            Err(_) => Ready::fixed(0),
        },
        Err(_) => Ready::fixed(POLLERR),
    }
}

/// Bytes a read would return now (`FIONREAD`; a UDP socket's next datagram).
pub fn available(index: usize) -> usize {
    let Ok(shared) = get(index) else {
        return 0;
    };
    let socket = shared.borrow();
    match &socket.state {
        State::Pair { rx, .. } => rx.borrow().len(),
        State::Tcp(conn) => crate::net::stack().map_or(0, |net| {
            net.sockets().get::<tcp::Socket>(conn.handle).recv_queue()
        }),
        State::Udp {
            handle: Some(handle),
            ..
        } => crate::net::stack().map_or(0, |net| {
            net.sockets()
                .get_mut::<udp::Socket>(*handle)
                .peek()
                .map_or(0, |(payload, _)| payload.len())
        }),
        _ => 0,
    }
}

/// Hands closed connections to the reaper, with the port they keep.
fn bury(handles: Vec<SocketHandle>, binding: Option<(Proto, u16, u64)>) {
    let deadline = now().saturating_add(CLOSE_TIMEOUT);
    let registry = registry();
    let mut binding = binding;
    for handle in handles {
        registry.zombies.push(Zombie {
            handle,
            binding: binding.take(),
            deadline,
        });
    }
    if let Some((proto, port, owner)) = binding {
        unreserve(proto, port, owner);
    }
}

/// Its last open file closed: the connection closes (see the module docs).
pub fn release(index: usize) {
    let Some(shared) = SOCKETS.table().remove(index) else {
        return;
    };
    let Ok(mut socket) = shared.try_borrow_mut() else {
        return;
    };
    let binding = socket
        .bound
        .map(|(_, port)| (socket.proto(), port, socket.id));
    let state = core::mem::replace(&mut socket.state, State::Dead);
    match state {
        State::Tcp(conn) => {
            let Some(net) = crate::net::stack() else {
                return;
            };
            let tcp = net.sockets().get_mut::<tcp::Socket>(conn.handle);
            if socket.opts.linger == Some(0) || tcp.recv_queue() > 0 || conn.reset || conn.failed {
                tcp.abort();
            } else {
                tcp.close();
                tcp.set_timeout(Some(NetDuration::from_secs(CLOSE_TIMEOUT.as_secs())));
            }
            bury(vec![conn.handle], binding);
        }
        State::Listening(listener) => {
            let aborted = match crate::net::stack() {
                Some(net) => listener.borrow_mut().close(net.sockets()),
                None => Vec::new(),
            };
            bury(aborted, binding);
        }
        State::Udp { handle, .. } => {
            if let (Some(handle), Some(net)) = (handle, crate::net::stack()) {
                net.sockets().remove(handle);
            }
            bury(Vec::new(), binding);
        }
        State::Pair {
            rx,
            tx,
            reading,
            writing,
        } => {
            if reading {
                rx.borrow_mut().drop_reader();
            }
            if writing {
                tx.borrow_mut().drop_writer();
            }
        }
        State::Fresh | State::Dead => bury(Vec::new(), binding),
    }
    drop(socket);
    defer_flush();
}

// Options.

fn int_of(value: &[u8]) -> Result<i32, Errno> {
    let bytes: [u8; 4] = value
        .get(..4)
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or(EINVAL)?;
    Ok(i32::from_ne_bytes(bytes))
}

/// An `int` option that Linux refuses with EINVAL outside `range`.
fn int_within(value: &[u8], range: core::ops::RangeInclusive<i32>) -> Result<u32, Errno> {
    let int = int_of(value)?;
    if !range.contains(&int) {
        return Err(EINVAL);
    }
    u32::try_from(int).map_err(|_| EINVAL)
}

fn timeval_of(value: &[u8]) -> Result<Option<Duration>, Errno> {
    let bytes: [u8; 16] = value
        .get(..16)
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or(EINVAL)?;
    let secs = i64::from_ne_bytes(bytes[..8].try_into().map_err(|_| EINVAL)?);
    let usecs = i64::from_ne_bytes(bytes[8..].try_into().map_err(|_| EINVAL)?);
    if !(0..1_000_000).contains(&usecs) {
        return Err(EDOM);
    }
    if secs < 0 || (secs == 0 && usecs == 0) {
        // Negative: Linux takes it as "no timeout" too.
        return Ok(None);
    }
    Ok(Some(Duration::new(secs as u64, (usecs * 1000) as u32)))
}

fn timeval_bytes(value: Option<Duration>) -> Vec<u8> {
    let value = value.unwrap_or_default();
    let mut out = Vec::with_capacity(16);
    out.extend_from_slice(&(value.as_secs() as i64).to_ne_bytes());
    out.extend_from_slice(&i64::from(value.subsec_micros()).to_ne_bytes());
    out
}

fn int_bytes(value: i32) -> Vec<u8> {
    value.to_ne_bytes().to_vec()
}

/// Names of options, for the trace.
fn option_name(level: u32, name: u32) -> &'static str {
    match (level, name) {
        (SOL_SOCKET, 1) => "SO_DEBUG",
        (SOL_SOCKET, 5) => "SO_DONTROUTE",
        (SOL_SOCKET, 10) => "SO_OOBINLINE",
        (SOL_SOCKET, 12) => "SO_PRIORITY",
        (SOL_SOCKET, 16) => "SO_PASSCRED",
        (SOL_SOCKET, 18) => "SO_RCVLOWAT",
        (SOL_SOCKET, 19) => "SO_SNDLOWAT",
        (SOL_SOCKET, 25) => "SO_BINDTODEVICE",
        (SOL_SOCKET, 29) => "SO_TIMESTAMP",
        (SOL_SOCKET, 36) => "SO_MARK",
        (SOL_SOCKET, 49) => "SO_INCOMING_CPU",
        (IPPROTO_TCP, 2) => "TCP_MAXSEG",
        (IPPROTO_TCP, 3) => "TCP_CORK",
        (IPPROTO_TCP, 7) => "TCP_SYNCNT",
        (IPPROTO_TCP, 8) => "TCP_LINGER2",
        (IPPROTO_TCP, 9) => "TCP_DEFER_ACCEPT",
        (IPPROTO_TCP, 10) => "TCP_WINDOW_CLAMP",
        (IPPROTO_TCP, 12) => "TCP_QUICKACK",
        (IPPROTO_TCP, 13) => "TCP_CONGESTION",
        (IPPROTO_TCP, 23) => "TCP_FASTOPEN",
        (IPPROTO_TCP, 25) => "TCP_NOTSENT_LOWAT",
        (IPPROTO_IP, 1) => "IP_TOS",
        (IPPROTO_IP, 8) => "IP_PKTINFO",
        (IPPROTO_IP, 10) => "IP_MTU_DISCOVER",
        (IPPROTO_IP, 11) => "IP_RECVERR",
        (IPPROTO_IP, 15) => "IP_FREEBIND",
        (IPPROTO_IP, 24) => "IP_BIND_ADDRESS_NO_PORT",
        _ => "option",
    }
}

/// Options accepted and kept, that change nothing here.
fn no_effect(level: u32, name: u32) -> bool {
    matches!(
        (level, name),
        (
            SOL_SOCKET,
            1 | 5 | 10 | 12 | 16 | 18 | 19 | 25 | 29 | 35 | 36 | 40 | 46 | 49 | 60
        ) | (IPPROTO_TCP, 2 | 7 | 8 | 9 | 10 | 12 | 13 | 23 | 25 | 30)
            | (IPPROTO_IP, 1 | 8 | 10 | 11 | 13 | 15 | 19 | 24)
    )
}

/// Sends what a connection holds now, partial segment included, whatever Nagle
/// would wait for: what Linux does when a program uncorks (`tcp_push` with
/// `TCP_NAGLE_PUSH`). Without it, a server that corks its headers and its body
/// (nginx's `tcp_nopush`) can have its headers go out alone at an earlier poll
/// and its body wait behind them for an ACK the client delays by 40 ms.
/// `nagle` is what the connection's options ask for once the push is over. The
/// caller holds no socket borrowed: the poll runs the stack's ingress hook.
fn push(handle: SocketHandle, nagle: bool) {
    let set_nagle = |on: bool| {
        if let Some(net) = crate::net::stack() {
            net.sockets()
                .get_mut::<tcp::Socket>(handle)
                .set_nagle_enabled(on);
        }
    };
    set_nagle(false);
    crate::net::poll();
    set_nagle(nagle);
    defer_flush();
}

/// `setsockopt`.
pub fn set_option(index: usize, level: u32, name: u32, value: &[u8]) -> Result<(), Errno> {
    let shared = get(index)?;
    let mut guard = shared.borrow_mut();
    let socket = &mut *guard;
    if socket.unix && level != SOL_SOCKET {
        return Err(EOPNOTSUPP);
    }
    let tcp_level = level == IPPROTO_TCP;
    if tcp_level && !socket.stream {
        return Err(ENOPROTOOPT);
    }
    let opts = &mut socket.opts;
    let mut uncorked = false;
    match (level, name) {
        (SOL_SOCKET, 2) => opts.reuseaddr = int_of(value)? != 0,
        (SOL_SOCKET, 15) => opts.reuseport = int_of(value)? != 0,
        (SOL_SOCKET, 9) => opts.keepalive = int_of(value)? != 0,
        (SOL_SOCKET, 6) => opts.broadcast = int_of(value)? != 0,
        (SOL_SOCKET, 8 | 33) => {
            let asked = usize::try_from(int_of(value)?.max(0)).unwrap_or(0);
            opts.rcvbuf = asked.saturating_mul(2).clamp(2304, BUFFER_MAX * 2);
        }
        (SOL_SOCKET, 7 | 32) => {
            let asked = usize::try_from(int_of(value)?.max(0)).unwrap_or(0);
            opts.sndbuf = asked.saturating_mul(2).clamp(4608, BUFFER_MAX * 2);
        }
        (SOL_SOCKET, 20 | 66) => opts.rcvtimeo = timeval_of(value)?,
        (SOL_SOCKET, 21 | 67) => opts.sndtimeo = timeval_of(value)?,
        (SOL_SOCKET, 13) => {
            let on = int_of(value)?;
            let seconds = int_of(value.get(4..).ok_or(EINVAL)?)?;
            opts.linger = (on != 0).then_some(u32::try_from(seconds.max(0)).unwrap_or(0));
        }
        (SOL_SOCKET, 3 | 4 | 17 | 30 | 38 | 39) => return Err(ENOPROTOOPT),
        (IPPROTO_TCP, 1) => opts.nodelay = int_of(value)? != 0,
        (IPPROTO_TCP, 3) => {
            let cork = int_of(value)? != 0;
            uncorked = opts.cork && !cork;
            opts.cork = cork;
        }
        (IPPROTO_TCP, 4) => opts.keepidle = int_within(value, 1..=32767)?,
        (IPPROTO_TCP, 5) => opts.keepintvl = int_within(value, 1..=32767)?,
        (IPPROTO_TCP, 6) => opts.keepcnt = int_within(value, 1..=127)?,
        (IPPROTO_TCP, 18) => opts.user_timeout_ms = int_within(value, 0..=i32::MAX)?,
        (IPPROTO_IP, 2) => {
            let ttl = int_of(value)?;
            opts.ttl = match ttl {
                -1 => None,
                1..=255 => Some(ttl as u8),
                _ => return Err(EINVAL),
            };
        }
        (IPPROTO_IPV6, _) => {
            trace_note(format_args!(
                "setsockopt: IPPROTO_IPV6 option {name} on an IPv4 socket: ENOPROTOOPT"
            ));
            return Err(ENOPROTOOPT);
        }
        _ if no_effect(level, name) => {
            if value.len() < 4 && !matches!((level, name), (SOL_SOCKET, 25) | (IPPROTO_TCP, 13)) {
                return Err(EINVAL);
            }
            trace_note(format_args!(
                "setsockopt {} accepted; it changes nothing here",
                option_name(level, name)
            ));
            opts.other
                .insert((level, name), value.iter().copied().take(64).collect());
            return Ok(());
        }
        _ => {
            trace_note(format_args!(
                "setsockopt: level {level} option {name} is not supported: ENOPROTOOPT"
            ));
            return Err(ENOPROTOOPT);
        }
    }
    // Apply what smoltcp can do to a live connection, and the new flags to the
    // port's reservation.
    let mut pending_push = None;
    if let Some((_, port)) = socket.bound {
        update_binding(socket.proto(), port, socket.id, &socket.opts);
    }
    match &socket.state {
        State::Tcp(conn) => {
            if let Some(net) = crate::net::stack() {
                let tcp = net.sockets().get_mut::<tcp::Socket>(conn.handle);
                socket.opts.tune(tcp, conn.connecting);
                if uncorked && !conn.connecting {
                    pending_push = Some(conn.handle);
                }
            }
        }
        State::Listening(listener) => listener.borrow_mut().opts = socket.opts.clone(),
        State::Udp {
            handle: Some(handle),
            ..
        } => {
            if let Some(net) = crate::net::stack() {
                net.sockets()
                    .get_mut::<udp::Socket>(*handle)
                    .set_hop_limit(socket.opts.ttl);
            }
        }
        _ => {}
    }
    let nagle = socket.opts.cork || !socket.opts.nodelay;
    drop(guard);
    if let Some(handle) = pending_push {
        push(handle, nagle);
    }
    Ok(())
}

/// Linux's `tcp_info.tcpi_state` for a smoltcp state.
fn linux_tcp_state(state: tcp::State) -> u8 {
    match state {
        tcp::State::Established => 1,
        tcp::State::SynSent => 2,
        tcp::State::SynReceived => 3,
        tcp::State::FinWait1 => 4,
        tcp::State::FinWait2 => 5,
        tcp::State::TimeWait => 6,
        tcp::State::Closed => 7,
        tcp::State::CloseWait => 8,
        tcp::State::LastAck => 9,
        tcp::State::Listen => 10,
        tcp::State::Closing => 11,
    }
}

/// `getsockopt`: the option's value (the caller copies what fits).
pub fn get_option(index: usize, level: u32, name: u32) -> Result<Vec<u8>, Errno> {
    let shared = get(index)?;
    let mut guard = shared.borrow_mut();
    let socket = &mut *guard;
    if let Some(net) = crate::net::stack() {
        socket.observe(net);
    }
    if socket.unix && level != SOL_SOCKET {
        return Err(EOPNOTSUPP);
    }
    if level == IPPROTO_TCP && !socket.stream {
        return Err(ENOPROTOOPT);
    }
    let opts = &socket.opts;
    let mss = crate::net::stack().map_or(1460, |net| net.mtu().saturating_sub(40));
    Ok(match (level, name) {
        (SOL_SOCKET, 2) => int_bytes(i32::from(opts.reuseaddr)),
        (SOL_SOCKET, 15) => int_bytes(i32::from(opts.reuseport)),
        (SOL_SOCKET, 9) => int_bytes(i32::from(opts.keepalive)),
        (SOL_SOCKET, 6) => int_bytes(i32::from(opts.broadcast)),
        (SOL_SOCKET, 8) => int_bytes(i32::try_from(opts.rcvbuf).unwrap_or(i32::MAX)),
        (SOL_SOCKET, 7) => int_bytes(i32::try_from(opts.sndbuf).unwrap_or(i32::MAX)),
        (SOL_SOCKET, 20 | 66) => timeval_bytes(opts.rcvtimeo),
        (SOL_SOCKET, 21 | 67) => timeval_bytes(opts.sndtimeo),
        (SOL_SOCKET, 13) => {
            let mut out = int_bytes(i32::from(opts.linger.is_some()));
            out.extend(int_bytes(
                i32::try_from(opts.linger.unwrap_or(0)).unwrap_or(i32::MAX),
            ));
            out
        }
        (SOL_SOCKET, 3) => int_bytes(if socket.stream { 1 } else { 2 }),
        (SOL_SOCKET, 39) => int_bytes(if socket.unix { 1 } else { 2 }),
        (SOL_SOCKET, 38) => int_bytes(match (socket.unix, socket.stream) {
            (true, _) => 0,
            (false, true) => 6,
            (false, false) => 17,
        }),
        (SOL_SOCKET, 4) => int_bytes(socket.error.take().map_or(0, |e| e.0 as i32)),
        (SOL_SOCKET, 30) => int_bytes(i32::from(matches!(socket.state, State::Listening(_)))),
        (SOL_SOCKET, 17) => {
            // struct ucred of the one process: pid 1, uid 0, gid 0.
            let mut out = int_bytes(1);
            out.extend(int_bytes(0));
            out.extend(int_bytes(0));
            out
        }
        (IPPROTO_TCP, 1) => int_bytes(i32::from(opts.nodelay)),
        (IPPROTO_TCP, 3) => int_bytes(i32::from(opts.cork)),
        (IPPROTO_TCP, 2) => int_bytes(mss as i32),
        (IPPROTO_TCP, 4) => int_bytes(opts.keepidle as i32),
        (IPPROTO_TCP, 5) => int_bytes(opts.keepintvl as i32),
        (IPPROTO_TCP, 6) => int_bytes(opts.keepcnt as i32),
        (IPPROTO_TCP, 18) => int_bytes(opts.user_timeout_ms as i32),
        (IPPROTO_TCP, 11) => {
            // struct tcp_info: the state and the segment sizes; the counters
            // Linux keeps are not kept here (zero).
            let mut info = vec![0u8; 232];
            let state = match &socket.state {
                State::Tcp(conn) => crate::net::stack().map_or(7, |net| {
                    linux_tcp_state(net.sockets().get::<tcp::Socket>(conn.handle).state())
                }),
                State::Listening(_) => 10,
                _ => 7,
            };
            info[0] = state;
            info[16..20].copy_from_slice(&(mss as u32).to_ne_bytes());
            info[20..24].copy_from_slice(&(mss as u32).to_ne_bytes());
            info
        }
        (IPPROTO_TCP, 13) => opts
            .other
            .get(&(level, name))
            .cloned()
            .unwrap_or_else(|| b"cubic\0\0\0\0\0\0\0\0\0\0\0".to_vec()),
        (IPPROTO_IP, 2) => int_bytes(i32::from(opts.ttl.unwrap_or(64))),
        (IPPROTO_IP, 14) => match &socket.state {
            State::Tcp(_) | State::Udp { peer: Some(_), .. } => int_bytes(mss as i32 + 40),
            _ => return Err(ENOTCONN),
        },
        (IPPROTO_IPV6, _) => return Err(ENOPROTOOPT),
        _ if no_effect(level, name) => opts
            .other
            .get(&(level, name))
            .cloned()
            .unwrap_or_else(|| int_bytes(0)),
        _ => return Err(ENOPROTOOPT),
    })
}
