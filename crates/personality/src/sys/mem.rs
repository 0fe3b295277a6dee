//! Memory calls: `brk`, `mmap` and friends, over [`crate::mm`].

use super::SysResult;
use crate::errno::{Errno, EBADF, EINVAL, ENODEV, ENOMEM};
use crate::fd::Object;
use crate::kernel::kernel;
use crate::mm::{page_up, PAGE};
use crate::vfs::Kind;

const MAP_SHARED: u64 = 0x01;
const MAP_PRIVATE: u64 = 0x02;
const MAP_FIXED: u64 = 0x10;
const MAP_ANONYMOUS: u64 = 0x20;
const MAP_FIXED_NOREPLACE: u64 = 0x100000;
const MREMAP_MAYMOVE: u64 = 1;
const MREMAP_FIXED: u64 = 2;

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
    if len == 0 || !offset.is_multiple_of(PAGE) || flags & (MAP_SHARED | MAP_PRIVATE) == 0 {
        return Err(EINVAL);
    }
    let len = page_up(len).ok_or(ENOMEM)?;
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
    let k = kernel();
    let name = if flags & MAP_ANONYMOUS == 0 {
        "[file]"
    } else {
        ""
    };
    let start = if flags & (MAP_FIXED | MAP_FIXED_NOREPLACE) != 0 {
        if !addr.is_multiple_of(PAGE) {
            return Err(EINVAL);
        }
        k.mm.map_fixed(
            addr..addr.checked_add(len).ok_or(ENOMEM)?,
            prot as u32,
            name,
            true,
        )?;
        addr
    } else {
        k.mm.map_anywhere(len, prot as u32, name, true)?
    };
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
    if !addr.is_multiple_of(PAGE) || len == 0 {
        return Err(EINVAL);
    }
    let end = addr
        .checked_add(page_up(len).ok_or(EINVAL)?)
        .ok_or(EINVAL)?;
    kernel().mm.unmap(addr..end);
    Ok(0)
}

/// `mprotect`: recorded (see [`crate::mm`]).
pub fn mprotect(addr: u64, len: u64, prot: u64) -> SysResult {
    let end = addr
        .checked_add(page_up(len).ok_or(EINVAL)?)
        .ok_or(EINVAL)?;
    kernel().mm.protect(addr..end, prot as u32)?;
    Ok(0)
}

/// `mremap`: in place when it shrinks, else to new memory with the old bytes.
pub fn mremap(old: u64, old_len: u64, new_len: u64, flags: u64, new_addr: u64) -> SysResult {
    if !old.is_multiple_of(PAGE) || new_len == 0 {
        return Err(EINVAL);
    }
    let old_len = page_up(old_len).ok_or(EINVAL)?;
    let new_len = page_up(new_len).ok_or(ENOMEM)?;
    let k = kernel();
    if new_len <= old_len && flags & MREMAP_FIXED == 0 {
        k.mm.unmap(old + new_len..old + old_len);
        return Ok(old);
    }
    if flags & MREMAP_MAYMOVE == 0 {
        return Err(ENOMEM);
    }
    let target = if flags & MREMAP_FIXED != 0 {
        k.mm.map_fixed(
            new_addr..new_addr.checked_add(new_len).ok_or(ENOMEM)?,
            3,
            "",
            true,
        )?;
        new_addr
    } else {
        k.mm.map_anywhere(new_len, 3, "", true)?
    };
    if !k.mm.contains(old, old_len) {
        return Err(Errno(EBADF.0));
    }
    // SAFETY: both ranges lie in the program's area; the new one was just
    // mapped apart from the old.
    unsafe {
        core::ptr::copy_nonoverlapping(
            old as *const u8,
            target as *mut u8,
            old_len.min(new_len) as usize,
        );
    }
    k.mm.unmap(old..old + old_len);
    Ok(target)
}
