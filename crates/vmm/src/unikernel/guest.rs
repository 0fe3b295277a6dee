//! Guest memory as the monitor touches it on the guest's behalf, without trusting
//! anything the guest wrote.
//!
//! Every address a guest hands the monitor — an argument struct, a console buffer, a
//! ring, a frame or disk buffer — is checked before a byte moves, with
//! overflow-checked arithmetic, against the memory the guest *owns*: from
//! [`layout::GUEST_OWNED_START`] (its stack) to the end of guest memory. Below that
//! lie the monitor's own pages (the GDT, the gate stub and the page tables on kvm,
//! the boot info on both), which a guest must never get the monitor to write. Writes
//! are also refused in the image's read-only segments: on kvm the host could write
//! them, but the process platform maps them read-only, and both platforms answer a
//! guest the same way. A failed check is an [`AbiViolation`], which stops that guest
//! with a message naming the call — never a monitor fault or panic.

use std::fmt;
use std::ops::Range;

use lightvm_abi::{layout, Hypercall};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};
use zerocopy::{FromBytes, Immutable, IntoBytes};

/// A guest broke the hypercall contract; the text names the call and the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AbiViolation(pub String);

impl fmt::Display for AbiViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `call: detail`, the form of every hypercall's violation.
pub fn violation(call: Hypercall, detail: impl fmt::Display) -> AbiViolation {
    AbiViolation(format!("{}: {detail}", call.name()))
}

/// The addresses that are the guest's: where the monitor reads and writes for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ownership {
    end: u64,
    read_only: Vec<Range<u64>>,
}

impl Ownership {
    /// Guest memory of `mem_size` bytes whose image has the read-only ranges
    /// `read_only` (page-rounded segment ranges).
    pub fn new(mem_size: u64, read_only: Vec<Range<u64>>) -> Self {
        Self {
            end: mem_size,
            read_only,
        }
    }

    /// The owned range, `GUEST_OWNED_START..mem_size`.
    pub fn range(&self) -> Range<u64> {
        layout::GUEST_OWNED_START..self.end
    }

    fn check(&self, what: &dyn Fn() -> String, addr: u64, len: u64) -> Result<(), AbiViolation> {
        match addr.checked_add(len) {
            Some(end) if addr >= layout::GUEST_OWNED_START && end <= self.end => Ok(()),
            _ => Err(AbiViolation(format!(
                "{}: {addr:#x}+{len:#x} lies outside the guest's memory ({:#x}..{:#x})",
                what(),
                layout::GUEST_OWNED_START,
                self.end
            ))),
        }
    }

    fn check_writable(
        &self,
        what: &dyn Fn() -> String,
        addr: u64,
        len: u64,
    ) -> Result<(), AbiViolation> {
        self.check(what, addr, len)?;
        let end = addr + len;
        match self
            .read_only
            .iter()
            .find(|ro| len > 0 && addr < ro.end && ro.start < end)
        {
            Some(ro) => Err(AbiViolation(format!(
                "{}: {addr:#x}+{len:#x} lies in the image's read-only segment {:#x}..{:#x}",
                what(),
                ro.start,
                ro.end
            ))),
            None => Ok(()),
        }
    }
}

/// Checked access to guest memory for one hypercall.
pub struct Guest<'a> {
    memory: &'a GuestMemoryMmap,
    owned: &'a Ownership,
}

impl<'a> Guest<'a> {
    /// A view of `memory`, whose guest-owned part `owned` describes.
    pub fn new(memory: &'a GuestMemoryMmap, owned: &'a Ownership) -> Self {
        Self { memory, owned }
    }

    /// Checks that the guest may have the monitor read `addr..addr+len`.
    pub fn check(
        &self,
        what: &dyn Fn() -> String,
        addr: u64,
        len: u64,
    ) -> Result<(), AbiViolation> {
        self.owned.check(what, addr, len)
    }

    /// Checks that the guest may have the monitor write `addr..addr+len`.
    pub fn check_writable(
        &self,
        what: &dyn Fn() -> String,
        addr: u64,
        len: u64,
    ) -> Result<(), AbiViolation> {
        self.owned.check_writable(what, addr, len)
    }

