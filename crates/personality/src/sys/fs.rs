//! File system calls: open, read and write, stat, directories, descriptors.

use alloc::borrow::Cow;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use super::SysResult;
use crate::errno::{
    Errno, EACCES, EBADF, EEXIST, EINVAL, EISDIR, ENOENT, ENOTDIR, ENOTTY, ERANGE, ESPIPE,
};
use crate::fd::{FdTable, FileRef, Object, OtherKind};
use crate::kernel::kernel;
use crate::uaccess;
use crate::vfs::{Device, Follow, Generated, Ino, Kind, Vfs, S_IFCHR, S_IFDIR};

/// `AT_FDCWD`, as the program passes it (a negative int in a 64-bit register).
pub const AT_FDCWD: u64 = (-100i64) as u64;
/// `AT_SYMLINK_NOFOLLOW`.
pub const AT_SYMLINK_NOFOLLOW: u64 = 0x100;
/// `AT_REMOVEDIR`.
pub const AT_REMOVEDIR: u64 = 0x200;
/// `AT_EMPTY_PATH`.
const AT_EMPTY_PATH: u64 = 0x1000;

const O_ACCMODE: u32 = 3;
const O_WRONLY: u32 = 1;
const O_CREAT: u32 = 0o100;
const O_EXCL: u32 = 0o200;
const O_TRUNC: u32 = 0o1000;
const O_APPEND: u32 = 0o2000;
const O_NONBLOCK: u32 = 0o4000;
const O_DIRECTORY: u32 = 0o200000;
const O_NOFOLLOW: u32 = 0o400000;
const O_CLOEXEC: u32 = 0o2000000;
const O_PATH: u32 = 0o10000000;
const O_TMPFILE: u32 = 0o20000000 | O_DIRECTORY;

/// Largest single read or write served at once (larger ones are short, as Linux
/// caps them at about 2 GiB).
const IO_MAX: u64 = 1 << 30;

fn now() -> i64 {
    i64::try_from(libos::time::wall_clock().as_secs()).unwrap_or(0)
}

/// The directory a `*at` call starts from, for a relative `path`.
fn base_dir(dirfd: u64, path: &str) -> Result<Ino, Errno> {
    let k = kernel();
    if path.starts_with('/') || dirfd == AT_FDCWD || dirfd as i32 == -100 {
        return Ok(k.cwd);
    }
    let file = k.fds.get(dirfd)?;
    let file = file.borrow();
    match &file.object {
        Object::Node { ino, .. } if k.vfs.node(*ino).is_some_and(|n| n.is_dir()) => Ok(*ino),
        Object::Node { .. } => Err(ENOTDIR),
        _ => Err(ENOTDIR),
    }
}

fn lookup_at(dirfd: u64, path: &str, follow: Follow) -> Result<Ino, Errno> {
    let base = base_dir(dirfd, path)?;
    kernel().vfs.lookup(base, path, follow)
}

/// Contents of a generated `/proc` file.
fn generate(which: Generated) -> Vec<u8> {
    let k = kernel();
    let text = match which {
        Generated::SelfStat => {
            let ticks = libos::time::monotonic().as_millis() / 10;
            let comm = k.exe.rsplit('/').next().unwrap_or("program");
            alloc::format!(
                "{pid} ({comm}) R 0 {pid} {pid} 0 -1 4194304 0 0 0 0 {ticks} 0 0 0 20 0 1 0 0 {vsize} {rss} 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n",
                pid = super::proc::PID,
                vsize = k.mm.area().end - k.mm.area().start,
                rss = 0,
            )
        }
        Generated::Meminfo => {
            let total = libos::boot_info().mem_size / 1024;
            let free = libos::heap::stats().free as u64 / 1024;
            alloc::format!(
                "MemTotal:       {total} kB\nMemFree:        {free} kB\nMemAvailable:   {free} kB\nBuffers:               0 kB\nCached:                0 kB\nSwapTotal:             0 kB\nSwapFree:              0 kB\n"
            )
        }
        Generated::SelfCmdline => {
            let mut bytes = Vec::new();
            for arg in &k.argv {
                bytes.extend_from_slice(arg.as_bytes());
                bytes.push(0);
            }
            return bytes;
        }
        Generated::Cpuinfo => {
            "processor\t: 0\nvendor_id\t: lightvm\nmodel name\t: lightvm unikernel vCPU\ncpu cores\t: 1\nflags\t\t: fpu sse sse2\n\n".to_string()
        }
        Generated::SelfMaps => {
            let mut out = String::new();
            for (start, region) in k.mm.regions() {
                let perms = [
                    if region.prot & 1 != 0 { 'r' } else { '-' },
                    if region.prot & 2 != 0 { 'w' } else { '-' },
                    if region.prot & 4 != 0 { 'x' } else { '-' },
                    'p',
                ];
                let perms: String = perms.iter().collect();
                out.push_str(&alloc::format!(
                    "{start:08x}-{:08x} {perms} 00000000 00:00 0          {}\n",
                    region.end,
                    region.name
                ));
            }
            out
        }
        Generated::SelfStatus => alloc::format!(
            "Name:\t{}\nState:\tR (running)\nPid:\t{pid}\nPPid:\t0\nUid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nThreads:\t1\n",
            k.exe.rsplit('/').next().unwrap_or("program"),
            pid = super::proc::PID
        ),
    };
    text.into_bytes()
}

