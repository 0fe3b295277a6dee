//! Devices of Linux guests: the legacy PC devices a microVM keeps (8250 serial,
//! i8042 reset line, the boot timer port) and virtio-mmio block and network.
//! Unikernels have none of these: they speak the hypercall ABI. The host ends
//! both guest kinds share live here too: [`tap`] and [`disk`].

pub mod boot_timer;
pub mod config;
pub mod disk;
pub mod i8042;
pub mod serial;
pub mod tap;
pub mod virtio;
