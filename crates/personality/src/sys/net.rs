//! Socket calls: `socket`, `bind`, `listen`, `accept`, `connect`, the sends and
//! receives, `shutdown`, names and options. The sockets themselves are
//! [`crate::socket`]'s; this module reads and writes the program's structures
//! (`sockaddr`, `msghdr`, `mmsghdr`, option values), every one checked.

use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use super::SysResult;
use crate::errno::{
    Errno, EAFNOSUPPORT, EFAULT, EINVAL, EMSGSIZE, ENOTSOCK, EOPNOTSUPP, EPROTONOSUPPORT,
};
use crate::fd::{FdTable, FileRef, Object, OtherKind};
use crate::kernel::kernel;
use crate::objects::trace_note;
use crate::socket::{
    self, Addr, AF_INET, AF_UNIX, AF_UNSPEC, MSG_DONTWAIT, MSG_TRUNC, SOCK_STREAM,
};
use crate::uaccess;

/// `SOCK_NONBLOCK` (= `O_NONBLOCK`).
const SOCK_NONBLOCK: u64 = 0o4000;
/// `SOCK_CLOEXEC` (= `O_CLOEXEC`).
const SOCK_CLOEXEC: u64 = 0o2000000;
const O_RDWR: u32 = 2;
const O_NONBLOCK: u32 = 0o4000;
/// `MSG_WAITFORONE` (`recvmmsg`).
const MSG_WAITFORONE: u32 = 0x10000;
/// Largest `sockaddr` (`sockaddr_storage`).
const SOCKADDR_MAX: u64 = 128;
/// Most iovecs in one message, and messages in one `sendmmsg`/`recvmmsg`.
const UIO_MAXIOV: u64 = 1024;
/// Largest single transfer served at once (as `read`/`write`).
const IO_MAX: u64 = 1 << 30;

/// A socket address the program passed.
enum SockAddr {
    Inet(Addr),
    Unix(String),
    Unspec,
}

fn read_sockaddr(addr: u64, len: u64) -> Result<SockAddr, Errno> {
    if !(2..=SOCKADDR_MAX).contains(&len) {
        return Err(EINVAL);
    }
    let bytes = uaccess::bytes(addr, len)?;
    let family = u16::from_ne_bytes([bytes[0], bytes[1]]);
    match family {
        AF_INET => {
            let Some(sin) = bytes.get(..16) else {
                return Err(EINVAL);
            };
            let port = u16::from_be_bytes([sin[2], sin[3]]);
            let ip = core::net::Ipv4Addr::new(sin[4], sin[5], sin[6], sin[7]);
            Ok(SockAddr::Inet((ip, port)))
        }
        AF_UNIX => {
            let path = &bytes[2..];
            // An abstract address starts with NUL and has no terminator.
            let path = if path.first() == Some(&0) {
                path
            } else {
                let end = path.iter().position(|&b| b == 0).unwrap_or(path.len());
                &path[..end]
            };
            Ok(SockAddr::Unix(String::from_utf8_lossy(path).into_owned()))
        }
        AF_UNSPEC => Ok(SockAddr::Unspec),
        _ => Err(EAFNOSUPPORT),
    }
}

/// The bytes of a `sockaddr_in` (or, with `None`, an unnamed `sockaddr_un`).
fn sockaddr_bytes(addr: Option<Addr>) -> Vec<u8> {
    match addr {
        Some((ip, port)) => {
            let mut out = vec![0u8; 16];
            out[..2].copy_from_slice(&AF_INET.to_ne_bytes());
            out[2..4].copy_from_slice(&port.to_be_bytes());
            out[4..8].copy_from_slice(&ip.octets());
            out
        }
        None => AF_UNIX.to_ne_bytes().to_vec(),
    }
}