fn node_object(ino: Ino, path: &str) -> Object {
    let generated = match kernel().vfs.node(ino).map(|n| &n.kind) {
        Some(Kind::Generated(which)) => Some(generate(*which)),
        _ => None,
    };
    Object::Node {
        ino,
        path: path.to_string(),
        generated,
    }
}

/// `openat`.
pub fn openat(dirfd: u64, path_addr: u64, flags: u64, mode: u64) -> SysResult {
    let path = uaccess::path(path_addr)?;
    let flags = flags as u32;
    let k = kernel();
    if flags & O_TMPFILE == O_TMPFILE {
        // An unnamed file in the directory: a file of its own that no name reaches.
        let dir = lookup_at(dirfd, &path, Follow::Yes)?;
        k.vfs.entries(dir)?;
        let name = alloc::format!(".lx-tmpfile-{}", k.vfs_counter());
        let node = Vfs::node_of(
            Kind::File(Cow::Owned(Vec::new())),
            mode as u32 & 0o7777,
            now(),
        );
        let ino = k.vfs.create(dir, &name, node)?;
        k.vfs.detach(dir, &name);
        let file = FdTable::open_file(node_object(ino, &path), flags & !O_CLOEXEC);
        return Ok(k.fds.insert(file, flags & O_CLOEXEC != 0, 0)? as u64);
    }
    let follow = if flags & O_NOFOLLOW != 0 {
        Follow::No
    } else {
        Follow::Yes
    };
    let base = base_dir(dirfd, &path)?;
    let ino = match k.vfs.lookup(base, &path, follow) {
        Ok(_) if flags & O_CREAT != 0 && flags & O_EXCL != 0 => return Err(EEXIST),
        Ok(ino) => ino,
        Err(e) if e == ENOENT && flags & O_CREAT != 0 => {
            let (dir, name) = k.vfs.parent_of(base, &path)?;
            let perm = mode as u32 & 0o7777 & !k.umask;
            let node = Vfs::node_of(Kind::File(Cow::Owned(Vec::new())), perm, now());
            k.vfs.create(dir, name, node)?
        }
        Err(e) => return Err(e),
    };
    let node = k.vfs.node(ino).ok_or(ENOENT)?;
    if matches!(node.kind, Kind::Symlink(_)) && flags & O_PATH == 0 {
        return Err(crate::errno::ELOOP);
    }
    let is_dir = node.is_dir();
    if flags & O_DIRECTORY != 0 && !is_dir {
        return Err(ENOTDIR);
    }
    if is_dir && flags & O_ACCMODE != 0 {
        return Err(EISDIR);
    }
    if flags & O_TRUNC != 0 && flags & O_ACCMODE != 0 {
        if let Some(node) = k.vfs.node_mut(ino) {
            if let Kind::File(data) = &mut node.kind {
                *data = Cow::Owned(Vec::new());
                node.mtime = now();
            }
        }
    }
    let file = FdTable::open_file(
        node_object(ino, &path),
        flags & !(O_CLOEXEC | O_CREAT | O_EXCL | O_TRUNC),
    );
    Ok(k.fds.insert(file, flags & O_CLOEXEC != 0, 0)? as u64)
}

/// `close`.
pub fn close(fd: u64) -> SysResult {
    // A pipe end, socket, epoll set or eventfd goes with its open file's last
    // reference (see `OpenFile`'s `Drop`).
    drop(kernel().fds.remove(fd)?);
    Ok(0)
}

/// Reads from `file` at `offset` into `buf`; the bytes read.
fn read_file(file: &FileRef, buf: &mut [u8], offset: Option<u64>) -> Result<usize, Errno> {
    let mut open = file.borrow_mut();
    if open.flags & O_ACCMODE == O_WRONLY {
        return Err(EBADF);
    }
    let at = offset.unwrap_or(open.offset);
    let k = kernel();
    let count = match &open.object {
        Object::Node {
            generated: Some(bytes),
            ..
        } => copy_from(bytes, at, buf),
        Object::Node { ino, .. } => match k.vfs.node(*ino).map(|n| &n.kind) {
            Some(Kind::File(data)) => copy_from(data, at, buf),
            Some(Kind::Dir { .. }) => return Err(EISDIR),
            Some(Kind::Device(device)) => read_device(*device, buf),
            _ => return Err(EINVAL),
        },
        Object::Device(device) => read_device(*device, buf),
        Object::Other(kind, index) => {
            let (kind, index) = (*kind, *index);
            let nonblocking = open.flags & O_NONBLOCK != 0;
            drop(open);
            return crate::objects::read(kind, index, buf, nonblocking);
        }
    };
    if offset.is_none() {
        open.offset = at + count as u64;
    }
    Ok(count)
}

