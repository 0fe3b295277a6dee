//! The file system the program sees: the root filesystem archive (cpio, in guest
//! memory), unpacked into a tree of nodes whose file contents stay in the archive
//! until the program writes them, plus the few devices and `/proc` and `/sys`
//! files programs read.
//!
//! Nodes live in an arena and are named by their index (the inode number); a
//! directory maps names to indices and knows its parent. Files written or created
//! by the program hold their bytes in the personality's heap. Nothing here touches
//! the host: the program's files are the archive's, and its changes last as long
//! as the VM.

use alloc::borrow::Cow;
use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use crate::errno::{
    Errno, EEXIST, EINVAL, EISDIR, ELOOP, ENAMETOOLONG, ENOENT, ENOTDIR, ENOTEMPTY,
};

/// An inode number: the node's index in the arena.
pub type Ino = usize;

/// Symbolic links followed in one lookup before ELOOP (Linux's limit).
const MAX_LINKS: usize = 40;
/// Longest path accepted.
pub const PATH_MAX: usize = 4096;

/// File type bits of `st_mode`.
pub const S_IFDIR: u32 = 0o040000;
/// See [`S_IFDIR`].
pub const S_IFREG: u32 = 0o100000;
/// See [`S_IFDIR`].
pub const S_IFLNK: u32 = 0o120000;
/// See [`S_IFDIR`].
pub const S_IFCHR: u32 = 0o020000;

/// A character device the program can open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    /// `/dev/null`.
    Null,
    /// `/dev/zero`.
    Zero,
    /// `/dev/urandom` and `/dev/random`.
    Random,
    /// `/dev/console`, `/dev/tty` and the program's standard streams.
    Console,
}

impl Device {
    /// Major and minor numbers, as Linux numbers these devices.
    pub fn rdev(self) -> u64 {
        let (major, minor) = match self {
            Device::Null => (1, 3),
            Device::Zero => (1, 5),
            Device::Random => (1, 9),
            Device::Console => (5, 1),
        };
        (major << 8) | minor
    }
}

/// A file whose contents are made when it is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Generated {
    /// `/proc/self/stat` (and `/proc/<pid>/stat`).
    SelfStat,
    /// `/proc/meminfo`.
    Meminfo,
    /// `/proc/cpuinfo`.
    Cpuinfo,
    /// `/proc/self/maps`.
    SelfMaps,
    /// `/proc/self/status`.
    SelfStatus,
    /// `/proc/self/cmdline`: the arguments, each ending in NUL.
    SelfCmdline,
}

/// What a node is.
#[derive(Debug)]
pub enum Kind {
    /// A directory: names to nodes.
    Dir {
        /// Its entries, by name.
        entries: BTreeMap<String, Ino>,
        /// Its parent (the root's is itself).
        parent: Ino,
    },
    /// A regular file.
    File(Cow<'static, [u8]>),
    /// A symbolic link and its target.
    Symlink(String),
    /// A device.
    Device(Device),
    /// A `/proc` file, made on each open.
    Generated(Generated),
}

/// A node: what it is, and what `stat` says about it.
#[derive(Debug)]
pub struct Node {
    /// Its contents.
    pub kind: Kind,
    /// Permission bits (and set-id bits), without the type.
    pub perm: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Last modification, seconds since the epoch.
    pub mtime: i64,
    /// Names that link to it.
    pub nlink: u32,
}

impl Node {
    /// `st_mode`: type and permission bits.
    pub fn mode(&self) -> u32 {
        let kind = match self.kind {
            Kind::Dir { .. } => S_IFDIR,
            Kind::File(_) | Kind::Generated(_) => S_IFREG,
            Kind::Symlink(_) => S_IFLNK,
            Kind::Device(_) => S_IFCHR,
        };
        kind | (self.perm & 0o7777)
    }

    /// `st_size`.
    pub fn size(&self) -> u64 {
        match &self.kind {
            Kind::File(data) => data.len() as u64,
            Kind::Symlink(target) => target.len() as u64,
            Kind::Dir { entries, .. } => (entries.len() as u64 + 2) * 32,
            Kind::Device(_) | Kind::Generated(_) => 0,
        }
    }

