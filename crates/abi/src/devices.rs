//! Devices: a network interface and a disk, driven through rings in guest memory.
//!
//! A VM exit costs tens of microseconds, so a guest never makes one per packet or per
//! sector. It describes its I/O in **rings** that live in its own memory and makes
//! one [`Hypercall::Notify`](super::Hypercall::Notify) (or
//! [`Hypercall::Poll`](super::Hypercall::Poll), which also waits) per batch. The vCPU
//! is stopped while the VMM looks at a ring, so there is no concurrency to guard
//! against and no memory barrier to get wrong: the VMM reads and writes rings only
//! inside those two hypercalls.
//!
//! # A ring
//!
//! A ring is a [`RingHeader`] followed by `size` entries (`size` a power of two, at
//! most [`RING_SIZE_MAX`]), at an 8-byte-aligned guest address the guest names once,
//! in the setup call. Entries are [`NetDesc`]s for the network rings and
//! [`BlockRequest`]s for the disk ring. Two free-running `u32` counters say who owns
//! which entry; entry `i` of the stream lives in slot `i % size`:
//!
//! * `avail` — written by the guest: it has handed entries `..avail` to the VMM;
//! * `used` — written by the VMM: it has finished entries `..used` and handed them
//!   back. The VMM keeps its own copy; what the guest writes there is ignored.
//!
//! The guest publishes work by filling slots and then advancing `avail`; it may
//! reuse a slot once `used` has passed it. `avail - used` (wrapping) can never exceed
//! `size`.
//!
//! # Network
//!
//! [`Hypercall::NetSetup`](super::Hypercall::NetSetup) attaches a receive and a
//! transmit ring of [`NetDesc`]s and returns the MAC address and MTU.
//!
//! * **Transmit**: each published descriptor holds a frame (an Ethernet frame without
//!   the FCS) at `addr..addr+len`. A frame may span consecutive slots: every slot
//!   but its last has [`NET_DESC_MORE`] set. The VMM sends the frames and advances
//!   `used`.
//! * **Receive**: each published descriptor is an empty buffer of `len` bytes. The
//!   VMM copies one frame into it, writes the frame's length into `len` and advances
//!   `used`; the guest reads it, then publishes the slot again with its capacity.
//!
//! # Block
//!
//! [`Hypercall::BlockSetup`](super::Hypercall::BlockSetup) attaches a ring of
//! [`BlockRequest`]s and returns the disk's size in [`SECTOR_SIZE`]-byte sectors and
//! whether it is read-only. The VMM executes every published request in order
//! during the next notify or poll, writes its `status` and advances `used`. A
//! [`BLOCK_FLUSH`] completes only once everything written before it is on stable
//! storage.
//!
//! # Broken rings
//!
//! Anything the guest writes is checked before use. An `avail` more than `size`
//! ahead of `used` (an index out of range), a buffer that does not lie wholly inside
//! guest memory or is longer than allowed, a frame whose [`NET_DESC_MORE`] chain never
//! ends (a ring that loops), a ring outside memory or of a bad size: each stops the
//! VM with an ABI-violation error naming the ring and the entry. A request the disk
//! cannot serve (past its end, a write to a read-only disk, an unknown operation) is
//! not a violation: it completes with an error status, as on a real disk.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// [`PollArgs::ready`](super::PollArgs::ready) bit: the network receive ring has
/// frames (or the transmit ring has free slots again).
pub const READY_NET: u64 = 1 << 0;
/// [`PollArgs::ready`](super::PollArgs::ready) bit: block requests completed.
pub const READY_BLOCK: u64 = 1 << 1;

/// Most slots a ring may have.
pub const RING_SIZE_MAX: u32 = 4096;
/// Alignment of a ring's guest address.
pub const RING_ALIGN: u64 = 8;

/// The start of every ring; `size` entries follow it directly.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct RingHeader {
    /// Written by the guest: entries before this are the VMM's to process.
    pub avail: u32,
    /// Reserved, zero.
    pub reserved0: u32,
    /// Written by the VMM: entries before this are done and back with the guest.
    pub used: u32,
    /// Reserved, zero.
    pub reserved1: u32,
}

/// Bytes a ring of `size` entries of `entry_size` bytes occupies.
pub const fn ring_bytes(size: u32, entry_size: usize) -> u64 {
    core::mem::size_of::<RingHeader>() as u64 + size as u64 * entry_size as u64
}

