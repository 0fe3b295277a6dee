//! Root filesystems for Linux programs: a directory packed into the cpio (newc)
//! archive the Linux personality unpacks, with the launch file that says what to
//! run (`/.lightvm/launch`).
//!
//! The archive is what the monitor maps into guest memory as the VM's module, so
//! packing is a walk of the directory with no compression: symbolic links stay
//! links, files are copied whole, devices, FIFOs and sockets are left out (the
//! personality makes its own `/dev`). Owners and modes are kept.
//!
//! The walk never leaves the root, whatever the root holds or does meanwhile: it
//! goes from directory descriptor to directory descriptor (`openat`, `fstatat`,
//! `readlinkat` relative to the directory being read), never through a path, and
//! opens nothing through a symbolic link (`O_NOFOLLOW`); a link is stored as the
//! link it is, for the personality to resolve inside the VM. Regular files are
//! located with `O_PATH` (which opens no device and does not wait on a FIFO) and
//! only then opened for reading, so an entry swapped for a FIFO or a device while
//! the walk runs is never opened. It stays on the root's file system, as `tar
//! --one-file-system` does: a mount point inside the root (a chroot's `/proc`,
//! `/sys`, `/dev`) is packed as an empty directory. The program to run is looked
//! up the same way, inside the root, before anything is packed.
//!
//! [`PackLimits`] bounds what is packed (the archive's size, the depth of the
//! tree) and lets a caller stop a packing that is no longer wanted: the daemon
//! packs a client's directory, and neither a huge tree nor a client that went
//! away may cost it more than the bound.

use std::ffi::{CStr, CString, OsStr};
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// The launch file's one definition, shared with the personality that reads it.
pub use personality_core::launch::{Launch, DEFAULT_ENV};

/// Deepest directory nesting packed: far deeper than any root filesystem, and a
/// bound on the descriptors (one per level) and stack a walk holds.
pub const MAX_DEPTH: usize = 128;
/// Longest path of an entry inside the archive (Linux's `PATH_MAX`): a program
/// could not name a longer one.
pub const MAX_NAME: usize = 4096;
/// Symbolic links followed when the program's path is looked up (Linux's own
/// bound, `MAXSYMLINKS`).
const MAX_LINK_HOPS: usize = 40;

/// What one packing may cost, and how to stop it.
#[derive(Debug, Clone, Copy)]
pub struct PackLimits<'a> {
    /// The largest archive, in bytes: packing stops with [`RootfsError::TooLarge`]
    /// before it writes more.
    pub max_bytes: u64,
    /// Looked at between entries and between chunks of a file: once it is set,
    /// packing stops with [`RootfsError::Cancelled`].
    pub cancel: Option<&'a AtomicBool>,
}

impl PackLimits<'_> {
    /// No bound but the archive format's (what `lightvm run` packs: the monitor
    /// then says whether the archive fits the VM's memory).
    pub const UNBOUNDED: PackLimits<'static> = PackLimits {
        max_bytes: u64::MAX,
        cancel: None,
    };
}

/// Why a root filesystem could not be packed.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    /// A directory or file of the root could not be read.
    #[error("root filesystem {path}: {source}")]
    Read {
        /// What was being read.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The root is not a directory.
    #[error("root filesystem {path}: not a directory")]
    NotADirectory {
        /// The root.
        path: PathBuf,
    },
    /// The archive could not be written.
    #[error("writing the root filesystem archive: {source}")]
    Write {
        /// The I/O error.
        source: io::Error,
    },
    /// A path or argument holds a NUL byte, which no Linux string can.
    #[error("{0:?} holds a NUL byte")]
    Nul(String),
    /// The program is not in the root filesystem.
    #[error("{exe} is not a file in the root filesystem {root}")]
    NoProgram {
        /// The program's path.
        exe: String,
        /// The root filesystem.
        root: PathBuf,
    },
    /// The archive would be larger than [`PackLimits::max_bytes`].
    #[error("root filesystem {root}: packs to more than {limit} bytes")]
    TooLarge {
        /// The root filesystem.
        root: PathBuf,
        /// The bound.
        limit: u64,
    },
    /// One file is larger than a cpio (newc) entry can hold.
    #[error("{path}: {size} bytes, more than a cpio archive holds in one file (4 GiB)")]
    FileTooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
    },
    /// The tree is nested deeper than [`MAX_DEPTH`] or its paths are longer
    /// than [`MAX_NAME`].
    #[error("{path}: nested deeper than {MAX_DEPTH} directories or {MAX_NAME} bytes of path")]
    TooDeep {
        /// Where.
        path: PathBuf,
    },
    /// An entry changed (replaced, shrunk) while it was packed.
    #[error("{path} changed while it was packed")]
    Changed {
        /// The entry.
        path: PathBuf,
    },
    /// [`PackLimits::cancel`] was set.
    #[error("packing the root filesystem was cancelled")]
    Cancelled,
}

