//! Segment descriptors, described once and encoded both ways a monitor needs them:
//! the 8-byte descriptor the CPU reads from the GDT in guest memory, and the cached
//! segment-register state (`kvm_segment`) handed to KVM.
//!
//! VM entry checks the cached state, and a guest that reloads a selector reads the
//! table, so the two must agree; deriving both from one [`Descriptor`] makes that
//! true by construction. The unikernel's GDT ([`super::gdt`]) and a Linux kernel's
//! boot GDT (`crate::linux::cpu`) are both built from it.

use kvm_bindings::kvm_segment;

/// Type of a code segment: execute/read, accessed.
pub const TYPE_CODE_EXEC_READ_ACCESSED: u8 = 0xb;
/// Type of a data segment: read/write, accessed.
pub const TYPE_DATA_READ_WRITE_ACCESSED: u8 = 0x3;
/// Type of a busy TSS: a 64-bit TSS in long mode, a 32-bit one in protected mode.
/// VM entry wants TR busy.
pub const TYPE_TSS_BUSY: u8 = 0xb;

/// One segment, as both the GDT encoding and KVM's cached form need it. Every
/// descriptor lightvm writes is present.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Descriptor {
    /// Base address; bits 32..64 only fit a 16-byte system descriptor.
    pub base: u64,
    /// The 20-bit limit field: in bytes, or in 4 KiB units when `granular`.
    pub limit: u32,
    /// The type field (`TYPE_*`).
    pub type_: u8,
    /// Descriptor privilege level.
    pub dpl: u8,
    /// S: a code or data segment (clear for a system segment such as a TSS).
    pub code_or_data: bool,
    /// L: 64-bit code.
    pub long: bool,
    /// D/B: 32-bit default operand and stack size.
    pub big: bool,
    /// G: the limit counts 4 KiB units.
    pub granular: bool,
}

impl Descriptor {
    /// A flat code segment (base 0, 4 GiB): 64-bit if `long`, else 32-bit.
    pub const fn flat_code(dpl: u8, long: bool) -> Self {
        Self {
            base: 0,
            limit: 0xf_ffff,
            type_: TYPE_CODE_EXEC_READ_ACCESSED,
            dpl,
            code_or_data: true,
            long,
            big: !long,
            granular: true,
        }
    }

    /// A flat read/write data segment (base 0, 4 GiB).
    pub const fn flat_data(dpl: u8) -> Self {
        Self {
            base: 0,
            limit: 0xf_ffff,
            type_: TYPE_DATA_READ_WRITE_ACCESSED,
            dpl,
            code_or_data: true,
            long: false,
            big: true,
            granular: true,
        }
    }

    /// The 8-byte descriptor; for a system descriptor, its low half.
    pub const fn encode(&self) -> u64 {
        let base = self.base;
        let limit = self.limit as u64;
        let access = 0x80 // present
            | ((self.dpl as u64) << 5)
            | ((self.code_or_data as u64) << 4)
            | self.type_ as u64;
        let flags =
            ((self.granular as u64) << 3) | ((self.big as u64) << 2) | ((self.long as u64) << 1);
        (limit & 0xffff)
            | ((base & 0xff_ffff) << 16)
            | (access << 40)
            | (((limit >> 16) & 0xf) << 48)
            | (flags << 52)
            | (((base >> 24) & 0xff) << 56)
    }

    /// The 16-byte system descriptor of long mode (a 64-bit TSS): the 8-byte
    /// descriptor, then bits 32..64 of the base.
    pub const fn encode_system(&self) -> [u64; 2] {
        [self.encode(), self.base >> 32]
    }

    /// The cached state KVM takes when `selector` names this descriptor: what the
    /// CPU would load from [`Descriptor::encode`], the limit scaled to bytes.
    pub fn to_kvm(&self, selector: u16) -> kvm_segment {
        let limit = if self.granular {
            (self.limit << 12) | 0xfff
        } else {
            self.limit
        };
        kvm_segment {
            base: self.base,
            limit,
            selector,
            type_: self.type_,
            present: 1,
            dpl: self.dpl,
            db: u8::from(self.big),
            s: u8::from(self.code_or_data),
            l: u8::from(self.long),
            g: u8::from(self.granular),
            avl: 0,
            unusable: 0,
            padding: 0,
        }
    }
}

/// Reads an 8-byte descriptor back the way the CPU loads it into a segment
/// register: for tests that check a table in guest memory, not a [`Descriptor`].
#[cfg(test)]
pub(crate) fn decode(descriptor: u64, selector: u16) -> kvm_segment {
    let flags = (descriptor >> 40) & 0xf0ff;
    kvm_segment {
        base: ((descriptor >> 16) & 0xff_ffff) | ((descriptor >> 32) & 0xff00_0000),
        limit: {
            let raw = ((descriptor >> 32) & 0xf_0000) | (descriptor & 0xffff);
            // Granularity: 4 KiB units.
            if flags & 0x8000 != 0 {
                ((raw << 12) | 0xfff) as u32
            } else {
                raw as u32
            }
        },
        selector,
        type_: (flags & 0xf) as u8,
        present: ((flags >> 7) & 1) as u8,
        dpl: ((flags >> 5) & 3) as u8,
        db: ((flags >> 14) & 1) as u8,
        s: ((flags >> 4) & 1) as u8,
        l: ((flags >> 13) & 1) as u8,
        g: ((flags >> 15) & 1) as u8,
        avl: ((flags >> 12) & 1) as u8,
        unusable: 0,
        padding: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_and_the_cached_state_agree() {
        let tss = Descriptor {
            base: 0x1234_5678_9abc,
            limit: 0x168,
            type_: TYPE_TSS_BUSY,
            dpl: 0,
            code_or_data: false,
            long: false,
            big: false,
            granular: false,
        };
        for descriptor in [
            Descriptor::flat_code(0, true),
            Descriptor::flat_code(3, true),
            Descriptor::flat_code(0, false),
            Descriptor::flat_data(0),
            Descriptor::flat_data(3),
            Descriptor {
                base: 0x5678_9abc,
                ..tss
            },
        ] {
            assert_eq!(
                decode(descriptor.encode(), 0x18),
                descriptor.to_kvm(0x18),
                "{descriptor:?}"
            );
        }
        let [low, high] = tss.encode_system();
        assert_eq!(decode(low, 0x28).base, 0x5678_9abc);
        assert_eq!(high, 0x1234);
    }

    #[test]
    fn flat_segments_cover_four_gibibytes() {
        let code = Descriptor::flat_code(3, true).to_kvm(0x23);
        assert_eq!((code.base, code.limit, code.g), (0, u32::MAX, 1));
        assert_eq!((code.l, code.db, code.dpl), (1, 0, 3));
        assert_eq!(Descriptor::flat_data(0).encode(), 0x00cf_9300_0000_ffff);
    }
}
