//! The vCPUs of a Linux guest: CPUID, MSRs, FPU, LAPIC, and the register state
//! at the kernel's entry point (64-bit boot protocol or PVH).

use kvm_bindings::{kvm_fpu, kvm_regs, CpuId, Msrs};
use kvm_ioctls::VcpuFd;

use super::layout;
use crate::kvm::arch::paging::{self, PageTables, PagingError};
use crate::kvm::arch::regs::{
    CR0_ET, CR0_PE, CR0_PG, CR4_PAE, EFER_LMA, EFER_LME, FPU_CONTROL_WORD, MISC_ENABLE_FAST_STRING,
    MSR_CSTAR, MSR_IA32_MISC_ENABLE, MSR_IA32_SYSENTER_CS, MSR_IA32_SYSENTER_EIP,
    MSR_IA32_SYSENTER_ESP, MSR_IA32_TSC, MSR_KERNEL_GS_BASE, MSR_LSTAR, MSR_STAR, MSR_SYSCALL_MASK,
    MXCSR_DEFAULT, RFLAGS_RESERVED,
};
use crate::kvm::arch::segment::{Descriptor, TYPE_TSS_BUSY};
use crate::kvm::{kvm_op, KvmError};

/// Which CPUID register a feature bit is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reg {
    Ebx,
    Ecx,
    Edx,
}

macro_rules! features {
    ($($variant:ident $name:literal ($leaf:literal, $sub:literal, $reg:ident, $bit:literal) $doc:literal;)*) => {
        /// A CPUID feature that `--cpu-clear` can hide from the guest.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum CpuFeature {
            $(#[doc = $doc] $variant,)*
        }

        impl CpuFeature {
            /// Every feature, in the order of [`CpuFeature::name`]'s table.
            pub const ALL: &'static [CpuFeature] = &[$(CpuFeature::$variant,)*];

            /// The name users write (Linux's /proc/cpuinfo spelling).
            pub fn name(self) -> &'static str {
                match self { $(CpuFeature::$variant => $name,)* }
            }

            fn location(self) -> (u32, u32, Reg, u32) {
                match self { $(CpuFeature::$variant => ($leaf, $sub, Reg::$reg, $bit),)* }
            }
        }
    };
}

features! {
    Pcid "pcid" (1, 0, Ecx, 17) "Process-context identifiers.";
    X2apic "x2apic" (1, 0, Ecx, 21) "x2APIC mode.";
    Cx16 "cx16" (1, 0, Ecx, 13) "CMPXCHG16B.";
    Movbe "movbe" (1, 0, Ecx, 22) "MOVBE.";
    Popcnt "popcnt" (1, 0, Ecx, 23) "POPCNT.";
    TscDeadline "tsc_deadline_timer" (1, 0, Ecx, 24) "The LAPIC TSC-deadline timer.";
    Aes "aes" (1, 0, Ecx, 25) "AES-NI.";
    Xsave "xsave" (1, 0, Ecx, 26) "XSAVE/XRSTOR (and with it AVX and everything it saves).";
    Avx "avx" (1, 0, Ecx, 28) "AVX.";
    Rdrand "rdrand" (1, 0, Ecx, 30) "RDRAND.";
    Fsgsbase "fsgsbase" (7, 0, Ebx, 0) "RD/WR{FS,GS}BASE.";
    Bmi1 "bmi1" (7, 0, Ebx, 3) "BMI1.";
    Avx2 "avx2" (7, 0, Ebx, 5) "AVX2.";
    Smep "smep" (7, 0, Ebx, 7) "Supervisor-mode execution prevention.";
    Bmi2 "bmi2" (7, 0, Ebx, 8) "BMI2.";
    Erms "erms" (7, 0, Ebx, 9) "Enhanced REP MOVSB/STOSB.";
    Invpcid "invpcid" (7, 0, Ebx, 10) "INVPCID.";
    Avx512f "avx512f" (7, 0, Ebx, 16) "AVX-512 foundation.";
    Rdseed "rdseed" (7, 0, Ebx, 18) "RDSEED.";
    Adx "adx" (7, 0, Ebx, 19) "ADX.";
    Smap "smap" (7, 0, Ebx, 20) "Supervisor-mode access prevention (STAC/CLAC).";
    Umip "umip" (7, 0, Ecx, 2) "User-mode instruction prevention.";
    Pku "pku" (7, 0, Ecx, 3) "Protection keys.";
    La57 "la57" (7, 0, Ecx, 16) "5-level paging.";
    Rdpid "rdpid" (7, 0, Ecx, 22) "RDPID.";
    Pdpe1gb "pdpe1gb" (0x8000_0001, 0, Edx, 26) "1 GiB pages.";
    Rdtscp "rdtscp" (0x8000_0001, 0, Edx, 27) "RDTSCP.";
}

