//! `GET /vms/{id}/console`: a VM's console log, streamed.
//!
//! A log grows to 64 MiB (the shell's cap); a reader never holds more than one
//! [`CHUNK`] of it in memory, whatever it asks for: the answer is streamed from the
//! file, `?tail=N` is found by reading backwards a chunk at a time, and a reader
//! that does not read is not read for (the stream waits on the connection). At
//! most [`MAX_READERS`] requests read consoles at once; more get a 429. A plain
//! read ends at the log's length when it was asked for; a followed one ends when
//! the VM has ended and its output has been sent.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use futures_util::Stream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::api::ApiError;
use crate::blocking;

/// Console requests served at once.
pub const MAX_READERS: usize = 32;
/// Bytes read (and held) at a time.
pub const CHUNK: usize = 64 << 10;
/// How often a followed console is checked for new output.
const FOLLOW_INTERVAL: Duration = Duration::from_millis(50);

/// The console readers' bound.
#[derive(Debug)]
pub struct Consoles {
    readers: Arc<Semaphore>,
}

impl Default for Consoles {
    fn default() -> Self {
        Self {
            readers: Arc::new(Semaphore::new(MAX_READERS)),
        }
    }
}

/// An opened console, ready to stream.
pub struct Console {
    file: Option<File>,
    /// Where the answer starts.
    start: u64,
    /// Where a plain read ends: the log's length when it was opened.
    end: u64,
    _permit: OwnedSemaphorePermit,
}

impl Consoles {
    /// Opens the log at `path` for one reader, from the start of its last `tail`
    /// lines (all of it without `tail`).
    pub async fn open(&self, path: PathBuf, tail: Option<usize>) -> Result<Console, ApiError> {
        let permit = self.readers.clone().try_acquire_owned().map_err(|_| {
            ApiError::limit(format!(
                "{MAX_READERS} console reads are under way, this daemon's limit; try again"
            ))
        })?;
        let (file, start, end) = blocking(move || open_log(&path, tail))
            .await?
            .map_err(|e| ApiError::internal(format!("reading the console: {e}")))?;
        Ok(Console {
            file,
            start,
            end,
            _permit: permit,
        })
    }
}

/// Opens a console log (missing: empty) and finds where its last `tail` lines
/// start; blocking.
fn open_log(path: &Path, tail: Option<usize>) -> std::io::Result<(Option<File>, u64, u64)> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = match File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
    {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((None, 0, 0)),
        Err(e) => return Err(e),
    };
    let metadata = file.metadata()?;
    if !metadata.is_file() {
        return Err(std::io::Error::other(
            "the console log is not a regular file",
        ));
    }
    let end = metadata.len();
    let start = match tail {
        Some(lines) => tail_start(&file, end, lines)?,
        None => 0,
    };
    Ok((Some(file), start, end))
}

/// Where the last `lines` lines of the first `len` bytes of `file` start (a final
/// newline does not start a new line), read backwards a [`CHUNK`] at a time.
fn tail_start(file: &File, len: u64, lines: usize) -> std::io::Result<u64> {
    if lines == 0 {
        return Ok(len);
    }
    let mut buf = vec![0u8; CHUNK];
    let mut last = [0u8; 1];
    // The search ends before a final newline.
    let mut pos = len;
    if len > 0 && file.read_at(&mut last, len - 1)? == 1 && last[0] == b'\n' {
        pos -= 1;
    }
    let mut seen = 0;
    while pos > 0 {
        let size = usize::try_from(pos).map_or(CHUNK, |p| p.min(CHUNK));
        let from = pos - size as u64;
        let chunk = buf.get_mut(..size).unwrap_or_default();
        file.read_exact_at(chunk, from)?;
        for (i, _) in chunk.iter().enumerate().rev().filter(|(_, &b)| b == b'\n') {
            seen += 1;
            if seen == lines {
                return Ok(from + i as u64 + 1);
            }
        }
        pos = from;
    }
    Ok(0)
}

impl Console {
    /// The answer: the log from its start to its length at opening, or with
    /// `follow`, on until `ended()` says the VM has ended and nothing is new.
    pub fn stream(
        self,
        follow: bool,
        ended: impl Fn() -> bool + Send + Sync + 'static,
    ) -> impl Stream<Item = std::io::Result<Bytes>> + Send {
        let state = Reader {
            console: Arc::new(self),
            offset: 0,
            follow,
            ended: Arc::new(ended),
        };
        futures_util::stream::unfold(state, |mut reader| async move {
            reader.offset = reader.offset.max(reader.console.start);
            loop {
                let limit = if reader.follow {
                    u64::MAX
                } else {
                    reader.console.end
                };
                if reader.offset >= limit {
                    return None;
                }
                // Checked before reading, so output written just before the end
                // is still sent.
                let ended = (reader.ended)();
                let (console, offset) = (reader.console.clone(), reader.offset);
                let chunk = blocking(move || console.read_at(offset, limit)).await;
                let chunk = match chunk {
                    Ok(Ok(chunk)) => chunk,
                    Ok(Err(e)) => return Some((Err(e), reader.stop())),
                    Err(e) => return Some((Err(std::io::Error::other(e.message)), reader.stop())),
                };
                if !chunk.is_empty() {
                    reader.offset += chunk.len() as u64;
                    return Some((Ok(Bytes::from(chunk)), reader));
                }
                if !reader.follow || ended {
                    return None;
                }
                tokio::time::sleep(FOLLOW_INTERVAL).await;
            }
        })
    }

