//! The virtio-mmio transport (virtio 1.x, register layout version 2).
//!
//! The driver finds the device through the kernel command line
//! (`virtio_mmio.device=4K@ADDR:IRQ`), negotiates features, hands over its queues
//! and sets DRIVER_OK; after that every QueueNotify write runs the device's queue
//! on the vCPU thread that wrote it, and a used buffer raises the device's
//! interrupt through its irqfd.
//!
//! Host-side input (frames on a tap) is served by [`serve_host_input`] on a thread
//! of its own, which waits on the device's descriptor only while the device can
//! take input ([`VirtioDevice::host_input`]); when the guest makes room again the
//! transport wakes it through the waker it was given ([`MmioTransport::set_host_waker`]).

use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

use super::{DeviceError, VirtioDevice, QUEUE_SIZE};

const MAGIC: u32 = 0x7472_6976; // "virt"
const VERSION: u32 = 2;
const VENDOR: u32 = 0x4c56_4d00; // "LVM\0"

const STATUS_ACKNOWLEDGE: u32 = 1;
const STATUS_DRIVER: u32 = 2;
const STATUS_DRIVER_OK: u32 = 4;
const STATUS_FEATURES_OK: u32 = 8;
const STATUS_NEEDS_RESET: u32 = 0x40;
const STATUS_FAILED: u32 = 0x80;

/// Interrupt status: a used buffer.
pub const INT_VRING: u32 = 1;
/// Interrupt status: the configuration (or the device's state) changed.
pub const INT_CONFIG: u32 = 2;

/// Something that raises a device's interrupt line (an irqfd; a counter in tests).
pub trait Irq: Send {
    /// Raises the interrupt.
    fn trigger(&self);
}

impl Irq for EventFd {
    fn trigger(&self) {
        // A full eventfd counter means an interrupt is already pending.
        let _ = self.write(1);
    }
}

/// One virtio-mmio device: the transport state around a [`VirtioDevice`].
pub struct MmioTransport {
    device: Box<dyn VirtioDevice>,
    irq: Box<dyn Irq>,
    memory: GuestMemoryMmap,
    queues: Vec<Queue>,
    queue_select: u32,
    device_features_select: u32,
    driver_features_select: u32,
    driver_features: u64,
    status: u32,
    interrupt_status: u32,
    config_generation: u32,
    active: bool,
    /// Why the device stopped, once a driver error stopped it.
    stopped: Option<DeviceError>,
    /// Written when the device starts wanting host input (see
    /// [`serve_host_input`]).
    host_waker: Option<EventFd>,
}

impl MmioTransport {
    /// Wraps `device`, whose buffers live in `memory`, interrupting through `irq`.
    pub fn new(device: Box<dyn VirtioDevice>, memory: GuestMemoryMmap, irq: Box<dyn Irq>) -> Self {
        let queues = (0..device.queue_count())
            .map(|_| Queue::new(QUEUE_SIZE).expect("QUEUE_SIZE is a power of two"))
            .collect();
        Self {
            device,
            irq,
            memory,
            queues,
            queue_select: 0,
            device_features_select: 0,
            driver_features_select: 0,
            driver_features: 0,
            status: 0,
            interrupt_status: 0,
            config_generation: 0,
            active: false,
            stopped: None,
            host_waker: None,
        }
    }

    /// Gives the transport the eventfd that [`serve_host_input`] waits on beside
    /// the device's own descriptor: written whenever a guest action (setting the
    /// device up, posting buffers) makes the device want host input again.
    pub fn set_host_waker(&mut self, waker: EventFd) {
        self.host_waker = Some(waker);
    }

    /// The descriptor to wait on for host input now, if the device is running
    /// and can take some.
    pub fn host_input(&self) -> Option<RawFd> {
        if !self.active || self.stopped.is_some() {
            return None;
        }
        self.device.host_input()
    }

