//! What the kernel is told at boot: the e820 memory map, and either the Linux
//! zero page (`struct boot_params`, 64-bit boot protocol) or the PVH start info.
//!
//! These are pure functions of the memory layout, so the exact bytes the kernel
//! reads are unit-tested; [`super::vm`] only copies them into guest memory.

use linux_loader::loader::bootparam::{boot_e820_entry, boot_params, setup_header};
use linux_loader::loader::elf::start_info::{
    hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info,
};

use super::layout;

/// e820 type of usable RAM.
pub const E820_RAM: u32 = 1;
/// e820 type of reserved memory.
pub const E820_RESERVED: u32 = 2;
/// `hvm_start_info.magic` ("xEn3" with the top bit flipped, per the PVH ABI).
pub const PVH_MAGIC: u32 = 0x336e_c578;
/// The setup header's `boot_flag`.
const BOOT_FLAG: u16 = 0xaa55;
/// The setup header's `header` ("HdrS").
const HDR_MAGIC: u32 = 0x5372_6448;
/// `type_of_loader`: a boot loader with no assigned id.
const LOADER_OTHER: u8 = 0xff;
/// `loadflags`: the protected-mode code is loaded at 1 MiB.
const LOADED_HIGH: u8 = 0x1;
/// Kernel alignment a `vmlinux` is linked for (CONFIG_PHYSICAL_ALIGN's default).
const KERNEL_ALIGNMENT: u32 = 0x100_0000;

/// One range of the physical memory map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct E820Entry {
    /// First byte.
    pub addr: u64,
    /// Length in bytes.
    pub size: u64,
    /// [`E820_RAM`] or [`E820_RESERVED`].
    pub kind: u32,
}

/// The memory map of a guest with `mem_size` bytes of RAM at address 0: low
/// memory up to the EBDA, the EBDA itself reserved (the MP table lives there),
/// and everything from 1 MiB to the end of RAM. The legacy hole (640 KiB – 1 MiB)
/// is left out, as on a PC.
pub fn e820_map(mem_size: u64) -> Vec<E820Entry> {
    vec![
        E820Entry {
            addr: 0,
            size: layout::EBDA_START,
            kind: E820_RAM,
        },
        E820Entry {
            addr: layout::EBDA_START,
            size: layout::LOW_MEM_END - layout::EBDA_START,
            kind: E820_RESERVED,
        },
        E820Entry {
            addr: layout::HIMEM_START,
            size: mem_size.saturating_sub(layout::HIMEM_START),
            kind: E820_RAM,
        },
    ]
}

/// Where the initrd was placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InitrdPlacement {
    /// Guest physical address (page-aligned).
    pub addr: u64,
    /// Size in bytes.
    pub size: u64,
}

/// Everything [`zero_page`] and [`pvh_start_info`] need to know.
#[derive(Debug, Clone, Copy)]
pub struct BootSpec<'a> {
    /// The memory map.
    pub e820: &'a [E820Entry],
    /// Where the NUL-terminated command line is.
    pub cmdline_addr: u64,
    /// Its length, without the NUL.
    pub cmdline_len: usize,
    /// The initrd, if any.
    pub initrd: Option<InitrdPlacement>,
}

/// The Linux zero page for the 64-bit boot protocol. `header` is the bzImage's
/// own setup header (its fields are kept, as the protocol asks), or `None` for an
/// ELF `vmlinux`, which has none.
pub fn zero_page(spec: &BootSpec<'_>, header: Option<setup_header>) -> boot_params {
    let mut params = boot_params::default();
    if let Some(header) = header {
        params.hdr = header;
    } else {
        params.hdr.kernel_alignment = KERNEL_ALIGNMENT;
    }
    params.hdr.type_of_loader = LOADER_OTHER;
    params.hdr.boot_flag = BOOT_FLAG;
    params.hdr.header = HDR_MAGIC;
    params.hdr.loadflags |= LOADED_HIGH;
    params.hdr.cmd_line_ptr = spec.cmdline_addr as u32;
    params.ext_cmd_line_ptr = (spec.cmdline_addr >> 32) as u32;
    params.hdr.cmdline_size = spec.cmdline_len as u32;
    if let Some(initrd) = spec.initrd {
        params.hdr.ramdisk_image = initrd.addr as u32;
        params.ext_ramdisk_image = (initrd.addr >> 32) as u32;
        params.hdr.ramdisk_size = initrd.size as u32;
        params.ext_ramdisk_size = (initrd.size >> 32) as u32;
    }
    let count = spec.e820.len().min(params.e820_table.len());
    for (slot, entry) in params.e820_table.iter_mut().zip(&spec.e820[..count]) {
        *slot = boot_e820_entry {
            addr: entry.addr,
            size: entry.size,
            r#type: entry.kind,
        };
    }
    params.e820_entries = count as u8;
    params
}

