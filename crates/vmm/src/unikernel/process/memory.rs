//! Guest memory of the process platform: mapped in the monitor's own address space,
//! at the guest's own addresses, so that the unchanged image runs where it was
//! linked and every pointer it passes means the same to it and to the monitor.
//!
//! One anonymous mapping covers `BOOT_INFO_ADDR..mem_size` (everything a guest
//! sees; the monitor's kvm pages below it have no counterpart here, which is what
//! keeps the mapping above Debian's `vm.mmap_min_addr`). It is made with
//! `MAP_FIXED_NOREPLACE`, so a clash with something already mapped there is an error,
//! never a silent overwrite. vm-memory's `GuestMemoryMmap` is laid over it for the
//! code shared with the kvm platform, and `mprotect` gives each part the access the
//! kvm platform's page tables would: the boot info read-only, the guard page none,
//! each segment its ELF permissions, stack and heap read-write, nothing executable
//! but text.

use std::ops::Range;

use lightvm_abi::layout;
use vm_memory::{GuestAddress, GuestMemoryMmap, GuestRegionMmap, MmapRegion};

use crate::loader::{SegmentAccess, UnikernelImage};
use crate::unikernel::boot::GuestLayout;
use crate::unikernel::error::UnikernelError;

/// The mapping, owned: unmapped on drop.
pub struct FixedMapping {
    start: u64,
    len: usize,
}

impl Drop for FixedMapping {
    fn drop(&mut self) {
        // SAFETY: `start..start+len` is the mapping `map_guest` made and this value
        // alone owns; every `GuestMemoryMmap` over it is dropped first (the VM's
        // field order), and the guest no longer runs.
        unsafe { libc::munmap(self.start as *mut libc::c_void, self.len) };
    }
}

/// Guest memory of `mem_size` bytes at its guest addresses.
pub struct ProcessMemory {
    /// The view the shared code uses; it does not own the pages.
    pub memory: GuestMemoryMmap,
    /// The pages themselves (declared after `memory`: dropped after it).
    pub mapping: FixedMapping,
}

fn host_error(op: &'static str) -> UnikernelError {
    UnikernelError::Host {
        op,
        source: std::io::Error::last_os_error(),
    }
}

/// Maps guest memory of `mem_size` bytes (a size `VmConfig` accepted).
pub fn map_guest(mem_size: u64) -> Result<ProcessMemory, UnikernelError> {
    let start = layout::BOOT_INFO_ADDR;
    let len =
        usize::try_from(mem_size - start).map_err(|_| UnikernelError::Internal("memory size"))?;
    // SAFETY: a new anonymous mapping at a fixed address that MAP_FIXED_NOREPLACE
    // refuses to place over anything already mapped; it touches no existing memory.
    let host = unsafe {
        libc::mmap(
            start as *mut libc::c_void,
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE
                | libc::MAP_ANONYMOUS
                | libc::MAP_NORESERVE
                | libc::MAP_FIXED_NOREPLACE,
            -1,
            0,
        )
    };
    if host == libc::MAP_FAILED {
        let error = std::io::Error::last_os_error();
        return Err(UnikernelError::Memory(format!(
            "cannot map guest memory at {start:#x}..{mem_size:#x} in this process: {error}{}",
            match error.raw_os_error() {
                Some(libc::EPERM) | Some(libc::EACCES) =>
                    " (is vm.mmap_min_addr above that address?)",
                Some(libc::EEXIST) => " (something else is mapped there)",
                _ => "",
            }
        )));
    }
    let mapping = FixedMapping { start, len };
    // Kernels before 4.17 ignore MAP_FIXED_NOREPLACE and may place it elsewhere.
    if host as u64 != start {
        return Err(UnikernelError::Memory(format!(
            "guest memory landed at {:#x} instead of {start:#x}",
            host as u64
        )));
    }
    // SAFETY: `host..host+len` is the live mapping just made, readable and writable
    // with exactly these flags, and `ProcessMemory` keeps it alive (and unmaps it)
    // after the region that does not own it.
    let region = unsafe {
        MmapRegion::build_raw(
            host.cast(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
        )
    }
    .map_err(|e| UnikernelError::Memory(e.to_string()))?;
    let region = GuestRegionMmap::new(region, GuestAddress(start))
        .ok_or(UnikernelError::Internal("guest region overflows"))?;
    let memory = GuestMemoryMmap::from_regions(vec![region])
        .map_err(|e| UnikernelError::Memory(e.to_string()))?;
    Ok(ProcessMemory { memory, mapping })
}

/// Access to a range of guest pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No access (the stack guard, gaps in the image).
    None,
    /// Read only (boot info, rodata).
    Read,
    /// Read and write, never execute (data, bss, stack, heap).
    ReadWrite,
    /// Read and execute (text).
    ReadExecute,
    /// Everything: the heap of a VM for Linux programs, where their code is loaded.
    All,
}

impl Access {
    fn prot(self) -> libc::c_int {
        match self {
            Access::None => libc::PROT_NONE,
            Access::Read => libc::PROT_READ,
            Access::ReadWrite => libc::PROT_READ | libc::PROT_WRITE,
            Access::ReadExecute => libc::PROT_READ | libc::PROT_EXEC,
            Access::All => libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC,
        }
    }

    fn of(segment: SegmentAccess) -> Self {
        match (segment.write, segment.exec) {
            (true, _) => Access::ReadWrite,
            (false, true) => Access::ReadExecute,
            (false, false) => Access::Read,
        }
    }
}

