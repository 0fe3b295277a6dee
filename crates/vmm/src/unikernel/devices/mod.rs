//! Devices of unikernel VMs: a network interface on a host tap and a disk on a raw
//! image file, both driven through rings in guest memory (`lightvm_abi::devices`).
//!
//! The exit loop hands the device hypercalls here ([`Devices::hypercall`]) and the
//! `poll` hypercall's wait ([`Devices::poll`]): every device is serviced, and only
//! if none has anything for the guest does the VMM block, in an epoll set of the
//! device descriptors ([`event_loop`]), until one is readable, the timeout passes or
//! the deadline timer's signal arrives.
//!
//! * [`tap`]: opening a tap interface (reusable by any VM kind);
//! * [`ring`]: checked access to guest rings;
//! * [`net`], [`block`]: the two devices;
//! * [`event_loop`]: the wait.

pub mod block;
pub mod event_loop;
pub mod net;
pub mod ring;

use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use crate::devices::tap::Tap;
use crate::error::HostError;
use crate::unikernel::guest::{AbiViolation, Guest};
use block::BlockDevice;
use event_loop::EventLoop;
use lightvm_abi::devices::{BlockSetupArgs, NetSetupArgs, NotifyArgs, READY_NET};
use lightvm_abi::Hypercall;
use net::NetDevice;

pub use crate::devices::config::{DeviceSyntax, DiskConfig, NetConfig};

/// The descriptors behind a VM's devices (see [`Devices::fds`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeviceFds {
    /// The tap (read, written).
    pub tap: Option<RawFd>,
    /// The disk image (read, written, synced at the guest's offsets).
    pub disk: Option<RawFd>,
    /// The epoll set the `poll` hypercall waits in.
    pub events: Option<RawFd>,
}

/// The devices of one VM.
#[derive(Default)]
pub struct Devices {
    net: Option<NetDevice>,
    block: Option<BlockDevice>,
    events: Option<EventLoop>,
}

impl Devices {
    /// Opens the host side of the devices asked for: the tap and the disk image.
    pub fn open(net: Option<&NetConfig>, disk: Option<&DiskConfig>) -> Result<Self, HostError> {
        let tap = net
            .map(|config| {
                Tap::open(&config.tap)
                    .map(|tap| (tap, config.mac))
                    .map_err(|source| HostError {
                        op: "opening the network device (--net)",
                        source,
                    })
            })
            .transpose()?;
        let block = disk
            .map(|config| {
                BlockDevice::open(&config.path, config.read_only).map_err(|e| HostError {
                    op: "opening the disk image (--disk)",
                    source: std::io::Error::new(
                        e.kind(),
                        format!("{}: {e}", config.path.display()),
                    ),
                })
            })
            .transpose()?;
        Self::new(tap, block)
    }

    /// The devices of a tap with the guest's MAC and a disk, both opened already.
    pub fn new(net: Option<(Tap, [u8; 6])>, block: Option<BlockDevice>) -> Result<Self, HostError> {
        let mut devices = Self {
            block,
            ..Self::default()
        };
        if let Some((tap, mac)) = net {
            let mut events = EventLoop::new().map_err(|source| HostError {
                op: "creating the device event loop",
                source,
            })?;
            events
                .add_readable(tap.as_raw_fd(), READY_NET)
                .map_err(|source| HostError {
                    op: "watching the tap interface",
                    source,
                })?;
            devices.net = Some(NetDevice::new(tap, mac));
            devices.events = Some(events);
        }
        Ok(devices)
    }

    /// Answers a device hypercall whose argument struct is at `addr`.
    pub fn hypercall(
        &mut self,
        guest: &Guest<'_>,
        call: Hypercall,
        addr: u64,
    ) -> Result<(), AbiViolation> {
        match call {
            Hypercall::NetSetup => {
                let mut args: NetSetupArgs = guest.read_inout(call, addr)?;
                args.present = 0;
                if let Some(net) = &mut self.net {
                    net.setup(guest, &mut args)?;
                }
                guest.write_args(call, addr, &args)
            }
            Hypercall::BlockSetup => {
                let mut args: BlockSetupArgs = guest.read_inout(call, addr)?;
                args.present = 0;
                if let Some(block) = &mut self.block {
                    block.setup(guest, &mut args)?;
                }
                guest.write_args(call, addr, &args)
            }
            Hypercall::Notify => {
                let mut args: NotifyArgs = guest.read_inout(call, addr)?;
                args.ready = self.service(guest)?;
                guest.write_args(call, addr, &args)
            }
            other => Err(AbiViolation(format!(
                "{}: not a device hypercall",
                other.name()
            ))),
        }
    }

    /// The `poll` hypercall: services the devices and, if none has work for the
    /// guest, waits up to `timeout` (`None`: until one has) for one that does.
    /// Returns the `READY_*` bits.
    pub fn poll(
        &mut self,
        guest: &Guest<'_>,
        timeout: Option<Duration>,
    ) -> Result<u64, AbiViolation> {
        let ready = self.service(guest)?;
        if ready != 0 || timeout == Some(Duration::ZERO) {
            return Ok(ready);
        }
        let can_receive = match &self.net {
            Some(net) => net.can_receive(guest)?,
            None => false,
        };
        match (&mut self.events, can_receive) {
            (Some(events), true) => {
                let woken = events
                    .wait(timeout)
                    .map_err(|e| AbiViolation(format!("poll: host wait failed: {e}")))?;
                if woken == 0 {
                    return Ok(0);
                }
                self.service(guest)
            }
            _ => {
                crate::timer::wait(timeout)
                    .map_err(|e| AbiViolation(format!("poll: host wait failed: {e}")))?;
                Ok(0)
            }
        }
    }

    fn service(&mut self, guest: &Guest<'_>) -> Result<u64, AbiViolation> {
        let mut ready = 0;
        if let Some(net) = &mut self.net {
            ready |= net.service(guest)?;
        }
        if let Some(block) = &mut self.block {
            ready |= block.service(guest)?;
        }
        Ok(ready)
    }

    /// The host descriptors the devices use while the guest runs: what a sandbox
    /// must leave the monitor.
    pub fn fds(&self) -> DeviceFds {
        DeviceFds {
            tap: self.net.as_ref().map(|net| net.tap().as_raw_fd()),
            disk: self.block.as_ref().map(|block| block.as_raw_fd()),
            events: self.events.as_ref().map(|events| events.as_raw_fd()),
        }
    }

    /// The network counters, if the VM has a NIC.
    pub fn net_stats(&self) -> Option<net::NetStats> {
        self.net.as_ref().map(NetDevice::stats)
    }
}