fn copy_from(data: &[u8], at: u64, buf: &mut [u8]) -> usize {
    let start = usize::try_from(at).unwrap_or(usize::MAX).min(data.len());
    let count = buf.len().min(data.len() - start);
    buf[..count].copy_from_slice(&data[start..start + count]);
    count
}

fn read_device(device: Device, buf: &mut [u8]) -> usize {
    match device {
        Device::Null | Device::Console => 0,
        Device::Zero => {
            buf.fill(0);
            buf.len()
        }
        Device::Random => {
            crate::random::fill(buf);
            buf.len()
        }
    }
}

/// Writes `data` to `file` at `offset`; the bytes written.
fn write_file(file: &FileRef, data: &[u8], offset: Option<u64>) -> Result<usize, Errno> {
    let mut open = file.borrow_mut();
    if open.flags & O_ACCMODE == 0 {
        return Err(EBADF);
    }
    let k = kernel();
    let append = open.flags & O_APPEND != 0;
    let written = match &open.object {
        Object::Node { ino, .. } => {
            let ino = *ino;
            let node = k.vfs.node_mut(ino).ok_or(EBADF)?;
            match &mut node.kind {
                Kind::File(contents) => {
                    let contents = contents.to_mut();
                    let at = if append {
                        contents.len()
                    } else {
                        usize::try_from(offset.unwrap_or(open.offset)).map_err(|_| EINVAL)?
                    };
                    let end = at.checked_add(data.len()).ok_or(crate::errno::EFBIG)?;
                    if contents.len() < end {
                        contents.resize(end, 0);
                    }
                    contents[at..end].copy_from_slice(data);
                    node.mtime = now();
                    if offset.is_none() {
                        open.offset = end as u64;
                    }
                    return Ok(data.len());
                }
                Kind::Device(device) => write_device(*device, data),
                Kind::Dir { .. } => return Err(EISDIR),
                _ => return Err(EINVAL),
            }
        }
        Object::Device(device) => write_device(*device, data),
        Object::Other(kind, index) => {
            let (kind, index) = (*kind, *index);
            let nonblocking = open.flags & O_NONBLOCK != 0;
            drop(open);
            return crate::objects::write(kind, index, data, nonblocking);
        }
    };
    Ok(written)
}

fn write_device(device: Device, data: &[u8]) -> usize {
    if device == Device::Console {
        libos::hypercall::console_write(data);
    }
    data.len()
}

/// `read`.
pub fn read(fd: u64, buf: u64, len: u64) -> SysResult {
    let file = kernel().fds.get(fd)?;
    let buf = uaccess::bytes_mut(buf, len.min(IO_MAX))?;
    read_file(&file, buf, None).map(|n| n as u64)
}

/// `write`.
pub fn write(fd: u64, buf: u64, len: u64) -> SysResult {
    let file = kernel().fds.get(fd)?;
    let data = uaccess::bytes(buf, len.min(IO_MAX))?;
    write_file(&file, data, None).map(|n| n as u64)
}

/// `pread64`.
pub fn pread(fd: u64, buf: u64, len: u64, offset: u64) -> SysResult {
    let file = kernel().fds.get(fd)?;
    if !seekable(&file) {
        return Err(ESPIPE);
    }
    let buf = uaccess::bytes_mut(buf, len.min(IO_MAX))?;
    read_file(&file, buf, Some(offset)).map(|n| n as u64)
}

/// `pwrite64`.
pub fn pwrite(fd: u64, buf: u64, len: u64, offset: u64) -> SysResult {
    let file = kernel().fds.get(fd)?;
    if !seekable(&file) {
        return Err(ESPIPE);
    }
    let data = uaccess::bytes(buf, len.min(IO_MAX))?;
    write_file(&file, data, Some(offset)).map(|n| n as u64)
}

fn seekable(file: &FileRef) -> bool {
    matches!(file.borrow().object, Object::Node { .. })
}

/// The iovecs of a `readv`/`writev`: (address, length) pairs.
fn iovecs(iov: u64, count: u64) -> Result<Vec<(u64, u64)>, Errno> {
    if count > 1024 {
        return Err(EINVAL);
    }
    (0..count)
        .map(|i| {
            let at = iov + i * 16;
            Ok((uaccess::read::<u64>(at)?, uaccess::read::<u64>(at + 8)?))
        })
        .collect()
}

