//! virtio-net over a tap device (or any [`NetBackend`]).
//!
//! Queue 0 receives (host → guest), queue 1 transmits. No offloads are offered,
//! so every frame carries a zeroed 12-byte `virtio_net_hdr_v1` in front, which the
//! device strips on transmit and prepends on receive. A frame that arrives while
//! the guest has posted no receive buffer waits (one frame) until it does.

use virtio_queue::Queue;
use vm_memory::{Bytes, GuestMemoryMmap};

use super::{complete, next_request, DeviceError, VirtioDevice, F_VERSION_1, TYPE_NET};

/// Feature: the device has a MAC address in its config space.
pub const F_MAC: u64 = 1 << 5;
/// Size of `virtio_net_hdr_v1`.
pub const HEADER_LEN: usize = 12;
/// Largest frame accepted: an Ethernet frame with a VLAN tag and no offloads.
pub const MAX_FRAME: usize = 1518;

const RX: usize = 0;
const TX: usize = 1;

/// Where frames go and come from.
pub trait NetBackend: Send {
    /// Reads one frame; `Ok(None)` when none is waiting.
    fn recv(&mut self, buf: &mut [u8]) -> std::io::Result<Option<usize>>;
    /// Sends one frame.
    fn send(&mut self, frame: &[u8]) -> std::io::Result<()>;
    /// The descriptor that is readable while a frame waits (the tap), for the
    /// receive thread's wait: the one descriptor the backend was opened with,
    /// never a second open of the same interface.
    fn wait_fd(&self) -> Option<std::os::fd::RawFd> {
        None
    }
}

/// A virtio-net device.
pub struct Net {
    backend: Box<dyn NetBackend>,
    mac: [u8; 6],
    memory: Option<GuestMemoryMmap>,
    queues: Vec<Queue>,
    pending: Option<Vec<u8>>,
    /// Frames the host could not take (counted, dropped, as a NIC would).
    pub tx_errors: u64,
}

impl Net {
    /// A device with MAC `mac` on `backend`.
    pub fn new(backend: Box<dyn NetBackend>, mac: [u8; 6]) -> Self {
        Self {
            backend,
            mac,
            memory: None,
            queues: Vec::new(),
            pending: None,
            tx_errors: 0,
        }
    }

    /// Whether a received frame is waiting for a guest buffer.
    pub fn has_pending(&self) -> bool {
        self.pending.is_some()
    }

    fn transmit(&mut self, mem: &GuestMemoryMmap) -> Result<bool, DeviceError> {
        let mut used = false;
        let mut frame = Vec::with_capacity(HEADER_LEN + MAX_FRAME);
        while let Some(request) = next_request(&mut self.queues[TX], mem)? {
            frame.clear();
            for buffer in &request.buffers {
                if buffer.writable {
                    return Err(DeviceError::Malformed(format!(
                        "virtio-net transmit {}: a device-writable buffer",
                        request.head
                    )));
                }
                let start = frame.len();
                if start + buffer.len as usize > HEADER_LEN + MAX_FRAME + 4 {
                    return Err(DeviceError::Malformed(format!(
                        "virtio-net transmit {}: frame longer than {MAX_FRAME} bytes",
                        request.head
                    )));
                }
                frame.resize(start + buffer.len as usize, 0);
                mem.read_slice(&mut frame[start..], buffer.addr)
                    .map_err(|e| DeviceError::Host(e.to_string()))?;
            }
            if frame.len() < HEADER_LEN {
                return Err(DeviceError::Malformed(format!(
                    "virtio-net transmit {}: shorter than the {HEADER_LEN}-byte header",
                    request.head
                )));
            }
            if self.backend.send(&frame[HEADER_LEN..]).is_err() {
                self.tx_errors += 1;
            }
            complete(&mut self.queues[TX], mem, request.head, 0)?;
            used = true;
        }
        Ok(used)
    }

    fn receive(&mut self, mem: &GuestMemoryMmap) -> Result<bool, DeviceError> {
        let mut used = false;
        loop {
            let frame = match self.pending.take() {
                Some(frame) => frame,
                None => {
                    let mut buf = vec![0u8; MAX_FRAME + 4];
                    match self.backend.recv(&mut buf) {
                        Ok(Some(n)) => {
                            buf.truncate(n);
                            buf
                        }
                        Ok(None) => return Ok(used),
                        Err(e) => return Err(DeviceError::Host(format!("reading the tap: {e}"))),
                    }
                }
            };
            let Some(request) = next_request(&mut self.queues[RX], mem)? else {
                self.pending = Some(frame);
                return Ok(used);
            };
            let mut header = [0u8; HEADER_LEN];
            header[10] = 1; // num_buffers
            let mut packet = header.to_vec();
            packet.extend_from_slice(&frame);
            let capacity: usize = request.buffers.iter().map(|b| b.len as usize).sum();
            if request.buffers.iter().any(|b| !b.writable) || capacity < packet.len() {
                return Err(DeviceError::Malformed(format!(
                    "virtio-net receive {}: buffers must be writable and hold a whole frame ({capacity} < {})",
                    request.head,
                    packet.len()
                )));
            }
            let mut offset = 0;
            for buffer in &request.buffers {
                let n = (buffer.len as usize).min(packet.len() - offset);
                mem.write_slice(&packet[offset..offset + n], buffer.addr)
                    .map_err(|e| DeviceError::Host(e.to_string()))?;
                offset += n;
                if offset == packet.len() {
                    break;
                }
            }
            complete(&mut self.queues[RX], mem, request.head, packet.len() as u32)?;
            used = true;
        }
    }
}

