//! Reading and answering hypercalls without trusting anything the guest wrote.
//!
//! Every argument struct and every buffer it points to is checked against the end of
//! guest memory (with overflow-checked arithmetic) before a byte is read; lengths
//! are capped by [`lightvm_abi::limits`]. A failed check is an [`AbiViolation`],
//! which stops that VM with a message naming the call — never a VMM panic.

use std::fmt;

use lightvm_abi::Hypercall;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};
use zerocopy::{FromBytes, Immutable, IntoBytes};

/// A guest broke the hypercall contract.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AbiViolation(pub String);

impl fmt::Display for AbiViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn violation(call: Hypercall, detail: impl fmt::Display) -> AbiViolation {
    AbiViolation(format!("{}: {detail}", call.name()))
}

/// Checks that `[addr, addr + len)` lies inside guest memory.
pub fn check_range(
    memory: &GuestMemoryMmap,
    call: Hypercall,
    what: &str,
    addr: u64,
    len: u64,
) -> Result<(), AbiViolation> {
    let end = addr.checked_add(len);
    let limit = memory.last_addr().0 + 1;
    match end {
        Some(end) if end <= limit => Ok(()),
        _ => Err(violation(
            call,
            format!("{what} {addr:#x}+{len:#x} lies outside the {limit:#x} bytes of guest memory"),
        )),
    }
}

/// Reads a call's argument struct from the guest address the guest passed in `eax`.
pub fn read_args<T: FromBytes + IntoBytes + Immutable>(
    memory: &GuestMemoryMmap,
    call: Hypercall,
    addr: u64,
) -> Result<T, AbiViolation> {
    let size = std::mem::size_of::<T>() as u64;
    check_range(memory, call, "argument struct", addr, size)?;
    let mut value = T::new_zeroed();
    memory
        .read_slice(value.as_mut_bytes(), GuestAddress(addr))
        .map_err(|e| violation(call, format!("reading arguments at {addr:#x}: {e}")))?;
    Ok(value)
}

/// Writes a call's results back into its argument struct.
pub fn write_args<T: IntoBytes + Immutable>(
    memory: &GuestMemoryMmap,
    call: Hypercall,
    addr: u64,
    value: &T,
) -> Result<(), AbiViolation> {
    let bytes = value.as_bytes();
    check_range(memory, call, "argument struct", addr, bytes.len() as u64)?;
    memory
        .write_slice(bytes, GuestAddress(addr))
        .map_err(|e| violation(call, format!("writing results at {addr:#x}: {e}")))
}

/// Copies a guest buffer into `buf` (reused across calls), refusing lengths above
/// `max` unless `truncate` is set, in which case the buffer is cut to `max`.
pub fn read_buffer(
    memory: &GuestMemoryMmap,
    call: Hypercall,
    addr: u64,
    len: u64,
    max: u64,
    truncate: bool,
    buf: &mut Vec<u8>,
) -> Result<(), AbiViolation> {
    let len = if len > max {
        if !truncate {
            return Err(violation(
                call,
                format!("length {len} exceeds the limit of {max} bytes"),
            ));
        }
        max
    } else {
        len
    };
    check_range(memory, call, "buffer", addr, len)?;
    buf.clear();
    buf.resize(len as usize, 0);
    memory
        .read_slice(buf, GuestAddress(addr))
        .map_err(|e| violation(call, format!("reading buffer at {addr:#x}: {e}")))
}

/// Decodes the `eax` of an `out` to a hypercall port: the argument's guest address.
/// Only 32-bit writes are hypercalls; `out dx, al` to a hypercall port is a mistake.
pub fn argument_address(call: Hypercall, data: &[u8]) -> Result<u64, AbiViolation> {
    let bytes: [u8; 4] = data.try_into().map_err(|_| {
        violation(
            call,
            format!(
                "made with a {}-byte out; hypercalls use a 4-byte out of the argument address",
                data.len()
            ),
        )
    })?;
    Ok(u64::from(u32::from_le_bytes(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use lightvm_abi::{ConsoleWriteArgs, PollArgs};

    fn memory() -> GuestMemoryMmap {
        GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 2 << 20)]).unwrap()
    }

    #[test]
    fn args_round_trip_inside_memory() {
        let memory = memory();
        let args = PollArgs {
            timeout_ns: 5,
            ready: 0,
        };
        write_args(&memory, Hypercall::Poll, 0x1000, &args).unwrap();
        let back: PollArgs = read_args(&memory, Hypercall::Poll, 0x1000).unwrap();
        assert_eq!(back.timeout_ns, 5);
    }

    #[test]
    fn args_straddling_the_end_of_memory_are_refused() {
        let memory = memory();
        let end = 2 << 20;
        for addr in [end - 8, end, u64::MAX - 4, u64::MAX] {
            let err =
                read_args::<ConsoleWriteArgs>(&memory, Hypercall::ConsoleWrite, addr).unwrap_err();
            assert!(err.0.starts_with("console_write: argument struct"), "{err}");
        }
    }

    #[test]
    fn buffers_are_bounds_checked_with_overflow() {
        let memory = memory();
        let mut buf = Vec::new();
        let call = Hypercall::ConsoleWrite;
        assert!(read_buffer(&memory, call, 0x1000, 16, 64, false, &mut buf).is_ok());
        assert_eq!(buf.len(), 16);
        assert!(read_buffer(&memory, call, u64::MAX - 1, 16, 64, false, &mut buf).is_err());
        assert!(read_buffer(&memory, call, 0xdead_0000_0000, 1, 64, false, &mut buf).is_err());
        assert!(read_buffer(&memory, call, (2 << 20) - 8, 16, 64, false, &mut buf).is_err());
    }

    #[test]
    fn oversized_lengths_are_refused_or_truncated() {
        let memory = memory();
        let mut buf = Vec::new();
        let err = read_buffer(
            &memory,
            Hypercall::ConsoleWrite,
            0,
            u64::MAX,
            64,
            false,
            &mut buf,
        );
        assert!(err.unwrap_err().0.contains("exceeds the limit"));
        read_buffer(&memory, Hypercall::Exit, 0, 1 << 20, 64, true, &mut buf).unwrap();
        assert_eq!(buf.len(), 64);
    }

    #[test]
    fn only_four_byte_outs_carry_an_address() {
        assert_eq!(
            argument_address(Hypercall::Exit, &0x2000u32.to_le_bytes()),
            Ok(0x2000)
        );
        assert!(argument_address(Hypercall::Exit, &[1]).is_err());
        assert!(argument_address(Hypercall::Exit, &[1, 2]).is_err());
    }
}
