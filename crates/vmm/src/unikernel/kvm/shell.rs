//! VM shells: everything about a VM that does not depend on the image, done ahead
//! of time (LightVM's *prepare* phase), so that starting a guest (*execute*) is only
//! writing the image and resuming the vCPU.
//!
//! On our hosts creating a VM costs ~200 µs, its vCPU ~200 µs and the vCPU's first
//! `KVM_RUN` ~100 µs more, whatever the guest does (DESIGN.md). A [`Shell`] pays for
//! all three: [`Shell::create`] builds the VM, its memory, the vCPU and the GDT/TSS,
//! and [`Shell::warm`] runs the vCPU once through a parking stub. [`Shell::boot`] then
//! loads an image and returns a [`Vm`] ready to run.
//!
//! Page tables are never rewritten in place: KVM's shadow MMU caches translations
//! of the tables the stub ran with, and a host-side write to those pages would not be
//! seen by it. The image's tables go into fresh pages of the page-table area and the
//! vCPU switches to them with its new CR3.

use std::io::Write;
use std::time::{Duration, Instant, SystemTime};

use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};
use lightvm_abi::{layout, BootInfo, Hypercall, ABI_VERSION, BOOT_INFO_MAGIC};
use vm_memory::GuestMemoryMmap;
use zerocopy::IntoBytes;

use crate::arch::cpu::{self, EntryState};
use crate::arch::gdt;
use crate::arch::paging::{self, Mapping, PageAccess};
use crate::config::VmConfig;
use crate::error::{kvm_op, VmmError};
use crate::loader::UnikernelImage;
use crate::memory;
use crate::report::{micros, Timings};
use crate::unikernel_devices::Devices;
use crate::vm::Vm;

/// A prepared VM without an image: KVM VM, guest memory, vCPU, GDT and TSS.
pub struct Shell {
    parts: ShellParts,
    mem_size: u64,
    tsc_hz: u64,
    /// Where the next set of page tables goes: above every table the vCPU has used.
    tables_at: u64,
    warmed: bool,
}

/// The KVM objects a [`Vm`] takes over from its shell.
pub(crate) struct ShellParts {
    // Field order is drop order: the vCPU and VM file descriptors go before the
    // memory they map.
    pub(crate) vcpu: VcpuFd,
    pub(crate) vm: VmFd,
    pub(crate) memory: GuestMemoryMmap,
}

impl Shell {
    /// Creates the VM, its memory and its vCPU, and writes the image-independent
    /// machine state. `mem_size` must be valid for [`VmConfig`].
    pub fn create(mem_size: u64) -> Result<Self, VmmError> {
        VmConfig::check_mem_size(mem_size)?;
        let kvm = Kvm::new().map_err(VmmError::KvmUnavailable)?;
        let vm = kvm.create_vm().map_err(kvm_op("KVM_CREATE_VM"))?;
        let memory = memory::create(&vm, mem_size)?;
        let vcpu = vm.create_vcpu(0).map_err(kvm_op("KVM_CREATE_VCPU"))?;
        let tsc_hz = vcpu.get_tsc_khz().map_or(0, |khz| u64::from(khz) * 1000);
        memory::write(&memory, layout::GDT_ADDR, &gdt::page(layout::GDT_ADDR))?;
        // No KVM_SET_CPUID2: querying the supported set costs ~80 µs per cold boot,
        // and a CPL-3 guest built for baseline x86-64 needs no feature the default
        // (empty) CPUID hides — SSE is enabled through CR4, and NX is enforced
        // (the `writing_to_code_and_executing_data_fault` test shows it).
        cpu::set_static_state(&vcpu)?;
        Ok(Self {
            parts: ShellParts { vcpu, vm, memory },
            mem_size,
            tsc_hz,
            tables_at: layout::PAGE_TABLES_ADDR,
            warmed: false,
        })
    }

    /// Guest memory of this shell: only images for this size can boot in it.
    pub fn mem_size(&self) -> u64 {
        self.mem_size
    }

    /// Whether [`Shell::warm`] has run.
    pub fn is_warm(&self) -> bool {
        self.warmed
    }

