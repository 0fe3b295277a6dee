//! Builds the vDSO (`vdso/vdso.c`) with the host's C compiler into `OUT_DIR`,
//! where `src/vdso.rs` embeds it.
//!
//! C rather than Rust because the object must be a tiny, relocation-free shared
//! object with versioned symbols (`LINUX_2.6`), the SysV and GNU hash tables
//! glibc and musl read, and a data page placed by a linker script a page below
//! the image — all of which the C toolchain produces directly, as Linux builds
//! its own vDSO; a Rust `cdylib` would bring its own sections and a build of
//! `core` for a second target. gcc is a build dependency already
//! (`scripts/setup.sh`).

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    let dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by Cargo"));
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("set by Cargo")).join("vdso.so");
    let source = dir.join("vdso/vdso.c");
    let script = dir.join("vdso/vdso.lds");
    println!("cargo:rerun-if-changed={}", source.display());
    println!("cargo:rerun-if-changed={}", script.display());
    println!("cargo:rerun-if-env-changed=CC");
    // The host's compiler, whatever target the personality itself is built for.
    let cc = env::var("CC").unwrap_or_else(|_| "gcc".into());
    let status = Command::new(&cc)
        .args([
            "-O2",
            "-fPIC",
            "-ffreestanding",
            "-fno-builtin",
            "-fno-stack-protector",
            "-fno-asynchronous-unwind-tables",
            "-fno-unwind-tables",
            "-fcf-protection=none",
            "-nostdlib",
            "-shared",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-Wl,--hash-style=both",
            "-Wl,-soname,linux-vdso.so.1",
            "-Wl,--no-undefined",
            "-Wl,--build-id=none",
            // Only the dynamic symbol table is needed: the rest is bytes to copy.
            "-Wl,--strip-all",
            "-Wl,-z,max-page-size=4096",
        ])
        .arg(format!("-Wl,-T,{}", script.display()))
        .arg("-o")
        .arg(&out)
        .arg(&source)
        .status()
        .unwrap_or_else(|e| panic!("cannot run {cc} to build the vDSO: {e}"));
    assert!(status.success(), "{cc} failed to build the vDSO ({status})");
}
