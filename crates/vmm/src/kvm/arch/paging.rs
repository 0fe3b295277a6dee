//! Identity page tables, built as plain data: a unikernel's with the user bit and
//! per-page permissions ([`build`]), and the plain map a Linux kernel boots on
//! ([`kernel_identity`]), from one builder.
//!
//! In a unikernel's tables, the low region, from 0 up to the image's end rounded to 2 MiB, is mapped with
//! 4 KiB pages so every page gets exactly the permissions it needs: page 0 and the
//! page tables stay unmapped (a null dereference faults), the image is W^X, the
//! stack and heap are no-execute. Memory above that region is heap and is mapped with
//! 2 MiB pages, which keeps the tables (and the shadow-paging work of the nested KVM)
//! small for large VMs.

use std::ops::Range;

use lightvm_abi::layout::{LARGE_PAGE_SIZE, MEM_MAX, PAGE_SIZE, PAGE_TABLES_ADDR, PAGE_TABLES_END};
use vm_memory::GuestMemoryMmap;
use zerocopy::IntoBytes;

use crate::memory::{self, MemoryError};

const PRESENT: u64 = 1 << 0;
const WRITABLE: u64 = 1 << 1;
const USER: u64 = 1 << 2;
const LARGE: u64 = 1 << 7;
const NO_EXECUTE: u64 = 1 << 63;
const ENTRIES: usize = 512;
const GIB: u64 = 1 << 30;
/// What one PML4 entry maps: the most a single-PML4-entry table set covers.
const PML4_ENTRY_SPAN: u64 = 512 * GIB;

/// What the guest may do with a page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageAccess {
    /// Reachable from CPL 3 (everything the guest uses; not the GDT).
    pub user: bool,
    /// Writable.
    pub write: bool,
    /// Executable.
    pub exec: bool,
}

impl PageAccess {
    /// Stack, heap, data: read/write, never executed.
    pub const DATA: Self = Self {
        user: true,
        write: true,
        exec: false,
    };
    /// Read-only data for the guest (boot info).
    pub const READ_ONLY: Self = Self {
        user: true,
        write: false,
        exec: false,
    };
    /// Code: read and execute, never written.
    pub const USER_CODE: Self = Self {
        user: true,
        write: false,
        exec: true,
    };
    /// The heap of a VM that runs Linux programs: their code is loaded there.
    pub const USER_ALL: Self = Self {
        user: true,
        write: true,
        exec: true,
    };
    /// Structures only the CPU itself reads (the GDT).
    pub const SUPERVISOR: Self = Self {
        user: false,
        write: true,
        exec: false,
    };
    /// Everything, for a kernel that runs at CPL 0 and builds its own tables at
    /// once (no NX bit: a kernel booting with EFER.NXE clear would fault on it).
    pub const KERNEL: Self = Self {
        user: false,
        write: true,
        exec: true,
    };

    fn bits(self) -> u64 {
        let mut bits = PRESENT;
        if self.user {
            bits |= USER;
        }
        if self.write {
            bits |= WRITABLE;
        }
        if !self.exec {
            bits |= NO_EXECUTE;
        }
        bits
    }
}

/// A page-aligned range of guest memory and its access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mapping {
    /// First byte (page-aligned).
    pub start: u64,
    /// One past the last byte (page-aligned).
    pub end: u64,
    /// Permissions of every page in it.
    pub access: PageAccess,
}

/// Why the tables could not be built (a VMM bug or an image too large for the
/// page-table area; never a guest-triggered condition at run time).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PagingError {
    /// A mapping is not page-aligned, is empty, or lies outside the 4 KiB region.
    #[error(
        "mapping {start:#x}..{end:#x} is not page-aligned or lies outside the 4 KiB-mapped region"
    )]
    BadMapping {
        /// Its start.
        start: u64,
        /// Its end.
        end: u64,
    },
    /// The tables need more pages than the reserved area holds.
    #[error(
        "page tables need {needed} pages but only {available} are reserved; the image is too large"
    )]
    TooManyTables {
        /// Pages needed.
        needed: u64,
        /// Pages available.
        available: u64,
    },
    /// Memory size out of range.
    #[error("guest memory {0:#x} is not a multiple of 2 MiB in the supported range")]
    MemSize(u64),
}

/// The finished tables: pages to write at their guest addresses, and CR3.
#[derive(Debug)]
pub struct PageTables {
    /// Guest address of the top-level table (the value for CR3).
    pub root: u64,
    /// Each table page and where it goes.
    pub pages: Vec<(u64, Box<[u64; ENTRIES]>)>,
    /// One past the last table page: where another set of tables may start.
    pub end: u64,
}