    /// Whether it is a directory.
    pub fn is_dir(&self) -> bool {
        matches!(self.kind, Kind::Dir { .. })
    }
}

/// The tree.
pub struct Vfs {
    nodes: Vec<Node>,
}

/// The root directory's inode.
pub const ROOT: Ino = 0;

/// How a lookup treats a symbolic link in the last component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Follow {
    /// Follow it (`stat`, `open`).
    Yes,
    /// Stop at the link (`lstat`, `readlink`, `unlink`, `O_NOFOLLOW`).
    No,
}

impl Vfs {
    /// An empty tree: the root directory alone.
    pub fn new(now: i64) -> Self {
        let root = Node {
            kind: Kind::Dir {
                entries: BTreeMap::new(),
                parent: ROOT,
            },
            perm: 0o755,
            uid: 0,
            gid: 0,
            mtime: now,
            nlink: 2,
        };
        Self {
            nodes: alloc::vec![root],
        }
    }

    /// The node `ino`.
    pub fn node(&self, ino: Ino) -> Option<&Node> {
        self.nodes.get(ino)
    }

    /// The node `ino`, to change.
    pub fn node_mut(&mut self, ino: Ino) -> Option<&mut Node> {
        self.nodes.get_mut(ino)
    }

    fn add(&mut self, node: Node) -> Ino {
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    /// The entries of directory `dir`.
    pub fn entries(&self, dir: Ino) -> Result<&BTreeMap<String, Ino>, Errno> {
        match self.nodes.get(dir).map(|n| &n.kind) {
            Some(Kind::Dir { entries, .. }) => Ok(entries),
            Some(_) => Err(ENOTDIR),
            None => Err(ENOENT),
        }
    }

    /// The parent of directory `dir`.
    pub fn parent(&self, dir: Ino) -> Ino {
        match self.nodes.get(dir).map(|n| &n.kind) {
            Some(Kind::Dir { parent, .. }) => *parent,
            _ => ROOT,
        }
    }

    /// Looks `path` up from `cwd` (for a relative path).
    pub fn lookup(&self, cwd: Ino, path: &str, follow: Follow) -> Result<Ino, Errno> {
        self.walk(cwd, path, follow, 0)
    }

    fn walk(&self, cwd: Ino, path: &str, follow: Follow, depth: usize) -> Result<Ino, Errno> {
        if path.len() > PATH_MAX {
            return Err(ENAMETOOLONG);
        }
        if path.is_empty() {
            return Err(ENOENT);
        }
        let mut at = if path.starts_with('/') { ROOT } else { cwd };
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        let count = parts.len();
        for (index, part) in parts.into_iter().enumerate() {
            let last = index + 1 == count;
            at = match part {
                "." => at,
                ".." => self.parent(at),
                name => {
                    let next = *self.entries(at)?.get(name).ok_or(ENOENT)?;
                    match &self.nodes.get(next).ok_or(ENOENT)?.kind {
                        Kind::Symlink(target) if !last || follow == Follow::Yes => {
                            if depth >= MAX_LINKS {
                                return Err(ELOOP);
                            }
                            self.walk(at, &target.clone(), Follow::Yes, depth + 1)?
                        }
                        _ => next,
                    }
                }
            };
        }
        // A trailing slash names a directory.
        if path.ends_with('/') && !self.nodes.get(at).is_some_and(Node::is_dir) {
            return Err(ENOTDIR);
        }
        Ok(at)
    }

    /// The directory a path's last component goes in, and that component.
    pub fn parent_of<'p>(&self, cwd: Ino, path: &'p str) -> Result<(Ino, &'p str), Errno> {
        let trimmed = path.trim_end_matches('/');
        let (dir, name) = match trimmed.rfind('/') {
            Some(0) => ("/", &trimmed[1..]),
            Some(at) => (&trimmed[..at], &trimmed[at + 1..]),
            None => (".", trimmed),
        };
        if name.is_empty() || name == "." || name == ".." {
            return Err(if trimmed.is_empty() { ENOENT } else { EEXIST });
        }
        if name.len() > 255 {
            return Err(ENAMETOOLONG);
        }
        let dir = self.lookup(cwd, dir, Follow::Yes)?;
        self.entries(dir)?;
        Ok((dir, name))
    }