/// The PVH boot information: the start info, its memory map and module list
/// (the initrd is module 0), to be written at the [`layout`] addresses the start
/// info points to.
pub struct PvhInfo {
    /// Written at [`layout::PVH_INFO_ADDR`].
    pub start_info: hvm_start_info,
    /// Written at [`layout::PVH_MEMMAP_ADDR`].
    pub memmap: Vec<hvm_memmap_table_entry>,
    /// Written at [`layout::PVH_MODLIST_ADDR`].
    pub modules: Vec<hvm_modlist_entry>,
}

/// Builds the PVH start info for `spec`.
pub fn pvh_start_info(spec: &BootSpec<'_>) -> PvhInfo {
    let memmap: Vec<hvm_memmap_table_entry> = spec
        .e820
        .iter()
        .take(layout::MAX_E820_ENTRIES)
        .map(|entry| hvm_memmap_table_entry {
            addr: entry.addr,
            size: entry.size,
            type_: entry.kind,
            reserved: 0,
        })
        .collect();
    let modules: Vec<hvm_modlist_entry> = spec
        .initrd
        .iter()
        .map(|initrd| hvm_modlist_entry {
            paddr: initrd.addr,
            size: initrd.size,
            ..Default::default()
        })
        .collect();
    let start_info = hvm_start_info {
        magic: PVH_MAGIC,
        version: 1,
        flags: 0,
        nr_modules: modules.len() as u32,
        modlist_paddr: if modules.is_empty() {
            0
        } else {
            layout::PVH_MODLIST_ADDR
        },
        cmdline_paddr: spec.cmdline_addr,
        rsdp_paddr: 0,
        memmap_paddr: layout::PVH_MEMMAP_ADDR,
        memmap_entries: memmap.len() as u32,
        reserved: 0,
    };
    PvhInfo {
        start_info,
        memmap,
        modules,
    }
}

