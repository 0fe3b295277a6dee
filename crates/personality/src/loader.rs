//! Loading a Linux program: its ELF image, its dynamic loader if it names one
//! (`PT_INTERP`), and the initial stack a kernel builds — argument and environment
//! strings, the auxiliary vector glibc and musl read.
//!
//! A program linked at fixed addresses (`ET_EXEC`, e.g. `gcc -static`) loads
//! where it says; a position-independent one (`ET_DYN`: static-pie, or the
//! dynamic loader) at a base the personality picks. Its segments are copied from
//! the root filesystem into program memory, the rest of each segment (bss) zero.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use crate::errno::Errno;
use crate::kernel::kernel;
use crate::mm::{page_up, PAGE};
use crate::vfs::{Follow, Kind};
pub use personality_core::elf::Image;

/// Why a program could not be loaded: one clear line for the user.
#[derive(Debug)]
pub enum LoadError {
    /// The path names nothing, or something that is no file.
    Missing(String, Errno),
    /// The file is not a 64-bit x86 ELF executable.
    NotElf(String, &'static str),
    /// Its segments do not fit in program memory.
    NoRoom(String),
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Missing(path, errno) => {
                write!(f, "{path}: not in the root filesystem ({errno})")
            }
            LoadError::NotElf(path, why) => {
                write!(f, "{path}: not an x86-64 Linux program ({why})")
            }
            LoadError::NoRoom(path) => write!(
                f,
                "{path}: its segments do not fit in the program's memory (raise --mem)"
            ),
        }
    }
}

/// The program and, for a dynamic one, its loader.
#[derive(Debug, Clone, Copy)]
pub struct Loaded {
    /// The program itself.
    pub program: Image,
    /// The dynamic loader, if the program names one.
    pub interpreter: Option<Image>,
}

impl Loaded {
    /// Where execution starts: the loader's entry, else the program's.
    pub fn entry(&self) -> u64 {
        self.interpreter.map_or(self.program.entry, |i| i.entry)
    }
}

/// The bytes of the file at `path`.
fn file_bytes(path: &str) -> Result<&'static [u8], LoadError> {
    let k = kernel();
    let ino = k
        .vfs
        .lookup(k.cwd, path, Follow::Yes)
        .map_err(|e| LoadError::Missing(path.into(), e))?;
    match k.vfs.node(ino).map(|n| &n.kind) {
        Some(Kind::File(data)) => {
            let data: &[u8] = data;
            // SAFETY: the node's bytes live (unchanged: the program does not run
            // yet) at least until loading copies them out.
            Ok(unsafe { core::slice::from_raw_parts(data.as_ptr(), data.len()) })
        }
        _ => Err(LoadError::Missing(path.into(), crate::errno::EACCES)),
    }
}

/// Loads the image at `path`; `dyn_base` is where a position-independent one goes
/// (0: anywhere the memory manager finds room).
fn load_image(path: &str, dyn_base: u64) -> Result<(Image, Option<String>), LoadError> {
    let bytes = file_bytes(path)?;
    let plan =
        personality_core::elf::plan(bytes).map_err(|why| LoadError::NotElf(path.into(), why))?;
    let span = plan.span();
    let k = kernel();
    let no_room = || LoadError::NoRoom(path.into());
    let bias = if plan.position_independent {
        let base = if dyn_base != 0 {
            let end = dyn_base.checked_add(span).ok_or_else(no_room)?;
            k.mm.map_fixed(dyn_base..end, 7, path, false)
                .map_err(|_| no_room())?;
            dyn_base
        } else {
            k.mm.map_anywhere(span, 7, path, false)
                .map_err(|_| no_room())?
        };
        plan.bias(base)
    } else {
        k.mm.map_fixed(plan.low..plan.high, 7, path, false)
            .map_err(|_| no_room())?;
        0
    };
    for segment in &plan.segments {
        let file = bytes.get(segment.file.clone()).unwrap_or_default();
        let (at, zeros) = segment.placed(bias);
        // SAFETY: `at..at+p_memsz` lies in the range just mapped for the image
        // (the plan checked each segment against the image's span).
        unsafe {
            core::ptr::copy_nonoverlapping(file.as_ptr(), at as *mut u8, file.len());
            core::ptr::write_bytes((at + file.len() as u64) as *mut u8, 0, zeros as usize);
        }
    }
    Ok((plan.image(bias), plan.interpreter))
}

/// Loads the program at `path` and its dynamic loader; sets where its heap
/// (`brk`) starts. `pie_base` is where a position-independent program goes.
pub fn load(path: &str, pie_base: u64) -> Result<Loaded, LoadError> {
    let (program, interpreter_path) = load_image(path, pie_base)?;
    let interpreter = match interpreter_path {
        Some(interp) => Some(load_image(&interp, 0)?.0),
        None => None,
    };
    kernel().mm.set_brk_start(
        page_up(program.end)
            .unwrap_or(program.end)
            .saturating_add(16 * PAGE),
    );
    Ok(Loaded {
        program,
        interpreter,
    })
}

