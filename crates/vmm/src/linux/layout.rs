//! Where a Linux guest finds things in its physical memory, and the MMIO hole.
//!
//! The same low-memory map Firecracker and QEMU's `microvm` use: everything the
//! VMM writes (GDT, PVH start info or the zero page, page tables, command line,
//! MP table) lives in the first 640 KiB; the kernel is loaded where its ELF headers
//! ask (16 MiB for a default `vmlinux`) or at 1 MiB (a bzImage); the initrd goes at
//! the top of RAM. Memory ends below the virtio-mmio window, so one memory slot
//! always covers all of RAM.

/// The GDT the vCPU starts with (four 8-byte entries and a TSS descriptor).
pub const GDT_ADDR: u64 = 0x500;
/// The PVH `hvm_start_info` structure (PVH boot: passed in `ebx`).
pub const PVH_INFO_ADDR: u64 = 0x6000;
/// The PVH module list: one entry, the initrd.
pub const PVH_MODLIST_ADDR: u64 = 0x6040;
/// The PVH memory map (up to [`MAX_E820_ENTRIES`] entries of 24 bytes).
pub const PVH_MEMMAP_ADDR: u64 = 0x6100;
/// The Linux "zero page", `struct boot_params` (64-bit boot: passed in `rsi`).
pub const ZERO_PAGE_ADDR: u64 = 0x7000;
/// Initial stack pointer of the 64-bit boot path (the kernel switches at once).
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
/// Identity page tables of the 64-bit boot path: PML4, PDPT, one PD (1 GiB).
pub const PML4_ADDR: u64 = 0x9000;
/// Page-directory-pointer table.
pub const PDPT_ADDR: u64 = 0xa000;
/// Page directory: 512 × 2 MiB pages.
pub const PD_ADDR: u64 = 0xb000;
/// End of the page-table area: PML4, PDPT and PD fill it.
pub const PAGE_TABLES_END: u64 = 0xc000;
/// What the boot page tables map: the boot protocol wants at least the kernel,
/// the zero page and the command line, all below 1 GiB.
pub const IDENTITY_MAPPED: u64 = 1 << 30;
/// The kernel command line (NUL-terminated).
pub const CMDLINE_ADDR: u64 = 0x20000;
/// Longest command line, terminating NUL included (x86's COMMAND_LINE_SIZE).
pub const CMDLINE_MAX: usize = 2048;
/// Start of the extended BIOS data area, where the MP table goes.
pub const EBDA_START: u64 = 0x9fc00;
/// End of conventional memory.
pub const LOW_MEM_END: u64 = 0xa0000;
/// Start of memory above the legacy hole (bzImage kernels load here).
pub const HIMEM_START: u64 = 0x10_0000;
/// The first virtio-mmio device; each device gets [`VIRTIO_MMIO_SIZE`] bytes.
pub const VIRTIO_MMIO_BASE: u64 = 0xd000_0000;
/// Size of one virtio-mmio device's register window.
pub const VIRTIO_MMIO_SIZE: u64 = 0x1000;
/// The first interrupt line of virtio devices (IRQ 4 is the serial port's).
pub const VIRTIO_FIRST_IRQ: u32 = 5;
/// Interrupt lines of the IOAPIC (24 pins): virtio devices use 5..=23.
pub const IOAPIC_PINS: u32 = 24;
/// The most virtio devices a VM can have.
pub const MAX_VIRTIO_DEVICES: usize = (IOAPIC_PINS - VIRTIO_FIRST_IRQ) as usize;
/// The serial port's interrupt line.
pub const SERIAL_IRQ: u32 = 4;
/// Where KVM's TSS for real-mode emulation goes (Intel needs three pages).
pub const KVM_TSS_ADDR: usize = 0xfffb_d000;
/// Smallest guest memory: the kernel loads at 16 MiB and needs room above it.
pub const MEM_MIN: u64 = 32 << 20;
/// Largest guest memory: RAM must end below the virtio-mmio window.
pub const MEM_MAX: u64 = 3 << 30;
/// Guest memory must be a multiple of this.
pub const MEM_ALIGN: u64 = 2 << 20;
/// The most e820 entries lightvm writes (the zero page holds 128).
pub const MAX_E820_ENTRIES: usize = 128;
/// Highest address an initrd may end at when the kernel does not say (the
/// boot protocol's default `initrd_addr_max`, plus one).
pub const DEFAULT_INITRD_LIMIT: u64 = 0x3800_0000;
