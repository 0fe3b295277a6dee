//! Linux programs a create names: the personality image they run on, and their
//! root filesystems, packed with the client's rights into the archive each VM
//! gets as its module.
//!
//! **The personality** is the daemon's own file, not a client's: it is opened
//! once, at start, by the daemon itself (`lightvm daemon --personality IMAGE`, or
//! the one built from `crates/personality` then), checked, and handed to every
//! shell that runs a Linux program. A shell reads it with `pread` and maps it, so
//! all shells share its one open file.
//!
//! **A root filesystem** is a client's directory, so it is read with the
//! client's rights, like an image: on a blocking thread whose file-system uid,
//! gid and groups are the client's and which holds no effective capability
//! meanwhile ([`access::as_client`]). The kernel then checks every directory
//! listed and every file read as it would for the client's own process, at the
//! moment it is read: a client can pack only what it could read itself (a 403
//! otherwise), and there is no check-then-read race to win. (A separate process
//! with the client's uid would be as strong, but would need `fork` and `execve`,
//! which the daemon's seccomp filter does not allow, and a second way of handing
//! back the archive; the thread reuses what images already go through.) The walk
//! itself ([`lightvm_images::rootfs::pack_into`]) never follows a link — links
//! are stored as links — never opens a device or FIFO, stays on the root's file
//! system, and stops at a size bound: what the VM's memory can hold beside the
//! personality ([`Personality::archive_limit`]), a 413 past it.
//!
//! **The archive** is written to a file with no name (`O_TMPFILE` in the state
//! directory's `archives/`; where that is not supported, a named file removed at
//! once), handed to the shell read-only, and closed by the daemon once the boot
//! request is sent: the shell's mapping is then its only user, and the kernel
//! frees it when the VM ends. Nothing is left on disk, even by a daemon killed
//! mid-create, and nothing needs to be: a restarted daemon adopts a running VM
//! through its process, whose mapping holds the archive.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use lightvm_abi::layout;
use lightvm_images::rootfs::{self, Launch, PackLimits, RootfsError};
use lightvm_vmm::unikernel::boot::{heap_start, MODULE_MAX};
use lightvm_vmm::UnikernelImage;
use tokio::sync::Semaphore;

use crate::access::{self, OpenError, Peer};
use crate::api::{ApiError, LinuxProgram};
use crate::blocking;

/// Root filesystems packed at once: packing is disk-bound, and each writes up to
/// its VM's memory size to the state directory.
const PACK_PARALLELISM: usize = 2;

/// The Linux personality image, opened by the daemon and checked once.
#[derive(Debug)]
pub struct Personality {
    path: PathBuf,
    file: File,
    /// The first byte the image leaves free (its end, rounded up to a page).
    heap_start: u64,
    image_end: u64,
}

impl Personality {
    /// Opens and checks the image at `path` (the daemon's own file, opened with
    /// the daemon's rights).
    pub fn open(path: &Path) -> Result<Self, String> {
        let file = File::options()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let checked = file
            .try_clone()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let image = UnikernelImage::from_open_file(checked, path).map_err(|e| e.to_string())?;
        Ok(Self {
            path: path.to_owned(),
            file,
            heap_start: heap_start(&image),
            image_end: image.end(),
        })
    }

    /// Its path, for records and messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its open file, for one shell.
    pub fn file(&self) -> Result<File, ApiError> {
        self.file
            .try_clone()
            .map_err(|e| ApiError::internal(format!("the personality image: {e}")))
    }

    /// The largest archive a VM of `mem_size` bytes can take: the module is
    /// placed at the end of guest memory on a 2 MiB boundary above the image, so
    /// what lies between the image's first free 2 MiB boundary and the end is the
    /// bound (and at most `MODULE_MAX`). Whatever of it the archive does not take
    /// is the program's heap.
    pub fn archive_limit(&self, mem_size: u64) -> u64 {
        let start = self.heap_start.next_multiple_of(layout::LARGE_PAGE_SIZE);
        mem_size.saturating_sub(start).min(MODULE_MAX)
    }

    /// Checks that the image fits a VM of `mem_size` bytes with room for a root
    /// filesystem: a 422 otherwise.
    pub fn check_fits(&self, mem_size: u64) -> Result<(), ApiError> {
        if self.archive_limit(mem_size) == 0 {
            return Err(ApiError::unprocessable(format!(
                "the Linux personality needs memory up to {:#x}, and a root filesystem above it, but the VM would have {mem_size} bytes; ask for more memory",
                self.image_end
            )));
        }
        Ok(())
    }
}

/// A root filesystem packed for one VM.
#[derive(Debug)]
pub struct PackedRoot {
    /// The archive, read-only, with no name on disk.
    pub file: File,
    /// Its size.
    pub bytes: u64,
}

