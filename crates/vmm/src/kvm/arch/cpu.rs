//! vCPU state at the first instruction of a CPL-3 unikernel.

use kvm_bindings::{kvm_fpu, kvm_regs, Msrs};
use kvm_ioctls::VcpuFd;

use super::gdt;
use super::regs::{
    CR0_ET, CR0_MP, CR0_NE, CR0_PE, CR0_PG, CR0_WP, CR4_OSFXSR, CR4_OSXMMEXCPT, CR4_PAE, EFER_LMA,
    EFER_LME, EFER_NXE, FPU_CONTROL_WORD, MSR_LSTAR, MXCSR_DEFAULT, RFLAGS_RESERVED,
};
use crate::kvm::{kvm_op, KvmError};

/// Where `syscall` lands: a canonical, never-mapped address. On our hosts `syscall`
/// from CPL 3 enters CPL 0 at LSTAR even with EFER.SCE clear; LSTAR = 0 would make
/// the emulator run page 0. Here it faults at once, the VM shuts down with the
/// guest's registers intact, and the crash report can say "the guest made a system
/// call" (`rip` = this address, `rcx` = the return address).
pub const SYSCALL_TRAP: u64 = 0xffff_ff80_0000_0000;

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
    let msrs = Msrs::from_entries(&[kvm_bindings::kvm_msr_entry {
        index: MSR_LSTAR,
        data: SYSCALL_TRAP,
        ..Default::default()
    }])
    .map_err(|_| KvmError::Internal("MSR list does not fit"))?;
    vcpu.set_msrs(&msrs).map_err(kvm_op("KVM_SET_MSRS"))?;
    Ok(())
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
    sregs.efer = EFER_LME | EFER_LMA | EFER_NXE;
    vcpu.set_sregs(&sregs).map_err(kvm_op("KVM_SET_SREGS"))?;

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
