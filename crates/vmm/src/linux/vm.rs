//! One Linux VM: built from a [`LinuxVmConfig`], run with one thread per vCPU.
//!
//! Each thread runs under its own seccomp list from the moment it has work (see
//! [`crate::seccomp`]): `linux-vcpu` on a vCPU thread (bound to its own vCPU), `linux-io`
//! on a network receive thread, `linux-main` on the main thread once the others
//! run; each bound to this VM's descriptors.

use std::io::Write;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::thread::JoinHandleExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kvm_bindings::{kvm_pit_config, KVM_MAX_CPUID_ENTRIES, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::{VcpuExit, VcpuFd, VmFd};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

use super::boot_params::{self, BootSpec};
use super::config::{virtio_slot, LinuxVmConfig};
use super::cpu::{self, BootEntry};
use super::error::LinuxVmError;
use super::loader;
use super::{layout, mptable};
use crate::console::Console;
use crate::devices::boot_timer::{self, BootTimer};
use crate::devices::i8042::I8042;
use crate::devices::serial::{self, SerialPort};
use crate::devices::tap::Tap;
use crate::devices::virtio::block::Block;
use crate::devices::virtio::mmio::{self, MmioTransport};
use crate::devices::virtio::net::Net;
use crate::error::HostError;
use crate::kvm::kvm_op;
use crate::kvm::vcpu::{self, Run, Shown, VcpuRegisters};
use crate::memory;
use crate::report::{micros, RunReport, Timings, VmExit};
use crate::seccomp::{self, ThreadFds, ThreadKind};
use crate::timer;
use crate::unikernel::process::signals;
use crate::unikernel::SandboxPolicy;

/// Devices shared by the vCPU threads.
struct Devices {
    serial: Mutex<SerialPort>,
    i8042: Mutex<I8042>,
    boot_timer: Mutex<BootTimer>,
    virtio: Vec<Arc<Mutex<MmioTransport>>>,
}

/// What a vCPU thread tells the run loop.
enum Event {
    Exit(VmExit),
    Error(LinuxVmError),
}

/// A network device's host side, served by a thread of its own while the VM
/// runs: its transport (which owns the tap) and the eventfd that wakes the thread
/// when the guest makes room for frames.
struct NetInput {
    transport: Arc<Mutex<MmioTransport>>,
    waker: EventFd,
}

/// A built Linux VM.
pub struct LinuxVm {
    // Drop order: vCPUs and the VM before the memory they map.
    vcpus: Vec<VcpuFd>,
    _vm: VmFd,
    _memory: GuestMemoryMmap,
    devices: Arc<Devices>,
    nets: Vec<NetInput>,
    /// Written when the run ends, to stop the network threads' waits.
    stop_fd: EventFd,
    /// The device descriptors the threads' filters bind their calls to.
    fds: ThreadFds,
    sandbox: SandboxPolicy,
    timeout: Option<Duration>,
    started: Instant,
    timings: Timings,
}

fn host(op: &'static str) -> impl FnOnce(std::io::Error) -> HostError {
    move |source| HostError { op, source }
}

impl LinuxVm {
    /// Loads the kernel and initrd, and prepares the VM. Console output goes to
    /// `console`.
    pub fn build(
        config: &LinuxVmConfig,
        console: Box<dyn Write + Send>,
    ) -> Result<Self, LinuxVmError> {
        let started = Instant::now();
        let mem_size = config.mem_size();
        let kvm = crate::kvm::open()?;
        let vm = kvm.create_vm().map_err(kvm_op("KVM_CREATE_VM"))?;
        vm.set_tss_address(layout::KVM_TSS_ADDR)
            .map_err(kvm_op("KVM_SET_TSS_ADDR"))?;
        vm.create_irq_chip().map_err(kvm_op("KVM_CREATE_IRQCHIP"))?;
        let pit = kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        };
        vm.create_pit2(pit).map_err(kvm_op("KVM_CREATE_PIT2"))?;
        let memory = crate::kvm::memory::create(&vm, mem_size)?;

        let kernel = loader::load_kernel(config.kernel(), &memory, mem_size)?;
        let initrd = match config.initrd() {
            Some(path) => {
                let (bytes, placement) = loader::read_initrd(path, &kernel, mem_size)?;
                memory::write(&memory, placement.addr, &bytes)?;
                Some(placement)
            }
            None => None,
        };
        let image_loaded = started.elapsed();

        let cmdline = config.full_cmdline();
        let mut cmdline_bytes = cmdline.clone().into_bytes();
        cmdline_bytes.push(0);
        memory::write(&memory, layout::CMDLINE_ADDR, &cmdline_bytes)?;
        let e820 = boot_params::e820_map(mem_size);
        let spec = BootSpec {
            e820: &e820,
            cmdline_addr: layout::CMDLINE_ADDR,
            cmdline_len: cmdline.len(),
            initrd,
        };
        memory::write_obj(
            &memory,
            layout::ZERO_PAGE_ADDR,
            boot_params::zero_page(&spec, kernel.setup_header),
        )?;
        if let BootEntry::Pvh { .. } = kernel.entry {
            let pvh = boot_params::pvh_start_info(&spec);
            memory::write_obj(&memory, layout::PVH_INFO_ADDR, pvh.start_info)?;
            for (i, entry) in pvh.memmap.iter().enumerate() {
                memory::write_obj(&memory, layout::PVH_MEMMAP_ADDR + 24 * i as u64, *entry)?;
            }
            for (i, module) in pvh.modules.iter().enumerate() {
                memory::write_obj(&memory, layout::PVH_MODLIST_ADDR + 32 * i as u64, *module)?;
            }
        }
        let gdt: Vec<u8> = cpu::gdt(kernel.entry)
            .iter()
            .flat_map(|d| d.to_le_bytes())
            .collect();
        memory::write(&memory, layout::GDT_ADDR, &gdt)?;
        cpu::identity_page_tables()?.write(&memory)?;
        memory::write(&memory, layout::EBDA_START, &mptable::build(config.vcpus()))?;

        // Devices, each interrupt line an irqfd into the in-kernel irqchip.
        let mut fds = ThreadFds::default();
        let mut irq_fds = Vec::new();
        let mut irqfd = |gsi: u32| -> Result<EventFd, LinuxVmError> {
            let fd = EventFd::new(libc::EFD_NONBLOCK).map_err(host("eventfd"))?;
            vm.register_irqfd(&fd, gsi).map_err(kvm_op("KVM_IRQFD"))?;
            irq_fds.push(fd.as_raw_fd());
            Ok(fd)
        };
        let serial = SerialPort::new(irqfd(layout::SERIAL_IRQ)?, Console::new(console));
        let mut virtio = Vec::new();
        let mut nets = Vec::new();
        for disk in config.disks() {
            let block = Block::open(&disk.path, disk.read_only).map_err(|source| HostError {
                op: "opening a --disk image",
                source: std::io::Error::new(
                    source.kind(),
                    format!("{}: {source}", disk.path.display()),
                ),
            })?;
            let (_, irq) = virtio_slot(virtio.len());
            let disk_fd = block.disk_fd();
            virtio.push(Arc::new(Mutex::new(MmioTransport::new(
                Box::new(block),
                memory.clone(),
                Box::new(irqfd(irq)?),
            ))));
            fds.disk.push(disk_fd);
        }
        for net in config.nets() {
            // One open per device: a second TUNSETIFF on a tap without
            // IFF_MULTI_QUEUE fails with EBUSY. The receive thread waits on this
            // descriptor through the device (`VirtioDevice::host_input`).
            let tap = Tap::open(&net.tap).map_err(|source| HostError {
                op: "opening a --net tap",
                source: std::io::Error::new(source.kind(), format!("tap {}: {source}", net.tap)),
            })?;
            let (_, irq) = virtio_slot(virtio.len());
            let tap_fd = tap.as_raw_fd();
            let mut transport = MmioTransport::new(
                Box::new(Net::new(Box::new(tap), net.mac)),
                memory.clone(),
                Box::new(irqfd(irq)?),
            );
            let waker = EventFd::new(libc::EFD_NONBLOCK).map_err(host("eventfd"))?;
            let waker_clone = waker.try_clone().map_err(host("eventfd"))?;
            fds.eventfd
                .extend([waker.as_raw_fd(), waker_clone.as_raw_fd()]);
            fds.tap.push(tap_fd);
            transport.set_host_waker(waker_clone);
            let transport = Arc::new(Mutex::new(transport));
            nets.push(NetInput {
                transport: transport.clone(),
                waker,
            });
            virtio.push(transport);
        }
        // Made now rather than in `run`: once the VM is built its process may be
        // jailed with no room for new descriptors.
        let stop_fd = EventFd::new(libc::EFD_NONBLOCK).map_err(host("eventfd"))?;
        fds.eventfd.push(stop_fd.as_raw_fd());
        fds.eventfd.extend(irq_fds);

        let supported = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(kvm_op("KVM_GET_SUPPORTED_CPUID"))?;
        let mut vcpus = Vec::new();
        for index in 0..config.vcpus() {
            let vcpu = vm
                .create_vcpu(u64::from(index))
                .map_err(kvm_op("KVM_CREATE_VCPU"))?;
            cpu::configure(&vcpu, &supported, index, config.vcpus(), config.cpu_clear())?;
            if index == 0 {
                cpu::set_boot_registers(&vcpu, kernel.entry)?;
            }
            vcpus.push(vcpu);
        }

        let timings = Timings {
            image_load_us: micros(image_loaded),
            vm_setup_us: micros(started.elapsed() - image_loaded),
            ..Timings::default()
        };
        Ok(Self {
            vcpus,
            _vm: vm,
            _memory: memory,
            devices: Arc::new(Devices {
                serial: Mutex::new(serial),
                i8042: Mutex::new(I8042::default()),
                boot_timer: Mutex::new(BootTimer::new(started)),
                virtio,
            }),
            nets,
            stop_fd,
            fds,
            sandbox: SandboxPolicy::default(),
            timeout: config.timeout(),
            started,
            timings,
        })
    }

    /// What the threads' seccomp filters must leave the monitor beyond its
    /// devices (the descriptors it writes once the guest runs: a report file), and
    /// whether to install them.
    pub fn set_sandbox(&mut self, policy: SandboxPolicy) {
        self.sandbox = policy;
    }

    /// The filter of a `kind` thread, if filters are in force; `vcpu` is its vCPU.
    fn filter(
        &self,
        kind: ThreadKind,
        vcpu: Option<RawFd>,
    ) -> Result<Option<seccompiler::BpfProgram>, LinuxVmError> {
        if !self.sandbox.enforce {
            return Ok(None);
        }
        let fds = ThreadFds {
            vcpu: vcpu.into_iter().collect(),
            output: self.sandbox.writable.clone(),
            ..self.fds.clone()
        };
        Ok(Some(seccomp::compile(kind, &fds)?))
    }

    /// Runs the guest until it resets, crashes or times out.
    pub fn run(mut self) -> Result<RunReport, LinuxVmError> {
        // A kick only has to make KVM_RUN return; the handler is the one every
        // guest in the process shares (see `crate::timer`).
        signals::install_kick()?;
        let stop = Arc::new(AtomicBool::new(false));
        let (events, inbox) = mpsc::channel::<Event>();
        let mut threads = Vec::new();
        for (index, vcpu) in std::mem::take(&mut self.vcpus).into_iter().enumerate() {
            let filter = self.filter(ThreadKind::LinuxVcpu, Some(vcpu.as_raw_fd()))?;
            let devices = self.devices.clone();
            let stop = stop.clone();
            let events = events.clone();
            let thread = std::thread::Builder::new()
                .name(format!("vcpu{index}"))
                .spawn(move || {
                    if let Some(Err(error)) = filter.as_ref().map(seccomp::apply) {
                        let _ = events.send(Event::Error(error.into()));
                        return;
                    }
                    vcpu_loop(vcpu, &devices, &stop, &events)
                })
                .map_err(host("starting a vCPU thread"))?;
            threads.push(thread);
        }
        let io_filter = self.filter(ThreadKind::LinuxIo, None)?;
        let main_filter = self.filter(ThreadKind::LinuxMain, None)?;
        let stop_fd = Arc::new(self.stop_fd);
        let mut io_threads = Vec::new();
        for (index, NetInput { transport, waker }) in self.nets.drain(..).enumerate() {
            let (stop_fd, stop) = (stop_fd.clone(), stop.clone());
            let filter = io_filter.clone();
            let events = events.clone();
            let thread = std::thread::Builder::new()
                .name(format!("net{index}-rx"))
                .spawn(move || {
                    if let Some(Err(error)) = filter.as_ref().map(seccomp::apply) {
                        let _ = events.send(Event::Error(error.into()));
                        return;
                    }
                    drop(events);
                    mmio::serve_host_input(&transport, &waker, &stop_fd, &stop)
                })
                .map_err(host("starting a network thread"))?;
            io_threads.push(thread);
        }
        drop(events);
        if let Some(filter) = main_filter {
            if let Err(error) = seccomp::apply(&filter) {
                // Stop the threads just started before giving up.
                stop.store(true, Ordering::SeqCst);
                let _ = stop_fd.write(1);
                return Err(error.into());
            }
        }

        let deadline = self.timeout.map(|t| Instant::now() + t);
        let outcome = loop {
            let wait = deadline.map_or(Duration::from_secs(3600), |d| {
                d.saturating_duration_since(Instant::now())
            });
            match inbox.recv_timeout(wait) {
                Ok(Event::Exit(exit)) => break Ok(exit),
                Ok(Event::Error(error)) => break Err(error),
                Err(mpsc::RecvTimeoutError::Timeout)
                    if deadline.is_some_and(|d| Instant::now() >= d) =>
                {
                    break Ok(VmExit::timed_out(self.timeout.unwrap_or_default()));
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    break Err(LinuxVmError::Internal(
                        "every vCPU thread ended without a verdict",
                    ))
                }
            }
        };

        // Stop the vCPUs: set the flag, then kick each thread out of KVM_RUN until
        // it has seen it (a kick can land just before KVM_RUN is entered).
        stop.store(true, Ordering::SeqCst);
        let _ = stop_fd.write(1);
        for thread in threads {
            while !thread.is_finished() {
                // SAFETY: the thread is alive (not finished) and joinable, so its
                // pthread_t is valid; the signal's handler does nothing.
                unsafe { libc::pthread_kill(thread.as_pthread_t(), timer::kick_signal()) };
                std::thread::sleep(Duration::from_millis(1));
            }
            let _ = thread.join();
        }
        for thread in io_threads {
            let _ = thread.join();
        }
        let exit = outcome?;
        let (written, dropped) = self
            .devices
            .serial
            .lock()
            .map_or((0, 0), |s| s.console_counts());
        self.timings.total_us = micros(self.started.elapsed());
        self.timings.boot_done_us = self
            .devices
            .boot_timer
            .lock()
            .ok()
            .and_then(|t| t.booted())
            .map(micros);
        Ok(RunReport {
            platform: crate::platform::Platform::Kvm,
            exit,
            timings: self.timings,
            console_bytes: written,
            console_dropped: dropped,
            jail: None,
        })
    }
}