impl RootfsError {
    /// Whether the kernel refused to let the packer read something (the daemon
    /// packs with its client's rights: that client may not read it).
    pub fn is_permission_denied(&self) -> bool {
        matches!(self, RootfsError::Read { source, .. }
            if source.kind() == io::ErrorKind::PermissionDenied)
    }
}

/// Packs `root` and `launch` into a cpio archive at `out` (created or
/// truncated); returns its size.
pub fn pack(root: &Path, launch: &Launch, out: &Path) -> Result<u64, RootfsError> {
    let file = File::create(out).map_err(|source| RootfsError::Write { source })?;
    pack_into(root, launch, &file, PackLimits::UNBOUNDED)
}

/// Packs `root` and `launch` into `out`, from its current offset, within
/// `limits`; returns the archive's size. The program is looked up in the root
/// first: a missing one fails before anything is read.
pub fn pack_into(
    root: &Path,
    launch: &Launch,
    out: &File,
    limits: PackLimits<'_>,
) -> Result<u64, RootfsError> {
    let launch_bytes = launch.encode().map_err(RootfsError::Nul)?;
    let root_fd = open_root(root)?;
    let root_stat = fstat(&root_fd).map_err(read_error(root))?;
    find_program(&root_fd, root_stat.st_dev, root, &launch.exe)?;
    let too_large = || RootfsError::TooLarge {
        root: root.to_owned(),
        limit: limits.max_bytes,
    };
    // Room is kept for what follows the tree: the launch file and the trailer.
    let tail = entry_size(LAUNCH_DIR.len(), 0)
        + entry_size(LAUNCH_FILE.len(), launch_bytes.len() as u64)
        + entry_size(TRAILER.len(), 0);
    let budget = limits.max_bytes.checked_sub(tail).ok_or_else(too_large)?;
    let mut walker = Walker {
        archive: Archive {
            out: BufWriter::with_capacity(COPY_CHUNK, out),
            inode: 1,
            written: 0,
            limit: budget,
        },
        root,
        root_dev: root_stat.st_dev,
        max_bytes: limits.max_bytes,
        cancel: limits.cancel,
        buffer: vec![0; COPY_CHUNK],
    };
    walker.header(".", &Meta::of(&root_stat), 0)?;
    walker.walk(&root_fd, "", 1)?;
    let mut archive = walker.archive;
    archive.limit = limits.max_bytes;
    let mut synthetic = |name: &str, mode: u32, data: &[u8]| {
        let meta = Meta {
            mode,
            uid: 0,
            gid: 0,
            mtime: 0,
        };
        archive.header(name, &meta, data.len() as u64)?;
        archive
            .data(data)
            .and_then(|()| archive.pad(data.len() as u64))
            .map_err(ArchiveError::Io)
    };
    synthetic(LAUNCH_DIR, 0o040755, &[])
        .and_then(|()| synthetic(LAUNCH_FILE, 0o100444, &launch_bytes))
        .and_then(|()| synthetic(TRAILER, 0, &[]))
        .map_err(|e| e.into_error(too_large))?;
    archive
        .out
        .flush()
        .map_err(|source| RootfsError::Write { source })?;
    Ok(archive.written)
}

const LAUNCH_DIR: &str = ".lightvm";
const LAUNCH_FILE: &str = ".lightvm/launch";
const TRAILER: &str = "TRAILER!!!";
/// Bytes copied at a time (and between two looks at [`PackLimits::cancel`]).
const COPY_CHUNK: usize = 256 << 10;

fn read_error(path: &Path) -> impl FnOnce(io::Error) -> RootfsError + '_ {
    move |source| RootfsError::Read {
        path: path.to_owned(),
        source,
    }
}