/// Writes `name` for the program: what fits of it at `addr`, its whole length
/// at `len_addr` (nothing when `addr` is null).
fn write_name(addr: u64, len_addr: u64, name: &[u8]) -> Result<(), Errno> {
    if addr == 0 {
        return Ok(());
    }
    let len = uaccess::read::<i32>(len_addr)?;
    let len = usize::try_from(len).map_err(|_| EINVAL)?;
    let count = len.min(name.len());
    uaccess::copy_out(addr, &name[..count])?;
    uaccess::write::<u32>(len_addr, name.len() as u32)?;
    Ok(())
}

/// The socket behind `fd`: its open file (held for the call), its index, and
/// whether the file is non-blocking.
fn socket_of(fd: u64) -> Result<(FileRef, usize, bool), Errno> {
    let file = kernel().fds.get(fd)?;
    let (index, nonblocking) = {
        let open = file.borrow();
        match open.object {
            Object::Other(OtherKind::Socket, index) => (index, open.flags & O_NONBLOCK != 0),
            _ => return Err(ENOTSOCK),
        }
    };
    Ok((file, index, nonblocking))
}

/// Installs socket `index` at the lowest free descriptor.
fn install(index: usize, flags: u64) -> SysResult {
    let status = O_RDWR
        | if flags & SOCK_NONBLOCK != 0 {
            O_NONBLOCK
        } else {
            0
        };
    let file = FdTable::open_file(Object::Other(OtherKind::Socket, index), status);
    Ok(kernel().fds.insert(file, flags & SOCK_CLOEXEC != 0, 0)? as u64)
}

/// `socket`.
pub fn socket(domain: u64, kind: u64, protocol: u64) -> SysResult {
    if kind & !(0xf | SOCK_NONBLOCK | SOCK_CLOEXEC) != 0 {
        return Err(EINVAL);
    }
    let index = socket::create(domain, (kind & 0xf) as u32, protocol)?;
    install(index, kind)
}

/// `socketpair`: `AF_UNIX` stream pairs.
pub fn socketpair(domain: u64, kind: u64, protocol: u64, sv: u64) -> SysResult {
    if kind & !(0xf | SOCK_NONBLOCK | SOCK_CLOEXEC) != 0 {
        return Err(EINVAL);
    }
    if domain != u64::from(AF_UNIX) {
        return Err(if domain == u64::from(AF_INET) {
            EOPNOTSUPP
        } else {
            EAFNOSUPPORT
        });
    }
    if kind & 0xf != u64::from(SOCK_STREAM) {
        trace_note(format_args!(
            "socketpair: only SOCK_STREAM pairs are supported (type {}): EOPNOTSUPP",
            kind & 0xf
        ));
        return Err(EOPNOTSUPP);
    }
    if protocol != 0 {
        return Err(EPROTONOSUPPORT);
    }
    uaccess::bytes_mut(sv, 8)?;
    let (a, b) = socket::create_pair();
    let fd_a = match install(a, kind) {
        Ok(fd) => fd,
        Err(error) => {
            socket::release(b);
            return Err(error);
        }
    };
    let fd_b = match install(b, kind) {
        Ok(fd) => fd,
        Err(error) => {
            drop(kernel().fds.remove(fd_a));
            return Err(error);
        }
    };
    uaccess::write::<[i32; 2]>(sv, [fd_a as i32, fd_b as i32])?;
    Ok(0)
}

/// `bind`.
pub fn bind(fd: u64, addr: u64, len: u64) -> SysResult {
    let (_file, index, _) = socket_of(fd)?;
    let name = read_sockaddr(addr, len)?;
    if socket::is_unix(index) {
        return match name {
            SockAddr::Unix(_) => socket::bind_unix().map(|()| 0),
            _ => Err(EINVAL),
        };
    }
    match name {
        SockAddr::Inet(addr) => socket::bind(index, addr).map(|()| 0),
        _ => Err(EAFNOSUPPORT),
    }
}

/// `listen`.
pub fn listen(fd: u64, backlog: u64) -> SysResult {
    let (_file, index, _) = socket_of(fd)?;
    socket::listen(index, backlog as i32).map(|()| 0)
}