fn vcpu_loop(mut vcpu: VcpuFd, devices: &Devices, stop: &AtomicBool, events: &mpsc::Sender<Event>) {
    while !stop.load(Ordering::SeqCst) {
        let mut crash_reason = None;
        let verdict = match vcpu::run(&mut vcpu) {
            Ok(Run::Interrupted) => None,
            Ok(Run::Exit(VcpuExit::IoOut(port, data))) => io_out(devices, port, data),
            Ok(Run::Exit(VcpuExit::IoIn(port, data))) => {
                io_in(devices, port, data);
                None
            }
            Ok(Run::Exit(VcpuExit::MmioRead(addr, data))) => {
                data.fill(0);
                if let Some((transport, offset)) = virtio_at(devices, addr) {
                    if let Ok(mut t) = transport.lock() {
                        t.read(offset, data);
                    }
                }
                None
            }
            Ok(Run::Exit(VcpuExit::MmioWrite(addr, data))) => {
                if let Some((transport, offset)) = virtio_at(devices, addr) {
                    if let Ok(mut t) = transport.lock() {
                        t.write(offset, data);
                    }
                }
                None
            }
            Ok(Run::Exit(VcpuExit::Hlt)) => Some(Event::Exit(VmExit::Exited {
                status: 0,
                message: None,
            })),
            Ok(Run::Exit(VcpuExit::SystemEvent(..))) => Some(Event::Exit(VmExit::Exited {
                status: 0,
                message: None,
            })),
            Ok(Run::Exit(VcpuExit::Shutdown)) => {
                crash_reason = Some("the guest triple-faulted (lightvm does not emulate a CPU reset; reboot with reboot=k)".to_owned());
                None
            }
            Ok(Run::Exit(VcpuExit::InternalError)) => {
                crash_reason = Some("KVM could not emulate an instruction (on hosts that emulate guest kernel mode, try --cpu-clear)".to_owned());
                None
            }
            Ok(Run::Exit(other)) => {
                crash_reason = Some(format!("unexpected VM exit {other:?}"));
                None
            }
            Err(error) => Some(Event::Error(error.into())),
        };
        let verdict = verdict.or_else(|| crash_reason.map(|reason| crash(&vcpu, &reason)));
        if let Some(event) = verdict {
            let _ = events.send(event);
            return;
        }
    }
}