/// `readv`.
pub fn readv(fd: u64, iov: u64, count: u64) -> SysResult {
    let file = kernel().fds.get(fd)?;
    let vecs = iovecs(iov, count)?;
    // A pipe or socket is read once (a second read could wait for more), into
    // the iovecs in turn.
    if matches!(file.borrow().object, Object::Other(..)) {
        for (addr, len) in &vecs {
            uaccess::bytes(*addr, (*len).min(IO_MAX))?;
        }
        let total: u64 = vecs.iter().map(|(_, len)| (*len).min(IO_MAX)).sum();
        let mut staging = alloc::vec![0u8; total.min(IO_MAX) as usize];
        let n = read_file(&file, &mut staging, None)?;
        let mut rest = &staging[..n];
        for (addr, len) in vecs {
            let count = rest.len().min(len.min(IO_MAX) as usize);
            uaccess::copy_out(addr, &rest[..count])?;
            rest = &rest[count..];
        }
        return Ok(n as u64);
    }
    let mut total = 0u64;
    for (addr, len) in vecs {
        let buf = uaccess::bytes_mut(addr, len.min(IO_MAX))?;
        let n = read_file(&file, buf, None)?;
        total += n as u64;
        if (n as u64) < len {
            break;
        }
    }
    Ok(total)
}

/// `writev`.
pub fn writev(fd: u64, iov: u64, count: u64) -> SysResult {
    let file = kernel().fds.get(fd)?;
    let vecs = iovecs(iov, count)?;
    // A socket or pipe takes the whole message at once where it can.
    if matches!(file.borrow().object, Object::Other(..)) {
        let mut joined = Vec::new();
        for (addr, len) in &vecs {
            joined.extend_from_slice(uaccess::bytes(*addr, (*len).min(IO_MAX))?);
        }
        return write_file(&file, &joined, None).map(|n| n as u64);
    }
    let mut total = 0u64;
    for (addr, len) in vecs {
        let data = uaccess::bytes(addr, len.min(IO_MAX))?;
        total += write_file(&file, data, None)? as u64;
    }
    Ok(total)
}

/// `lseek`.
pub fn lseek(fd: u64, offset: u64, whence: u64) -> SysResult {
    let file = kernel().fds.get(fd)?;
    let mut open = file.borrow_mut();
    let size = match &open.object {
        Object::Node {
            generated: Some(bytes),
            ..
        } => bytes.len() as u64,
        Object::Node { ino, .. } => kernel().vfs.node(*ino).map_or(0, |n| n.size()),
        Object::Device(_) => 0,
        Object::Other(..) => return Err(ESPIPE),
    };
    let offset = offset as i64;
    let base = match whence {
        0 => 0,
        1 => open.offset as i64,
        2 => size as i64,
        _ => return Err(EINVAL),
    };
    let new = base.checked_add(offset).filter(|&o| o >= 0).ok_or(EINVAL)?;
    open.offset = new as u64;
    Ok(new as u64)
}

/// What `stat` reports, from a node or a device.
struct StatInfo {
    ino: u64,
    mode: u32,
    nlink: u64,
    uid: u32,
    gid: u32,
    rdev: u64,
    size: u64,
    mtime: i64,
}

fn info_of_ino(ino: Ino) -> Result<StatInfo, Errno> {
    let node = kernel().vfs.node(ino).ok_or(ENOENT)?;
    let rdev = match node.kind {
        Kind::Device(device) => device.rdev(),
        _ => 0,
    };
    Ok(StatInfo {
        ino: ino as u64 + 1,
        mode: node.mode(),
        nlink: u64::from(node.nlink.max(1)),
        uid: node.uid,
        gid: node.gid,
        rdev,
        size: node.size(),
        mtime: node.mtime,
    })
}

fn info_of_file(file: &FileRef) -> Result<StatInfo, Errno> {
    let open = file.borrow();
    match &open.object {
        Object::Node {
            ino,
            generated: Some(bytes),
            ..
        } => {
            let mut info = info_of_ino(*ino)?;
            info.size = bytes.len() as u64;
            Ok(info)
        }
        Object::Node { ino, .. } => info_of_ino(*ino),
        Object::Device(device) => Ok(StatInfo {
            ino: 1_000_000 + device.rdev(),
            mode: S_IFCHR | 0o620,
            nlink: 1,
            uid: 0,
            gid: 0,
            rdev: device.rdev(),
            size: 0,
            mtime: 0,
        }),
        Object::Other(kind, index) => Ok(StatInfo {
            ino: 2_000_000 + *index as u64,
            mode: match kind {
                OtherKind::Socket => 0o140777,
                OtherKind::PipeRead | OtherKind::PipeWrite => 0o010600,
                OtherKind::Epoll | OtherKind::EventFd => 0o600,
            },
            nlink: 1,
            uid: 0,
            gid: 0,
            rdev: 0,
            size: 0,
            mtime: 0,
        }),
    }
}

