//! The console: [`print!`](crate::print) and [`println!`](crate::println).
//!
//! Every console write is a hypercall, and every hypercall a VM exit (~18 µs on the
//! development machines). `core::fmt` hands its writer many small fragments per
//! line, so the macros format into a [`LINE_BUFFER`]-byte buffer on the stack and
//! make **one** hypercall per `print!`/`println!` — more only when the text does not
//! fit the buffer, which is then flushed each time it fills.

use core::fmt::{self, Write};

use crate::hypercall;

/// Bytes the print macros gather before a console write.
pub const LINE_BUFFER: usize = 512;

/// Writes `bytes` to the console as they are, in one hypercall (or more for writes
/// above [`crate::abi::limits::CONSOLE_WRITE_MAX`]).
pub fn write(bytes: &[u8]) {
    hypercall::console_write(bytes);
}

/// Collects formatted text and hands it to the console in as few writes as it can.
struct Buffered {
    buf: [u8; LINE_BUFFER],
    len: usize,
}

impl Buffered {
    const fn new() -> Self {
        Buffered {
            buf: [0; LINE_BUFFER],
            len: 0,
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        if bytes.len() > LINE_BUFFER - self.len {
            self.flush();
            if bytes.len() >= LINE_BUFFER {
                // Too big to gather: one write of its own instead of several.
                write(bytes);
                return;
            }
        }
        self.buf[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }

    fn flush(&mut self) {
        if self.len > 0 {
            write(&self.buf[..self.len]);
            self.len = 0;
        }
    }
}

impl Write for Buffered {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.push(s.as_bytes());
        Ok(())
    }
}

/// The body of [`print!`](crate::print) and [`println!`](crate::println); not API.
#[doc(hidden)]
pub fn _print(args: fmt::Arguments<'_>, newline: bool) {
    let mut out = Buffered::new();
    // Our writer never fails; a `Display` impl that does just ends its own output
    // early (std would panic, which helps no one on a console).
    let _ = out.write_fmt(args);
    if newline {
        out.push(b"\n");
    }
    out.flush();
}

/// Prints to the console, like `std::print!`, in one hypercall.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => {
        $crate::console::_print(::core::format_args!($($arg)*), false)
    };
}

/// Prints a line to the console, like `std::println!`, in one hypercall.
#[macro_export]
macro_rules! println {
    () => {
        $crate::console::_print(::core::format_args!(""), true)
    };
    ($($arg:tt)*) => {
        $crate::console::_print(::core::format_args!($($arg)*), true)
    };
}
