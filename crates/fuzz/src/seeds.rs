//! Seed inputs: well-formed examples of what each target reads, so that fuzzing
//! starts deep in the code under test rather than at its first magic number.
//! They are built here rather than kept as files, so that they follow the
//! formats' code.

use lightvm_abi::devices::{BlockRequest, BlockSetupArgs, RingHeader, BLOCK_READ, BLOCK_WRITE};
use lightvm_abi::{layout, ConsoleWriteArgs, ExitArgs, PollArgs, SyscallEntryArgs};
use zerocopy::IntoBytes;

use crate::input::Writer;

/// ELF `p_type` values.
const PT_LOAD: u32 = 1;
const PT_INTERP: u32 = 3;
const PT_NOTE: u32 = 4;
const PT_PHDR: u32 = 6;
/// ELF `p_flags`.
const PF_X: u32 = 1;
const PF_W: u32 = 2;
const PF_R: u32 = 4;
/// ELF `e_type`.
const ET_EXEC: u16 = 2;
const ET_DYN: u16 = 3;

/// One program header of [`elf64`]: type, flags, address, file bytes, size in
/// memory.
pub struct Ph<'a> {
    /// `p_type`.
    pub kind: u32,
    /// `p_flags`.
    pub flags: u32,
    /// `p_vaddr` and `p_paddr`.
    pub addr: u64,
    /// The file bytes.
    pub data: &'a [u8],
    /// `p_memsz`.
    pub memsz: u64,
}

/// A little-endian ELF64 x86-64 file of type `e_type` with these program headers,
/// their file bytes packed after the headers (8-byte aligned).
pub fn elf64(e_type: u16, entry: u64, headers: &[Ph<'_>]) -> Vec<u8> {
    let phoff = 64u64;
    let mut data_at = phoff + 56 * headers.len() as u64;
    let mut out = Vec::new();
    out.extend_from_slice(b"\x7fELF\x02\x01\x01\0");
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&e_type.to_le_bytes());
    out.extend_from_slice(&62u16.to_le_bytes()); // EM_X86_64
    out.extend_from_slice(&1u32.to_le_bytes());
    out.extend_from_slice(&entry.to_le_bytes());
    out.extend_from_slice(&phoff.to_le_bytes());
    out.extend_from_slice(&0u64.to_le_bytes()); // no section headers
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&64u16.to_le_bytes());
    out.extend_from_slice(&56u16.to_le_bytes());
    out.extend_from_slice(&(headers.len() as u16).to_le_bytes());
    out.extend_from_slice(&64u16.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    let mut body = Vec::new();
    for ph in headers {
        let offset = data_at;
        out.extend_from_slice(&ph.kind.to_le_bytes());
        out.extend_from_slice(&ph.flags.to_le_bytes());
        out.extend_from_slice(&offset.to_le_bytes());
        out.extend_from_slice(&ph.addr.to_le_bytes());
        out.extend_from_slice(&ph.addr.to_le_bytes());
        out.extend_from_slice(&(ph.data.len() as u64).to_le_bytes());
        out.extend_from_slice(&ph.memsz.to_le_bytes());
        out.extend_from_slice(&0x1000u64.to_le_bytes());
        body.extend_from_slice(ph.data);
        while !body.len().is_multiple_of(8) {
            body.push(0);
        }
        data_at = phoff + 56 * headers.len() as u64 + body.len() as u64;
    }
    out.extend_from_slice(&body);
    out
}

/// `unikernel_elf`: a text, a read-only and a data segment with bss, as `lightvm
/// build` links them; and one with a single segment.
pub fn unikernel_elf() -> Vec<Vec<u8>> {
    let text = [0x90u8, 0x90, 0x0f, 0x0b];
    vec![
        elf64(
            ET_EXEC,
            0x10_0000,
            &[
                Ph {
                    kind: PT_LOAD,
                    flags: PF_R | PF_X,
                    addr: 0x10_0000,
                    data: &text,
                    memsz: 4,
                },
                Ph {
                    kind: PT_LOAD,
                    flags: PF_R,
                    addr: 0x10_1000,
                    data: b"hello",
                    memsz: 5,
                },
                Ph {
                    kind: PT_LOAD,
                    flags: PF_R | PF_W,
                    addr: 0x10_2000,
                    data: &[1, 2, 3, 4],
                    memsz: 0x2000,
                },
            ],
        ),
        elf64(
            ET_EXEC,
            0x10_0002,
            &[Ph {
                kind: PT_LOAD,
                flags: PF_R | PF_X,
                addr: 0x10_0000,
                data: &text,
                memsz: 0x1000,
            }],
        ),
    ]
}