fn write_stat(addr: u64, info: &StatInfo) -> SysResult {
    // SAFETY: `stat` is plain data; zero is a valid value for every field.
    let mut st: linux_raw_sys::general::stat = unsafe { core::mem::zeroed() };
    st.st_dev = 0x801;
    st.st_ino = info.ino;
    st.st_nlink = info.nlink;
    st.st_mode = info.mode;
    st.st_uid = info.uid;
    st.st_gid = info.gid;
    st.st_rdev = info.rdev;
    st.st_size = info.size as i64;
    st.st_blksize = 4096;
    st.st_blocks = info.size.div_ceil(512) as i64;
    st.st_atime = info.mtime as u64;
    st.st_mtime = info.mtime as u64;
    st.st_ctime = info.mtime as u64;
    uaccess::write(addr, st)?;
    Ok(0)
}

/// `fstat`.
pub fn fstat(fd: u64, addr: u64) -> SysResult {
    let file = kernel().fds.get(fd)?;
    write_stat(addr, &info_of_file(&file)?)
}

fn info_at(dirfd: u64, path_addr: u64, flags: u64) -> Result<StatInfo, Errno> {
    let path = uaccess::path(path_addr)?;
    if path.is_empty() && flags & AT_EMPTY_PATH != 0 {
        if dirfd == AT_FDCWD {
            return info_of_ino(kernel().cwd);
        }
        return info_of_file(&kernel().fds.get(dirfd)?);
    }
    let follow = if flags & AT_SYMLINK_NOFOLLOW != 0 {
        Follow::No
    } else {
        Follow::Yes
    };
    info_of_ino(lookup_at(dirfd, &path, follow)?)
}

/// `newfstatat` (and `stat`, `lstat`).
pub fn fstatat(dirfd: u64, path: u64, addr: u64, flags: u64) -> SysResult {
    write_stat(addr, &info_at(dirfd, path, flags)?)
}

/// `statx`.
pub fn statx(dirfd: u64, path: u64, flags: u64, _mask: u64, addr: u64) -> SysResult {
    let info = info_at(dirfd, path, flags)?;
    // SAFETY: `statx` is plain data; zero is a valid value for every field.
    let mut st: linux_raw_sys::general::statx = unsafe { core::mem::zeroed() };
    st.stx_mask = 0x7ff;
    st.stx_blksize = 4096;
    st.stx_nlink = info.nlink as u32;
    st.stx_uid = info.uid;
    st.stx_gid = info.gid;
    st.stx_mode = info.mode as u16;
    st.stx_ino = info.ino;
    st.stx_size = info.size;
    st.stx_blocks = info.size.div_ceil(512);
    st.stx_mtime.tv_sec = info.mtime;
    st.stx_atime.tv_sec = info.mtime;
    st.stx_ctime.tv_sec = info.mtime;
    st.stx_btime.tv_sec = info.mtime;
    st.stx_rdev_major = (info.rdev >> 8) as u32;
    st.stx_rdev_minor = (info.rdev & 0xff) as u32;
    st.stx_dev_major = 8;
    st.stx_dev_minor = 1;
    uaccess::write(addr, st)?;
    Ok(0)
}

/// `getdents64`: the directory's entries from the file offset (an index) on.
pub fn getdents64(fd: u64, buf: u64, len: u64) -> SysResult {
    let file = kernel().fds.get(fd)?;
    let mut open = file.borrow_mut();
    let Object::Node { ino, .. } = &open.object else {
        return Err(ENOTDIR);
    };
    let dir = *ino;
    let vfs = &kernel().vfs;
    let entries = vfs.entries(dir)?;
    let parent = vfs.parent(dir);
    let mut listing: Vec<(u64, u8, &str)> =
        alloc::vec![(dir as u64 + 1, 4, "."), (parent as u64 + 1, 4, "..")];
    for (name, &child) in entries {
        let kind = match vfs.node(child).map(|n| n.mode() & 0o170000) {
            Some(S_IFDIR) => 4,
            Some(0o100000) => 8,
            Some(0o120000) => 10,
            Some(S_IFCHR) => 2,
            _ => 0,
        };
        listing.push((child as u64 + 1, kind, name.as_str()));
    }
    let out = uaccess::bytes_mut(buf, len.min(IO_MAX))?;
    let mut used = 0usize;
    let mut index = usize::try_from(open.offset).unwrap_or(usize::MAX);
    while let Some(&(d_ino, d_type, name)) = listing.get(index) {
        let reclen = (19 + name.len() + 1).next_multiple_of(8);
        if used + reclen > out.len() {
            break;
        }
        let record = &mut out[used..used + reclen];
        record.fill(0);
        record[0..8].copy_from_slice(&d_ino.to_le_bytes());
        record[8..16].copy_from_slice(&((index + 1) as i64).to_le_bytes());
        record[16..18].copy_from_slice(&(reclen as u16).to_le_bytes());
        record[18] = d_type;
        record[19..19 + name.len()].copy_from_slice(name.as_bytes());
        used += reclen;
        index += 1;
    }
    if used == 0 && listing.get(index).is_some() {
        return Err(EINVAL);
    }
    open.offset = index as u64;
    Ok(used as u64)
}