/// `accept4` (and `accept`, with no flags).
pub fn accept4(fd: u64, addr: u64, len_addr: u64, flags: u64) -> SysResult {
    if flags & !(SOCK_NONBLOCK | SOCK_CLOEXEC) != 0 {
        return Err(EINVAL);
    }
    let (_file, index, nonblocking) = socket_of(fd)?;
    let (accepted, peer) = socket::accept(index, nonblocking)?;
    let new_fd = install(accepted, flags)?;
    // As in Linux, a bad address buffer costs the connection (it is closed).
    if let Err(error) = write_name(addr, len_addr, &sockaddr_bytes(Some(peer))) {
        drop(kernel().fds.remove(new_fd));
        return Err(error);
    }
    Ok(new_fd)
}

/// `connect`.
pub fn connect(fd: u64, addr: u64, len: u64) -> SysResult {
    let (_file, index, nonblocking) = socket_of(fd)?;
    let name = read_sockaddr(addr, len)?;
    if socket::is_unix(index) {
        return match name {
            SockAddr::Unix(path) => socket::connect_unix(index, &path).map(|()| 0),
            _ => Err(EINVAL),
        };
    }
    match name {
        SockAddr::Inet(addr) => socket::connect(index, Some(addr), nonblocking).map(|()| 0),
        SockAddr::Unspec => socket::connect(index, None, nonblocking).map(|()| 0),
        SockAddr::Unix(_) => Err(EAFNOSUPPORT),
    }
}

/// `getsockname`.
pub fn getsockname(fd: u64, addr: u64, len_addr: u64) -> SysResult {
    let (_file, index, _) = socket_of(fd)?;
    if addr == 0 {
        return Err(EFAULT);
    }
    let name = socket::local_name(index)?;
    write_name(addr, len_addr, &sockaddr_bytes(name))?;
    Ok(0)
}

/// `getpeername`.
pub fn getpeername(fd: u64, addr: u64, len_addr: u64) -> SysResult {
    let (_file, index, _) = socket_of(fd)?;
    if addr == 0 {
        return Err(EFAULT);
    }
    let name = socket::peer_name(index)?;
    write_name(addr, len_addr, &sockaddr_bytes(name))?;
    Ok(0)
}

/// The destination a send names, if any (a TCP or `AF_UNIX` socket ignores it).
fn destination(index: usize, addr: u64, len: u64) -> Result<Option<Addr>, Errno> {
    if addr == 0 || socket::is_unix(index) {
        return Ok(None);
    }
    match read_sockaddr(addr, len)? {
        SockAddr::Inet(addr) => Ok(Some(addr)),
        SockAddr::Unspec => Ok(None),
        SockAddr::Unix(_) => Err(EAFNOSUPPORT),
    }
}

/// `sendto` (and `send`).
pub fn sendto(fd: u64, buf: u64, len: u64, flags: u64, addr: u64, addr_len: u64) -> SysResult {
    let (_file, index, nonblocking) = socket_of(fd)?;
    let data = uaccess::bytes(buf, len.min(IO_MAX))?;
    let dest = destination(index, addr, addr_len)?;
    socket::send(index, data, dest, flags as u32, nonblocking).map(|n| n as u64)
}

/// Writes where a message came from: nothing for a stream (its length word
/// becomes 0, as Linux leaves it), the sender of a datagram.
fn write_source(index: usize, addr: u64, len_addr: u64, from: Option<Addr>) -> Result<(), Errno> {
    if addr == 0 {
        return Ok(());
    }
    match from {
        Some(from) if !socket::is_stream(index) => {
            write_name(addr, len_addr, &sockaddr_bytes(Some(from)))
        }
        _ => uaccess::write::<u32>(len_addr, 0),
    }
}

/// `recvfrom` (and `recv`).
pub fn recvfrom(fd: u64, buf: u64, len: u64, flags: u64, addr: u64, len_addr: u64) -> SysResult {
    let (_file, index, nonblocking) = socket_of(fd)?;
    let buf = uaccess::bytes_mut(buf, len.min(IO_MAX))?;
    if addr != 0 {
        uaccess::read::<i32>(len_addr)?;
    }
    let got = socket::recv(index, buf, flags as u32, nonblocking)?;
    write_source(index, addr, len_addr, got.from)?;
    Ok(if flags as u32 & MSG_TRUNC != 0 {
        got.full
    } else {
        got.len
    } as u64)
}