    /// Up to a [`CHUNK`] of the log from `offset`, never past `limit`; blocking.
    fn read_at(&self, offset: u64, limit: u64) -> std::io::Result<Vec<u8>> {
        let Some(file) = &self.file else {
            return Ok(Vec::new());
        };
        let size = usize::try_from(limit - offset).map_or(CHUNK, |n| n.min(CHUNK));
        let mut chunk = vec![0u8; size];
        let n = file.read_at(&mut chunk, offset)?;
        chunk.truncate(n);
        Ok(chunk)
    }
}

/// A stream's position.
struct Reader {
    console: Arc<Console>,
    offset: u64,
    follow: bool,
    ended: Arc<dyn Fn() -> bool + Send + Sync>,
}

impl Reader {
    /// After an error: a plain read that ends at once.
    fn stop(mut self) -> Self {
        self.follow = false;
        self.offset = u64::MAX;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    fn log(name: &str, bytes: &[u8]) -> PathBuf {
        let path =
            std::env::temp_dir().join(format!("lightvm-console-{}-{name}", std::process::id()));
        std::fs::write(&path, bytes).unwrap();
        path
    }

    fn tail(bytes: &[u8], lines: usize) -> Vec<u8> {
        let path = log(&format!("tail-{lines}-{}", bytes.len()), bytes);
        let file = File::open(&path).unwrap();
        let start = tail_start(&file, bytes.len() as u64, lines).unwrap();
        std::fs::remove_file(&path).unwrap();
        bytes[usize::try_from(start).unwrap()..].to_vec()
    }

    #[test]
    fn tail_takes_whole_last_lines() {
        let log = b"one\ntwo\nthree\n";
        assert_eq!(tail(log, 1), b"three\n");
        assert_eq!(tail(log, 2), b"two\nthree\n");
        assert_eq!(tail(log, 10), log);
        assert_eq!(tail(log, 0), b"");
        assert_eq!(tail(b"no newline", 1), b"no newline");
        assert_eq!(tail(b"a\nno newline", 1), b"no newline");
        assert_eq!(tail(b"", 3), b"");
        assert_eq!(tail(b"\n\n\n", 2), b"\n\n");
    }

    #[test]
    fn tail_finds_lines_across_chunks() {
        let mut big = vec![b'x'; 3 * CHUNK];
        big[10] = b'\n';
        big.extend_from_slice(b"\nlast\n");
        assert_eq!(tail(&big, 1), b"last\n");
        assert_eq!(tail(&big, 2).len(), 3 * CHUNK - 11 + 1 + 5);
        assert_eq!(tail(&big, 3).len(), big.len(), "all of it");
    }

    #[test]
    fn a_log_is_streamed_in_bounded_chunks_and_readers_are_bounded() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut bytes = vec![b'.'; 5 * CHUNK / 2];
        bytes.extend_from_slice(b"\nend\n");
        let path = log("stream", &bytes);
        runtime.block_on(async {
            let consoles = Consoles::default();
            let mut chunks = Vec::new();
            let mut stream = Box::pin(
                consoles
                    .open(path.clone(), None)
                    .await
                    .unwrap()
                    .stream(false, || true),
            );
            while let Some(chunk) = stream.next().await {
                chunks.push(chunk.unwrap());
            }
            assert!(chunks.iter().all(|c| c.len() <= CHUNK));
            assert_eq!(chunks.concat(), bytes);

            let tailed: Vec<Bytes> = consoles
                .open(path.clone(), Some(1))
                .await
                .unwrap()
                .stream(true, || true)
                .map(Result::unwrap)
                .collect()
                .await;
            assert_eq!(tailed.concat(), b"end\n");

            let mut held = Vec::new();
            for _ in 0..MAX_READERS {
                held.push(consoles.open(path.clone(), Some(1)).await.unwrap());
            }
            let refused = consoles.open(path.clone(), None).await.err().unwrap();
            assert_eq!(refused.status.as_u16(), 429, "{}", refused.message);
            held.pop();
            assert!(consoles.open(path.clone(), None).await.is_ok());

            let missing = consoles
                .open(path.with_extension("missing"), None)
                .await
                .unwrap()
                .stream(false, || true)
                .collect::<Vec<_>>()
                .await;
            assert!(missing.is_empty());
        });
        std::fs::remove_file(&path).unwrap();
    }
}
