//! virtio devices over the MMIO transport.
//!
//! A device ([`VirtioDevice`]) sees its queues only through [`next_request`],
//! which walks a descriptor chain and checks every descriptor before the device
//! touches it: the index is inside the queue, the buffer is inside guest memory,
//! and the chain ends. A driver that breaks any of these gets a [`DeviceError`];
//! the transport then marks the device as needing a reset (status bit
//! DEVICE_NEEDS_RESET) and stops serving it. The VMM and the guest's other devices
//! go on.

pub mod block;
pub mod mmio;
pub mod net;
pub mod tap;

use std::ops::Deref;

use virtio_queue::{DescriptorChain, Queue, QueueOwnedT, QueueT};
use vm_memory::{GuestAddress, GuestMemory, GuestMemoryMmap, Permissions};

/// virtio device ids.
pub const TYPE_NET: u32 = 1;
/// virtio device ids.
pub const TYPE_BLOCK: u32 = 2;
/// Feature bit: the device follows virtio 1.0+ (required by the MMIO transport v2).
pub const F_VERSION_1: u64 = 1 << 32;
/// Size of every queue lightvm offers.
pub const QUEUE_SIZE: u16 = 256;

/// A driver error that stops one device.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum DeviceError {
    /// A descriptor index is not below the queue size.
    #[error("descriptor index {index} is out of range (queue size {size})")]
    IndexOutOfRange {
        /// The index.
        index: u16,
        /// The queue size.
        size: u16,
    },
    /// A buffer lies (partly) outside guest memory.
    #[error("descriptor buffer {addr:#x}+{len:#x} is outside guest memory")]
    OutsideMemory {
        /// Buffer address.
        addr: u64,
        /// Buffer length.
        len: u32,
    },
    /// The chain does not end within the queue size: it loops.
    #[error("descriptor chain starting at {head} does not end (a loop)")]
    Loop {
        /// Head index.
        head: u16,
    },
    /// The available ring could not be read.
    #[error("the available ring is invalid: {0}")]
    Ring(String),
    /// The request's layout is not what the device type prescribes.
    #[error("malformed request: {0}")]
    Malformed(String),
    /// A host I/O error the device cannot recover from.
    #[error("host I/O error: {0}")]
    Host(String),
}

/// One checked descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Buffer {
    /// Guest address.
    pub addr: GuestAddress,
    /// Length in bytes.
    pub len: u32,
    /// The device may write it (else it may only read it).
    pub writable: bool,
}

/// A popped request: its head index (for the used ring) and its checked buffers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Head descriptor index.
    pub head: u16,
    /// The chain's buffers, in order.
    pub buffers: Vec<Buffer>,
}

/// Walks one descriptor chain, checking every descriptor.
pub fn check_chain<M>(chain: DescriptorChain<M>, queue_size: u16) -> Result<Request, DeviceError>
where
    M: Deref + Clone,
    M::Target: GuestMemory,
{
    let head = chain.head_index();
    if head >= queue_size {
        return Err(DeviceError::IndexOutOfRange {
            index: head,
            size: queue_size,
        });
    }
    let mem = chain.memory();
    let mut buffers = Vec::new();
    let mut last = None;
    let mut walker = chain.clone();
    for desc in &mut walker {
        let (addr, len) = (desc.addr(), desc.len());
        let inside = len == 0 || mem.check_range(addr, len as usize, Permissions::ReadWrite);
        if !inside {
            return Err(DeviceError::OutsideMemory { addr: addr.0, len });
        }
        buffers.push(Buffer {
            addr,
            len,
            writable: desc.is_write_only(),
        });
        last = Some(desc);
    }
    match last {
        None => Err(DeviceError::Malformed(format!(
            "descriptor chain {head} is empty"
        ))),
        Some(desc) if desc.has_next() && desc.next() >= queue_size => {
            Err(DeviceError::IndexOutOfRange {
                index: desc.next(),
                size: queue_size,
            })
        }
        Some(desc) if desc.has_next() => Err(DeviceError::Loop { head }),
        Some(_) => Ok(Request { head, buffers }),
    }
}

/// Pops the next request of `queue`, checked; `Ok(None)` when the queue is empty.
pub fn next_request(
    queue: &mut Queue,
    mem: &GuestMemoryMmap,
) -> Result<Option<Request>, DeviceError> {
    let size = queue.size();
    let mut iter = queue
        .iter(mem)
        .map_err(|e| DeviceError::Ring(e.to_string()))?;
    match iter.next() {
        Some(chain) => check_chain(chain, size).map(Some),
        None => Ok(None),
    }
}

/// Puts a finished request on the used ring.
pub fn complete(
    queue: &mut Queue,
    mem: &GuestMemoryMmap,
    head: u16,
    len: u32,
) -> Result<(), DeviceError> {
    queue
        .add_used(mem, head, len)
        .map_err(|e| DeviceError::Ring(format!("cannot add to the used ring: {e}")))
}

