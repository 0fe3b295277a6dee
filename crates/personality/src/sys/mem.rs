//! Memory calls: `brk`, `mmap` and friends, over [`crate::mm`].

use super::SysResult;
use crate::errno::{EINVAL, ENODEV, ENOMEM};
use crate::fd::Object;
use crate::kernel::kernel;
use crate::mm::{mmap_len, page_up, Remap, MAP_ANONYMOUS, PAGE};
use crate::vfs::Kind;

/// `madvise`: `MADV_DONTNEED` and `MADV_REMOVE` zero anonymous memory, as the
/// next touch of such pages on Linux finds them (allocators such as jemalloc
/// check it); the other advice changes nothing here and is accepted.
pub fn madvise(addr: u64, len: u64, advice: u64) -> SysResult {
    const MADV_DONTNEED: u64 = 4;
    const MADV_REMOVE: u64 = 9;
    const MADV_HWPOISON: u64 = 100;
    if !addr.is_multiple_of(PAGE) {
        return Err(EINVAL);
    }
    let len = page_up(len).ok_or(EINVAL)?;
    let end = addr.checked_add(len).ok_or(EINVAL)?;
    match advice {
        MADV_DONTNEED | MADV_REMOVE => {
            let k = kernel();
            if len != 0 && !k.mm.contains(addr, len) {
                return Err(ENOMEM);
            }
            for (start, region) in k.mm.regions() {
                let from = start.max(addr);
                let to = region.end.min(end);
                if from >= to || region.name == "[file]" {
                    continue;
                }
                // SAFETY: `from..to` lies in a mapping of the program's (checked
                // above), memory the guest maps writable whatever the program's
                // recorded protection; no reference into it is held.
                unsafe { core::ptr::write_bytes(from as *mut u8, 0, (to - from) as usize) };
            }
            Ok(0)
        }
        0..=25 | MADV_HWPOISON => Ok(0),
        _ => Err(EINVAL),
    }
}

/// `brk`.
pub fn brk(to: u64) -> SysResult {
    Ok(kernel().mm.brk(to))
}

/// `mmap`: anonymous memory, or a copy of a file's bytes.
pub fn mmap(addr: u64, len: u64, prot: u64, flags: u64, fd: u64, offset: u64) -> SysResult {
    let len = mmap_len(len, flags, offset)?;
    // The file's bytes, when it is a file mapping.
    let source: Option<&[u8]> = if flags & MAP_ANONYMOUS == 0 {
        let k = kernel();
        let file = k.fds.get(fd)?;
        let open = file.borrow();
        match &open.object {
            Object::Node { ino, .. } => match k.vfs.node(*ino).map(|n| &n.kind) {
                // SAFETY (lifetime): the node's data lives as long as the VM's file
                // system, and is only read below, before any other call runs.
                Some(Kind::File(data)) => {
                    let data: &[u8] = data;
                    Some(unsafe { core::slice::from_raw_parts(data.as_ptr(), data.len()) })
                }
                Some(Kind::Device(crate::vfs::Device::Zero)) => None,
                _ => return Err(ENODEV),
            },
            Object::Device(_) => None,
            Object::Other(..) => return Err(ENODEV),
        }
    } else {
        None
    };
    let name = if flags & MAP_ANONYMOUS == 0 {
        "[file]"
    } else {
        ""
    };
    let start = kernel().mm.mmap(addr, len, prot, flags, name)?;
    if let Some(data) = source {
        let from = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(data.len());
        let count = (data.len() - from).min(len as usize);
        // SAFETY: `start..start+len` was just mapped for the program in its area.
        unsafe {
            core::ptr::copy_nonoverlapping(data.as_ptr().add(from), start as *mut u8, count);
        }
    }
    Ok(start)
}

/// `munmap`.
pub fn munmap(addr: u64, len: u64) -> SysResult {
    kernel().mm.munmap(addr, len)
}

/// `mprotect`: recorded (see [`crate::mm`]).
pub fn mprotect(addr: u64, len: u64, prot: u64) -> SysResult {
    kernel().mm.mprotect(addr, len, prot)
}

/// `mremap`: in place when it shrinks, else to new memory with the old bytes.
pub fn mremap(old: u64, old_len: u64, new_len: u64, flags: u64, new_addr: u64) -> SysResult {
    let k = kernel();
    match k.mm.mremap(old, old_len, new_len, flags, new_addr)? {
        Remap::InPlace(at) => Ok(at),
        Remap::Moved {
            from,
            to,
            copy,
            old,
        } => {
            // SAFETY: both ranges lie in the program's area, apart (the memory
            // manager checked both).
            unsafe {
                core::ptr::copy_nonoverlapping(from as *const u8, to as *mut u8, copy as usize);
            }
            k.mm.unmap(old);
            Ok(to)
        }
    }
}
