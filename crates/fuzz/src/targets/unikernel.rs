//! The unikernel monitor: the image loader, the hypercall core and the device
//! rings, with guest memory the input fills.

use std::cell::RefCell;
use std::time::Instant;

use lightvm_abi::devices::{BlockRequest, NetDesc, RingHeader};
use lightvm_abi::{layout, Hypercall, PollArgs};
use lightvm_vmm::report::Timings;
use lightvm_vmm::unikernel::boot::{self, BootFacts, GuestLayout};
use lightvm_vmm::unikernel::core::{Core, Flow};
use lightvm_vmm::unikernel::devices::block::BlockDevice;
use lightvm_vmm::unikernel::devices::ring::Ring;
use lightvm_vmm::unikernel::devices::Devices;
use lightvm_vmm::unikernel::guest::{self, Guest, Ownership};
use lightvm_vmm::UnikernelImage;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};
use zerocopy::IntoBytes;

use super::MemFile;
use crate::input::Input;

/// Guest memory of the unikernel targets: the smallest a VM may have.
pub const MEM: u64 = layout::MEM_MIN;
/// A read-only page the ownership rules protect, as an image's text would be.
pub const TEXT: u64 = layout::IMAGE_MIN_ADDR;

fn memory() -> GuestMemoryMmap {
    GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM as usize)])
        .expect("mapping guest memory")
}

thread_local! {
    static IMAGE_MEMORY: GuestMemoryMmap = memory();
    static GUEST_MEMORY: GuestMemoryMmap = memory();
    static DISK: RefCell<MemFile> = RefCell::new(MemFile::new());
}

/// `unikernel_elf`: an image file, validated, and when it fits, loaded with its
/// boot info as the monitor would.
pub fn elf(data: &[u8]) {
    let Ok(image) = UnikernelImage::parse(data.to_vec()) else {
        return;
    };
    let segments = image.segments();
    assert!(!segments.is_empty());
    for pair in segments.windows(2) {
        assert!(pair[0].guest_end() <= pair[1].guest_addr, "{segments:?}");
    }
    for segment in segments {
        assert!(segment.guest_addr >= layout::IMAGE_MIN_ADDR);
        assert!(segment.file_size <= segment.mem_size);
        assert_eq!(image.file_bytes(segment).len() as u64, segment.file_size);
        assert!(!(segment.access.write && segment.access.exec));
    }
    let entry = image.entry();
    assert!(segments
        .iter()
        .any(|s| s.access.exec && s.guest_addr <= entry && entry < s.guest_end()));
    let _ = guest::read_only_ranges(&image);
    if image.check_fits(MEM).is_err() {
        assert!(image.end() > MEM);
        return;
    }
    IMAGE_MEMORY.with(|memory| {
        boot::load_segments(memory, &image).expect("an image that fits loads");
        // A module of as many bytes as the image has, as a rootfs would be.
        let module_len = (!data.is_empty()).then_some(data.len() as u64);
        for module in [None, module_len] {
            let Ok(plan) = GuestLayout::plan(&image, MEM, module, false) else {
                continue;
            };
            assert!(plan.heap.start >= image.end());
            assert!(plan.heap.start <= plan.heap.end && plan.heap.end <= MEM);
            if let Some(place) = &plan.module {
                assert!(place.start >= plan.heap.start && place.end <= MEM);
            }
            let facts = BootFacts {
                mem_size: MEM,
                tsc_hz: 0,
                platform: lightvm_abi::PLATFORM_PROCESS,
                hypercall_gate: 0,
                module_len: module.unwrap_or(0),
                syscall_sled: false,
            };
            boot::write_boot_info(memory, &facts, &plan, "fuzz").expect("boot info fits");
        }
    });
}

/// Where an operation's guest address points: mostly into guest-owned memory near
/// the data the input wrote, sometimes anywhere (the monitor's pages, the end of
/// memory, wrapping values).
fn address(input: &mut Input<'_>) -> u64 {
    match input.u8() % 8 {
        0 => input.u64(),
        1 => u64::from(input.u16()) * 8,
        2 => MEM - u64::from(input.u8()),
        _ => layout::GUEST_OWNED_START + u64::from(input.u16()) * 8,
    }
}

/// Guest memory of one region from address 0, as one host slice.
///
/// One mapping serves every execution: mapping, faulting in and unmapping 2 MiB
/// per input cost more than the code under test.
///
/// # Safety
///
/// `memory` is one region from address 0, and nothing else reads or writes it
/// while the slice lives (the targets are single-threaded and call the code
/// under test only when they no longer hold the slice).
// A `&mut` from a `&`: guest memory is shared by design (vm-memory hands out
// its host address); the contract above is what makes the slice exclusive.
#[allow(clippy::mut_from_ref)]
pub unsafe fn host_bytes(memory: &GuestMemoryMmap) -> &mut [u8] {
    let host = memory
        .get_host_address(GuestAddress(0))
        .expect("guest memory starts at 0");
    let len = memory.last_addr().0 as usize + 1;
    // SAFETY: the region is mapped from `host` for `len` bytes while `memory`
    // lives; the caller holds no other reference into it (see above).
    unsafe { std::slice::from_raw_parts_mut(host, len) }
}

/// Clears the guest's own memory (the monitor's pages are never written, which
/// [`check_protected`] proves after each input), then copies the rest of the
/// input into it from its start.
fn fill(memory: &GuestMemoryMmap, data: &[u8]) {
    // SAFETY: the targets' memory is one region from 0, used by nothing else now.
    let bytes = unsafe { host_bytes(memory) };
    let owned = &mut bytes[layout::GUEST_OWNED_START as usize..];
    owned.fill(0);
    let n = data.len().min(owned.len());
    owned[..n].copy_from_slice(&data[..n]);
}