/// A device behind the MMIO transport.
pub trait VirtioDevice: Send {
    /// The virtio device id.
    fn device_type(&self) -> u32;
    /// A short name for messages ("virtio-blk").
    fn name(&self) -> &'static str;
    /// Feature bits offered.
    fn features(&self) -> u64;
    /// Number of queues.
    fn queue_count(&self) -> usize;
    /// The device-specific configuration space.
    fn config_space(&self) -> Vec<u8>;
    /// The driver set DRIVER_OK: the queues are ready.
    fn activate(&mut self, mem: GuestMemoryMmap, queues: Vec<Queue>);
    /// The driver notified queue `index`. Returns whether buffers were used (an
    /// interrupt is due).
    fn notify(&mut self, index: usize) -> Result<bool, DeviceError>;
    /// Work that arrives from the host side (a packet on the tap). Same result as
    /// [`VirtioDevice::notify`].
    fn poll_host(&mut self) -> Result<bool, DeviceError> {
        Ok(false)
    }
    /// The host descriptor to wait on for that work, while the device can take
    /// some: `None` when it has no host side, is not set up, or is still holding
    /// work the guest has not made room for (waiting on the descriptor then would
    /// only spin on input that cannot be taken).
    fn host_input(&self) -> Option<std::os::fd::RawFd> {
        None
    }
    /// The driver reset the device: drop the queues.
    fn reset(&mut self);
}

#[cfg(test)]
pub(crate) mod test_util {
    //! Guest memory with virtio-queue's mock split queue in it.
    use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
    use virtio_queue::mock::MockSplitQueue;
    use virtio_queue::{Queue, QueueT};
    use vm_memory::{GuestAddress, GuestMemoryMmap};

    pub const MEM_SIZE: usize = 0x10_0000;
    /// Where request buffers go in the tests (the rings sit at 0).
    pub const DATA: u64 = 0x4_0000;

    pub fn memory() -> GuestMemoryMmap {
        GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap()
    }

    pub fn desc(addr: u64, len: u32, flags: u16, next: u16) -> RawDescriptor {
        RawDescriptor::from(SplitDescriptor::new(addr, len, flags, next))
    }

    /// A queue of 16 entries holding `descs` as chains at the head of the table.
    pub fn queue_with<'a>(
        mem: &'a GuestMemoryMmap,
        descs: &[RawDescriptor],
    ) -> (MockSplitQueue<'a, GuestMemoryMmap>, Queue) {
        let mock = MockSplitQueue::new(mem, 16);
        mock.add_desc_chains(descs, 0).unwrap();
        let mut queue: Queue = mock.create_queue().unwrap();
        queue.set_ready(true);
        (mock, queue)
    }
}

#[cfg(test)]
mod tests {
    use super::test_util::*;
    use super::*;
    use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};

    const NEXT: u16 = VRING_DESC_F_NEXT as u16;
    const WRITE: u16 = VRING_DESC_F_WRITE as u16;

    #[test]
    fn a_good_chain_is_returned_whole() {
        let mem = memory();
        let (_mock, mut queue) = queue_with(
            &mem,
            &[desc(DATA, 16, NEXT, 1), desc(DATA + 16, 1, WRITE, 0)],
        );
        let request = next_request(&mut queue, &mem).unwrap().unwrap();
        assert_eq!(request.head, 0);
        assert_eq!(request.buffers.len(), 2);
        assert!(!request.buffers[0].writable && request.buffers[1].writable);
        assert_eq!(next_request(&mut queue, &mem).unwrap(), None);
    }

    #[test]
    fn a_next_index_out_of_range_is_an_error() {
        let mem = memory();
        let (_mock, mut queue) = queue_with(&mem, &[desc(DATA, 16, NEXT, 40)]);
        assert_eq!(
            next_request(&mut queue, &mem).unwrap_err(),
            DeviceError::IndexOutOfRange {
                index: 40,
                size: 16
            }
        );
    }

    #[test]
    fn a_buffer_past_the_end_of_memory_is_an_error() {
        let mem = memory();
        let (_mock, mut queue) = queue_with(&mem, &[desc(MEM_SIZE as u64 - 8, 16, 0, 0)]);
        assert!(matches!(
            next_request(&mut queue, &mem).unwrap_err(),
            DeviceError::OutsideMemory { len: 16, .. }
        ));
        let (_mock, mut queue) = queue_with(&mem, &[desc(u64::MAX - 4, 16, 0, 0)]);
        assert!(matches!(
            next_request(&mut queue, &mem),
            Err(DeviceError::OutsideMemory { .. })
        ));
    }

    #[test]
    fn a_looping_chain_is_an_error() {
        let mem = memory();
        let (_mock, mut queue) =
            queue_with(&mem, &[desc(DATA, 16, NEXT, 1), desc(DATA, 16, NEXT, 0)]);
        assert_eq!(
            next_request(&mut queue, &mem).unwrap_err(),
            DeviceError::Loop { head: 0 }
        );
    }
}