impl PageTables {
    /// Gives the 2 MiB pages of `large` (above `fine_end`) their own access.
    fn override_large(&mut self, fine_end: u64, large: &[Mapping]) -> Result<(), PagingError> {
        for mapping in large {
            let aligned = mapping.start.is_multiple_of(LARGE_PAGE_SIZE)
                && mapping.end.is_multiple_of(LARGE_PAGE_SIZE);
            if !aligned || mapping.start >= mapping.end || mapping.start < fine_end {
                return Err(PagingError::BadMapping {
                    start: mapping.start,
                    end: mapping.end,
                });
            }
            for addr in (mapping.start..mapping.end).step_by(LARGE_PAGE_SIZE as usize) {
                let entry = self.large_entry(addr).ok_or(PagingError::BadMapping {
                    start: mapping.start,
                    end: mapping.end,
                })?;
                *entry = addr | LARGE | mapping.access.bits();
            }
        }
        Ok(())
    }

    /// The directory entry of the 2 MiB page at `addr`, if the tables map it.
    fn large_entry(&mut self, addr: u64) -> Option<&mut u64> {
        const FRAME: u64 = 0x000f_ffff_ffff_f000;
        let root = self.root;
        let entry_of = |pages: &[(u64, Box<[u64; ENTRIES]>)], table: u64, index: u64| {
            pages
                .iter()
                .position(|(at, _)| *at == table)
                .map(|position| (position, index as usize))
        };
        let (at, index) = entry_of(&self.pages, root, (addr >> 39) & 511)?;
        let pdpt = *self.pages.get(at)?.1.get(index)? & FRAME;
        let (at, index) = entry_of(&self.pages, pdpt, (addr >> 30) & 511)?;
        let pd = *self.pages.get(at)?.1.get(index)? & FRAME;
        let (at, index) = entry_of(&self.pages, pd, (addr >> 21) & 511)?;
        self.pages.get_mut(at)?.1.get_mut(index)
    }

    /// Writes every table page at its guest address.
    pub fn write(&self, memory: &GuestMemoryMmap) -> Result<(), MemoryError> {
        for (addr, entries) in &self.pages {
            memory::write(memory, *addr, entries.as_bytes())?;
        }
        Ok(())
    }
}

/// Builds a unikernel's identity tables for `mem_size` bytes, placing the table
/// pages from `base` upward (within the reserved area). `[0, fine_end)` is mapped
/// 4 KiB at a time as `mappings` say (pages in no mapping stay unmapped);
/// `[fine_end, mem_size)` in 2 MiB pages with the access `large` says for the
/// ranges it names (2 MiB-aligned) and [`PageAccess::DATA`] elsewhere: the heap.
/// Every level is reachable from CPL 3.
pub fn build(
    base: u64,
    mem_size: u64,
    fine_end: u64,
    mappings: &[Mapping],
    large: &[Mapping],
) -> Result<PageTables, PagingError> {
    if mem_size > MEM_MAX {
        return Err(PagingError::MemSize(mem_size));
    }
    let area = PAGE_TABLES_ADDR..PAGE_TABLES_END;
    let mut tables = identity(area, base, mem_size, fine_end, mappings, Flavour::UNIKERNEL)?;
    tables.override_large(fine_end, large)?;
    Ok(tables)
}

/// Builds the identity map a kernel boots on (the Linux 64-bit boot protocol):
/// `[0, size)` in 2 MiB [`PageAccess::KERNEL`] pages, the table pages from the
/// start of `area` upward.
pub fn kernel_identity(area: Range<u64>, size: u64) -> Result<PageTables, PagingError> {
    let base = area.start;
    identity(area, base, size, 0, &[], Flavour::KERNEL)
}

/// What differs between a unikernel's tables and a kernel's: the bits that link
/// one level to the next, and the access of the 2 MiB pages.
#[derive(Clone, Copy)]
struct Flavour {
    links: u64,
    large: PageAccess,
}

impl Flavour {
    /// Every level reachable from CPL 3; large pages are heap.
    const UNIKERNEL: Self = Self {
        links: PRESENT | WRITABLE | USER,
        large: PageAccess::DATA,
    };
    /// Supervisor only; large pages hold anything.
    const KERNEL: Self = Self {
        links: PRESENT | WRITABLE,
        large: PageAccess::KERNEL,
    };
}

