//! Where the program's system calls enter the personality, and how they get there
//! faster after the first time.
//!
//! # The entry
//!
//! `lx_syscall_entry_trapped` is what the monitor resumes the guest at when the
//! program executes `syscall` (`Hypercall::SyscallEntry`): every register as the
//! instruction left it but `rcx`, whose value — the return address — the monitor
//! left in [`LX_TRAP_RETURN`]; `rax` the number, the program's stack untouched.
//! It puts the return address back in `rcx` and goes on as `lx_syscall_entry`,
//! where rewritten sites arrive with `rcx` already set. Like a kernel's entry it switches to a stack of its own (the
//! current thread's kernel stack), saves the program's registers in a [`Frame`]
//! there and its whole vector state below it (`xsaveopt64` of every component a
//! program may use — x87, SSE, AVX, AVX-512; see [`XSAVE_COMPONENTS`]: the Rust
//! code here clobbers XMM registers, and another thread may run AVX code before this one returns,
//! while a `syscall` preserves all of them), and calls
//! [`dispatch`](crate::sys::dispatch). On the way back it restores everything,
//! puts the flags in `r11` and the return address in `rcx` (a `syscall`'s
//! clobbers, as `sysret` leaves them), switches back to the program's stack and
//! jumps — never touching that stack, so a red zone below its pointer survives.
//!
//! # Rewriting
//!
//! Arriving through a trap costs a trip through guest kernel mode (kvm) or a
//! signal (process). So the first time a site traps — which proves a `syscall` is
//! really there: it executed — it is rewritten. Code is never scanned: only sites
//! that trapped are touched.
//!
//! * A site of the common form `mov $NR, %eax; syscall` (7 bytes), with `rax`
//!   holding that very `NR`, becomes `jmp *SLOT` (also 7 bytes), where `SLOT`
//!   holds the address of a 16-byte trampoline of its own: `mov $NR, %eax; mov
//!   $RETURN, %ecx; jmp lx_syscall_entry` (gVisor's systrap rewrites the same
//!   pattern the same way).
//! * Any other site (`xor %eax, %eax; syscall` in glibc's `read`, musl's
//!   register-number sites, glibc's generic `syscall()`) becomes `call *%rax`
//!   (zpoline's idea) where the VM has a syscall sled: the page at address 0,
//!   `nop`s the monitor wrote up to a `pop %rcx; jmp lx_syscall_entry`, so the
//!   call lands at the call's number and slides to the entry with its return
//!   address. The `call` writes that address at -8(%rsp), inside the program's
//!   red zone, as zpoline's does. Numbers up to 4,079 reach the entry (see
//!   `layout::SYSCALL_SLED_REACH` for the 15 that do not); larger ones (the x32
//!   ABI's) have no meaning at such a site. Without a sled those sites keep
//!   trapping; they still work.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

/// The program's registers at its `syscall`, as the entry saves them on the
/// kernel stack (lowest address first). The handler's result goes in `rax`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct Frame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    pub rflags: u64,
    /// Where the program continues: the address after its `syscall`.
    pub rip: u64,
    /// The program's stack pointer.
    pub rsp: u64,
}

impl Frame {
    /// The call's number.
    pub fn number(&self) -> u64 {
        self.rax
    }

    /// The call's six arguments, in the kernel's order.
    pub fn args(&self) -> [u64; 6] {
        [self.rdi, self.rsi, self.rdx, self.r10, self.r8, self.r9]
    }
}

/// Top of the kernel stack of the thread that runs now (the scheduler switches it).
#[no_mangle]
pub static LX_KERNEL_STACK: AtomicU64 = AtomicU64::new(0);

/// Where the monitor leaves a trapped call's return address (see the module docs).
#[no_mangle]
pub static LX_TRAP_RETURN: AtomicU64 = AtomicU64::new(0);

/// The program's `rsp` between the entry's first instruction and its first push.
#[no_mangle]
static LX_SCRATCH_RSP: AtomicU64 = AtomicU64::new(0);