    /// Runs `change` (a guest's register write) and wakes the host-input thread
    /// if the device wants input after it and did not before.
    fn waking(&mut self, change: impl FnOnce(&mut Self)) {
        let before = self.host_input().is_some();
        change(self);
        if !before && self.host_input().is_some() {
            if let Some(waker) = &self.host_waker {
                // A full counter means a wake-up is pending already.
                let _ = waker.write(1);
            }
        }
    }

    /// The device's name.
    pub fn name(&self) -> &'static str {
        self.device.name()
    }

    /// Why the device was stopped, if it was.
    pub fn stopped(&self) -> Option<&DeviceError> {
        self.stopped.as_ref()
    }

    /// The driver-visible status register.
    pub fn status(&self) -> u32 {
        self.status
    }

    fn selected_queue(&mut self) -> Option<&mut Queue> {
        self.queues.get_mut(self.queue_select as usize)
    }

    /// A 32-bit (or narrower, for the config space) read at `offset`.
    pub fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= 0x100 {
            let config = self.device.config_space();
            for (i, byte) in data.iter_mut().enumerate() {
                *byte = config
                    .get((offset - 0x100) as usize + i)
                    .copied()
                    .unwrap_or(0);
            }
            return;
        }
        let value = match offset {
            0x00 => MAGIC,
            0x04 => VERSION,
            0x08 => self.device.device_type(),
            0x0c => VENDOR,
            0x10 => {
                let features = self.device.features();
                match self.device_features_select {
                    0 => features as u32,
                    1 => (features >> 32) as u32,
                    _ => 0,
                }
            }
            0x34 => self.selected_queue().map_or(0, |q| u32::from(q.max_size())),
            0x44 => self.selected_queue().map_or(0, |q| u32::from(q.ready())),
            0x60 => self.interrupt_status,
            0x70 => self.status,
            0xfc => self.config_generation,
            _ => 0,
        };
        let bytes = value.to_le_bytes();
        let n = data.len().min(4);
        data[..n].copy_from_slice(&bytes[..n]);
    }

    /// A write at `offset`.
    pub fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= 0x100 {
            return; // Neither block nor net has a writable config field we support.
        }
        let mut bytes = [0u8; 4];
        let n = data.len().min(4);
        bytes[..n].copy_from_slice(&data[..n]);
        let value = u32::from_le_bytes(bytes);
        let setup = self.status & STATUS_DRIVER_OK == 0;
        match offset {
            0x14 => self.device_features_select = value,
            0x20 if setup => match self.driver_features_select {
                0 => {
                    self.driver_features = (self.driver_features & !0xffff_ffff) | u64::from(value)
                }
                1 => {
                    self.driver_features =
                        (self.driver_features & 0xffff_ffff) | (u64::from(value) << 32)
                }
                _ => {}
            },
            0x24 => self.driver_features_select = value,
            0x30 => self.queue_select = value,
            0x38 if setup => {
                if let Some(q) = self.selected_queue() {
                    q.set_size(value as u16);
                }
            }
            0x44 if setup => {
                if let Some(q) = self.selected_queue() {
                    q.set_ready(value == 1);
                }
            }
            0x50 => self.waking(|t| t.notify(value as usize)),
            0x64 => self.interrupt_status &= !value,
            0x70 => self.waking(|t| t.set_status(value)),
            0x80 if setup => {
                self.queue_address(|q, v| q.set_desc_table_address(Some(v), None), value)
            }
            0x84 if setup => {
                self.queue_address(|q, v| q.set_desc_table_address(None, Some(v)), value)
            }
            0x90 if setup => {
                self.queue_address(|q, v| q.set_avail_ring_address(Some(v), None), value)
            }
            0x94 if setup => {
                self.queue_address(|q, v| q.set_avail_ring_address(None, Some(v)), value)
            }
            0xa0 if setup => {
                self.queue_address(|q, v| q.set_used_ring_address(Some(v), None), value)
            }
            0xa4 if setup => {
                self.queue_address(|q, v| q.set_used_ring_address(None, Some(v)), value)
            }
            _ => {}
        }
    }

    fn queue_address(&mut self, set: fn(&mut Queue, u32), value: u32) {
        if let Some(queue) = self.selected_queue() {
            set(queue, value);
        }
    }

    fn set_status(&mut self, value: u32) {
        if value == 0 {
            self.reset();
            return;
        }
        if value & STATUS_FEATURES_OK != 0 && self.status & STATUS_FEATURES_OK == 0 {
            // Features the device never offered make the negotiation fail.
            if self.driver_features & !self.device.features() != 0 {
                self.status = value & !STATUS_FEATURES_OK;
                return;
            }
        }
        let becomes_ok = value & STATUS_DRIVER_OK != 0 && self.status & STATUS_DRIVER_OK == 0;
        self.status = value | (self.status & STATUS_NEEDS_RESET);
        if becomes_ok && !self.active {
            let ready = value & (STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK)
                == STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK;
            let valid = self.queues.iter().all(|q| q.is_valid(&self.memory));
            if ready && valid {
                self.device
                    .activate(self.memory.clone(), std::mem::take(&mut self.queues));
                self.active = true;
            } else {
                self.fail(DeviceError::Malformed(
                    "DRIVER_OK with unnegotiated features or an invalid queue".into(),
                ));
            }
        }
    }

    fn reset(&mut self) {
        self.device.reset();
        self.queues = (0..self.device.queue_count())
            .map(|_| Queue::new(QUEUE_SIZE).expect("QUEUE_SIZE is a power of two"))
            .collect();
        self.status = 0;
        self.interrupt_status = 0;
        self.driver_features = 0;
        self.active = false;
        self.stopped = None;
    }

    fn notify(&mut self, index: usize) {
        if !self.active || self.stopped.is_some() || index >= self.device.queue_count() {
            return;
        }
        let result = self.device.notify(index);
        self.after(result);
    }

    /// Runs the device's host-side work (network receive).
    pub fn poll_host(&mut self) {
        if !self.active || self.stopped.is_some() {
            return;
        }
        let result = self.device.poll_host();
        self.after(result);
    }

    fn after(&mut self, result: Result<bool, DeviceError>) {
        match result {
            Ok(true) => {
                self.interrupt_status |= INT_VRING;
                self.irq.trigger();
            }
            Ok(false) => {}
            Err(error) => self.fail(error),
        }
    }

    /// A driver error: the device stops and tells the driver it needs a reset.
    fn fail(&mut self, error: DeviceError) {
        eprintln!("lightvm: {} stopped: {error}", self.device.name());
        self.stopped = Some(error);
        self.status |= STATUS_NEEDS_RESET;
        if self.status & STATUS_DRIVER_OK == 0 {
            self.status |= STATUS_FAILED;
        }
        self.config_generation = self.config_generation.wrapping_add(1);
        self.interrupt_status |= INT_CONFIG;
        self.irq.trigger();
    }
}