/// Why a `--cpu-clear` list was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown CPU feature {name:?} in --cpu-clear; known: {known}")]
pub struct UnknownCpuFeature {
    /// What was written.
    pub name: String,
    /// The names lightvm knows.
    pub known: String,
}

impl CpuFeature {
    /// Parses a comma-separated list such as `xsave,popcnt`.
    pub fn parse_list(text: &str) -> Result<Vec<CpuFeature>, UnknownCpuFeature> {
        text.split(',')
            .map(str::trim)
            .filter(|name| !name.is_empty())
            .map(|name| {
                let wanted = name.to_ascii_lowercase().replace('-', "_");
                CpuFeature::ALL
                    .iter()
                    .copied()
                    .find(|f| f.name() == wanted)
                    .ok_or_else(|| UnknownCpuFeature {
                        name: name.to_owned(),
                        known: CpuFeature::ALL
                            .iter()
                            .map(|f| f.name())
                            .collect::<Vec<_>>()
                            .join(","),
                    })
            })
            .collect()
    }
}

const LEAF_FEATURES: u32 = 1;
const LEAF_XSAVE: u32 = 0xd;
const LEAF_EXT_TOPOLOGY: u32 = 0xb;
const ECX_HYPERVISOR: u32 = 1 << 31;
const ECX_OSXSAVE: u32 = 1 << 27;
const EDX_HTT: u32 = 1 << 28;

/// Adapts KVM's supported CPUID to vCPU `index` of `count`: its APIC id, the
/// hypervisor bit, and the cleared features. Clearing `xsave` also clears
/// OSXSAVE and empties leaf 0xD, so the kernel uses FXSAVE only.
pub fn patch_cpuid(
    entries: &mut [kvm_bindings::kvm_cpuid_entry2],
    index: u8,
    count: u8,
    clear: &[CpuFeature],
) {
    for entry in entries.iter_mut() {
        match entry.function {
            LEAF_FEATURES => {
                entry.ebx =
                    (entry.ebx & 0x0000_ffff) | (u32::from(index) << 24) | (u32::from(count) << 16);
                entry.ecx |= ECX_HYPERVISOR;
                if count > 1 {
                    entry.edx |= EDX_HTT;
                }
            }
            LEAF_EXT_TOPOLOGY => entry.edx = u32::from(index),
            _ => {}
        }
        for feature in clear {
            let (leaf, sub, reg, bit) = feature.location();
            if entry.function == leaf && entry.index == sub {
                let mask = !(1u32 << bit);
                match reg {
                    Reg::Ebx => entry.ebx &= mask,
                    Reg::Ecx => entry.ecx &= mask,
                    Reg::Edx => entry.edx &= mask,
                }
            }
            if *feature == CpuFeature::Xsave {
                if entry.function == LEAF_FEATURES {
                    entry.ecx &= !ECX_OSXSAVE;
                    entry.ecx &= !(1 << 28); // AVX needs XSAVE
                }
                if entry.function == LEAF_XSAVE {
                    entry.eax = 0;
                    entry.ebx = 0;
                    entry.ecx = 0;
                    entry.edx = 0;
                }
            }
        }
    }
}

/// How the kernel is entered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootEntry {
    /// The 64-bit Linux boot protocol: long mode, paging on, `rsi` = zero page.
    Linux64 {
        /// The 64-bit entry point.
        entry: u64,
    },
    /// PVH: 32-bit protected mode, paging off, `ebx` = start info.
    Pvh {
        /// The PVH entry point (from the ELF note).
        entry: u64,
    },
}

/// GDT selectors, as the boot protocol names them.
const BOOT_CS: u16 = 0x10;
const BOOT_DS: u16 = 0x18;
const BOOT_TSS: u16 = 0x20;

/// The boot GDT's code, data and TSS descriptors. Flat segments; the kernel loads
/// its own GDT at once.
fn boot_segments(entry: BootEntry) -> [Descriptor; 3] {
    let code = match entry {
        BootEntry::Linux64 { .. } => Descriptor::flat_code(0, true),
        BootEntry::Pvh { .. } => Descriptor::flat_code(0, false),
    };
    let tss = Descriptor {
        type_: TYPE_TSS_BUSY,
        code_or_data: false,
        big: false,
        ..Descriptor::flat_data(0)
    };
    [code, Descriptor::flat_data(0), tss]
}

/// The boot GDT: null, null, code (64-bit for the Linux protocol, 32-bit for
/// PVH), data, TSS, at the selectors the boot protocol names.
pub fn gdt(entry: BootEntry) -> [u64; 5] {
    let [code, data, tss] = boot_segments(entry);
    [0, 0, code.encode(), data.encode(), tss.encode()]
}

