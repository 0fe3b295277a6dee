//! virtio-blk over a raw image file: read, write, flush, get-id; read-only on
//! request.
//!
//! A request is a readable 16-byte header (type, reserved, sector), data buffers
//! (device-writable for reads and get-id, readable for writes) and a one-byte,
//! device-writable status. A request the device can answer — an unknown type, a
//! sector past the end, a write to a read-only disk, a host I/O error — gets a
//! status (UNSUPP or IOERR); a request whose *layout* is wrong is a driver bug and
//! stops the device.
//!
//! The image is a [`Disk`] — opened, locked and range-checked as a unikernel's
//! disk is — and data moves between it and the guest's buffers directly, whatever
//! size a descriptor claims.

use std::path::Path;

use virtio_queue::Queue;
use vm_memory::{Bytes, GuestMemoryMmap};

use crate::devices::disk::Disk;

use super::{
    complete, next_request, Buffer, DeviceError, Request, VirtioDevice, F_VERSION_1, TYPE_BLOCK,
};

/// Request types.
pub const T_IN: u32 = 0;
/// Request types.
pub const T_OUT: u32 = 1;
/// Request types.
pub const T_FLUSH: u32 = 4;
/// Request types.
pub const T_GET_ID: u32 = 8;
/// Status: done.
pub const S_OK: u8 = 0;
/// Status: I/O error.
pub const S_IOERR: u8 = 1;
/// Status: unsupported request.
pub const S_UNSUPP: u8 = 2;
/// Feature: the disk is read-only.
pub const F_RO: u64 = 1 << 5;
/// Feature: FLUSH is supported.
pub const F_FLUSH: u64 = 1 << 9;
/// Sector size of the protocol.
pub const SECTOR: u64 = crate::devices::disk::SECTOR_SIZE;
/// Length of the get-id answer.
pub const ID_LEN: usize = 20;

/// A virtio-blk device.
pub struct Block {
    disk: Disk,
    id: [u8; ID_LEN],
    memory: Option<GuestMemoryMmap>,
    queue: Option<Queue>,
}

impl Block {
    /// Opens and locks the image at `path`; get-id answers with its file name.
    pub fn open(path: &Path, read_only: bool) -> std::io::Result<Self> {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(Self::new(Disk::open(path, read_only)?, &name))
    }

    /// The device over an open disk; `id` is what get-id returns (cut to 20
    /// bytes).
    pub fn new(disk: Disk, id: &str) -> Self {
        let mut id_bytes = [0u8; ID_LEN];
        let n = id.len().min(ID_LEN);
        id_bytes[..n].copy_from_slice(&id.as_bytes()[..n]);
        Self {
            disk,
            id: id_bytes,
            memory: None,
            queue: None,
        }
    }

