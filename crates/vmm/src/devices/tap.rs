//! A host tap interface: the host end of a guest's Ethernet link.
//!
//! Opens `/dev/net/tun` and attaches to (or creates) the named interface with
//! `IFF_TAP | IFF_NO_PI`: every `read` returns one Ethernet frame and every `write`
//! sends one, with no packet-information prefix and no virtio-net header. The
//! descriptor is non-blocking, so the device can drain it until `EAGAIN` and wait for
//! it in an epoll set. Both guest kinds use it: the unikernel NIC through its rings
//! (`read_raw`/`write_raw`, straight into guest memory) and the Linux virtio-net
//! device as its `NetBackend` (`recv`/`send`).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

/// Longest interface name the kernel accepts (`IFNAMSIZ` - 1).
pub const IFNAME_MAX: usize = libc::IFNAMSIZ - 1;

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;

/// `struct ifreq` as TUNSETIFF reads it: a name and the flags.
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// An open tap interface.
#[derive(Debug)]
pub struct Tap {
    file: File,
    name: String,
}

impl Tap {
    /// Opens the tap interface `name`, creating it if it does not exist (which needs
    /// `CAP_NET_ADMIN`; attaching to one made by `ip tuntap add` needs only access).
    pub fn open(name: &str) -> io::Result<Self> {
        if name.is_empty() || name.len() > IFNAME_MAX || name.contains(['/', '\0', ' ']) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{name:?} is not a valid interface name (1 to {IFNAME_MAX} bytes)"),
            ));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")
            .map_err(|e| io::Error::new(e.kind(), format!("opening /dev/net/tun: {e}")))?;
        let mut req = IfReq {
            name: [0; libc::IFNAMSIZ],
            flags: IFF_TAP | IFF_NO_PI,
            _pad: [0; 22],
        };
        req.name[..name.len()].copy_from_slice(name.as_bytes());
        // SAFETY: TUNSETIFF reads (and may write back the name into) an ifreq, which
        // `req` is, alive and exclusively borrowed for the call.
        let rc = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF as _, &mut req) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(
                e.kind(),
                format!("attaching to tap interface {name}: {e}"),
            ));
        }
        Ok(Self {
            file,
            name: name.to_owned(),
        })
    }

    /// A tap opened elsewhere (handed over by the daemon): `file` must be a
    /// non-blocking `/dev/net/tun` descriptor attached to the interface `name`.
    pub fn from_file(file: File, name: String) -> Self {
        Self { file, name }
    }

    /// The open `/dev/net/tun` descriptor, to hand to another process.
    pub fn into_file(self) -> File {
        self.file
    }

    /// Reads one waiting frame into `buf`; `None` when none is waiting.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        match io::Read::read(&mut &self.file, buf) {
            Ok(n) => Ok(Some(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Sends one frame.
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        io::Write::write_all(&mut &self.file, frame)
    }

    /// The interface's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Reads one frame into `buf` (cut to `buf`'s length if longer); `Ok(None)` when
    /// no frame is waiting.
    ///
    /// # Safety
    ///
    /// `buf` must be valid for writes of `len` bytes.
    pub unsafe fn read_raw(&self, buf: *mut u8, len: usize) -> io::Result<Option<usize>> {
        loop {
            // SAFETY: the caller guarantees `buf..buf+len` is writable.
            let n = unsafe { libc::read(self.file.as_raw_fd(), buf.cast(), len) };
            if n >= 0 {
                return Ok(Some(n as usize));
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EAGAIN) => return Ok(None),
                _ => return Err(e),
            }
        }
    }

    /// Sends one frame gathered from `iov`; `Ok(false)` if the kernel's queue is full
    /// and the frame was not sent.
    ///
    /// # Safety
    ///
    /// Every `iovec` must describe readable memory.
    pub unsafe fn write_raw(&self, iov: &[libc::iovec]) -> io::Result<bool> {
        loop {
            // SAFETY: the caller guarantees each iovec is readable; the count is the
            // slice's length.
            let n = unsafe {
                libc::writev(
                    self.file.as_raw_fd(),
                    iov.as_ptr(),
                    iov.len() as libc::c_int,
                )
            };
            if n >= 0 {
                return Ok(true);
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EAGAIN) => return Ok(false),
                _ => return Err(e),
            }
        }
    }
}

impl AsRawFd for Tap {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_names_are_refused_before_any_system_call() {
        for bad in ["", "a/b", "x".repeat(IFNAME_MAX + 1).as_str()] {
            let err = Tap::open(bad).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{bad:?}");
        }
    }
}