core::arch::global_asm!(
    ".globl lx_syscall_entry_trapped",
    ".type lx_syscall_entry_trapped,@function",
    ".p2align 4",
    "lx_syscall_entry_trapped:",
    "mov rcx, [rip + LX_TRAP_RETURN]",
    "jmp lx_syscall_entry",
    ".size lx_syscall_entry_trapped, . - lx_syscall_entry_trapped",
    ".globl lx_syscall_entry",
    ".type lx_syscall_entry,@function",
    ".p2align 4",
    "lx_syscall_entry:",
    "mov [rip + LX_SCRATCH_RSP], rsp",
    "mov rsp, [rip + LX_KERNEL_STACK]",
    "push qword ptr [rip + LX_SCRATCH_RSP]",
    "push rcx",
    "pushfq",
    "push rax",
    "push rbx",
    "push rcx",
    "push rdx",
    "push rsi",
    "push rdi",
    "push rbp",
    "push r8",
    "push r9",
    "push r10",
    "push r11",
    "push r12",
    "push r13",
    "push r14",
    "push r15",
    "mov rbp, rsp",
    "sub rsp, {xsave_area}",
    "and rsp, -64",
    // XRSTOR wants the header's bytes 8..64 zero; XSAVE writes only its first 8.
    "xor eax, eax",
    "mov [rsp + 512], rax",
    "mov [rsp + 520], rax",
    "mov [rsp + 528], rax",
    "mov [rsp + 536], rax",
    "mov [rsp + 544], rax",
    "mov [rsp + 552], rax",
    "mov [rsp + 560], rax",
    "mov [rsp + 568], rax",
    "mov eax, {xsave_components}",
    "xor edx, edx",
    "xsaveopt64 [rsp]",
    "mov rdi, rbp",
    "cld",
    "call {dispatch}",
    // A thread made by clone starts here, its kernel stack laid out the same.
    ".globl lx_syscall_return",
    "lx_syscall_return:",
    "lea rcx, [rbp - {xsave_area}]",
    "and rcx, -64",
    "mov eax, {xsave_components}",
    "xor edx, edx",
    "xrstor64 [rcx]",
    "mov rsp, rbp",
    "pop r15",
    "pop r14",
    "pop r13",
    "pop r12",
    "pop r11",
    "pop r10",
    "pop r9",
    "pop r8",
    "pop rbp",
    "pop rdi",
    "pop rsi",
    "pop rdx",
    "pop rcx",
    "pop rbx",
    "pop rax",
    "mov r11, [rsp]",
    "popfq",
    "pop rcx",
    "pop rsp",
    "jmp rcx",
    ".size lx_syscall_entry, . - lx_syscall_entry",
    //
    // Starts the program: its stack, its entry, every register clear (rdx = 0:
    // no function for the program's atexit, as the kernel leaves it).
    ".globl lx_enter_program",
    ".type lx_enter_program,@function",
    "lx_enter_program:",
    "mov rsp, rsi",
    "mov rax, rdi",
    "xor ebx, ebx",
    "xor ecx, ecx",
    "xor edx, edx",
    "xor esi, esi",
    "xor edi, edi",
    "xor ebp, ebp",
    "xor r8d, r8d",
    "xor r9d, r9d",
    "xor r10d, r10d",
    "xor r11d, r11d",
    "xor r12d, r12d",
    "xor r13d, r13d",
    "xor r14d, r14d",
    "xor r15d, r15d",
    "jmp rax",
    ".size lx_enter_program, . - lx_enter_program",
    dispatch = sym crate::sys::lx_syscall_dispatch,
    xsave_area = const XSAVE_AREA,
    xsave_components = const XSAVE_COMPONENTS,
);

/// Bytes below each frame for the program's vector state (`xsaveopt64`): room
/// for every component in [`XSAVE_COMPONENTS`] (AVX-512's layout ends at 2,688
/// bytes), aligned to 64 within it.
pub const XSAVE_AREA: u64 = 4096;

