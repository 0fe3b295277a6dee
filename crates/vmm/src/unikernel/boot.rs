//! Putting a checked image and its boot state into guest memory: the same bytes at
//! the same addresses on every platform (`lightvm_abi::layout`).

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
}

/// The first page after the image: where the heap starts.
pub fn heap_start(image: &UnikernelImage) -> u64 {
    image.end().next_multiple_of(layout::PAGE_SIZE)
}

/// Writes the boot info and the command line into the boot-info page.
pub fn write_boot_info(
    memory: &GuestMemoryMmap,
    facts: &BootFacts,
    heap_start: u64,
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
        heap_start,
        heap_end: facts.mem_size,
        stack_bottom: layout::STACK_BOTTOM,
        stack_top: layout::STACK_TOP,
        cmdline_addr: layout::CMDLINE_ADDR,
        cmdline_len: cmdline.len() as u64,
        tsc_hz: facts.tsc_hz,
        wall_clock_ns,
        hypercall_gate: facts.hypercall_gate,
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
