//! The Linux personality: a library OS that runs one unmodified Linux program in a
//! lightvm unikernel, on either platform, with no guest kernel.
//!
//! The monitor boots this image with the program's root filesystem as its module
//! (a cpio archive `lightvm run --rootfs` packs, holding `/.lightvm/launch`: the
//! program's path, arguments, environment and working directory). The personality
//! unpacks the archive into its file system ([`vfs`]), loads the program and its
//! dynamic loader ([`loader`]), asks the monitor to send the guest's `syscall`s to
//! its entry ([`entry`]) and jumps to the program, which runs at CPL 3 in the same
//! address space. Every system call it makes is answered here ([`sys`]): a
//! function call once its site is rewritten, never a host system call.
//!
//! Memory: the personality's own heap is the top of guest memory (below the
//! module), with a trampoline area under it; everything between the image and
//! there is the program's ([`mm`]).
#![no_std]
#![no_main]

extern crate alloc;

mod cpu;
mod entry;
mod epoll;
mod eventfd;
mod fd;
mod kernel;
mod loader;
mod net;
mod objects;
mod pipe;
mod random;
mod socket;
mod sys;
mod thread;
mod uaccess;
mod vdso;

// The parts that read the program's and the user's input live in a crate of their
// own, which the host's tests and fuzz targets build too.
use personality_core::{errno, launch, mm, vfs};

use alloc::borrow::Cow;
use alloc::collections::BTreeMap;
use alloc::string::String;

use libos::abi::layout;
use libos::abi::limits::GUEST_STATUS_MAX;

use fd::{FdTable, Object};
use kernel::Kernel;
use vfs::{Device, Generated, Kind, Vfs};

libos::entry!(main, manual_start);

/// The personality's own heap: a quarter of guest memory, within these bounds.
const HEAP_MIN: u64 = 16 << 20;
/// See [`HEAP_MIN`].
const HEAP_MAX: u64 = 256 << 20;
/// Bytes of rewritten-site trampolines (a site takes 24).
const TRAMPOLINE_AREA: u64 = 1 << 20;
/// The program's initial stack.
const STACK_BYTES: u64 = 8 << 20;
/// Where a position-independent program goes, when the program's memory reaches
/// that high (it keeps low addresses free for `ET_EXEC` programs at 4 MiB).
const PIE_BASE: u64 = 0x1000_0000;

fn main() -> i32 {
    let info = libos::boot_info();
    if !cpu::saves_vector_state() {
        fatal("the CPU has no XSAVEOPT (or the OS did not enable XSAVE): the personality saves a program's vector state with it");
    }
    // The personality's heap at the top, then the trampolines, then the program.
    let free = info.heap_start..info.heap_end;
    let heap_bytes = ((free.end - free.start) / 4).clamp(HEAP_MIN, HEAP_MAX);
    let heap_low = free.end.saturating_sub(heap_bytes) & !(layout::LARGE_PAGE_SIZE - 1);
    let trampolines = heap_low.saturating_sub(TRAMPOLINE_AREA);
    let program_area = mm::page_up(free.start).unwrap_or(free.start)..trampolines;
    if heap_low <= free.start || program_area.start >= program_area.end {
        fatal("guest memory is too small for the personality and a program (raise --mem)");
    }
    // SAFETY: `heap_low..heap_end` is free guest memory (the top of the heap the
    // monitor named), used by nothing else; this is the one call, before any
    // allocation.
    unsafe { libos::heap::init(heap_low, free.end) };
    // SAFETY: the area lies below the heap, in guest memory the monitor maps
    // read-write-execute for a VM that runs Linux programs, below 4 GiB (guest
    // memory ends by 3 GiB), and nothing else uses it.
    let sled = info.flags & libos::abi::BOOT_FLAG_SYSCALL_SLED != 0;
    unsafe { entry::TRAMPOLINES.init(trampolines, TRAMPOLINE_AREA as usize, sled) };

    let archive = libos::boot::module();
    if archive.is_empty() {
        fatal("no root filesystem: boot the personality with --rootfs");
    }
    let now = i64::try_from(libos::time::wall_clock().as_secs()).unwrap_or(0);
    let mut vfs = Vfs::new(now);
    vfs.unpack(archive, now);
    let spec = match launch::read(&vfs) {
        Ok(spec) => spec,
        Err(error) => fatal(&error),
    };
    add_system_files(&mut vfs, &spec.exe, now);
    let cwd = vfs
        .lookup(vfs::ROOT, &spec.cwd, vfs::Follow::Yes)
        .unwrap_or(vfs::ROOT);
    let mut fds = FdTable::default();
    for (fd, flags) in [(0, 0), (1, 1), (2, 1)] {
        let file = FdTable::open_file(Object::Device(Device::Console), flags);
        let _ = fds.insert(file, false, fd);
    }
    kernel::install(Kernel {
        vfs,
        fds,
        mm: mm::Memory::new(program_area.clone(), zero_program_memory),
        cwd,
        exe: spec.exe.clone(),
        argv: spec.argv.clone(),
        trace: libos::cmdline_arg("lx.trace").is_some(),
        unimplemented: BTreeMap::new(),
        umask: 0o022,
        code: program_area.clone(),
        signal_actions: BTreeMap::new(),
        counter: 0,
    });
    // A position-independent program goes low, as Linux puts it below its heap;
    // mappings (its loader, its libraries, its stack) grow down from the top.
    let pie_base = if program_area.end > PIE_BASE * 2 {
        PIE_BASE
    } else {
        program_area.start.next_multiple_of(layout::LARGE_PAGE_SIZE)
    };
    let loaded = match loader::load(&spec.exe, pie_base) {
        Ok(loaded) => loaded,
        Err(error) => fatal(&alloc::format!("{error}")),
    };
    let k = kernel::kernel();
    let stack = match k.mm.map_anywhere(STACK_BYTES, 3, "[stack]", false) {
        Ok(low) => low..low + STACK_BYTES,
        Err(_) => fatal("no room for the program's stack (raise --mem)"),
    };
    let vdso = vdso::map();
    let sp = match loader::initial_stack(stack, &loaded, vdso, &spec.argv, &spec.env) {
        Ok(sp) => sp,
        Err(error) => fatal(&alloc::format!("{error}")),
    };
    let (trapped, return_slot) = entry::trapped_entry();
    libos::hypercall::syscall_entry(trapped, return_slot, entry::entry_address());
    // The program's first thread handles its calls on this stack: the frames
    // below are dead once the program runs.
    entry::LX_KERNEL_STACK.store(
        layout::STACK_TOP - 64,
        core::sync::atomic::Ordering::Relaxed,
    );
    thread::init();
    if let Err(error) = net::init() {
        fatal(&alloc::format!("{error}"));
    }
    libos::hypercall::boot_done();
    // SAFETY: the program is loaded, `sp` is its initial stack, and the kernel
    // stack is set.
    unsafe { entry::enter_program(loaded.entry(), sp) }
}

