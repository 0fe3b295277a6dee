//! The block device: a raw disk image file, served through a request ring.
//!
//! Requests run synchronously inside the `notify` and `poll` hypercalls, in ring
//! order, with `pread`/`pwrite` straight between the file and guest memory; a flush
//! is `fdatasync`, so a guest that sees a flush complete knows its writes are on
//! stable storage. A request for sectors past the end of the disk, a write to a
//! read-only disk or an unknown operation completes with an error status; a buffer
//! outside guest memory or a malformed length stops the VM. Opening, locking and
//! range checks are the [`Disk`]'s, the backend virtio-blk uses too.

use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

use lightvm_abi::devices::{
    BlockRequest, BlockSetupArgs, BLOCK_EIO, BLOCK_ERANGE, BLOCK_EREADONLY, BLOCK_EUNSUPPORTED,
    BLOCK_FLUSH, BLOCK_OK, BLOCK_READ, BLOCK_REQUEST_MAX, BLOCK_WRITE, READY_BLOCK, SECTOR_SIZE,
};

use super::ring::Ring;
use crate::devices::disk::Disk;
use crate::unikernel::guest::{AbiViolation, Guest};

// The ring's sectors are the disk's.
const _: () = assert!(SECTOR_SIZE == crate::devices::disk::SECTOR_SIZE);

/// A guest disk backed by a file.
pub struct BlockDevice {
    disk: Disk,
    ring: Option<Ring<BlockRequest>>,
}

impl BlockDevice {
    /// Opens the image at `path` (read-only if `readonly`) and locks it against a
    /// second writer (a shared lock when read-only).
    pub fn open(path: &Path, readonly: bool) -> io::Result<Self> {
        Ok(Self::new(Disk::open(path, readonly)?))
    }

    /// The device over a disk opened already.
    pub fn new(disk: Disk) -> Self {
        Self { disk, ring: None }
    }

    /// The image file's descriptor.
    pub fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.disk.as_raw_fd()
    }

    /// The disk's size in sectors.
    pub fn sectors(&self) -> u64 {
        self.disk.sectors()
    }

    /// `block_setup`: attaches the request ring.
    pub fn setup(
        &mut self,
        guest: &Guest<'_>,
        args: &mut BlockSetupArgs,
    ) -> Result<(), AbiViolation> {
        if self.ring.is_some() {
            return Err(AbiViolation(
                "block_setup: the ring is already attached".into(),
            ));
        }
        self.ring = Some(Ring::attach(guest, "block ring", args.ring, args.size)?);
        args.present = 1;
        args.sectors = self.disk.sectors();
        args.readonly = u32::from(self.disk.read_only());
        Ok(())
    }

    /// Runs every published request; [`READY_BLOCK`] if any completed.
    pub fn service(&mut self, guest: &Guest<'_>) -> Result<u64, AbiViolation> {
        let Some(ring) = self.ring.as_mut() else {
            return Ok(0);
        };
        let pending = ring.pending(guest)?;
        for offset in 0..pending {
            let mut req: BlockRequest = ring.read(guest, offset)?;
            let what = || format!("{} entry {}", ring.name(), ring.used().wrapping_add(offset));
            req.status = match req.op {
                BLOCK_READ | BLOCK_WRITE => {
                    if req.len > BLOCK_REQUEST_MAX
                        || !u64::from(req.len).is_multiple_of(SECTOR_SIZE)
                    {
                        return Err(AbiViolation(format!(
                            "{}: length {} is not a multiple of {SECTOR_SIZE} up to {BLOCK_REQUEST_MAX}",
                            what(),
                            req.len
                        )));
                    }
                    // A read writes guest memory: only where the guest may write.
                    if req.op == BLOCK_READ {
                        guest.check_writable(&what, req.addr, u64::from(req.len))?;
                    } else {
                        guest.check(&what, req.addr, u64::from(req.len))?;
                    }
                    let ptr = guest.host_ptr(req.addr)?;
                    let len = req.len as usize;
                    match self.disk.check_range(req.sector, u64::from(req.len)) {
                        Err(_) => BLOCK_ERANGE,
                        Ok(_) if req.op == BLOCK_WRITE && self.disk.read_only() => BLOCK_EREADONLY,
                        Ok(offset) => {
                            // SAFETY: `ptr..ptr+len` is guest memory, checked above
                            // (writable by the guest for a read).
                            let result = unsafe {
                                if req.op == BLOCK_READ {
                                    self.disk.read_raw(offset, ptr, len)
                                } else {
                                    self.disk.write_raw(offset, ptr, len)
                                }
                            };
                            if result.is_ok() {
                                BLOCK_OK
                            } else {
                                BLOCK_EIO
                            }
                        }
                    }
                }
                BLOCK_FLUSH => {
                    if self.disk.flush().is_ok() {
                        BLOCK_OK
                    } else {
                        BLOCK_EIO
                    }
                }
                _ => BLOCK_EUNSUPPORTED,
            };
            ring.write(guest, offset, &req)?;
        }
        ring.complete(guest, pending)?;
        Ok(if pending > 0 { READY_BLOCK } else { 0 })
    }
}
