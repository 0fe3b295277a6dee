//! The global allocator: a linked-list heap over the memory the VMM leaves free.
//!
//! The VMM maps all guest memory up front and names the free part after the image
//! in [`BootInfo::heap_start`](crate::abi::BootInfo::heap_start)`..heap_end`; `_start`
//! hands that range to a first-fit [`linked_list_allocator::Heap`], so applications
//! can `extern crate alloc;` and use `Vec`, `String`, `Box` and the rest.
//!
//! There is one vCPU and no interrupt, so nothing can run concurrently with the
//! allocator. Instead of a spin lock (which would only ever deadlock on re-entry) the
//! heap sits behind a busy flag: a re-entrant call — impossible unless the allocator
//! itself faults into code that allocates — fails the allocation instead of
//! corrupting the free list. A failed allocation makes `alloc` panic ("memory
//! allocation of N bytes failed"), and the panic handler ends the VM with status 101:
//! running out of memory is an exit with a message, never a hang.

use core::alloc::{GlobalAlloc, Layout};
use core::cell::UnsafeCell;
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicBool, Ordering};

use linked_list_allocator::Heap;

/// A heap with a busy flag in place of a lock.
struct GuestHeap {
    heap: UnsafeCell<Heap>,
    busy: AtomicBool,
}

// SAFETY: the heap is only reached through `with`, whose busy flag guarantees that at
// most one `&mut Heap` exists at a time (one vCPU, no interrupts, re-entry refused).
unsafe impl Sync for GuestHeap {}

impl GuestHeap {
    /// Runs `f` on the heap, or returns `None` if a call is already inside it.
    fn with<R>(&self, f: impl FnOnce(&mut Heap) -> R) -> Option<R> {
        if self.busy.swap(true, Ordering::Acquire) {
            return None;
        }
        // SAFETY: we set the busy flag, so no other reference to the heap exists until
        // we clear it below.
        let result = f(unsafe { &mut *self.heap.get() });
        self.busy.store(false, Ordering::Release);
        Some(result)
    }
}

// SAFETY: allocations come from `linked_list_allocator`, which hands out disjoint
// blocks of the requested layout from the heap range and takes them back by layout.
unsafe impl GlobalAlloc for GuestHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.with(|heap| {
            heap.allocate_first_fit(layout)
                .map_or(ptr::null_mut(), NonNull::as_ptr)
        })
        .unwrap_or(ptr::null_mut())
    }

    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        if let Some(block) = NonNull::new(block) {
            // A refused re-entrant call leaks the block: better than a corrupt list.
            self.with(|heap| {
                // SAFETY: GlobalAlloc's contract: `block` came from `alloc` with `layout`.
                unsafe { heap.deallocate(block, layout) }
            });
        }
    }
}

#[global_allocator]
static HEAP: GuestHeap = GuestHeap {
    heap: UnsafeCell::new(Heap::empty()),
    busy: AtomicBool::new(false),
};

/// Gives the heap the memory `start..end` (guest addresses, checked by `_start`).
///
/// A range too small for the allocator's bookkeeping leaves the heap empty: every
/// allocation then fails (and panics), which is the honest answer for a VM whose
/// image fills its memory.
///
/// # Safety
///
/// `start..end` must be mapped, writable and used by nothing else for the rest of the
/// run, and this must be called once, before the first allocation.
pub unsafe fn init(start: u64, end: u64) {
    // Guest addresses are below MEM_MAX (3 GiB): they fit usize.
    let size = end.saturating_sub(start) as usize;
    // Generous for the allocator's minimum (up to three words plus alignment).
    if size < 64 {
        return;
    }
    HEAP.with(|heap| {
        // SAFETY: the caller hands over `start..end` for good, once, before any use.
        unsafe { heap.init(start as *mut u8, size) }
    });
}

/// How the heap is used, for applications that report their memory footprint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Bytes the heap manages.
    pub size: usize,
    /// Bytes currently allocated.
    pub used: usize,
    /// Bytes free (`size - used`; fragmentation may keep a large allocation from
    /// fitting even so).
    pub free: usize,
}

/// The heap's current [`Stats`] (all zero if a heap call is in progress, which only
/// a re-entrant call could observe).
pub fn stats() -> Stats {
    HEAP.with(|heap| Stats {
        size: heap.size(),
        used: heap.used(),
        free: heap.free(),
    })
    .unwrap_or(Stats {
        size: 0,
        used: 0,
        free: 0,
    })
}
