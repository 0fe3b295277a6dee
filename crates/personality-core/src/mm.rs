//! The program's memory: where its image, its heap (`brk`), its mappings and its
//! stacks go, inside the part of guest memory the personality leaves it.
//!
//! Guest memory is mapped and executable before the program starts (the monitor
//! maps the heap of a VM for Linux programs read-write-execute), so "mapping"
//! here is only bookkeeping plus zeroing: a range is handed out, filled (with
//! zeros, or a file's bytes) and recorded; `munmap` forgets it. Protections are
//! recorded but not enforced — a write to read-only program memory succeeds —
//! which HermiTux and OSv also accept; a program's own guard pages do not fault.
//! Memory never handed out is still zero from the monitor, so only a range that
//! was used before is cleared again.
//!
//! The bookkeeping never touches memory itself: clearing is the [`Zero`] function
//! the personality hands [`Memory::new`], so that the same code runs on the host,
//! where tests and fuzz targets drive it with any arguments a program could pass.

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use core::ops::Range;

use crate::errno::{Errno, EFAULT, EINVAL, ENOMEM};

/// The page size programs see.
pub const PAGE: u64 = 4096;

/// One mapping.
#[derive(Debug, Clone)]
pub struct Region {
    /// One past its last byte.
    pub end: u64,
    /// `PROT_*` as the program last set it.
    pub prot: u32,
    /// What it holds, for `/proc/self/maps` (a path, `[heap]`, `[stack]`, or empty).
    pub name: String,
}

/// Clears a range of program memory; [`Memory`] only ever passes ranges inside
/// its area.
pub type Zero = fn(Range<u64>);

/// The program's address space.
pub struct Memory {
    /// Clears memory that was used before.
    zero: Zero,
    /// Where the program may have memory.
    area: Range<u64>,
    /// Mappings by start address.
    regions: BTreeMap<u64, Region>,
    /// Ranges handed out before and freed since: they need zeroing when reused.
    dirty: Vec<Range<u64>>,
    /// The heap: where it starts and where it ends now.
    brk: Range<u64>,
}

/// `mmap` flags: shared mapping.
pub const MAP_SHARED: u64 = 0x01;
/// `mmap` flags: private mapping.
pub const MAP_PRIVATE: u64 = 0x02;
/// `mmap` flags: at exactly this address.
pub const MAP_FIXED: u64 = 0x10;
/// `mmap` flags: no file.
pub const MAP_ANONYMOUS: u64 = 0x20;
/// `mmap` flags: at exactly this address (Linux refuses if taken; here as
/// `MAP_FIXED`).
pub const MAP_FIXED_NOREPLACE: u64 = 0x100000;
/// `mremap` flags: it may move.
pub const MREMAP_MAYMOVE: u64 = 1;
/// `mremap` flags: to exactly `new_addr`.
pub const MREMAP_FIXED: u64 = 2;

/// What `mremap` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Remap {
    /// The mapping stayed (and shrank, if asked): its address.
    InPlace(u64),
    /// New memory is mapped at `to`: the caller copies `copy` bytes from `from`
    /// to it, then unmaps `old`.
    Moved {
        /// The old mapping's start.
        from: u64,
        /// The new mapping's start.
        to: u64,
        /// Bytes to copy.
        copy: u64,
        /// The old mapping, to unmap once copied.
        old: Range<u64>,
    },
}

/// `mmap`'s checks of its arguments before anything is looked up: the length to
/// map, rounded up to a page.
pub fn mmap_len(len: u64, flags: u64, offset: u64) -> Result<u64, Errno> {
    if len == 0 || !offset.is_multiple_of(PAGE) || flags & (MAP_SHARED | MAP_PRIVATE) == 0 {
        return Err(EINVAL);
    }
    page_up(len).ok_or(ENOMEM)
}

/// Rounds up to a page.
pub fn page_up(value: u64) -> Option<u64> {
    value.checked_add(PAGE - 1).map(|v| v & !(PAGE - 1))
}

impl Memory {
    /// An empty address space over `area`, whose used memory `zero` clears.
    pub fn new(area: Range<u64>, zero: Zero) -> Self {
        Self {
            zero,
            area,
            regions: BTreeMap::new(),
            dirty: Vec::new(),
            brk: 0..0,
        }
    }

    /// The area the program may use.
    pub fn area(&self) -> Range<u64> {
        self.area.clone()
    }

    /// Every mapping, in address order.
    pub fn regions(&self) -> impl Iterator<Item = (u64, &Region)> {
        self.regions.iter().map(|(start, region)| (*start, region))
    }

    /// Whether `range` overlaps a mapping.
    fn overlaps(&self, range: &Range<u64>) -> bool {
        self.regions
            .range(..range.end)
            .next_back()
            .is_some_and(|(_, region)| region.end > range.start)
    }

