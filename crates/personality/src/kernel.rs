//! The personality's state: what a Linux kernel keeps for one process.
//!
//! There is one program and one vCPU, and the program's threads run one at a
//! time, switched only inside system calls: the state is a single global, reached
//! through [`kernel`] from the system-call handlers (which the entry calls one at
//! a time) and from start-up.

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use core::cell::UnsafeCell;

use crate::fd::FdTable;
use crate::mm::Memory;
use crate::vfs::{Ino, Vfs};

/// The process.
pub struct Kernel {
    /// Its files.
    pub vfs: Vfs,
    /// Its descriptors.
    pub fds: FdTable,
    /// Its memory.
    pub mm: Memory,
    /// Its working directory.
    pub cwd: Ino,
    /// The program's path (`/proc/self/exe`).
    pub exe: String,
    /// Its command line (`/proc/self/cmdline`, `/proc/self/stat`).
    pub argv: Vec<String>,
    /// Print every call and its result (`--trace-syscalls`).
    pub trace: bool,
    /// Calls answered with ENOSYS, by number, with their count.
    pub unimplemented: BTreeMap<u64, u32>,
    /// The file-creation mask.
    pub umask: u32,
    /// Where the program's code may be rewritten: its memory.
    pub code: core::ops::Range<u64>,
    /// Signal dispositions the program set (recorded; signals are not delivered).
    pub signal_actions: BTreeMap<u64, [u8; 32]>,
    /// A counter for names the personality makes up (unnamed temporary files).
    pub counter: u64,
}

impl Kernel {
    /// A number not handed out before.
    pub fn vfs_counter(&mut self) -> u64 {
        self.counter += 1;
        self.counter
    }
}

struct Global(UnsafeCell<Option<Kernel>>);

// SAFETY: one vCPU, and the program's threads run one at a time, switched only
// inside system calls: the state is never reached from two places at once (see
// the module docs).
unsafe impl Sync for Global {}

static KERNEL: Global = Global(UnsafeCell::new(None));

/// Makes `kernel` the process's state.
pub fn install(kernel: Kernel) {
    // SAFETY: called once at start-up, before the program (and so any system
    // call) runs.
    unsafe { *KERNEL.0.get() = Some(kernel) };
}

/// The process's state.
///
/// # Panics
///
/// Never after start-up: `install` runs before the program's first instruction.
#[allow(clippy::mut_from_ref)]
pub fn kernel() -> &'static mut Kernel {
    // SAFETY: see `Global`: one handler at a time holds this reference.
    match unsafe { (*KERNEL.0.get()).as_mut() } {
        Some(kernel) => kernel,
        None => crate::fatal("the personality's state was used before start-up"),
    }
}
