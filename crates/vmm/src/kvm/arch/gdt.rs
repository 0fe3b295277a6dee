//! The GDT, the TSS and the matching segment-register state.
//!
//! In 64-bit mode segments barely matter, but VM entry checks them and a guest that
//! reloads a selector reads the table, so the descriptors in guest memory and the
//! cached state handed to KVM are generated from one description and always agree.
//!
//! The TSS matters for one thing: its I/O-permission bitmap. The guest runs at CPL 3
//! with IOPL 0, so every `in`/`out` is checked against the bitmap, which opens the
//! hypercall ports and nothing else. (Our nested KVM does not honour IOPL 3 at CPL 3
//! anyway; the bitmap works on every host and grants the least.)

use kvm_bindings::kvm_segment;
use lightvm_abi::layout::{PAGE_SIZE, USER_CODE_SELECTOR, USER_DATA_SELECTOR};
use lightvm_abi::{HYPERCALL_PORT_BASE, HYPERCALL_PORT_COUNT, KVM_SYSCALL_PORT};

use super::segment::{Descriptor, TYPE_TSS_BUSY};

/// Selector of the task-state segment (a 16-byte system descriptor in slots 5–6).
/// VM entry requires a usable TR even though the guest never switches stacks.
const TSS_SELECTOR: u16 = 0x28;
/// Where the TSS lives: inside the GDT page, after the table.
const TSS_OFFSET: u64 = 0x800;
/// Size of the 64-bit TSS proper; the I/O bitmap follows it.
const TSS_HEADER: usize = 0x68;
/// Offset of the "I/O map base" field in the TSS.
const TSS_IO_MAP_BASE_FIELD: usize = 0x66;
/// Ports covered by the bitmap; ports above are denied by the TSS limit.
const IO_BITMAP_PORTS: usize = 0x800;
/// The bitmap, plus the all-ones byte the CPU requires after its last byte.
const IO_BITMAP_BYTES: usize = IO_BITMAP_PORTS / 8 + 1;
/// TSS limit: header and bitmap, minus one.
const TSS_LIMIT: u32 = (TSS_HEADER + IO_BITMAP_BYTES - 1) as u32;

// The table after its null descriptor: kernel code and data in slots 1–2 (a CPL-3
// guest never loads them), user data and 64-bit user code in slots 3–4, where the
// ABI's selectors point.
const KERNEL_CODE: Descriptor = Descriptor::flat_code(0, true);
const KERNEL_DATA: Descriptor = Descriptor::flat_data(0);
const USER_DATA: Descriptor = Descriptor::flat_data(3);
const USER_CODE: Descriptor = Descriptor::flat_code(3, true);

/// The TSS at `gdt_addr + TSS_OFFSET`: byte-granular, its limit covering the
/// I/O bitmap.
fn task(gdt_addr: u64) -> Descriptor {
    Descriptor {
        base: gdt_addr + TSS_OFFSET,
        limit: TSS_LIMIT,
        type_: TYPE_TSS_BUSY,
        dpl: 0,
        code_or_data: false,
        long: false,
        big: false,
        granular: false,
    }
}

/// Segment-register state for [`super::cpu`], matching [`table`].
pub struct Segments {
    /// CS: 64-bit user code.
    pub code: kvm_segment,
    /// SS/DS/ES/FS/GS: user data.
    pub data: kvm_segment,
    /// TR: a 64-bit TSS.
    pub task: kvm_segment,
    /// Size of the GDT in bytes, minus one (the GDTR limit).
    pub gdt_limit: u16,
}