    /// Records `range` as mapped (replacing what was there), zeroing it unless
    /// `zero` is false (the caller fills it).
    pub fn map_fixed(
        &mut self,
        range: Range<u64>,
        prot: u32,
        name: &str,
        zero: bool,
    ) -> Result<(), Errno> {
        if !range.start.is_multiple_of(PAGE) || range.start >= range.end {
            return Err(EINVAL);
        }
        if range.start < self.area.start || range.end > self.area.end {
            return Err(ENOMEM);
        }
        self.unmap(range.clone());
        if zero {
            self.clear(&range);
        }
        self.regions.insert(
            range.start,
            Region {
                end: range.end,
                prot,
                name: name.into(),
            },
        );
        Ok(())
    }

    /// Finds `len` free bytes, highest address first (below whatever was
    /// mapped before, as Linux's mmap grows down), maps and zeroes them.
    pub fn map_anywhere(
        &mut self,
        len: u64,
        prot: u32,
        name: &str,
        zero: bool,
    ) -> Result<u64, Errno> {
        let len = page_up(len).filter(|&l| l > 0).ok_or(ENOMEM)?;
        let mut top = self.area.end;
        // Gaps between mappings, from the top down; the heap's reach below counts
        // as taken up to its end.
        let floor = self.brk.end.max(self.area.start);
        // Where `len` bytes ending at `top` start, if that is above the floor (the
        // heap's end can be anywhere a program's image put it: no `floor + len`).
        let below = |top: u64| top.checked_sub(len).filter(|&start| start >= floor);
        let mut found = None;
        for (&start, region) in self.regions.iter().rev() {
            if region.end <= top && top - region.end >= len {
                if let Some(at) = below(top) {
                    found = Some(at);
                    break;
                }
            }
            top = top.min(start);
            if below(top).is_none() {
                break;
            }
        }
        if found.is_none() {
            found = below(top);
        }
        let start = found.ok_or(ENOMEM)?;
        self.map_fixed(start..start + len, prot, name, zero)?;
        Ok(start)
    }

    /// Forgets the mappings in `range` (splitting those it cuts).
    pub fn unmap(&mut self, range: Range<u64>) {
        let cut: Vec<(u64, Region)> = self
            .regions
            .range(..range.end)
            .filter(|(_, region)| region.end > range.start)
            .map(|(start, region)| (*start, region.clone()))
            .collect();
        for (start, region) in cut {
            self.regions.remove(&start);
            if start < range.start {
                self.regions.insert(
                    start,
                    Region {
                        end: range.start,
                        ..region.clone()
                    },
                );
            }
            if region.end > range.end {
                self.regions.insert(range.end, Region { ..region.clone() });
            }
            let freed = start.max(range.start)..region.end.min(range.end);
            if freed.start < freed.end {
                self.dirty.push(freed);
            }
        }
    }

    /// Records new protections for the mappings in `range`.
    pub fn protect(&mut self, range: Range<u64>, prot: u32) -> Result<(), Errno> {
        if !range.start.is_multiple_of(PAGE) {
            return Err(EINVAL);
        }
        let inside: Vec<u64> = self
            .regions
            .range(..range.end)
            .filter(|(_, region)| region.end > range.start)
            .map(|(start, _)| *start)
            .collect();
        if inside.is_empty() {
            return Err(ENOMEM);
        }
        for start in inside {
            if let Some(region) = self.regions.get_mut(&start) {
                if start >= range.start && region.end <= range.end {
                    region.prot = prot;
                }
            }
        }
        Ok(())
    }

    /// Zeroes the parts of `range` that were used before.
    fn clear(&mut self, range: &Range<u64>) {
        let mut keep = Vec::new();
        for dirty in self.dirty.drain(..) {
            let overlap = dirty.start.max(range.start)..dirty.end.min(range.end);
            if overlap.start < overlap.end {
                (self.zero)(overlap.clone());
                if dirty.start < overlap.start {
                    keep.push(dirty.start..overlap.start);
                }
                if overlap.end < dirty.end {
                    keep.push(overlap.end..dirty.end);
                }
            } else {
                keep.push(dirty);
            }
        }
        self.dirty = keep;
    }

    /// `mmap`'s placement of `len` bytes (from [`mmap_len`]): at `addr` for
    /// `MAP_FIXED`, else wherever there is room. Returns the start.
    pub fn mmap(
        &mut self,
        addr: u64,
        len: u64,
        prot: u64,
        flags: u64,
        name: &str,
    ) -> Result<u64, Errno> {
        if flags & (MAP_FIXED | MAP_FIXED_NOREPLACE) != 0 {
            if !addr.is_multiple_of(PAGE) {
                return Err(EINVAL);
            }
            self.map_fixed(
                addr..addr.checked_add(len).ok_or(ENOMEM)?,
                prot as u32,
                name,
                true,
            )?;
            Ok(addr)
        } else {
            self.map_anywhere(len, prot as u32, name, true)
        }
    }