/// `readlinkat`.
pub fn readlinkat(dirfd: u64, path_addr: u64, buf: u64, len: u64) -> SysResult {
    let path = uaccess::path(path_addr)?;
    let target = match fd_link(&path) {
        Some(fd) => descriptor_path(fd)?,
        None => {
            let ino = lookup_at(dirfd, &path, Follow::No)?;
            let Some(Kind::Symlink(target)) = kernel().vfs.node(ino).map(|n| &n.kind) else {
                return Err(EINVAL);
            };
            target.clone()
        }
    };
    let bytes = target.as_bytes();
    let count = bytes.len().min(usize::try_from(len).unwrap_or(0));
    uaccess::copy_out(buf, &bytes[..count])?;
    Ok(count as u64)
}

/// The descriptor `/proc/self/fd/N` (or `/proc/1/fd/N`) names, if `path` is one.
fn fd_link(path: &str) -> Option<u64> {
    let rest = path
        .strip_prefix("/proc/self/fd/")
        .or_else(|| path.strip_prefix("/proc/1/fd/"))?;
    rest.parse().ok()
}

/// What `/proc/self/fd/N` points to: the path a file was opened by, or what
/// Linux shows for objects with no path.
fn descriptor_path(fd: u64) -> Result<String, Errno> {
    let file = kernel().fds.get(fd)?;
    let open = file.borrow();
    Ok(match &open.object {
        Object::Node { path, .. } => path.clone(),
        Object::Device(_) => "/dev/console".into(),
        Object::Other(kind, index) => {
            let what = match kind {
                OtherKind::PipeRead | OtherKind::PipeWrite => "pipe",
                OtherKind::Socket => "socket",
                OtherKind::Epoll => "anon_inode:[eventpoll]",
                OtherKind::EventFd => "anon_inode:[eventfd]",
            };
            if what.starts_with("anon_inode") {
                what.into()
            } else {
                alloc::format!("{what}:[{index}]")
            }
        }
    })
}

/// `faccessat`: everything is root's, so a path that exists is accessible
/// (execute needs an execute bit somewhere).
pub fn faccessat(dirfd: u64, path_addr: u64, mode: u64) -> SysResult {
    let path = uaccess::path(path_addr)?;
    let ino = lookup_at(dirfd, &path, Follow::Yes)?;
    let node = kernel().vfs.node(ino).ok_or(ENOENT)?;
    if mode & 1 != 0 && !node.is_dir() && node.perm & 0o111 == 0 {
        return Err(EACCES);
    }
    Ok(0)
}

/// `ioctl`: no descriptor is a terminal; `FIONBIO` and `FIONREAD` work.
pub fn ioctl(fd: u64, request: u64, arg: u64) -> SysResult {
    const FIONBIO: u64 = 0x5421;
    const FIONREAD: u64 = 0x541b;
    const FIOCLEX: u64 = 0x5451;
    const FIONCLEX: u64 = 0x5450;
    let k = kernel();
    let file = k.fds.get(fd)?;
    match request {
        FIONBIO => {
            let on = uaccess::read::<i32>(arg)? != 0;
            let mut open = file.borrow_mut();
            if on {
                open.flags |= O_NONBLOCK;
            } else {
                open.flags &= !O_NONBLOCK;
            }
            Ok(0)
        }
        FIONREAD => {
            let available = crate::objects::readable_bytes(&file);
            uaccess::write::<i32>(arg, i32::try_from(available).unwrap_or(i32::MAX))?;
            Ok(0)
        }
        FIOCLEX | FIONCLEX => {
            k.fds.slot_mut(fd)?.cloexec = request == FIOCLEX;
            Ok(0)
        }
        _ => Err(ENOTTY),
    }
}