    fn handle(&mut self, mem: &GuestMemoryMmap, request: &Request) -> Result<u32, DeviceError> {
        let malformed = |why: &str| {
            DeviceError::Malformed(format!("virtio-blk request {}: {why}", request.head))
        };
        let buffers = &request.buffers;
        let (header, rest) = buffers
            .split_first()
            .ok_or_else(|| malformed("no header"))?;
        let (status, data) = rest
            .split_last()
            .ok_or_else(|| malformed("no status byte"))?;
        if header.writable || header.len < 16 {
            return Err(malformed(
                "the header must be a readable buffer of 16 bytes",
            ));
        }
        if !status.writable || status.len < 1 {
            return Err(malformed("the status must be a writable byte"));
        }
        let mut raw = [0u8; 16];
        mem.read_slice(&mut raw, header.addr)
            .map_err(|e| malformed(&e.to_string()))?;
        let kind = u32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]);
        let sector = u64::from_le_bytes(raw[8..16].try_into().unwrap_or_default());
        let data_len: u64 = data.iter().map(|b| u64::from(b.len)).sum();
        let (code, written) = match kind {
            T_IN => {
                if data.iter().any(|b| !b.writable) {
                    return Err(malformed("a read's data buffers must be writable"));
                }
                match self.disk.check_range(sector, data_len) {
                    Ok(offset) => match self.read_into(mem, data, offset) {
                        Ok(()) => (S_OK, data_len),
                        Err(_) => (S_IOERR, 0),
                    },
                    Err(_) => (S_IOERR, 0),
                }
            }
            T_OUT => {
                if data.iter().any(|b| b.writable) {
                    return Err(malformed("a write's data buffers must be readable"));
                }
                match self.disk.check_range(sector, data_len) {
                    Ok(_) if self.disk.read_only() => (S_IOERR, 0),
                    Ok(offset) => match self.write_from(mem, data, offset) {
                        Ok(()) => (S_OK, 0),
                        Err(_) => (S_IOERR, 0),
                    },
                    Err(_) => (S_IOERR, 0),
                }
            }
            T_FLUSH => {
                if self.disk.flush().is_ok() {
                    (S_OK, 0)
                } else {
                    (S_IOERR, 0)
                }
            }
            T_GET_ID => {
                let Some(target) = data.first().filter(|b| b.writable) else {
                    return Err(malformed("get-id needs a writable buffer"));
                };
                let n = (target.len as usize).min(ID_LEN);
                mem.write_slice(&self.id[..n], target.addr)
                    .map_err(|e| malformed(&e.to_string()))?;
                (S_OK, n as u64)
            }
            _ => (S_UNSUPP, 0),
        };
        mem.write_obj(code, status.addr)
            .map_err(|e| malformed(&e.to_string()))?;
        Ok(u32::try_from(written).unwrap_or(u32::MAX).saturating_add(1))
    }

    /// The image's descriptor (the vCPU threads' filters allow I/O on it).
    pub fn disk_fd(&self) -> std::os::fd::RawFd {
        std::os::fd::AsRawFd::as_raw_fd(&self.disk)
    }

    /// Reads the disk from byte `offset` on into the request's buffers, in order.
    fn read_into(
        &self,
        mem: &GuestMemoryMmap,
        data: &[Buffer],
        offset: u64,
    ) -> Result<(), vm_memory::GuestMemoryError> {
        let mut cursor = self.disk.at(offset);
        for buffer in data {
            mem.read_exact_volatile_from(buffer.addr, &mut cursor, buffer.len as usize)?;
        }
        Ok(())
    }

    /// Writes the request's buffers, in order, to the disk from byte `offset` on.
    fn write_from(
        &self,
        mem: &GuestMemoryMmap,
        data: &[Buffer],
        offset: u64,
    ) -> Result<(), vm_memory::GuestMemoryError> {
        let mut cursor = self.disk.at(offset);
        for buffer in data {
            mem.write_all_volatile_to(buffer.addr, &mut cursor, buffer.len as usize)?;
        }
        Ok(())
    }
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u32 {
        TYPE_BLOCK
    }
    fn name(&self) -> &'static str {
        "virtio-blk"
    }
    fn features(&self) -> u64 {
        F_VERSION_1 | F_FLUSH | if self.disk.read_only() { F_RO } else { 0 }
    }
    fn queue_count(&self) -> usize {
        1
    }
    fn config_space(&self) -> Vec<u8> {
        self.disk.sectors().to_le_bytes().to_vec()
    }
    fn activate(&mut self, mem: GuestMemoryMmap, mut queues: Vec<Queue>) {
        self.memory = Some(mem);
        self.queue = queues.pop();
    }
    fn notify(&mut self, _index: usize) -> Result<bool, DeviceError> {
        let (Some(mem), Some(mut queue)) = (self.memory.clone(), self.queue.take()) else {
            return Ok(false);
        };
        let result = (|| {
            let mut used = false;
            while let Some(request) = next_request(&mut queue, &mem)? {
                let len = self.handle(&mem, &request)?;
                complete(&mut queue, &mem, request.head, len)?;
                used = true;
            }
            Ok(used)
        })();
        self.queue = Some(queue);
        result
    }
    fn reset(&mut self) {
        self.memory = None;
        self.queue = None;
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::*;
    use super::*;
    use std::fs::File;
    use std::io::{Read, Seek, Write};
    use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::GuestAddress;

    const NEXT: u16 = VRING_DESC_F_NEXT as u16;
    const WRITE: u16 = VRING_DESC_F_WRITE as u16;
    const HEADER: u64 = DATA;
    const BUF: u64 = DATA + 0x1000;
    const STATUS: u64 = DATA + 0x3000;
    const DISK_SECTORS: u64 = 8;

    fn disk(read_only: bool) -> (Block, File) {
        let mut file = tempfile();
        let contents: Vec<u8> = (0..DISK_SECTORS * SECTOR)
            .map(|i| (i / SECTOR) as u8)
            .collect();
        file.write_all(&contents).unwrap();
        let clone = file.try_clone().unwrap();
        let disk = Disk::from_file(file, read_only).unwrap();
        (Block::new(disk, "lightvm-test-disk"), clone)
    }

    fn tempfile() -> File {
        let path = std::env::temp_dir().join(format!(
            "lightvm-blk-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        std::fs::remove_file(&path).unwrap();
        file
    }

    /// Writes a request header, runs the chain `descs` through `block`.
    fn run<'a>(
        block: &mut Block,
        mem: &'a GuestMemoryMmap,
        kind: u32,
        sector: u64,
        descs: &[virtio_queue::desc::RawDescriptor],
    ) -> (
        Result<bool, DeviceError>,
        MockSplitQueue<'a, GuestMemoryMmap>,
    ) {
        let mut header = [0u8; 16];
        header[..4].copy_from_slice(&kind.to_le_bytes());
        header[8..].copy_from_slice(&sector.to_le_bytes());
        mem.write_slice(&header, GuestAddress(HEADER)).unwrap();
        mem.write_obj(0xffu8, GuestAddress(STATUS)).unwrap();
        let (mock, queue) = queue_with(mem, descs);
        block.activate(mem.clone(), vec![queue]);
        (block.notify(0), mock)
    }

    fn status(mem: &GuestMemoryMmap) -> u8 {
        mem.read_obj(GuestAddress(STATUS)).unwrap()
    }

    fn used_len(mock: &MockSplitQueue<'_, GuestMemoryMmap>) -> u32 {
        mock.used().ring().ref_at(0).unwrap().load().len()
    }

    fn chain(data_len: u32, data_flags: u16) -> Vec<virtio_queue::desc::RawDescriptor> {
        vec![
            desc(HEADER, 16, NEXT, 1),
            desc(BUF, data_len, data_flags | NEXT, 2),
            desc(STATUS, 1, WRITE, 0),
        ]
    }

    #[test]
    fn read_returns_the_sectors() {
        let mem = memory();
        let (mut block, _) = disk(false);
        let (result, mock) = run(&mut block, &mem, T_IN, 2, &chain(1024, WRITE));
        assert_eq!(result, Ok(true));
        assert_eq!(status(&mem), S_OK);
        assert_eq!(used_len(&mock), 1025);
        let mut buf = [0u8; 1024];
        mem.read_slice(&mut buf, GuestAddress(BUF)).unwrap();
        assert!(buf[..512].iter().all(|&b| b == 2) && buf[512..].iter().all(|&b| b == 3));
    }

    #[test]
    fn write_reaches_the_file() {
        let mem = memory();
        let (mut block, mut file) = disk(false);
        mem.write_slice(&[0xab; 512], GuestAddress(BUF)).unwrap();
        let (result, mock) = run(&mut block, &mem, T_OUT, 5, &chain(512, 0));
        assert_eq!(result, Ok(true));
        assert_eq!(status(&mem), S_OK);
        assert_eq!(used_len(&mock), 1);
        let mut contents = Vec::new();
        file.rewind().unwrap();
        file.read_to_end(&mut contents).unwrap();
        assert!(contents[5 * 512..6 * 512].iter().all(|&b| b == 0xab));
        assert!(contents[4 * 512..5 * 512].iter().all(|&b| b == 4));
    }

    #[test]
    fn flush_succeeds() {
        let mem = memory();
        let (mut block, _) = disk(false);
        let descs = [desc(HEADER, 16, NEXT, 1), desc(STATUS, 1, WRITE, 0)];
        assert_eq!(run(&mut block, &mem, T_FLUSH, 0, &descs).0, Ok(true));
        assert_eq!(status(&mem), S_OK);
        assert_ne!(block.features() & F_FLUSH, 0);
    }

    #[test]
    fn get_id_names_the_disk() {
        let mem = memory();
        let (mut block, _) = disk(false);
        let (result, mock) = run(&mut block, &mem, T_GET_ID, 0, &chain(ID_LEN as u32, WRITE));
        assert_eq!(result, Ok(true));
        assert_eq!(status(&mem), S_OK);
        assert_eq!(used_len(&mock), ID_LEN as u32 + 1);
        let mut id = [0u8; ID_LEN];
        mem.read_slice(&mut id, GuestAddress(BUF)).unwrap();
        assert_eq!(&id[..17], b"lightvm-test-disk");
    }

    #[test]
    fn an_unsupported_type_is_answered_unsupp() {
        let mem = memory();
        let (mut block, _) = disk(false);
        let descs = [desc(HEADER, 16, NEXT, 1), desc(STATUS, 1, WRITE, 0)];
        assert_eq!(run(&mut block, &mem, 11, 0, &descs).0, Ok(true));
        assert_eq!(status(&mem), S_UNSUPP);
    }

    #[test]
    fn sectors_past_the_end_are_an_io_error() {
        let mem = memory();
        let (mut block, _) = disk(false);
        assert_eq!(
            run(
                &mut block,
                &mem,
                T_IN,
                DISK_SECTORS - 1,
                &chain(1024, WRITE)
            )
            .0,
            Ok(true)
        );
        assert_eq!(status(&mem), S_IOERR);
        assert_eq!(
            run(&mut block, &mem, T_OUT, u64::MAX, &chain(512, 0)).0,
            Ok(true)
        );
        assert_eq!(status(&mem), S_IOERR);
        assert_eq!(
            run(&mut block, &mem, T_IN, 0, &chain(100, WRITE)).0,
            Ok(true)
        );
        assert_eq!(status(&mem), S_IOERR, "not a whole sector");
    }

    #[test]
    fn a_read_only_disk_refuses_writes() {
        let mem = memory();
        let (mut block, mut file) = disk(true);
        assert_ne!(block.features() & F_RO, 0);
        mem.write_slice(&[0xcd; 512], GuestAddress(BUF)).unwrap();
        assert_eq!(run(&mut block, &mem, T_OUT, 0, &chain(512, 0)).0, Ok(true));
        assert_eq!(status(&mem), S_IOERR);
        let mut first = [0u8; 512];
        file.rewind().unwrap();
        file.read_exact(&mut first).unwrap();
        assert!(first.iter().all(|&b| b == 0));
        // Reads still work.
        assert_eq!(
            run(&mut block, &mem, T_IN, 1, &chain(512, WRITE)).0,
            Ok(true)
        );
        assert_eq!(status(&mem), S_OK);
    }

    #[test]
    fn two_devices_never_write_one_image() {
        let path = std::env::temp_dir().join(format!("lightvm-blk-lock-{}", std::process::id()));
        std::fs::write(&path, [0u8; 1024]).unwrap();
        let first = Block::open(&path, false).unwrap();
        let second = Block::open(&path, false).err().expect("a second writer");
        assert!(
            second.to_string().contains("in use by another VM"),
            "{second}"
        );
        drop(first);
        let reader = Block::open(&path, true).unwrap();
        assert!(Block::open(&path, true).is_ok(), "readers share");
        assert!(Block::open(&path, false).is_err());
        drop(reader);
        let _ = std::fs::remove_file(&path);
        assert!(
            Block::open(&std::env::temp_dir(), true).is_err(),
            "a directory"
        );
    }

    #[test]
    fn malformed_requests_stop_the_device() {
        let mem = memory();
        let (mut block, _) = disk(false);
        // A read into a buffer the device may not write.
        assert!(matches!(
            run(&mut block, &mem, T_IN, 0, &chain(512, 0)).0,
            Err(DeviceError::Malformed(_))
        ));
        // No status byte.
        let descs = [desc(HEADER, 16, 0, 0)];
        assert!(matches!(
            run(&mut block, &mem, T_IN, 0, &descs).0,
            Err(DeviceError::Malformed(_))
        ));
        // A short header.
        let descs = [desc(HEADER, 8, NEXT, 1), desc(STATUS, 1, WRITE, 0)];
        assert!(matches!(
            run(&mut block, &mem, T_IN, 0, &descs).0,
            Err(DeviceError::Malformed(_))
        ));
        // Descriptor index out of range, a buffer past memory, a loop.
        let descs = [desc(HEADER, 16, NEXT, 99)];
        assert!(matches!(
            run(&mut block, &mem, T_IN, 0, &descs).0,
            Err(DeviceError::IndexOutOfRange { .. })
        ));
        let descs = [
            desc(HEADER, 16, NEXT, 1),
            desc(MEM_SIZE as u64 - 4, 512, WRITE | NEXT, 2),
            desc(STATUS, 1, WRITE, 0),
        ];
        assert!(matches!(
            run(&mut block, &mem, T_IN, 0, &descs).0,
            Err(DeviceError::OutsideMemory { .. })
        ));
        let descs = [desc(HEADER, 16, NEXT, 1), desc(BUF, 512, WRITE | NEXT, 0)];
        assert!(matches!(
            run(&mut block, &mem, T_IN, 0, &descs).0,
            Err(DeviceError::Loop { .. })
        ));
    }
}