    /// The host address of guest byte `addr`, which a check accepted with the length
    /// about to be used.
    pub fn host_ptr(&self, addr: u64) -> Result<*mut u8, AbiViolation> {
        self.memory
            .get_host_address(GuestAddress(addr))
            .map_err(|e| AbiViolation(format!("guest address {addr:#x}: {e}")))
    }

    /// Reads a plain struct at `addr`, after checking it lies in guest-owned memory.
    pub fn read<T: FromBytes + IntoBytes>(
        &self,
        what: &dyn Fn() -> String,
        addr: u64,
    ) -> Result<T, AbiViolation> {
        let mut value = T::new_zeroed();
        self.check(what, addr, std::mem::size_of::<T>() as u64)?;
        self.memory
            .read_slice(value.as_mut_bytes(), GuestAddress(addr))
            .map_err(|e| AbiViolation(format!("{}: reading {addr:#x}: {e}", what())))?;
        Ok(value)
    }

    /// Writes a plain struct at `addr`, after checking the guest may write there.
    pub fn write<T: IntoBytes + Immutable>(
        &self,
        what: &dyn Fn() -> String,
        addr: u64,
        value: &T,
    ) -> Result<(), AbiViolation> {
        let bytes = value.as_bytes();
        self.check_writable(what, addr, bytes.len() as u64)?;
        self.memory
            .write_slice(bytes, GuestAddress(addr))
            .map_err(|e| AbiViolation(format!("{}: writing {addr:#x}: {e}", what())))
    }

    /// Reads a call's argument struct from the address the guest passed.
    pub fn read_args<T: FromBytes + IntoBytes>(
        &self,
        call: Hypercall,
        addr: u64,
    ) -> Result<T, AbiViolation> {
        self.read(&|| format!("{}: argument struct", call.name()), addr)
    }

    /// Reads the argument struct of a call that writes results into it: checked to
    /// be writable before the call does anything, so a call whose results could not
    /// be delivered never runs (or waits) first.
    pub fn read_inout<T: FromBytes + IntoBytes>(
        &self,
        call: Hypercall,
        addr: u64,
    ) -> Result<T, AbiViolation> {
        let what = || format!("{}: argument struct", call.name());
        self.check_writable(&what, addr, std::mem::size_of::<T>() as u64)?;
        self.read(&what, addr)
    }

    /// Writes a call's results back into its argument struct.
    pub fn write_args<T: IntoBytes + Immutable>(
        &self,
        call: Hypercall,
        addr: u64,
        value: &T,
    ) -> Result<(), AbiViolation> {
        self.write(&|| format!("{}: argument struct", call.name()), addr, value)
    }

    /// Copies a guest buffer into `buf` (reused across calls), refusing lengths above
    /// `max` unless `truncate` is set, in which case the buffer is cut to `max`.
    pub fn read_buffer(
        &self,
        call: Hypercall,
        (addr, len): (u64, u64),
        max: u64,
        truncate: bool,
        buf: &mut Vec<u8>,
    ) -> Result<(), AbiViolation> {
        let len = match len {
            len if len <= max => len,
            _ if truncate => max,
            len => {
                return Err(violation(
                    call,
                    format!("length {len} exceeds the limit of {max} bytes"),
                ))
            }
        };
        self.check(&|| format!("{}: buffer", call.name()), addr, len)?;
        // `max` is a limit of the ABI (at most a few MiB): it fits any usize.
        buf.clear();
        buf.resize(len as usize, 0);
        self.memory
            .read_slice(buf, GuestAddress(addr))
            .map_err(|e| violation(call, format!("reading buffer at {addr:#x}: {e}")))
    }
}

