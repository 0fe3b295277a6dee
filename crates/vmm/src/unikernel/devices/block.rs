//! The block device: a raw disk image file, served through a request ring.
//!
//! Requests run synchronously inside the `notify` and `poll` hypercalls, in ring
//! order, with `pread`/`pwrite` straight between the file and guest memory; a flush
//! is `fdatasync`, so a guest that sees a flush complete knows its writes are on
//! stable storage. A request for sectors past the end of the disk, a write to a
//! read-only disk or an unknown operation completes with an error status; a buffer
//! outside guest memory or a malformed length stops the VM.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

use lightvm_abi::devices::{
    BlockRequest, BlockSetupArgs, BLOCK_EIO, BLOCK_ERANGE, BLOCK_EREADONLY, BLOCK_EUNSUPPORTED,
    BLOCK_FLUSH, BLOCK_OK, BLOCK_READ, BLOCK_REQUEST_MAX, BLOCK_WRITE, READY_BLOCK, SECTOR_SIZE,
};

use super::ring::Ring;
use crate::unikernel::guest::{AbiViolation, Guest};

/// A guest disk backed by a file.
pub struct BlockDevice {
    file: File,
    sectors: u64,
    readonly: bool,
    ring: Option<Ring<BlockRequest>>,
}

impl BlockDevice {
    /// Opens the image at `path` (read-only if `readonly`) and locks it against a
    /// second writer (a shared lock when read-only).
    pub fn open(path: &Path, readonly: bool) -> io::Result<Self> {
        let file = OpenOptions::new().read(true).write(!readonly).open(path)?;
        let lock = if readonly {
            libc::LOCK_SH
        } else {
            libc::LOCK_EX
        };
        // SAFETY: flock on an open descriptor we own.
        if unsafe { libc::flock(file.as_raw_fd(), lock | libc::LOCK_NB) } != 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(
                e.kind(),
                format!("the image is in use by another VM ({e})"),
            ));
        }
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a regular file (a raw disk image is expected)",
            ));
        }
        Ok(Self {
            file,
            sectors: meta.len() / SECTOR_SIZE,
            readonly,
            ring: None,
        })
    }

    /// The image file's descriptor.
    pub fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.file.as_raw_fd()
    }

    /// The disk's size in sectors.
    pub fn sectors(&self) -> u64 {
        self.sectors
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
        args.sectors = self.sectors;
        args.readonly = u32::from(self.readonly);
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
                    let count = u64::from(req.len) / SECTOR_SIZE;
                    let in_range = req
                        .sector
                        .checked_add(count)
                        .is_some_and(|end| end <= self.sectors);
                    if !in_range {
                        BLOCK_ERANGE
                    } else if req.op == BLOCK_WRITE && self.readonly {
                        BLOCK_EREADONLY
                    } else {
                        let offset = req.sector * SECTOR_SIZE;
                        // SAFETY: `ptr..ptr+len` is guest memory, checked above.
                        let result =
                            unsafe { transfer(&self.file, req.op, ptr, req.len as usize, offset) };
                        if result.is_ok() {
                            BLOCK_OK
                        } else {
                            BLOCK_EIO
                        }
                    }
                }
                BLOCK_FLUSH => {
                    if self.readonly || self.file.sync_data().is_ok() {
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

/// Reads (`BLOCK_READ`) or writes `len` bytes at `ptr` from or to the file at
/// `offset`, all of it or an error.
///
/// # Safety
///
/// `ptr..ptr+len` must be valid for reads and writes.
unsafe fn transfer(file: &File, op: u32, ptr: *mut u8, len: usize, offset: u64) -> io::Result<()> {
    let mut done = 0;
    while done < len {
        let at = libc::off_t::try_from(offset + done as u64)
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: the caller guarantees the buffer; `done < len` keeps us inside it.
        let n = unsafe {
            let buf = ptr.add(done);
            if op == BLOCK_READ {
                libc::pread(file.as_raw_fd(), buf.cast(), len - done, at)
            } else {
                libc::pwrite(file.as_raw_fd(), buf.cast(), len - done, at)
            }
        };
        match n {
            n if n > 0 => done += n as usize,
            0 => return Err(io::Error::from(io::ErrorKind::UnexpectedEof)),
            _ => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
    Ok(())
}
