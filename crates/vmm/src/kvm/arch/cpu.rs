//! vCPU state at the first instruction of a CPL-3 unikernel.

use kvm_bindings::{kvm_fpu, kvm_regs, Msrs};
use kvm_ioctls::VcpuFd;

use super::gdt;
use super::regs::{
    CR0_ET, CR0_MP, CR0_NE, CR0_PE, CR0_PG, CR0_WP, CR4_FSGSBASE, CR4_OSFXSR, CR4_OSXMMEXCPT,
    CR4_OSXSAVE, CR4_PAE, EFER_LMA, EFER_LME, EFER_NXE, EFER_SCE, FPU_CONTROL_WORD, MSR_LSTAR,
    MSR_STAR, MSR_SYSCALL_MASK, MXCSR_DEFAULT, RFLAGS_RESERVED,
};
use crate::kvm::{kvm_op, KvmError};

/// Where `syscall` lands: the monitor's CPL 0 stub, `out imm8, eax` to
/// [`lightvm_abi::KVM_SYSCALL_PORT`], which hands the call to the monitor with every
/// register as the guest left it (`rcx` = the return address, `r11` = the flags,
/// `eax` = the number). It never reaches the `ud2` after it: the monitor either
/// delivers the call to the guest's own entry (a Linux personality) or reports it
/// as a crash. A stub in the monitor's gate page, rather than an unmapped address:
/// a triple fault at CPL 0 can be resumed on our nested KVM but resets the vCPU on
/// a stock one.
pub const SYSCALL_STUB: u64 = lightvm_abi::layout::KVM_SYSCALL_STUB_ADDR;

/// The stub's bytes: `out KVM_SYSCALL_PORT, eax; ud2`.
pub const SYSCALL_STUB_CODE: [u8; 4] = [0xe7, lightvm_abi::KVM_SYSCALL_PORT as u8, 0x0f, 0x0b];

/// The stub once a guest registered where its `syscall`s go: it leaves the
/// return address (`rcx`) in `return_slot` and returns to CPL 3 at `entry` with
/// `iretq`, every other register as the `syscall` left it (`r11` the flags, which
/// `iretq` restores too). The call never leaves the VM. The frame goes below the
/// program's red zone (the 128 bytes under its stack pointer a leaf function may
/// use), as a signal frame does, and `iretq` puts the stack pointer back.
/// (`sysretq` would be shorter, but a KVM that emulates guest kernel mode — PVM —
/// raises #GP on it.) `return_slot` lies below 2 GiB (a sign-extended 32-bit
/// address); the monitor checked it is the guest's own memory, and the page
/// tables that make it so cannot change.
pub fn delivering_syscall_stub(entry: u64, return_slot: u32) -> Vec<u8> {
    let code_selector = u8::try_from(lightvm_abi::layout::USER_CODE_SELECTOR).unwrap_or(0);
    let data_selector = u8::try_from(lightvm_abi::layout::USER_DATA_SELECTOR).unwrap_or(0);
    let mut code = Vec::with_capacity(48);
    code.extend_from_slice(&[0x48, 0x89, 0x0c, 0x25]); // mov [return_slot], rcx
    code.extend_from_slice(&return_slot.to_le_bytes());
    code.extend_from_slice(&[0x48, 0x89, 0xe1]); // mov rcx, rsp
    code.extend_from_slice(&[0x48, 0x81, 0xec, 0x80, 0, 0, 0]); // sub rsp, 128
    code.extend_from_slice(&[0x48, 0x83, 0xe4, 0xf0]); // and rsp, -16
    code.extend_from_slice(&[0x6a, data_selector]); // push ss
    code.push(0x51); // push rcx (the stack pointer)
    code.extend_from_slice(&[0x41, 0x53]); // push r11 (the flags)
    code.extend_from_slice(&[0x6a, code_selector]); // push cs
    code.extend_from_slice(&[0x48, 0xb9]); // movabs rcx, entry
    code.extend_from_slice(&entry.to_le_bytes());
    code.push(0x51); // push rcx
    code.extend_from_slice(&[0x48, 0xcf]); // iretq
    code
}

/// STAR: `syscall` loads CS 0x08 and SS 0x10 (the GDT's kernel segments).
const STAR: u64 = 0x0008 << 32;

/// Where the guest starts.
#[derive(Debug, Clone, Copy)]
pub struct EntryState {
    /// First instruction (the ELF entry).
    pub entry: u64,
    /// One past the top of the stack.
    pub stack_top: u64,
    /// Passed in `rdi`.
    pub boot_info: u64,
    /// CR3.
    pub page_table_root: u64,
    /// Where the GDT was written.
    pub gdt_addr: u64,
    /// Whether the guest runs a Linux program: user mode may set FS/GS bases and
    /// the vector state of XCR0 is on.
    pub linux: bool,
}

