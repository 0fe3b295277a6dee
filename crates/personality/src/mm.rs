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

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use core::ops::Range;

use crate::errno::{Errno, EINVAL, ENOMEM};

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

/// The program's address space.
pub struct Memory {
    /// Where the program may have memory.
    area: Range<u64>,
    /// Mappings by start address.
    regions: BTreeMap<u64, Region>,
    /// Ranges handed out before and freed since: they need zeroing when reused.
    dirty: Vec<Range<u64>>,
    /// The heap: where it starts and where it ends now.
    brk: Range<u64>,
}

/// Rounds up to a page.
pub fn page_up(value: u64) -> Option<u64> {
    value.checked_add(PAGE - 1).map(|v| v & !(PAGE - 1))
}

impl Memory {
    /// An empty address space over `area`.
    pub fn new(area: Range<u64>) -> Self {
        Self {
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
        let mut found = None;
        for (&start, region) in self.regions.iter().rev() {
            if region.end <= top && top - region.end >= len && top - len >= floor {
                found = Some(top - len);
                break;
            }
            top = top.min(start);
            if top < floor + len {
                break;
            }
        }
        if found.is_none() && top >= floor + len {
            found = Some(top - len);
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
                // SAFETY: the range lies in the program's area, guest memory the
                // personality maps writable and hands only to the program.
                unsafe {
                    core::ptr::write_bytes(
                        overlap.start as *mut u8,
                        0,
                        (overlap.end - overlap.start) as usize,
                    );
                }
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

    /// Sets where the heap starts (after the program's image).
    pub fn set_brk_start(&mut self, start: u64) {
        self.brk = start..start;
    }

    /// `brk`: moves the heap's end to `to` if it can, and returns the end.
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
        } else if new_end < old_end {
            self.dirty.push(new_end..old_end);
        }
        self.brk.end = to;
        let heap = self.brk.start..page_up(to).unwrap_or(to);
        self.regions.retain(|_, region| region.name != "[heap]");
        if heap.start < heap.end {
            self.regions.insert(
                heap.start,
                Region {
                    end: heap.end,
                    prot: 3,
                    name: "[heap]".into(),
                },
            );
        }
        self.brk.end
    }

    /// Whether `[addr, addr + len)` lies in the program's memory.
    pub fn contains(&self, addr: u64, len: u64) -> bool {
        addr.checked_add(len)
            .is_some_and(|end| addr >= self.area.start && end <= self.area.end)
    }
}