/// Places an initrd of `size` bytes as high as possible: page-aligned, ending at
/// or below `limit` (the end of RAM, or the kernel's `initrd_addr_max`), and
/// wholly above `kernel_end`. `None` if it does not fit there.
pub fn place_initrd(size: u64, kernel_end: u64, limit: u64) -> Option<InitrdPlacement> {
    const PAGE: u64 = 4096;
    let addr = limit.checked_sub(size)? & !(PAGE - 1);
    (addr >= kernel_end.next_multiple_of(PAGE)).then_some(InitrdPlacement { addr, size })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MEM: u64 = 128 << 20;

    fn spec(e820: &[E820Entry], initrd: Option<InitrdPlacement>) -> BootSpec<'_> {
        BootSpec {
            e820,
            cmdline_addr: layout::CMDLINE_ADDR,
            cmdline_len: 19,
            initrd,
        }
    }

    #[test]
    fn the_e820_map_covers_ram_and_skips_the_legacy_hole() {
        let map = e820_map(MEM);
        let ram: u64 = map
            .iter()
            .filter(|e| e.kind == E820_RAM)
            .map(|e| e.size)
            .sum();
        assert_eq!(ram, MEM - (layout::HIMEM_START - layout::EBDA_START));
        // Sorted, non-overlapping, nothing past the end of memory.
        for pair in map.windows(2) {
            assert!(pair[0].addr + pair[0].size <= pair[1].addr, "{map:?}");
        }
        let last = map.last().unwrap();
        assert_eq!(last.addr + last.size, MEM);
        // Nothing usable in 640 KiB .. 1 MiB; the EBDA (MP table) is reserved.
        assert!(map.iter().all(|e| e.kind != E820_RAM
            || e.addr + e.size <= layout::EBDA_START
            || e.addr >= layout::HIMEM_START));
        assert!(map
            .iter()
            .any(|e| e.kind == E820_RESERVED && e.addr == layout::EBDA_START));
    }

    #[test]
    fn the_zero_page_of_a_vmlinux_carries_map_cmdline_and_initrd() {
        let map = e820_map(MEM);
        let initrd = InitrdPlacement {
            addr: 0x7f0_0000,
            size: 0x1234,
        };
        let params = zero_page(&spec(&map, Some(initrd)), None);
        assert_eq!({ params.hdr.boot_flag }, 0xaa55);
        assert_eq!({ params.hdr.header }, 0x5372_6448);
        assert_eq!({ params.hdr.type_of_loader }, 0xff);
        assert_eq!({ params.hdr.cmd_line_ptr }, layout::CMDLINE_ADDR as u32);
        assert_eq!({ params.ext_cmd_line_ptr }, 0);
        assert_eq!({ params.hdr.cmdline_size }, 19);
        assert_eq!({ params.hdr.kernel_alignment }, 0x100_0000);
        assert_eq!({ params.hdr.ramdisk_image }, 0x7f0_0000);
        assert_eq!({ params.hdr.ramdisk_size }, 0x1234);
        assert_eq!(params.e820_entries as usize, map.len());
        for (raw, entry) in params.e820_table.iter().zip(&map) {
            assert_eq!(
                ({ raw.addr }, { raw.size }, { raw.r#type }),
                (entry.addr, entry.size, entry.kind)
            );
        }
        assert_eq!({ params.e820_table[map.len()].size }, 0);
    }

    #[test]
    fn the_zero_page_of_a_bzimage_keeps_its_setup_header() {
        let header = setup_header {
            setup_sects: 27,
            version: 0x20f,
            kernel_alignment: 0x20_0000,
            initrd_addr_max: 0x7fff_ffff,
            ..Default::default()
        };
        let params = zero_page(&spec(&e820_map(MEM), None), Some(header));
        assert_eq!({ params.hdr.setup_sects }, 27);
        assert_eq!({ params.hdr.version }, 0x20f);
        assert_eq!({ params.hdr.kernel_alignment }, 0x20_0000);
        assert_eq!(params.hdr.loadflags & 1, 1);
        assert_eq!({ params.hdr.ramdisk_image }, 0);
        assert_eq!({ params.hdr.ramdisk_size }, 0);
    }

    #[test]
    fn the_zero_page_is_the_size_the_kernel_expects() {
        assert_eq!(std::mem::size_of::<boot_params>(), 4096);
        assert_eq!(std::mem::offset_of!(boot_params, hdr), 0x1f1);
        assert_eq!(std::mem::offset_of!(boot_params, e820_table), 0x2d0);
    }

    #[test]
    fn pvh_start_info_points_at_its_tables() {
        let map = e820_map(MEM);
        let initrd = InitrdPlacement {
            addr: 0x700_0000,
            size: 4096,
        };
        let info = pvh_start_info(&spec(&map, Some(initrd)));
        let start = info.start_info;
        assert_eq!(start.magic, PVH_MAGIC);
        assert_eq!(start.version, 1);
        assert_eq!(start.cmdline_paddr, layout::CMDLINE_ADDR);
        assert_eq!(start.memmap_paddr, layout::PVH_MEMMAP_ADDR);
        assert_eq!(start.memmap_entries as usize, map.len());
        assert_eq!(start.nr_modules, 1);
        assert_eq!(start.modlist_paddr, layout::PVH_MODLIST_ADDR);
        assert_eq!(info.modules[0].paddr, 0x700_0000);
        assert_eq!(info.modules[0].size, 4096);
        for (raw, entry) in info.memmap.iter().zip(&map) {
            assert_eq!(
                (raw.addr, raw.size, raw.type_),
                (entry.addr, entry.size, entry.kind)
            );
        }
        // The tables do not overlap each other or the start info.
        let info_end = layout::PVH_INFO_ADDR + std::mem::size_of::<hvm_start_info>() as u64;
        assert!(info_end <= layout::PVH_MODLIST_ADDR);
        assert!(
            layout::PVH_MODLIST_ADDR + std::mem::size_of::<hvm_modlist_entry>() as u64
                <= layout::PVH_MEMMAP_ADDR
        );
        let memmap_end = layout::PVH_MEMMAP_ADDR
            + (layout::MAX_E820_ENTRIES * std::mem::size_of::<hvm_memmap_table_entry>()) as u64;
        assert!(memmap_end <= layout::ZERO_PAGE_ADDR);
    }

    #[test]
    fn pvh_without_initrd_has_no_modules() {
        let info = pvh_start_info(&spec(&e820_map(MEM), None));
        assert_eq!(info.start_info.nr_modules, 0);
        assert_eq!(info.start_info.modlist_paddr, 0);
        assert!(info.modules.is_empty());
    }

    #[test]
    fn initrds_go_high_page_aligned_and_never_over_the_kernel() {
        let placed = place_initrd(5000, 0x200_0000, MEM).unwrap();
        assert_eq!(placed.addr % 4096, 0);
        assert!(placed.addr + placed.size <= MEM);
        assert!(placed.addr >= MEM - 3 * 4096);
        assert_eq!(place_initrd(MEM, 0x200_0000, MEM), None);
        assert_eq!(place_initrd(MEM - 0x1ff_ffff, 0x200_0000, MEM), None);
        assert_eq!(place_initrd(MEM + 1, 0, MEM), None);
    }
}