/// Auxiliary vector keys (`linux/auxvec.h`).
mod at {
    pub const NULL: u64 = 0;
    pub const PHDR: u64 = 3;
    pub const PHENT: u64 = 4;
    pub const PHNUM: u64 = 5;
    pub const PAGESZ: u64 = 6;
    pub const BASE: u64 = 7;
    pub const FLAGS: u64 = 8;
    pub const ENTRY: u64 = 9;
    pub const UID: u64 = 11;
    pub const EUID: u64 = 12;
    pub const GID: u64 = 13;
    pub const EGID: u64 = 14;
    pub const PLATFORM: u64 = 15;
    pub const HWCAP: u64 = 16;
    pub const CLKTCK: u64 = 17;
    pub const SECURE: u64 = 23;
    pub const RANDOM: u64 = 25;
    pub const HWCAP2: u64 = 26;
    pub const EXECFN: u64 = 31;
    pub const SYSINFO_EHDR: u64 = 33;
    pub const MINSIGSTKSZ: u64 = 51;
}

/// Builds the initial stack in `stack` (its top is `stack.end`): argc, argv,
/// envp, auxv and the strings they point to, as Linux lays them out. Returns the
/// stack pointer to start the program with. `vdso` is where the vDSO's ELF header
/// is (`AT_SYSINFO_EHDR`), if it is mapped: without that entry glibc and musl make
/// system calls for the clock.
pub fn initial_stack(
    stack: core::ops::Range<u64>,
    loaded: &Loaded,
    vdso: Option<u64>,
    argv: &[String],
    envp: &[String],
) -> Result<u64, LoadError> {
    let no_room = || LoadError::NoRoom("the initial stack".into());
    let mut top = stack.end;
    let push_bytes = |bytes: &[u8], top: &mut u64| -> Result<u64, LoadError> {
        *top = top
            .checked_sub(bytes.len() as u64)
            .filter(|&t| t >= stack.start)
            .ok_or_else(no_room)?;
        // SAFETY: `top..top+len` lies in the stack range the caller mapped.
        unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), *top as *mut u8, bytes.len()) };
        Ok(*top)
    };
    let push_str = |text: &str, top: &mut u64| -> Result<u64, LoadError> {
        let mut bytes = Vec::with_capacity(text.len() + 1);
        bytes.extend_from_slice(text.as_bytes());
        bytes.push(0);
        push_bytes(&bytes, top)
    };
    let execfn = push_str(argv.first().map_or("", String::as_str), &mut top)?;
    let platform = push_str("x86_64", &mut top)?;
    let env_ptrs: Vec<u64> = envp
        .iter()
        .map(|e| push_str(e, &mut top))
        .collect::<Result<_, _>>()?;
    let arg_ptrs: Vec<u64> = argv
        .iter()
        .map(|a| push_str(a, &mut top))
        .collect::<Result<_, _>>()?;
    let mut random = [0u8; 16];
    crate::random::fill(&mut random);
    let random_at = push_bytes(&random, &mut top)?;

    let program = loaded.program;
    let vdso_entry = vdso.map(|ehdr| (at::SYSINFO_EHDR, ehdr));
    let auxv = vdso_entry.into_iter().chain([
        (at::PHDR, program.phdr),
        (at::PHENT, 56),
        (at::PHNUM, program.phnum),
        (at::PAGESZ, PAGE),
        (at::BASE, loaded.interpreter.map_or(0, |i| i.bias)),
        (at::FLAGS, 0),
        (at::ENTRY, program.entry),
        (at::UID, 0),
        (at::EUID, 0),
        (at::GID, 0),
        (at::EGID, 0),
        (at::PLATFORM, platform),
        (at::HWCAP, hwcap()),
        (at::CLKTCK, 100),
        (at::SECURE, 0),
        (at::RANDOM, random_at),
        (at::HWCAP2, 0),
        (at::EXECFN, execfn),
        (at::MINSIGSTKSZ, 2048),
    ]);
    // The words below the strings: argc, argv, NULL, envp, NULL, auxv, AT_NULL.
    let mut words: Vec<u64> = Vec::new();
    words.push(arg_ptrs.len() as u64);
    words.extend(&arg_ptrs);
    words.push(0);
    words.extend(&env_ptrs);
    words.push(0);
    for (key, value) in auxv {
        words.push(key);
        words.push(value);
    }
    words.push(at::NULL);
    words.push(0);
    let bytes = (words.len() * 8) as u64;
    // argc sits at a 16-byte boundary, as the ABI wants at process entry.
    let sp = top
        .checked_sub(bytes)
        .map(|sp| sp & !15)
        .filter(|&sp| sp >= stack.start)
        .ok_or_else(no_room)?;
    for (i, word) in words.iter().enumerate() {
        // SAFETY: `sp..sp+bytes` lies in the stack range (checked above).
        unsafe { core::ptr::write_unaligned((sp + i as u64 * 8) as *mut u64, *word) };
    }
    Ok(sp)
}

/// `AT_HWCAP`: CPUID leaf 1's EDX, as Linux reports it.
fn hwcap() -> u64 {
    u64::from(core::arch::x86_64::__cpuid(1).edx)
}