/// Serves a device's host-side input until `stop` is set (and `stop_fd` written):
/// waits on the stop eventfd, the transport's waker and — only while the device
/// can take input — the device's descriptor, and runs the device's host work when
/// that descriptor is ready. Nothing here polls on a timer or spins: a device
/// holding a frame the guest has no room for leaves its descriptor out of the wait
/// until the guest's notify wakes this loop through `waker`.
pub fn serve_host_input(
    transport: &Mutex<MmioTransport>,
    waker: &EventFd,
    stop_fd: &EventFd,
    stop: &AtomicBool,
) {
    while !stop.load(Ordering::SeqCst) {
        let input = transport.lock().ok().and_then(|t| t.host_input());
        let mut fds = [
            pollin(stop_fd.as_raw_fd()),
            pollin(waker.as_raw_fd()),
            // A negative descriptor is left out of the wait by poll(2).
            pollin(input.unwrap_or(-1)),
        ];
        // SAFETY: `fds` is a valid array of three pollfd structs, alive for the call.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), 3, -1) };
        if ready <= 0 {
            continue; // EINTR: look at `stop` again.
        }
        if fds[1].revents != 0 {
            let _ = waker.read();
        }
        if input.is_some() && fds[2].revents != 0 {
            if let Ok(mut t) = transport.lock() {
                t.poll_host();
            }
        }
    }
}

