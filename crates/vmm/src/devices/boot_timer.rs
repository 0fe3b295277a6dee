//! The boot timer: the guest's init writes [`MAGIC`] to port [`PORT`] when it
//! starts, and the VMM records the time since the VM was created (Firecracker's
//! boot-time device, same port and value). From a shell in the guest:
//! `printf '\173' | dd of=/dev/port bs=1 seek=1008 count=1` (needs CONFIG_DEVPORT).

use std::time::{Duration, Instant};

/// The port.
pub const PORT: u16 = 0x3f0;
/// The value init writes.
pub const MAGIC: u8 = 123;

/// The boot timer device.
#[derive(Debug)]
pub struct BootTimer {
    created: Instant,
    booted: Option<Duration>,
}

impl BootTimer {
    /// A timer counting from `created` (when the VM was created).
    pub fn new(created: Instant) -> Self {
        Self {
            created,
            booted: None,
        }
    }

    /// A guest write; returns the boot time the first time the magic value comes.
    pub fn write(&mut self, value: u8) -> Option<Duration> {
        if value != MAGIC || self.booted.is_some() {
            return None;
        }
        let elapsed = self.created.elapsed();
        self.booted = Some(elapsed);
        Some(elapsed)
    }

    /// The recorded boot time.
    pub fn booted(&self) -> Option<Duration> {
        self.booted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_first_magic_write_counts() {
        let mut timer = BootTimer::new(Instant::now());
        assert_eq!(timer.write(7), None);
        let first = timer.write(MAGIC).unwrap();
        assert_eq!(timer.write(MAGIC), None);
        assert_eq!(timer.booted(), Some(first));
    }
}
