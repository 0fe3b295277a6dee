//! Unikernel images: a guest application directory in, a bootable ELF out.
//!
//! A guest is an ordinary Cargo binary crate (`#![no_std] #![no_main]`, linking
//! `libos`), so building one is `cargo build` with three things added:
//!
//! * `--target x86_64-unknown-linux-gnu`, the only target installed. Naming it
//!   explicitly is what keeps the flags below away from build scripts and proc
//!   macros, which Cargo then builds for the host with no extra flags.
//! * The flags of a freestanding static executable, passed through
//!   `CARGO_ENCODED_RUSTFLAGS` (see [`rustflags`]).
//! * lightvm's linker script ([`LINKER_SCRIPT`]), which loads the image at
//!   `lightvm_abi::layout::IMAGE_MIN_ADDR` (1 MiB) in three page-aligned
//!   segments (text R+X, rodata R, data+bss R+W) so the VMM can map the read-only
//!   ones straight from the file. It is written into Cargo's target directory under
//!   a name that carries a hash of its content: the path is part of the flags, and
//!   Cargo rebuilds exactly when the flags change, so a changed script rebuilds every
//!   guest while an unchanged one costs nothing.
//!
//! Cargo's diagnostics and progress go to the user's terminal as they come; its
//! JSON messages on stdout name the executable it produced.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

/// The target guests are built for: the host's own, used freestanding.
pub const TARGET: &str = "x86_64-unknown-linux-gnu";

/// lightvm's linker script for unikernel images.
pub const LINKER_SCRIPT: &str = include_str!("unikernel.ld");

/// How to build one guest application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnikernelBuild {
    /// The application's directory: the one holding its `Cargo.toml`.
    pub app_dir: PathBuf,
    /// Build with the release profile (the default): small, optimised images. The
    /// dev profile builds faster and keeps debug assertions and debug info.
    pub release: bool,
    /// Where to copy the finished image, if anywhere but Cargo's target directory
    /// (a file path; missing parent directories are created).
    pub out: Option<PathBuf>,
    /// Keep Cargo's progress lines off stderr (warnings and errors still show):
    /// for builds lightvm makes on its own behalf, such as the personality's on
    /// every `lightvm run --rootfs`, where "Finished" would be noise.
    pub quiet: bool,
}

/// A bootable image that a build produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltImage {
    /// The ELF file: `out` if one was given, else Cargo's output.
    pub path: PathBuf,
    /// Its size in bytes.
    pub size: u64,
    /// The application's binary name.
    pub name: String,
}

/// Why a build failed, with what it was working on.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The application directory does not exist (or is not a directory).
    #[error("application directory {} does not exist", path.display())]
    AppDirMissing {
        /// The directory asked for.
        path: PathBuf,
    },
    /// The directory holds no `Cargo.toml`, so it is no Cargo package.
    #[error("{} is not a Cargo package: {} is missing", dir.display(), manifest.display())]
    NoManifest {
        /// The application directory.
        dir: PathBuf,
        /// The manifest looked for.
        manifest: PathBuf,
    },
    /// Cargo could not be started.
    #[error("could not run cargo ({}): {source}", program.to_string_lossy())]
    CargoNotFound {
        /// The program run: `$CARGO` if set, else `cargo` from `PATH`.
        program: OsString,
        /// Why it could not start.
        source: io::Error,
    },
    /// Cargo ran and failed; its own diagnostics were shown on stderr.
    #[error(
        "`cargo {command}` failed for {} ({status}); see cargo's messages above",
        manifest.display()
    )]
    CargoFailed {
        /// The Cargo sub-command (`build` or `metadata`).
        command: &'static str,
        /// The application's manifest.
        manifest: PathBuf,
        /// Cargo's exit status.
        status: ExitStatus,
    },
    /// `cargo metadata` printed something other than what it documents.
    #[error("could not read `cargo metadata` output for {}: {reason}", manifest.display())]
    BadMetadata {
        /// The application's manifest.
        manifest: PathBuf,
        /// What was wrong with it.
        reason: String,
    },
    /// The build succeeded but produced no executable: the package has no binary.
    #[error(
        "building {} produced no executable: a guest application must be a binary crate",
        manifest.display()
    )]
    NoBinary {
        /// The application's manifest.
        manifest: PathBuf,
    },
    /// The package has several binaries, and an image is one of them.
    #[error(
        "{} has several binaries ({}): a guest application must have exactly one",
        manifest.display(),
        names.join(", ")
    )]
    SeveralBinaries {
        /// The application's manifest.
        manifest: PathBuf,
        /// The binaries' names.
        names: Vec<String>,
    },
    /// Reading or writing a file failed.
    #[error("could not {action} {}: {source}", path.display())]
    Io {
        /// What was being done ("write the linker script to", "copy the image to" …).
        action: &'static str,
        /// The file concerned.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
}

