//! Putting a checked image and its boot state into guest memory: the same bytes at
//! the same addresses on every platform (`lightvm_abi::layout`).

use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use lightvm_abi::{layout, BootInfo, ABI_VERSION, BOOT_INFO_MAGIC};
use vm_memory::GuestMemoryMmap;
use zerocopy::IntoBytes;

use crate::loader::UnikernelImage;
use crate::memory::{self, MemoryError};

/// Why an image could not be put in guest memory.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// Its bytes could not be written or mapped.
    #[error(transparent)]
    Memory(#[from] MemoryError),
    /// The file-backed pages of a segment lie outside it (a bug of the loader,
    /// which checked the image).
    #[error("internal error: file pages outside their segment")]
    FilePagesOutsideSegment,
    /// The module file could not be opened or is no regular file.
    #[error("module {path}: {reason}")]
    Module {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Image and module do not both fit.
    #[error("the module needs {module} bytes at the end of guest memory, above the image's end at {image_end:#x}, but the VM has {mem_size} bytes; raise --mem")]
    ModuleTooLarge {
        /// The module's bytes.
        module: u64,
        /// One past the image.
        image_end: u64,
        /// Guest memory.
        mem_size: u64,
    },
}

/// Largest module: more than any root filesystem of one program needs, and far
/// below the largest guest memory.
pub const MODULE_MAX: u64 = 2 << 30;

/// An opened module file (a regular file of at most [`MODULE_MAX`] bytes).
#[derive(Debug)]
pub struct Module {
    file: File,
    len: u64,
}

impl Module {
    /// Opens `path` without blocking on a FIFO and checks what it is.
    pub fn open(path: &Path) -> Result<Self, BootError> {
        use std::os::unix::fs::OpenOptionsExt;
        let bad = |reason: String| BootError::Module {
            path: path.to_owned(),
            reason,
        };
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(path)
            .map_err(|e| bad(e.to_string()))?;
        Self::from_file(file, path)
    }

    /// Takes a module file opened by someone else (a daemon that hands it over:
    /// `path` names it in messages only) and checks what it is.
    pub fn from_file(file: File, path: &Path) -> Result<Self, BootError> {
        let bad = |reason: String| BootError::Module {
            path: path.to_owned(),
            reason,
        };
        let metadata = file.metadata().map_err(|e| bad(e.to_string()))?;
        if !metadata.is_file() {
            return Err(bad("not a regular file".into()));
        }
        let len = metadata.len();
        if len == 0 || len > MODULE_MAX {
            return Err(bad(format!(
                "{len} bytes; a module has 1 to {} MiB",
                MODULE_MAX >> 20
            )));
        }
        Ok(Self { file, len })
    }

    /// Its size in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether it is empty (never: `open` refuses that).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Where a guest's parts lie in its memory, the same on every platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestLayout {
    /// The heap: from the first page after the image to the module, or the end.
    pub heap: Range<u64>,
    /// The module, starting at a large-page boundary (so kvm can map it read-only
    /// with large pages), its end rounded up to a page.
    pub module: Option<Range<u64>>,
    /// Whether code may run from the heap (a VM for Linux programs).
    pub executable_heap: bool,
}

impl GuestLayout {
    /// Plans guest memory of `mem_size` bytes for `image` and a module of
    /// `module_len` bytes.
    pub fn plan(
        image: &UnikernelImage,
        mem_size: u64,
        module_len: Option<u64>,
        executable_heap: bool,
    ) -> Result<Self, BootError> {
        let heap_start = heap_start(image);
        let module = match module_len {
            None => None,
            Some(len) => {
                let pages = len.next_multiple_of(layout::PAGE_SIZE);
                let start = mem_size
                    .checked_sub(pages)
                    .map(|start| start - start % layout::LARGE_PAGE_SIZE)
                    .filter(|&start| start >= heap_start)
                    .ok_or(BootError::ModuleTooLarge {
                        module: len,
                        image_end: image.end(),
                        mem_size,
                    })?;
                Some(start..start + pages)
            }
        };
        let heap_end = module.as_ref().map_or(mem_size, |m| m.start);
        Ok(Self {
            heap: heap_start..heap_end,
            module,
            executable_heap,
        })
    }
}

/// Maps the module at its place, read-only, straight from its file: VMs of one
/// root filesystem share its page-cache pages.
pub fn load_module(
    memory: &GuestMemoryMmap,
    module: &Module,
    place: &Range<u64>,
) -> Result<(), BootError> {
    memory::map_file(
        memory,
        place.start,
        place.end - place.start,
        &module.file,
        0,
    )?;
    Ok(())
}

/// What the boot info says beyond the image and the command line.
#[derive(Debug, Clone, Copy)]
pub struct BootFacts {
    /// Bytes of guest memory.
    pub mem_size: u64,
    /// TSC ticks per second (0 if unknown).
    pub tsc_hz: u64,
    /// `lightvm_abi::PLATFORM_*`.
    pub platform: u32,
    /// Where the guest calls the monitor.
    pub hypercall_gate: u64,
    /// The module's bytes (0 if none).
    pub module_len: u64,
    /// Whether the guest has a syscall sled at address 0.
    pub syscall_sled: bool,
}

/// The first page after the image: where the heap starts.
pub fn heap_start(image: &UnikernelImage) -> u64 {
    image.end().next_multiple_of(layout::PAGE_SIZE)
}

/// Writes the boot info and the command line into the boot-info page.
pub fn write_boot_info(
    memory: &GuestMemoryMmap,
    facts: &BootFacts,
    plan: &GuestLayout,
    cmdline: &str,
) -> Result<(), MemoryError> {
    let wall_clock_ns = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    let boot_info = BootInfo {
        magic: BOOT_INFO_MAGIC,
        abi_version: ABI_VERSION,
        platform: facts.platform,
        mem_size: facts.mem_size,
        heap_start: plan.heap.start,
        heap_end: plan.heap.end,
        stack_bottom: layout::STACK_BOTTOM,
        stack_top: layout::STACK_TOP,
        cmdline_addr: layout::CMDLINE_ADDR,
        cmdline_len: cmdline.len() as u64,
        tsc_hz: facts.tsc_hz,
        wall_clock_ns,
        hypercall_gate: facts.hypercall_gate,
        module_addr: plan.module.as_ref().map_or(0, |m| m.start),
        module_len: facts.module_len,
        flags: if facts.syscall_sled {
            lightvm_abi::BOOT_FLAG_SYSCALL_SLED
        } else {
            0
        },
    };
    memory::write(memory, layout::BOOT_INFO_ADDR, boot_info.as_bytes())?;
    memory::write(memory, layout::CMDLINE_ADDR, cmdline.as_bytes())
}

/// Puts the image in guest memory: whole read-only pages mapped from the file, the
/// rest copied. Fresh memory is zero, so bss needs no clearing.
pub fn load_segments(memory: &GuestMemoryMmap, image: &UnikernelImage) -> Result<(), BootError> {
    for segment in image.segments() {
        let bytes = image.file_bytes(segment);
        let mapped = match (image.file_pages(segment), image.file()) {
            (Some(pages), Some(file)) => {
                memory::map_file(memory, pages.guest_addr, pages.len, file, pages.file_offset)?;
                pages.guest_addr - segment.guest_addr
                    ..pages.guest_addr - segment.guest_addr + pages.len
            }
            _ => 0..0,
        };
        let split = |range: std::ops::Range<u64>| {
            bytes
                .get(range.start as usize..range.end as usize)
                .ok_or(BootError::FilePagesOutsideSegment)
        };
        let (head, tail) = (
            split(0..mapped.start)?,
            split(mapped.end..bytes.len() as u64)?,
        );
        memory::write(memory, segment.guest_addr, head)?;
        memory::write(memory, segment.guest_addr + mapped.end, tail)?;
    }
    Ok(())
}