    /// Makes `name` in `dir`, refusing one that exists.
    pub fn create(&mut self, dir: Ino, name: &str, node: Node) -> Result<Ino, Errno> {
        if self.entries(dir)?.contains_key(name) {
            return Err(EEXIST);
        }
        let is_dir = node.is_dir();
        let ino = self.add(node);
        if let Some(Node {
            kind: Kind::Dir { entries, .. },
            nlink,
            ..
        }) = self.nodes.get_mut(dir)
        {
            entries.insert(name.to_string(), ino);
            if is_dir {
                *nlink += 1;
            }
        }
        Ok(ino)
    }

    /// A new empty directory node under `parent`.
    pub fn dir_node(parent: Ino, perm: u32, now: i64) -> Node {
        Node {
            kind: Kind::Dir {
                entries: BTreeMap::new(),
                parent,
            },
            perm,
            uid: 0,
            gid: 0,
            mtime: now,
            nlink: 2,
        }
    }

    /// A new node of `kind`.
    pub fn node_of(kind: Kind, perm: u32, now: i64) -> Node {
        Node {
            kind,
            perm,
            uid: 0,
            gid: 0,
            mtime: now,
            nlink: 1,
        }
    }

    /// The components of absolute `path`, resolved lexically: `.` and empty
    /// ones dropped, `..` the parent (the root's is the root). Archive
    /// member names come from the user's files, so they can hold any of these.
    fn components(path: &str) -> Vec<&str> {
        let mut parts = Vec::new();
        for part in path.split('/') {
            match part {
                "" | "." => {}
                ".." => {
                    parts.pop();
                }
                name => parts.push(name),
            }
        }
        parts
    }

    /// `mkdir -p`: the directory at absolute `path`, made where missing; `None`
    /// if a component exists and is not a directory.
    pub fn mkdirs(&mut self, path: &str, now: i64) -> Option<Ino> {
        self.mkdirs_in(&Self::components(path), now)
    }

    fn mkdirs_in(&mut self, parts: &[&str], now: i64) -> Option<Ino> {
        let mut at = ROOT;
        for part in parts {
            let existing = self.entries(at).ok()?.get(*part).copied();
            at = match existing {
                Some(ino) if self.nodes.get(ino).is_some_and(Node::is_dir) => ino,
                Some(_) => return None,
                None => {
                    let node = Self::dir_node(at, 0o755, now);
                    self.create(at, part, node).ok()?
                }
            };
        }
        Some(at)
    }

    /// Puts `node` at absolute `path`, making its parents, replacing what was
    /// there (the archive's later entry wins, as when unpacking it). `None`, and
    /// nothing put, if the path names the root or goes through something that is
    /// not a directory.
    pub fn put(&mut self, path: &str, node: Node, now: i64) -> Option<Ino> {
        let parts = Self::components(path);
        let (name, dir) = parts.split_last()?;
        let name = *name;
        let parent = self.mkdirs_in(dir, now)?;
        if let Ok(entries) = self.entries(parent) {
            if let Some(&existing) = entries.get(name) {
                if self.nodes.get(existing).is_some_and(Node::is_dir) && node.is_dir() {
                    if let Some(old) = self.nodes.get_mut(existing) {
                        old.perm = node.perm;
                        old.mtime = node.mtime;
                        old.uid = node.uid;
                        old.gid = node.gid;
                    }
                    return Some(existing);
                }
                self.detach(parent, name);
            }
        }
        let node = match node.kind {
            Kind::Dir { entries, .. } => Node {
                kind: Kind::Dir { entries, parent },
                ..node
            },
            _ => node,
        };
        self.create(parent, name, node).ok()
    }

