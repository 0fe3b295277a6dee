//! Images a request names: opened with the client's rights, checked once per file
//! version, all off the async runtime.
//!
//! Opening and reading an image are blocking work of unbounded duration (a slow
//! file system, a large file, a lease being broken): they run on the runtime's
//! blocking threads, so a slow request never stalls the others, and at most
//! [`PARSE_PARALLELISM`] images are read at once, which bounds the memory that
//! checking takes (each read is at most [`MAX_IMAGE_FILE`] bytes).

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use lightvm_vmm::loader::MAX_IMAGE_FILE;
use lightvm_vmm::UnikernelImage;
use tokio::sync::Semaphore;

use crate::access::{self, OpenError, Peer};
use crate::api::ApiError;
use crate::blocking;

/// Images read and parsed at once.
const PARSE_PARALLELISM: usize = 2;
/// Image versions remembered; the cache starts afresh when it is full.
const CACHE_ENTRIES: usize = 1024;

/// Validated images, by file version.
#[derive(Debug)]
pub struct ImageCache {
    checked: Mutex<HashMap<FileVersion, u64>>,
    parsing: Arc<Semaphore>,
}

/// One version of one file: a replaced or rewritten image is checked again.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct FileVersion {
    dev: u64,
    inode: u64,
    len: u64,
    modified: Option<SystemTime>,
}

impl FileVersion {
    fn of(file: &File) -> std::io::Result<Self> {
        use std::os::unix::fs::MetadataExt;
        let metadata = file.metadata()?;
        Ok(Self {
            dev: metadata.dev(),
            inode: metadata.ino(),
            len: metadata.len(),
            modified: metadata.modified().ok(),
        })
    }
}

impl Default for ImageCache {
    fn default() -> Self {
        Self {
            checked: Mutex::new(HashMap::new()),
            parsing: Arc::new(Semaphore::new(PARSE_PARALLELISM)),
        }
    }
}

impl ImageCache {
    /// Opens `path` with `peer`'s rights and checks that it is a unikernel image
    /// that fits `mem_size` bytes of guest memory; the open file, for the shell.
    /// The permission check is made on every request: only the parse is cached,
    /// by the file's identity, never by its path.
    pub async fn open(
        self: &Arc<Self>,
        path: &Path,
        peer: &Peer,
        mem_size: u64,
    ) -> Result<File, ApiError> {
        let (opened, version) = {
            let (path, peer) = (path.to_owned(), peer.clone());
            blocking(move || {
                let opened = access::open_regular(&path, &peer, MAX_IMAGE_FILE).map_err(refused)?;
                // fstat too can wait on a remote file system: here, not on the runtime.
                let version = FileVersion::of(&opened)
                    .map_err(|e| ApiError::bad_request(format!("image {}: {e}", path.display())))?;
                Ok::<_, ApiError>((opened, version))
            })
            .await??
        };
        let cached = lock(&self.checked).get(&version).copied();
        let end = match cached {
            Some(end) => end,
            None => {
                let _permit = self
                    .parsing
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|e| ApiError::internal(e.to_string()))?;
                let file = opened
                    .try_clone()
                    .map_err(|e| ApiError::internal(e.to_string()))?;
                let path = path.to_owned();
                let end = blocking(move || parse(file, &path)).await??;
                let mut checked = lock(&self.checked);
                if checked.len() >= CACHE_ENTRIES {
                    checked.clear();
                }
                checked.insert(version, end);
                end
            }
        };
        if end > mem_size {
            return Err(ApiError::unprocessable(format!(
                "image needs memory up to {end:#x} but the VM would have {mem_size} bytes; ask for more memory"
            )));
        }
        Ok(opened)
    }
}

/// Validates an image; the end of the memory it loads to.
fn parse(file: File, path: &Path) -> Result<u64, ApiError> {
    UnikernelImage::from_open_file(file, path)
        .map(|image| image.end())
        .map_err(|e| ApiError::unprocessable(format!("image {}: {e}", path.display())))
}

/// An image the client may not use, or that is no file to boot: 403 for the
/// former, 400 for the rest.
fn refused(error: OpenError) -> ApiError {
    let message = format!("image {error}");
    match error {
        OpenError::Denied { .. } | OpenError::CannotImpersonate { .. } => {
            ApiError::forbidden(message)
        }
        _ => ApiError::bad_request(message),
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_images_are_refused_with_one_line_each() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let dir = std::env::temp_dir().join(format!("lightvm-images-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let text = dir.join("text");
        std::fs::write(&text, "not an image").unwrap();
        let cache = Arc::new(ImageCache::default());
        runtime.block_on(async {
            for (path, status, needle) in [
                (Path::new("/dev/zero"), 400, "not a regular file"),
                (&dir, 400, "not a regular file (a directory)"),
                (&text, 422, "not an ELF"),
            ] {
                let error = cache.open(path, &Peer::root(), 2 << 20).await.unwrap_err();
                assert_eq!(error.status.as_u16(), status, "{}", error.message);
                assert!(error.message.contains(needle), "{}", error.message);
                assert!(!error.message.contains('\n'), "{}", error.message);
            }
        });
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
