//! The network the program's sockets use: lightvm's TCP/IP stack (smoltcp over
//! the VM's network device), when the VM has one.
//!
//! The stack is polled (no exit) before every wait condition is checked, and the
//! one place the personality blocks, [`idle`], sleeps in the monitor until a
//! frame arrives, the stack's next timer, or the caller's deadline.

use core::cell::UnsafeCell;
use core::time::Duration;

use libos::net::Net;

struct Global(UnsafeCell<Option<Net>>);

// SAFETY: one vCPU; the stack is reached only from system calls and start-up,
// one at a time (see `crate::kernel`).
unsafe impl Sync for Global {}

static NET: Global = Global(UnsafeCell::new(None));

/// Brings the network up if the VM has a device and the command line an
/// address (`ip=ADDR/PREFIX [gw=ADDR]`, or `dhcp`); without a device the program
/// still runs, with no network. Returns a reason when a device is present but
/// cannot be configured.
pub fn init() -> Result<(), libos::net::NetError> {
    match Net::from_cmdline() {
        Ok(mut net) => {
            // Listeners refill their pools between the frames of a burst.
            net.set_ingress_hook(Some(crate::socket::on_ingress));
            // SAFETY: called once at start-up, before the program runs.
            unsafe { *NET.0.get() = Some(net) };
            Ok(())
        }
        Err(libos::net::NetError::NoDevice) => Ok(()),
        Err(error) => Err(error),
    }
}

/// The stack, if the VM has a network.
#[allow(clippy::mut_from_ref)]
pub fn stack() -> Option<&'static mut Net> {
    // SAFETY: see `Global`: one handler at a time holds this reference.
    unsafe { (*NET.0.get()).as_mut() }
}

/// Runs the stack on what has arrived, without leaving the VM, and frees the
/// closed connections that are over.
pub fn poll() {
    if let Some(net) = stack() {
        net.poll();
        crate::socket::reap();
    }
}

/// Sleeps in the monitor until a frame arrives, the stack has work, or `limit`
/// passes (`None`: no limit of the caller's).
pub fn idle(limit: Option<Duration>) {
    match stack() {
        Some(net) => {
            net.wait_at_most(limit);
            // The exit sent what the program's sends had queued.
            crate::socket::flushed();
        }
        None => {
            let timeout_ns = limit.map_or(u64::MAX, |limit| {
                u64::try_from(limit.as_nanos()).unwrap_or(u64::MAX)
            });
            libos::hypercall::poll(timeout_ns);
        }
    }
}