    /// Removes `name` from `dir` (the node lives on while something holds it).
    pub fn detach(&mut self, dir: Ino, name: &str) -> Option<Ino> {
        let ino = match self.nodes.get_mut(dir).map(|n| &mut n.kind) {
            Some(Kind::Dir { entries, .. }) => entries.remove(name)?,
            _ => return None,
        };
        let was_dir = self.nodes.get(ino).is_some_and(Node::is_dir);
        if let Some(node) = self.nodes.get_mut(ino) {
            node.nlink = node.nlink.saturating_sub(if was_dir { 2 } else { 1 });
        }
        if was_dir {
            if let Some(parent) = self.nodes.get_mut(dir) {
                parent.nlink = parent.nlink.saturating_sub(1);
            }
        }
        Some(ino)
    }

    /// `unlink`/`rmdir`: removes `name` from `dir`; `dir_wanted` says which.
    pub fn remove(&mut self, dir: Ino, name: &str, dir_wanted: bool) -> Result<(), Errno> {
        let ino = *self.entries(dir)?.get(name).ok_or(ENOENT)?;
        let node = self.nodes.get(ino).ok_or(ENOENT)?;
        match (&node.kind, dir_wanted) {
            (Kind::Dir { entries, .. }, true) if !entries.is_empty() => return Err(ENOTEMPTY),
            (Kind::Dir { .. }, false) => return Err(EISDIR),
            (Kind::Dir { .. }, true) => {}
            (_, true) => return Err(ENOTDIR),
            (_, false) => {}
        }
        self.detach(dir, name);
        Ok(())
    }

    /// `rename`: moves `from_name` in `from_dir` to `to_name` in `to_dir`,
    /// replacing a file (or an empty directory) there.
    pub fn rename(
        &mut self,
        (from_dir, from_name): (Ino, &str),
        (to_dir, to_name): (Ino, &str),
    ) -> Result<(), Errno> {
        let ino = *self.entries(from_dir)?.get(from_name).ok_or(ENOENT)?;
        let moving_dir = self.nodes.get(ino).is_some_and(Node::is_dir);
        if let Some(&existing) = self.entries(to_dir)?.get(to_name) {
            if existing == ino {
                return Ok(());
            }
            self.remove(to_dir, to_name, moving_dir)?;
        }
        // A directory may not move into itself.
        let mut up = to_dir;
        while moving_dir && up != ROOT {
            if up == ino {
                return Err(EINVAL);
            }
            up = self.parent(up);
        }
        self.detach(from_dir, from_name);
        if let Some(Node {
            kind: Kind::Dir { parent, .. },
            ..
        }) = self.nodes.get_mut(ino)
        {
            *parent = to_dir;
        }
        if let Some(node) = self.nodes.get_mut(ino) {
            node.nlink += if moving_dir { 2 } else { 1 };
        }
        if let Some(Node {
            kind: Kind::Dir { entries, .. },
            nlink,
            ..
        }) = self.nodes.get_mut(to_dir)
        {
            entries.insert(to_name.to_string(), ino);
            if moving_dir {
                *nlink += 1;
            }
        }
        Ok(())
    }

    /// A hard link: `name` in `dir` for node `ino`.
    pub fn link(&mut self, ino: Ino, dir: Ino, name: &str) -> Result<(), Errno> {
        if self.nodes.get(ino).is_some_and(Node::is_dir) {
            return Err(crate::errno::EPERM);
        }
        if self.entries(dir)?.contains_key(name) {
            return Err(EEXIST);
        }
        if let Some(Kind::Dir { entries, .. }) = self.nodes.get_mut(dir).map(|n| &mut n.kind) {
            entries.insert(name.to_string(), ino);
        }
        if let Some(node) = self.nodes.get_mut(ino) {
            node.nlink += 1;
        }
        Ok(())
    }