/// `fcntl`.
pub fn fcntl(fd: u64, command: u64, arg: u64) -> SysResult {
    const F_DUPFD: u64 = 0;
    const F_GETFD: u64 = 1;
    const F_SETFD: u64 = 2;
    const F_GETFL: u64 = 3;
    const F_SETFL: u64 = 4;
    const F_SETLK: u64 = 6;
    const F_SETLKW: u64 = 7;
    const F_GETLK: u64 = 5;
    const F_DUPFD_CLOEXEC: u64 = 1030;
    const F_SETPIPE_SZ: u64 = 1031;
    const F_GETPIPE_SZ: u64 = 1032;
    let k = kernel();
    match command {
        F_DUPFD | F_DUPFD_CLOEXEC => {
            let file = k.fds.get(fd)?;
            let min = usize::try_from(arg).map_err(|_| EINVAL)?;
            Ok(k.fds.insert(file, command == F_DUPFD_CLOEXEC, min)? as u64)
        }
        F_GETFD => Ok(u64::from(k.fds.slot(fd)?.cloexec)),
        F_SETFD => {
            k.fds.slot_mut(fd)?.cloexec = arg & 1 != 0;
            Ok(0)
        }
        F_GETFL => Ok(u64::from(k.fds.get(fd)?.borrow().flags)),
        F_SETFL => {
            let file = k.fds.get(fd)?;
            let mut open = file.borrow_mut();
            let changeable = O_APPEND | O_NONBLOCK;
            open.flags = (open.flags & !changeable) | (arg as u32 & changeable);
            Ok(0)
        }
        // One process: locks never conflict.
        F_SETLK | F_SETLKW | F_GETLK => {
            k.fds.get(fd)?;
            if command == F_GETLK {
                // l_type = F_UNLCK
                uaccess::write::<i16>(arg, 2)?;
            }
            Ok(0)
        }
        F_GETPIPE_SZ | F_SETPIPE_SZ => Ok(65536),
        _ => Err(EINVAL),
    }
}

/// `dup`.
pub fn dup(fd: u64) -> SysResult {
    let k = kernel();
    let file = k.fds.get(fd)?;
    Ok(k.fds.insert(file, false, 0)? as u64)
}

/// `dup3` (and `dup2`, which allows `old == new`).
pub fn dup3(old: u64, new: u64, flags: u64, is_dup2: bool) -> SysResult {
    let k = kernel();
    let file = k.fds.get(old)?;
    if old == new {
        return if is_dup2 { Ok(new) } else { Err(EINVAL) };
    }
    let new_fd = usize::try_from(new).map_err(|_| EBADF)?;
    // What was at `new` is closed as its slot drops.
    drop(
        k.fds
            .insert_at(new_fd, file, flags & u64::from(O_CLOEXEC) != 0)?,
    );
    Ok(new)
}

/// `mkdirat`.
pub fn mkdirat(dirfd: u64, path_addr: u64, mode: u64) -> SysResult {
    let path = uaccess::path(path_addr)?;
    let k = kernel();
    let base = base_dir(dirfd, &path)?;
    let (dir, name) = k.vfs.parent_of(base, &path)?;
    let perm = mode as u32 & 0o7777 & !k.umask;
    k.vfs.create(dir, name, Vfs::dir_node(dir, perm, now()))?;
    Ok(0)
}

/// `unlinkat` (and `unlink`, `rmdir`).
pub fn unlinkat(dirfd: u64, path_addr: u64, flags: u64) -> SysResult {
    let path = uaccess::path(path_addr)?;
    let k = kernel();
    let base = base_dir(dirfd, &path)?;
    let (dir, name) = k.vfs.parent_of(base, &path)?;
    k.vfs.remove(dir, name, flags & AT_REMOVEDIR != 0)?;
    Ok(0)
}

/// `renameat` (and `rename`, `renameat2` without flags).
pub fn renameat(old_dirfd: u64, old_addr: u64, new_dirfd: u64, new_addr: u64) -> SysResult {
    let old = uaccess::path(old_addr)?;
    let new = uaccess::path(new_addr)?;
    let k = kernel();
    let old_base = base_dir(old_dirfd, &old)?;
    let new_base = base_dir(new_dirfd, &new)?;
    let (from_dir, from_name) = k.vfs.parent_of(old_base, &old)?;
    let (to_dir, to_name) = k.vfs.parent_of(new_base, &new)?;
    k.vfs.rename((from_dir, from_name), (to_dir, to_name))?;
    Ok(0)
}

/// `linkat`.
pub fn linkat(old_dirfd: u64, old_addr: u64, new_dirfd: u64, new_addr: u64) -> SysResult {
    let old = uaccess::path(old_addr)?;
    let new = uaccess::path(new_addr)?;
    let ino = lookup_at(old_dirfd, &old, Follow::No)?;
    let k = kernel();
    let base = base_dir(new_dirfd, &new)?;
    let (dir, name) = k.vfs.parent_of(base, &new)?;
    k.vfs.link(ino, dir, name)?;
    Ok(0)
}

/// `symlinkat`.
pub fn symlinkat(target_addr: u64, dirfd: u64, path_addr: u64) -> SysResult {
    let target = uaccess::path(target_addr)?;
    let path = uaccess::path(path_addr)?;
    let k = kernel();
    let base = base_dir(dirfd, &path)?;
    let (dir, name) = k.vfs.parent_of(base, &path)?;
    k.vfs
        .create(dir, name, Vfs::node_of(Kind::Symlink(target), 0o777, now()))?;
    Ok(0)
}

