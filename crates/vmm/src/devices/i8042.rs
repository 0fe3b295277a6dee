//! The i8042 keyboard controller, kept for one job: its CPU-reset command
//! (0xfe to port 0x64), which Linux uses to reboot with `reboot=k`. A reset ends
//! the VM.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use vm_superio::{I8042Device, Trigger};

/// Data port.
pub const DATA_PORT: u16 = 0x60;
/// Command / status port.
pub const COMMAND_PORT: u16 = 0x64;

/// Records that the guest asked for a reset.
#[derive(Clone, Default)]
pub struct ResetFlag(pub Arc<AtomicBool>);

impl Trigger for ResetFlag {
    type E = std::convert::Infallible;
    fn trigger(&self) -> Result<(), Self::E> {
        self.0.store(true, Ordering::SeqCst);
        Ok(())
    }
}

/// The controller.
pub struct I8042 {
    device: I8042Device<ResetFlag>,
    reset: ResetFlag,
}

impl Default for I8042 {
    fn default() -> Self {
        let reset = ResetFlag::default();
        Self {
            device: I8042Device::new(reset.clone()),
            reset,
        }
    }
}

impl I8042 {
    /// Handles the port: 0x60 or 0x64.
    pub fn handles(port: u16) -> bool {
        port == DATA_PORT || port == COMMAND_PORT
    }
    /// A guest read.
    pub fn read(&mut self, port: u16) -> u8 {
        self.device.read((port - DATA_PORT) as u8)
    }
    /// A guest write; returns whether the guest asked for a CPU reset.
    pub fn write(&mut self, port: u16, value: u8) -> bool {
        let _ = self.device.write((port - DATA_PORT) as u8, value);
        self.reset.0.swap(false, Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reset_command_is_reported_and_nothing_else_is() {
        let mut kbd = I8042::default();
        assert!(!kbd.write(COMMAND_PORT, 0x20));
        assert!(!kbd.write(DATA_PORT, 0x00));
        let _ = kbd.read(COMMAND_PORT);
        assert!(kbd.write(COMMAND_PORT, 0xfe));
    }
}
