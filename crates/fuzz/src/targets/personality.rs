//! The Linux personality's parsers of program- and user-controlled input, run on
//! the host through `lightvm-personality-core`: the root filesystem archive, the
//! launch file, the program's ELF headers, and the arguments of the memory and
//! file calls.

use std::cell::Cell;
use std::collections::BTreeSet;
use std::ops::Range;

use personality_core::elf;
use personality_core::launch;
use personality_core::mm::{self, Memory, Remap, PAGE};
use personality_core::vfs::{Follow, Ino, Kind, Node, Vfs, ROOT};

use crate::input::Input;

/// A time for new nodes.
const NOW: i64 = 1_700_000_000;

/// `lx_rootfs`: a root filesystem archive, unpacked, its launch file read, and
/// every directory found again by the path `getcwd` would give for it.
pub fn rootfs(data: &[u8]) {
    // SAFETY: the tree borrows file contents from the archive; it is dropped at
    // the end of this function, while `data` is still alive.
    let archive: &'static [u8] = unsafe { std::slice::from_raw_parts(data.as_ptr(), data.len()) };
    let mut vfs = Vfs::new(NOW);
    vfs.unpack(archive, NOW);
    if let Ok(spec) = launch::read(&vfs) {
        let _ = vfs.lookup(ROOT, &spec.exe, Follow::Yes);
        let _ = vfs.lookup(ROOT, &spec.cwd, Follow::Yes);
    }
    check_tree(&vfs);
}

/// Walks the tree from the root: every entry names a node, every directory is
/// reached once (no cycles) and names its parent, and the path of each directory
/// leads back to it.
fn check_tree(vfs: &Vfs) {
    let mut seen = BTreeSet::new();
    let mut stack = vec![ROOT];
    while let Some(dir) = stack.pop() {
        assert!(seen.insert(dir), "directory {dir} is reached twice");
        let entries = vfs.entries(dir).expect("a directory has entries");
        for (name, &ino) in entries {
            assert!(
                !name.is_empty() && !name.contains('/'),
                "entry {name:?} in directory {dir}"
            );
            let node = vfs.node(ino).expect("an entry names a node");
            if node.is_dir() {
                assert_eq!(
                    vfs.parent(ino),
                    dir,
                    "directory {name:?} names another parent"
                );
                stack.push(ino);
            }
        }
        let path = vfs.path_of(dir);
        assert_eq!(
            vfs.lookup(ROOT, &path, Follow::No),
            Ok(dir),
            "the path {path:?} of directory {dir} leads elsewhere"
        );
    }
}

/// `lx_launch`: a launch file; what parses is written back by the packer's own
/// encoder (`Launch::encode`, which `lightvm run --rootfs` uses) to the same launch.
pub fn launch(data: &[u8]) {
    let Ok(spec) = launch::parse(data) else {
        return;
    };
    assert!(!spec.exe.is_empty() && !spec.argv.is_empty());
    let written = spec
        .encode()
        .expect("fields split at NULs hold none, so they can be written back");
    assert_eq!(launch::parse(&written), Ok(spec));
}

/// Where the personality puts a position-independent program when memory is
/// large (`PIE_BASE` in crates/personality).
const PIE_BASE: u64 = 0x1000_0000;

/// `lx_elf`: a program's ELF file, planned, and placed as the loader places it:
/// every segment's bytes inside the file and its memory inside the image's span.
pub fn elf(data: &[u8]) {
    let Ok(plan) = elf::plan(data) else {
        return;
    };
    assert!(plan.low <= plan.high);
    assert_eq!(plan.low % PAGE, 0);
    assert_eq!(plan.high % PAGE, 0);
    let base = if plan.position_independent {
        PIE_BASE
    } else {
        plan.low
    };
    let bias = plan.bias(base);
    let image = plan.image(bias);
    let span = plan.span();
    for segment in &plan.segments {
        assert!(segment.file.start <= segment.file.end && segment.file.end <= data.len());
        let (at, zeros) = segment.placed(bias);
        let filesz = (segment.file.end - segment.file.start) as u64;
        assert_eq!(filesz + zeros, segment.memsz);
        assert!(
            at >= base && at - base <= span && segment.memsz <= span - (at - base),
            "segment {segment:?} lies outside the image {base:#x}+{span:#x}"
        );
    }
    assert_eq!(image.bias, bias);
}

