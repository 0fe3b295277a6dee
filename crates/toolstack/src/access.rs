//! Who a client is, and the files it may have the daemon open for it.
//!
//! The daemon runs as root and opens the files a request names (the image) itself,
//! to hand them to a shell that opens nothing by name. So a client could make it
//! read any file on the host if it opened them with its own rights. It does not:
//!
//! * a client's identity is its socket peer's credentials (`SO_PEERCRED`, and
//!   `SO_PEERGROUPS` for its supplementary groups), which the kernel fills in at
//!   `connect` and the client cannot forge;
//! * the daemon opens a path a client names *as that client*: on a blocking thread
//!   whose file-system uid, gid and groups are switched to the client's
//!   (`setfsuid`, `setfsgid`, `setgroups` are per-thread system calls) for the open
//!   alone. The kernel's own permission checks then decide, on every component of
//!   the path, at the moment of the open: there is no check-then-open race to win;
//! * for that time the thread also holds no effective capability (`capset`, per
//!   thread too). A non-zero file-system uid already takes away the capabilities
//!   that override file permissions (`CAP_DAC_OVERRIDE`, `CAP_DAC_READ_SEARCH`,
//!   `CAP_FOWNER` …), but not the others, and some reads are allowed by those: a
//!   root thread with a client's file-system uid may still read any process's
//!   `/proc/PID/maps` (`CAP_SYS_PTRACE`). With none left, the thread is checked
//!   exactly as a process of the client would be;
//! * root clients (uid 0) open as the daemon does.
//!
//! A path is first opened with `O_PATH` (which opens no device and does not block on
//! a FIFO), must be a regular file of bounded size, and only then is the same inode
//! opened for reading, through `/proc/self/fd`: a file swapped in between is not the
//! one opened.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// A client of the API, as its socket's peer credentials name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Its user id.
    pub uid: u32,
    /// Its primary group.
    pub gid: u32,
    /// Its supplementary groups.
    pub groups: Vec<u32>,
}

impl Peer {
    /// Root: what the daemon's own work runs as (adoption, tests).
    pub const fn root() -> Self {
        Self {
            uid: 0,
            gid: 0,
            groups: Vec::new(),
        }
    }

    /// The peer of a connected Unix socket, or `None` if the kernel would not say.
    pub fn of_socket(socket: RawFd) -> Option<Self> {
        let mut cred = libc::ucred {
            pid: 0,
            uid: 0,
            gid: 0,
        };
        let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes into `cred`, which we own.
        let rc = unsafe {
            libc::getsockopt(
                socket,
                libc::SOL_SOCKET,
                libc::SO_PEERCRED,
                (&raw mut cred).cast(),
                &mut len,
            )
        };
        if rc != 0 {
            return None;
        }
        Some(Self {
            uid: cred.uid,
            gid: cred.gid,
            groups: peer_groups(socket)?,
        })
    }

    /// Whether it is root.
    pub fn is_root(&self) -> bool {
        self.uid == 0
    }

    /// Whether it is `gid`'s member (primary or supplementary).
    pub fn in_group(&self, gid: u32) -> bool {
        self.gid == gid || self.groups.contains(&gid)
    }
}

/// `SO_PEERGROUPS` (Linux 4.13): not in every libc crate's list for x86_64.
const SO_PEERGROUPS: libc::c_int = 59;

