//! virtio-mmio devices of Linux microVMs: the transport's registers, the
//! descriptor-chain walker and the block and net devices behind it, driven by a
//! driver the input plays.

use std::cell::RefCell;
use std::collections::VecDeque;

use lightvm_vmm::devices::disk::Disk;
use lightvm_vmm::devices::virtio::block::Block;
use lightvm_vmm::devices::virtio::mmio::{Irq, MmioTransport};
use lightvm_vmm::devices::virtio::net::{Net, NetBackend};
use lightvm_vmm::devices::virtio::VirtioDevice;
use vm_memory::{GuestAddress, GuestMemoryMmap};

use super::unikernel::host_bytes;
use super::MemFile;
use crate::input::Input;

/// Guest memory of the virtio targets.
pub const MEM: u64 = 1 << 20;
/// Sectors of the virtio-blk disk.
pub const DISK_SECTORS: usize = 64;

thread_local! {
    static DISK: RefCell<MemFile> = RefCell::new(MemFile::new());
    /// One mapping for every execution (see `unikernel::host_bytes`).
    static MEMORY: GuestMemoryMmap =
        GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM as usize)])
            .expect("mapping guest memory");
}

/// An interrupt line nobody listens to.
struct NoIrq;

impl Irq for NoIrq {
    fn trigger(&self) {}
}

/// A tap that delivers the input's frames and swallows what the guest sends.
struct Frames(VecDeque<Vec<u8>>);

impl NetBackend for Frames {
    fn recv(&mut self, buf: &mut [u8]) -> std::io::Result<Option<usize>> {
        Ok(self.0.pop_front().map(|frame| {
            let n = frame.len().min(buf.len());
            buf[..n].copy_from_slice(&frame[..n]);
            n
        }))
    }

    fn send(&mut self, _frame: &[u8]) -> std::io::Result<()> {
        Ok(())
    }
}

/// One register access or host event, as the input encodes it.
enum Op {
    Write(u64, u32),
    Read(u64),
    PollHost,
}

/// Reads up to 48 operations; the rest of the input is guest memory from 0 (where
/// the driver's queues and buffers are).
fn ops(input: &mut Input<'_>) -> Vec<Op> {
    (0..input.u8() % 49)
        .map(|_| match input.u8() % 8 {
            0 => Op::Read(u64::from(input.u16() % 0x140)),
            1 => Op::PollHost,
            _ => Op::Write(u64::from(input.u8()) * 4 % 0x100, input.u32()),
        })
        .collect()
}

fn drive(device: Box<dyn VirtioDevice>, ops: Vec<Op>, memory_bytes: &[u8]) {
    let memory = MEMORY.with(Clone::clone);
    // SAFETY: MEMORY is one region from 0; the transport is made only after the
    // slice's last use.
    let host = unsafe { host_bytes(&memory) };
    host.fill(0);
    let n = memory_bytes.len().min(host.len());
    host[..n].copy_from_slice(&memory_bytes[..n]);
    let mut transport = MmioTransport::new(device, memory, Box::new(NoIrq));
    for op in ops {
        match op {
            Op::Write(offset, value) => transport.write(offset, &value.to_le_bytes()),
            Op::Read(offset) => {
                let mut data = [0u8; 4];
                transport.read(offset, &mut data);
            }
            Op::PollHost => transport.poll_host(),
        }
    }
}

/// `virtio_blk`: a driver's register writes and memory against virtio-blk over a
/// 64-sector disk.
pub fn blk(data: &[u8]) {
    let mut input = Input::new(data);
    let read_only = input.u8() & 1 == 1;
    let ops = ops(&mut input);
    let file = DISK.with(|disk| {
        let mut disk = disk.borrow_mut();
        disk.set(&[0xa5; DISK_SECTORS * 512]);
        disk.file()
    });
    let disk = Disk::from_file(file, read_only).expect("a disk on a memfd");
    let device = Block::new(disk, "fuzz");
    drive(Box::new(device), ops, input.rest());
}

/// `virtio_net`: a driver's register writes and memory against virtio-net, with
/// up to four frames from the host (the tap's side).
pub fn net(data: &[u8]) {
    let mut input = Input::new(data);
    let frames = (0..input.u8() % 5)
        .map(|_| {
            let len = usize::from(input.u16() % 1600);
            input.bytes(len).to_vec()
        })
        .collect();
    let ops = ops(&mut input);
    let device = Net::new(Box::new(Frames(frames)), [6, 0, 0, 0, 0, 1]);
    drive(Box::new(device), ops, input.rest());
}