/// Opens the root: a directory (the path is the caller's own, so links in it are
/// followed; nothing inside the root is).
fn open_root(root: &Path) -> Result<OwnedFd, RootfsError> {
    let c_root = CString::new(root.as_os_str().as_bytes())
        .map_err(|_| RootfsError::Nul(root.display().to_string()))?;
    // SAFETY: open reads a NUL-terminated path that outlives the call.
    let fd = unsafe {
        libc::open(
            c_root.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        let error = io::Error::last_os_error();
        return Err(match error.raw_os_error() {
            Some(libc::ENOTDIR) => RootfsError::NotADirectory {
                path: root.to_owned(),
            },
            _ => read_error(root)(error),
        });
    }
    // SAFETY: open just returned this descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Checks that `exe` names a regular file inside the root, resolving `..` and
/// symbolic links as the personality will, inside the VM: an absolute link starts
/// again at the root, `..` at the root stays there, and nothing outside the root
/// (or on another file system mounted in it, which is not packed) is looked at.
fn find_program(
    root: &OwnedFd,
    root_dev: u64,
    root_path: &Path,
    exe: &str,
) -> Result<(), RootfsError> {
    let missing = || RootfsError::NoProgram {
        exe: exe.to_owned(),
        root: root_path.to_owned(),
    };
    let mut pending: std::collections::VecDeque<Vec<u8>> = split(exe.as_bytes()).collect();
    // The directories walked into below the root; the last is the current one.
    let mut dirs: Vec<OwnedFd> = Vec::new();
    let mut hops = 0;
    while let Some(part) = pending.pop_front() {
        if part == b"." {
            continue;
        }
        if part == b".." {
            dirs.pop();
            continue;
        }
        let here = dirs.last().unwrap_or(root);
        let name = CString::new(part).map_err(|_| missing())?;
        let stat = fstatat(here, &name).map_err(|_| missing())?;
        match stat.st_mode & libc::S_IFMT {
            libc::S_IFREG if pending.is_empty() => return Ok(()),
            libc::S_IFDIR if !pending.is_empty() && stat.st_dev == root_dev => {
                let dir = openat(
                    here,
                    &name,
                    libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW,
                )
                .map_err(|_| missing())?;
                dirs.push(dir);
            }
            libc::S_IFLNK => {
                hops += 1;
                if hops > MAX_LINK_HOPS {
                    return Err(missing());
                }
                let target = readlinkat(here, &name).map_err(|_| missing())?;
                if target.first() == Some(&b'/') {
                    dirs.clear();
                }
                for part in split(&target).rev() {
                    pending.push_front(part);
                }
            }
            _ => return Err(missing()),
        }
    }
    Err(missing())
}

/// The non-empty components of a path.
fn split(path: &[u8]) -> impl DoubleEndedIterator<Item = Vec<u8>> + '_ {
    path.split(|&b| b == b'/')
        .filter(|part| !part.is_empty())
        .map(<[u8]>::to_vec)
}

/// The size of an archive entry: its header and name, then its data, each padded
/// to 4 bytes.
fn entry_size(name_len: usize, data_len: u64) -> u64 {
    (110 + name_len as u64 + 1).next_multiple_of(4) + data_len.next_multiple_of(4)
}

/// The walk of the root, writing each entry as it finds it.
struct Walker<'a> {
    archive: Archive<'a>,
    root: &'a Path,
    root_dev: u64,
    /// The bound the caller set (the archive's own limit keeps room for the
    /// launch file and the trailer).
    max_bytes: u64,
    cancel: Option<&'a AtomicBool>,
    buffer: Vec<u8>,
}

