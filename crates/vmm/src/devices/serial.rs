//! The guest's console: an 8250 UART (vm-superio) at COM1, 0x3f8, IRQ 4. What the
//! guest transmits goes to the VMM's console writer, through the same rate limit
//! as unikernel output.

use std::io::Write;

use vm_superio::serial::NoEvents;
use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

use crate::console::Console;

/// First port of COM1.
pub const COM1: u16 = 0x3f8;
/// Number of ports of an 8250.
pub const PORTS: u16 = 8;

/// The UART's interrupt: an irqfd.
pub struct IrqTrigger(pub EventFd);

impl Trigger for IrqTrigger {
    type E = std::io::Error;
    fn trigger(&self) -> std::io::Result<()> {
        self.0.write(1)
    }
}

/// Adapts the rate-limited [`Console`] to `Write`.
pub struct ConsoleSink(pub Console);

impl Write for ConsoleSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// COM1.
pub struct SerialPort {
    uart: Serial<IrqTrigger, NoEvents, ConsoleSink>,
}

impl SerialPort {
    /// A UART writing to `console`, interrupting through `irq`.
    pub fn new(irq: EventFd, console: Console) -> Self {
        Self {
            uart: Serial::new(IrqTrigger(irq), ConsoleSink(console)),
        }
    }

    /// A guest read of register `offset` (0..8).
    pub fn read(&mut self, offset: u8) -> u8 {
        self.uart.read(offset)
    }

    /// A guest write of register `offset`.
    pub fn write(&mut self, offset: u8, value: u8) {
        // An interrupt that cannot be signalled is lost; the guest polls LSR anyway.
        let _ = self.uart.write(offset, value);
    }

    /// Bytes delivered and dropped by the console.
    pub fn console_counts(&self) -> (u64, u64) {
        let console = &self.uart.writer().0;
        (console.written(), console.dropped())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::console::test_util::Shared;

    #[test]
    fn transmitted_bytes_reach_the_console_and_the_line_is_always_ready() {
        let out = Shared::default();
        let mut port = SerialPort::new(
            EventFd::new(0).unwrap(),
            Console::new(Box::new(out.clone())),
        );
        for b in b"Linux version" {
            // earlyprintk polls LSR for THR empty before each byte.
            assert_ne!(port.read(5) & 0x20, 0);
            port.write(0, *b);
        }
        assert_eq!(&*out.0.lock().unwrap(), b"Linux version");
        assert_eq!(port.console_counts(), (13, 0));
    }
}
