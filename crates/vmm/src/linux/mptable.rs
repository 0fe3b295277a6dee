//! The Intel MultiProcessor table: how a kernel without ACPI finds its CPUs and
//! the IOAPIC. Written at the start of the EBDA (0x9fc00), one of the places
//! Linux scans for the `_MP_` floating pointer.

use super::layout;

/// Where the IOAPIC's registers are.
pub const IOAPIC_ADDR: u32 = 0xfec0_0000;
/// Where each CPU's local APIC is.
pub const LAPIC_ADDR: u32 = 0xfee0_0000;

fn checksum(bytes: &[u8]) -> u8 {
    0u8.wrapping_sub(bytes.iter().fold(0u8, |sum, b| sum.wrapping_add(*b)))
}

/// The floating pointer and the configuration table for `cpus` vCPUs, as bytes
/// to write at [`layout::EBDA_START`].
pub fn build(cpus: u8) -> Vec<u8> {
    let table_addr = layout::EBDA_START as u32 + 16;
    let ioapic_id = cpus + 1;
    let mut entries = Vec::new();
    let mut count: u16 = 0;
    for cpu in 0..cpus {
        let flags = 1 | if cpu == 0 { 2 } else { 0 }; // enabled, bootstrap processor
        entries.extend_from_slice(&[0, cpu, 0x14, flags]);
        entries.extend_from_slice(&0x600u32.to_le_bytes()); // family 6
        entries.extend_from_slice(&0x201u32.to_le_bytes()); // FPU, APIC
        entries.extend_from_slice(&[0; 8]);
        count += 1;
    }
    entries.extend_from_slice(&[1, 0]);
    entries.extend_from_slice(b"ISA   ");
    count += 1;
    entries.extend_from_slice(&[2, ioapic_id, 0x11, 1]);
    entries.extend_from_slice(&IOAPIC_ADDR.to_le_bytes());
    count += 1;
    for irq in 0..layout::IOAPIC_PINS as u8 {
        // I/O interrupt: INT, conforming polarity/trigger, ISA bus irq → IOAPIC pin.
        entries.extend_from_slice(&[3, 0, 0, 0, 0, irq, ioapic_id, irq]);
        count += 1;
    }
    // Local interrupts: ExtINT on LINT0, NMI on LINT1 of every local APIC.
    entries.extend_from_slice(&[4, 3, 0, 0, 0, 0, 0xff, 0]);
    entries.extend_from_slice(&[4, 1, 0, 0, 0, 0, 0xff, 1]);
    count += 2;

    let mut table = Vec::with_capacity(44 + entries.len());
    table.extend_from_slice(b"PCMP");
    table.extend_from_slice(&((44 + entries.len()) as u16).to_le_bytes());
    table.push(4); // spec revision 1.4
    table.push(0); // checksum, below
    table.extend_from_slice(b"LIGHTVM ");
    table.extend_from_slice(b"MICROVM     ");
    table.extend_from_slice(&[0; 4 + 2]); // OEM table pointer and size
    table.extend_from_slice(&count.to_le_bytes());
    table.extend_from_slice(&LAPIC_ADDR.to_le_bytes());
    table.extend_from_slice(&[0; 4]); // extended table length, checksum, reserved
    table.extend_from_slice(&entries);
    table[7] = checksum(&table);

    let mut floating = Vec::with_capacity(16);
    floating.extend_from_slice(b"_MP_");
    floating.extend_from_slice(&table_addr.to_le_bytes());
    floating.extend_from_slice(&[1, 4, 0, 0, 0, 0, 0, 0]);
    floating[10] = checksum(&floating);
    floating.extend(table);
    floating
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_well_formed() {
        let bytes = build(4);
        assert_eq!(&bytes[..4], b"_MP_");
        assert_eq!(bytes[..16].iter().fold(0u8, |s, b| s.wrapping_add(*b)), 0);
        assert_eq!(
            u32::from_le_bytes(bytes[4..8].try_into().unwrap()),
            layout::EBDA_START as u32 + 16
        );
        let table = &bytes[16..];
        assert_eq!(&table[..4], b"PCMP");
        let len = u16::from_le_bytes([table[4], table[5]]) as usize;
        assert_eq!(len, table.len());
        assert_eq!(table.iter().fold(0u8, |s, b| s.wrapping_add(*b)), 0);
        let count = u16::from_le_bytes([table[34], table[35]]);
        assert_eq!(count, 4 + 1 + 1 + 24 + 2);
        // Processor entries come first; only the first is the bootstrap CPU.
        assert_eq!(&table[44..48], &[0, 0, 0x14, 3]);
        assert_eq!(&table[64..68], &[0, 1, 0x14, 1]);
        assert!(bytes.len() <= (layout::LOW_MEM_END - layout::EBDA_START) as usize);
    }
}