/// Clears program memory that is handed out again ([`mm::Memory`] decides which).
fn zero_program_memory(range: core::ops::Range<u64>) {
    // SAFETY: the memory manager passes only ranges inside the program's area:
    // guest memory the monitor maps writable and the personality hands only to
    // the program, which runs no code while its call is handled.
    unsafe {
        core::ptr::write_bytes(
            range.start as *mut u8,
            0,
            (range.end - range.start) as usize,
        );
    }
}

/// The devices and `/proc` and `/sys` files programs read, over what the
/// archive holds.
fn add_system_files(vfs: &mut Vfs, exe: &str, now: i64) {
    let dev = |device| Vfs::node_of(Kind::Device(device), 0o666, now);
    for (path, device) in [
        ("/dev/null", Device::Null),
        ("/dev/zero", Device::Zero),
        ("/dev/urandom", Device::Random),
        ("/dev/random", Device::Random),
        ("/dev/console", Device::Console),
        ("/dev/tty", Device::Console),
        ("/dev/stdout", Device::Console),
        ("/dev/stderr", Device::Console),
        ("/dev/stdin", Device::Console),
    ] {
        vfs.put(path, dev(device), now);
    }
    vfs.mkdirs("/dev/shm", now);
    vfs.mkdirs("/tmp", now);
    vfs.put(
        "/proc/self",
        Vfs::node_of(Kind::Symlink("1".into()), 0o777, now),
        now,
    );
    vfs.put(
        "/proc/1/exe",
        Vfs::node_of(Kind::Symlink(String::from(exe)), 0o777, now),
        now,
    );
    let generated = |which| Vfs::node_of(Kind::Generated(which), 0o444, now);
    vfs.put("/proc/1/stat", generated(Generated::SelfStat), now);
    vfs.put("/proc/1/status", generated(Generated::SelfStatus), now);
    vfs.put("/proc/1/maps", generated(Generated::SelfMaps), now);
    vfs.put("/proc/1/cmdline", generated(Generated::SelfCmdline), now);
    vfs.mkdirs("/proc/1/fd", now);
    vfs.put("/proc/meminfo", generated(Generated::Meminfo), now);
    vfs.put("/proc/cpuinfo", generated(Generated::Cpuinfo), now);
    let text = |content: &'static str| {
        Vfs::node_of(Kind::File(Cow::Borrowed(content.as_bytes())), 0o444, now)
    };
    for (path, content) in [
        ("/proc/sys/net/core/somaxconn", "4096\n"),
        ("/proc/sys/vm/overcommit_memory", "1\n"),
        ("/proc/sys/kernel/pid_max", "32768\n"),
        ("/proc/sys/kernel/hostname", "lightvm\n"),
        (
            "/sys/kernel/mm/transparent_hugepage/enabled",
            "always madvise [never]\n",
        ),
        ("/sys/devices/system/cpu/online", "0\n"),
        ("/sys/devices/system/cpu/possible", "0\n"),
        ("/sys/devices/system/cpu/present", "0\n"),
        ("/etc/hostname", "lightvm\n"),
    ] {
        vfs.put(path, text(content), now);
    }
}

/// Ends the VM because the program ended with `status`, after a trace's summary
/// of the calls that were not implemented.
pub fn finish(status: u8) -> ! {
    // Connections close as the process's would, their last bytes sent.
    socket::at_exit();
    let k = kernel::kernel();
    if k.trace {
        libos::println!(
            "[lx] exit {status}; {} syscall sites rewritten",
            entry::TRAMPOLINES.rewritten()
        );
        if let Some(summary) = sys::proc::unimplemented_summary() {
            libos::println!("[lx] not implemented (ENOSYS): {summary}");
        }
    }
    if u32::from(status) > GUEST_STATUS_MAX {
        libos::process::exit_with_message(
            GUEST_STATUS_MAX,
            format_args!(
                "the program exited with status {status}, above the {GUEST_STATUS_MAX} a guest may report"
            ),
        )
    }
    libos::exit(i32::from(status))
}

/// Ends the VM: the personality could not run the program, for a reason the
/// user can act on.
pub fn fatal(reason: &str) -> ! {
    libos::process::exit_with_message(GUEST_STATUS_MAX, format_args!("lightvm linux: {reason}"))
}
