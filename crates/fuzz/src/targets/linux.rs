//! Linux microVMs: the kernel loader and what the kernel is told at boot.

use std::cell::RefCell;
use std::mem::size_of;

use lightvm_vmm::linux::boot_params::{self, BootSpec, InitrdPlacement};
use lightvm_vmm::linux::{layout, loader, mptable};
use lightvm_vmm::LinuxVmConfig;
use linux_loader::loader::bootparam::setup_header;
use vm_memory::{GuestAddress, GuestMemoryMmap};

use super::MemFile;
use crate::input::Input;

/// Guest memory of the kernel target: the smallest a Linux VM may have.
pub const MEM: u64 = layout::MEM_MIN;

thread_local! {
    static MEMORY: GuestMemoryMmap =
        GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM as usize)])
            .expect("mapping guest memory");
    static FILES: RefCell<(MemFile, MemFile)> = RefCell::new((MemFile::new(), MemFile::new()));
}

/// `linux_kernel`: a kernel file, loaded into guest memory as `lightvm run
/// --kernel` loads it, then an initrd as long as the kernel placed after it.
pub fn kernel(data: &[u8]) {
    FILES.with(|files| {
        let (kernel_file, initrd_file) = &mut *files.borrow_mut();
        kernel_file.set(data);
        let loaded = MEMORY.with(|memory| loader::load_kernel(&kernel_file.path(), memory, MEM));
        let Ok(kernel) = loaded else {
            return;
        };
        assert!(kernel.end <= MEM, "the kernel ends past guest memory");
        initrd_file.set(&data[..data.len().min(64 << 10)]);
        let initrd = loader::read_initrd(&initrd_file.path(), &kernel, MEM).ok();
        if let Some((_, placement)) = initrd {
            check_initrd(placement, kernel.end, MEM);
        }
        let e820 = boot_params::e820_map(MEM);
        let spec = BootSpec {
            e820: &e820,
            cmdline_addr: layout::CMDLINE_ADDR,
            cmdline_len: 16,
            initrd: initrd.map(|(_, placement)| placement),
        };
        let _ = boot_params::zero_page(&spec, kernel.setup_header);
        let _ = boot_params::pvh_start_info(&spec);
    });
}

fn check_initrd(placement: InitrdPlacement, kernel_end: u64, limit: u64) {
    assert_eq!(placement.addr % 4096, 0);
    assert!(
        placement.addr >= kernel_end,
        "{placement:?} overlaps the kernel"
    );
    assert!(
        placement
            .addr
            .checked_add(placement.size)
            .is_some_and(|end| end <= limit),
        "{placement:?} ends past {limit:#x}"
    );
}

/// `boot_params`: a bzImage's setup header (as the kernel file gives it), a memory
/// size, a kernel end and an initrd size, turned into the e820 map, the initrd's
/// place, the zero page, the PVH start info and the MP table.
pub fn boot_params(data: &[u8]) {
    let mut input = Input::new(data);
    let mem_size = match input.u8() % 4 {
        0 => input.u64(),
        _ => (layout::MEM_MIN + u64::from(input.u32()) * 4096).min(layout::MEM_MAX),
    };
    // What the loader can produce: a kernel's end is at most its load address
    // plus a u32 `init_size`, or inside guest memory (an ELF); the initrd's
    // limit is at most the end of guest memory. The initrd's size is a file's.
    let kernel_end = input.u64() % (layout::MEM_MAX + (1 << 32));
    let initrd_size = input.u64();
    let limit = input.u64() % (layout::MEM_MAX + 1);
    // The MP table is built for a validated vCPU count only (`LinuxVmConfig`).
    let max_vcpus = u8::try_from(LinuxVmConfig::MAX_VCPUS).unwrap_or(u8::MAX);
    let cpus = 1 + input.u8() % max_vcpus;
    let cmdline_len = usize::from(input.u16());
    let raw = input.bytes(size_of::<setup_header>());
    let header = (raw.len() == size_of::<setup_header>()).then(|| {
        // SAFETY: `raw` holds exactly one `setup_header` of bytes; it is a plain C
        // struct of integers (packed), for which every bit pattern is valid.
        unsafe { std::ptr::read_unaligned(raw.as_ptr().cast::<setup_header>()) }
    });
    let e820 = boot_params::e820_map(mem_size);
    for entry in &e820 {
        assert!(entry.addr.checked_add(entry.size).is_some());
    }
    let initrd = boot_params::place_initrd(initrd_size, kernel_end, limit);
    if let Some(placement) = initrd {
        check_initrd(placement, kernel_end, limit);
    }
    let spec = BootSpec {
        e820: &e820,
        cmdline_addr: layout::CMDLINE_ADDR,
        cmdline_len,
        initrd,
    };
    let params = boot_params::zero_page(&spec, header);
    assert!(usize::from(params.e820_entries) <= e820.len());
    let pvh = boot_params::pvh_start_info(&spec);
    assert_eq!(pvh.memmap.len(), e820.len().min(layout::MAX_E820_ENTRIES));
    let table = mptable::build(cpus);
    assert!(table.len() as u64 <= layout::LOW_MEM_END - layout::EBDA_START);
}