impl Walker<'_> {
    fn check_cancel(&self) -> Result<(), RootfsError> {
        match self.cancel {
            Some(cancel) if cancel.load(Ordering::Relaxed) => Err(RootfsError::Cancelled),
            _ => Ok(()),
        }
    }

    fn host_path(&self, inside: &str) -> PathBuf {
        self.root.join(inside)
    }

    fn too_large(&self) -> RootfsError {
        RootfsError::TooLarge {
            root: self.root.to_owned(),
            limit: self.max_bytes,
        }
    }

    fn header(&mut self, name: &str, meta: &Meta, data_len: u64) -> Result<(), RootfsError> {
        let (root, limit) = (self.root, self.max_bytes);
        self.archive.header(name, meta, data_len).map_err(|e| {
            e.into_error(|| RootfsError::TooLarge {
                root: root.to_owned(),
                limit,
            })
        })
    }

    /// Packs the entries of `dir` (`prefix` inside the root), `depth` levels down.
    fn walk(&mut self, dir: &OwnedFd, prefix: &str, depth: usize) -> Result<(), RootfsError> {
        for name in self.list(dir, prefix)? {
            self.check_cancel()?;
            // The launch directory is the packer's own.
            if prefix.is_empty() && name == OsStr::new(LAUNCH_DIR) {
                continue;
            }
            let inside = match prefix {
                "" => name.to_string_lossy().into_owned(),
                _ => format!("{prefix}/{}", name.to_string_lossy()),
            };
            if inside.len() > MAX_NAME {
                return Err(RootfsError::TooDeep {
                    path: self.host_path(&inside),
                });
            }
            let c_name = CString::new(name.as_bytes()).map_err(|_| RootfsError::Changed {
                path: self.host_path(&inside),
            })?;
            let stat = match fstatat(dir, &c_name) {
                Ok(stat) => stat,
                // Removed since it was listed: as if it had not been there.
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
                Err(e) => return Err(read_error(&self.host_path(&inside))(e)),
            };
            match stat.st_mode & libc::S_IFMT {
                libc::S_IFDIR => {
                    self.header(&inside, &Meta::of(&stat), 0)?;
                    // A mount point: packed as the empty directory it covers.
                    if stat.st_dev != self.root_dev {
                        continue;
                    }
                    if depth >= MAX_DEPTH {
                        return Err(RootfsError::TooDeep {
                            path: self.host_path(&inside),
                        });
                    }
                    let sub = self.open_same(
                        dir,
                        &c_name,
                        &inside,
                        &stat,
                        libc::O_RDONLY | libc::O_DIRECTORY,
                    )?;
                    self.walk(&sub, &inside, depth + 1)?;
                }
                libc::S_IFREG => self.file(dir, &c_name, &inside, &stat)?,
                libc::S_IFLNK => {
                    let target = readlinkat(dir, &c_name).map_err(|_| RootfsError::Changed {
                        path: self.host_path(&inside),
                    })?;
                    self.header(&inside, &Meta::of(&stat), target.len() as u64)?;
                    self.write(&target)?;
                    self.pad(target.len() as u64)?;
                }
                // Devices, FIFOs and sockets: the personality has its own /dev.
                _ => {}
            }
        }
        Ok(())
    }

    /// The names in `dir`, sorted (so that an archive of one tree is always the
    /// same); what they will take in the archive is counted as they are read, so
    /// a directory of millions of entries is refused before it is held.
    fn list(&self, dir: &OwnedFd, prefix: &str) -> Result<Vec<std::ffi::OsString>, RootfsError> {
        let here = self.host_path(prefix);
        // The directory itself, reopened through its descriptor: no path is
        // looked up again.
        let entries = std::fs::read_dir(format!("/proc/self/fd/{}", dir.as_raw_fd()))
            .map_err(read_error(&here))?;
        let mut names = Vec::new();
        let mut bound = self.archive.written;
        for entry in entries {
            let name = entry.map_err(read_error(&here))?.file_name();
            bound += entry_size(prefix.len() + 1 + name.len(), 0);
            if bound > self.archive.limit {
                return Err(self.too_large());
            }
            names.push(name);
        }
        names.sort();
        Ok(names)
    }

    /// Opens `name` in `dir` with `flags`, never through a link, and checks that
    /// it is the entry `stat` describes (not one swapped in since).
    fn open_same(
        &self,
        dir: &OwnedFd,
        name: &CStr,
        inside: &str,
        stat: &libc::stat,
        flags: libc::c_int,
    ) -> Result<OwnedFd, RootfsError> {
        let changed = || RootfsError::Changed {
            path: self.host_path(inside),
        };
        let fd =
            openat(dir, name, flags | libc::O_NOFOLLOW).map_err(|e| match e.raw_os_error() {
                Some(libc::ELOOP | libc::ENOTDIR | libc::ENOENT) => changed(),
                _ => read_error(&self.host_path(inside))(e),
            })?;
        let opened = fstat(&fd).map_err(read_error(&self.host_path(inside)))?;
        if (opened.st_dev, opened.st_ino) != (stat.st_dev, stat.st_ino) {
            return Err(changed());
        }
        Ok(fd)
    }

    /// Packs one regular file: located with `O_PATH` (no device is opened, no FIFO
    /// waited on), checked, then that very inode opened for reading; exactly the
    /// size it had then is copied.
    fn file(
        &mut self,
        dir: &OwnedFd,
        name: &CStr,
        inside: &str,
        stat: &libc::stat,
    ) -> Result<(), RootfsError> {
        let located = self.open_same(dir, name, inside, stat, libc::O_PATH)?;
        let stat = fstat(&located).map_err(read_error(&self.host_path(inside)))?;
        if stat.st_mode & libc::S_IFMT != libc::S_IFREG {
            return Err(RootfsError::Changed {
                path: self.host_path(inside),
            });
        }
        let size = u64::try_from(stat.st_size).unwrap_or(0);
        if size > u64::from(u32::MAX) {
            return Err(RootfsError::FileTooLarge {
                path: self.host_path(inside),
                size,
            });
        }
        let reopen = CString::new(format!("/proc/self/fd/{}", located.as_raw_fd()))
            .map_err(|_| RootfsError::Nul(inside.to_owned()))?;
        let mut file = File::from(
            open(&reopen, libc::O_RDONLY | libc::O_NOCTTY | libc::O_NONBLOCK)
                .map_err(read_error(&self.host_path(inside)))?,
        );
        self.header(inside, &Meta::of(&stat), size)?;
        let mut left = size;
        while left > 0 {
            self.check_cancel()?;
            let chunk = usize::try_from(left)
                .unwrap_or(usize::MAX)
                .min(self.buffer.len());
            let n = match file.read(&mut self.buffer[..chunk]) {
                Ok(0) => {
                    return Err(RootfsError::Changed {
                        path: self.host_path(inside),
                    })
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(read_error(&self.host_path(inside))(e)),
            };
            self.archive
                .out
                .write_all(&self.buffer[..n])
                .map_err(|source| RootfsError::Write { source })?;
            self.archive.written += n as u64;
            left -= n as u64;
        }
        self.pad(size)
    }

    fn write(&mut self, data: &[u8]) -> Result<(), RootfsError> {
        self.archive
            .data(data)
            .map_err(|source| RootfsError::Write { source })
    }

    fn pad(&mut self, data_len: u64) -> Result<(), RootfsError> {
        self.archive
            .pad(data_len)
            .map_err(|source| RootfsError::Write { source })
    }
}