impl UnikernelBuild {
    /// A release build of the application in `app_dir`, left in Cargo's target
    /// directory.
    pub fn new(app_dir: impl Into<PathBuf>) -> Self {
        UnikernelBuild {
            app_dir: app_dir.into(),
            release: true,
            out: None,
            quiet: false,
        }
    }

    /// Builds the image: checks the directory, writes the linker script, runs Cargo
    /// (its messages stream to stderr), and copies the result to `out` if given.
    pub fn build(&self) -> Result<BuiltImage, BuildError> {
        if !self.app_dir.is_dir() {
            return Err(BuildError::AppDirMissing {
                path: self.app_dir.clone(),
            });
        }
        let manifest = self.app_dir.join("Cargo.toml");
        if !manifest.is_file() {
            return Err(BuildError::NoManifest {
                dir: self.app_dir.clone(),
                manifest,
            });
        }
        let cargo = cargo_program();
        let target_dir = target_directory(&cargo, &manifest)?;
        let script = write_linker_script(&target_dir)?;
        let (name, built) = self.run_cargo_build(&cargo, &manifest, &script)?;

        let path = match &self.out {
            Some(out) => {
                copy_image(&built, out)?;
                out.clone()
            }
            None => built,
        };
        let size = fs::metadata(&path)
            .map_err(|source| BuildError::Io {
                action: "read the size of",
                path: path.clone(),
                source,
            })?
            .len();
        Ok(BuiltImage { path, size, name })
    }

    /// Runs `cargo build` and returns the name and path of the one executable built.
    fn run_cargo_build(
        &self,
        cargo: &OsStr,
        manifest: &Path,
        script: &Path,
    ) -> Result<(String, PathBuf), BuildError> {
        let mut command = Command::new(cargo);
        command
            .arg("build")
            .args(self.release.then_some("--release"))
            .args(self.quiet.then_some("--quiet"))
            .args(["--target", TARGET, "--manifest-path"])
            .arg(manifest)
            .arg("--message-format=json-render-diagnostics")
            .env(
                "CARGO_ENCODED_RUSTFLAGS",
                encode_rustflags(&rustflags(script)),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = command
            .spawn()
            .map_err(|source| BuildError::CargoNotFound {
                program: cargo.to_owned(),
                source,
            })?;

        let mut executables: Vec<(String, PathBuf)> = Vec::new();
        if let Some(stdout) = child.stdout.take() {
            for line in BufReader::new(stdout).lines() {
                // A read error means cargo went away; its exit status says why.
                let Ok(line) = line else { break };
                if let Some(found) = executable_artifact(&line) {
                    if !executables.contains(&found) {
                        executables.push(found);
                    }
                }
            }
        }
        let status = child.wait().map_err(|source| BuildError::Io {
            action: "wait for cargo building",
            path: manifest.to_owned(),
            source,
        })?;
        if !status.success() {
            return Err(BuildError::CargoFailed {
                command: "build",
                manifest: manifest.to_owned(),
                status,
            });
        }
        match executables.len() {
            0 => Err(BuildError::NoBinary {
                manifest: manifest.to_owned(),
            }),
            1 => Ok(executables.remove(0)),
            _ => Err(BuildError::SeveralBinaries {
                manifest: manifest.to_owned(),
                names: executables.into_iter().map(|(name, _)| name).collect(),
            }),
        }
    }
}

/// The flags that make a `no_std` binary for [`TARGET`] a freestanding unikernel
/// image linked with `linker_script`:
///
/// * `relocation-model=static`: a fixed-address, non-PIE executable — the VMM loads
///   segments where they say, with no relocation to apply;
/// * `panic=abort`: no unwinding machinery (also set in the guests' profiles; repeated
///   here so any application directory gets it);
/// * `-nostartfiles -nostdlib -static`: no C runtime, no libc, no dynamic linker —
///   `libos` provides `_start` and the `mem*` functions;
/// * `--build-id=none`: no `.note.gnu.build-id` (the script discards notes anyway);
/// * `--gc-sections`: drop whatever nothing references;
/// * `-T <script>`: lightvm's layout instead of the default one (two arguments, so a
///   path with commas in it survives, which `-Wl,-T,<path>` would split).
pub fn rustflags(linker_script: &Path) -> Vec<OsString> {
    let mut flags: Vec<OsString> = [
        "-C",
        "relocation-model=static",
        "-C",
        "panic=abort",
        "-C",
        "link-arg=-nostartfiles",
        "-C",
        "link-arg=-nostdlib",
        "-C",
        "link-arg=-static",
        "-C",
        "link-arg=-Wl,--build-id=none",
        "-C",
        "link-arg=-Wl,--gc-sections",
        "-C",
        "link-arg=-T",
        "-C",
    ]
    .into_iter()
    .map(OsString::from)
    .collect();
    let mut script = OsString::from("link-arg=");
    script.push(linker_script);
    flags.push(script);
    flags
}

/// Joins flags the way `CARGO_ENCODED_RUSTFLAGS` wants them: separated by the ASCII
/// unit separator (0x1f), so flags may contain spaces (a path to the linker script).
pub fn encode_rustflags(flags: &[OsString]) -> OsString {
    let mut encoded = OsString::new();
    for (i, flag) in flags.iter().enumerate() {
        if i > 0 {
            encoded.push("\u{1f}");
        }
        encoded.push(flag);
    }
    encoded
}

/// The file name the linker script gets: its content's hash is in it, so a changed
/// script is a changed path, hence changed flags, hence a relink.
pub fn linker_script_file_name(script: &str) -> String {
    format!("unikernel-{:016x}.ld", fnv1a64(script.as_bytes()))
}

/// FNV-1a, 64-bit: a stable hash (unlike std's `DefaultHasher`, which may change
/// between Rust releases) that needs no dependency.
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// If `line` is Cargo's JSON message for a built binary, the binary's name and path.
///
/// Cargo prints one JSON object per line; the ones with `"reason":
/// "compiler-artifact"`, a `bin` target and a non-null `executable` name binaries.
/// Lines that are not such messages (or not JSON at all) are not ours to judge.
pub fn executable_artifact(line: &str) -> Option<(String, PathBuf)> {
    let message: serde_json::Value = serde_json::from_str(line).ok()?;
    if message.get("reason")?.as_str()? != "compiler-artifact" {
        return None;
    }
    let target = message.get("target")?;
    let is_bin = target
        .get("kind")?
        .as_array()?
        .iter()
        .any(|kind| kind.as_str() == Some("bin"));
    if !is_bin {
        return None;
    }
    let name = target.get("name")?.as_str()?.to_owned();
    let executable = PathBuf::from(message.get("executable")?.as_str()?);
    Some((name, executable))
}

/// `$CARGO` when set (we run under Cargo, e.g. in tests: use the same toolchain),
/// else `cargo` from `PATH`.
fn cargo_program() -> OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"))
}

