//! Faults on purpose, in the way the command line names, to test that the monitor
//! turns each CPU exception into a crash report (exit 126) on every platform, and
//! that a `syscall` never reaches the host:
//!
//! * `mode=null` (the default): writes to address 0, which is never mapped;
//! * `mode=ud2`, `mode=int3`, `mode=hlt`: an invalid opcode, a breakpoint, a
//!   privileged instruction;
//! * `mode=stack`: recurses until the stack runs into its guard page;
//! * `mode=jump`: jumps into a page of data, which is never executable;
//! * `mode=divide`: divides by zero;
//! * `mode=syscall`: a bare `syscall` (getpid);
//! * `mode=execve`, `mode=open`, `mode=socket`: a `syscall` that would run a shell,
//!   open /etc/passwd or make a socket, with real arguments.
//!
//! Reaching the end of `main` means the fault did not stop the guest: exit 1.
#![no_std]
#![no_main]

use core::hint::black_box;

libos::entry!(main);

/// Data the `jump` mode jumps into: a `ret`, which must never run.
static DATA: [u8; 16] = [0xc3; 16];

fn main() -> i32 {
    let mode = libos::cmdline_arg("mode").unwrap_or("null");
    libos::println!("about to fault: {mode}");
    match mode {
        // Inline assembly rather than `write_volatile` on a null pointer: the latter
        // is undefined behaviour, and debug builds catch it as a panic first.
        // SAFETY (every arm): deliberately not safe: the guest ends right here.
        "null" => unsafe { core::arch::asm!("mov byte ptr [0], 1", options(nostack)) },
        "ud2" => unsafe { core::arch::asm!("ud2", options(nostack)) },
        "int3" => unsafe { core::arch::asm!("int3", options(nostack)) },
        "hlt" => unsafe { core::arch::asm!("hlt", options(nostack)) },
        "divide" => {
            let zero = black_box(0u64);
            unsafe {
                core::arch::asm!("xor edx, edx", "div {0}", in(reg) zero, inout("rax") 1u64 => _, out("rdx") _)
            }
        }
        "stack" => {
            libos::println!("depth {}", recurse(black_box(0)));
        }
        "jump" => {
            let target: extern "C" fn() = unsafe { core::mem::transmute(black_box(DATA.as_ptr())) };
            target();
        }
        "syscall" => {
            let pid = unsafe { syscall(39, [0; 3]) };
            libos::println!("getpid returned {pid}");
        }
        "execve" => {
            let path = b"/bin/sh\0";
            let argv = [path.as_ptr() as u64, 0];
            let result = unsafe { syscall(59, [path.as_ptr() as u64, argv.as_ptr() as u64, 0]) };
            libos::println!("execve returned {result}");
        }
        "open" => {
            let path = b"/etc/passwd\0";
            // openat(AT_FDCWD, "/etc/passwd", O_RDONLY)
            let fd = unsafe { syscall(257, [-100i64 as u64, path.as_ptr() as u64, 0]) };
            libos::println!("open returned {fd}");
            if fd >= 0 {
                let mut buf = [0u8; 64];
                let n = unsafe { syscall(0, [fd as u64, buf.as_mut_ptr() as u64, 64]) };
                libos::println!("read {n} bytes of the host's /etc/passwd");
            }
        }
        "socket" => {
            // socket(AF_INET, SOCK_STREAM, 0)
            let fd = unsafe { syscall(41, [2, 1, 0]) };
            libos::println!("socket returned {fd}");
        }
        other => {
            libos::println!("unknown mode {other}");
            return 2;
        }
    }
    libos::println!("the {mode} fault did not stop the guest");
    1
}

/// A `syscall` with up to three arguments; returns rax.
///
/// # Safety
///
/// None: it is a test of what the platform does with it.
unsafe fn syscall(number: u64, args: [u64; 3]) -> i64 {
    let result: i64;
    unsafe {
        core::arch::asm!(
            "syscall",
            inlateout("rax") number as i64 => result,
            in("rdi") args[0],
            in("rsi") args[1],
            in("rdx") args[2],
            out("rcx") _,
            out("r11") _,
            options(nostack),
        );
    }
    result
}

/// Recurses with a frame the optimiser cannot remove, until the stack overflows.
fn recurse(depth: u64) -> u64 {
    let frame = black_box([depth; 64]);
    // Never true (the stack ends first), but the compiler cannot know.
    if depth == black_box(u64::MAX) {
        return 0;
    }
    recurse(depth + 1) + frame[black_box(0)]
}