impl VirtioDevice for Net {
    fn device_type(&self) -> u32 {
        TYPE_NET
    }
    fn name(&self) -> &'static str {
        "virtio-net"
    }
    fn features(&self) -> u64 {
        F_VERSION_1 | F_MAC
    }
    fn queue_count(&self) -> usize {
        2
    }
    fn config_space(&self) -> Vec<u8> {
        let mut config = self.mac.to_vec();
        config.extend_from_slice(&1u16.to_le_bytes()); // status: link up
        config
    }
    fn activate(&mut self, mem: GuestMemoryMmap, queues: Vec<Queue>) {
        self.memory = Some(mem);
        self.queues = queues;
    }
    fn notify(&mut self, index: usize) -> Result<bool, DeviceError> {
        let Some(mem) = self.memory.clone() else {
            return Ok(false);
        };
        match index {
            TX => self.transmit(&mem),
            RX => self.receive(&mem),
            _ => Ok(false),
        }
    }
    fn poll_host(&mut self) -> Result<bool, DeviceError> {
        match self.memory.clone() {
            Some(mem) => self.receive(&mem),
            None => Ok(false),
        }
    }
    fn host_input(&self) -> Option<std::os::fd::RawFd> {
        // One frame at most waits in the device; while it does, the tap is left
        // alone until the guest posts buffers (its notify delivers the frame).
        match (&self.memory, &self.pending) {
            (Some(_), None) => self.backend.wait_fd(),
            _ => None,
        }
    }
    fn reset(&mut self) {
        self.memory = None;
        self.queues.clear();
        self.pending = None;
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::*;
    use super::*;
    use std::collections::VecDeque;
    use std::sync::{Arc, Mutex};
    use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::GuestAddress;

    const NEXT: u16 = VRING_DESC_F_NEXT as u16;
    const WRITE: u16 = VRING_DESC_F_WRITE as u16;

    #[derive(Clone, Default)]
    struct Wire {
        to_guest: Arc<Mutex<VecDeque<Vec<u8>>>>,
        from_guest: Arc<Mutex<Vec<Vec<u8>>>>,
    }
    impl NetBackend for Wire {
        fn recv(&mut self, buf: &mut [u8]) -> std::io::Result<Option<usize>> {
            Ok(self.to_guest.lock().unwrap().pop_front().map(|f| {
                buf[..f.len()].copy_from_slice(&f);
                f.len()
            }))
        }
        fn send(&mut self, frame: &[u8]) -> std::io::Result<()> {
            self.from_guest.lock().unwrap().push(frame.to_vec());
            Ok(())
        }
        fn wait_fd(&self) -> Option<std::os::fd::RawFd> {
            Some(WIRE_FD)
        }
    }

    /// What the test backend says its descriptor is (never waited on here).
    const WIRE_FD: i32 = 1234;

    /// A net device whose RX queue holds `rx` and TX queue holds `tx` (separate
    /// regions of one guest memory).
    fn device<'a>(
        mem: &'a GuestMemoryMmap,
        rx: &[virtio_queue::desc::RawDescriptor],
        tx: &[virtio_queue::desc::RawDescriptor],
    ) -> (Net, Wire, MockSplitQueue<'a, GuestMemoryMmap>) {
        let wire = Wire::default();
        let rx_mock = MockSplitQueue::create(mem, GuestAddress(0), 16);
        rx_mock.add_desc_chains(rx, 0).unwrap();
        let tx_mock = MockSplitQueue::create(mem, GuestAddress(0x1_0000), 16);
        tx_mock.add_desc_chains(tx, 0).unwrap();
        let mut queues: Vec<Queue> = vec![
            rx_mock.create_queue().unwrap(),
            tx_mock.create_queue().unwrap(),
        ];
        for q in &mut queues {
            virtio_queue::QueueT::set_ready(q, true);
        }
        let mut net = Net::new(Box::new(wire.clone()), [2, 0, 0, 0, 0, 1]);
        net.activate(mem.clone(), queues);
        (net, wire, rx_mock)
    }

    #[test]
    fn transmit_strips_the_header_and_sends_the_frame() {
        let mem = memory();
        mem.write_slice(&[0u8; HEADER_LEN], GuestAddress(DATA))
            .unwrap();
        mem.write_slice(b"hello frame", GuestAddress(DATA + 0x100))
            .unwrap();
        let tx = [
            desc(DATA, HEADER_LEN as u32, NEXT, 1),
            desc(DATA + 0x100, 11, 0, 0),
        ];
        let (mut net, wire, _) = device(&mem, &[], &tx);
        assert_eq!(net.notify(TX), Ok(true));
        assert_eq!(
            *wire.from_guest.lock().unwrap(),
            vec![b"hello frame".to_vec()]
        );
    }

    #[test]
    fn receive_prepends_the_header_and_waits_for_buffers() {
        let mem = memory();
        let (mut net, wire, rx_mock) = device(&mem, &[desc(DATA, 2048, WRITE, 0)], &[]);
        wire.to_guest
            .lock()
            .unwrap()
            .extend([b"first".to_vec(), b"second".to_vec()]);
        assert_eq!(net.poll_host(), Ok(true));
        let mut got = [0u8; HEADER_LEN + 5];
        mem.read_slice(&mut got, GuestAddress(DATA)).unwrap();
        assert_eq!(&got[HEADER_LEN..], b"first");
        assert_eq!(got[10], 1, "num_buffers");
        assert_eq!(
            rx_mock.used().ring().ref_at(0).unwrap().load().len(),
            (HEADER_LEN + 5) as u32
        );
        // No buffer left: the second frame waits.
        assert!(net.has_pending());
        assert_eq!(net.poll_host(), Ok(false));
    }

    #[test]
    fn the_tap_is_waited_on_only_while_the_device_has_room() {
        let mem = memory();
        let wire = Wire::default();
        let mut idle = Net::new(Box::new(wire), [2, 0, 0, 0, 0, 1]);
        assert_eq!(idle.host_input(), None, "not set up by the driver yet");
        idle.reset();
        assert_eq!(idle.host_input(), None);

        let (mut net, wire, rx_mock) = device(&mem, &[desc(DATA, 2048, WRITE, 0)], &[]);
        assert_eq!(net.host_input(), Some(WIRE_FD));
        wire.to_guest
            .lock()
            .unwrap()
            .extend([b"first".to_vec(), b"second".to_vec()]);
        assert_eq!(net.poll_host(), Ok(true));
        // The second frame is held for want of a buffer: no more waiting on the tap.
        assert!(net.has_pending());
        assert_eq!(net.host_input(), None);
        // The guest posts a buffer and notifies: the frame goes in, the tap is
        // waited on again.
        rx_mock
            .add_desc_chains(&[desc(DATA + 0x1000, 2048, WRITE, 0)], 1)
            .unwrap();
        assert_eq!(net.notify(RX), Ok(true));
        assert!(!net.has_pending());
        assert_eq!(net.host_input(), Some(WIRE_FD));
    }

    #[test]
    fn transmit_of_a_writable_buffer_or_a_runt_stops_the_device() {
        let mem = memory();
        let (mut net, _, _) = device(&mem, &[], &[desc(DATA, 64, WRITE, 0)]);
        assert!(matches!(net.notify(TX), Err(DeviceError::Malformed(_))));
        let (mut net, _, _) = device(&mem, &[], &[desc(DATA, 4, 0, 0)]);
        assert!(matches!(net.notify(TX), Err(DeviceError::Malformed(_))));
    }

    #[test]
    fn receive_into_a_too_small_buffer_stops_the_device() {
        let mem = memory();
        let (mut net, wire, _) = device(&mem, &[desc(DATA, 8, WRITE, 0)], &[]);
        wire.to_guest.lock().unwrap().push_back(vec![0; 60]);
        assert!(matches!(net.poll_host(), Err(DeviceError::Malformed(_))));
    }

    #[test]
    fn malformed_descriptors_stop_the_device() {
        let mem = memory();
        let (mut net, _, _) = device(&mem, &[], &[desc(DATA, 12, NEXT, 77)]);
        assert!(matches!(
            net.notify(TX),
            Err(DeviceError::IndexOutOfRange { index: 77, .. })
        ));
        let (mut net, _, _) = device(&mem, &[], &[desc(MEM_SIZE as u64 - 1, 12, 0, 0)]);
        assert!(matches!(
            net.notify(TX),
            Err(DeviceError::OutsideMemory { .. })
        ));
        let (mut net, _, _) = device(
            &mem,
            &[],
            &[desc(DATA, 12, NEXT, 1), desc(DATA, 12, NEXT, 0)],
        );
        assert!(matches!(net.notify(TX), Err(DeviceError::Loop { .. })));
        let (mut net, wire, _) = device(&mem, &[desc(DATA, 2048, WRITE | NEXT, 0)], &[]);
        wire.to_guest.lock().unwrap().push_back(vec![0; 60]);
        assert!(matches!(net.poll_host(), Err(DeviceError::Loop { .. })));
    }

    #[test]
    fn config_space_holds_the_mac() {
        let mem = memory();
        let (net, _, _) = device(&mem, &[], &[]);
        assert_eq!(&net.config_space()[..6], &[2, 0, 0, 0, 0, 1]);
        assert_ne!(net.features() & F_MAC, 0);
    }
}
