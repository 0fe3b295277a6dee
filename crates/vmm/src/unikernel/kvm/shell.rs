//! kvm shells: everything about a KVM VM that does not depend on the image, done
//! ahead of time (LightVM's *prepare* phase), so that starting a guest (*execute*)
//! is only writing the image and resuming the vCPU.
//!
//! On our hosts creating a VM costs ~200 µs, its vCPU ~200 µs and the vCPU's first
//! `KVM_RUN` ~100 µs more, whatever the guest does (DESIGN.md). A [`KvmShell`] pays
//! for all three: [`KvmShell::create`] builds the VM, its memory, the vCPU, the
//! GDT/TSS and the hypercall gate stub, and [`KvmShell::warm`] runs the vCPU once
//! through a parking stub. [`KvmShell::start`] then loads an image and returns a
//! [`KvmVm`] ready to run.
//!
//! Page tables are never rewritten in place: KVM's shadow MMU caches translations
//! of the tables the stub ran with, and a host-side write to those pages would not be
//! seen by it. The image's tables go into fresh pages of the page-table area and the
//! vCPU switches to them with its new CR3.

use std::io::Write;
use std::time::Instant;

use kvm_ioctls::{VcpuExit, VcpuFd, VmFd};
use lightvm_abi::{layout, Hypercall, HYPERCALL_PORT_BASE, HYPERCALL_PORT_COUNT, PLATFORM_KVM};
use vm_memory::GuestMemoryMmap;

use super::vm::KvmVm;
use crate::config::VmConfig;
use crate::kvm::arch::cpu::{self, EntryState};
use crate::kvm::arch::gdt;
use crate::kvm::arch::paging::{self, Mapping, PageAccess};
use crate::kvm::kvm_op;
use crate::loader::UnikernelImage;
use crate::memory;
use crate::report::Timings;
use crate::unikernel::boot::{self, BootFacts, GuestLayout, Module};
use crate::unikernel::core::{Core, SledPage};
use crate::unikernel::error::UnikernelError;
use crate::unikernel::guest::{self, Ownership};
use crate::unikernel::GuestParts;
use vm_memory::GuestMemoryBackend;

/// The gate stub at [`layout::KVM_GATE_ADDR`]: `gate(call: rdi, arg: rsi)` becomes
/// `out` to port `HYPERCALL_PORT_BASE + call` with the argument's low 32 bits in
/// `eax`. A number past the hypercall ports goes to the range's last port, which no
/// call uses, so the exit loop reports it as an unknown call instead of the guest
/// taking a #GP on a closed port.
const GATE_STUB: [u8; 21] = {
    let last = (HYPERCALL_PORT_COUNT - 1) as u8;
    let base = HYPERCALL_PORT_BASE.to_le_bytes();
    [
        0x48, 0x83, 0xff, last, // cmp rdi, last
        0x76, 0x05, // jbe +5
        0xbf, last, 0, 0, 0, // mov edi, last
        0x8d, 0x97, base[0], base[1], 0, 0, // lea edx, [rdi + base]
        0x89, 0xf0, // mov eax, esi
        0xef, // out dx, eax
        0xc3, // ret
    ]
};

/// A prepared VM without an image: KVM VM, guest memory, vCPU, GDT, TSS and gate.
pub struct KvmShell {
    parts: ShellParts,
    mem_size: u64,
    tsc_hz: u64,
    /// Where the next set of page tables goes: above every table the vCPU has used.
    tables_at: u64,
    warmed: bool,
    /// Whether the vCPU was set up for Linux programs (its CPUID cannot change
    /// once it has run).
    linux: bool,
}

/// The KVM objects a [`KvmVm`] takes over from its shell.
pub(crate) struct ShellParts {
    // Field order is drop order: the vCPU and VM file descriptors go before the
    // memory they map.
    pub(crate) vcpu: VcpuFd,
    pub(crate) vm: VmFd,
    pub(crate) memory: GuestMemoryMmap,
}

impl KvmShell {
    /// Creates the VM, its memory and its vCPU, and writes the image-independent
    /// machine state. `mem_size` must be valid for [`VmConfig`].
    pub fn create(mem_size: u64, linux: bool) -> Result<Self, UnikernelError> {
        VmConfig::check_mem_size(mem_size)?;
        let kvm = crate::kvm::open()?;
        let vm = kvm.create_vm().map_err(kvm_op("KVM_CREATE_VM"))?;
        let memory = crate::kvm::memory::create(&vm, mem_size)?;
        let vcpu = vm.create_vcpu(0).map_err(kvm_op("KVM_CREATE_VCPU"))?;
        let tsc_hz = vcpu.get_tsc_khz().map_or(0, |khz| u64::from(khz) * 1000);
        memory::write(&memory, layout::GDT_ADDR, &gdt::page(layout::GDT_ADDR))?;
        memory::write(&memory, layout::KVM_GATE_ADDR, &GATE_STUB)?;
        memory::write(&memory, cpu::SYSCALL_STUB, &cpu::SYSCALL_STUB_CODE)?;
        if linux {
            cpu::set_linux_cpuid(&vcpu)?;
        }
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
            linux,
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
    pub fn warm(&mut self) -> Result<(), UnikernelError> {
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
            &[],
        )?;
        tables.write(&self.parts.memory)?;
        cpu::set_entry_state(
            &self.parts.vcpu,
            &EntryState {
                entry: stub_addr,
                stack_top: layout::STACK_TOP,
                boot_info: 0,
                page_table_root: tables.root,
                gdt_addr: layout::GDT_ADDR,
                linux: self.linux,
            },
        )?;
        match self.parts.vcpu.run() {
            Ok(VcpuExit::IoOut(port, _)) if port == Hypercall::BootDone.port() => {}
            Ok(other) => {
                return Err(UnikernelError::Host {
                    op: "warming a shell",
                    source: std::io::Error::other(format!(
                        "the parking stub stopped with {other:?}"
                    )),
                })
            }
            Err(error) => return Err(kvm_op("KVM_RUN")(error).into()),
        }
        self.tables_at = tables.end;
        self.warmed = true;
        Ok(())
    }