/// The GDT page: the table at its start, the TSS and its I/O bitmap at
/// `TSS_OFFSET`. Written at `gdt_addr`.
pub fn page(gdt_addr: u64) -> Vec<u8> {
    let mut page = table(gdt_addr);
    page.resize(PAGE_SIZE as usize, 0);
    let tss = &mut page[TSS_OFFSET as usize..];
    tss[TSS_IO_MAP_BASE_FIELD..TSS_IO_MAP_BASE_FIELD + 2]
        .copy_from_slice(&(TSS_HEADER as u16).to_le_bytes());
    let bitmap = &mut tss[TSS_HEADER..TSS_HEADER + IO_BITMAP_BYTES];
    bitmap.fill(0xff);
    // A 4-byte `out` to port p checks the bits of p..p+3, so the last hypercall port
    // needs the three above it open too.
    let open = HYPERCALL_PORT_BASE..HYPERCALL_PORT_BASE + HYPERCALL_PORT_COUNT + 3;
    // The `syscall` stub's port: it runs at CPL 0, where the bitmap does not apply
    // on hardware, but our nested KVM's emulator checks it all the same. Open to
    // CPL 3 it gives a guest nothing: an `out` there is treated as a `syscall`.
    let syscall = KVM_SYSCALL_PORT..KVM_SYSCALL_PORT + 4;
    for port in open.chain(syscall).map(usize::from) {
        bitmap[port / 8] &= !(1 << (port % 8));
    }
    page
}

fn table(gdt_addr: u64) -> Vec<u8> {
    let [tss_low, tss_high] = task(gdt_addr).encode_system();
    let entries = [
        0,
        KERNEL_CODE.encode(),
        KERNEL_DATA.encode(),
        USER_DATA.encode(),
        USER_CODE.encode(),
        tss_low,
        tss_high,
    ];
    entries.iter().flat_map(|e| e.to_le_bytes()).collect()
}

/// The cached segment state KVM needs, consistent with [`table`].
pub fn segments(gdt_addr: u64) -> Segments {
    Segments {
        code: USER_CODE.to_kvm(USER_CODE_SELECTOR),
        data: USER_DATA.to_kvm(USER_DATA_SELECTOR),
        task: task(gdt_addr).to_kvm(TSS_SELECTOR),
        gdt_limit: (table(gdt_addr).len() - 1) as u16,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(table: &[u8], selector: u16) -> u64 {
        let at = usize::from(selector & !7);
        u64::from_le_bytes(table[at..at + 8].try_into().unwrap())
    }

    #[test]
    fn user_selectors_point_at_dpl3_descriptors() {
        let gdt = table(0x1000);
        let code = entry(&gdt, USER_CODE_SELECTOR);
        let data = entry(&gdt, USER_DATA_SELECTOR);
        assert_eq!((code >> 45) & 3, 3, "code DPL");
        assert_eq!((data >> 45) & 3, 3, "data DPL");
        assert_ne!(code & (1 << 53), 0, "code is 64-bit (L)");
        assert_eq!(code & (1 << 54), 0, "L and D are exclusive");
        assert_eq!(USER_CODE_SELECTOR & 3, 3, "RPL 3");
        assert_eq!(USER_DATA_SELECTOR & 3, 3, "RPL 3");
    }

    fn port_open(page: &[u8], port: usize) -> bool {
        let bitmap = &page[TSS_OFFSET as usize + TSS_HEADER..];
        bitmap[port / 8] & (1 << (port % 8)) == 0
    }

    #[test]
    fn the_io_bitmap_opens_only_hypercall_ports_and_the_syscall_stubs() {
        let page = page(0x1000);
        let base = usize::from(HYPERCALL_PORT_BASE);
        for port in base..base + usize::from(HYPERCALL_PORT_COUNT) {
            assert!(port_open(&page, port), "{port:#x}");
        }
        assert!(port_open(&page, usize::from(KVM_SYSCALL_PORT)));
        for port in [0x3f8, 0x60, 0x64, base - 1, 0x7ff] {
            assert!(!port_open(&page, port), "{port:#x}");
        }
        let limit = TSS_OFFSET as usize + TSS_LIMIT as usize;
        assert_eq!(
            page[limit], 0xff,
            "the byte after the bitmap must be all ones"
        );
        assert!(limit < page.len());
    }

    #[test]
    fn kvm_state_matches_the_table() {
        let state = segments(0x1000);
        assert_eq!(state.code.selector, USER_CODE_SELECTOR);
        assert_eq!((state.code.dpl, state.code.l), (3, 1));
        assert_eq!(state.data.selector, USER_DATA_SELECTOR);
        assert_eq!(usize::from(state.gdt_limit) + 1, table(0x1000).len());
        let tss = entry(&table(0x1000), TSS_SELECTOR);
        assert_eq!((tss >> 40) & 0xf, u64::from(TYPE_TSS_BUSY));
        assert_eq!(state.task.base, 0x1000 + TSS_OFFSET);
    }
}
