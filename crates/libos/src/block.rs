//! The disk: sector reads, writes and flushes through the VMM's block ring.
//!
//! ```ignore
//! let mut disk = libos::block::Disk::open().expect("no --disk");
//! let mut sector = [0u8; 512];
//! disk.read(0, &mut sector)?;
//! disk.write(1, &sector)?;
//! disk.flush()?; // on stable storage once this returns Ok
//! ```
//!
//! Each call is one `notify` hypercall, however many sectors it moves: a transfer
//! is cut into requests of at most [`BLOCK_REQUEST_MAX`] bytes, all published on the
//! ring before the one exit. Buffers are the caller's own memory (guest memory is
//! identity-mapped), so nothing is copied inside the guest.

use core::fmt;

use crate::abi::devices::{
    BlockRequest, BlockSetupArgs, BLOCK_EIO, BLOCK_ERANGE, BLOCK_EREADONLY, BLOCK_FLUSH, BLOCK_OK,
    BLOCK_READ, BLOCK_REQUEST_MAX, BLOCK_WRITE, SECTOR_SIZE,
};
use crate::abi::Hypercall;
use crate::hypercall;
use crate::ring::GuestRing;

/// Slots of the request ring.
const RING_SIZE: u32 = 64;

/// Why a disk operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockError {
    /// The buffer is not a whole number of sectors.
    Unaligned,
    /// The sectors lie (partly) past the end of the disk.
    OutOfRange,
    /// The disk is read-only.
    ReadOnly,
    /// The host's I/O failed.
    Io,
    /// Any other status the VMM returned.
    Status(u32),
}

impl fmt::Display for BlockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BlockError::Unaligned => write!(f, "buffer is not a multiple of {SECTOR_SIZE} bytes"),
            BlockError::OutOfRange => f.write_str("sectors past the end of the disk"),
            BlockError::ReadOnly => f.write_str("the disk is read-only"),
            BlockError::Io => f.write_str("I/O error on the host"),
            BlockError::Status(s) => write!(f, "block status {s}"),
        }
    }
}

/// The VM's disk (`lightvm run --disk`).
pub struct Disk {
    ring: GuestRing<BlockRequest>,
    sectors: u64,
    readonly: bool,
}

impl Disk {
    /// Attaches the disk; `None` if the VM has none. Call once.
    pub fn open() -> Option<Disk> {
        let ring = GuestRing::<BlockRequest>::new(RING_SIZE);
        let mut args = BlockSetupArgs {
            ring: ring.addr(),
            size: ring.size(),
            ..Default::default()
        };
        // SAFETY: `args` is a live BlockSetupArgs; the ring it names is allocated and
        // never freed, as the VMM keeps using it.
        unsafe { hypercall::raw(Hypercall::BlockSetup, &mut args) };
        (args.present == 1).then_some(Disk {
            ring,
            sectors: args.sectors,
            readonly: args.readonly != 0,
        })
    }

    /// The disk's size in sectors of [`SECTOR_SIZE`] bytes.
    pub fn sectors(&self) -> u64 {
        self.sectors
    }

    /// Whether writes are refused.
    pub fn readonly(&self) -> bool {
        self.readonly
    }

    /// Reads `buf.len()` bytes (whole sectors) from `sector` on.
    pub fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        self.transfer(BLOCK_READ, sector, buf.as_mut_ptr() as u64, buf.len())
    }

    /// Writes `buf` (whole sectors) from `sector` on. Durable after [`Disk::flush`].
    pub fn write(&mut self, sector: u64, buf: &[u8]) -> Result<(), BlockError> {
        self.transfer(BLOCK_WRITE, sector, buf.as_ptr() as u64, buf.len())
    }

    /// Returns once every completed write is on stable storage.
    pub fn flush(&mut self) -> Result<(), BlockError> {
        let request = BlockRequest {
            op: BLOCK_FLUSH,
            ..Default::default()
        };
        self.run(&[request]).map(|_| ())
    }

    fn transfer(&mut self, op: u32, sector: u64, addr: u64, len: usize) -> Result<(), BlockError> {
        if len as u64 % SECTOR_SIZE != 0 {
            return Err(BlockError::Unaligned);
        }
        let mut batch = [BlockRequest::default(); RING_SIZE as usize];
        let mut done = 0usize;
        while done < len {
            let mut count = 0;
            while done < len && count < batch.len() {
                let chunk = (len - done).min(BLOCK_REQUEST_MAX as usize);
                batch[count] = BlockRequest {
                    op,
                    status: u32::MAX,
                    sector: sector + (done as u64) / SECTOR_SIZE,
                    addr: addr + done as u64,
                    len: chunk as u32,
                    reserved: 0,
                };
                done += chunk;
                count += 1;
            }
            self.run(&batch[..count])?;
        }
        Ok(())
    }

    /// Publishes `requests`, makes one notify and checks every status.
    fn run(&mut self, requests: &[BlockRequest]) -> Result<(), BlockError> {
        let first = self.ring.avail();
        for (i, request) in requests.iter().enumerate() {
            self.ring.write(first.wrapping_add(i as u32), *request);
        }
        self.ring.publish(requests.len() as u32);
        hypercall::notify();
        // The VMM runs every published request during the notify.
        let mut result = Ok(());
        for i in 0..requests.len() {
            let status = self.ring.read(first.wrapping_add(i as u32)).status;
            let error = match status {
                BLOCK_OK => continue,
                BLOCK_ERANGE => BlockError::OutOfRange,
                BLOCK_EREADONLY => BlockError::ReadOnly,
                BLOCK_EIO => BlockError::Io,
                other => BlockError::Status(other),
            };
            if result.is_ok() {
                result = Err(error);
            }
        }
        debug_assert_eq!(self.ring.used(), self.ring.avail());
        result
    }

    /// The request ring, for the test guest that shows the VMM refusing a broken one.
    #[doc(hidden)]
    pub fn raw_ring_for_tests(&mut self, index: u32, request: BlockRequest, avail: u32) {
        self.ring.write(index, request);
        self.ring.force_avail(avail);
        hypercall::notify();
    }
}
