//! The guest's side of a device ring (layout in `lightvm_abi::devices`).
//!
//! The memory is allocated once and never freed: once attached, the VMM may read and
//! write it for the rest of the VM's life. Fields the VMM writes (`used`, completed
//! entries) are read with volatile loads; the hypercall `asm!` blocks also act as
//! compiler barriers, so entries are fully stored before the VMM looks at them.

use core::alloc::Layout;
use core::marker::PhantomData;
use core::ptr;

use crate::abi::devices::{ring_bytes, RingHeader};

/// A ring of `size` entries of type `E` in guest memory.
pub(crate) struct GuestRing<E> {
    base: *mut u8,
    size: u32,
    avail: u32,
    _entry: PhantomData<E>,
}

impl<E: Copy> GuestRing<E> {
    /// Allocates a zeroed ring of `size` slots (a power of two); panics (ending the
    /// VM with a message) if the heap cannot hold it.
    pub(crate) fn new(size: u32) -> Self {
        assert!(size.is_power_of_two());
        let bytes = ring_bytes(size, core::mem::size_of::<E>()) as usize;
        let layout = Layout::from_size_align(bytes, 64).expect("ring layout");
        // SAFETY: `layout` has a non-zero size.
        let base = unsafe { alloc::alloc::alloc_zeroed(layout) };
        if base.is_null() {
            alloc::alloc::handle_alloc_error(layout);
        }
        Self {
            base,
            size,
            avail: 0,
            _entry: PhantomData,
        }
    }

    /// The ring's guest address, for the setup hypercall.
    pub(crate) fn addr(&self) -> u64 {
        self.base as u64
    }

    /// Slots in the ring.
    pub(crate) fn size(&self) -> u32 {
        self.size
    }

    /// Entries published so far (the guest's `avail`).
    pub(crate) fn avail(&self) -> u32 {
        self.avail
    }

    /// Entries the VMM has finished (its `used`).
    pub(crate) fn used(&self) -> u32 {
        let header = self.base.cast::<RingHeader>();
        // SAFETY: `base` is the live, aligned ring allocation that starts with a
        // RingHeader; the VMM writes `used` only while this vCPU is stopped.
        unsafe { ptr::read_volatile(ptr::addr_of!((*header).used)) }
    }

    fn slot(&self, index: u32) -> *mut E {
        let slot = (index & (self.size - 1)) as usize;
        // SAFETY: slot < size, so the entry lies inside the allocation.
        unsafe {
            self.base
                .add(core::mem::size_of::<RingHeader>())
                .cast::<E>()
                .add(slot)
        }
    }

    /// Reads entry `index` of the stream.
    pub(crate) fn read(&self, index: u32) -> E {
        // SAFETY: `slot` points inside the allocation, aligned for E (64-byte base,
        // 16-byte header, entries of 16 or 32 bytes).
        unsafe { ptr::read_volatile(self.slot(index)) }
    }

    /// Writes entry `index` of the stream.
    pub(crate) fn write(&mut self, index: u32, entry: E) {
        // SAFETY: as in `read`.
        unsafe { ptr::write_volatile(self.slot(index), entry) }
    }

    /// Hands `count` more entries to the VMM.
    pub(crate) fn publish(&mut self, count: u32) {
        self.avail = self.avail.wrapping_add(count);
        let header = self.base.cast::<RingHeader>();
        // SAFETY: as in `used`.
        unsafe { ptr::write_volatile(ptr::addr_of_mut!((*header).avail), self.avail) }
    }

    /// Sets the published counter to an arbitrary value: for the tests that show
    /// the VMM refusing a broken ring, nothing else.
    #[doc(hidden)]
    pub(crate) fn force_avail(&mut self, avail: u32) {
        self.avail = avail.wrapping_sub(0);
        self.publish(0);
    }
}