/// Sets the state that never changes between boots of a shell: FPU control words and
/// the `syscall` trap. Done once, when the vCPU is created.
pub fn set_static_state(vcpu: &VcpuFd) -> Result<(), KvmError> {
    let fpu = kvm_fpu {
        fcw: FPU_CONTROL_WORD,
        mxcsr: MXCSR_DEFAULT,
        ..Default::default()
    };
    vcpu.set_fpu(&fpu).map_err(kvm_op("KVM_SET_FPU"))?;
    let msr = |index, data| kvm_bindings::kvm_msr_entry {
        index,
        data,
        ..Default::default()
    };
    let msrs = Msrs::from_entries(&[
        msr(MSR_LSTAR, SYSCALL_STUB),
        msr(MSR_STAR, STAR),
        // Flags pass through unchanged: the monitor hands them back in r11.
        msr(MSR_SYSCALL_MASK, 0),
    ])
    .map_err(|_| KvmError::Internal("MSR list does not fit"))?;
    vcpu.set_msrs(&msrs).map_err(kvm_op("KVM_SET_MSRS"))?;
    Ok(())
}

/// XCR0 bits lightvm turns on for Linux programs, where the CPU has them: x87,
/// SSE, AVX and the AVX-512 states (glibc picks its string functions by them).
const XCR0_WANTED: u64 = 0b1110_0111;
/// CPUID leaf of the XSAVE features (subleaf 0: the XCR0 bits the CPU supports).
const LEAF_XSAVE: u32 = 0xd;

/// Gives a vCPU that will run Linux programs the CPUID of the host KVM supports
/// (so CR4.FSGSBASE and CR4.OSXSAVE may be set, and programs see the features
/// they will get). Must happen before the vCPU first runs. Costs ~80 µs: only VMs
/// for Linux programs pay it.
pub fn set_linux_cpuid(vcpu: &VcpuFd) -> Result<(), KvmError> {
    let kvm = crate::kvm::open()?;
    let cpuid = kvm
        .get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
        .map_err(kvm_op("KVM_GET_SUPPORTED_CPUID"))?;
    vcpu.set_cpuid2(&cpuid).map_err(kvm_op("KVM_SET_CPUID2"))
}

fn set_xcr0(vcpu: &VcpuFd) -> Result<(), KvmError> {
    let supported = vcpu
        .get_cpuid2(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
        .map_err(kvm_op("KVM_GET_CPUID2"))?
        .as_slice()
        .iter()
        .find(|entry| entry.function == LEAF_XSAVE && entry.index == 0)
        .map_or(0b11, |entry| {
            u64::from(entry.eax) | (u64::from(entry.edx) << 32)
        });
    let mut xcrs = vcpu.get_xcrs().map_err(kvm_op("KVM_GET_XCRS"))?;
    xcrs.nr_xcrs = 1;
    xcrs.xcrs[0].xcr = 0;
    xcrs.xcrs[0].value = supported & XCR0_WANTED | 0b11;
    vcpu.set_xcrs(&xcrs).map_err(kvm_op("KVM_SET_XCRS"))
}

/// Puts the vCPU in 64-bit user mode at `state.entry`, with `state`'s page tables.
pub fn set_entry_state(vcpu: &VcpuFd, state: &EntryState) -> Result<(), KvmError> {
    let segments = gdt::segments(state.gdt_addr);
    let mut sregs = vcpu.get_sregs().map_err(kvm_op("KVM_GET_SREGS"))?;
    sregs.cs = segments.code;
    sregs.ds = segments.data;
    sregs.es = segments.data;
    sregs.fs = segments.data;
    sregs.gs = segments.data;
    sregs.ss = segments.data;
    sregs.tr = segments.task;
    sregs.ldt.unusable = 1;
    sregs.gdt.base = state.gdt_addr;
    sregs.gdt.limit = segments.gdt_limit;
    // No IDT: any exception escalates to a triple fault, which KVM reports as a
    // shutdown with the faulting state kept — our crash report.
    sregs.idt.base = 0;
    sregs.idt.limit = 0;
    sregs.cr0 = CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_PG;
    sregs.cr3 = state.page_table_root;
    sregs.cr4 = CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT;
    if state.linux {
        sregs.cr4 |= CR4_FSGSBASE | CR4_OSXSAVE;
    }
    sregs.efer = EFER_LME | EFER_LMA | EFER_NXE | EFER_SCE;
    vcpu.set_sregs(&sregs).map_err(kvm_op("KVM_SET_SREGS"))?;
    if state.linux {
        set_xcr0(vcpu)?;
    }

    let regs = kvm_regs {
        rip: state.entry,
        // As if `_start` had just been called: the SysV ABI's alignment at entry.
        rsp: state.stack_top - 8,
        rdi: state.boot_info,
        // IOPL 0: port access is granted per port by the TSS bitmap (see `gdt`).
        rflags: RFLAGS_RESERVED,
        ..Default::default()
    };
    vcpu.set_regs(&regs).map_err(kvm_op("KVM_SET_REGS"))
}