    /// Runs the vCPU once through a parking stub — `out` to the boot-done port, in
    /// its own page with its own page tables — so that the first-run costs of KVM
    /// are paid now rather than when a guest is started.
    pub fn warm(&mut self) -> Result<(), VmmError> {
        if self.warmed {
            return Ok(());
        }
        let stub_addr = self.tables_at;
        let port = Hypercall::BootDone.port().to_le_bytes();
        // mov dx, port; out dx, eax; ud2
        let stub = [0x66, 0xba, port[0], port[1], 0xef, 0x0f, 0x0b];
        memory::write(&self.parts.memory, stub_addr, &stub)?;
        // The GDT page holds the TSS, whose I/O bitmap the CPU reads for the `out`.
        let mappings = [
            map(page(layout::GDT_ADDR), PageAccess::SUPERVISOR),
            map(page(stub_addr), PageAccess::USER_CODE),
            map(layout::STACK_BOTTOM..layout::STACK_TOP, PageAccess::DATA),
        ];
        let tables = paging::build(
            stub_addr + layout::PAGE_SIZE,
            self.mem_size,
            layout::LARGE_PAGE_SIZE,
            &mappings,
        )?;
        write_tables(&self.parts.memory, &tables)?;
        cpu::set_entry_state(
            &self.parts.vcpu,
            &EntryState {
                entry: stub_addr,
                stack_top: layout::STACK_TOP,
                boot_info: 0,
                page_table_root: tables.root,
                gdt_addr: layout::GDT_ADDR,
            },
        )?;
        match self.parts.vcpu.run() {
            Ok(VcpuExit::IoOut(port, _)) if port == Hypercall::BootDone.port() => {}
            Ok(other) => {
                return Err(VmmError::Host {
                    op: "warming a shell",
                    source: std::io::Error::other(format!(
                        "the parking stub stopped with {other:?}"
                    )),
                })
            }
            Err(error) => return Err(kvm_op("KVM_RUN")(error)),
        }
        self.tables_at = tables.end;
        self.warmed = true;
        Ok(())
    }

    /// Loads the image `config` names into this shell (execute phase): validation,
    /// image, page tables, boot info and registers. The returned VM's timings count
    /// from this call.
    pub fn boot(self, config: &VmConfig, console: Box<dyn Write + Send>) -> Result<Vm, VmmError> {
        let started = Instant::now();
        if config.mem_size() != self.mem_size {
            return Err(VmmError::Internal(
                "a shell can only boot images configured for its memory size",
            ));
        }
        let image = UnikernelImage::from_file(config.image())?;
        image.check_fits(self.mem_size)?;
        let image_loaded = started.elapsed();
        self.start(&image, config, console, started, image_loaded)
    }

    /// Writes the image and its boot state, and points the vCPU at its entry.
    pub(crate) fn start(
        self,
        image: &UnikernelImage,
        config: &VmConfig,
        console: Box<dyn Write + Send>,
        started: Instant,
        image_loaded: Duration,
    ) -> Result<Vm, VmmError> {
        // Devices first: a missing tap or disk fails before guest memory is touched.
        let devices = Devices::open(config.net(), config.disk())?;
        let memory = &self.parts.memory;
        let heap_start = image.end().next_multiple_of(layout::PAGE_SIZE);
        let tables = image_page_tables(image, self.tables_at, self.mem_size, heap_start)?;
        write_tables(memory, &tables)?;
        write_boot_info(memory, config, self.mem_size, heap_start, self.tsc_hz)?;
        load_segments(memory, image)?;
        cpu::set_entry_state(
            &self.parts.vcpu,
            &EntryState {
                entry: image.entry(),
                stack_top: layout::STACK_TOP,
                boot_info: layout::BOOT_INFO_ADDR,
                page_table_root: tables.root,
                gdt_addr: layout::GDT_ADDR,
            },
        )?;
        let timings = Timings {
            image_load_us: micros(image_loaded),
            vm_setup_us: micros(started.elapsed() - image_loaded),
            ..Timings::default()
        };
        Ok(Vm::new(
            self.parts,
            devices,
            console,
            config.timeout(),
            started,
            timings,
        ))
    }
}