thread_local! {
    /// The area of the [`memory`] target's address space, for [`zero`].
    static AREA: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
}

/// The memory manager's way to clear memory: here only a check that it never
/// clears outside the program's area (in the guest, that would be the
/// personality's own heap).
fn zero(range: Range<u64>) {
    let (start, end) = AREA.with(Cell::get);
    assert!(
        start <= range.start && range.start < range.end && range.end <= end,
        "clearing {range:x?} outside the program's area {start:#x}..{end:#x}"
    );
}

/// An address-like argument: mostly page-aligned values in or near the area,
/// sometimes anything.
fn argument(input: &mut Input<'_>, area: &Range<u64>) -> u64 {
    match input.u8() % 6 {
        0 => input.u64(),
        1 => u64::from(input.u16()) * PAGE,
        2 => u64::from(input.u32()),
        _ => area
            .start
            .wrapping_add(u64::from(input.u16() % 0x1000) * PAGE)
            .wrapping_add(u64::from(input.u8() % 4).wrapping_sub(1)),
    }
}

/// `lx_memory`: up to 64 memory calls with arguments from the input, against an
/// address space whose area the input picks; after each, the mappings are
/// sorted, disjoint and inside the area.
pub fn memory(data: &[u8]) {
    let mut input = Input::new(data);
    let area = match input.u8() % 4 {
        0 => {
            let start = u64::from(input.u32()) * PAGE;
            start..start.saturating_add(u64::from(input.u32()) * PAGE)
        }
        _ => 0x40_0000..0x4000_0000,
    };
    AREA.with(|cell| cell.set((area.start, area.end)));
    let mut mm = Memory::new(area.clone(), zero);
    // The heap starts 16 pages past the program's image, which was mapped in
    // the area (crates/personality, loader::load).
    let image_end = argument(&mut input, &area);
    let brk = mm::page_up(image_end)
        .unwrap_or(image_end)
        .saturating_add(16 * PAGE);
    mm.set_brk_start(brk.max(area.start));
    for _ in 0..input.u8() % 65 {
        let kind = input.u8();
        let a = argument(&mut input, &area);
        let b = argument(&mut input, &area);
        let c = argument(&mut input, &area);
        let flags = u64::from(input.u32());
        match kind % 6 {
            0 => {
                if let Ok(len) = mm::mmap_len(b, flags, c & !0xfff) {
                    if let Ok(start) = mm.mmap(a, len, flags >> 8 & 7, flags, "") {
                        assert_eq!(start % PAGE, 0);
                        assert!(mm.contains(start, len), "mmap gave {start:#x}+{len:#x}");
                    }
                }
            }
            1 => {
                let _ = mm.munmap(a, b);
            }
            2 => {
                let _ = mm.mprotect(a, b, flags & 7);
            }
            3 => {
                if let Ok(Remap::Moved {
                    from,
                    to,
                    copy,
                    old,
                }) = mm.mremap(a, b, c, flags & 3, argument(&mut input, &area))
                {
                    assert!(
                        mm.contains(from, copy),
                        "mremap copies from {from:#x}+{copy:#x}"
                    );
                    assert!(mm.contains(to, copy), "mremap copies to {to:#x}+{copy:#x}");
                    assert!(
                        from + copy <= to || to + copy <= from,
                        "mremap copies between overlapping ranges {from:#x} and {to:#x} (+{copy:#x})"
                    );
                    mm.unmap(old);
                }
            }
            4 => {
                let _ = mm.brk(a);
            }
            _ => {
                let _ = mm.map_anywhere(b, 3, "", true);
            }
        }
        check_regions(&mm, &area);
    }
}

fn check_regions(mm: &Memory, area: &Range<u64>) {
    let mut last_end = area.start;
    for (start, region) in mm.regions() {
        assert!(
            start >= last_end && start < region.end && region.end <= area.end,
            "mapping {start:#x}..{:#x} overlaps another or leaves the area {area:x?}",
            region.end
        );
        last_end = region.end;
    }
}