    /// Writes the image and its boot state, and points the vCPU at its entry: the
    /// execute phase. `parts` were opened for the guest; the VM's timings count
    /// from `started`, and `image_loaded` of that went to reading the image.
    pub fn start(
        self,
        image: &UnikernelImage,
        parts: GuestParts,
        config: &VmConfig,
        console: Box<dyn Write + Send>,
        (started, image_loaded): (Instant, std::time::Duration),
    ) -> Result<KvmVm, UnikernelError> {
        let memory = &self.parts.memory;
        let module_len = parts.module.as_ref().map(Module::len);
        let plan = GuestLayout::plan(
            image,
            self.mem_size,
            module_len,
            config.runs_linux_programs(),
        )?;
        let tables = image_page_tables(image, self.tables_at, self.mem_size, &plan)?;
        tables.write(memory)?;
        let facts = BootFacts {
            mem_size: self.mem_size,
            tsc_hz: self.tsc_hz,
            platform: PLATFORM_KVM,
            hypercall_gate: layout::KVM_GATE_ADDR,
            module_len: module_len.unwrap_or(0),
            // A VM for Linux programs maps page 0 as the sled (see the tables).
            syscall_sled: plan.executable_heap,
        };
        boot::write_boot_info(memory, &facts, &plan, config.cmdline())?;
        boot::load_segments(memory, image)?;
        if let (Some(module), Some(place)) = (&parts.module, &plan.module) {
            boot::load_module(memory, module, place)?;
        }
        if config.runs_linux_programs() != self.linux {
            return Err(UnikernelError::Internal(
                "a shell boots Linux programs only if it was made for them, and only them",
            ));
        }
        cpu::set_entry_state(
            &self.parts.vcpu,
            &EntryState {
                entry: image.entry(),
                stack_top: layout::STACK_TOP,
                boot_info: layout::BOOT_INFO_ADDR,
                page_table_root: tables.root,
                gdt_addr: layout::GDT_ADDR,
                linux: self.linux,
            },
        )?;
        let timings = Timings::setup(started, image_loaded);
        let ShellParts { vcpu, vm, memory } = self.parts;
        let mut read_only = guest::read_only_ranges(image);
        read_only.extend(plan.module.clone());
        let owned = Ownership::new(self.mem_size, read_only);
        let sled = memory
            .get_host_address(vm_memory::GuestAddress(layout::SYSCALL_SLED_ADDR))
            .map_err(|_| UnikernelError::Internal("guest page 0 has no host address"))?;
        let mut core = Core::new(
            memory,
            owned,
            parts.devices,
            console,
            config.timeout(),
            (started, timings),
        );
        if plan.executable_heap {
            // SAFETY: guest page 0 is part of the memory the core now owns (one
            // region from address 0), writable by the monitor for the core's
            // life; the guest sees it read-and-execute only (the tables), and
            // nothing else writes it.
            core.set_syscall_sled(unsafe { SledPage::new(sled) });
        }
        Ok(KvmVm::new(vcpu, vm, core))
    }
}

/// Tables for an image: GDT (supervisor), gate (user code), boot info (read-only),
/// stack, each segment with its ELF permissions, the heap (executable in a VM for
/// Linux programs) and the module (read-only); page 0 the syscall sled (user
/// read-and-execute) in a VM for Linux programs, unmapped otherwise, like
/// everything else.
fn image_page_tables(
    image: &UnikernelImage,
    base: u64,
    mem_size: u64,
    plan: &GuestLayout,
) -> Result<paging::PageTables, UnikernelError> {
    let fine_end = image
        .end()
        .max(layout::IMAGE_MIN_ADDR)
        .next_multiple_of(layout::LARGE_PAGE_SIZE)
        .min(mem_size);
    let mut mappings = vec![
        map(page(layout::GDT_ADDR), PageAccess::SUPERVISOR),
        map(page(layout::KVM_GATE_ADDR), PageAccess::USER_CODE),
        map(page(layout::BOOT_INFO_ADDR), PageAccess::READ_ONLY),
        map(layout::STACK_BOTTOM..layout::STACK_TOP, PageAccess::DATA),
    ];
    if plan.executable_heap {
        mappings.push(map(page(layout::SYSCALL_SLED_ADDR), PageAccess::USER_CODE));
    }
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
    let heap = if plan.executable_heap {
        PageAccess::USER_ALL
    } else {
        PageAccess::DATA
    };
    // The heap below the 2 MiB boundary, page by page; above it, large pages.
    let fine_heap_end = plan.heap.end.min(fine_end);
    if plan.heap.start < fine_heap_end {
        mappings.push(map(plan.heap.start..fine_heap_end, heap));
    }
    let mut large = Vec::new();
    if plan.executable_heap && fine_end < plan.heap.end {
        large.push(map(fine_end..plan.heap.end, heap));
    }
    if let Some(module) = &plan.module {
        if module.start < fine_end {
            mappings.push(map(
                module.start..module.end.min(fine_end),
                PageAccess::READ_ONLY,
            ));
        }
        let above =
            module.start.max(fine_end)..module.end.next_multiple_of(layout::LARGE_PAGE_SIZE);
        if above.start < above.end {
            large.push(map(above, PageAccess::READ_ONLY));
        }
    }
    Ok(paging::build(base, mem_size, fine_end, &mappings, &large)?)
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