/// Tables for an image: GDT (supervisor), boot info (read-only), stack, each segment
/// with its ELF permissions, and the heap; page 0 and everything else unmapped.
fn image_page_tables(
    image: &UnikernelImage,
    base: u64,
    mem_size: u64,
    heap_start: u64,
) -> Result<paging::PageTables, VmmError> {
    let fine_end = image
        .end()
        .max(layout::IMAGE_MIN_ADDR)
        .next_multiple_of(layout::LARGE_PAGE_SIZE)
        .min(mem_size);
    let mut mappings = vec![
        map(page(layout::GDT_ADDR), PageAccess::SUPERVISOR),
        map(page(layout::BOOT_INFO_ADDR), PageAccess::READ_ONLY),
        map(layout::STACK_BOTTOM..layout::STACK_TOP, PageAccess::DATA),
    ];
    for segment in image.segments() {
        let start = segment.guest_addr - segment.guest_addr % layout::PAGE_SIZE;
        let end = segment.guest_end().next_multiple_of(layout::PAGE_SIZE);
        let access = PageAccess {
            user: true,
            write: segment.access.write,
            exec: segment.access.exec,
        };
        mappings.push(map(start..end, access));
    }
    if heap_start < fine_end {
        mappings.push(map(heap_start..fine_end, PageAccess::DATA));
    }
    Ok(paging::build(base, mem_size, fine_end, &mappings)?)
}

fn write_tables(memory: &GuestMemoryMmap, tables: &paging::PageTables) -> Result<(), VmmError> {
    for (addr, entries) in &tables.pages {
        memory::write(memory, *addr, entries.as_bytes())?;
    }
    Ok(())
}

fn write_boot_info(
    memory: &GuestMemoryMmap,
    config: &VmConfig,
    mem_size: u64,
    heap_start: u64,
    tsc_hz: u64,
) -> Result<(), VmmError> {
    let wall_clock_ns = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    let boot_info = BootInfo {
        magic: BOOT_INFO_MAGIC,
        abi_version: ABI_VERSION,
        flags: 0,
        mem_size,
        heap_start,
        heap_end: mem_size,
        stack_bottom: layout::STACK_BOTTOM,
        stack_top: layout::STACK_TOP,
        cmdline_addr: layout::CMDLINE_ADDR,
        cmdline_len: config.cmdline().len() as u64,
        tsc_hz,
        wall_clock_ns,
    };
    memory::write(memory, layout::BOOT_INFO_ADDR, boot_info.as_bytes())?;
    memory::write(memory, layout::CMDLINE_ADDR, config.cmdline().as_bytes())
}

/// Puts the image in guest memory: whole read-only pages mapped from the file, the
/// rest copied. Fresh memory is zero, so bss needs no clearing.
fn load_segments(memory: &GuestMemoryMmap, image: &UnikernelImage) -> Result<(), VmmError> {
    for segment in image.segments() {
        let bytes = image.file_bytes(segment);
        let mapped = match (image.file_pages(segment), image.file()) {
            (Some(pages), Some(file)) => {
                memory::map_file(memory, pages.guest_addr, pages.len, file, pages.file_offset)?;
                pages.guest_addr - segment.guest_addr
                    ..pages.guest_addr - segment.guest_addr + pages.len
            }
            _ => 0..0,
        };
        let split = |range: std::ops::Range<u64>| {
            bytes
                .get(range.start as usize..range.end as usize)
                .ok_or(VmmError::Internal("file pages outside their segment"))
        };
        let (head, tail) = (
            split(0..mapped.start)?,
            split(mapped.end..bytes.len() as u64)?,
        );
        memory::write(memory, segment.guest_addr, head)?;
        memory::write(memory, segment.guest_addr + mapped.end, tail)?;
    }
    Ok(())
}

/// The one page at `addr`.
fn page(addr: u64) -> std::ops::Range<u64> {
    addr..addr + layout::PAGE_SIZE
}

fn map(range: std::ops::Range<u64>, access: PageAccess) -> Mapping {
    Mapping {
        start: range.start,
        end: range.end,
        access,
    }
}