/// A path argument: bytes from the input, mostly made of the names and
/// separators that matter.
fn path(input: &mut Input<'_>) -> String {
    const PARTS: &[&str] = &["/", "a", "b", "..", ".", "/a", "/b/", "c/", "//", "l"];
    let len = usize::from(input.u8() % 8);
    let mut path = String::new();
    for _ in 0..len {
        match input.u8() {
            byte @ 0..=239 => path.push_str(PARTS[usize::from(byte) % PARTS.len()]),
            _ => {
                let n = usize::from(input.u8() % 8);
                path.push_str(&String::from_utf8_lossy(input.bytes(n)));
            }
        }
    }
    path
}

/// `lx_paths`: up to 32 file calls with path arguments from the input, done on
/// the tree as the personality's handlers do them (relative paths from the
/// working directory); the tree stays whole.
pub fn paths(data: &[u8]) {
    let mut input = Input::new(data);
    let mut vfs = Vfs::new(NOW);
    for dir in ["/a/b", "/etc", "/tmp"] {
        vfs.mkdirs(dir, NOW);
    }
    let file = |bytes: &'static [u8]| Vfs::node_of(Kind::File(bytes.into()), 0o644, NOW);
    vfs.put("/a/file", file(b"data"), NOW);
    vfs.put(
        "/a/l",
        Vfs::node_of(Kind::Symlink("b".into()), 0o777, NOW),
        NOW,
    );
    let mut cwd: Ino = ROOT;
    let count = input.u8() % 33;
    for i in 1..=count {
        let kind = input.u8();
        let one = path(&mut input);
        let two = path(&mut input);
        let _ = call(&mut vfs, &mut cwd, kind, &one, &two);
        // The whole-tree check costs more than the calls: every fourth call
        // and at the end (a broken tree stays broken).
        if i % 4 == 0 || i == count {
            check_tree(&vfs);
        }
        if vfs.entries(cwd).is_ok() {
            let _ = vfs.path_of(cwd);
        }
    }
}

fn call(
    vfs: &mut Vfs,
    cwd: &mut Ino,
    kind: u8,
    one: &str,
    two: &str,
) -> Result<(), personality_core::errno::Errno> {
    let new_node = |kind| -> Node { Vfs::node_of(kind, 0o644, NOW) };
    match kind % 9 {
        // open(O_CREAT)
        0 => match vfs.lookup(*cwd, one, Follow::Yes) {
            Ok(_) => {}
            Err(_) => {
                let (dir, name) = vfs.parent_of(*cwd, one)?;
                vfs.create(dir, name, new_node(Kind::File(Vec::new().into())))?;
            }
        },
        // mkdir
        1 => {
            let (dir, name) = vfs.parent_of(*cwd, one)?;
            vfs.create(dir, name, Vfs::dir_node(dir, 0o755, NOW))?;
        }
        // unlink, rmdir
        2 | 3 => {
            let (dir, name) = vfs.parent_of(*cwd, one)?;
            vfs.remove(dir, name, kind % 9 == 3)?;
        }
        // rename
        4 => {
            let from = vfs.parent_of(*cwd, one)?;
            let to = vfs.parent_of(*cwd, two)?;
            vfs.rename(from, to)?;
        }
        // link
        5 => {
            let ino = vfs.lookup(*cwd, one, Follow::No)?;
            let (dir, name) = vfs.parent_of(*cwd, two)?;
            vfs.link(ino, dir, name)?;
        }
        // symlink
        6 => {
            let (dir, name) = vfs.parent_of(*cwd, two)?;
            vfs.create(dir, name, new_node(Kind::Symlink(one.into())))?;
        }
        // chdir
        7 => {
            let ino = vfs.lookup(*cwd, one, Follow::Yes)?;
            vfs.entries(ino)?;
            *cwd = ino;
        }
        // stat, lstat
        _ => {
            let _ = vfs.lookup(*cwd, one, Follow::Yes);
            let _ = vfs.lookup(*cwd, two, Follow::No);
        }
    }
    Ok(())
}
