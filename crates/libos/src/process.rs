//! Ending the guest: [`exit`] and the [`Termination`] of `main`.
//!
//! A unikernel is its VM: when the application ends, the VM ends, with a status the
//! VMM passes on as its own exit status (`lightvm run` exits with it). The ABI lets a
//! guest use `0..=`[`GUEST_STATUS_MAX`]; the codes above belong to the VMM's own
//! outcomes (timeout, crash, ABI violation), so `exit` never passes a status outside
//! that range.

use core::fmt::{self, Write};

use crate::abi::limits::{GUEST_STATUS_MAX, PANIC_STATUS};
use crate::fmtbuf::FixedBuf;
use crate::hypercall;

/// The status of a panic (as with Rust's std): the panic handler exits with it.
pub const PANIC: i32 = PANIC_STATUS as i32;

/// The status `libos` ends the guest with when it cannot keep its side of the
/// contract: the boot info is unusable, or the application asked for an exit status
/// outside `0..=GUEST_STATUS_MAX`. The exit message says which.
pub const CONTRACT_ERROR: i32 = GUEST_STATUS_MAX as i32;

/// Ends the VM with `code`, which should lie in `0..=`[`GUEST_STATUS_MAX`]; any
/// other code ends it with [`CONTRACT_ERROR`] and a message naming the code.
pub fn exit(code: i32) -> ! {
    match u32::try_from(code) {
        Ok(status) if status <= GUEST_STATUS_MAX => hypercall::exit(status, ""),
        _ => exit_with_message(
            GUEST_STATUS_MAX,
            format_args!("libos: exit status {code} is outside 0..={GUEST_STATUS_MAX}"),
        ),
    }
}

/// Ends the VM with `status` and a formatted message, cut to fit a stack buffer: for
/// the paths where allocating is not an option.
pub fn exit_with_message(status: u32, msg: fmt::Arguments<'_>) -> ! {
    let mut buf = [0u8; 256];
    let mut text = FixedBuf::new(&mut buf);
    // FixedBuf never fails; it cuts what does not fit.
    let _ = text.write_fmt(msg);
    hypercall::exit(status, text.as_str())
}

/// What an application's `main` may return: the exit status it stands for.
///
/// Implemented for `()` (0), `i32` (the status itself) and `Result<T, E>` (`T`'s
/// status, or 1 after printing `Error: {e:?}`, as Rust's std does), so that `main`
/// can be written the way it would be for a normal program.
pub trait Termination {
    /// The exit status.
    fn report(self) -> i32;
}

impl Termination for () {
    fn report(self) -> i32 {
        0
    }
}

impl Termination for i32 {
    fn report(self) -> i32 {
        self
    }
}

impl<T: Termination, E: fmt::Debug> Termination for Result<T, E> {
    fn report(self) -> i32 {
        match self {
            Ok(value) => value.report(),
            Err(err) => {
                crate::println!("Error: {err:?}");
                1
            }
        }
    }
}

/// Names the application's `main`, which `_start` calls once the guest has booted.
///
/// ```ignore
/// libos::entry!(main);
///
/// fn main() -> i32 {
///     0
/// }
/// ```
///
/// `main` may return anything that implements [`Termination`]: `()`, `i32`, or a
/// `Result`. With `entry!(main, manual_start)`, `_start` leaves two things to the
/// application: initialising the heap ([`heap::init`](crate::heap::init), on the
/// part of memory it chooses) and the boot-done hypercall (when what it boots
/// reaches its own start) — what the Linux personality needs for the program it
/// runs. The macro defines the unmangled function `__libos_main`, which `libos`
/// declares and calls; an application that forgets `entry!` fails to link with
/// "undefined reference to `__libos_main`".
#[macro_export]
macro_rules! entry {
    ($main:path) => {
        #[doc(hidden)]
        #[no_mangle]
        pub fn __libos_main() -> i32 {
            $crate::Termination::report($main())
        }
        #[doc(hidden)]
        #[no_mangle]
        pub static __libos_manual_start: bool = false;
    };
    ($main:path, manual_start) => {
        #[doc(hidden)]
        #[no_mangle]
        pub fn __libos_main() -> i32 {
            $crate::Termination::report($main())
        }
        #[doc(hidden)]
        #[no_mangle]
        pub static __libos_manual_start: bool = true;
    };
}