/// The one builder: tables in `area` from `base` upward; `[0, fine_end)` in 4 KiB
/// pages as `mappings` say, `[fine_end, mem_size)` in 2 MiB pages.
fn identity(
    area: Range<u64>,
    base: u64,
    mem_size: u64,
    fine_end: u64,
    mappings: &[Mapping],
    flavour: Flavour,
) -> Result<PageTables, PagingError> {
    if mem_size == 0 || !mem_size.is_multiple_of(LARGE_PAGE_SIZE) || mem_size > PML4_ENTRY_SPAN {
        return Err(PagingError::MemSize(mem_size));
    }
    if !fine_end.is_multiple_of(LARGE_PAGE_SIZE) || fine_end > mem_size {
        return Err(PagingError::MemSize(fine_end));
    }
    let directories = mem_size.div_ceil(GIB);
    let tables = fine_end / LARGE_PAGE_SIZE;
    let needed = 2 + directories + tables;
    let available = area.end.saturating_sub(base) / PAGE_SIZE;
    if needed > available || base < area.start || !base.is_multiple_of(PAGE_SIZE) {
        return Err(PagingError::TooManyTables { needed, available });
    }

    let page_addr = |index: u64| base + index * PAGE_SIZE;
    let mut pages: Vec<(u64, Box<[u64; ENTRIES]>)> = (0..needed)
        .map(|i| (page_addr(i), Box::new([0u64; ENTRIES])))
        .collect();
    let Flavour { links, large } = flavour;
    let pdpt = 1usize;
    let first_pd = 2usize;
    let first_pt = first_pd + directories as usize;

    pages[0].1[0] = page_addr(pdpt as u64) | links;
    for gib in 0..directories as usize {
        pages[pdpt].1[gib] = page_addr((first_pd + gib) as u64) | links;
    }
    let mut addr = 0;
    while addr < mem_size {
        let slot = (addr / LARGE_PAGE_SIZE) as usize;
        let (pd, index) = (first_pd + slot / ENTRIES, slot % ENTRIES);
        pages[pd].1[index] = if addr < fine_end {
            page_addr((first_pt + slot) as u64) | links
        } else {
            addr | LARGE | large.bits()
        };
        addr += LARGE_PAGE_SIZE;
    }
    for mapping in mappings {
        let aligned =
            mapping.start.is_multiple_of(PAGE_SIZE) && mapping.end.is_multiple_of(PAGE_SIZE);
        if !aligned || mapping.start >= mapping.end || mapping.end > fine_end {
            return Err(PagingError::BadMapping {
                start: mapping.start,
                end: mapping.end,
            });
        }
        for page in (mapping.start..mapping.end).step_by(PAGE_SIZE as usize) {
            let slot = (page / PAGE_SIZE) as usize;
            let (pt, index) = (first_pt + slot / ENTRIES, slot % ENTRIES);
            pages[pt].1[index] = page | mapping.access.bits();
        }
    }
    Ok(PageTables {
        root: page_addr(0),
        end: page_addr(needed),
        pages,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Walks the tables like the MMU: the leaf entry for `addr`, if present.
    fn walk(tables: &PageTables, addr: u64) -> Option<u64> {
        let lookup = |table: u64, index: u64| {
            tables
                .pages
                .iter()
                .find(|(a, _)| *a == table)
                .map(|(_, entries)| entries[index as usize])
        };
        let pml4e = lookup(tables.root, (addr >> 39) & 511)?;
        if pml4e & PRESENT == 0 {
            return None;
        }
        let pdpte = lookup(pml4e & 0x000f_ffff_ffff_f000, (addr >> 30) & 511)?;
        if pdpte & PRESENT == 0 {
            return None;
        }
        let pde = lookup(pdpte & 0x000f_ffff_ffff_f000, (addr >> 21) & 511)?;
        if pde & PRESENT == 0 {
            return None;
        }
        if pde & LARGE != 0 {
            return Some(pde);
        }
        let pte = lookup(pde & 0x000f_ffff_ffff_f000, (addr >> 12) & 511)?;
        (pte & PRESENT != 0).then_some(pte)
    }

    fn frame(entry: u64) -> u64 {
        entry & 0x000f_ffff_ffff_f000 & !(LARGE_PAGE_SIZE - 1)
    }

    #[test]
    fn large_pages_take_the_access_asked_for() {
        let module = Mapping {
            start: 4 << 20,
            end: 6 << 20,
            access: PageAccess::READ_ONLY,
        };
        let tables = build(PAGE_TABLES_ADDR, 8 << 20, 2 << 20, &[], &[module]).unwrap();
        let heap = walk(&tables, 2 << 20).unwrap();
        let ro = walk(&tables, 5 << 20).unwrap();
        assert_ne!(heap & WRITABLE, 0);
        assert_eq!(ro & WRITABLE, 0, "read-only");
        assert_ne!(ro & NO_EXECUTE, 0);
        assert_ne!(ro & USER, 0);
        let below_fine_end = Mapping {
            start: 0,
            end: 2 << 20,
            access: PageAccess::READ_ONLY,
        };
        assert!(build(PAGE_TABLES_ADDR, 8 << 20, 2 << 20, &[], &[below_fine_end]).is_err());
    }

    #[test]
    fn unmapped_pages_stay_unmapped_and_mapped_ones_are_identity() {
        let code = Mapping {
            start: 0x100000,
            end: 0x101000,
            access: PageAccess {
                user: true,
                write: false,
                exec: true,
            },
        };
        let heap = Mapping {
            start: 0x101000,
            end: 2 << 20,
            access: PageAccess::DATA,
        };
        let tables = build(PAGE_TABLES_ADDR, 4 << 20, 2 << 20, &[code, heap], &[]).unwrap();
        assert_eq!(walk(&tables, 0), None, "page 0 must fault");
        assert_eq!(
            walk(&tables, PAGE_TABLES_ADDR),
            None,
            "tables are not mapped"
        );

        let text = walk(&tables, 0x100010).unwrap();
        assert_eq!(text & 0x000f_ffff_ffff_f000, 0x100000);
        assert_ne!(text & USER, 0);
        assert_eq!(text & WRITABLE, 0);
        assert_eq!(text & NO_EXECUTE, 0);

        let heap_page = walk(&tables, 0x1ff000).unwrap();
        assert_ne!(heap_page & WRITABLE, 0);
        assert_ne!(heap_page & NO_EXECUTE, 0);

        let large = walk(&tables, (3 << 20) + 5).unwrap();
        assert_ne!(large & LARGE, 0);
        assert_eq!(frame(large), 2 << 20);
    }

    #[test]
    fn memory_above_one_gib_gets_its_own_directory() {
        let tables = build(PAGE_TABLES_ADDR, 3 << 30, 2 << 20, &[], &[]).unwrap();
        let last = walk(&tables, (3 << 30) - 1).unwrap();
        assert_eq!(frame(last), (3 << 30) - LARGE_PAGE_SIZE);
        assert_eq!(walk(&tables, 3 << 30), None);
    }

    #[test]
    fn bad_mappings_and_sizes_are_errors() {
        let unaligned = Mapping {
            start: 0x100001,
            end: 0x102000,
            access: PageAccess::DATA,
        };
        assert!(matches!(
            build(PAGE_TABLES_ADDR, 2 << 20, 2 << 20, &[unaligned], &[]),
            Err(PagingError::BadMapping { .. })
        ));
        let outside = Mapping {
            start: 2 << 20,
            end: (2 << 20) + PAGE_SIZE,
            access: PageAccess::DATA,
        };
        assert!(build(PAGE_TABLES_ADDR, 4 << 20, 2 << 20, &[outside], &[]).is_err());
        assert!(matches!(
            build(PAGE_TABLES_ADDR, 3 << 20, 2 << 20, &[], &[]),
            Err(PagingError::MemSize(_))
        ));
    }

    #[test]
    fn a_second_set_of_tables_starts_where_the_first_ends() {
        let first = build(PAGE_TABLES_ADDR, 2 << 20, 2 << 20, &[], &[]).unwrap();
        let second = build(first.end, 2 << 20, 2 << 20, &[], &[]).unwrap();
        assert_eq!(second.root, first.end);
        let first_pages: Vec<u64> = first.pages.iter().map(|(a, _)| *a).collect();
        assert!(second.pages.iter().all(|(a, _)| !first_pages.contains(a)));
        assert!(build(PAGE_TABLES_END, 2 << 20, 2 << 20, &[], &[]).is_err());
    }

    #[test]
    fn a_kernel_map_is_supervisor_and_executable_and_fits_its_area() {
        let tables = kernel_identity(0x9000..0xc000, 1 << 30).unwrap();
        assert_eq!(tables.root, 0x9000);
        assert_eq!(tables.end, 0xc000);
        for addr in [0, 0x1234_5678, (1 << 30) - 1] {
            let entry = walk(&tables, addr).unwrap();
            assert_eq!(entry & (USER | NO_EXECUTE), 0, "{addr:#x}");
            assert_ne!(entry & (LARGE | WRITABLE), 0, "{addr:#x}");
            assert_eq!(frame(entry), addr & !(LARGE_PAGE_SIZE - 1));
        }
        assert_eq!(tables.pages[0].1[0] & USER, 0, "links are supervisor");
        assert!(matches!(
            kernel_identity(0x9000..0xb000, 1 << 30),
            Err(PagingError::TooManyTables { needed: 3, .. })
        ));
    }

    #[test]
    fn a_huge_fine_region_is_refused_not_overflowed() {
        assert!(matches!(
            build(PAGE_TABLES_ADDR, 3 << 30, 2 << 30, &[], &[]),
            Err(PagingError::TooManyTables { .. })
        ));
    }
}