/// The identity map of the first 1 GiB the 64-bit boot protocol needs (2 MiB
/// pages): PML4, PDPT and PD at [`layout::PML4_ADDR`] and the pages after it.
pub fn identity_page_tables() -> Result<PageTables, PagingError> {
    paging::kernel_identity(
        layout::PML4_ADDR..layout::PAGE_TABLES_END,
        layout::IDENTITY_MAPPED,
    )
}

/// CPUID, MSRs, FPU and LAPIC of one vCPU; every vCPU gets these.
pub fn configure(
    vcpu: &VcpuFd,
    supported: &CpuId,
    index: u8,
    count: u8,
    clear: &[CpuFeature],
) -> Result<(), KvmError> {
    let mut cpuid = supported.clone();
    patch_cpuid(cpuid.as_mut_slice(), index, count, clear);
    vcpu.set_cpuid2(&cpuid).map_err(kvm_op("KVM_SET_CPUID2"))?;

    let entries: Vec<kvm_bindings::kvm_msr_entry> = [
        (MSR_IA32_SYSENTER_CS, 0),
        (MSR_IA32_SYSENTER_ESP, 0),
        (MSR_IA32_SYSENTER_EIP, 0),
        (MSR_STAR, 0),
        (MSR_CSTAR, 0),
        (MSR_KERNEL_GS_BASE, 0),
        (MSR_SYSCALL_MASK, 0),
        (MSR_LSTAR, 0),
        (MSR_IA32_TSC, 0),
        (MSR_IA32_MISC_ENABLE, MISC_ENABLE_FAST_STRING),
    ]
    .into_iter()
    .map(|(index, data)| kvm_bindings::kvm_msr_entry {
        index,
        data,
        ..Default::default()
    })
    .collect();
    let msrs = Msrs::from_entries(&entries).map_err(|_| KvmError::Internal("MSR list"))?;
    let written = vcpu.set_msrs(&msrs).map_err(kvm_op("KVM_SET_MSRS"))?;
    if written != entries.len() {
        return Err(KvmError::Internal("KVM refused a boot MSR"));
    }

    let fpu = kvm_fpu {
        fcw: FPU_CONTROL_WORD,
        mxcsr: MXCSR_DEFAULT,
        ..Default::default()
    };
    vcpu.set_fpu(&fpu).map_err(kvm_op("KVM_SET_FPU"))?;
    set_lint(vcpu)
}

/// LINT0 = ExtINT (the PIC), LINT1 = NMI, as a PC's BIOS leaves them.
fn set_lint(vcpu: &VcpuFd) -> Result<(), KvmError> {
    const APIC_LVT0: usize = 0x350;
    const APIC_LVT1: usize = 0x360;
    const MODE_EXTINT: u32 = 0x7;
    const MODE_NMI: u32 = 0x4;
    let mut lapic = vcpu.get_lapic().map_err(kvm_op("KVM_GET_LAPIC"))?;
    let mut set = |offset: usize, mode: u32| {
        let bytes: [u8; 4] = std::array::from_fn(|i| lapic.regs[offset + i] as u8);
        let value = (u32::from_le_bytes(bytes) & !0x700) | (mode << 8);
        for (i, b) in value.to_le_bytes().into_iter().enumerate() {
            lapic.regs[offset + i] = b as _;
        }
    };
    set(APIC_LVT0, MODE_EXTINT);
    set(APIC_LVT1, MODE_NMI);
    vcpu.set_lapic(&lapic).map_err(kvm_op("KVM_SET_LAPIC"))
}