/// The read-only text page's bytes, as the input left them.
fn text(memory: &GuestMemoryMmap) -> Vec<u8> {
    // SAFETY: as in `fill`.
    let bytes = unsafe { host_bytes(memory) };
    bytes[TEXT as usize..(TEXT + layout::PAGE_SIZE) as usize].to_vec()
}

/// Asserts that nothing wrote the monitor's pages (still zero) or the text.
fn check_protected(memory: &GuestMemoryMmap, text_before: &[u8], what: &str) {
    const ZEROS: [u8; 4096] = [0; 4096];
    // SAFETY: the targets' memory is one region from 0, used by nothing else now.
    let bytes = unsafe { host_bytes(memory) };
    let monitor = &bytes[..layout::GUEST_OWNED_START as usize];
    assert!(
        monitor
            .chunks(ZEROS.len())
            .all(|page| page == &ZEROS[..page.len()]),
        "{what} wrote the monitor's pages below the guest's memory"
    );
    assert!(
        bytes[TEXT as usize..(TEXT + layout::PAGE_SIZE) as usize] == *text_before,
        "{what} wrote the image's read-only text"
    );
}

fn ownership() -> Ownership {
    let text = TEXT..TEXT + layout::PAGE_SIZE;
    Ownership::new(MEM, Vec::from([text]))
}

/// `hypercall`: up to 16 hypercalls with addresses from the input, against guest
/// memory holding the rest of the input, with a 64-sector disk. No call may
/// panic, and none may change the monitor's pages or the read-only text.
pub fn hypercall(data: &[u8]) {
    let mut input = Input::new(data);
    let count = input.u8() % 17;
    let calls: Vec<(Hypercall, u64)> = (0..count)
        .map(|_| {
            let call = Hypercall::ALL[usize::from(input.u8()) % Hypercall::ALL.len()];
            (call, address(&mut input))
        })
        .collect();
    let memory = GUEST_MEMORY.with(Clone::clone);
    fill(&memory, input.rest());
    let before = text(&memory);
    let disk = DISK.with(|disk| {
        let mut disk = disk.borrow_mut();
        disk.set(&[0x5a; 64 * 512]);
        BlockDevice::open(&disk.path(), false).expect("opening the disk")
    });
    let devices = Devices::new(None, Some(disk)).expect("devices without a tap");
    let owned = ownership();
    let mut core = Core::new(
        memory.clone(),
        owned.clone(),
        devices,
        Box::new(std::io::sink()),
        None,
        (Instant::now(), Timings::default()),
    );
    for (call, addr) in calls {
        let writable = Guest::new(&memory, &owned).check_writable(&String::new, addr, 16);
        if call == Hypercall::Poll && writable.is_ok() {
            // Never wait: a poll's timeout becomes 0 (the wait itself is the
            // host's, not a parser's), where the guest could have written it.
            let _ = memory.write_slice(
                PollArgs::default().timeout_ns.as_bytes(),
                GuestAddress(addr),
            );
        }
        if let Flow::Exit(_) = core.hypercall(call, addr) {
            break;
        }
    }
    drop(core);
    check_protected(&memory, &before, "a hypercall");
}

/// `unikernel_ring`: a block and a net ring attached where the input says, then
/// avail indices, entry reads, writes and completions.
pub fn ring(data: &[u8]) {
    let mut input = Input::new(data);
    let block_at = address(&mut input);
    let block_size = u32::from(input.u16());
    let net_at = address(&mut input);
    let net_size = u32::from(input.u16());
    let ops: Vec<(u8, u32)> = (0..input.u8() % 32)
        .map(|_| (input.u8(), input.u32()))
        .collect();
    let memory = GUEST_MEMORY.with(Clone::clone);
    fill(&memory, input.rest());
    let before = text(&memory);
    let owned = ownership();
    let guest = Guest::new(&memory, &owned);
    let block = Ring::<BlockRequest>::attach(&guest, "block ring", block_at, block_size);
    let net = Ring::<NetDesc>::attach(&guest, "net ring", net_at, net_size);
    let (mut block, mut net) = (block.ok(), net.ok());
    for (op, value) in ops {
        match (op % 8, block.as_mut(), net.as_mut()) {
            (0, Some(ring), _) => {
                // The guest publishes entries: its `avail` moves.
                let header = RingHeader {
                    avail: value,
                    ..RingHeader::default()
                };
                let _ = memory.write_slice(header.avail.as_bytes(), GuestAddress(block_at));
                let _ = ring.pending(&guest);
            }
            (1, Some(ring), _) => {
                if let Ok(pending) = ring.pending(&guest) {
                    assert!(pending <= ring.size());
                    for offset in 0..pending.min(8) {
                        if let Ok(entry) = ring.read(&guest, offset) {
                            let _ = ring.write(&guest, offset, &entry);
                        }
                    }
                    let _ = ring.complete(&guest, pending.min(value));
                }
            }
            (2, Some(ring), _) => {
                let _ = ring.read(&guest, value);
                let at = ring.entry_addr(ring.used().wrapping_add(value));
                assert!(at >= block_at && at < block_at + 16 + 32 * u64::from(ring.size()));
            }
            (3, _, Some(ring)) => {
                let _ = memory.write_slice(value.as_bytes(), GuestAddress(net_at));
                if let Ok(pending) = ring.pending(&guest) {
                    let _ = ring.complete(&guest, pending.min(value));
                }
            }
            (4, _, Some(ring)) => {
                let _ = ring.read(&guest, value);
                let _ = ring.write(&guest, value, &NetDesc::default());
            }
            _ => {}
        }
    }
    check_protected(&memory, &before, "a ring");
}
