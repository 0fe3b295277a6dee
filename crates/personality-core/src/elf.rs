//! The ELF headers of a Linux program and of its dynamic loader: checked, and
//! turned into a plan of what goes where, before the personality copies a byte.
//!
//! A program linked at fixed addresses (`ET_EXEC`, e.g. `gcc -static`) loads
//! where it says; a position-independent one (`ET_DYN`: static-pie, or the
//! dynamic loader) at a base the personality picks, which moves every address by
//! the same bias. The file is the program's (it comes from the root filesystem),
//! so every offset, size and address in it is checked here: a segment outside the
//! file, larger in the file than in memory, or reaching past the end of the
//! address space is refused with one line for the user.

use alloc::string::String;
use alloc::vec::Vec;
use core::ops::Range;

use elf::abi::{EM_X86_64, ET_DYN, ET_EXEC, PT_INTERP, PT_LOAD, PT_PHDR};
use elf::endian::LittleEndian;
use elf::ElfBytes;

use crate::mm::{page_up, PAGE};

/// One loadable segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// Its address (before the bias).
    pub vaddr: u64,
    /// Its size in memory: the file's bytes, then zeros.
    pub memsz: u64,
    /// Its bytes in the file (`p_offset..p_offset + p_filesz`, inside the file).
    pub file: Range<usize>,
}

/// What the headers say, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// `ET_DYN`: loads at a base the loader picks.
    pub position_independent: bool,
    /// The lowest page of the loadable segments.
    pub low: u64,
    /// One past their highest byte, rounded up to a page.
    pub high: u64,
    /// The loadable segments, in file order.
    pub segments: Vec<Segment>,
    /// The entry point (before the bias).
    pub entry: u64,
    /// Where the program headers are in memory (before the bias; 0 if nowhere).
    pub phdr: u64,
    /// How many program headers there are.
    pub phnum: u64,
    /// The dynamic loader it names (`PT_INTERP`), if any.
    pub interpreter: Option<String>,
}

/// Where a loaded image went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Image {
    /// Its entry point (relocated).
    pub entry: u64,
    /// Where its program headers are in memory.
    pub phdr: u64,
    /// Their count.
    pub phnum: u64,
    /// What was added to its addresses (0 for `ET_EXEC`).
    pub bias: u64,
    /// One past its highest byte.
    pub end: u64,
}

/// Checks the headers of `bytes` and plans the image; the error says why it is
/// not an x86-64 Linux program.
pub fn plan(bytes: &[u8]) -> Result<Plan, &'static str> {
    let elf = ElfBytes::<LittleEndian>::minimal_parse(bytes).map_err(|_| "no ELF header")?;
    if elf.ehdr.class != elf::file::Class::ELF64 {
        return Err("32-bit");
    }
    if elf.ehdr.e_machine != EM_X86_64 {
        return Err("wrong architecture");
    }
    if elf.ehdr.e_type != ET_EXEC && elf.ehdr.e_type != ET_DYN {
        return Err("not an executable");
    }
    let headers = elf.segments().ok_or("no program headers")?;
    let loads: Vec<_> = headers.iter().filter(|s| s.p_type == PT_LOAD).collect();
    if loads.is_empty() {
        return Err("no loadable segment");
    }
    let low = loads
        .iter()
        .map(|s| s.p_vaddr & !(PAGE - 1))
        .min()
        .unwrap_or(0);
    // Every segment's end counts: one that wraps is refused, not left out of
    // the span (it would then be copied outside the memory mapped for it).
    let high = loads
        .iter()
        .map(|s| s.p_vaddr.checked_add(s.p_memsz))
        .try_fold(0, |high: u64, end| end.map(|end| high.max(end)))
        .and_then(page_up)
        .ok_or("segment past the end of the address space")?;
    let mut segments = Vec::with_capacity(loads.len());
    for segment in &loads {
        let file = usize::try_from(segment.p_offset).ok().and_then(|start| {
            let end = start.checked_add(usize::try_from(segment.p_filesz).ok()?)?;
            bytes.get(start..end).map(|_| start..end)
        });
        let file = file.ok_or("segment outside the file")?;
        if segment.p_filesz > segment.p_memsz {
            return Err("segment larger in the file than in memory");
        }
        segments.push(Segment {
            vaddr: segment.p_vaddr,
            memsz: segment.p_memsz,
            file,
        });
    }
    let phdr = headers
        .iter()
        .find(|s| s.p_type == PT_PHDR)
        .map(|s| s.p_vaddr)
        .or_else(|| {
            // Without PT_PHDR: the headers lie in the segment mapping the file's
            // start, at their file offset.
            loads
                .iter()
                .find(|s| s.p_offset == 0)
                .map(|s| s.p_vaddr + elf.ehdr.e_phoff)
        })
        .unwrap_or(0);
    let interpreter = headers
        .iter()
        .find(|s| s.p_type == PT_INTERP)
        .and_then(|s| {
            let start = usize::try_from(s.p_offset).ok()?;
            let end = start.checked_add(usize::try_from(s.p_filesz).ok()?)?;
            let name = bytes.get(start..end)?;
            let name = name.split(|&b| b == 0).next()?;
            Some(String::from_utf8_lossy(name).into_owned())
        });
    Ok(Plan {
        position_independent: elf.ehdr.e_type == ET_DYN,
        low,
        high,
        segments,
        entry: elf.ehdr.e_entry,
        phdr,
        phnum: u64::from(elf.ehdr.e_phnum),
        interpreter,
    })
}