    /// The absolute path of directory `dir`, for `getcwd`.
    pub fn path_of(&self, dir: Ino) -> String {
        let mut parts = Vec::new();
        let mut at = dir;
        let mut guard = 0;
        while at != ROOT && guard < 4096 {
            let parent = self.parent(at);
            if let Ok(entries) = self.entries(parent) {
                if let Some((name, _)) = entries.iter().find(|(_, &i)| i == at) {
                    parts.push(name.clone());
                }
            }
            at = parent;
            guard += 1;
        }
        if parts.is_empty() {
            return "/".into();
        }
        parts.reverse();
        format!("/{}", parts.join("/"))
    }

    /// Unpacks a cpio (newc) archive into the tree. Returns how many entries it
    /// took; entries it cannot represent (devices, FIFOs, sockets) are skipped, and
    /// so are those whose path goes through a file.
    pub fn unpack(&mut self, archive: &'static [u8], now: i64) -> usize {
        let mut count = 0;
        for entry in crate::cpio::entries(archive) {
            let name = entry.name.trim_start_matches("./");
            if name.is_empty() || name == "." {
                continue;
            }
            let mode = entry.mode;
            let kind = match mode & 0o170000 {
                S_IFDIR => Kind::Dir {
                    entries: BTreeMap::new(),
                    parent: ROOT,
                },
                S_IFREG => Kind::File(Cow::Borrowed(entry.data)),
                S_IFLNK => Kind::Symlink(String::from_utf8_lossy(entry.data).into_owned()),
                _ => continue,
            };
            let node = Node {
                kind,
                perm: mode & 0o7777,
                uid: entry.uid,
                gid: entry.gid,
                mtime: i64::from(entry.mtime),
                nlink: if mode & 0o170000 == S_IFDIR { 2 } else { 1 },
            };
            if self.put(name, node, now).is_some() {
                count += 1;
            }
        }
        count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(data: &'static [u8]) -> Node {
        Vfs::node_of(Kind::File(Cow::Borrowed(data)), 0o644, 0)
    }

    /// Every entry of every directory reachable from the root, as paths.
    fn listing(vfs: &Vfs) -> Vec<String> {
        let mut out = Vec::new();
        let mut stack = alloc::vec![(ROOT, String::new())];
        while let Some((dir, path)) = stack.pop() {
            for (name, &ino) in vfs.entries(dir).unwrap() {
                let child = format!("{path}/{name}");
                if vfs.node(ino).unwrap().is_dir() {
                    stack.push((ino, child.clone()));
                }
                out.push(child);
            }
        }
        out.sort();
        out
    }

    /// Found by the fuzz target `lx_rootfs`: archive member names holding `.`
    /// or `..` components made directory entries literally named `.` and `..`,
    /// which no lookup reaches (`getcwd` in one named a path that led
    /// elsewhere), and a member named `/` an entry with an empty name.
    #[test]
    fn dot_and_dot_dot_in_archive_names_resolve_as_in_a_path_walk() {
        let mut vfs = Vfs::new(0);
        vfs.put("bin/./sh", file(b"sh"), 0).unwrap();
        vfs.put("usr/../etc/passwd", file(b"root"), 0).unwrap();
        vfs.put("../../top", file(b"top"), 0).unwrap();
        assert_eq!(vfs.put("/", Vfs::dir_node(ROOT, 0o755, 0), 0), None);
        assert_eq!(vfs.put("a/..", file(b"x"), 0), None);
        assert_eq!(
            listing(&vfs),
            ["/bin", "/bin/sh", "/etc", "/etc/passwd", "/top"]
        );
    }

    /// Found with the above: a member under a path whose component is a file
    /// ("f/x" after a file "f") landed in the root instead.
    #[test]
    fn a_path_through_a_file_puts_nothing() {
        let mut vfs = Vfs::new(0);
        vfs.put("f", file(b"f"), 0).unwrap();
        assert_eq!(vfs.put("f/x/y", file(b"y"), 0), None);
        assert_eq!(vfs.mkdirs("/f/d", 0), None);
        assert_eq!(listing(&vfs), ["/f"]);
    }
}