/// `chmod`, `fchmod`, `fchmodat`.
pub fn chmod(number: u32, a: [u64; 6]) -> SysResult {
    use linux_raw_sys::general as nr;
    let (ino, mode) = match number {
        nr::__NR_chmod => (
            lookup_at(AT_FDCWD, &uaccess::path(a[0])?, Follow::Yes)?,
            a[1],
        ),
        nr::__NR_fchmod => match &kernel().fds.get(a[0])?.borrow().object {
            Object::Node { ino, .. } => (*ino, a[1]),
            _ => return Ok(0),
        },
        _ => (lookup_at(a[0], &uaccess::path(a[1])?, Follow::Yes)?, a[2]),
    };
    if let Some(node) = kernel().vfs.node_mut(ino) {
        node.perm = mode as u32 & 0o7777;
    }
    Ok(0)
}

fn truncate_node(ino: Ino, len: u64) -> SysResult {
    let node = kernel().vfs.node_mut(ino).ok_or(ENOENT)?;
    match &mut node.kind {
        Kind::File(data) => {
            let len = usize::try_from(len).map_err(|_| crate::errno::EFBIG)?;
            data.to_mut().resize(len, 0);
            node.mtime = now();
            Ok(0)
        }
        Kind::Dir { .. } => Err(EISDIR),
        _ => Err(EINVAL),
    }
}

/// `ftruncate`.
pub fn ftruncate(fd: u64, len: u64) -> SysResult {
    let file = kernel().fds.get(fd)?;
    let ino = match &file.borrow().object {
        Object::Node { ino, .. } => *ino,
        _ => return Err(EINVAL),
    };
    truncate_node(ino, len)
}

/// `truncate`.
pub fn truncate(path_addr: u64, len: u64) -> SysResult {
    let path = uaccess::path(path_addr)?;
    truncate_node(lookup_at(AT_FDCWD, &path, Follow::Yes)?, len)
}

/// `statfs` / `fstatfs`: one in-memory file system.
pub fn statfs(addr: u64) -> SysResult {
    let free = libos::heap::stats().free as u64 / 4096;
    let mut fields = [0u64; 15];
    fields[0] = 0x0102_1994; // TMPFS_MAGIC
    fields[1] = 4096; // f_bsize
    fields[2] = free * 2; // f_blocks
    fields[3] = free; // f_bfree
    fields[4] = free; // f_bavail
    fields[5] = 1 << 20; // f_files
    fields[6] = 1 << 19; // f_ffree
    fields[8] = 255; // f_namelen
    fields[9] = 4096; // f_frsize
    uaccess::write(addr, fields)?;
    Ok(0)
}

/// `getcwd`.
pub fn getcwd(buf: u64, len: u64) -> SysResult {
    let k = kernel();
    let mut path = k.vfs.path_of(k.cwd).into_bytes();
    path.push(0);
    if path.len() as u64 > len {
        return Err(ERANGE);
    }
    uaccess::copy_out(buf, &path)?;
    Ok(path.len() as u64)
}

/// `chdir`.
pub fn chdir(path_addr: u64) -> SysResult {
    let path = uaccess::path(path_addr)?;
    let ino = lookup_at(AT_FDCWD, &path, Follow::Yes)?;
    kernel().vfs.entries(ino)?;
    kernel().cwd = ino;
    Ok(0)
}

/// `fchdir`.
pub fn fchdir(fd: u64) -> SysResult {
    let file = kernel().fds.get(fd)?;
    let ino = match &file.borrow().object {
        Object::Node { ino, .. } => *ino,
        _ => return Err(ENOTDIR),
    };
    kernel().vfs.entries(ino)?;
    kernel().cwd = ino;
    Ok(0)
}

/// `umask`.
pub fn umask(mask: u64) -> SysResult {
    let k = kernel();
    let old = k.umask;
    k.umask = mask as u32 & 0o777;
    Ok(u64::from(old))
}

/// `sendfile`: from a file to any descriptor, through a buffer.
pub fn sendfile(out_fd: u64, in_fd: u64, offset_addr: u64, count: u64) -> SysResult {
    let k = kernel();
    let input = k.fds.get(in_fd)?;
    let output = k.fds.get(out_fd)?;
    let mut offset = if offset_addr != 0 {
        Some(uaccess::read::<u64>(offset_addr)?)
    } else {
        None
    };
    let mut buf = alloc::vec![0u8; count.min(1 << 20) as usize];
    let n = read_file(&input, &mut buf, offset)?;
    let written = match write_file(&output, &buf[..n], None) {
        Ok(written) => written,
        Err(error) => {
            // Nothing went out: the input's offset goes back where it was.
            if offset.is_none() {
                let mut open = input.borrow_mut();
                open.offset = open.offset.saturating_sub(n as u64);
            }
            return Err(error);
        }
    };
    if let Some(at) = offset.as_mut() {
        *at += written as u64;
        uaccess::write(offset_addr, *at)?;
    } else if written < n {
        // Put back what did not go out.
        let mut open = input.borrow_mut();
        open.offset = open.offset.saturating_sub((n - written) as u64);
    }
    Ok(written as u64)
}