    /// `munmap`.
    pub fn munmap(&mut self, addr: u64, len: u64) -> Result<u64, Errno> {
        if !addr.is_multiple_of(PAGE) || len == 0 {
            return Err(EINVAL);
        }
        let end = addr
            .checked_add(page_up(len).ok_or(EINVAL)?)
            .ok_or(EINVAL)?;
        self.unmap(addr..end);
        Ok(0)
    }

    /// `mprotect`: recorded (see the module's notes).
    pub fn mprotect(&mut self, addr: u64, len: u64, prot: u64) -> Result<u64, Errno> {
        let end = addr
            .checked_add(page_up(len).ok_or(EINVAL)?)
            .ok_or(EINVAL)?;
        self.protect(addr..end, prot as u32)?;
        Ok(0)
    }

    /// `mremap`: in place when it shrinks, else new memory that the caller fills
    /// with the old bytes (see [`Remap`]). As on Linux, the old range must be
    /// mapped (EFAULT) and a fixed new range may not overlap it (EINVAL), so the
    /// copy is always between two disjoint mappings and nothing is mapped when
    /// the call fails.
    pub fn mremap(
        &mut self,
        old: u64,
        old_len: u64,
        new_len: u64,
        flags: u64,
        new_addr: u64,
    ) -> Result<Remap, Errno> {
        if !old.is_multiple_of(PAGE) || new_len == 0 {
            return Err(EINVAL);
        }
        let old_len = page_up(old_len).ok_or(EINVAL)?;
        let new_len = page_up(new_len).ok_or(ENOMEM)?;
        let old_end = old.checked_add(old_len).ok_or(EINVAL)?;
        if new_len <= old_len && flags & MREMAP_FIXED == 0 {
            self.unmap(old + new_len..old_end);
            return Ok(Remap::InPlace(old));
        }
        if flags & MREMAP_MAYMOVE == 0 {
            return Err(if flags & MREMAP_FIXED != 0 {
                EINVAL
            } else {
                ENOMEM
            });
        }
        if !self.contains(old, old_len) || !self.is_mapped(old..old_end) {
            return Err(EFAULT);
        }
        let target = if flags & MREMAP_FIXED != 0 {
            let new_end = new_addr.checked_add(new_len).ok_or(ENOMEM)?;
            if new_addr < old_end && old < new_end {
                return Err(EINVAL);
            }
            self.map_fixed(new_addr..new_end, 3, "", true)?;
            new_addr
        } else {
            // The old range is mapped, so the free range found lies apart from it.
            self.map_anywhere(new_len, 3, "", true)?
        };
        Ok(Remap::Moved {
            from: old,
            to: target,
            copy: old_len.min(new_len),
            old: old..old_end,
        })
    }

    /// Whether every byte of `range` is in some mapping.
    fn is_mapped(&self, range: Range<u64>) -> bool {
        let mut at = range.start;
        for (&start, region) in self.regions.range(..range.end) {
            if region.end <= at {
                continue;
            }
            if start > at {
                return false;
            }
            at = region.end;
            if at >= range.end {
                break;
            }
        }
        at >= range.end
    }

    /// Sets where the heap starts (after the program's image).
    pub fn set_brk_start(&mut self, start: u64) {
        self.brk = start..start;
    }

    /// `brk`: moves the heap's end to `to` if it can, and returns the end.
    ///
    /// Only the heap's tail changes: growing maps the pages past the old end
    /// (if nothing is mapped there), shrinking unmaps those past the new end,
    /// whatever is mapped there, as Linux's `brk` does. Mappings the program
    /// made inside the heap's range (`MAP_FIXED`) below the new end stay.
    pub fn brk(&mut self, to: u64) -> u64 {
        if to < self.brk.start || to > self.area.end {
            return self.brk.end;
        }
        let new_end = page_up(to).unwrap_or(self.brk.end);
        let old_end = page_up(self.brk.end).unwrap_or(self.brk.end);
        if new_end > old_end {
            let growth = old_end..new_end;
            if self.overlaps(&growth) {
                return self.brk.end;
            }
            self.clear(&growth);
            // One `[heap]` in /proc/self/maps: the growth joins the heap's last
            // piece when that ends where the growth starts.
            let start = match self.regions.range(..old_end).next_back() {
                Some((&start, region)) if region.end == old_end && region.name == "[heap]" => start,
                _ => old_end,
            };
            self.regions.insert(
                start,
                Region {
                    end: new_end,
                    prot: 3,
                    name: "[heap]".into(),
                },
            );
        } else if new_end < old_end {
            self.unmap(new_end..old_end);
        }
        self.brk.end = to;
        self.brk.end
    }

