//! A raw disk image: the one disk backend of both guest kinds — the unikernel's
//! block ring and a Linux guest's virtio-blk.
//!
//! Everything a disk must get right is done once, here: the image is opened
//! without following it into a FIFO or a device (a regular file, or it is refused
//! with a line saying so), locked against a second VM (`flock`: exclusive for a
//! writable disk, shared for a read-only one, so two VMs never write one image and
//! nobody writes an image a VM reads), every request is checked against the
//! disk's end before the host touches the file, and a flush is `fdatasync`. The
//! devices only decode their guest's requests and move bytes: straight between
//! the file and guest memory (`pread`/`pwrite`), never through a buffer as large as
//! a guest says.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use vm_memory::bitmap::BitmapSlice;
use vm_memory::{ReadVolatile, VolatileMemoryError, VolatileSlice, WriteVolatile};

/// The sector: both guest protocols address disks in 512-byte units.
pub const SECTOR_SIZE: u64 = 512;

/// Why a request cannot be served: the guest hears it as an error status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    /// The length is not a whole number of sectors.
    #[error("{len} bytes is not a whole number of {SECTOR_SIZE}-byte sectors")]
    Unaligned {
        /// The length asked for.
        len: u64,
    },
    /// The request reaches past the last sector (or overflows).
    #[error("sectors {sector}+{count} are past the end of the {sectors}-sector disk")]
    PastTheEnd {
        /// First sector.
        sector: u64,
        /// Number of sectors.
        count: u64,
        /// The disk's size in sectors.
        sectors: u64,
    },
}

/// An open, locked raw disk image.
#[derive(Debug)]
pub struct Disk {
    file: File,
    sectors: u64,
    read_only: bool,
}

