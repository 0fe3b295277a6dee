//! Rings in guest memory, read without trusting the guest.
//!
//! The layout is `lightvm_abi::devices`: a [`RingHeader`] and `size` entries. The
//! VMM keeps its own `used` counter and re-reads only `avail` from the guest; every
//! check that fails is an [`AbiViolation`] naming the ring.

use std::marker::PhantomData;

use lightvm_abi::devices::{ring_bytes, RingHeader, RING_ALIGN, RING_SIZE_MAX};
use zerocopy::{FromBytes, Immutable, IntoBytes};

use crate::unikernel::guest::{AbiViolation, Guest};

/// A ring of `E` entries the guest attached; `used` is the VMM's own counter.
#[derive(Debug)]
pub struct Ring<E> {
    name: &'static str,
    addr: u64,
    size: u32,
    used: u32,
    _entry: PhantomData<E>,
}

const USED_OFFSET: u64 = std::mem::offset_of!(RingHeader, used) as u64;
const HEADER_BYTES: u64 = std::mem::size_of::<RingHeader>() as u64;

impl<E: FromBytes + IntoBytes + Immutable> Ring<E> {
    /// Attaches the ring the guest placed at `addr` with `size` slots.
    pub fn attach(
        guest: &Guest<'_>,
        name: &'static str,
        addr: u64,
        size: u32,
    ) -> Result<Self, AbiViolation> {
        if size == 0 || !size.is_power_of_two() || size > RING_SIZE_MAX {
            return Err(AbiViolation(format!(
                "{name}: {size} slots; a ring has a power of two between 1 and {RING_SIZE_MAX}"
            )));
        }
        if !addr.is_multiple_of(RING_ALIGN) {
            return Err(AbiViolation(format!(
                "{name}: address {addr:#x} is not {RING_ALIGN}-byte aligned"
            )));
        }
        // The monitor writes the header's `used` and the entries' results: all of
        // the ring must be memory the guest may write.
        guest.check_writable(
            &|| name.to_owned(),
            addr,
            ring_bytes(size, std::mem::size_of::<E>()),
        )?;
        // The guest may have left anything in the header: start both counters at 0.
        guest.write(&|| name.to_owned(), addr, &RingHeader::default())?;
        Ok(Self {
            name,
            addr,
            size,
            used: 0,
            _entry: PhantomData,
        })
    }

    /// The ring's name, for messages.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Slots in the ring.
    pub fn size(&self) -> u32 {
        self.size
    }

    /// The guest's `avail`, checked: how many entries wait, from `used` on.
    pub fn pending(&self, guest: &Guest<'_>) -> Result<u32, AbiViolation> {
        let header: RingHeader = guest.read(&|| self.name.to_owned(), self.addr)?;
        let pending = header.avail.wrapping_sub(self.used);
        if pending > self.size {
            return Err(AbiViolation(format!(
                "{}: avail index {} is {} entries past used index {}, but the ring has only {} slots (index out of range)",
                self.name, header.avail, pending as i32, self.used, self.size
            )));
        }
        Ok(pending)
    }

    /// Guest address of entry `index` of the stream (slot `index % size`).
    pub fn entry_addr(&self, index: u32) -> u64 {
        let slot = u64::from(index & (self.size - 1));
        self.addr + HEADER_BYTES + slot * std::mem::size_of::<E>() as u64
    }

    /// Reads entry `used + offset`.
    pub fn read(&self, guest: &Guest<'_>, offset: u32) -> Result<E, AbiViolation> {
        guest.read(
            &|| self.name.to_owned(),
            self.entry_addr(self.used.wrapping_add(offset)),
        )
    }

    /// Writes entry `used + offset` back (the device's results).
    pub fn write(&self, guest: &Guest<'_>, offset: u32, entry: &E) -> Result<(), AbiViolation> {
        guest.write(
            &|| self.name.to_owned(),
            self.entry_addr(self.used.wrapping_add(offset)),
            entry,
        )
    }

    /// Hands `count` entries back to the guest and publishes the new `used`.
    pub fn complete(&mut self, guest: &Guest<'_>, count: u32) -> Result<(), AbiViolation> {
        if count == 0 {
            return Ok(());
        }
        self.used = self.used.wrapping_add(count);
        guest.write(
            &|| self.name.to_owned(),
            self.addr + USED_OFFSET,
            &self.used,
        )
    }

    /// The VMM's `used` counter.
    pub fn used(&self) -> u32 {
        self.used
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::unikernel::guest::tests::{memory, ownership, MEM, TEXT};
    use lightvm_abi::devices::NetDesc;
    use lightvm_abi::layout;

    const RING: u64 = 0x10_4000;

    fn name() -> String {
        "test".into()
    }

    #[test]
    fn bad_sizes_and_places_are_refused() {
        let (memory, owned) = (memory(), ownership());
        let guest = Guest::new(&memory, &owned);
        for (addr, size) in [
            (RING, 0),
            (RING, 3),
            (RING, RING_SIZE_MAX * 2),
            (RING + 1, 4),
            (MEM - 16, 4),
            (u64::MAX - 8, 4),
            // The monitor's pages and the image's read-only text.
            (layout::GDT_ADDR, 4),
            (layout::PAGE_TABLES_ADDR, 4),
            (layout::BOOT_INFO_ADDR, 4),
            (TEXT, 4),
        ] {
            assert!(
                Ring::<NetDesc>::attach(&guest, "r", addr, size).is_err(),
                "{addr:#x} {size}"
            );
        }
        assert!(Ring::<NetDesc>::attach(&guest, "r", RING, 256).is_ok());
    }

    #[test]
    fn avail_beyond_the_ring_is_an_index_out_of_range() {
        let (memory, owned) = (memory(), ownership());
        let guest = Guest::new(&memory, &owned);
        let mut ring = Ring::<NetDesc>::attach(&guest, "tx ring", RING, 8).unwrap();
        for avail in [0u32, 1, 8] {
            guest.write(&name, RING, &avail).unwrap();
            assert_eq!(ring.pending(&guest).unwrap(), avail);
        }
        for avail in [9u32, u32::MAX] {
            guest.write(&name, RING, &avail).unwrap();
            let err = ring.pending(&guest).unwrap_err();
            assert!(
                err.0.contains("tx ring") && err.0.contains("out of range"),
                "{err}"
            );
        }
        guest.write(&name, RING, &10u32).unwrap();
        ring.complete(&guest, 5).unwrap();
        assert_eq!(ring.pending(&guest).unwrap(), 5);
        let used: u32 = guest.read(&name, RING + USED_OFFSET).unwrap();
        assert_eq!(used, 5);
        assert_eq!(ring.entry_addr(9), RING + 16 + 16);
    }
}
