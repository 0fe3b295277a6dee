//! The targets, by the part of lightvm they exercise.

pub mod api;
pub mod linux;
pub mod personality;
pub mod unikernel;
pub mod virtio;

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::PathBuf;

/// An anonymous in-memory file (memfd) holding `bytes`, and a path that opens it
/// (`/proc/self/fd/N`), for the loaders that take a path. The file lives until it
/// is dropped.
pub struct MemFile {
    file: File,
}

impl MemFile {
    /// An empty memfd.
    pub fn new() -> Self {
        // SAFETY: memfd_create reads a NUL-terminated name; the descriptor it
        // returns is ours alone.
        let fd = unsafe { libc::memfd_create(c"lightvm-fuzz".as_ptr(), libc::MFD_CLOEXEC) };
        assert!(fd >= 0, "memfd_create: {}", std::io::Error::last_os_error());
        // SAFETY: `fd` is a fresh descriptor owned by nothing else.
        Self {
            file: unsafe { File::from_raw_fd(fd) },
        }
    }

    /// Replaces the contents with `bytes`.
    pub fn set(&mut self, bytes: &[u8]) {
        self.file.set_len(0).expect("truncating a memfd");
        self.file.seek(SeekFrom::Start(0)).expect("seeking a memfd");
        self.file.write_all(bytes).expect("writing a memfd");
    }

    /// Another descriptor of the same file.
    pub fn file(&self) -> File {
        self.file.try_clone().expect("duplicating a memfd")
    }

    /// A path that opens the file anew.
    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.file.as_raw_fd()))
    }
}

impl Default for MemFile {
    fn default() -> Self {
        Self::new()
    }
}