/// Sets the access of the guest pages in `range` (page-aligned, inside guest
/// memory: the callers pass layout constants and validated segments).
pub fn protect(range: Range<u64>, access: Access) -> Result<(), UnikernelError> {
    if range.is_empty() {
        return Ok(());
    }
    let len =
        usize::try_from(range.end - range.start).map_err(|_| UnikernelError::Internal("range"))?;
    // SAFETY: the range lies inside the guest mapping, which holds only guest pages
    // that no Rust reference points into; changing their protection cannot
    // invalidate any monitor data.
    let rc = unsafe { libc::mprotect(range.start as *mut libc::c_void, len, access.prot()) };
    if rc != 0 {
        return Err(host_error("protecting guest memory"));
    }
    Ok(())
}

/// Gives a loaded image the access the kvm platform's page tables give it: boot
/// info read-only, no guard page, each segment its permissions, the stack
/// read-write, the heap read-write (and executable in a VM for Linux programs),
/// and the module read-only.
pub fn protect_image(image: &UnikernelImage, plan: &GuestLayout) -> Result<(), UnikernelError> {
    let heap_start = plan.heap.start;
    let page = layout::PAGE_SIZE;
    protect(
        layout::BOOT_INFO_ADDR..layout::BOOT_INFO_ADDR + page,
        Access::Read,
    )?;
    protect(
        layout::STACK_BOTTOM - page..layout::STACK_BOTTOM,
        Access::None,
    )?;
    // Gaps between segments stay inaccessible, as they are unmapped on kvm.
    protect(layout::IMAGE_MIN_ADDR..heap_start, Access::None)?;
    for segment in image.segments() {
        let start = segment.guest_addr - segment.guest_addr % page;
        let end = segment.guest_end().next_multiple_of(page);
        protect(start..end, Access::of(segment.access))?;
    }
    if plan.executable_heap {
        protect(plan.heap.clone(), Access::All)?;
    }
    if let Some(module) = &plan.module {
        protect(module.clone(), Access::Read)?;
    }
    Ok(())
}

/// Touches the pages every guest uses first (boot info, the top of the stack), so
/// that their first-use faults are paid while a shell is prepared.
pub fn pre_touch(memory: &ProcessMemory) -> Result<(), UnikernelError> {
    const STACK_PAGES: u64 = 4;
    let page = layout::PAGE_SIZE;
    let pages = std::iter::once(layout::BOOT_INFO_ADDR)
        .chain((1..=STACK_PAGES).map(|i| layout::STACK_TOP - i * page));
    for addr in pages {
        crate::memory::write(&memory.memory, addr, &[0])?;
    }
    Ok(())
}

/// The syscall sled of a VM for Linux programs ([`layout::SYSCALL_SLED_ADDR`]):
/// one shared page mapped at address 0 for the guest, read and execute, and
/// elsewhere for the monitor to fill, read and write. Address 0 needs privilege
/// (`CAP_SYS_RAWIO`, or `vm.mmap_min_addr` = 0), so it is made when a shell is
/// created, before any sandbox; where it cannot be, the guest has no sled and its
/// rewritable sites are only the common `mov $nr, %eax; syscall` ones.
pub struct SyscallSled {
    alias: *mut u8,
}

// SAFETY: the mappings belong to the one VM that owns this value; the alias is
// written only by that VM's core.
unsafe impl Send for SyscallSled {}

impl SyscallSled {
    /// Maps the sled, or `None` where this process may not map address 0.
    pub fn map() -> Option<Self> {
        let len = layout::SYSCALL_SLED_BYTES as usize;
        // SAFETY: memfd_create takes a NUL-terminated name and returns a new fd.
        let fd = unsafe { libc::memfd_create(c"lightvm-sled".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return None;
        }
        // SAFETY: `fd` is the memfd just made; it is closed below on every path,
        // and the mappings keep the memory.
        unsafe {
            let sized = libc::ftruncate(fd, len as libc::off_t) == 0;
            let guest = if sized {
                libc::mmap(
                    layout::SYSCALL_SLED_ADDR as *mut libc::c_void,
                    len,
                    libc::PROT_READ | libc::PROT_EXEC,
                    libc::MAP_SHARED | libc::MAP_FIXED_NOREPLACE,
                    fd,
                    0,
                )
            } else {
                libc::MAP_FAILED
            };
            let at_zero = guest != libc::MAP_FAILED && guest as u64 == layout::SYSCALL_SLED_ADDR;
            if guest != libc::MAP_FAILED && !at_zero {
                libc::munmap(guest, len);
            }
            let alias = if at_zero {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED,
                    fd,
                    0,
                )
            } else {
                libc::MAP_FAILED
            };
            if at_zero && alias == libc::MAP_FAILED {
                libc::munmap(layout::SYSCALL_SLED_ADDR as *mut libc::c_void, len);
            }
            libc::close(fd);
            (alias != libc::MAP_FAILED).then(|| Self {
                alias: alias.cast(),
            })
        }
    }

    /// The monitor's writable view of the page.
    pub fn alias(&self) -> *mut u8 {
        self.alias
    }
}

impl Drop for SyscallSled {
    fn drop(&mut self) {
        let len = layout::SYSCALL_SLED_BYTES as usize;
        // SAFETY: both mappings were made by `map` and are owned by this value
        // alone; the guest no longer runs, and the core that wrote the alias is
        // dropped first (the VM's field order).
        unsafe {
            libc::munmap(self.alias.cast(), len);
            libc::munmap(layout::SYSCALL_SLED_ADDR as *mut libc::c_void, len);
        }
    }
}
