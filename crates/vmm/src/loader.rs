//! Unikernel ELF images: parsed and checked completely before any guest memory is
//! touched.
//!
//! linux-loader's ELF loader is built for Linux kernels: it never zeroes bss, skips
//! segments without file data, returns no segment list and checks neither class nor
//! machine (DESIGN.md). A unikernel image is untrusted input that decides guest page
//! permissions, so this module parses the headers with `object` and validates every
//! field itself; the result is a list of segments that is safe to copy as-is.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use lightvm_abi::layout;
use object::elf::{self, FileHeader64, ProgramHeader64};
use object::read::elf::{FileHeader, ProgramHeader};
use object::Endianness;

/// Offsets in `e_ident` (the ELF specification's names).
const EI_NIDENT: usize = 16;
const EI_CLASS: usize = 4;
const EI_DATA: usize = 5;
#[cfg(test)]
const EI_VERSION: usize = 6;

/// Most PT_LOAD segments an image may have; ours have three.
const MAX_SEGMENTS: usize = 16;

/// Largest image file accepted: far above any real unikernel, far below anything that
/// could exhaust the host while it is read.
pub const MAX_IMAGE_FILE: u64 = 1 << 30;

/// Opens an image file for reading without blocking on a FIFO or device (a FIFO
/// with no writer would block `open` itself), and refuses anything but a regular
/// file.
pub fn open_file(path: &Path) -> Result<File, ImageError> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|source| ImageError::Read {
            path: path.to_owned(),
            source,
        })?;
    match file.metadata() {
        Ok(metadata) if metadata.is_file() => Ok(file),
        Ok(_) => Err(ImageError::NotRegular {
            path: path.to_owned(),
        }),
        Err(source) => Err(ImageError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Reads a file of `size` bytes from offset 0, whatever its offset (another process
/// may share it), and refuses one that turns out longer than `size`.
fn read_whole(file: &File, size: u64) -> std::io::Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let len = usize::try_from(size).map_err(std::io::Error::other)?;
    let mut bytes = vec![0u8; len];
    let mut done = 0;
    while let Some(rest) = bytes.get_mut(done..).filter(|rest| !rest.is_empty()) {
        match file.read_at(rest, done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    bytes.truncate(done);
    let mut probe = [0u8; 1];
    if file.read_at(&mut probe, size)? != 0 {
        return Err(std::io::Error::other("the file grew while it was read"));
    }
    Ok(bytes)
}

/// Why an image was refused; every variant names the field that is wrong.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The file could not be read.
    #[error("cannot read image {path}: {source}")]
    Read {
        /// The image path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The path names a directory, device, FIFO or socket rather than a file.
    #[error("image {path} is not a regular file")]
    NotRegular {
        /// The image path.
        path: PathBuf,
    },
    /// The file is larger than [`MAX_IMAGE_FILE`].
    #[error("image is {size} bytes, larger than the {} MiB limit", MAX_IMAGE_FILE >> 20)]
    FileTooLarge {
        /// Its size.
        size: u64,
    },
    /// No ELF magic.
    #[error("not an ELF file (no \\x7fELF magic)")]
    NotElf,
    /// ELF, but not one lightvm can run.
    #[error("unsupported ELF image: {0}")]
    Unsupported(&'static str),
    /// The headers do not parse.
    #[error("malformed ELF image: {0}")]
    Malformed(&'static str),
    /// One program header is inconsistent.
    #[error("malformed ELF image: segment {index}: {reason}")]
    BadSegment {
        /// Index among the program headers.
        index: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// The image does not fit in the VM's memory.
    #[error("image needs memory up to {end:#x} ({} KiB) but the VM has {} KiB; raise --mem", end.div_ceil(1024), mem_size / 1024)]
    TooLarge {
        /// One past the highest byte the image loads to.
        end: u64,
        /// The VM's memory size.
        mem_size: u64,
    },
}

/// Access a segment grants, from its ELF `p_flags`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SegmentAccess {
    /// PF_W: the guest may write it.
    pub write: bool,
    /// PF_X: the guest may execute it.
    pub exec: bool,
}

/// One validated PT_LOAD segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// Guest address of its first byte.
    pub guest_addr: u64,
    /// Where its file bytes are in the image.
    pub file_offset: u64,
    /// How many bytes come from the file; the rest up to `mem_size` is zero (bss).
    pub file_size: u64,
    /// Bytes it occupies in guest memory.
    pub mem_size: u64,
    /// Its permissions.
    pub access: SegmentAccess,
}

impl Segment {
    /// One past its last guest byte (validated not to overflow).
    pub fn guest_end(&self) -> u64 {
        self.guest_addr + self.mem_size
    }
}

/// A unikernel image that passed validation: its bytes, entry point and segments.
#[derive(Debug, Clone)]
pub struct UnikernelImage {
    bytes: Vec<u8>,
    entry: u64,
    segments: Vec<Segment>,
    /// The open image file, when the image came from one: read-only segments are
    /// mapped from it rather than copied, so VMs of one image share its pages.
    file: Option<Arc<File>>,
}

/// Whole pages of a read-only segment that can be mapped straight from the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FilePages {
    /// First guest address (page-aligned).
    pub guest_addr: u64,
    /// File offset of that page (page-aligned).
    pub file_offset: u64,
    /// Bytes (a multiple of the page size).
    pub len: u64,
}

impl UnikernelImage {
    /// Reads and validates an image file.
    pub fn from_file(path: &Path) -> Result<Self, ImageError> {
        Self::from_open_file(open_file(path)?, path)
    }

    /// Reads and validates an image file that was opened already (by a daemon that
    /// hands it over, say); `path` names it in errors. Only a regular file of at
    /// most [`MAX_IMAGE_FILE`] bytes is read, and never past that size: a device or
    /// FIFO given as an image is refused, not read forever.
    pub fn from_open_file(file: File, path: &Path) -> Result<Self, ImageError> {
        let read_error = |source| ImageError::Read {
            path: path.to_owned(),
            source,
        };
        let metadata = file.metadata().map_err(read_error)?;
        if !metadata.is_file() {
            return Err(ImageError::NotRegular {
                path: path.to_owned(),
            });
        }
        let size = metadata.len();
        if size > MAX_IMAGE_FILE {
            return Err(ImageError::FileTooLarge { size });
        }
        let bytes = read_whole(&file, size).map_err(read_error)?;
        let mut image = Self::parse(bytes)?;
        image.file = Some(Arc::new(file));
        Ok(image)
    }

    /// Validates an image held in memory.
    pub fn parse(bytes: Vec<u8>) -> Result<Self, ImageError> {
        if bytes.len() as u64 > MAX_IMAGE_FILE {
            return Err(ImageError::FileTooLarge {
                size: bytes.len() as u64,
            });
        }
        let ident = bytes.get(..EI_NIDENT).ok_or(ImageError::NotElf)?;
        if ident[..4] != elf::ELFMAG {
            return Err(ImageError::NotElf);
        }
        if ident[EI_CLASS] != elf::ELFCLASS64 {
            return Err(ImageError::Unsupported(
                "not a 64-bit ELF (ELFCLASS64 required)",
            ));
        }
        if ident[EI_DATA] != elf::ELFDATA2LSB {
            return Err(ImageError::Unsupported("not little-endian"));
        }
        let header = FileHeader64::<Endianness>::parse(bytes.as_slice())
            .map_err(|_| ImageError::Malformed("truncated or invalid ELF header"))?;
        let endian = header
            .endian()
            .map_err(|_| ImageError::Malformed("invalid byte order"))?;
        if header.e_machine(endian) != elf::EM_X86_64 {
            return Err(ImageError::Unsupported(
                "wrong architecture: not x86-64 (EM_X86_64)",
            ));
        }
        match header.e_type(endian) {
            elf::ET_EXEC => {}
            elf::ET_DYN => {
                return Err(ImageError::Unsupported(
                    "position-independent (ET_DYN) image: build it with `lightvm build`, which links a static executable",
                ))
            }
            _ => return Err(ImageError::Unsupported("not an executable (ET_EXEC)")),
        }
        let program_headers = header
            .program_headers(endian, bytes.as_slice())
            .map_err(|_| ImageError::Malformed("program header table is out of bounds"))?;
        let segments = validate_segments(program_headers, endian, bytes.len() as u64)?;
        let entry = header.e_entry(endian);
        let entry_is_code = segments
            .iter()
            .any(|s| s.access.exec && s.guest_addr <= entry && entry < s.guest_end());
        if !entry_is_code {
            return Err(ImageError::Malformed(
                "entry point is not inside an executable segment",
            ));
        }
        Ok(Self {
            bytes,
            entry,
            segments,
            file: None,
        })
    }

    /// Guest address where execution starts.
    pub fn entry(&self) -> u64 {
        self.entry
    }

    /// The PT_LOAD segments, sorted by address and non-overlapping.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// One past the highest guest byte the image occupies.
    pub fn end(&self) -> u64 {
        self.segments.last().map_or(0, Segment::guest_end)
    }

    /// Size of the image file in bytes.
    pub fn file_size(&self) -> u64 {
        self.bytes.len() as u64
    }

    /// The file bytes of a segment (bounds were checked in validation).
    pub fn file_bytes(&self, segment: &Segment) -> &[u8] {
        let start = segment.file_offset as usize;
        let end = start + segment.file_size as usize;
        self.bytes.get(start..end).unwrap_or_default()
    }

    /// The image file, if it was loaded from one.
    pub fn file(&self) -> Option<&File> {
        self.file.as_deref()
    }

    /// The part of `segment` that may be mapped from the image file instead of
    /// copied: the whole pages of a read-only segment whose file offset and guest
    /// address agree modulo the page size. The rest (data, bss, partial pages) is
    /// copied. `None` when nothing can be mapped.
    pub fn file_pages(&self, segment: &Segment) -> Option<FilePages> {
        let page = layout::PAGE_SIZE;
        if self.file.is_none()
            || segment.access.write
            || segment.guest_addr % page != segment.file_offset % page
        {
            return None;
        }
        let start = segment.guest_addr.next_multiple_of(page);
        let end = (segment.guest_addr + segment.file_size) / page * page;
        (end > start).then(|| FilePages {
            guest_addr: start,
            file_offset: segment.file_offset + (start - segment.guest_addr),
            len: end - start,
        })
    }

    /// Fails unless the image fits in `mem_size` bytes of guest memory.
    pub fn check_fits(&self, mem_size: u64) -> Result<(), ImageError> {
        if self.end() > mem_size {
            return Err(ImageError::TooLarge {
                end: self.end(),
                mem_size,
            });
        }
        Ok(())
    }
}

fn validate_segments(
    headers: &[ProgramHeader64<Endianness>],
    endian: Endianness,
    file_len: u64,
) -> Result<Vec<Segment>, ImageError> {
    let mut segments = Vec::new();
    for (index, ph) in headers.iter().enumerate() {
        let bad = |reason: String| ImageError::BadSegment { index, reason };
        match ph.p_type(endian) {
            elf::PT_LOAD => {}
            elf::PT_INTERP | elf::PT_DYNAMIC => {
                return Err(ImageError::Unsupported(
                    "dynamically linked image: unikernels must be static",
                ))
            }
            elf::PT_TLS => {
                return Err(ImageError::Unsupported(
                    "image uses thread-local storage, which unikernels do not have",
                ))
            }
            _ => continue,
        }
        let segment = Segment {
            guest_addr: ph.p_vaddr(endian),
            file_offset: ph.p_offset(endian),
            file_size: ph.p_filesz(endian),
            mem_size: ph.p_memsz(endian),
            access: SegmentAccess {
                write: ph.p_flags(endian) & elf::PF_W != 0,
                exec: ph.p_flags(endian) & elf::PF_X != 0,
            },
        };
        if segment.mem_size == 0 {
            continue;
        }
        if segment.file_size > segment.mem_size {
            return Err(bad(format!(
                "file size {:#x} exceeds memory size {:#x}",
                segment.file_size, segment.mem_size
            )));
        }
        match segment.file_offset.checked_add(segment.file_size) {
            Some(end) if end <= file_len => {}
            _ => {
                return Err(bad(format!(
                    "file bytes {:#x}+{:#x} lie past the end of the {file_len}-byte file",
                    segment.file_offset, segment.file_size
                )))
            }
        }
        if segment.guest_addr < layout::IMAGE_MIN_ADDR {
            return Err(bad(format!(
                "loads at {:#x}, below the lowest image address {:#x} (reserved for the VMM)",
                segment.guest_addr,
                layout::IMAGE_MIN_ADDR
            )));
        }
        if segment
            .guest_addr
            .checked_add(segment.mem_size)
            .is_none_or(|end| end > layout::MEM_MAX)
        {
            return Err(bad(format!(
                "{:#x}+{:#x} lies beyond the largest guest memory ({} GiB)",
                segment.guest_addr,
                segment.mem_size,
                layout::MEM_MAX >> 30
            )));
        }
        if segment.access.write && segment.access.exec {
            return Err(bad(
                "is both writable and executable; lightvm maps images W^X".to_owned(),
            ));
        }
        segments.push(segment);
        if segments.len() > MAX_SEGMENTS {
            return Err(ImageError::Malformed("more than 16 loadable segments"));
        }
    }
    if segments.is_empty() {
        return Err(ImageError::Malformed("no loadable (PT_LOAD) segment"));
    }
    segments.sort_by_key(|s| s.guest_addr);
    for pair in segments.windows(2) {
        let (low, high) = (&pair[0], &pair[1]);
        let low_last_page = (low.guest_end() - 1) / layout::PAGE_SIZE;
        if high.guest_addr / layout::PAGE_SIZE <= low_last_page {
            return Err(ImageError::Malformed(
                "two loadable segments share a page: segments must be page-aligned (use lightvm's linker script)",
            ));
        }
    }
    Ok(segments)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds a minimal ELF64 x86-64 executable with the given PT_LOAD segments
    /// (vaddr, file bytes, memsz, flags), file data placed after the headers.
    pub(crate) fn make_elf(entry: u64, segments: &[(u64, &[u8], u64, u32)]) -> Vec<u8> {
        let phoff = 64u64;
        let data_start = phoff + 56 * segments.len() as u64;
        let mut out = vec![0u8; data_start as usize];
        out[..4].copy_from_slice(&elf::ELFMAG);
        out[EI_CLASS] = elf::ELFCLASS64;
        out[EI_DATA] = elf::ELFDATA2LSB;
        out[EI_VERSION] = 1;
        out[16..18].copy_from_slice(&elf::ET_EXEC.to_le_bytes());
        out[18..20].copy_from_slice(&elf::EM_X86_64.to_le_bytes());
        out[20..24].copy_from_slice(&1u32.to_le_bytes());
        out[24..32].copy_from_slice(&entry.to_le_bytes());
        out[32..40].copy_from_slice(&phoff.to_le_bytes());
        out[52..54].copy_from_slice(&64u16.to_le_bytes());
        out[54..56].copy_from_slice(&56u16.to_le_bytes());
        out[56..58].copy_from_slice(&(segments.len() as u16).to_le_bytes());
        let mut offset = data_start;
        for (i, (vaddr, data, memsz, flags)) in segments.iter().enumerate() {
            let ph = &mut out[(phoff as usize + 56 * i)..(phoff as usize + 56 * (i + 1))];
            ph[0..4].copy_from_slice(&elf::PT_LOAD.to_le_bytes());
            ph[4..8].copy_from_slice(&flags.to_le_bytes());
            ph[8..16].copy_from_slice(&offset.to_le_bytes());
            ph[16..24].copy_from_slice(&vaddr.to_le_bytes());
            ph[24..32].copy_from_slice(&vaddr.to_le_bytes());
            ph[32..40].copy_from_slice(&(data.len() as u64).to_le_bytes());
            ph[40..48].copy_from_slice(&memsz.to_le_bytes());
            offset += data.len() as u64;
        }
        for (_, data, _, _) in segments {
            out.extend_from_slice(data);
        }
        out
    }

    const RX: u32 = elf::PF_R | elf::PF_X;
    const RW: u32 = elf::PF_R | elf::PF_W;

    fn valid() -> Vec<u8> {
        make_elf(
            0x100000,
            &[
                (0x100000, &[0x90; 16], 16, RX),
                (0x101000, &[1, 2], 0x2000, RW),
            ],
        )
    }

    #[test]
    fn a_valid_image_yields_sorted_segments() {
        let image = UnikernelImage::parse(valid()).unwrap();
        assert_eq!(image.entry(), 0x100000);
        assert_eq!(image.segments().len(), 2);
        assert_eq!(image.end(), 0x103000);
        let data = &image.segments()[1];
        assert!(data.access.write && !data.access.exec);
        assert_eq!(image.file_bytes(data), &[1, 2]);
        assert!(image.check_fits(2 << 20).is_ok());
    }

    #[test]
    fn only_whole_read_only_pages_are_mapped_from_the_file() {
        // Two program headers: file data starts at 64 + 2 * 56 = 0xb0. Loading the
        // text at 0x1000b0 makes file offset and address congruent modulo a page.
        let text = vec![0x90u8; 0x2800];
        let base = 0x1000b0;
        let elf = make_elf(base, &[(base, &text, 0x2800, RX), (0x103000, &[1], 16, RW)]);
        let path = std::env::temp_dir().join(format!("lightvm-map-{}.elf", std::process::id()));
        std::fs::write(&path, &elf).unwrap();
        let image = UnikernelImage::from_file(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(
            image.file_pages(&image.segments()[0]),
            Some(FilePages {
                guest_addr: 0x101000,
                file_offset: 0x1000,
                len: 0x1000,
            }),
            "only the one whole page inside 0x1000b0..0x1028b0"
        );
        assert_eq!(
            image.file_pages(&image.segments()[1]),
            None,
            "data is copied"
        );
        let parsed = UnikernelImage::parse(elf).unwrap();
        assert_eq!(
            parsed.file_pages(&parsed.segments()[0]),
            None,
            "no file to map"
        );
    }

    #[test]
    fn non_elf_input_is_refused() {
        assert!(matches!(
            UnikernelImage::parse(b"#!/bin/sh\necho hi\n".to_vec()),
            Err(ImageError::NotElf)
        ));
        assert!(matches!(
            UnikernelImage::parse(Vec::new()),
            Err(ImageError::NotElf)
        ));
    }

    #[test]
    fn wrong_class_machine_and_type_are_named() {
        let mut elf32 = valid();
        elf32[EI_CLASS] = elf::ELFCLASS32;
        let err = UnikernelImage::parse(elf32).unwrap_err().to_string();
        assert!(err.contains("64-bit"), "{err}");

        let mut arm = valid();
        arm[18..20].copy_from_slice(&elf::EM_AARCH64.to_le_bytes());
        let err = UnikernelImage::parse(arm).unwrap_err().to_string();
        assert!(err.contains("architecture"), "{err}");

        let mut pie = valid();
        pie[16..18].copy_from_slice(&elf::ET_DYN.to_le_bytes());
        let err = UnikernelImage::parse(pie).unwrap_err().to_string();
        assert!(err.contains("ET_DYN"), "{err}");
    }

    #[test]
    fn truncated_headers_are_malformed_not_a_panic() {
        let image = valid();
        for len in [16, 63, 64, 100] {
            assert!(
                UnikernelImage::parse(image[..len].to_vec()).is_err(),
                "{len}"
            );
        }
    }

    #[test]
    fn segment_file_bytes_past_eof_are_refused() {
        let mut image = valid();
        // First program header's p_filesz.
        image[64 + 32..64 + 40].copy_from_slice(&u64::MAX.to_le_bytes());
        image[64 + 40..64 + 48].copy_from_slice(&u64::MAX.to_le_bytes());
        let err = UnikernelImage::parse(image).unwrap_err();
        assert!(
            matches!(err, ImageError::BadSegment { index: 0, .. }),
            "{err}"
        );
    }

    #[test]
    fn filesz_above_memsz_is_refused() {
        let image = make_elf(0x100000, &[(0x100000, &[0x90; 32], 16, RX)]);
        assert!(matches!(
            UnikernelImage::parse(image),
            Err(ImageError::BadSegment { .. })
        ));
    }

    #[test]
    fn segments_in_vmm_area_or_beyond_memory_limit_are_refused() {
        let low = make_elf(0x1000, &[(0x1000, &[0x90], 1, RX)]);
        let err = UnikernelImage::parse(low).unwrap_err().to_string();
        assert!(err.contains("reserved for the VMM"), "{err}");

        let huge = make_elf(0x100000, &[(0x100000, &[0x90], u64::MAX - 0x1000, RX)]);
        assert!(UnikernelImage::parse(huge).is_err());
    }

    #[test]
    fn writable_executable_and_shared_pages_are_refused() {
        let wx = make_elf(0x100000, &[(0x100000, &[0x90], 1, RX | elf::PF_W)]);
        assert!(UnikernelImage::parse(wx).is_err());
        let shared = make_elf(
            0x100000,
            &[(0x100000, &[0x90], 16, RX), (0x100800, &[0], 16, RW)],
        );
        assert!(UnikernelImage::parse(shared).is_err());
    }

    #[test]
    fn entry_must_be_in_code() {
        let image = make_elf(
            0x101000,
            &[(0x100000, &[0x90], 16, RX), (0x101000, &[0], 16, RW)],
        );
        let err = UnikernelImage::parse(image).unwrap_err().to_string();
        assert!(err.contains("entry point"), "{err}");
    }

    #[test]
    fn image_larger_than_memory_is_reported() {
        let image = make_elf(0x100000, &[(0x100000, &[0x90], 4 << 20, RX)]);
        let image = UnikernelImage::parse(image).unwrap();
        let err = image.check_fits(2 << 20).unwrap_err().to_string();
        assert!(err.contains("raise --mem"), "{err}");
    }
}
