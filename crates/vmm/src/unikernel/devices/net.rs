//! The network device: a tap interface on the host side, a receive and a transmit
//! ring in guest memory on the other (`lightvm_abi::devices`).
//!
//! [`NetDevice::service`] runs inside the `notify` and `poll` hypercalls: it sends
//! every frame the guest published on the transmit ring (one `writev` each, straight
//! from guest memory) and then reads frames from the tap straight into the receive
//! buffers the guest posted, until the tap is empty or the buffers run out. A frame
//! the host cannot take (its queue is full) is dropped, as a NIC would.

use lightvm_abi::devices::{NetDesc, NET_BUFFER_MAX, NET_DESC_MORE, NET_FRAME_MAX};
use lightvm_abi::devices::{NetSetupArgs, READY_NET};

use super::ring::Ring;
use crate::devices::tap::Tap;
use crate::unikernel::guest::{AbiViolation, Guest};

/// The MTU the guest is told: the tap's default.
pub const MTU: u32 = 1500;

/// Counters, for reports and tests.
#[derive(Debug, Default, Clone, Copy)]
pub struct NetStats {
    /// Frames sent to the tap.
    pub tx_frames: u64,
    /// Frames the tap refused (dropped).
    pub tx_dropped: u64,
    /// Frames delivered to the guest.
    pub rx_frames: u64,
}

/// A guest NIC backed by a tap.
pub struct NetDevice {
    tap: Tap,
    mac: [u8; 6],
    rx: Option<Ring<NetDesc>>,
    tx: Option<Ring<NetDesc>>,
    iov: Vec<libc::iovec>,
    stats: NetStats,
}

impl NetDevice {
    /// A device on `tap` with the MAC address `mac`; the guest attaches rings later.
    pub fn new(tap: Tap, mac: [u8; 6]) -> Self {
        Self {
            tap,
            mac,
            rx: None,
            tx: None,
            iov: Vec::new(),
            stats: NetStats::default(),
        }
    }

    /// The tap, for the event loop.
    pub fn tap(&self) -> &Tap {
        &self.tap
    }

    /// The counters so far.
    pub fn stats(&self) -> NetStats {
        self.stats
    }

    /// `net_setup`: attaches the guest's rings and fills in the link's parameters.
    pub fn setup(
        &mut self,
        guest: &Guest<'_>,
        args: &mut NetSetupArgs,
    ) -> Result<(), AbiViolation> {
        if self.rx.is_some() {
            return Err(AbiViolation(
                "net_setup: the rings are already attached".into(),
            ));
        }
        let rx = Ring::attach(guest, "net rx ring", args.rx_ring, args.rx_size)?;
        let tx = Ring::attach(guest, "net tx ring", args.tx_ring, args.tx_size)?;
        let overlap = |a: &Ring<NetDesc>, b: &Ring<NetDesc>| {
            let (a0, a1) = (a.entry_addr(0) - 16, a.entry_addr(a.size() - 1) + 16);
            let (b0, b1) = (b.entry_addr(0) - 16, b.entry_addr(b.size() - 1) + 16);
            a0 < b1 && b0 < a1
        };
        if overlap(&rx, &tx) {
            return Err(AbiViolation(
                "net_setup: the rx and tx rings overlap".into(),
            ));
        }
        self.rx = Some(rx);
        self.tx = Some(tx);
        args.present = 1;
        args.mtu = MTU;
        args.mac = [0; 8];
        args.mac[..6].copy_from_slice(&self.mac);
        Ok(())
    }

    /// Whether a readable tap could be served now (the guest has posted buffers).
    pub fn can_receive(&self, guest: &Guest<'_>) -> Result<bool, AbiViolation> {
        match &self.rx {
            Some(rx) => Ok(rx.pending(guest)? > 0),
            None => Ok(false),
        }
    }

    /// Sends what the guest queued, receives what the tap holds; returns
    /// [`READY_NET`] if frames were delivered or transmit slots freed.
    pub fn service(&mut self, guest: &Guest<'_>) -> Result<u64, AbiViolation> {
        let mut ready = 0;
        if self.transmit(guest)? > 0 {
            ready |= READY_NET;
        }
        if self.receive(guest)? > 0 {
            ready |= READY_NET;
        }
        Ok(ready)
    }