/// A `struct msghdr` of the program's.
#[derive(Debug, Clone, Copy)]
struct MsgHdr {
    name: u64,
    name_len: u64,
    iov: u64,
    iov_len: u64,
    control: u64,
    control_len: u64,
}

/// Bytes of a `struct msghdr`.
const MSGHDR_BYTES: u64 = 56;

fn read_msghdr(addr: u64) -> Result<MsgHdr, Errno> {
    let raw = uaccess::read::<[u64; 7]>(addr)?;
    Ok(MsgHdr {
        name: raw[0],
        name_len: raw[1] & 0xffff_ffff,
        iov: raw[2],
        iov_len: raw[3],
        control: raw[4],
        control_len: raw[5],
    })
}

/// The (address, length) pairs of an iovec array.
fn iovecs(iov: u64, count: u64) -> Result<Vec<(u64, u64)>, Errno> {
    if count > UIO_MAXIOV {
        return Err(EMSGSIZE);
    }
    (0..count)
        .map(|i| {
            let [base, len] = uaccess::read::<[u64; 2]>(iov + i * 16)?;
            if len > IO_MAX {
                return Err(EINVAL);
            }
            Ok((base, len))
        })
        .collect()
}

fn send_msg(index: usize, header: &MsgHdr, flags: u32, nonblocking: bool) -> Result<usize, Errno> {
    let mut data = Vec::new();
    for (base, len) in iovecs(header.iov, header.iov_len)? {
        data.extend_from_slice(uaccess::bytes(base, len)?);
    }
    if header.control != 0 && header.control_len > 0 {
        if socket::is_unix(index) {
            trace_note(format_args!(
                "sendmsg: control messages (SCM_RIGHTS, SCM_CREDENTIALS) are not supported: EOPNOTSUPP"
            ));
            return Err(EOPNOTSUPP);
        }
        trace_note(format_args!("sendmsg: control messages ignored"));
    }
    let dest = if header.name != 0 {
        destination(index, header.name, header.name_len)?
    } else {
        None
    };
    socket::send(index, &data, dest, flags, nonblocking)
}

/// `sendmsg`.
pub fn sendmsg(fd: u64, msg: u64, flags: u64) -> SysResult {
    let (_file, index, nonblocking) = socket_of(fd)?;
    let header = read_msghdr(msg)?;
    send_msg(index, &header, flags as u32, nonblocking).map(|n| n as u64)
}

/// Receives one message into `header`'s buffers; fills in its name, control
/// length and flags. Returns the length `recvmsg` returns.
fn recv_msg(
    index: usize,
    msg: u64,
    header: &MsgHdr,
    flags: u32,
    nonblocking: bool,
) -> Result<usize, Errno> {
    let vecs = iovecs(header.iov, header.iov_len)?;
    let got = if let [(base, len)] = vecs.as_slice() {
        socket::recv(index, uaccess::bytes_mut(*base, *len)?, flags, nonblocking)?
    } else {
        // Checked first, so that a bad buffer does not cost a message.
        for (base, len) in &vecs {
            uaccess::bytes(*base, *len)?;
        }
        let total: u64 = vecs.iter().map(|(_, len)| *len).sum();
        let mut staging = vec![0u8; total.min(IO_MAX) as usize];
        let got = socket::recv(index, &mut staging, flags, nonblocking)?;
        let mut rest = &staging[..got.len];
        for (base, len) in vecs {
            let count = rest.len().min(len as usize);
            uaccess::copy_out(base, &rest[..count])?;
            rest = &rest[count..];
        }
        got
    };
    if header.name != 0 {
        match got.from {
            Some(from) if !socket::is_stream(index) => {
                let name = sockaddr_bytes(Some(from));
                let room = usize::try_from(header.name_len).unwrap_or(0);
                uaccess::copy_out(header.name, &name[..room.min(name.len())])?;
                uaccess::write::<u32>(msg + 8, name.len() as u32)?;
            }
            _ => uaccess::write::<u32>(msg + 8, 0)?,
        }
    }
    // No control messages are produced; msg_controllen = 0.
    uaccess::write::<u64>(msg + 40, 0)?;
    let truncated = got.full > got.len;
    uaccess::write::<i32>(msg + 48, if truncated { MSG_TRUNC as i32 } else { 0 })?;
    Ok(if flags & MSG_TRUNC != 0 {
        got.full
    } else {
        got.len
    })
}

