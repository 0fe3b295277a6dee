//! The guest console: bytes go to the user's writer, at a bounded rate.
//!
//! A guest that prints in a loop would otherwise fill a terminal, a log file or a
//! disk as fast as it can exit. A token bucket lets bursts through (a boot log, a
//! panic) and drops what exceeds [`limits::CONSOLE_BYTES_PER_SEC`], counting it so
//! the user is told how much was lost.

use std::io::Write;
use std::time::Instant;

use lightvm_abi::limits;

/// A rate-limited console sink.
pub struct Console {
    out: Box<dyn Write + Send>,
    tokens: u64,
    refilled: Instant,
    written: u64,
    dropped: u64,
    broken: bool,
}

impl Console {
    /// Wraps the writer that receives guest output (stdout for `lightvm run`).
    pub fn new(out: Box<dyn Write + Send>) -> Self {
        Self {
            out,
            tokens: limits::CONSOLE_BYTES_PER_SEC,
            refilled: Instant::now(),
            written: 0,
            dropped: 0,
            broken: false,
        }
    }

    /// Passes as much of `bytes` as the rate allows; the rest is counted as dropped.
    /// A writer that fails (a closed pipe) stops receiving output; the guest runs on.
    pub fn write(&mut self, bytes: &[u8]) {
        self.refill();
        let allowed = bytes
            .len()
            .min(usize::try_from(self.tokens).unwrap_or(usize::MAX));
        let (pass, drop) = bytes.split_at(allowed);
        self.tokens -= pass.len() as u64;
        self.dropped += drop.len() as u64;
        if self.broken || pass.is_empty() {
            self.dropped += if self.broken { pass.len() as u64 } else { 0 };
            return;
        }
        match self.out.write_all(pass).and_then(|()| self.out.flush()) {
            Ok(()) => self.written += pass.len() as u64,
            Err(_) => {
                self.broken = true;
                self.dropped += pass.len() as u64;
            }
        }
    }

    /// Bytes delivered to the writer.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Bytes dropped by the rate limit or a failed writer.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    fn refill(&mut self) {
        let now = Instant::now();
        let elapsed = now.duration_since(self.refilled);
        let earned = elapsed.as_nanos() * u128::from(limits::CONSOLE_BYTES_PER_SEC) / 1_000_000_000;
        if earned > 0 {
            self.tokens = u64::try_from(u128::from(self.tokens) + earned)
                .unwrap_or(u64::MAX)
                .min(limits::CONSOLE_BYTES_PER_SEC);
            self.refilled = now;
        }
    }
}

/// A writer whose bytes the test can read back, for every test that checks what
/// the guest printed.
#[cfg(test)]
pub(crate) mod test_util {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    /// Clones share one buffer: hand one to the VMM, read the other.
    #[derive(Clone, Default)]
    pub(crate) struct Shared(pub(crate) Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use test_util::Shared;

    struct Broken;

    impl Write for Broken {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn output_within_the_rate_passes_unchanged() {
        let sink = Shared::default();
        let mut console = Console::new(Box::new(sink.clone()));
        console.write(b"hello\n");
        assert_eq!(&*sink.0.lock().unwrap(), b"hello\n");
        assert_eq!((console.written(), console.dropped()), (6, 0));
    }

    #[test]
    fn a_flood_is_cut_at_the_burst_and_counted() {
        let sink = Shared::default();
        let mut console = Console::new(Box::new(sink.clone()));
        let chunk = vec![b'x'; 64 << 10];
        for _ in 0..64 {
            console.write(&chunk);
        }
        let total = 64 * chunk.len() as u64;
        let written = sink.0.lock().unwrap().len() as u64;
        assert_eq!(console.written(), written);
        assert_eq!(console.written() + console.dropped(), total);
        // The burst is one second's worth; this loop takes far less than a second
        // to refill more than a fraction of it.
        assert!(written < total / 2, "written {written} of {total}");
    }

    #[test]
    fn a_broken_writer_drops_instead_of_failing() {
        let mut console = Console::new(Box::new(Broken));
        console.write(b"lost");
        console.write(b"also lost");
        assert_eq!((console.written(), console.dropped()), (0, 13));
    }
}