/// What an entry's header says of it.
#[derive(Debug, Clone, Copy)]
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: u32,
}

impl Meta {
    fn of(stat: &libc::stat) -> Self {
        Self {
            mode: stat.st_mode,
            uid: stat.st_uid,
            gid: stat.st_gid,
            mtime: u32::try_from(stat.st_mtime).unwrap_or(0),
        }
    }
}

/// Why the archive writer stopped.
enum ArchiveError {
    /// The entry would take the archive past its limit.
    Full,
    /// Writing failed.
    Io(io::Error),
}

impl ArchiveError {
    fn into_error(self, full: impl FnOnce() -> RootfsError) -> RootfsError {
        match self {
            ArchiveError::Full => full(),
            ArchiveError::Io(source) => RootfsError::Write { source },
        }
    }
}

/// A cpio "newc" writer that counts what it writes, and refuses an entry that
/// would take it past its limit before writing any of it.
struct Archive<'a> {
    out: BufWriter<&'a File>,
    inode: u32,
    written: u64,
    limit: u64,
}

impl Archive<'_> {
    /// Writes an entry's header and name; `data_len` bytes of data must follow
    /// ([`Archive::data`], then [`Archive::pad`]).
    fn header(&mut self, name: &str, meta: &Meta, data_len: u64) -> Result<(), ArchiveError> {
        let size = u32::try_from(data_len).map_err(|_| ArchiveError::Full)?;
        if self.written + entry_size(name.len(), data_len) > self.limit {
            return Err(ArchiveError::Full);
        }
        let namesize = name.len() + 1;
        let Meta {
            mode,
            uid,
            gid,
            mtime,
        } = *meta;
        let header = format!(
            "070701{:08x}{mode:08x}{uid:08x}{gid:08x}{:08x}{mtime:08x}{size:08x}{:08x}{:08x}{:08x}{:08x}{namesize:08x}{:08x}",
            self.inode, 1, 0, 0, 0, 0, 0
        );
        self.inode = self.inode.wrapping_add(1);
        self.data(header.as_bytes())
            .and_then(|()| self.data(name.as_bytes()))
            .and_then(|()| self.data(&[0]))
            .and_then(|()| self.pad(110 + namesize as u64))
            .map_err(ArchiveError::Io)
    }

    fn data(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn pad(&mut self, written: u64) -> io::Result<()> {
        let padding = (4 - written % 4) % 4;
        self.data(&[0; 3][..padding as usize])
    }
}

