//! A fixed-size, truncating text buffer for the paths that must not allocate.
//!
//! The panic handler and [`crate::exit`] format messages while the heap may be
//! broken or exhausted, so they format into a caller-provided byte buffer. When the
//! text does not fit it is cut at a UTF-8 character boundary and marked with `...`
//! (the exit message must be UTF-8), and formatting goes on without error, so that a
//! long message can never turn into a second panic.

use core::fmt;

/// What replaces the cut-off end of a message that did not fit.
const CUT_MARK: &str = "...";

/// Formats into `buf`, keeping what fits.
pub(crate) struct FixedBuf<'a> {
    buf: &'a mut [u8],
    len: usize,
    truncated: bool,
}

impl<'a> FixedBuf<'a> {
    /// An empty message over `buf`.
    pub(crate) fn new(buf: &'a mut [u8]) -> Self {
        FixedBuf {
            buf,
            len: 0,
            truncated: false,
        }
    }

    /// The text so far, ending in [`CUT_MARK`] if some of it was cut.
    pub(crate) fn as_str(&mut self) -> &str {
        if self.truncated && self.buf.len() >= CUT_MARK.len() {
            let limit = self.buf.len() - CUT_MARK.len();
            let keep = floor_char_boundary(&self.buf[..self.len], limit);
            let end = keep + CUT_MARK.len();
            self.buf[keep..end].copy_from_slice(CUT_MARK.as_bytes());
            self.len = end;
            // The mark is in place: a second call must not cut again.
            self.truncated = false;
        }
        // Only whole UTF-8 characters were ever copied in, so this cannot fail; an
        // empty message is the harmless answer should it ever do so.
        core::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }
}

impl fmt::Write for FixedBuf<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = self.buf.len() - self.len;
        let take = if s.len() <= room {
            s.len()
        } else {
            self.truncated = true;
            floor_char_boundary(s.as_bytes(), room)
        };
        self.buf[self.len..self.len + take].copy_from_slice(&s.as_bytes()[..take]);
        self.len += take;
        Ok(())
    }
}

/// The largest `i <= index` (and `<= bytes.len()`) at which a UTF-8 character starts.
fn floor_char_boundary(bytes: &[u8], index: usize) -> usize {
    let mut i = index.min(bytes.len());
    // Continuation bytes look like 0b10xx_xxxx; at most three precede a boundary.
    while i > 0 && i < bytes.len() && bytes[i] & 0xc0 == 0x80 {
        i -= 1;
    }
    i
}