impl Plan {
    /// Bytes from the lowest page to the end of the highest segment.
    pub fn span(&self) -> u64 {
        self.high - self.low
    }

    /// The bias of an image whose lowest page goes at `base` (a fixed-address
    /// image stays where it is linked, whatever `base`). An offset modulo 2^64,
    /// as in Linux's `load_bias`: a program linked above `base` moves down, and
    /// every address moved by it wraps back into the image.
    pub fn bias(&self, base: u64) -> u64 {
        if self.position_independent {
            base.wrapping_sub(self.low)
        } else {
            0
        }
    }

    /// Where the image is once moved by `bias` (see [`Plan::bias`]).
    pub fn image(&self, bias: u64) -> Image {
        Image {
            entry: self.entry.wrapping_add(bias),
            phdr: self.phdr.wrapping_add(bias),
            phnum: self.phnum,
            bias,
            end: self.high.wrapping_add(bias),
        }
    }
}

impl Segment {
    /// Where the segment goes once moved by `bias`: its first byte, and how many
    /// zero bytes follow its file bytes.
    pub fn placed(&self, bias: u64) -> (u64, u64) {
        let filesz = (self.file.end - self.file.start) as u64;
        (self.vaddr.wrapping_add(bias), self.memsz - filesz)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    /// A little-endian ELF64 x86-64 file of `e_type` with PT_LOAD segments
    /// (vaddr, file bytes, memsz), file bytes after the headers.
    fn elf64(e_type: u16, entry: u64, loads: &[(u64, &[u8], u64)]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0");
        out.extend_from_slice(&e_type.to_le_bytes());
        out.extend_from_slice(&62u16.to_le_bytes());
        out.extend_from_slice(&1u32.to_le_bytes());
        out.extend_from_slice(&entry.to_le_bytes());
        out.extend_from_slice(&64u64.to_le_bytes());
        out.extend_from_slice(&0u64.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        for half in [64u16, 56, loads.len() as u16, 64, 0, 0] {
            out.extend_from_slice(&half.to_le_bytes());
        }
        let mut offset = 64 + 56 * loads.len() as u64;
        for (vaddr, data, memsz) in loads {
            out.extend_from_slice(&1u32.to_le_bytes());
            out.extend_from_slice(&5u32.to_le_bytes());
            for word in [offset, *vaddr, *vaddr, data.len() as u64, *memsz, 0x1000] {
                out.extend_from_slice(&word.to_le_bytes());
            }
            offset += data.len() as u64;
        }
        for (_, data, _) in loads {
            out.extend_from_slice(data);
        }
        out
    }

    /// Found by the fuzz target `lx_elf`: a position-independent program linked
    /// above the base it is given made the bias underflow (a panic where
    /// overflow is checked, and arithmetic that only worked by wrapping where it
    /// is not).
    #[test]
    fn a_pie_linked_above_its_base_moves_down() {
        let bytes = elf64(ET_DYN, 0x7000_0010, &[(0x7000_0000, &[0x90; 4], 0x2000)]);
        let plan = plan(&bytes).unwrap();
        let bias = plan.bias(0x1000_0000);
        let image = plan.image(bias);
        assert_eq!(image.entry, 0x1000_0010);
        assert_eq!(image.end, 0x1000_2000);
        assert_eq!(plan.segments[0].placed(bias), (0x1000_0000, 0x1ffc));
    }

    /// Found by the fuzz target `lx_elf`: a segment whose end wrapped past 2^64
    /// was left out of the image's span, so the loader would have copied its
    /// bytes and cleared its (near 2^64) bss outside the memory mapped for it.
    #[test]
    fn a_segment_that_wraps_the_address_space_is_refused() {
        let bytes = elf64(
            ET_EXEC,
            0x40_1000,
            &[
                (0x40_1000, &[1], 0x1000),
                (0x40_2000, &[2], u64::MAX - 0xffff),
            ],
        );
        assert_eq!(
            plan(&bytes),
            Err("segment past the end of the address space")
        );
    }

    #[test]
    fn a_fixed_address_program_stays_put() {
        let bytes = elf64(ET_EXEC, 0x40_1000, &[(0x40_1000, &[1, 2], 0x10)]);
        let plan = plan(&bytes).unwrap();
        assert_eq!(plan.bias(0x1000_0000), 0);
        assert_eq!((plan.low, plan.high), (0x40_1000, 0x40_2000));
        assert_eq!(
            plan.segments,
            vec![Segment {
                vaddr: 0x40_1000,
                memsz: 0x10,
                file: 120..122
            }]
        );
    }
}
