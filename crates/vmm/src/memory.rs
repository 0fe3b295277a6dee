//! Writing the monitor's own data into guest memory, on every platform: the boot
//! state it builds and the image it loads.

use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

use crate::error::VmmError;

/// Writes VMM-built data (tables, boot info, image bytes) into guest memory.
pub fn write(memory: &GuestMemoryMmap, addr: u64, bytes: &[u8]) -> Result<(), VmmError> {
    memory
        .write_slice(bytes, GuestAddress(addr))
        .map_err(|e| VmmError::Memory(format!("writing {} bytes at {addr:#x}: {e}", bytes.len())))
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
) -> Result<(), VmmError> {
    use std::os::fd::AsRawFd;

    let bad = |what: &str| {
        VmmError::Memory(format!(
            "mapping {len} bytes of the image at {guest_addr:#x}: {what}"
        ))
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