    /// Whether `[addr, addr + len)` lies in the program's memory.
    pub fn contains(&self, addr: u64, len: u64) -> bool {
        addr.checked_add(len)
            .is_some_and(|end| addr >= self.area.start && end <= self.area.end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zero(_: Range<u64>) {}

    fn memory() -> Memory {
        Memory::new(0x40_0000..0x4000_0000, zero)
    }

    /// Found by the fuzz target `lx_memory`: `mremap(MREMAP_FIXED)` to a range
    /// overlapping the old one mapped (and cleared) the new range over the old
    /// bytes and then copied between overlapping ranges with
    /// `copy_nonoverlapping`. Linux refuses the overlap with EINVAL.
    #[test]
    fn mremap_to_an_overlapping_fixed_range_is_refused() {
        let mut mm = memory();
        let old = mm
            .mmap(0x70_0000, 0x10_0000, 3, MAP_PRIVATE | MAP_FIXED, "")
            .unwrap();
        let result = mm.mremap(
            old,
            0x10_0000,
            0x20_0000,
            MREMAP_MAYMOVE | MREMAP_FIXED,
            0x78_0000,
        );
        assert_eq!(result, Err(EINVAL));
        assert!(mm.is_mapped(old..old + 0x10_0000));
    }

    /// Also from `lx_memory`: an old range that was not mapped got a new
    /// mapping that could overlap it, and an old range outside the program's
    /// memory left the new mapping behind when the call failed.
    #[test]
    fn mremap_of_memory_not_mapped_is_efault_and_maps_nothing() {
        let mut mm = memory();
        assert_eq!(
            mm.mremap(0x80_0000, 0x1000, 0x2000, MREMAP_MAYMOVE, 0),
            Err(EFAULT)
        );
        assert_eq!(
            mm.mremap(0x1000, 0x1000, 0x2000, MREMAP_MAYMOVE, 0),
            Err(EFAULT)
        );
        assert_eq!(mm.regions().count(), 0);
    }

    #[test]
    fn mremap_moves_to_disjoint_memory() {
        let mut mm = memory();
        let old = mm
            .mmap(0, 0x2000, 3, MAP_PRIVATE | MAP_ANONYMOUS, "")
            .unwrap();
        let Ok(Remap::Moved {
            from,
            to,
            copy,
            old: range,
        }) = mm.mremap(old, 0x2000, 0x8000, MREMAP_MAYMOVE, 0)
        else {
            panic!("mremap did not move");
        };
        assert_eq!((from, copy, range), (old, 0x2000, old..old + 0x2000));
        assert!(to + 0x8000 <= from || from + 0x2000 <= to);
    }

    /// Found by the fuzz target `lx_memory`: with the heap's end near the top of
    /// the address space (a program image can put it there), `floor + len`
    /// overflowed while looking for room.
    #[test]
    fn mmap_anywhere_with_the_heap_at_the_top_is_enomem() {
        let mut mm = memory();
        mm.set_brk_start(u64::MAX - 0xfff);
        assert_eq!(mm.map_anywhere(0x2000, 3, "", true), Err(ENOMEM));
        mm.set_brk_start(0x40_0000);
        assert!(mm.map_anywhere(0x2000, 3, "", true).is_ok());
    }

    /// Found by the fuzz target `lx_memory`: shrinking the heap after a
    /// `MAP_FIXED` mapping inside it re-made the heap as one region from its
    /// start to the new end, on top of that mapping.
    #[test]
    fn brk_keeps_a_fixed_mapping_inside_the_heap() {
        let mut mm = memory();
        mm.set_brk_start(0x51_0000);
        assert_eq!(mm.brk(0x140_0000), 0x140_0000);
        let fixed = mm.mmap(
            0x60_0000,
            0x2000,
            3,
            MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED,
            "",
        );
        assert_eq!(fixed, Ok(0x60_0000));
        assert_eq!(mm.brk(0x71_0000), 0x71_0000);
        let regions: Vec<_> = mm.regions().map(|(start, r)| (start, r.end)).collect();
        assert_eq!(
            regions,
            [
                (0x51_0000, 0x60_0000),
                (0x60_0000, 0x60_2000),
                (0x60_2000, 0x71_0000)
            ]
        );
        // Growing again joins the heap's last piece.
        assert_eq!(mm.brk(0x80_0000), 0x80_0000);
        assert_eq!(
            mm.regions().last().map(|(s, r)| (s, r.end)),
            Some((0x60_2000, 0x80_0000))
        );
    }

    /// An `old + len` past the end of the address space is EINVAL, not a wrap.
    #[test]
    fn mremap_of_a_range_wrapping_the_address_space_is_refused() {
        let mut mm = memory();
        let old = !(PAGE - 1);
        assert_eq!(mm.mremap(old, 0x2000, 0x1000, 0, 0), Err(EINVAL));
    }
}
