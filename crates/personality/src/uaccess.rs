//! Reading and writing the program's memory on its behalf.
//!
//! The program shares the guest's address space with the personality, so its
//! pointers can be followed directly; every one is first checked to lie in the
//! program's memory, and a pointer outside it is EFAULT, as in Linux.

use alloc::string::String;

use crate::errno::{Errno, EFAULT, ENAMETOOLONG};
use crate::kernel::kernel;
use crate::vfs::PATH_MAX;

fn check(addr: u64, len: u64) -> Result<(), Errno> {
    if len == 0 || kernel().mm.contains(addr, len) {
        Ok(())
    } else {
        Err(EFAULT)
    }
}

/// `len` bytes of the program's memory at `addr`.
pub fn bytes(addr: u64, len: u64) -> Result<&'static [u8], Errno> {
    check(addr, len)?;
    if len == 0 {
        return Ok(&[]);
    }
    // SAFETY: the range lies in the program's memory (checked), which stays
    // mapped for the whole run; the program runs no code while its call is
    // handled, so nothing changes the bytes under the slice.
    Ok(unsafe { core::slice::from_raw_parts(addr as *const u8, len as usize) })
}

/// `len` bytes of the program's memory at `addr`, to fill.
pub fn bytes_mut(addr: u64, len: u64) -> Result<&'static mut [u8], Errno> {
    check(addr, len)?;
    if len == 0 {
        return Ok(&mut []);
    }
    // SAFETY: as for `bytes`; the personality holds no other reference into the
    // program's memory while a handler fills it.
    Ok(unsafe { core::slice::from_raw_parts_mut(addr as *mut u8, len as usize) })
}

/// Reads a plain value at `addr`.
pub fn read<T: Copy>(addr: u64) -> Result<T, Errno> {
    check(addr, core::mem::size_of::<T>() as u64)?;
    // SAFETY: checked to lie in program memory; read unaligned, any bit pattern
    // of the plain types used here is valid.
    Ok(unsafe { core::ptr::read_unaligned(addr as *const T) })
}

/// Writes a plain value at `addr`.
pub fn write<T: Copy>(addr: u64, value: T) -> Result<(), Errno> {
    check(addr, core::mem::size_of::<T>() as u64)?;
    // SAFETY: checked to lie in program memory.
    unsafe { core::ptr::write_unaligned(addr as *mut T, value) };
    Ok(())
}

/// Copies `data` to the program at `addr`.
pub fn copy_out(addr: u64, data: &[u8]) -> Result<(), Errno> {
    bytes_mut(addr, data.len() as u64)?.copy_from_slice(data);
    Ok(())
}

/// A NUL-terminated string at `addr` of at most `max` bytes.
pub fn cstr_bytes(addr: u64, max: usize) -> Result<&'static [u8], Errno> {
    if addr == 0 {
        return Err(EFAULT);
    }
    let mm = &kernel().mm;
    let area = mm.area();
    if addr < area.start || addr >= area.end {
        return Err(EFAULT);
    }
    let available = usize::try_from(area.end - addr)
        .unwrap_or(usize::MAX)
        .min(max + 1);
    // SAFETY: `addr..addr+available` lies in program memory (checked above).
    let window = unsafe { core::slice::from_raw_parts(addr as *const u8, available) };
    match window.iter().position(|&b| b == 0) {
        Some(len) => Ok(&window[..len]),
        None if available > max => Err(ENAMETOOLONG),
        None => Err(EFAULT),
    }
}

/// A path argument.
pub fn path(addr: u64) -> Result<String, Errno> {
    Ok(String::from_utf8_lossy(cstr_bytes(addr, PATH_MAX)?).into_owned())
}