/// The supplementary groups of a socket's peer.
fn peer_groups(socket: RawFd) -> Option<Vec<u32>> {
    let mut groups: Vec<libc::gid_t> = vec![0; 64];
    loop {
        let mut len = libc::socklen_t::try_from(groups.len() * 4).ok()?;
        // SAFETY: getsockopt writes at most `len` bytes into the vector's buffer.
        let rc = unsafe {
            libc::getsockopt(
                socket,
                libc::SOL_SOCKET,
                SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let error = std::io::Error::last_os_error();
        if rc == 0 {
            groups.truncate(len as usize / 4);
            return Some(groups);
        }
        // Too small: the kernel said how large it must be (at most NGROUPS_MAX).
        if error.raw_os_error() == Some(libc::ERANGE) && (len as usize) / 4 > groups.len() {
            groups.resize(len as usize / 4, 0);
            continue;
        }
        return None;
    }
}

/// Why a file a client named was not opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Not an absolute path: the daemon's working directory means nothing to a
    /// client.
    #[error("{path}: not an absolute path")]
    Relative {
        /// The path.
        path: PathBuf,
    },
    /// The client may not open it (or reach it).
    #[error(
        "{path}: permission denied to uid {uid} (the daemon opens it with the client's own rights)"
    )]
    Denied {
        /// The path.
        path: PathBuf,
        /// The client's uid.
        uid: u32,
    },
    /// The daemon cannot open files with this client's rights.
    #[error("{path}: this daemon runs as uid {daemon_uid} and cannot open files with the rights of uid {uid}; only root and uid {daemon_uid} may name files")]
    CannotImpersonate {
        /// The path.
        path: PathBuf,
        /// The client's uid.
        uid: u32,
        /// The daemon's.
        daemon_uid: u32,
    },
    /// Not a regular file (a device, FIFO, socket or directory).
    #[error("{path}: not a regular file (a {kind})")]
    NotRegular {
        /// The path.
        path: PathBuf,
        /// What it is.
        kind: &'static str,
    },
    /// Larger than allowed.
    #[error("{path}: {size} bytes, larger than the {} MiB limit", limit >> 20)]
    TooLarge {
        /// The path.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// Anything else.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// Opens `path` for reading with `peer`'s rights: a regular file of at most
/// `limit` bytes, or an error saying why not. Blocks (the open may wait on a slow
/// file system or a lease): call it on a blocking thread.
pub fn open_regular(path: &Path, peer: &Peer, limit: u64) -> Result<File, OpenError> {
    if !path.is_absolute() {
        return Err(OpenError::Relative {
            path: path.to_owned(),
        });
    }
    let io = |source: std::io::Error| match source.raw_os_error() {
        Some(libc::EACCES | libc::EPERM) => OpenError::Denied {
            path: path.to_owned(),
            uid: peer.uid,
        },
        _ => OpenError::Io {
            path: path.to_owned(),
            source,
        },
    };
    let c_path = CString::new(path.as_os_str().as_bytes()).map_err(|_| OpenError::Io {
        path: path.to_owned(),
        source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
    })?;
    as_client(peer, path, || {
        // SAFETY: open reads a NUL-terminated path that outlives the call.
        let fd = unsafe { libc::open(c_path.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(io(std::io::Error::last_os_error()));
        }
        // SAFETY: open just returned this descriptor; nothing else owns it.
        let located = unsafe { OwnedFd::from_raw_fd(fd) };
        let metadata = File::from(located.try_clone().map_err(io)?)
            .metadata()
            .map_err(io)?;
        let kind = file_kind(&metadata);
        if kind != "regular file" {
            return Err(OpenError::NotRegular {
                path: path.to_owned(),
                kind,
            });
        }
        if metadata.len() > limit {
            return Err(OpenError::TooLarge {
                path: path.to_owned(),
                size: metadata.len(),
                limit,
            });
        }
        // The very inode found above, opened for reading (permission checked now,
        // as the client).
        let reopen = CString::new(format!("/proc/self/fd/{}", located.as_raw_fd()))
            .map_err(|_| io(std::io::Error::from(std::io::ErrorKind::InvalidInput)))?;
        // SAFETY: as above.
        let fd = unsafe {
            libc::open(
                reopen.as_ptr(),
                libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOCTTY,
            )
        };
        if fd < 0 {
            return Err(io(std::io::Error::last_os_error()));
        }
        // SAFETY: as above.
        Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
    })?
}

fn file_kind(metadata: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let kind = metadata.file_type();
    if kind.is_file() {
        "regular file"
    } else if kind.is_dir() {
        "directory"
    } else if kind.is_fifo() {
        "FIFO"
    } else if kind.is_char_device() {
        "character device"
    } else if kind.is_block_device() {
        "block device"
    } else if kind.is_socket() {
        "socket"
    } else {
        "special file"
    }
}

/// Runs `f` with this thread's file-system credentials switched to `peer`'s and
/// no effective capability, and switches back after: whatever `f` opens, reads or
/// lists, the kernel checks as it would for the client's own process. Root peers,
/// and peers of the daemon's own uid, run `f` as they are. A daemon that is not
/// root cannot switch: other peers are refused (`path` names what was asked for
/// in that error). Blocks as long as `f` does: call it on a blocking thread.
pub fn as_client<T>(peer: &Peer, path: &Path, f: impl FnOnce() -> T) -> Result<T, OpenError> {
    // SAFETY: geteuid has no preconditions.
    let daemon_uid = unsafe { libc::geteuid() };
    if peer.is_root() || peer.uid == daemon_uid {
        return Ok(f());
    }
    if daemon_uid != 0 {
        return Err(OpenError::CannotImpersonate {
            path: path.to_owned(),
            uid: peer.uid,
            daemon_uid,
        });
    }
    let guard = ClientCredentials::enter(peer).map_err(|source| OpenError::Io {
        path: path.to_owned(),
        source,
    })?;
    let result = f();
    drop(guard);
    Ok(result)
}

/// This thread's file-system identity switched to a client's, with no effective
/// capability; switched back to root's on drop. The raw system calls are
/// per-thread (glibc's `setgroups` would change every thread of the daemon).
struct ClientCredentials {
    gid: libc::gid_t,
    groups: Vec<libc::gid_t>,
    /// The thread's capabilities before they were dropped, once they were.
    caps: Option<Capabilities>,
}

impl ClientCredentials {
    fn enter(peer: &Peer) -> std::io::Result<Self> {
        // SAFETY: getegid has no preconditions.
        let gid = unsafe { libc::getegid() };
        let groups = thread_groups()?;
        let mut saved = Self {
            gid,
            groups,
            caps: None,
        };
        set_groups(&peer.groups)?;
        // SAFETY: per-thread credential calls with plain ids. Each returns the
        // previous id whether or not it succeeded, so success is read back by
        // asking with an invalid id (-1), which changes nothing.
        let switched = unsafe {
            libc::syscall(libc::SYS_setfsgid, peer.gid);
            libc::syscall(libc::SYS_setfsuid, peer.uid);
            libc::syscall(libc::SYS_setfsuid, u32::MAX) as u32 == peer.uid
                && libc::syscall(libc::SYS_setfsgid, u32::MAX) as u32 == peer.gid
        };
        if !switched {
            // `saved` switches back on drop.
            return Err(std::io::Error::other(
                "cannot take the client's file-system credentials",
            ));
        }
        // Last, as the switches above need CAP_SETUID and CAP_SETGID.
        let caps = Capabilities::of_this_thread()?;
        saved.caps = Some(caps);
        caps.without_effective().set_for_this_thread()?;
        Ok(saved)
    }
}

impl Drop for ClientCredentials {
    fn drop(&mut self) {
        // First, as switching back needs CAP_SETUID and CAP_SETGID.
        let caps_restored = self
            .caps
            .is_none_or(|caps| caps.set_for_this_thread().is_ok());
        // SAFETY: as in `enter`.
        let restored = caps_restored
            && unsafe {
                libc::syscall(libc::SYS_setfsuid, 0);
                libc::syscall(libc::SYS_setfsgid, self.gid);
                libc::syscall(libc::SYS_setfsuid, u32::MAX) as u32 == 0
                    && libc::syscall(libc::SYS_setfsgid, u32::MAX) as u32 == self.gid
            };
        if !(restored && set_groups(&self.groups).is_ok()) {
            // A daemon thread left with a client's rights would do later work with
            // them: nothing it could do is safer than stopping.
            eprintln!("lightvm daemon: cannot restore a thread's credentials; aborting");
            std::process::abort();
        }
    }
}

/// A thread's capability sets (`capget`'s version 3: two words of each set).
#[derive(Debug, Clone, Copy, Default)]
struct Capabilities([CapData; 2]);

/// One word of each capability set, as `capget` and `capset` take them.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// `capget`/`capset`'s header: the version, and the thread (0: the caller).
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

/// `_LINUX_CAPABILITY_VERSION_3`.
const CAPABILITY_VERSION_3: u32 = 0x2008_0522;

impl Capabilities {
    /// The calling thread's.
    fn of_this_thread() -> std::io::Result<Self> {
        let mut header = CapHeader {
            version: CAPABILITY_VERSION_3,
            pid: 0,
        };
        let mut caps = Self::default();
        // SAFETY: capget reads the header and writes two CapData into `caps`.
        let rc = unsafe { libc::syscall(libc::SYS_capget, &raw mut header, caps.0.as_mut_ptr()) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(caps)
    }

    /// The same, with nothing effective (the permitted set is kept, so the
    /// thread can take them back).
    fn without_effective(mut self) -> Self {
        for word in &mut self.0 {
            word.effective = 0;
        }
        self
    }

    /// Makes these the calling thread's (capset acts on the calling thread only).
    fn set_for_this_thread(self) -> std::io::Result<()> {
        let mut header = CapHeader {
            version: CAPABILITY_VERSION_3,
            pid: 0,
        };
        // SAFETY: capset reads the header and two CapData.
        let rc = unsafe { libc::syscall(libc::SYS_capset, &raw mut header, self.0.as_ptr()) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
}

/// The calling thread's supplementary groups.
fn thread_groups() -> std::io::Result<Vec<libc::gid_t>> {
    // SAFETY: with size 0, getgroups only counts.
    let n = unsafe { libc::getgroups(0, std::ptr::null_mut()) };
    let n = usize::try_from(n).map_err(|_| std::io::Error::last_os_error())?;
    let mut groups = vec![0; n];
    // SAFETY: the buffer holds `n` entries.
    let got = unsafe { libc::getgroups(n as libc::c_int, groups.as_mut_ptr()) };
    groups.truncate(usize::try_from(got).map_err(|_| std::io::Error::last_os_error())?);
    Ok(groups)
}

/// Sets the calling thread's supplementary groups (the raw system call: this
/// thread only).
fn set_groups(groups: &[libc::gid_t]) -> std::io::Result<()> {
    // SAFETY: the kernel reads `len` ids from the slice.
    let rc = unsafe { libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOBODY: u32 = 65534;

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("lightvm-access-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn is_root() -> bool {
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() == 0 }
    }

    #[test]
    fn only_regular_files_within_the_limit_are_opened() {
        let dir = temp_dir("kinds");
        let file = dir.join("image");
        std::fs::write(&file, b"bytes").unwrap();
        let fifo = dir.join("fifo");
        let c_fifo = CString::new(fifo.as_os_str().as_bytes()).unwrap();
        // SAFETY: mkfifo reads a NUL-terminated path that outlives the call.
        assert_eq!(unsafe { libc::mkfifo(c_fifo.as_ptr(), 0o666) }, 0);
        let big = dir.join("big");
        File::create(&big).unwrap().set_len(1 << 20).unwrap();
        let link = dir.join("zero");
        std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
        let root = Peer::root();

        let mut opened = open_regular(&file, &root, 1 << 10).unwrap();
        let mut text = String::new();
        std::io::Read::read_to_string(&mut opened, &mut text).unwrap();
        assert_eq!(text, "bytes");
        for (path, needle) in [
            (
                Path::new("/dev/zero"),
                "not a regular file (a character device)",
            ),
            (&link, "not a regular file (a character device)"),
            (&fifo, "not a regular file (a FIFO)"),
            (&dir, "not a regular file (a directory)"),
            (&big, "1048576 bytes, larger than the 0 MiB limit"),
            (Path::new("relative/image"), "not an absolute path"),
            (&dir.join("missing"), "No such file"),
        ] {
            let error = open_regular(path, &root, 1 << 10).unwrap_err().to_string();
            assert!(error.contains(needle), "{}: {error}", path.display());
            assert!(!error.contains('\n'), "one line: {error}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_client_opens_only_what_its_own_rights_allow() {
        if !is_root() {
            eprintln!("skipping: opening as another user needs a root daemon");
            return;
        }
        use std::os::unix::fs::PermissionsExt;
        let dir = temp_dir("rights");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let secret = dir.join("secret");
        std::fs::write(&secret, b"root only").unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        let public = dir.join("public");
        std::fs::write(&public, b"anyone").unwrap();
        std::fs::set_permissions(&public, std::fs::Permissions::from_mode(0o644)).unwrap();
        let grouped = dir.join("grouped");
        std::fs::write(&grouped, b"group 4242").unwrap();
        std::fs::set_permissions(&grouped, std::fs::Permissions::from_mode(0o640)).unwrap();
        let c_grouped = CString::new(grouped.as_os_str().as_bytes()).unwrap();
        // SAFETY: chown reads a NUL-terminated path that outlives the call.
        assert_eq!(unsafe { libc::chown(c_grouped.as_ptr(), 0, 4242) }, 0);
        let nobody = Peer {
            uid: NOBODY,
            gid: NOBODY,
            groups: Vec::new(),
        };

        let error = open_regular(&secret, &nobody, 1 << 10).unwrap_err();
        assert!(
            matches!(error, OpenError::Denied { uid: NOBODY, .. }),
            "{error}"
        );
        assert!(open_regular(&public, &nobody, 1 << 10).is_ok());
        assert!(open_regular(&grouped, &nobody, 1 << 10).is_err());
        let member = Peer {
            groups: vec![4242],
            ..nobody.clone()
        };
        assert!(
            open_regular(&grouped, &member, 1 << 10).is_ok(),
            "by its group"
        );
        assert!(open_regular(&secret, &Peer::root(), 1 << 10).is_ok());

        // The thread is root again, with its own groups, after each open.
        // SAFETY: per-thread queries with an invalid id change nothing.
        let (fsuid, fsgid) = unsafe {
            (
                libc::syscall(libc::SYS_setfsuid, u32::MAX),
                libc::syscall(libc::SYS_setfsgid, u32::MAX),
            )
        };
        assert_eq!((fsuid, fsgid), (0, 0));
        assert!(!thread_groups().unwrap().contains(&4242));
        assert!(std::fs::read(&secret).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_client_thread_holds_no_capability_that_reads_past_its_rights() {
        if !is_root() {
            eprintln!("skipping: opening as another user needs a root daemon");
            return;
        }
        let nobody = Peer {
            uid: NOBODY,
            gid: NOBODY,
            groups: Vec::new(),
        };
        let effective = || {
            std::fs::read_to_string("/proc/thread-self/status")
                .unwrap()
                .lines()
                .find_map(|line| line.strip_prefix("CapEff:").map(|v| v.trim().to_owned()))
                .unwrap()
        };
        let before = effective();
        let inside = as_client(&nobody, Path::new("/"), effective).unwrap();
        assert_eq!(inside, "0000000000000000");
        assert_eq!(effective(), before, "taken back after");
        // A root process's memory map is readable with CAP_SYS_PTRACE, which a
        // non-zero file-system uid alone does not take away; a client may not
        // read it.
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let maps = PathBuf::from(format!("/proc/{}/maps", child.id()));
        let as_nobody = open_regular(&maps, &nobody, 1 << 20);
        let as_root = open_regular(&maps, &Peer::root(), 1 << 20);
        child.kill().unwrap();
        child.wait().unwrap();
        let error = as_nobody.unwrap_err();
        assert!(matches!(error, OpenError::Denied { .. }), "{error}");
        assert!(as_root.is_ok());
    }
}