fn pollin(fd: RawFd) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::memory;
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    #[derive(Clone, Default)]
    pub struct Counter(pub Arc<AtomicU32>);
    impl Irq for Counter {
        fn trigger(&self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    struct Dummy {
        fail: bool,
    }
    impl VirtioDevice for Dummy {
        fn device_type(&self) -> u32 {
            2
        }
        fn name(&self) -> &'static str {
            "dummy"
        }
        fn features(&self) -> u64 {
            super::super::F_VERSION_1
        }
        fn queue_count(&self) -> usize {
            1
        }
        fn config_space(&self) -> Vec<u8> {
            vec![1, 2, 3, 4, 5, 6, 7, 8]
        }
        fn activate(&mut self, _: GuestMemoryMmap, _: Vec<Queue>) {}
        fn notify(&mut self, _: usize) -> Result<bool, DeviceError> {
            if self.fail {
                Err(DeviceError::Loop { head: 3 })
            } else {
                Ok(true)
            }
        }
        fn reset(&mut self) {}
    }

    fn read32(t: &mut MmioTransport, offset: u64) -> u32 {
        let mut b = [0u8; 4];
        t.read(offset, &mut b);
        u32::from_le_bytes(b)
    }

    fn bring_up(t: &mut MmioTransport) {
        t.write(0x70, &1u32.to_le_bytes());
        t.write(0x70, &3u32.to_le_bytes());
        t.write(0x24, &1u32.to_le_bytes());
        t.write(0x20, &1u32.to_le_bytes());
        t.write(0x70, &11u32.to_le_bytes());
        t.write(0x30, &0u32.to_le_bytes());
        t.write(0x38, &16u32.to_le_bytes());
        for (reg, addr) in [(0x80u64, 0x1000u32), (0x90, 0x2000), (0xa0, 0x3000)] {
            t.write(reg, &addr.to_le_bytes());
        }
        t.write(0x44, &1u32.to_le_bytes());
        t.write(0x70, &15u32.to_le_bytes());
    }

    #[test]
    fn registers_identify_the_device_and_its_config() {
        let mut t = MmioTransport::new(
            Box::new(Dummy { fail: false }),
            memory(),
            Box::new(Counter::default()),
        );
        assert_eq!(read32(&mut t, 0), MAGIC);
        assert_eq!(read32(&mut t, 4), 2);
        assert_eq!(read32(&mut t, 8), 2);
        t.write(0x14, &1u32.to_le_bytes());
        assert_eq!(read32(&mut t, 0x10), 1, "VERSION_1 in the high word");
        assert_eq!(read32(&mut t, 0x34), u32::from(QUEUE_SIZE));
        let mut byte = [0u8; 1];
        t.read(0x102, &mut byte);
        assert_eq!(byte, [3]);
    }

    #[test]
    fn notifications_interrupt_and_driver_errors_stop_only_the_device() {
        let irq = Counter::default();
        let mut t = MmioTransport::new(
            Box::new(Dummy { fail: false }),
            memory(),
            Box::new(irq.clone()),
        );
        bring_up(&mut t);
        assert_eq!(t.status() & STATUS_DRIVER_OK, STATUS_DRIVER_OK);
        t.write(0x50, &0u32.to_le_bytes());
        assert_eq!(irq.0.load(Ordering::SeqCst), 1);
        assert_eq!(read32(&mut t, 0x60), INT_VRING);
        t.write(0x64, &INT_VRING.to_le_bytes());
        assert_eq!(read32(&mut t, 0x60), 0);

        let mut t = MmioTransport::new(
            Box::new(Dummy { fail: true }),
            memory(),
            Box::new(irq.clone()),
        );
        bring_up(&mut t);
        t.write(0x50, &0u32.to_le_bytes());
        assert_eq!(t.stopped(), Some(&DeviceError::Loop { head: 3 }));
        assert_ne!(read32(&mut t, 0x70) & STATUS_NEEDS_RESET, 0);
        // Further notifications are ignored until the driver resets the device.
        t.write(0x50, &0u32.to_le_bytes());
        t.write(0x70, &0u32.to_le_bytes());
        assert_eq!(t.stopped(), None);
        assert_eq!(read32(&mut t, 0x70), 0);
    }

    /// A device whose host input is an always-readable eventfd, and which (like
    /// virtio-net with a frame and no buffer) has no room after each input until
    /// the guest notifies it.
    struct Input {
        fd: EventFd,
        room: bool,
        served: Arc<AtomicU32>,
    }
    impl VirtioDevice for Input {
        fn device_type(&self) -> u32 {
            1
        }
        fn name(&self) -> &'static str {
            "input"
        }
        fn features(&self) -> u64 {
            super::super::F_VERSION_1
        }
        fn queue_count(&self) -> usize {
            1
        }
        fn config_space(&self) -> Vec<u8> {
            Vec::new()
        }
        fn activate(&mut self, _: GuestMemoryMmap, _: Vec<Queue>) {}
        fn notify(&mut self, _: usize) -> Result<bool, DeviceError> {
            self.room = true;
            Ok(false)
        }
        fn poll_host(&mut self) -> Result<bool, DeviceError> {
            self.served.fetch_add(1, Ordering::SeqCst);
            self.room = false;
            Ok(false)
        }
        fn host_input(&self) -> Option<RawFd> {
            self.room.then(|| self.fd.as_raw_fd())
        }
        fn reset(&mut self) {}
    }

    fn wait_until(what: &str, done: impl Fn() -> bool) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !done() {
            assert!(std::time::Instant::now() < deadline, "never: {what}");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    #[test]
    fn host_input_is_waited_for_only_while_the_device_has_room() {
        let fd = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        fd.write(1).unwrap(); // readable, and never read: input always waits
        let served = Arc::new(AtomicU32::new(0));
        let device = Input {
            fd,
            room: true,
            served: served.clone(),
        };
        let mut t = MmioTransport::new(Box::new(device), memory(), Box::new(Counter::default()));
        let waker = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        t.set_host_waker(waker.try_clone().unwrap());
        assert_eq!(t.host_input(), None, "not set up yet");
        bring_up(&mut t);
        assert!(t.host_input().is_some());
        assert_eq!(
            waker.read().unwrap(),
            1,
            "setting the device up wakes the loop"
        );
        let transport = Arc::new(Mutex::new(t));
        let stop = Arc::new(AtomicBool::new(false));
        let stop_fd = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let thread = {
            let (transport, stop) = (transport.clone(), stop.clone());
            let stop_fd = stop_fd.try_clone().unwrap();
            std::thread::spawn(move || serve_host_input(&transport, &waker, &stop_fd, &stop))
        };
        wait_until("the first input is served", || {
            served.load(Ordering::SeqCst) == 1
        });
        // The input is still readable but the device has no room: a loop that
        // waited on it anyway would serve it again and again meanwhile.
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert_eq!(
            served.load(Ordering::SeqCst),
            1,
            "the loop spun on input it cannot take"
        );
        // The guest makes room: the loop is woken and serves the next input.
        transport.lock().unwrap().write(0x50, &0u32.to_le_bytes());
        wait_until("input is served again", || {
            served.load(Ordering::SeqCst) == 2
        });
        stop.store(true, Ordering::SeqCst);
        stop_fd.write(1).unwrap();
        thread.join().unwrap();
    }

    #[test]
    fn unoffered_features_fail_negotiation() {
        let mut t = MmioTransport::new(
            Box::new(Dummy { fail: false }),
            memory(),
            Box::new(Counter::default()),
        );
        t.write(0x70, &3u32.to_le_bytes());
        t.write(0x24, &0u32.to_le_bytes());
        t.write(0x20, &(1u32 << 5).to_le_bytes());
        t.write(0x70, &11u32.to_le_bytes());
        assert_eq!(read32(&mut t, 0x70) & STATUS_FEATURES_OK, 0);
    }
}