/// A network descriptor: one frame buffer (or part of a transmitted frame).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct NetDesc {
    /// Guest address of the buffer.
    pub addr: u64,
    /// Transmit: bytes of frame in the buffer. Receive: the buffer's capacity when
    /// the guest publishes it, the frame's length once the VMM hands it back.
    pub len: u32,
    /// [`NET_DESC_MORE`] (transmit only); the rest is reserved, zero.
    pub flags: u16,
    /// Reserved, zero.
    pub reserved: u16,
}

/// [`NetDesc::flags`]: the frame continues in the next slot.
pub const NET_DESC_MORE: u16 = 1 << 0;
/// Largest buffer one network descriptor may name.
pub const NET_BUFFER_MAX: u32 = 64 << 10;
/// Largest frame the VMM will send (a 64 KiB IP packet plus an Ethernet header).
pub const NET_FRAME_MAX: u32 = (64 << 10) + 14;

/// Argument of [`Hypercall::NetSetup`](super::Hypercall::NetSetup).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct NetSetupArgs {
    /// Guest address of the receive ring.
    pub rx_ring: u64,
    /// Guest address of the transmit ring.
    pub tx_ring: u64,
    /// Slots of the receive ring.
    pub rx_size: u32,
    /// Slots of the transmit ring.
    pub tx_size: u32,
    /// Out: 1 if the VM has a network device (the rings are then attached), 0 if not.
    pub present: u32,
    /// Out: the link's MTU (the largest IP packet; frames add a 14-byte header).
    pub mtu: u32,
    /// Out: the interface's MAC address in bytes 0..6; 6..8 are zero.
    pub mac: [u8; 8],
}

/// A disk request.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct BlockRequest {
    /// [`BLOCK_READ`], [`BLOCK_WRITE`] or [`BLOCK_FLUSH`].
    pub op: u32,
    /// Out: [`BLOCK_OK`] or one of the `BLOCK_E*` errors.
    pub status: u32,
    /// First sector (reads and writes).
    pub sector: u64,
    /// Guest address of the data (reads and writes).
    pub addr: u64,
    /// Bytes of data: a multiple of [`SECTOR_SIZE`], at most [`BLOCK_REQUEST_MAX`];
    /// ignored for a flush.
    pub len: u32,
    /// Reserved, zero.
    pub reserved: u32,
}

/// Bytes per sector.
pub const SECTOR_SIZE: u64 = 512;
/// Largest read or write one request may carry.
pub const BLOCK_REQUEST_MAX: u32 = 1 << 20;
/// [`BlockRequest::op`]: read sectors into guest memory.
pub const BLOCK_READ: u32 = 1;
/// [`BlockRequest::op`]: write sectors from guest memory.
pub const BLOCK_WRITE: u32 = 2;
/// [`BlockRequest::op`]: make every completed write durable.
pub const BLOCK_FLUSH: u32 = 3;
/// [`BlockRequest::status`]: done.
pub const BLOCK_OK: u32 = 0;
/// [`BlockRequest::status`]: the host's read, write or sync failed.
pub const BLOCK_EIO: u32 = 1;
/// [`BlockRequest::status`]: unknown operation.
pub const BLOCK_EUNSUPPORTED: u32 = 2;
/// [`BlockRequest::status`]: a write to a read-only disk.
pub const BLOCK_EREADONLY: u32 = 3;
/// [`BlockRequest::status`]: the sectors lie (partly) past the end of the disk.
pub const BLOCK_ERANGE: u32 = 4;

/// Argument of [`Hypercall::BlockSetup`](super::Hypercall::BlockSetup).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct BlockSetupArgs {
    /// Guest address of the request ring.
    pub ring: u64,
    /// Slots of the ring.
    pub size: u32,
    /// Out: 1 if the VM has a disk (the ring is then attached), 0 if not.
    pub present: u32,
    /// Out: the disk's size in sectors.
    pub sectors: u64,
    /// Out: 1 if writes are refused ([`BLOCK_EREADONLY`]).
    pub readonly: u32,
    /// Reserved, zero.
    pub reserved: u32,
}

/// Argument of [`Hypercall::Notify`](super::Hypercall::Notify).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct NotifyArgs {
    /// Out: the devices that have work for the guest ([`READY_NET`], [`READY_BLOCK`]).
    pub ready: u64,
}

const _: () = {
    assert!(core::mem::size_of::<RingHeader>() == 16);
    assert!(core::mem::size_of::<NetDesc>() == 16);
    assert!(core::mem::size_of::<BlockRequest>() == 32);
    assert!(RING_SIZE_MAX.is_power_of_two());
    assert!(NET_FRAME_MAX <= NET_BUFFER_MAX + 14);
};