    fn transmit(&mut self, guest: &Guest<'_>) -> Result<u32, AbiViolation> {
        let Some(tx) = self.tx.as_mut() else {
            return Ok(0);
        };
        let pending = tx.pending(guest)?;
        let mut done = 0;
        while done < pending {
            // Gather one frame: consecutive slots until one without MORE.
            self.iov.clear();
            let mut frame_len: u64 = 0;
            let mut slots = 0;
            loop {
                let index = done + slots;
                let desc: NetDesc = tx.read(guest, index)?;
                let what = || format!("{} entry {}", tx.name(), tx.used().wrapping_add(index));
                let buffer = checked_buffer(guest, &what, &desc, Direction::FromGuest)?;
                frame_len += u64::from(desc.len);
                self.iov.push(libc::iovec {
                    iov_base: buffer.cast(),
                    iov_len: desc.len as usize,
                });
                slots += 1;
                if desc.flags & NET_DESC_MORE == 0 {
                    break;
                }
                if slots >= tx.size() {
                    return Err(AbiViolation(format!(
                        "{}: the frame starting at entry {} never ends: its MORE chain loops around all {} slots",
                        tx.name(),
                        tx.used().wrapping_add(done),
                        tx.size()
                    )));
                }
                if done + slots >= pending {
                    return Err(AbiViolation(format!(
                        "{}: the frame starting at entry {} continues past avail index {} (MORE set on its last published slot)",
                        tx.name(),
                        tx.used().wrapping_add(done),
                        tx.used().wrapping_add(pending)
                    )));
                }
            }
            if frame_len > u64::from(NET_FRAME_MAX) || frame_len < 14 {
                return Err(AbiViolation(format!(
                    "{}: a {frame_len}-byte frame at entry {}; frames are 14 to {NET_FRAME_MAX} bytes",
                    tx.name(),
                    tx.used().wrapping_add(done)
                )));
            }
            // SAFETY: every iovec points into guest memory, checked above to hold
            // its whole length; the memory stays mapped while the VM lives.
            match unsafe { self.tap.write_raw(&self.iov) } {
                Ok(true) => self.stats.tx_frames += 1,
                Ok(false) | Err(_) => self.stats.tx_dropped += 1,
            }
            done += slots;
        }
        tx.complete(guest, done)?;
        Ok(done)
    }

    fn receive(&mut self, guest: &Guest<'_>) -> Result<u32, AbiViolation> {
        let Some(rx) = self.rx.as_mut() else {
            return Ok(0);
        };
        let posted = rx.pending(guest)?;
        let mut filled = 0;
        while filled < posted {
            let mut desc: NetDesc = rx.read(guest, filled)?;
            let what = || format!("{} entry {}", rx.name(), rx.used().wrapping_add(filled));
            let ptr = checked_buffer(guest, &what, &desc, Direction::ToGuest)?;
            // SAFETY: `ptr..ptr+len` is guest memory, checked just above.
            match unsafe { self.tap.read_raw(ptr, desc.len as usize) } {
                Ok(Some(n)) => {
                    desc.len = n as u32;
                    desc.flags = 0;
                    rx.write(guest, filled, &desc)?;
                    filled += 1;
                    self.stats.rx_frames += 1;
                }
                Ok(None) => break,
                // The interface went away or down: nothing to deliver.
                Err(_) => break,
            }
        }
        rx.complete(guest, filled)?;
        Ok(filled)
    }
}

/// Which way a buffer's bytes move.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    /// The monitor reads it (a frame to send).
    FromGuest,
    /// The monitor writes it (a received frame).
    ToGuest,
}

/// The host address of the buffer `desc` names, once its length is within the
/// ABI's limit and all of it is guest memory the transfer may touch; `what` names
/// the slot in errors.
fn checked_buffer(
    guest: &Guest<'_>,
    what: &dyn Fn() -> String,
    desc: &NetDesc,
    direction: Direction,
) -> Result<*mut u8, AbiViolation> {
    if desc.len > NET_BUFFER_MAX {
        return Err(AbiViolation(format!(
            "{}: length {} is above the {NET_BUFFER_MAX}-byte limit",
            what(),
            desc.len
        )));
    }
    match direction {
        Direction::FromGuest => guest.check(what, desc.addr, u64::from(desc.len))?,
        Direction::ToGuest => guest.check_writable(what, desc.addr, u64::from(desc.len))?,
    }
    guest.host_ptr(desc.addr)
}
