//! The panic handler: a panic ends the VM with status 101 and the panic message.
//!
//! Guests are built with `panic = "abort"`, so there is no unwinding: the handler
//! formats `panicked at file:line:col: message` and hands it to the VMM with the
//! `exit` hypercall, which shows it. It never allocates (the heap may be what
//! failed — an allocation failure panics with "memory allocation of N bytes failed")
//! and formats into a static buffer rather than the stack (the stack may be nearly
//! spent). A panic while panicking — a `Display` impl in the message that panics —
//! exits at once with a fixed message instead of recursing.

use core::cell::UnsafeCell;
use core::fmt::Write;
use core::panic::PanicInfo;
use core::sync::atomic::{AtomicBool, Ordering};

use crate::abi::limits::{EXIT_MESSAGE_MAX, PANIC_STATUS};
use crate::fmtbuf::FixedBuf;
use crate::hypercall;

/// Set by the first panic; a second one takes the short way out.
static PANICKING: AtomicBool = AtomicBool::new(false);

/// Where the first panic formats its message: as long as the VMM accepts.
struct MessageBuf(UnsafeCell<[u8; EXIT_MESSAGE_MAX as usize]>);

// SAFETY: only the first panic touches the buffer (see `PANICKING`), and there is one
// vCPU and no interrupt, so no two references to it can ever exist.
unsafe impl Sync for MessageBuf {}

static MESSAGE: MessageBuf = MessageBuf(UnsafeCell::new([0; EXIT_MESSAGE_MAX as usize]));

#[panic_handler]
fn panic(info: &PanicInfo<'_>) -> ! {
    if PANICKING.swap(true, Ordering::Relaxed) {
        hypercall::exit(PANIC_STATUS, "libos: panicked while panicking");
    }
    // SAFETY: we are the first panic (the swap above), so this is the only reference
    // to the buffer that will ever be made.
    let buf = unsafe { &mut *MESSAGE.0.get() };
    let mut text = FixedBuf::new(buf);
    // FixedBuf never fails; a failing `Display` in the message just ends it early.
    let _ = match info.location() {
        Some(loc) => write!(
            text,
            "panicked at {}:{}:{}: {}",
            loc.file(),
            loc.line(),
            loc.column(),
            info.message()
        ),
        None => write!(text, "panicked: {}", info.message()),
    };
    hypercall::exit(PANIC_STATUS, text.as_str())
}

/// Never called: the linker's answer to the landing pads in the precompiled `core`
/// and `alloc`.
///
/// Guests are built with `panic = "abort"`, but the standard library shipped for
/// `x86_64-unknown-linux-gnu` was compiled to unwind, and its code (a `BTreeMap`'s
/// drop inlined into the application, say) still carries landing pads that end in
/// `_Unwind_Resume`. Nothing can ever start unwinding — the panic handler above never
/// returns — so there is no unwinder to link; should this run anyway, the VM ends
/// with a message.
#[no_mangle]
pub extern "C" fn _Unwind_Resume(_exception: *mut u8) -> ! {
    hypercall::exit(
        PANIC_STATUS,
        "libos: _Unwind_Resume called, but guests never unwind",
    )
}

/// Never called: the personality routine the unwinding tables of the precompiled
/// `core` name (debug builds keep a reference to it), for the same reason as
/// [`_Unwind_Resume`]. An unwinder would call it; there is none.
#[no_mangle]
pub extern "C" fn rust_eh_personality() -> ! {
    hypercall::exit(
        PANIC_STATUS,
        "libos: rust_eh_personality called, but guests never unwind",
    )
}
