//! Fuzz targets for lightvm: every parser and decoder that takes input a guest, a
//! Linux program, its user or an API client controls.
//!
//! Each [`Target`] is a plain function of a byte string, so the same code runs
//! three ways:
//!
//! * coverage-guided, under libFuzzer: `scripts/fuzz.sh run TARGET [RUNS]` builds
//!   the `lightvm-fuzz` binary (feature `libfuzzer`) with SanitizerCoverage on
//!   stable Rust and runs it for RUNS executions;
//! * with the small mutational [`driver`] of this crate, which needs nothing but
//!   stable cargo: `cargo run -p lightvm-fuzz --bin fuzz-driver -- run TARGET N`;
//! * as a smoke pass in `cargo test` (`tests/smoke.rs`): each target's seeds and a
//!   few thousand mutations of them, so CI notices a target that no longer runs
//!   or a regression that any input shows at once.
//!
//! The daemon's API is also fuzzed as a whole, over HTTP against a running
//! daemon, by [`conformance`] (the `api-conformance` binary): schemathesis's
//! checks against `docs/openapi.json`, in Rust.
//!
//! A target fails by panicking: the code under test must never panic, overflow or
//! break its own invariants on any input (the targets assert those invariants),
//! and a monitor must never write to memory the guest does not own.

pub mod conformance;
pub mod driver;
pub mod input;
pub mod seeds;
pub mod targets;

/// One fuzz target.
pub struct Target {
    /// Its name, as `scripts/fuzz.sh` and the driver take it.
    pub name: &'static str,
    /// What it feeds, to which function, in one line.
    pub feeds: &'static str,
    /// Runs one input.
    pub run: fn(&[u8]),
    /// Inputs that reach deep into the code under test, to start from.
    pub seeds: fn() -> Vec<Vec<u8>>,
}

/// Every target.
pub const TARGETS: &[Target] = &[
    Target {
        name: "unikernel_elf",
        feeds: "an image file to UnikernelImage::parse, then check_fits, load_segments and write_boot_info",
        run: targets::unikernel::elf,
        seeds: seeds::unikernel_elf,
    },
    Target {
        name: "hypercall",
        feeds: "guest memory and a sequence of hypercalls to Core::hypercall (console, exit, poll, syscall entry, block setup and notify)",
        run: targets::unikernel::hypercall,
        seeds: seeds::hypercall,
    },
    Target {
        name: "unikernel_ring",
        feeds: "guest memory and ring operations to Ring::attach, pending, read, write and complete",
        run: targets::unikernel::ring,
        seeds: seeds::unikernel_ring,
    },
    Target {
        name: "linux_kernel",
        feeds: "a kernel file (vmlinux or bzImage) to linux::loader::load_kernel (detect_format, check_elf, linux-loader)",
        run: targets::linux::kernel,
        seeds: seeds::linux_kernel,
    },
    Target {
        name: "boot_params",
        feeds: "a setup header, memory size and initrd size to e820_map, place_initrd, zero_page and pvh_start_info",
        run: targets::linux::boot_params,
        seeds: seeds::boot_params,
    },
    Target {
        name: "virtio_blk",
        feeds: "MMIO register writes and guest memory to MmioTransport over virtio-blk (check_chain, next_request, the request walker)",
        run: targets::virtio::blk,
        seeds: seeds::virtio_blk,
    },
    Target {
        name: "virtio_net",
        feeds: "MMIO register writes, guest memory and host frames to MmioTransport over virtio-net",
        run: targets::virtio::net,
        seeds: seeds::virtio_net,
    },
    Target {
        name: "api_request",
        feeds: "a request body to the daemon's JSON decoding and check_request (POST /vms, PUT /pool) and the shell's boot request",
        run: targets::api::request,
        seeds: seeds::api_request,
    },
    Target {
        name: "lx_rootfs",
        feeds: "a root filesystem archive to Vfs::unpack, launch::read and path lookups",
        run: targets::personality::rootfs,
        seeds: seeds::lx_rootfs,
    },
    Target {
        name: "lx_launch",
        feeds: "a launch file to launch::parse",
        run: targets::personality::launch,
        seeds: seeds::lx_launch,
    },
    Target {
        name: "lx_elf",
        feeds: "a program's ELF file to personality_core::elf::plan and the image placement",
        run: targets::personality::elf,
        seeds: seeds::lx_elf,
    },
    Target {
        name: "lx_memory",
        feeds: "mmap, munmap, mprotect, mremap and brk arguments to the personality's Memory",
        run: targets::personality::memory,
        seeds: seeds::lx_memory,
    },
    Target {
        name: "lx_paths",
        feeds: "path arguments of the file calls (open/creat, mkdir, unlink, rmdir, rename, link, symlink, getcwd) to the personality's Vfs",
        run: targets::personality::paths,
        seeds: seeds::lx_paths,
    },
];

/// The target called `name`.
pub fn find(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|target| target.name == name)
}