fn io_out(devices: &Devices, port: u16, data: &[u8]) -> Option<Event> {
    let value = data.first().copied().unwrap_or(0);
    match port {
        serial::COM1..=0x3ff => {
            if let Ok(mut s) = devices.serial.lock() {
                s.write((port - serial::COM1) as u8, value);
            }
        }
        p if I8042::handles(p) => {
            let reset = devices.i8042.lock().is_ok_and(|mut k| k.write(p, value));
            if reset {
                return Some(Event::Exit(VmExit::Exited {
                    status: 0,
                    message: None,
                }));
            }
        }
        boot_timer::PORT => {
            let booted = devices
                .boot_timer
                .lock()
                .ok()
                .and_then(|mut t| t.write(value));
            if let Some(after) = booted {
                eprintln!(
                    "lightvm: guest boot time {:.1} ms (init reached the boot timer)",
                    after.as_secs_f64() * 1e3
                );
            }
        }
        _ => {}
    }
    None
}

fn io_in(devices: &Devices, port: u16, data: &mut [u8]) {
    data.fill(0);
    let value = match port {
        serial::COM1..=0x3ff => devices
            .serial
            .lock()
            .map_or(0, |mut s| s.read((port - serial::COM1) as u8)),
        p if I8042::handles(p) => devices.i8042.lock().map_or(0, |mut k| k.read(p)),
        _ => return,
    };
    if let Some(first) = data.first_mut() {
        *first = value;
    }
}

fn virtio_at(devices: &Devices, addr: u64) -> Option<(&Arc<Mutex<MmioTransport>>, u64)> {
    let offset = addr.checked_sub(layout::VIRTIO_MMIO_BASE)?;
    let index = usize::try_from(offset / layout::VIRTIO_MMIO_SIZE).ok()?;
    devices
        .virtio
        .get(index)
        .map(|t| (t, offset % layout::VIRTIO_MMIO_SIZE))
}

/// A crash, reported even when KVM cannot say more than `reason`.
fn crash(vcpu: &VcpuFd, reason: &str) -> Event {
    let registers = VcpuRegisters::read(vcpu).ok();
    let vector = vcpu::exception_vector(vcpu).ok();
    Event::Exit(VmExit::Crashed(vcpu::crash_report(
        reason.to_owned(),
        vector,
        registers.as_ref(),
        Shown::Kernel,
    )))
}
