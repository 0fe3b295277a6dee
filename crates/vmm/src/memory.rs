//! Writing the monitor's own data into guest memory, on every platform: the boot
//! state it builds and the image it loads.

use vm_memory::{ByteValued, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

/// Why the monitor could not put its data in guest memory: a VMM bug or a layout
/// that does not fit the memory size, never the guest's doing.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// Bytes did not fit where they were to go.
    #[error("guest memory: writing {len} bytes at {addr:#x}: {error}")]
    Write {
        /// How many.
        len: usize,
        /// Where.
        addr: u64,
        /// What vm-memory said.
        error: vm_memory::GuestMemoryError,
    },
    /// A boot structure did not fit where it was to go.
    #[error("guest memory: writing boot data at {addr:#x}: {error}")]
    WriteObject {
        /// Where.
        addr: u64,
        /// What vm-memory said.
        error: vm_memory::GuestMemoryError,
    },
    /// Image pages could not be mapped from their file.
    #[error("guest memory: mapping {len} bytes of the image at {addr:#x}: {detail}")]
    MapFile {
        /// How many bytes.
        len: u64,
        /// Where in guest memory.
        addr: u64,
        /// What went wrong.
        detail: String,
    },
}

/// Writes VMM-built data (tables, boot info, image bytes) into guest memory.
pub fn write(memory: &GuestMemoryMmap, addr: u64, bytes: &[u8]) -> Result<(), MemoryError> {
    memory
        .write_slice(bytes, GuestAddress(addr))
        .map_err(|error| MemoryError::Write {
            len: bytes.len(),
            addr,
            error,
        })
}

/// Writes a boot structure (a zero page, PVH start info) into guest memory.
pub fn write_obj<T: ByteValued>(
    memory: &GuestMemoryMmap,
    addr: u64,
    value: T,
) -> Result<(), MemoryError> {
    memory
        .write_obj(value, GuestAddress(addr))
        .map_err(|error| MemoryError::WriteObject { addr, error })
}

/// Replaces `len` bytes of guest memory at `guest_addr` with a private mapping of
/// `file` at `offset`: the guest sees the file's bytes, VMs of one image share its
/// page-cache pages, and a write (which the guest's page tables forbid anyway) would
/// only copy the page, never touch the file. KVM learns of the new pages through its
/// MMU notifier.
pub fn map_file(
    memory: &GuestMemoryMmap,
    guest_addr: u64,
    len: u64,
    file: &std::fs::File,
    offset: u64,
) -> Result<(), MemoryError> {
    use std::os::fd::AsRawFd;

    let bad = |what: &str| MemoryError::MapFile {
        len,
        addr: guest_addr,
        detail: what.to_owned(),
    };
    let last = guest_addr
        .checked_add(len)
        .and_then(|end| end.checked_sub(1))
        .ok_or_else(|| bad("empty or overflowing range"))?;
    // Both ends in guest memory, and (one region) contiguous on the host.
    let host = memory
        .get_host_address(GuestAddress(guest_addr))
        .map_err(|e| bad(&e.to_string()))?;
    memory
        .get_host_address(GuestAddress(last))
        .map_err(|e| bad(&e.to_string()))?;
    let length = usize::try_from(len).map_err(|_| bad("length"))?;
    let file_offset = libc::off_t::try_from(offset).map_err(|_| bad("offset"))?;
    // SAFETY: `host..host + len` lies inside the guest-memory mapping that `memory`
    // owns (both ends were checked above, and the memory is one region); MAP_FIXED
    // replaces exactly those pages of our own mapping, and nothing in the VMM holds a
    // Rust reference into guest memory (vm-memory accesses it through volatile
    // copies), so no live reference observes the change.
    let mapped = unsafe {
        libc::mmap(
            host.cast(),
            length,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_FIXED,
            file.as_raw_fd(),
            file_offset,
        )
    };
    if mapped == libc::MAP_FAILED || mapped != host.cast() {
        return Err(bad(&std::io::Error::last_os_error().to_string()));
    }
    Ok(())
}