/// Registers of the boot vCPU at the kernel's entry point.
pub fn set_boot_registers(vcpu: &VcpuFd, entry: BootEntry) -> Result<(), KvmError> {
    let table = gdt(entry);
    let mut sregs = vcpu.get_sregs().map_err(kvm_op("KVM_GET_SREGS"))?;
    let [code, data, tss] = boot_segments(entry);
    let (code, data, tss) = (
        code.to_kvm(BOOT_CS),
        data.to_kvm(BOOT_DS),
        tss.to_kvm(BOOT_TSS),
    );
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = tss;
    sregs.gdt.base = layout::GDT_ADDR;
    sregs.gdt.limit = (std::mem::size_of_val(&table) - 1) as u16;
    sregs.idt.base = 0;
    sregs.idt.limit = 0;
    let mut regs = kvm_regs {
        rflags: RFLAGS_RESERVED,
        ..Default::default()
    };
    match entry {
        BootEntry::Linux64 { entry } => {
            sregs.cr0 = CR0_PE | CR0_ET | CR0_PG;
            sregs.cr3 = layout::PML4_ADDR;
            sregs.cr4 = CR4_PAE;
            sregs.efer = EFER_LME | EFER_LMA;
            regs.rip = entry;
            regs.rsp = layout::BOOT_STACK_POINTER;
            regs.rbp = layout::BOOT_STACK_POINTER;
            regs.rsi = layout::ZERO_PAGE_ADDR;
        }
        BootEntry::Pvh { entry } => {
            sregs.cr0 = CR0_PE | CR0_ET;
            sregs.cr4 = 0;
            sregs.efer = 0;
            regs.rip = entry;
            regs.rbx = layout::PVH_INFO_ADDR;
        }
    }
    vcpu.set_sregs(&sregs).map_err(kvm_op("KVM_SET_SREGS"))?;
    vcpu.set_regs(&regs).map_err(kvm_op("KVM_SET_REGS"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kvm::arch::segment::decode;
    use kvm_bindings::kvm_cpuid_entry2;

    fn leaf(function: u32, index: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            eax: u32::MAX,
            ebx: u32::MAX,
            ecx: u32::MAX,
            edx: u32::MAX,
            ..Default::default()
        }
    }

    #[test]
    fn feature_lists_parse_and_unknown_names_are_listed() {
        assert_eq!(
            CpuFeature::parse_list("xsave, POPCNT,cx16,").unwrap(),
            vec![CpuFeature::Xsave, CpuFeature::Popcnt, CpuFeature::Cx16]
        );
        assert_eq!(
            CpuFeature::parse_list("tsc-deadline-timer").unwrap(),
            vec![CpuFeature::TscDeadline]
        );
        let error = CpuFeature::parse_list("xsave,warp").unwrap_err();
        assert_eq!(error.name, "warp");
        assert!(error.known.contains("smap"));
    }

    #[test]
    fn cleared_features_disappear_and_topology_is_per_vcpu() {
        let mut entries = vec![
            leaf(1, 0),
            leaf(7, 0),
            leaf(0xb, 0),
            leaf(0xd, 0),
            leaf(0x8000_0001, 0),
        ];
        patch_cpuid(
            &mut entries,
            2,
            4,
            &[CpuFeature::Xsave, CpuFeature::Smap, CpuFeature::Rdtscp],
        );
        assert_eq!(entries[0].ecx & (1 << 26), 0, "xsave");
        assert_eq!(entries[0].ecx & (1 << 27), 0, "osxsave");
        assert_eq!(entries[0].ecx & (1 << 28), 0, "avx follows xsave");
        assert_ne!(entries[0].ecx & (1 << 31), 0, "hypervisor");
        assert_eq!(entries[0].ebx >> 24, 2, "apic id");
        assert_eq!((entries[0].ebx >> 16) & 0xff, 4, "logical processors");
        assert_eq!(entries[1].ebx & (1 << 20), 0, "smap");
        assert_ne!(entries[1].ebx & (1 << 7), 0, "smep kept");
        assert_eq!(entries[2].edx, 2, "x2apic id");
        assert_eq!((entries[3].eax, entries[3].ebx), (0, 0), "leaf 0xd emptied");
        assert_eq!(entries[4].edx & (1 << 27), 0, "rdtscp");
    }

    #[test]
    fn boot_segments_are_flat_and_of_the_right_mode() {
        let long = gdt(BootEntry::Linux64 { entry: 0 });
        let cs = decode(long[2], BOOT_CS);
        assert_eq!((cs.l, cs.db, cs.present, cs.s, cs.type_), (1, 0, 1, 1, 0xb));
        assert_eq!((cs.base, cs.limit, cs.g), (0, 0xffff_ffff, 1));
        let ds = decode(long[3], BOOT_DS);
        assert_eq!((ds.type_, ds.db, ds.limit), (0x3, 1, 0xffff_ffff));
        let pvh = gdt(BootEntry::Pvh { entry: 0 });
        let cs = decode(pvh[2], BOOT_CS);
        assert_eq!((cs.l, cs.db), (0, 1));
        let tr = decode(pvh[4], BOOT_TSS);
        assert_eq!((tr.type_, tr.s), (0xb, 0));
    }

    #[test]
    fn the_identity_map_covers_the_first_gigabyte() {
        let tables = identity_page_tables().unwrap().pages;
        let pd = &tables[2].1;
        assert_eq!(pd[0] & !0xfff, 0);
        assert_eq!(pd[511] & !0xfff, 511 << 21);
        assert!(pd.iter().all(|e| e & 0x83 == 0x83));
        assert_eq!(tables[0].1[0] & !0xfff, layout::PDPT_ADDR);
    }
}