impl Disk {
    /// Opens the image at `path`, read-only if `read_only`, and locks it.
    ///
    /// The file is opened non-blocking, so that a FIFO named as a disk is refused
    /// instead of hanging the monitor until someone writes to it.
    pub fn open(path: &Path, read_only: bool) -> io::Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(!read_only)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY)
            .open(path)?;
        Self::from_file(file, read_only)
    }

    /// Takes an image opened elsewhere (handed over by a daemon, or a test's
    /// temporary file): checks it is a regular file and locks it.
    pub fn from_file(file: File, read_only: bool) -> io::Result<Self> {
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a regular file (a raw disk image is expected)",
            ));
        }
        let lock = if read_only {
            libc::LOCK_SH
        } else {
            libc::LOCK_EX
        };
        // SAFETY: flock on a descriptor this function owns; it reads no memory.
        if unsafe { libc::flock(file.as_raw_fd(), lock | libc::LOCK_NB) } != 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(
                e.kind(),
                format!("the image is in use by another VM ({e})"),
            ));
        }
        Ok(Self {
            sectors: meta.len() / SECTOR_SIZE,
            file,
            read_only,
        })
    }

    /// The disk's size in sectors (a partial last sector is not part of it).
    pub fn sectors(&self) -> u64 {
        self.sectors
    }

    /// Whether the guest's writes are refused.
    pub fn read_only(&self) -> bool {
        self.read_only
    }

    /// The byte offset of `sector` if `len` bytes from there are whole sectors on
    /// the disk.
    pub fn check_range(&self, sector: u64, len: u64) -> Result<u64, RangeError> {
        if !len.is_multiple_of(SECTOR_SIZE) {
            return Err(RangeError::Unaligned { len });
        }
        let count = len / SECTOR_SIZE;
        let past = RangeError::PastTheEnd {
            sector,
            count,
            sectors: self.sectors,
        };
        match sector.checked_add(count) {
            Some(end) if end <= self.sectors => Ok(sector * SECTOR_SIZE),
            _ => Err(past),
        }
    }

    /// Reads `len` bytes at byte `offset` (from [`Disk::check_range`]) into `buf`,
    /// all of them or an error.
    ///
    /// # Safety
    ///
    /// `buf..buf+len` must be valid for writes for the whole call.
    pub unsafe fn read_raw(&self, offset: u64, buf: *mut u8, len: usize) -> io::Result<()> {
        // SAFETY: forwarded from the caller.
        unsafe { self.transfer(Direction::Read, offset, buf, len) }
    }

    /// Writes `len` bytes from `buf` at byte `offset` (from
    /// [`Disk::check_range`]), all of them or an error; refused on a read-only disk.
    ///
    /// # Safety
    ///
    /// `buf..buf+len` must be valid for reads for the whole call.
    pub unsafe fn write_raw(&self, offset: u64, buf: *const u8, len: usize) -> io::Result<()> {
        if self.read_only {
            return Err(io::Error::from(io::ErrorKind::PermissionDenied));
        }
        // SAFETY: forwarded from the caller; a pwrite only reads the buffer.
        unsafe { self.transfer(Direction::Write, offset, buf.cast_mut(), len) }
    }

    /// Puts every completed write on stable storage (`fdatasync`); nothing to do
    /// on a read-only disk.
    pub fn flush(&self) -> io::Result<()> {
        if self.read_only {
            return Ok(());
        }
        self.file.sync_data()
    }

    /// A cursor at byte `offset`, for moving bytes between the disk and guest
    /// memory through vm-memory (which splits a buffer at region edges).
    pub fn at(&self, offset: u64) -> Cursor<'_> {
        Cursor { disk: self, offset }
    }

    /// # Safety
    ///
    /// `buf..buf+len` must be valid for writes (a read) or reads (a write).
    unsafe fn transfer(
        &self,
        direction: Direction,
        offset: u64,
        buf: *mut u8,
        len: usize,
    ) -> io::Result<()> {
        let mut done = 0;
        while done < len {
            let n = {
                // SAFETY: the caller guarantees the buffer; `done < len` keeps us
                // inside it.
                unsafe { self.once(direction, offset + done as u64, buf.add(done), len - done) }
            };
            match n {
                Ok(0) => return Err(io::Error::from(io::ErrorKind::UnexpectedEof)),
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// One `pread` or `pwrite`.
    ///
    /// # Safety
    ///
    /// As for [`Disk::transfer`].
    unsafe fn once(
        &self,
        direction: Direction,
        offset: u64,
        buf: *mut u8,
        len: usize,
    ) -> io::Result<usize> {
        let at = libc::off_t::try_from(offset)
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let fd = self.file.as_raw_fd();
        // SAFETY: the caller guarantees `buf..buf+len` for this direction.
        let n = unsafe {
            match direction {
                Direction::Read => libc::pread(fd, buf.cast(), len, at),
                Direction::Write => libc::pwrite(fd, buf.cast(), len, at),
            }
        };
        usize::try_from(n).map_err(|_| io::Error::last_os_error())
    }
}

impl AsRawFd for Disk {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

#[derive(Debug, Clone, Copy)]
enum Direction {
    Read,
    Write,
}

/// A position on a [`Disk`] that guest memory is read from or written to; it
/// moves on by what each call moved.
pub struct Cursor<'a> {
    disk: &'a Disk,
    offset: u64,
}

impl ReadVolatile for Cursor<'_> {
    fn read_volatile<B: BitmapSlice>(
        &mut self,
        buf: &mut VolatileSlice<B>,
    ) -> Result<usize, VolatileMemoryError> {
        let guard = buf.ptr_guard_mut();
        // SAFETY: a VolatileSlice describes `len` bytes of live, writable memory,
        // kept mapped by the guard for the call.
        let n = unsafe {
            self.disk
                .once(Direction::Read, self.offset, guard.as_ptr(), buf.len())
        }
        .map_err(VolatileMemoryError::IOError)?;
        buf.bitmap().mark_dirty(0, n);
        self.offset += n as u64;
        Ok(n)
    }
}

impl WriteVolatile for Cursor<'_> {
    fn write_volatile<B: BitmapSlice>(
        &mut self,
        buf: &VolatileSlice<B>,
    ) -> Result<usize, VolatileMemoryError> {
        if self.disk.read_only {
            return Err(VolatileMemoryError::IOError(io::Error::from(
                io::ErrorKind::PermissionDenied,
            )));
        }
        let guard = buf.ptr_guard();
        // SAFETY: a VolatileSlice describes `len` bytes of live memory, kept
        // mapped by the guard for the call; a pwrite only reads them.
        let n = unsafe {
            self.disk.once(
                Direction::Write,
                self.offset,
                guard.as_ptr().cast_mut(),
                buf.len(),
            )
        }
        .map_err(VolatileMemoryError::IOError)?;
        self.offset += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek};
    use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

    /// A scratch directory of this test process.
    fn scratch(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("lightvm-disk-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }

    /// An image of `sectors` sectors, each filled with its own number.
    fn image(name: &str, sectors: u64) -> std::path::PathBuf {
        let path = scratch(name);
        let bytes: Vec<u8> = (0..sectors * SECTOR_SIZE)
            .map(|i| (i / SECTOR_SIZE) as u8)
            .collect();
        std::fs::write(&path, bytes).unwrap();
        path
    }

    #[test]
    fn only_regular_files_are_disks() {
        let dir = scratch("a-directory");
        std::fs::create_dir_all(&dir).unwrap();
        let err = Disk::open(&dir, true).unwrap_err();
        assert!(err.to_string().contains("regular file"), "{err}");
        // A FIFO is refused at once rather than blocking the open.
        let fifo = scratch("a-fifo");
        let _ = std::fs::remove_file(&fifo);
        let name = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo reads a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o600) }, 0);
        let err = Disk::open(&fifo, true).unwrap_err();
        assert!(err.to_string().contains("regular file"), "{err}");
        assert!(Disk::open(Path::new("/dev/null"), true).is_err());
        let _ = std::fs::remove_file(&fifo);
    }

    #[test]
    fn a_writable_disk_is_exclusive_and_a_read_only_one_shared() {
        let path = image("locked.img", 4);
        let first = Disk::open(&path, false).unwrap();
        let err = Disk::open(&path, false).unwrap_err();
        assert!(err.to_string().contains("in use by another VM"), "{err}");
        assert!(Disk::open(&path, true).is_err(), "a reader beside a writer");
        drop(first);
        let a = Disk::open(&path, true).unwrap();
        let _b = Disk::open(&path, true).unwrap();
        assert!(Disk::open(&path, false).is_err(), "a writer beside readers");
        assert!(a.read_only());
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn ranges_are_whole_sectors_on_the_disk() {
        let disk = Disk::open(&image("ranges.img", 8), true).unwrap();
        assert_eq!(disk.sectors(), 8);
        assert_eq!(disk.check_range(2, 1024), Ok(1024));
        assert_eq!(disk.check_range(8, 0), Ok(8 * SECTOR_SIZE));
        assert_eq!(
            disk.check_range(0, 100),
            Err(RangeError::Unaligned { len: 100 })
        );
        assert!(matches!(
            disk.check_range(7, 1024),
            Err(RangeError::PastTheEnd { .. })
        ));
        assert!(matches!(
            disk.check_range(u64::MAX, 512),
            Err(RangeError::PastTheEnd { .. })
        ));
        let _ = std::fs::remove_file(scratch("ranges.img"));
    }

    #[test]
    fn bytes_move_between_the_file_and_memory() {
        let path = image("rw.img", 8);
        let disk = Disk::open(&path, false).unwrap();
        let mut buf = [0u8; 1024];
        // SAFETY: `buf` is a live local array of 1024 bytes.
        unsafe { disk.read_raw(1024, buf.as_mut_ptr(), buf.len()) }.unwrap();
        assert!(buf[..512].iter().all(|&b| b == 2) && buf[512..].iter().all(|&b| b == 3));
        let data = [0xabu8; 512];
        // SAFETY: `data` is a live local array of 512 bytes.
        unsafe { disk.write_raw(5 * SECTOR_SIZE, data.as_ptr(), data.len()) }.unwrap();
        disk.flush().unwrap();
        let mut file = File::open(&path).unwrap();
        let mut contents = Vec::new();
        file.read_to_end(&mut contents).unwrap();
        assert!(contents[5 * 512..6 * 512].iter().all(|&b| b == 0xab));
        // Reading past the end of the file is an error, never a short success.
        // SAFETY: as above.
        assert!(unsafe { disk.read_raw(8 * SECTOR_SIZE, buf.as_mut_ptr(), 512) }.is_err());
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn a_read_only_disk_refuses_writes_and_flushes_trivially() {
        let path = image("ro.img", 2);
        let disk = Disk::open(&path, true).unwrap();
        let data = [1u8; 512];
        // SAFETY: `data` is a live local array of 512 bytes.
        let err = unsafe { disk.write_raw(0, data.as_ptr(), 512) }.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
        disk.flush().unwrap();
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap();
        assert!(mem
            .write_all_volatile_to(GuestAddress(0), &mut disk.at(0), 512)
            .is_err());
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn a_cursor_moves_bytes_straight_into_guest_memory() {
        let path = image("cursor.img", 8);
        let disk = Disk::open(&path, false).unwrap();
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap();
        mem.read_exact_volatile_from(GuestAddress(0x1000), &mut disk.at(3 * SECTOR_SIZE), 1024)
            .unwrap();
        let mut got = [0u8; 1024];
        mem.read_slice(&mut got, GuestAddress(0x1000)).unwrap();
        assert!(got[..512].iter().all(|&b| b == 3) && got[512..].iter().all(|&b| b == 4));
        mem.write_slice(&[0x5a; 512], GuestAddress(0x2000)).unwrap();
        mem.write_all_volatile_to(GuestAddress(0x2000), &mut disk.at(0), 512)
            .unwrap();
        let mut file = File::open(&path).unwrap();
        file.rewind().unwrap();
        let mut first = [0u8; 512];
        file.read_exact(&mut first).unwrap();
        assert!(first.iter().all(|&b| b == 0x5a));
        let _ = std::fs::remove_file(&path);
    }
}