/// Offsets from the start of guest-owned memory in the hypercall seeds.
const OWN: u64 = layout::GUEST_OWNED_START;

/// Writes `value` at `offset` of `memory`, growing it.
fn put(memory: &mut Vec<u8>, offset: u64, value: &[u8]) {
    let offset = offset as usize;
    if memory.len() < offset + value.len() {
        memory.resize(offset + value.len(), 0);
    }
    memory[offset..offset + value.len()].copy_from_slice(value);
}

/// A call of the `hypercall` target: index in `Hypercall::ALL`, and an offset in
/// guest-owned memory (a multiple of 8).
fn call(w: &mut Writer, index: u8, offset: u64) {
    w.u8(index).u8(3).u16((offset / 8) as u16);
}

/// Guest memory (from the start of guest-owned memory) with a console message,
/// a block ring of four requests (a read and a write), and the argument structs.
fn hypercall_memory() -> Vec<u8> {
    let mut memory = Vec::new();
    let console = ConsoleWriteArgs {
        buf: OWN + 0x100,
        len: 13,
    };
    put(&mut memory, 0, console.as_bytes());
    put(&mut memory, 0x100, b"Hello, fuzz!\n");
    let setup = BlockSetupArgs {
        ring: OWN + 0x400,
        size: 4,
        ..BlockSetupArgs::default()
    };
    put(&mut memory, 0x200, setup.as_bytes());
    let header = RingHeader {
        avail: 2,
        ..RingHeader::default()
    };
    put(&mut memory, 0x400, header.as_bytes());
    for (i, op) in [BLOCK_READ, BLOCK_WRITE].into_iter().enumerate() {
        let request = BlockRequest {
            op,
            sector: i as u64,
            addr: OWN + 0x1000,
            len: 512,
            ..BlockRequest::default()
        };
        put(&mut memory, 0x410 + 32 * i as u64, request.as_bytes());
    }
    put(&mut memory, 0x340, PollArgs::default().as_bytes());
    let exit = ExitArgs {
        status: 7,
        reserved: 0,
        msg: OWN + 0x100,
        msg_len: 5,
    };
    put(&mut memory, 0x380, exit.as_bytes());
    let entry = SyscallEntryArgs {
        entry: OWN + 0x100,
        return_slot: OWN + 0x3f8,
        call_entry: OWN + 0x100,
    };
    put(&mut memory, 0x3c0, entry.as_bytes());
    put(&mut memory, 0x1000, &[0xee; 512]);
    memory
}

/// `hypercall`: a guest that writes to the console, sets up its disk, notifies
/// it, polls, names a syscall entry and exits.
pub fn hypercall() -> Vec<Vec<u8>> {
    let mut seeds = Vec::new();
    for calls in [
        &[
            (0, 0),
            (5, 0x200),
            (6, 0x300),
            (3, 0x340),
            (7, 0x3c0),
            (2, 0),
            (1, 0x380),
        ][..],
        &[(5, 0x200), (6, 0x300), (6, 0x300)][..],
        &[(0, 0), (0, 0x100)][..],
    ] {
        let mut w = Writer::default();
        w.u8(calls.len() as u8);
        for &(index, offset) in calls {
            call(&mut w, index, offset);
        }
        w.bytes(&hypercall_memory());
        seeds.push(w.finish());
    }
    seeds
}

/// `unikernel_ring`: a block ring and a net ring in guest-owned memory, with
/// entries published, read and completed.
pub fn unikernel_ring() -> Vec<Vec<u8>> {
    let mut w = Writer::default();
    w.u8(3).u16(0x400 / 8).u16(4);
    w.u8(3).u16(0x800 / 8).u16(8);
    w.u8(5);
    w.u8(0).u32(2);
    w.u8(1).u32(2);
    w.u8(2).u32(1);
    w.u8(3).u32(3);
    w.u8(4).u32(9);
    w.bytes(&hypercall_memory());
    vec![w.finish()]
}