/// Cargo's target directory for `manifest` (that of its workspace), from
/// `cargo metadata`, which honours `CARGO_TARGET_DIR` and `.cargo/config.toml`.
fn target_directory(cargo: &OsStr, manifest: &Path) -> Result<PathBuf, BuildError> {
    let output = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--manifest-path",
        ])
        .arg(manifest)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|source| BuildError::CargoNotFound {
            program: cargo.to_owned(),
            source,
        })?;
    if !output.status.success() {
        return Err(BuildError::CargoFailed {
            command: "metadata",
            manifest: manifest.to_owned(),
            status: output.status,
        });
    }
    let bad = |reason: String| BuildError::BadMetadata {
        manifest: manifest.to_owned(),
        reason,
    };
    let metadata: serde_json::Value =
        serde_json::from_slice(&output.stdout).map_err(|err| bad(err.to_string()))?;
    metadata
        .get("target_directory")
        .and_then(serde_json::Value::as_str)
        .map(PathBuf::from)
        .ok_or_else(|| bad("no `target_directory` string".to_owned()))
}

/// Writes [`LINKER_SCRIPT`] to `<target_dir>/lightvm/` (unless an earlier build did)
/// and returns its path.
///
/// The file is written under a temporary name and renamed into place, so a build
/// running at the same time never links with half a script.
fn write_linker_script(target_dir: &Path) -> Result<PathBuf, BuildError> {
    let dir = target_dir.join("lightvm");
    let path = dir.join(linker_script_file_name(LINKER_SCRIPT));
    if path.is_file() {
        return Ok(path);
    }
    fs::create_dir_all(&dir).map_err(|source| BuildError::Io {
        action: "create the directory",
        path: dir.clone(),
        source,
    })?;
    let temporary = dir.join(format!(".unikernel-{}.ld.tmp", std::process::id()));
    fs::write(&temporary, LINKER_SCRIPT).map_err(|source| BuildError::Io {
        action: "write the linker script to",
        path: temporary.clone(),
        source,
    })?;
    fs::rename(&temporary, &path).map_err(|source| BuildError::Io {
        action: "move the linker script into place at",
        path: path.clone(),
        source,
    })?;
    Ok(path)
}