/// The state components the entry saves and restores (the requested-feature
/// mask in `edx:eax`): x87, SSE, AVX and AVX-512's three — everything a program
/// may use without asking. Not "all that XCR0 enables": on a CPU with AMX the
/// host's XCR0 (which the process platform runs under, and which a nested
/// hypervisor may leave in force for a guest's user mode) adds 8 KiB of tile
/// data, more than [`XSAVE_AREA`], and the instruction faults on the bytes past
/// it even when the tiles are unused. Tiles and PKRU need a system call first
/// (`arch_prctl(ARCH_REQ_XCOMP_PERM)`, `pkey_alloc`) that the personality does
/// not offer, so no program's state lives there.
pub const XSAVE_COMPONENTS: u64 = 0b1110_0111;

extern "C" {
    fn lx_syscall_entry();
    fn lx_syscall_entry_trapped();
    /// Where a new thread's first switch lands (see [`crate::thread`]).
    pub fn lx_syscall_return();
    fn lx_enter_program(entry: u64, stack: u64) -> !;
}

/// The entry of rewritten sites (`rcx` the return address).
pub fn entry_address() -> u64 {
    lx_syscall_entry as *const () as usize as u64
}

/// The entry and the return-address slot, for `Hypercall::SyscallEntry`.
pub fn trapped_entry() -> (u64, u64) {
    (
        lx_syscall_entry_trapped as *const () as usize as u64,
        LX_TRAP_RETURN.as_ptr() as u64,
    )
}

/// Jumps to the program: never returns.
///
/// # Safety
///
/// `entry` is the program's loaded entry point and `stack` its initial stack
/// (argc, argv, envp, auxv), and [`LX_KERNEL_STACK`] is set for its first thread.
pub unsafe fn enter_program(entry: u64, stack: u64) -> ! {
    // SAFETY: the caller's guarantees; the assembly clears the registers and jumps.
    unsafe { lx_enter_program(entry, stack) }
}

/// A trampoline per rewritten site, and the pointer its site jumps through.
const TRAMPOLINE_BYTES: usize = 16;
/// Bytes of a rewritable site: `mov $imm32, %eax` (5) and `syscall` (2).
const SITE_BYTES: u64 = 7;

/// The trampoline area: code and slots, in executable memory below 4 GiB (sites
/// reach slots through a 32-bit absolute address; trampolines hold a 32-bit
/// return address).
pub struct Trampolines {
    area: UnsafeCell<*mut u8>,
    capacity: AtomicUsize,
    used: AtomicUsize,
    rewritten: AtomicUsize,
    /// Whether the VM has a syscall sled, for `call *%rax` sites.
    sled: AtomicBool,
}

// SAFETY: one vCPU, threads switched only inside system calls: the area is touched
// by one thread at a time.
unsafe impl Sync for Trampolines {}

/// The one set of trampolines.
pub static TRAMPOLINES: Trampolines = Trampolines {
    area: UnsafeCell::new(core::ptr::null_mut()),
    capacity: AtomicUsize::new(0),
    used: AtomicUsize::new(0),
    rewritten: AtomicUsize::new(0),
    sled: AtomicBool::new(false),
};

impl Trampolines {
    /// Gives the set its area: `bytes` of executable memory at `start` (< 4 GiB);
    /// `sled` says whether the VM has a syscall sled (`call *%rax` sites).
    ///
    /// # Safety
    ///
    /// The area is mapped, writable and executable, below 4 GiB, and used by
    /// nothing else; this is called once, before any system call.
    pub unsafe fn init(&'static self, start: u64, bytes: usize, sled: bool) {
        // SAFETY: called once before any use (the caller's guarantee).
        unsafe { *self.area.get() = start as *mut u8 };
        self.capacity
            .store(bytes / (TRAMPOLINE_BYTES + 8), Ordering::Relaxed);
        self.sled.store(sled, Ordering::Relaxed);
    }

    /// Sites rewritten so far.
    pub fn rewritten(&self) -> usize {
        self.rewritten.load(Ordering::Relaxed)
    }

    /// Rewrites the site that trapped (its `syscall` ends at `return_address`,
    /// within the program's memory `code`) so that its next calls stay in the
    /// guest: into a jump to a trampoline of its own if it has the form `mov $nr,
    /// %eax; syscall` with `nr` the call's number, otherwise, where the VM has a
    /// syscall sled, its `syscall` into `call *%rax` (zpoline's idea), which lands
    /// in the sled at the call's number.
    pub fn rewrite(&self, return_address: u64, number: u64, code: &core::ops::Range<u64>) {
        if !self.rewrite_jump(return_address, number, code) {
            self.rewrite_call(return_address, code);
        }
    }