/// An ELF note (name "Xen", type 18: the PVH entry) as a kernel carries it.
fn pvh_note(entry: u32) -> Vec<u8> {
    let mut note = Vec::new();
    note.extend_from_slice(&4u32.to_le_bytes());
    note.extend_from_slice(&4u32.to_le_bytes());
    note.extend_from_slice(&18u32.to_le_bytes());
    note.extend_from_slice(b"Xen\0");
    note.extend_from_slice(&entry.to_le_bytes());
    note
}

/// A bzImage: `setup_sects` setup sectors (0 means 4) after the boot sector,
/// boot protocol 2.15 with a 64-bit entry, and a small payload.
fn bzimage(setup_sects: u8, payload: usize) -> Vec<u8> {
    let sectors = if setup_sects == 0 {
        4
    } else {
        usize::from(setup_sects)
    };
    let mut image = vec![0u8; (sectors + 1) * 512 + payload];
    image[0x1f1] = setup_sects;
    image[0x1fe..0x200].copy_from_slice(&0xaa55u16.to_le_bytes());
    image[0x202..0x206].copy_from_slice(b"HdrS");
    image[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
    image[0x211] = 1; // LOADED_HIGH
    image[0x214..0x218].copy_from_slice(&0x10_0000u32.to_le_bytes());
    image[0x22c..0x230].copy_from_slice(&0x7fff_ffffu32.to_le_bytes());
    image[0x236..0x238].copy_from_slice(&1u16.to_le_bytes()); // XLF_KERNEL_64
    image[0x260..0x264].copy_from_slice(&0x10_0000u32.to_le_bytes()); // init_size
    image
}

/// `linux_kernel`: a vmlinux with and without a PVH note, and bzImages.
pub fn linux_kernel() -> Vec<Vec<u8>> {
    let code = [0xf4u8; 16];
    let note = pvh_note(0x100_0000);
    vec![
        elf64(
            ET_EXEC,
            0x100_0000,
            &[Ph {
                kind: PT_LOAD,
                flags: PF_R | PF_X,
                addr: 0x100_0000,
                data: &code,
                memsz: 0x1000,
            }],
        ),
        elf64(
            ET_EXEC,
            0x100_0000,
            &[
                Ph {
                    kind: PT_LOAD,
                    flags: PF_R | PF_X,
                    addr: 0x100_0000,
                    data: &code,
                    memsz: 0x20_0000,
                },
                Ph {
                    kind: PT_NOTE,
                    flags: PF_R,
                    addr: 0,
                    data: &note,
                    memsz: note.len() as u64,
                },
            ],
        ),
        bzimage(1, 512),
        bzimage(0, 64),
    ]
}

/// `boot_params`: a memory size, kernel end, initrd size and limit, and a
/// bzImage's setup header.
pub fn boot_params() -> Vec<Vec<u8>> {
    let header = bzimage(1, 0)[0x1f1..0x1f1 + 0x77].to_vec();
    let mut seeds = Vec::new();
    for (mem, kernel_end, initrd, limit) in [
        (0u32, 0x200_0000u64, 0x10_0000u64, 0x200_0000u64),
        (0x1000, 0x120_0000, 0x40_0000, 0x7fff_ffff),
        (0, 0x100_0000, 0, 0x200_0000),
    ] {
        let mut w = Writer::default();
        w.u8(1).u32(mem).u64(kernel_end).u64(initrd).u64(limit);
        w.u8(1).u16(32).bytes(&header);
        seeds.push(w.finish());
    }
    seeds
}

/// The MMIO writes that set up queue `queue` (size 16) at `desc`, `avail`,
/// `used`, as a Linux driver does; encoded for the virtio targets.
fn queue_setup(w: &mut Writer, queue: u32, desc: u32, avail: u32, used: u32) {
    for (offset, value) in [
        (0x30, queue),
        (0x38, 16),
        (0x80, desc),
        (0x84, 0),
        (0x90, avail),
        (0x94, 0),
        (0xa0, used),
        (0xa4, 0),
        (0x44, 1),
    ] {
        mmio_write(w, offset, value);
    }
}

fn mmio_write(w: &mut Writer, offset: u8, value: u32) {
    w.u8(2).u8(offset / 4).u32(value);
}

/// The status and feature writes before the queues (ACKNOWLEDGE, DRIVER,
/// VERSION_1, FEATURES_OK).
fn negotiate(w: &mut Writer) {
    mmio_write(w, 0x70, 0);
    mmio_write(w, 0x70, 1);
    mmio_write(w, 0x70, 3);
    mmio_write(w, 0x24, 1);
    mmio_write(w, 0x20, 1);
    mmio_write(w, 0x70, 11);
}

/// A split-queue descriptor.
fn desc(
    memory: &mut Vec<u8>,
    table: u64,
    index: u64,
    (addr, len, flags, next): (u64, u32, u16, u16),
) {
    let mut raw = Vec::new();
    raw.extend_from_slice(&addr.to_le_bytes());
    raw.extend_from_slice(&len.to_le_bytes());
    raw.extend_from_slice(&flags.to_le_bytes());
    raw.extend_from_slice(&next.to_le_bytes());
    put(memory, table + 16 * index, &raw);
}

/// Publishes heads in the available ring at `avail`.
fn publish(memory: &mut Vec<u8>, avail: u64, heads: &[u16]) {
    put(memory, avail + 2, &(heads.len() as u16).to_le_bytes());
    for (i, head) in heads.iter().enumerate() {
        put(memory, avail + 4 + 2 * i as u64, &head.to_le_bytes());
    }
}

const NEXT: u16 = 1;
const WRITE: u16 = 2;

/// `virtio_blk`: a driver that sets up its queue and sends a read, a write, a
/// flush and a get-id.
pub fn virtio_blk() -> Vec<Vec<u8>> {
    let mut memory = Vec::new();
    // The queue at 0x0 (descriptors), 0x100 (available), 0x200 (used).
    let header = |kind: u32, sector: u64| {
        let mut raw = kind.to_le_bytes().to_vec();
        raw.extend_from_slice(&[0; 4]);
        raw.extend_from_slice(&sector.to_le_bytes());
        raw
    };
    put(&mut memory, 0x300, &header(0, 1));
    put(&mut memory, 0x310, &header(1, 2));
    put(&mut memory, 0x320, &header(4, 0));
    put(&mut memory, 0x330, &header(8, 0));
    // read: header, 512 bytes in, status
    desc(&mut memory, 0, 0, (0x300, 16, NEXT, 1));
    desc(&mut memory, 0, 1, (0x400, 512, NEXT | WRITE, 2));
    desc(&mut memory, 0, 2, (0x600, 1, WRITE, 0));
    // write: header, 512 bytes out, status
    desc(&mut memory, 0, 3, (0x310, 16, NEXT, 4));
    desc(&mut memory, 0, 4, (0x400, 512, NEXT, 5));
    desc(&mut memory, 0, 5, (0x601, 1, WRITE, 0));
    // flush: header, status
    desc(&mut memory, 0, 6, (0x320, 16, NEXT, 7));
    desc(&mut memory, 0, 7, (0x602, 1, WRITE, 0));
    // get-id: header, 20 bytes in, status
    desc(&mut memory, 0, 8, (0x330, 16, NEXT, 9));
    desc(&mut memory, 0, 9, (0x640, 20, NEXT | WRITE, 10));
    desc(&mut memory, 0, 10, (0x603, 1, WRITE, 0));
    publish(&mut memory, 0x100, &[0, 3, 6, 8]);
    put(&mut memory, 0x660, &[0]);
    let mut seeds = Vec::new();
    for read_only in [0u8, 1] {
        let mut w = Writer::default();
        w.u8(read_only);
        w.u8(17);
        negotiate(&mut w);
        queue_setup(&mut w, 0, 0, 0x100, 0x200);
        mmio_write(&mut w, 0x70, 15);
        mmio_write(&mut w, 0x50, 0);
        w.bytes(&memory);
        seeds.push(w.finish());
    }
    seeds
}

/// `virtio_net`: a driver that sets up both queues, sends a frame and has one
/// delivered.
pub fn virtio_net() -> Vec<Vec<u8>> {
    let mut memory = Vec::new();
    // rx queue at 0x0/0x100/0x200, tx queue at 0x400/0x500/0x600.
    desc(&mut memory, 0, 0, (0x1000, 1600, WRITE, 0));
    publish(&mut memory, 0x100, &[0]);
    desc(&mut memory, 0x400, 0, (0x800, 12, NEXT, 1));
    desc(&mut memory, 0x400, 1, (0x820, 60, 0, 0));
    publish(&mut memory, 0x500, &[0]);
    put(&mut memory, 0x820, &[0x42; 60]);
    put(&mut memory, 0x1000, &[0]);
    let mut w = Writer::default();
    w.u8(1).u16(60).bytes(&[0xab; 60]);
    w.u8(28);
    negotiate(&mut w);
    queue_setup(&mut w, 0, 0, 0x100, 0x200);
    queue_setup(&mut w, 1, 0x400, 0x500, 0x600);
    mmio_write(&mut w, 0x70, 15);
    mmio_write(&mut w, 0x50, 1);
    w.u8(1); // poll the host: the frame arrives
    w.bytes(&memory);
    vec![w.finish()]
}

/// `api_request`: the bodies the README and the CLI send.
pub fn api_request() -> Vec<Vec<u8>> {
    [
        r#"{"image":"/images/hello"}"#,
        r#"{"image":"/images/hello","mem":"4M","cmdline":"a b","timeout_ms":5000}"#,
        r#"{"image":"/images/httpd","net":"tap=tap0,mac=06:00:ac:10:00:02"}"#,
        r#"{"image":"/images/httpd","net":"tap=tap0","mem":"64M"}"#,
        r#"{"size":4}"#,
        r#"{"boot":{"image":"/x","cmdline":"","net":{"tap":"tap0","mac":[6,0,0,0,0,1]},"timeout_ms":null}}"#,
        r#"{"ready":{"prepare_us":1.5}}"#,
        r#"{"failed":{"error":"no"}}"#,
    ]
    .iter()
    .map(|body| body.as_bytes().to_vec())
    .collect()
}

/// One cpio (newc) entry.
fn cpio_entry(out: &mut Vec<u8>, name: &str, mode: u32, data: &[u8]) {
    let fields = [
        1,
        mode,
        0,
        0,
        1,
        1_700_000_000,
        data.len() as u32,
        0,
        0,
        0,
        0,
        name.len() as u32 + 1,
        0,
    ];
    out.extend_from_slice(b"070701");
    for field in fields {
        out.extend_from_slice(format!("{field:08x}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
    out.extend_from_slice(data);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

/// The launch file of `lightvm run --rootfs`.
fn launch_file(exe: &str, cwd: &str, argv: &[&str], env: &[&str]) -> Vec<u8> {
    let mut text = format!("lightvm-launch-1\0{exe}\0{cwd}\0{}\0", argv.len());
    for arg in argv {
        text.push_str(arg);
        text.push('\0');
    }
    text.push_str(&format!("{}\0", env.len()));
    for var in env {
        text.push_str(var);
        text.push('\0');
    }
    text.into_bytes()
}

/// `lx_rootfs`: an archive as `lightvm run --rootfs` packs one.
pub fn lx_rootfs() -> Vec<Vec<u8>> {
    let mut archive = Vec::new();
    cpio_entry(&mut archive, ".", 0o040755, b"");
    cpio_entry(&mut archive, "bin", 0o040755, b"");
    cpio_entry(&mut archive, "bin/hello", 0o100755, b"\x7fELF....");
    cpio_entry(&mut archive, "bin/sh", 0o120777, b"hello");
    cpio_entry(
        &mut archive,
        "./etc/passwd",
        0o100644,
        b"root:x:0:0::/:/bin/sh\n",
    );
    cpio_entry(&mut archive, "dev/null", 0o020666, b"");
    cpio_entry(&mut archive, ".lightvm", 0o040755, b"");
    let launch = launch_file("/bin/sh", "/etc", &["sh", "-c", "x"], &["PATH=/bin"]);
    cpio_entry(&mut archive, ".lightvm/launch", 0o100644, &launch);
    cpio_entry(&mut archive, "TRAILER!!!", 0, b"");
    vec![archive]
}

/// `lx_launch`: launch files.
pub fn lx_launch() -> Vec<Vec<u8>> {
    vec![
        launch_file("/bin/hello", "/", &["hello"], &[]),
        launch_file(
            "/usr/sbin/nginx",
            "/var/www",
            &["nginx", "-g", "daemon off;"],
            &["HOME=/", "TERM=xterm"],
        ),
    ]
}

/// `lx_elf`: a static program, a static-pie one and a dynamic one with its
/// loader's name and program headers.
pub fn lx_elf() -> Vec<Vec<u8>> {
    let code = [0x90u8; 8];
    let interp = b"/lib64/ld-linux-x86-64.so.2\0";
    vec![
        elf64(
            ET_EXEC,
            0x40_1000,
            &[
                Ph {
                    kind: PT_LOAD,
                    flags: PF_R | PF_X,
                    addr: 0x40_1000,
                    data: &code,
                    memsz: 8,
                },
                Ph {
                    kind: PT_LOAD,
                    flags: PF_R | PF_W,
                    addr: 0x40_3000,
                    data: &code,
                    memsz: 0x3000,
                },
            ],
        ),
        elf64(
            ET_DYN,
            0x1000,
            &[
                Ph {
                    kind: PT_PHDR,
                    flags: PF_R,
                    addr: 0x40,
                    data: &[],
                    memsz: 0xa8,
                },
                Ph {
                    kind: PT_INTERP,
                    flags: PF_R,
                    addr: 0x200,
                    data: interp,
                    memsz: interp.len() as u64,
                },
                Ph {
                    kind: PT_LOAD,
                    flags: PF_R | PF_X,
                    addr: 0,
                    data: &code,
                    memsz: 0x2000,
                },
            ],
        ),
    ]
}

/// `lx_memory`: a program's start: brk, mmaps, an mprotect, an mremap that
/// grows, munmaps.
pub fn lx_memory() -> Vec<Vec<u8>> {
    let area_page = |page: u16| -> [u8; 4] {
        let [a, b] = page.to_le_bytes();
        [3, a, b, 1]
    };
    let mut w = Writer::default();
    w.u8(1);
    w.bytes(&area_page(0x100));
    let ops: &[(u8, u16, u16, u16, u32)] = &[
        (4, 0x110, 0, 0, 0),
        (0, 0, 4, 0, 0x22 | (3 << 8)),
        (0, 0x200, 2, 0, 0x32 | (7 << 8)),
        (2, 0x200, 1, 0, 1),
        (3, 0x200, 2, 8, 1),
        (1, 0x200, 1, 0, 0),
        (5, 0, 16, 0, 0),
        (3, 0x300, 4, 2, 0),
    ];
    w.u8(ops.len() as u8);
    for &(kind, a, b, c, flags) in ops {
        w.u8(kind);
        w.bytes(&area_page(a));
        w.u8(1).u16(b);
        w.u8(1).u16(c);
        w.u32(flags);
    }
    vec![w.finish()]
}

/// `lx_paths`: a program that makes, renames, links and removes files and
/// directories, and moves around.
pub fn lx_paths() -> Vec<Vec<u8>> {
    // Paths as `path()` reads them: a count of parts, then part indices into
    // ["/", "a", "b", "..", ".", "/a", "/b/", "c/", "//", "l"].
    let p = |parts: &[u8]| {
        let mut raw = vec![parts.len() as u8];
        raw.extend_from_slice(parts);
        raw
    };
    let ops: &[(u8, Vec<u8>, Vec<u8>)] = &[
        (1, p(&[5, 0, 2]), p(&[])),
        (0, p(&[5, 0, 2, 0, 1]), p(&[])),
        (7, p(&[5]), p(&[])),
        (4, p(&[2]), p(&[1, 1])),
        (5, p(&[9]), p(&[7, 1])),
        (6, p(&[3, 0, 1]), p(&[2, 2])),
        (7, p(&[3]), p(&[])),
        (3, p(&[5, 0, 1, 1]), p(&[])),
        (2, p(&[5, 0, 9]), p(&[])),
        (8, p(&[5, 0, 9, 0, 4]), p(&[6, 3])),
    ];
    let mut w = Writer::default();
    w.u8(ops.len() as u8);
    for (kind, one, two) in ops {
        w.u8(*kind).bytes(one).bytes(two);
    }
    vec![w.finish()]
}
