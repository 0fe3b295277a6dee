//! Loading a Linux kernel and its initrd into guest memory.
//!
//! Two formats, told apart by their first bytes: an uncompressed ELF `vmlinux`
//! (entered through its PVH note when it has one, else through the 64-bit boot
//! protocol at its ELF entry) and a bzImage (its setup header is kept for the zero
//! page; entered at the 64-bit entry, 0x200 past its protected-mode code). The
//! copying is linux-loader's; lightvm checks first what linux-loader does not —
//! the ELF class and machine, and that the kernel fits in the guest's memory — so
//! that a wrong file fails with one clear line.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use linux_loader::loader::bootparam::setup_header;
use linux_loader::loader::elf::PvhBootCapability;
use linux_loader::loader::{BzImage, Elf, KernelLoader};
use object::read::elf::{ElfFile64, ProgramHeader};
use object::{elf, Endianness};
use vm_memory::{GuestAddress, GuestMemoryMmap};

use super::boot_params::{place_initrd, InitrdPlacement};
use super::cpu::BootEntry;
use super::layout;

/// Why a kernel or initrd was refused.
#[derive(Debug, thiserror::Error)]
pub enum LinuxImageError {
    /// The file could not be read.
    #[error("cannot read {what} {}: {source}", path.display())]
    Read {
        /// "kernel" or "initrd".
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Neither ELF nor bzImage.
    #[error("{} is not a Linux kernel: expected an ELF vmlinux or a bzImage", path.display())]
    NotAKernel {
        /// The file.
        path: PathBuf,
    },
    /// An ELF file, but not an x86-64 kernel.
    #[error("{} is not an x86-64 Linux kernel: {detail}", path.display())]
    WrongKind {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
    /// The kernel does not fit in guest memory.
    #[error("kernel {} needs guest memory up to {needed_mib} MiB but the VM has {mem_mib} MiB (raise --mem)", path.display())]
    DoesNotFit {
        /// The file.
        path: PathBuf,
        /// Where its image ends, in MiB (rounded up).
        needed_mib: u64,
        /// Guest memory in MiB.
        mem_mib: u64,
    },
    /// linux-loader refused it.
    #[error("cannot load kernel {}: {detail}", path.display())]
    Load {
        /// The file.
        path: PathBuf,
        /// linux-loader's reason.
        detail: String,
    },
    /// The initrd does not fit between the kernel and the end of memory.
    #[error("initrd {} is {size_mib} MiB but only {room_mib} MiB of guest memory is free above the kernel (raise --mem)", path.display())]
    InitrdTooLarge {
        /// The file.
        path: PathBuf,
        /// Its size in MiB (rounded up).
        size_mib: u64,
        /// Room above the kernel, in MiB.
        room_mib: u64,
    },
}

/// A kernel in guest memory.
#[derive(Debug, Clone, Copy)]
pub struct LoadedKernel {
    /// How to enter it.
    pub entry: BootEntry,
    /// First byte past the kernel image.
    pub end: u64,
    /// A bzImage's setup header.
    pub setup_header: Option<setup_header>,
}

/// What kind of file a kernel is, from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelFormat {
    /// An ELF file.
    Elf,
    /// A bzImage ("HdrS" at 0x202).
    BzImage,
}

/// Tells ELF from bzImage by magic numbers; `None` for anything else.
pub fn detect_format(head: &[u8]) -> Option<KernelFormat> {
    if head.starts_with(b"\x7fELF") {
        Some(KernelFormat::Elf)
    } else if head.get(0x202..0x206) == Some(b"HdrS") {
        Some(KernelFormat::BzImage)
    } else {
        None
    }
}

fn mib_up(bytes: u64) -> u64 {
    bytes.div_ceil(1 << 20)
}

/// Checks an ELF kernel before linux-loader copies it: x86-64, 64-bit, and every
/// loadable segment inside guest memory. Returns where the image ends.
pub fn check_elf(path: &Path, bytes: &[u8], mem_size: u64) -> Result<u64, LinuxImageError> {
    let wrong = |detail: String| LinuxImageError::WrongKind {
        path: path.to_owned(),
        detail,
    };
    if bytes.get(4) != Some(&elf::ELFCLASS64) {
        return Err(wrong("it is a 32-bit ELF file".into()));
    }
    let file = ElfFile64::<Endianness>::parse(bytes).map_err(|e| wrong(format!("bad ELF: {e}")))?;
    let header = file.elf_header();
    let endian = file.endian();
    if header.e_machine.get(endian) != elf::EM_X86_64 {
        return Err(wrong(format!(
            "its ELF machine is {}, not x86-64",
            header.e_machine.get(endian)
        )));
    }
    let mut end = 0u64;
    for segment in file.elf_program_headers() {
        if segment.p_type(endian) != elf::PT_LOAD {
            continue;
        }
        let start = segment.p_paddr(endian);
        let seg_end = start
            .checked_add(segment.p_memsz(endian))
            .ok_or_else(|| wrong("a segment wraps around the address space".into()))?;
        if start < layout::HIMEM_START {
            return Err(wrong(format!("a segment loads at {start:#x}, below 1 MiB")));
        }
        end = end.max(seg_end);
    }
    if end == 0 {
        return Err(wrong("it has no loadable segment".into()));
    }
    if end > mem_size {
        return Err(LinuxImageError::DoesNotFit {
            path: path.to_owned(),
            needed_mib: mib_up(end),
            mem_mib: mem_size >> 20,
        });
    }
    Ok(end)
}

/// Loads the kernel at `path` into `memory` (`mem_size` bytes).
pub fn load_kernel(
    path: &Path,
    memory: &GuestMemoryMmap,
    mem_size: u64,
) -> Result<LoadedKernel, LinuxImageError> {
    let read = |source| LinuxImageError::Read {
        what: "kernel",
        path: path.to_owned(),
        source,
    };
    let load_error = |e: linux_loader::loader::Error| LinuxImageError::Load {
        path: path.to_owned(),
        detail: e.to_string(),
    };
    let mut file = File::open(path).map_err(read)?;
    let mut head = vec![0u8; 0x400];
    let n = read_up_to(&mut file, &mut head).map_err(read)?;
    head.truncate(n);
    match detect_format(&head) {
        Some(KernelFormat::Elf) => {
            let bytes = std::fs::read(path).map_err(read)?;
            check_elf(path, &bytes, mem_size)?;
            let result = Elf::load(
                memory,
                None,
                &mut file,
                Some(GuestAddress(layout::HIMEM_START)),
            )
            .map_err(load_error)?;
            let entry = match result.pvh_boot_cap {
                PvhBootCapability::PvhEntryPresent(addr) => BootEntry::Pvh { entry: addr.0 },
                _ => BootEntry::Linux64 {
                    entry: result.kernel_load.0,
                },
            };
            Ok(LoadedKernel {
                entry,
                end: result.kernel_end,
                setup_header: None,
            })
        }
        Some(KernelFormat::BzImage) => {
            let size = file.metadata().map_err(read)?.len();
            if layout::HIMEM_START + size > mem_size {
                return Err(LinuxImageError::DoesNotFit {
                    path: path.to_owned(),
                    needed_mib: mib_up(layout::HIMEM_START + size),
                    mem_mib: mem_size >> 20,
                });
            }
            let result = BzImage::load(
                memory,
                None,
                &mut file,
                Some(GuestAddress(layout::HIMEM_START)),
            )
            .map_err(load_error)?;
            let header = result
                .setup_header
                .ok_or_else(|| LinuxImageError::NotAKernel {
                    path: path.to_owned(),
                })?;
            const XLF_KERNEL_64: u16 = 1;
            if header.version < 0x20c || header.xloadflags & XLF_KERNEL_64 == 0 {
                return Err(LinuxImageError::WrongKind {
                    path: path.to_owned(),
                    detail: "this bzImage has no 64-bit entry point (boot protocol 2.12+ with XLF_KERNEL_64 is needed)".into(),
                });
            }
            // The decompressor needs room above the image for itself and the
            // decompressed kernel: `init_size` bytes from the load address.
            let needed = result.kernel_load.0 + u64::from(header.init_size);
            if needed > mem_size {
                return Err(LinuxImageError::DoesNotFit {
                    path: path.to_owned(),
                    needed_mib: mib_up(needed),
                    mem_mib: mem_size >> 20,
                });
            }
            Ok(LoadedKernel {
                entry: BootEntry::Linux64 {
                    entry: result.kernel_load.0 + 0x200,
                },
                end: needed.max(result.kernel_end),
                setup_header: Some(header),
            })
        }
        None => Err(LinuxImageError::NotAKernel {
            path: path.to_owned(),
        }),
    }
}

/// Reads the initrd at `path` and finds it a place: as high as the kernel allows,
/// above the kernel.
pub fn read_initrd(
    path: &Path,
    kernel: &LoadedKernel,
    mem_size: u64,
) -> Result<(Vec<u8>, InitrdPlacement), LinuxImageError> {
    let bytes = std::fs::read(path).map_err(|source| LinuxImageError::Read {
        what: "initrd",
        path: path.to_owned(),
        source,
    })?;
    let limit = match kernel.setup_header {
        Some(header) if header.initrd_addr_max != 0 => {
            (u64::from(header.initrd_addr_max) + 1).min(mem_size)
        }
        Some(_) => layout::DEFAULT_INITRD_LIMIT.min(mem_size),
        // A 64-bit vmlinux reads the ext_ramdisk fields: anywhere in RAM will do.
        None => mem_size,
    };
    let placement = place_initrd(bytes.len() as u64, kernel.end, limit).ok_or_else(|| {
        LinuxImageError::InitrdTooLarge {
            path: path.to_owned(),
            size_mib: mib_up(bytes.len() as u64),
            room_mib: limit.saturating_sub(kernel.end) >> 20,
        }
    })?;
    Ok((bytes, placement))
}

fn read_up_to(file: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_are_told_apart_by_magic() {
        assert_eq!(detect_format(b"\x7fELF\x02\x01"), Some(KernelFormat::Elf));
        let mut bz = vec![0u8; 0x400];
        bz[0x202..0x206].copy_from_slice(b"HdrS");
        assert_eq!(detect_format(&bz), Some(KernelFormat::BzImage));
        assert_eq!(detect_format(b"#!/bin/sh\n"), None);
        assert_eq!(detect_format(b""), None);
    }

    #[test]
    fn elf_files_that_are_not_x86_64_kernels_are_refused() {
        let path = Path::new("k");
        let mut elf32 = b"\x7fELF".to_vec();
        elf32.extend_from_slice(&[1, 1, 1, 0]);
        elf32.resize(64, 0);
        assert!(matches!(
            check_elf(path, &elf32, 1 << 30),
            Err(LinuxImageError::WrongKind { .. })
        ));
        // This test binary is an x86-64 ELF, but a position-independent program
        // linked at 0, not a kernel: its segments load below 1 MiB.
        let exe = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let error = check_elf(path, &exe, 1 << 30).unwrap_err();
        assert!(error.to_string().contains("below 1 MiB"), "{error}");
    }
}