    /// `syscall` (0f 05) into `call *%rax` (ff d0), if the VM has a sled.
    fn rewrite_call(&self, return_address: u64, code: &core::ops::Range<u64>) {
        if !self.sled.load(Ordering::Relaxed) {
            return;
        }
        let Some(site) = return_address.checked_sub(2) else {
            return;
        };
        if site < code.start || return_address > code.end {
            return;
        }
        // SAFETY: the two bytes lie in the program's memory (checked above), which
        // the personality maps read-write-execute; the CPU just executed them as a
        // `syscall`, and no thread is inside that instruction (threads switch only
        // inside system calls, after theirs).
        unsafe {
            let bytes = core::ptr::read_unaligned(site as *const [u8; 2]);
            if bytes != [0x0f, 0x05] {
                return;
            }
            core::ptr::write_unaligned(site as *mut [u8; 2], [0xff, 0xd0]);
        }
        self.rewritten.fetch_add(1, Ordering::Relaxed);
    }

    /// The 7-byte jump of a `mov $nr, %eax; syscall` site; whether it was one.
    fn rewrite_jump(&self, return_address: u64, number: u64, code: &core::ops::Range<u64>) -> bool {
        let Some(site) = return_address.checked_sub(SITE_BYTES) else {
            return false;
        };
        if site < code.start || return_address > code.end || return_address > u64::from(u32::MAX) {
            return false;
        }
        // SAFETY: the site lies in the program's memory (checked just above), which
        // is mapped readable; reading 7 bytes of it is what the CPU just did.
        let bytes: [u8; 7] = unsafe { core::ptr::read_unaligned(site as *const [u8; 7]) };
        let imm = u32::from_le_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
        if bytes[0] != 0xb8 || bytes[5..] != [0x0f, 0x05] || u64::from(imm) != number {
            return false;
        }
        let index = self.used.load(Ordering::Relaxed);
        // SAFETY: set once by `init`.
        let area = unsafe { *self.area.get() };
        let capacity = self.capacity.load(Ordering::Relaxed);
        if area.is_null() || index >= capacity {
            return false;
        }
        self.used.store(index + 1, Ordering::Relaxed);
        let slots = area as u64;
        let code_start = slots + (capacity * 8) as u64;
        let trampoline = code_start + (index * TRAMPOLINE_BYTES) as u64;
        let slot = slots + (index * 8) as u64;
        let entry = entry_address();
        let mut code_bytes = [0x90u8; TRAMPOLINE_BYTES];
        code_bytes[0] = 0xb8; // mov eax, imm32
        code_bytes[1..5].copy_from_slice(&imm.to_le_bytes());
        code_bytes[5] = 0xb9; // mov ecx, imm32
        code_bytes[6..10].copy_from_slice(&(return_address as u32).to_le_bytes());
        code_bytes[10] = 0xe9; // jmp rel32
        let rel = entry.wrapping_sub(trampoline + 15) as u32;
        code_bytes[11..15].copy_from_slice(&rel.to_le_bytes());
        let mut patch = [0u8; 7];
        patch[..3].copy_from_slice(&[0xff, 0x24, 0x25]); // jmp qword ptr [abs32]
        patch[3..].copy_from_slice(&(slot as u32).to_le_bytes());
        // SAFETY: the trampoline and slot lie in the area `init` was given; the
        // site is the program's own code, in memory the personality maps RWX, and
        // no thread is between its two instructions (threads switch only inside
        // system calls, after a site's `syscall`).
        unsafe {
            core::ptr::write_unaligned(trampoline as *mut [u8; TRAMPOLINE_BYTES], code_bytes);
            core::ptr::write_unaligned(slot as *mut u64, trampoline);
            core::ptr::write_unaligned(site as *mut [u8; 7], patch);
        }
        self.rewritten.fetch_add(1, Ordering::Relaxed);
        true
    }
}