/// Packs root filesystems, a few at a time, into nameless files.
#[derive(Debug)]
pub struct Packer {
    dir: PathBuf,
    permits: Arc<Semaphore>,
    counter: AtomicU64,
}

impl Packer {
    /// A packer writing its archives in `dir`; files a killed daemon left there
    /// (only where `O_TMPFILE` is not supported) are removed. The directory is
    /// made when the first archive is packed: a daemon restarted on a full disk
    /// still starts, and says so to the creates that need room.
    pub fn new(dir: PathBuf) -> Self {
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for entry in entries.flatten() {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Self {
            dir,
            permits: Arc::new(Semaphore::new(PACK_PARALLELISM)),
            counter: AtomicU64::new(0),
        }
    }

    /// Packs `program`'s root filesystem for `peer`, with `peer`'s rights, into
    /// an archive of at most `limit` bytes (the most a VM of `mem_size` bytes
    /// has room for). If this future is dropped (the client went away), the
    /// packing stops at its next entry or chunk and its file is freed.
    pub async fn pack(
        &self,
        program: &LinuxProgram,
        peer: &Peer,
        limit: u64,
        mem_size: u64,
    ) -> Result<PackedRoot, ApiError> {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?;
        let cancel = Arc::new(AtomicBool::new(false));
        let _cancel_on_drop = CancelOnDrop(cancel.clone());
        let launch = Launch::new(
            &program.program,
            &program.args,
            program.env.clone(),
            &program.cwd,
        );
        let rootfs = program.rootfs.clone();
        let peer = peer.clone();
        let out = self.dir.clone();
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        blocking(move || {
            // Held until the walk has really ended, not only until its caller
            // stopped waiting.
            let _permit = permit;
            let file = nameless_file(&out, n).map_err(|e| write_error(&e))?;
            let limits = PackLimits {
                max_bytes: limit,
                cancel: Some(&cancel),
            };
            let packed = access::as_client(&peer, &rootfs, || {
                rootfs::pack_into(&rootfs, &launch, &file, limits)
            })
            .map_err(|e| refused(e, &peer))?
            .map_err(|e| pack_error(e, &peer, mem_size))?;
            Ok(PackedRoot {
                file: read_only(&file).map_err(|e| write_error(&e))?,
                bytes: packed,
            })
        })
        .await?
    }
}

/// Sets its flag when dropped: the create that waits for a packing went away.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// A file in `dir` with no name: `O_TMPFILE`, or a named file removed at once
/// where the file system has no `O_TMPFILE`.
fn nameless_file(dir: &Path, n: u64) -> std::io::Result<File> {
    std::fs::create_dir_all(dir)?;
    let unnamed = File::options()
        .read(true)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_TMPFILE | libc::O_CLOEXEC)
        .open(dir);
    match unnamed {
        Err(e) if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP | libc::EISDIR)) => {
            let path = dir.join(format!("rootfs-{}-{n}.cpio", std::process::id()));
            let file = File::options()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_CLOEXEC)
                .open(&path)?;
            std::fs::remove_file(&path)?;
            Ok(file)
        }
        other => other,
    }
}