/// Page-rounded guest ranges of the image's segments that the guest may not write.
pub fn read_only_ranges(image: &crate::loader::UnikernelImage) -> Vec<Range<u64>> {
    image
        .segments()
        .iter()
        .filter(|segment| !segment.access.write)
        .map(|segment| {
            let start = segment.guest_addr - segment.guest_addr % layout::PAGE_SIZE;
            start..segment.guest_end().next_multiple_of(layout::PAGE_SIZE)
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use lightvm_abi::{ConsoleWriteArgs, PollArgs};

    pub(crate) const MEM: u64 = 2 << 20;
    /// A read-only page in the test image, as a text segment would be.
    pub(crate) const TEXT: u64 = 0x10_0000;

    pub(crate) fn memory() -> GuestMemoryMmap {
        GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM as usize)]).unwrap()
    }

    pub(crate) fn ownership() -> Ownership {
        let text = TEXT..TEXT + layout::PAGE_SIZE;
        Ownership::new(MEM, [text].to_vec())
    }

    const ARGS: u64 = 0x10_2000;

    #[test]
    fn args_round_trip_inside_guest_memory() {
        let (memory, owned) = (memory(), ownership());
        let guest = Guest::new(&memory, &owned);
        let args = PollArgs {
            timeout_ns: 5,
            ready: 0,
        };
        guest.write_args(Hypercall::Poll, ARGS, &args).unwrap();
        let back: PollArgs = guest.read_args(Hypercall::Poll, ARGS).unwrap();
        assert_eq!(back.timeout_ns, 5);
    }

    #[test]
    fn args_straddling_the_end_of_memory_are_refused() {
        let (memory, owned) = (memory(), ownership());
        let guest = Guest::new(&memory, &owned);
        for addr in [MEM - 8, MEM, u64::MAX - 4, u64::MAX] {
            let err = guest
                .read_args::<ConsoleWriteArgs>(Hypercall::ConsoleWrite, addr)
                .unwrap_err();
            assert!(err.0.starts_with("console_write: argument struct"), "{err}");
        }
    }

    /// The monitor's own pages below the guest's: the GDT, the kvm gate stub, the
    /// page tables and the boot info. A guest must not get them read or written.
    #[test]
    fn the_monitors_pages_are_not_the_guests() {
        let (memory, owned) = (memory(), ownership());
        let guest = Guest::new(&memory, &owned);
        for addr in [
            layout::GDT_ADDR,
            layout::KVM_GATE_ADDR,
            layout::PAGE_TABLES_ADDR,
            layout::BOOT_INFO_ADDR,
            layout::GUEST_OWNED_START - 8,
        ] {
            let args = PollArgs::default();
            let err = guest.write_args(Hypercall::Poll, addr, &args).unwrap_err();
            assert!(err.0.contains("outside the guest's memory"), "{err}");
            assert!(guest.read_args::<PollArgs>(Hypercall::Poll, addr).is_err());
        }
        assert_eq!(
            memory
                .read_obj::<u64>(GuestAddress(layout::GDT_ADDR))
                .unwrap(),
            0
        );
    }

    #[test]
    fn results_are_not_written_into_read_only_segments() {
        let (memory, owned) = (memory(), ownership());
        let guest = Guest::new(&memory, &owned);
        let err = guest
            .write_args(Hypercall::Poll, TEXT + 8, &PollArgs::default())
            .unwrap_err();
        assert!(err.0.contains("read-only segment"), "{err}");
        // Reading from it is fine: a console write of a string in .rodata.
        assert!(guest
            .read_args::<PollArgs>(Hypercall::Poll, TEXT + 8)
            .is_ok());
    }

    #[test]
    fn buffers_are_bounds_checked_with_overflow() {
        let (memory, owned) = (memory(), ownership());
        let guest = Guest::new(&memory, &owned);
        let mut buf = Vec::new();
        let call = Hypercall::ConsoleWrite;
        assert!(guest
            .read_buffer(call, (ARGS, 16), 64, false, &mut buf)
            .is_ok());
        assert_eq!(buf.len(), 16);
        for (addr, len) in [
            (u64::MAX - 1, 16),
            (0xdead_0000_0000, 1),
            (MEM - 8, 16),
            (layout::BOOT_INFO_ADDR, 16),
        ] {
            assert!(guest
                .read_buffer(call, (addr, len), 64, false, &mut buf)
                .is_err());
        }
    }

    #[test]
    fn oversized_lengths_are_refused_or_truncated() {
        let (memory, owned) = (memory(), ownership());
        let guest = Guest::new(&memory, &owned);
        let mut buf = Vec::new();
        let err = guest.read_buffer(
            Hypercall::ConsoleWrite,
            (ARGS, u64::MAX),
            64,
            false,
            &mut buf,
        );
        assert!(err.unwrap_err().0.contains("exceeds the limit"));
        guest
            .read_buffer(Hypercall::Exit, (ARGS, 1 << 20), 64, true, &mut buf)
            .unwrap();
        assert_eq!(buf.len(), 64);
    }
}