fn fstat(fd: &OwnedFd) -> io::Result<libc::stat> {
    // SAFETY: stat is plain data; all-zero is a valid value.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat writes one stat into the struct we own.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut stat) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(stat)
}

/// `fstatat` of `name` in `dir`, not following a link.
fn fstatat(dir: &OwnedFd, name: &CStr) -> io::Result<libc::stat> {
    // SAFETY: as in `fstat`.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstatat reads a NUL-terminated name and writes one stat we own.
    let rc = unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            &mut stat,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(stat)
}

fn openat(dir: &OwnedFd, name: &CStr, flags: libc::c_int) -> io::Result<OwnedFd> {
    owned(
        // SAFETY: openat reads a NUL-terminated name that outlives the call.
        unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags | libc::O_CLOEXEC) },
    )
}

fn open(path: &CStr, flags: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: open reads a NUL-terminated path that outlives the call.
    owned(unsafe { libc::open(path.as_ptr(), flags | libc::O_CLOEXEC) })
}

fn owned(fd: RawFd) -> io::Result<OwnedFd> {
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The target of link `name` in `dir`.
fn readlinkat(dir: &OwnedFd, name: &CStr) -> io::Result<Vec<u8>> {
    let mut target = vec![0u8; MAX_NAME + 1];
    // SAFETY: readlinkat writes at most `len` bytes into the buffer we own.
    let n = unsafe {
        libc::readlinkat(
            dir.as_raw_fd(),
            name.as_ptr(),
            target.as_mut_ptr().cast(),
            target.len(),
        )
    };
    let n = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
    if n > MAX_NAME {
        return Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG));
    }
    target.truncate(n);
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn temp_root(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("lightvm-rootfs-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn launch(exe: &str) -> Launch {
        Launch::new(exe, &[], Some(Vec::new()), "/")
    }

    /// The archive's entries: (name, mode, data).
    fn entries(bytes: &[u8]) -> Vec<(String, u32, Vec<u8>)> {
        let mut at = 0;
        let mut found = Vec::new();
        loop {
            let field = |i: usize| {
                u32::from_str_radix(
                    std::str::from_utf8(&bytes[at + 6 + 8 * i..at + 14 + 8 * i]).unwrap(),
                    16,
                )
                .unwrap() as usize
            };
            assert_eq!(&bytes[at..at + 6], b"070701");
            let (mode, size, namesize) = (field(1), field(6), field(11));
            let name =
                String::from_utf8(bytes[at + 110..at + 110 + namesize - 1].to_vec()).unwrap();
            let data_at = (at + 110 + namesize).next_multiple_of(4);
            let data = bytes[data_at..data_at + size].to_vec();
            at = (data_at + size).next_multiple_of(4);
            if name == TRAILER {
                assert_eq!(at, bytes.len());
                return found;
            }
            found.push((name, mode as u32, data));
        }
    }

    fn pack_bytes(
        root: &Path,
        launch: &Launch,
        limits: PackLimits<'_>,
    ) -> Result<Vec<u8>, RootfsError> {
        let out = root.with_extension("cpio");
        let file = File::create(&out).unwrap();
        let size = pack_into(root, launch, &file, limits);
        let bytes = fs::read(&out).unwrap();
        fs::remove_file(&out).unwrap();
        let size = size?;
        assert_eq!(bytes.len() as u64, size);
        Ok(bytes)
    }

    #[test]
    fn a_directory_packs_into_newc_entries() {
        let dir = temp_root("newc");
        fs::create_dir_all(dir.join("bin")).unwrap();
        fs::write(dir.join("bin/prog"), b"ELF?").unwrap();
        std::os::unix::fs::symlink("prog", dir.join("bin/alias")).unwrap();
        let bytes = pack_bytes(&dir, &launch("/bin/prog"), PackLimits::UNBOUNDED).unwrap();
        let found = entries(&bytes);
        let names: Vec<&str> = found.iter().map(|(name, ..)| name.as_str()).collect();
        assert_eq!(
            names,
            [
                ".",
                "bin",
                "bin/alias",
                "bin/prog",
                ".lightvm",
                ".lightvm/launch"
            ]
        );
        assert_eq!(found[2].1 & libc::S_IFMT, libc::S_IFLNK);
        assert_eq!(found[2].2, b"prog");
        assert_eq!(found[3].2, b"ELF?");
        let out = dir.with_extension("cpio");
        assert_eq!(
            pack(&dir, &launch("/bin/prog"), &out).unwrap(),
            bytes.len() as u64
        );
        assert_eq!(fs::read(&out).unwrap(), bytes);
        fs::remove_file(&out).unwrap();
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn links_are_stored_as_links_and_never_followed_out_of_the_root() {
        let dir = temp_root("links");
        fs::write(dir.join("prog"), b"ELF?").unwrap();
        std::os::unix::fs::symlink("/etc", dir.join("etc")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.join("passwd")).unwrap();
        std::os::unix::fs::symlink("../../../../etc/hostname", dir.join("up")).unwrap();
        let bytes = pack_bytes(&dir, &launch("/prog"), PackLimits::UNBOUNDED).unwrap();
        let found = entries(&bytes);
        for (name, target) in [
            ("etc", "/etc"),
            ("passwd", "/etc/passwd"),
            ("up", "../../../../etc/hostname"),
        ] {
            let (_, mode, data) = found.iter().find(|(n, ..)| n == name).unwrap();
            assert_eq!(mode & libc::S_IFMT, libc::S_IFLNK, "{name}");
            assert_eq!(data, target.as_bytes(), "{name}");
        }
        assert!(
            !found.iter().any(|(name, ..)| name.starts_with("etc/")),
            "nothing packed through the link"
        );
        let passwd = fs::read("/etc/passwd").unwrap();
        assert!(!bytes.windows(passwd.len()).any(|w| w == passwd));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_program_is_looked_up_inside_the_root() {
        let dir = temp_root("program");
        fs::create_dir_all(dir.join("usr/bin")).unwrap();
        fs::create_dir_all(dir.join("bin")).unwrap();
        fs::write(dir.join("bin/prog"), b"ELF?").unwrap();
        // An absolute link resolves from the root, as it will in the VM.
        std::os::unix::fs::symlink("/bin/prog", dir.join("usr/bin/prog")).unwrap();
        std::os::unix::fs::symlink("../bin", dir.join("usr/sbin")).unwrap();
        // A link to a file the host has and the root has not.
        std::os::unix::fs::symlink("/bin/sh", dir.join("bin/sh")).unwrap();
        std::os::unix::fs::symlink("loop", dir.join("loop")).unwrap();
        for found in [
            "/bin/prog",
            "/usr/bin/prog",
            "/usr/sbin/prog",
            "/../../bin/prog",
            "bin/./prog",
        ] {
            pack_bytes(&dir, &launch(found), PackLimits::UNBOUNDED)
                .unwrap_or_else(|e| panic!("{found}: {e}"));
        }
        for missing in ["/bin/sh", "/bin", "/loop", "/bin/prog/x", "/nothing", "/"] {
            let error = pack_bytes(&dir, &launch(missing), PackLimits::UNBOUNDED).unwrap_err();
            assert!(
                matches!(error, RootfsError::NoProgram { .. }),
                "{missing}: {error}"
            );
            assert!(!error.to_string().contains('\n'));
        }
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn packing_stops_at_its_limit_and_when_cancelled() {
        let dir = temp_root("limit");
        fs::write(dir.join("prog"), vec![7u8; 1 << 20]).unwrap();
        let whole = pack_bytes(&dir, &launch("/prog"), PackLimits::UNBOUNDED)
            .unwrap()
            .len() as u64;
        let exact = PackLimits {
            max_bytes: whole,
            cancel: None,
        };
        assert_eq!(
            pack_bytes(&dir, &launch("/prog"), exact).unwrap().len() as u64,
            whole
        );
        for max_bytes in [whole - 1, 1 << 19, 100, 0] {
            let limits = PackLimits {
                max_bytes,
                cancel: None,
            };
            let error = pack_bytes(&dir, &launch("/prog"), limits).unwrap_err();
            assert!(
                matches!(error, RootfsError::TooLarge { limit, .. } if limit == max_bytes),
                "{max_bytes}: {error}"
            );
        }
        let cancel = AtomicBool::new(true);
        let limits = PackLimits {
            max_bytes: u64::MAX,
            cancel: Some(&cancel),
        };
        assert!(matches!(
            pack_bytes(&dir, &launch("/prog"), limits),
            Err(RootfsError::Cancelled)
        ));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn what_is_no_directory_or_too_deep_is_refused_and_specials_skipped() {
        let dir = temp_root("odd");
        fs::write(dir.join("prog"), b"ELF?").unwrap();
        let c_fifo = CString::new(dir.join("fifo").as_os_str().as_bytes()).unwrap();
        // SAFETY: mkfifo reads a NUL-terminated path that outlives the call.
        assert_eq!(unsafe { libc::mkfifo(c_fifo.as_ptr(), 0o666) }, 0);
        let bytes = pack_bytes(&dir, &launch("/prog"), PackLimits::UNBOUNDED).unwrap();
        assert!(!entries(&bytes).iter().any(|(name, ..)| name == "fifo"));
        let error =
            pack_bytes(&dir.join("prog"), &launch("/prog"), PackLimits::UNBOUNDED).unwrap_err();
        assert!(
            matches!(error, RootfsError::NotADirectory { .. }),
            "{error}"
        );
        let error =
            pack_bytes(&dir.join("fifo"), &launch("/prog"), PackLimits::UNBOUNDED).unwrap_err();
        assert!(
            matches!(error, RootfsError::NotADirectory { .. }),
            "{error}"
        );
        let error = pack_bytes(
            &dir.join("missing"),
            &launch("/prog"),
            PackLimits::UNBOUNDED,
        )
        .unwrap_err();
        assert!(error.to_string().contains("No such file"), "{error}");
        let mut deep = dir.clone();
        for _ in 0..MAX_DEPTH {
            deep.push("d");
        }
        fs::create_dir_all(&deep).unwrap();
        let error = pack_bytes(&dir, &launch("/prog"), PackLimits::UNBOUNDED).unwrap_err();
        assert!(matches!(error, RootfsError::TooDeep { .. }), "{error}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_file_system_mounted_inside_the_root_is_packed_as_its_empty_mount_point() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipping: mounting a file system needs root");
            return;
        }
        let dir = temp_root("mounts");
        fs::write(dir.join("prog"), b"ELF?").unwrap();
        fs::create_dir_all(dir.join("proc")).unwrap();
        let packed = std::thread::spawn({
            let dir = dir.clone();
            move || {
                // A mount namespace of this thread's own: the mount vanishes with it.
                let c = |s: &str| CString::new(s).unwrap();
                let target = CString::new(dir.join("proc").as_os_str().as_bytes()).unwrap();
                // SAFETY: unshare and mount with NUL-terminated strings that
                // outlive the calls.
                unsafe {
                    assert_eq!(libc::unshare(libc::CLONE_NEWNS), 0);
                    let none = std::ptr::null();
                    assert_eq!(
                        libc::mount(
                            none,
                            c("/").as_ptr(),
                            none,
                            libc::MS_REC | libc::MS_PRIVATE,
                            none.cast()
                        ),
                        0
                    );
                    assert_eq!(
                        libc::mount(
                            c("proc").as_ptr(),
                            target.as_ptr(),
                            c("proc").as_ptr(),
                            0,
                            none.cast()
                        ),
                        0
                    );
                }
                assert!(dir.join("proc/self").exists());
                pack_bytes(&dir, &launch("/prog"), PackLimits::UNBOUNDED).unwrap()
            }
        })
        .join()
        .unwrap();
        let found = entries(&packed);
        assert!(found
            .iter()
            .any(|(name, mode, _)| name == "proc" && mode & libc::S_IFMT == libc::S_IFDIR));
        assert!(
            !found.iter().any(|(name, ..)| name.starts_with("proc/")),
            "the host's /proc was not packed"
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
