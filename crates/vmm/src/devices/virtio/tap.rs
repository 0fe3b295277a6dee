//! The host tap interface ([`crate::devices::tap::Tap`]) as virtio-net's backend.

use super::net::NetBackend;
use crate::devices::tap::Tap;

impl NetBackend for Tap {
    fn recv(&mut self, buf: &mut [u8]) -> std::io::Result<Option<usize>> {
        Tap::recv(self, buf)
    }

    fn send(&mut self, frame: &[u8]) -> std::io::Result<()> {
        Tap::send(self, frame)
    }

    fn wait_fd(&self) -> Option<std::os::fd::RawFd> {
        Some(std::os::fd::AsRawFd::as_raw_fd(self))
    }
}