/// The same file opened again, for reading only: what a shell is handed.
fn read_only(file: &File) -> std::io::Result<File> {
    let path = std::ffi::CString::new(format!("/proc/self/fd/{}", file.as_raw_fd()))
        .map_err(std::io::Error::other)?;
    // SAFETY: open reads a NUL-terminated path that outlives the call.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: open just returned this descriptor; nothing else owns it.
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// The archive could not be written: a full state directory is a 507, as for
/// the VM's own files.
fn write_error(error: &std::io::Error) -> ApiError {
    match error.raw_os_error() {
        Some(libc::ENOSPC | libc::EDQUOT) => ApiError::insufficient_storage(format!(
            "the state directory is full ({error}): the root filesystem was not packed and the VM was not created"
        )),
        _ => ApiError::internal(format!("writing the root filesystem archive: {error}")),
    }
}

/// The daemon could not take the client's rights (it is not root).
fn refused(error: OpenError, peer: &Peer) -> ApiError {
    match error {
        OpenError::CannotImpersonate { .. } => ApiError::forbidden(format!("rootfs {error}")),
        other => ApiError::internal(format!(
            "taking uid {}'s rights to pack a root filesystem: {other}",
            peer.uid
        )),
    }
}

/// Why a root filesystem was not packed, as the client sees it.
fn pack_error(error: RootfsError, peer: &Peer, mem_size: u64) -> ApiError {
    if error.is_permission_denied() {
        let path = match &error {
            RootfsError::Read { path, .. } => path.display().to_string(),
            _ => String::new(),
        };
        return ApiError::forbidden(format!(
            "root filesystem {path}: permission denied to uid {} (the daemon reads it with the client's own rights)",
            peer.uid
        ));
    }
    match error {
        RootfsError::TooLarge { .. } | RootfsError::FileTooLarge { .. } => ApiError::too_large(format!(
            "{error}, more than a VM of {} MiB has room for beside the Linux personality; ask for more memory (\"mem\") or pack less",
            mem_size >> 20
        )),
        RootfsError::Changed { .. } => ApiError::conflict(format!("{error}; try again")),
        RootfsError::Write { source } => write_error(&source),
        RootfsError::Cancelled => ApiError::internal(error.to_string()),
        RootfsError::Read { .. }
        | RootfsError::NotADirectory { .. }
        | RootfsError::Nul(_)
        | RootfsError::NoProgram { .. }
        | RootfsError::TooDeep { .. } => ApiError::bad_request(error.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    use super::*;

    fn program(rootfs: &Path, exe: &str) -> LinuxProgram {
        LinuxProgram::checked(
            rootfs.to_owned(),
            exe.to_owned(),
            vec!["a b".into()],
            None,
            "/".into(),
            false,
        )
        .unwrap()
    }

    #[test]
    fn roots_are_packed_into_nameless_read_only_files_or_refused_with_one_line() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let base = std::env::temp_dir().join(format!("lightvm-linux-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let root = base.join("root");
        std::fs::create_dir_all(root.join("bin")).unwrap();
        std::fs::write(root.join("bin/prog"), vec![1u8; 64 << 10]).unwrap();
        let packer = Packer::new(base.join("archives"));
        runtime.block_on(async {
            let packed = packer
                .pack(
                    &program(&root, "/bin/prog"),
                    &Peer::root(),
                    1 << 20,
                    2 << 20,
                )
                .await
                .unwrap();
            assert!(packed.bytes > 64 << 10);
            assert_eq!(packed.file.metadata().unwrap().len(), packed.bytes);
            assert_eq!(
                packed.file.metadata().unwrap().nlink(),
                0,
                "no name on disk"
            );
            // SAFETY: F_GETFL on a descriptor we own.
            let mode = unsafe { libc::fcntl(packed.file.as_raw_fd(), libc::F_GETFL) };
            assert_eq!(mode & libc::O_ACCMODE, libc::O_RDONLY);
            for (rootfs, exe, limit, status, needle) in [
                (
                    root.clone(),
                    "/bin/prog",
                    32 << 10,
                    413,
                    "packs to more than 32768 bytes",
                ),
                (
                    root.clone(),
                    "/bin/none",
                    1 << 20,
                    400,
                    "/bin/none is not a file in the root filesystem",
                ),
                (
                    root.join("bin/prog"),
                    "/bin/prog",
                    1 << 20,
                    400,
                    "not a directory",
                ),
                (
                    base.join("missing"),
                    "/bin/prog",
                    1 << 20,
                    400,
                    "No such file",
                ),
            ] {
                let error = packer
                    .pack(&program(&rootfs, exe), &Peer::root(), limit, 2 << 20)
                    .await
                    .unwrap_err();
                assert_eq!(error.status.as_u16(), status, "{}", error.message);
                assert!(error.message.contains(needle), "{}", error.message);
                assert!(!error.message.contains('\n'), "{}", error.message);
            }
            // SAFETY: geteuid has no preconditions.
            if unsafe { libc::geteuid() } != 0 {
                eprintln!("skipping the other-uid half: it needs a root daemon");
                return;
            }
            let nobody = Peer {
                uid: 65534,
                gid: 65534,
                groups: Vec::new(),
            };
            let mode = |path: &Path, mode| {
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
            };
            mode(&base, 0o755);
            mode(&root, 0o755);
            mode(&root.join("bin"), 0o755);
            mode(&root.join("bin/prog"), 0o644);
            let program = program(&root, "/bin/prog");
            assert!(packer
                .pack(&program, &nobody, 1 << 20, 2 << 20)
                .await
                .is_ok());
            // A file of the root, or the root itself, that nobody may read.
            for (path, unreadable) in [(root.join("bin/prog"), 0o600), (root.clone(), 0o700)] {
                mode(&path, unreadable);
                let error = packer
                    .pack(&program, &nobody, 1 << 20, 2 << 20)
                    .await
                    .unwrap_err();
                assert_eq!(error.status.as_u16(), 403, "{}", error.message);
                assert!(
                    error.message.contains("permission denied to uid 65534"),
                    "{}",
                    error.message
                );
                mode(&path, 0o755);
            }
        });
        assert_eq!(
            std::fs::read_dir(base.join("archives")).unwrap().count(),
            0,
            "nothing left on disk"
        );
        std::fs::remove_dir_all(&base).unwrap();
    }
}