/// `recvmsg`.
pub fn recvmsg(fd: u64, msg: u64, flags: u64) -> SysResult {
    let (_file, index, nonblocking) = socket_of(fd)?;
    let header = read_msghdr(msg)?;
    recv_msg(index, msg, &header, flags as u32, nonblocking).map(|n| n as u64)
}

/// Bytes of a `struct mmsghdr`.
const MMSGHDR_BYTES: u64 = MSGHDR_BYTES + 8;

/// `sendmmsg`.
pub fn sendmmsg(fd: u64, vec: u64, count: u64, flags: u64) -> SysResult {
    let (_file, index, nonblocking) = socket_of(fd)?;
    let count = count.min(UIO_MAXIOV);
    let mut sent = 0;
    for i in 0..count {
        let at = vec + i * MMSGHDR_BYTES;
        let result =
            read_msghdr(at).and_then(|header| send_msg(index, &header, flags as u32, nonblocking));
        match result {
            Ok(n) => {
                uaccess::write::<u32>(at + MSGHDR_BYTES, n as u32)?;
                sent += 1;
            }
            Err(_) if sent > 0 => break,
            Err(error) => return Err(error),
        }
    }
    Ok(sent)
}

/// `recvmmsg` (its timeout is not applied: Linux checks it only between
/// messages, and programs pass `MSG_WAITFORONE` or a non-blocking socket).
pub fn recvmmsg(fd: u64, vec: u64, count: u64, flags: u64, _timeout: u64) -> SysResult {
    let (_file, index, nonblocking) = socket_of(fd)?;
    let count = count.min(UIO_MAXIOV);
    let mut flags = flags as u32;
    let mut got = 0;
    for i in 0..count {
        let at = vec + i * MMSGHDR_BYTES;
        let result = read_msghdr(at)
            .and_then(|header| recv_msg(index, at, &header, flags & !MSG_WAITFORONE, nonblocking));
        match result {
            Ok(n) => {
                uaccess::write::<u32>(at + MSGHDR_BYTES, n as u32)?;
                got += 1;
                if flags & MSG_WAITFORONE != 0 {
                    flags |= MSG_DONTWAIT;
                }
            }
            Err(_) if got > 0 => break,
            Err(error) => return Err(error),
        }
    }
    Ok(got)
}

/// `shutdown`.
pub fn shutdown(fd: u64, how: u64) -> SysResult {
    let (_file, index, _) = socket_of(fd)?;
    socket::shutdown(index, how).map(|()| 0)
}

/// `setsockopt`.
pub fn setsockopt(fd: u64, level: u64, name: u64, value: u64, len: u64) -> SysResult {
    let (_file, index, _) = socket_of(fd)?;
    let len = u64::try_from(len as i32).map_err(|_| EINVAL)?;
    let value = uaccess::bytes(value, len.min(256))?;
    socket::set_option(index, level as u32, name as u32, value).map(|()| 0)
}

/// `getsockopt`.
pub fn getsockopt(fd: u64, level: u64, name: u64, value: u64, len_addr: u64) -> SysResult {
    let (_file, index, _) = socket_of(fd)?;
    let len = uaccess::read::<i32>(len_addr)?;
    let len = usize::try_from(len).map_err(|_| EINVAL)?;
    let option = socket::get_option(index, level as u32, name as u32)?;
    let count = len.min(option.len());
    uaccess::copy_out(value, &option[..count])?;
    uaccess::write::<u32>(len_addr, count as u32)?;
    Ok(0)
}