/// Copies the built image to `out`, creating its parent directories.
fn copy_image(built: &Path, out: &Path) -> Result<(), BuildError> {
    // Copying a file onto itself would truncate it first.
    if let (Ok(from), Ok(to)) = (built.canonicalize(), out.canonicalize()) {
        if from == to {
            return Ok(());
        }
    }
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(|source| BuildError::Io {
            action: "create the directory",
            path: parent.to_owned(),
            source,
        })?;
    }
    fs::copy(built, out).map_err(|source| BuildError::Io {
        action: "copy the image to",
        path: out.to_owned(),
        source,
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use lightvm_abi::layout::{IMAGE_MIN_ADDR, PAGE_SIZE};

    /// A `compiler-artifact` line as Cargo printed it for `guests/hello`.
    const HELLO_ARTIFACT: &str = r#"{"reason":"compiler-artifact","package_id":"path+file:///work/main/guests/hello#0.1.0","manifest_path":"/work/main/guests/hello/Cargo.toml","target":{"kind":["bin"],"crate_types":["bin"],"name":"hello","src_path":"/work/main/guests/hello/src/main.rs","edition":"2021","doc":true,"doctest":false,"test":false},"profile":{"opt_level":"s","debuginfo":0,"debug_assertions":false,"overflow_checks":false,"test":false},"features":[],"filenames":["/work/main/guests/target/x86_64-unknown-linux-gnu/release/hello"],"executable":"/work/main/guests/target/x86_64-unknown-linux-gnu/release/hello","fresh":false}"#;

    /// The same for a library: an artifact, but no executable.
    const LIB_ARTIFACT: &str = r#"{"reason":"compiler-artifact","package_id":"path+file:///work/main/crates/abi#lightvm-abi@0.1.0","manifest_path":"/work/main/crates/abi/Cargo.toml","target":{"kind":["lib"],"crate_types":["lib"],"name":"lightvm_abi","src_path":"/work/main/crates/abi/src/lib.rs","edition":"2021","doc":true,"doctest":true,"test":true},"profile":{"opt_level":"s","debuginfo":0,"debug_assertions":false,"overflow_checks":false,"test":false},"features":[],"filenames":["/work/main/guests/target/x86_64-unknown-linux-gnu/release/deps/liblightvm_abi-fc50e9d2ce694643.rlib"],"executable":null,"fresh":false}"#;

    #[test]
    fn finds_the_executable_in_cargo_messages() {
        assert_eq!(
            executable_artifact(HELLO_ARTIFACT),
            Some((
                "hello".to_owned(),
                PathBuf::from("/work/main/guests/target/x86_64-unknown-linux-gnu/release/hello")
            ))
        );
    }

    #[test]
    fn ignores_other_cargo_messages() {
        assert_eq!(executable_artifact(LIB_ARTIFACT), None);
        assert_eq!(
            executable_artifact(r#"{"reason":"build-finished","success":true}"#),
            None
        );
        assert_eq!(executable_artifact("warning: not JSON at all"), None);
        assert_eq!(executable_artifact(""), None);
    }

    #[test]
    fn rustflags_are_separated_by_the_unit_separator() {
        let script = Path::new("/tmp/a dir, with commas/unikernel.ld");
        let flags = rustflags(script);
        let encoded = encode_rustflags(&flags);
        let encoded = encoded.to_str().expect("flags of a UTF-8 path are UTF-8");
        let parts: Vec<&str> = encoded.split('\u{1f}').collect();
        assert_eq!(parts.len(), flags.len());
        assert_eq!(parts[0], "-C");
        assert!(parts.contains(&"relocation-model=static"));
        assert!(parts.contains(&"link-arg=-nostdlib"));
        assert_eq!(
            &parts[parts.len() - 3..],
            [
                "link-arg=-T",
                "-C",
                "link-arg=/tmp/a dir, with commas/unikernel.ld"
            ]
        );
        assert!(!encoded.starts_with('\u{1f}') && !encoded.ends_with('\u{1f}'));
    }

    #[test]
    fn linker_script_loads_at_the_abi_image_address() {
        let origin = LINKER_SCRIPT
            .lines()
            .map(str::trim)
            .find_map(|line| line.strip_prefix(". = 0x")?.strip_suffix(';'))
            .expect("the script sets the location counter to a hex address");
        assert_eq!(u64::from_str_radix(origin, 16), Ok(IMAGE_MIN_ADDR));
    }

    #[test]
    fn linker_script_aligns_to_the_abi_page_size() {
        let aligns: Vec<&str> = LINKER_SCRIPT
            .split("ALIGN(")
            .skip(1)
            .filter_map(|rest| rest.split(')').next())
            .collect();
        assert!(!aligns.is_empty());
        for align in aligns {
            assert_eq!(align.parse::<u64>(), Ok(PAGE_SIZE), "ALIGN({align})");
        }
    }

    #[test]
    fn linker_script_name_follows_its_content() {
        let name = linker_script_file_name(LINKER_SCRIPT);
        assert_eq!(name, linker_script_file_name(LINKER_SCRIPT));
        assert!(name.starts_with("unikernel-") && name.ends_with(".ld"));
        assert_ne!(name, linker_script_file_name(&format!("{LINKER_SCRIPT}\n")));
    }

    #[test]
    fn refuses_a_missing_directory() {
        let build = UnikernelBuild::new("/nonexistent/lightvm/app");
        assert!(matches!(
            build.build(),
            Err(BuildError::AppDirMissing { .. })
        ));
    }

    #[test]
    fn refuses_a_directory_without_manifest() {
        let dir = std::env::temp_dir().join(format!("lightvm-images-test-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("create a temporary directory");
        let result = UnikernelBuild::new(&dir).build();
        fs::remove_dir_all(&dir).expect("remove the temporary directory");
        assert!(matches!(result, Err(BuildError::NoManifest { .. })));
    }

    /// Little-endian integer of `N` bytes at `at` in `bytes`.
    fn le(bytes: &[u8], at: usize, n: usize) -> u64 {
        bytes[at..at + n]
            .iter()
            .rev()
            .fold(0, |value, &byte| (value << 8) | u64::from(byte))
    }

    /// Builds `guests/hello` for real and checks that the linker script did its job.
    #[test]
    fn builds_hello_into_a_static_elf_at_one_mib() {
        let app = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../guests/hello");
        let image = UnikernelBuild::new(app)
            .build()
            .expect("guests/hello builds");
        assert_eq!(image.name, "hello");
        let elf = fs::read(&image.path).expect("the image is readable");
        assert_eq!(elf.len() as u64, image.size);
        assert!(image.size < 64 << 10, "hello is {} bytes", image.size);

        const PT_LOAD: u64 = 1;
        const PT_DYNAMIC: u64 = 2;
        const PT_INTERP: u64 = 3;
        assert_eq!(&elf[..4], b"\x7fELF");
        assert_eq!(elf[4], 2, "ELFCLASS64");
        assert_eq!(elf[5], 1, "little endian");
        assert_eq!(le(&elf, 16, 2), 2, "ET_EXEC");
        assert_eq!(le(&elf, 18, 2), 62, "EM_X86_64");
        let entry = le(&elf, 24, 8);
        let phoff = le(&elf, 32, 8) as usize;
        let phentsize = le(&elf, 54, 2) as usize;
        let phnum = le(&elf, 56, 2) as usize;

        let mut loads = Vec::new();
        for i in 0..phnum {
            let ph = phoff + i * phentsize;
            let kind = le(&elf, ph, 4);
            assert!(
                kind != PT_DYNAMIC && kind != PT_INTERP,
                "segment type {kind}"
            );
            if kind == PT_LOAD {
                let flags = le(&elf, ph + 4, 4);
                let offset = le(&elf, ph + 8, 8);
                let vaddr = le(&elf, ph + 16, 8);
                let memsz = le(&elf, ph + 40, 8);
                loads.push((flags, offset, vaddr, memsz));
            }
        }
        // text R+X, rodata R, data R+W, in that order.
        let flags: Vec<u64> = loads.iter().map(|load| load.0).collect();
        assert_eq!(flags, [5, 4, 6]);
        assert_eq!(loads[0].2, IMAGE_MIN_ADDR);
        assert_eq!(entry, IMAGE_MIN_ADDR, "_start comes first");
        for pair in loads.windows(2) {
            let end = pair[0].2 + pair[0].3;
            assert!(
                end.next_multiple_of(PAGE_SIZE) <= pair[1].2,
                "segments share a page"
            );
        }
        for (_, offset, vaddr, _) in loads {
            assert_eq!(vaddr % PAGE_SIZE, 0);
            assert_eq!(offset % PAGE_SIZE, 0);
        }
    }
}
