//! Unmodified Linux programs for the personality's tests: C sources of
//! `tests/programs` compiled with the host's gcc (glibc) or musl-gcc, host
//! programs taken with `lightvm rootfs`, the personality image built once, and
//! `lightvm run --rootfs` to run them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;

use super::{repo, LIGHTVM};

/// The C library a test program is linked with, statically.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Libc {
    Glibc,
    Musl,
}

impl Libc {
    fn compiler(self) -> &'static str {
        match self {
            Libc::Glibc => "gcc",
            Libc::Musl => "musl-gcc",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Libc::Glibc => "glibc",
            Libc::Musl => "musl",
        }
    }
}

/// This test binary's scratch directory.
pub fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lightvm-lx-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("make the scratch directory");
    dir
}

/// The personality's image, built through `lightvm build` once per test binary.
pub fn personality() -> PathBuf {
    static BUILT: Mutex<Option<PathBuf>> = Mutex::new(None);
    let mut built = BUILT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(path) = built.as_ref() {
        return path.clone();
    }
    let out = scratch().join("personality.elf");
    let output = Command::new(LIGHTVM)
        .arg("build")
        .arg(repo().join("crates/personality"))
        .arg("--out")
        .arg(&out)
        .output()
        .expect("run lightvm build");
    assert!(
        output.status.success(),
        "lightvm build crates/personality failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    *built = Some(out.clone());
    out
}

/// `source` (a file of `tests/programs`, or any path) compiled statically with
/// `libc` and `flags`, once per test binary.
pub fn compile(source: &Path, libc: Libc, flags: &[&str]) -> PathBuf {
    compile_linked(source, libc, true, flags)
}

/// `source` compiled with glibc, linked dynamically (the host's loader and
/// libraries: a root for it comes from [`Rootfs::of_host_programs`]).
pub fn compile_dynamic(source: &Path) -> PathBuf {
    compile_linked(source, Libc::Glibc, false, &[])
}

fn compile_linked(source: &Path, libc: Libc, statically: bool, flags: &[&str]) -> PathBuf {
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let source = if source.is_absolute() {
        source.to_owned()
    } else {
        repo().join("crates/lightvm/tests/programs").join(source)
    };
    let stem = source.file_stem().expect("a source file").to_string_lossy();
    let tag: String = flags
        .concat()
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect();
    let dir = source
        .parent()
        .and_then(Path::file_name)
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let linkage = if statically { "" } else { "-dynamic" };
    let out = scratch().join(format!("{dir}-{stem}-{}{linkage}{tag}", libc.name()));
    if !out.exists() {
        let output = Command::new(libc.compiler())
            .args(statically.then_some("-static"))
            .args(["-O2", "-pthread", "-o"])
            .arg(&out)
            .arg(&source)
            .args(flags)
            .output()
            .unwrap_or_else(|e| panic!("{} (scripts/setup.sh installs it): {e}", libc.compiler()));
        assert!(
            output.status.success(),
            "{} {} failed:\n{}",
            libc.compiler(),
            source.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    out
}

/// A root filesystem directory for one test.
pub struct Rootfs {
    pub dir: PathBuf,
}

impl Rootfs {
    /// An empty root named `name` in the scratch directory.
    pub fn new(name: &str) -> Rootfs {
        let dir = scratch().join(format!("root-{name}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("make the root");
        Rootfs { dir }
    }

    /// A root made by `lightvm rootfs` for host `programs`, with `add`ed paths.
    pub fn of_host_programs(name: &str, programs: &[&str], add: &[&str]) -> Rootfs {
        let root = Rootfs::new(name);
        let mut cmd = Command::new(LIGHTVM);
        cmd.arg("rootfs").args(programs).arg("--out").arg(&root.dir);
        for path in add {
            cmd.args(["--add", path]);
        }
        let output = cmd.output().expect("run lightvm rootfs");
        assert!(
            output.status.success(),
            "lightvm rootfs failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        root
    }

    /// Copies host file `from` to `inside` (absolute) in the root.
    pub fn add(&self, from: &Path, inside: &str) -> &Rootfs {
        let target = self.dir.join(inside.trim_start_matches('/'));
        std::fs::create_dir_all(target.parent().expect("a parent")).expect("make directories");
        std::fs::copy(from, &target)
            .unwrap_or_else(|e| panic!("copy {} to {}: {e}", from.display(), target.display()));
        self
    }

    /// `lightvm run --platform P --rootfs ROOT [flags] PROGRAM -- args` as a
    /// command to finish: in `netns` (its tap and the guest's address added) or
    /// on the host.
    pub fn command(
        &self,
        netns: Option<&super::Netns>,
        platform: lightvm_vmm::Platform,
        flags: &[&str],
        program: &str,
        args: &[&str],
    ) -> Command {
        let personality = personality();
        let mut cmd = match netns {
            Some(netns) => netns.command(&[LIGHTVM]),
            None => Command::new(LIGHTVM),
        };
        cmd.args(["run", "--platform", platform.name(), "--personality"])
            .arg(&personality)
            .arg("--rootfs")
            .arg(&self.dir);
        if !flags.contains(&"--timeout") {
            cmd.args(["--timeout", "120s"]);
        }
        if netns.is_some() {
            let tap = format!("tap={}", super::TAP);
            cmd.args(["--net", &tap, "--cmdline", super::GUEST_CMDLINE]);
        }
        cmd.args(flags).arg(program).arg("--").args(args);
        cmd
    }

    /// `lightvm run --platform P --rootfs ROOT [flags] PROGRAM -- args`.
    pub fn run(
        &self,
        platform: lightvm_vmm::Platform,
        flags: &[&str],
        program: &str,
        args: &[&str],
    ) -> Output {
        self.command(None, platform, flags, program, args)
            .output()
            .expect("run lightvm")
    }
}

impl Drop for Rootfs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The same program as a host process, for the output to compare with.
pub fn run_on_host(program: &Path, args: &[&str], cwd: &Path) -> Output {
    Command::new(program)
        .args(args)
        .current_dir(cwd)
        .env_clear()
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", program.display()))
}
