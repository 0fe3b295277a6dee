//! Linux kernels for lightvm, Lupine-style: Debian's `linux-source` tarball,
//! `make tinyconfig`, then the project's config fragments (`kernel/base.config`,
//! and for any other profile `kernel/<profile>.config` on top of it), then
//! `make vmlinux bzImage`.
//!
//! Builds are cached by a hash of everything that determines the result (the
//! source tarball's name and size, each fragment's name and content, and this
//! builder's recipe version) in a directory *outside* the repository, so that
//! fresh clones on one machine (CI runs) share them:
//! `$LIGHTVM_KERNEL_CACHE`, else `$XDG_CACHE_HOME/lightvm/kernels`, else
//! `/var/cache/lightvm/kernels` when writable, else `~/.cache/lightvm/kernels`.
//! A lock file serialises concurrent builds of the same configuration; an
//! interrupted build leaves no cache entry.

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// Changes whenever the build recipe changes, so that old cache entries are not
/// reused for a different recipe.
const RECIPE_VERSION: &str = "lightvm-kernel-recipe-1";

/// Roughly how many lines `make` prints while building the base profile (for
/// the progress bar; a longer build just extends it).
pub const ESTIMATED_STEPS: u64 = 1550;

/// How to build one kernel.
#[derive(Debug, Clone)]
pub struct KernelBuild {
    /// The profile: `base`, or a fragment name applied on top of base.
    pub profile: String,
    /// Directory holding the `<profile>.config` fragments.
    pub fragments_dir: PathBuf,
    /// Debian's `linux-source-X.Y.tar.xz`.
    pub source: PathBuf,
    /// The cache root.
    pub cache_dir: PathBuf,
    /// `make -j`.
    pub jobs: usize,
}

/// A kernel in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltKernel {
    /// The uncompressed ELF kernel (PVH entry).
    pub vmlinux: PathBuf,
    /// The compressed kernel.
    pub bzimage: PathBuf,
    /// The final `.config`.
    pub config: PathBuf,
    /// The configuration hash (the cache key).
    pub hash: String,
    /// Whether the cache already had it.
    pub cached: bool,
    /// How long the build took (when it was built; for a cache hit, how long
    /// the original build took).
    pub build_time: Duration,
    /// Fragment options that Kconfig did not keep (unmet dependencies).
    pub dropped: Vec<String>,
}

/// What the build is doing, for a progress display.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// Unpacking the source tarball.
    Unpacking,
    /// tinyconfig and the fragments.
    Configuring,
    /// One line of `make` output, the `step`th.
    Compiling {
        /// Lines so far.
        step: u64,
        /// The line ("CC kernel/fork.o").
        what: String,
    },
    /// Copying the result into the cache.
    Finishing,
}

/// Why a kernel build failed.
#[derive(Debug, thiserror::Error)]
pub enum KernelBuildError {
    /// No such profile.
    #[error("unknown kernel profile {profile:?}: no {}; available: {available}", path.display())]
    UnknownProfile {
        /// The profile asked for.
        profile: String,
        /// The fragment looked for.
        path: PathBuf,
        /// Profiles found.
        available: String,
    },
    /// linux-source is not installed.
    #[error("no Linux source tarball at {}: install Debian's linux-source-6.1 (./scripts/setup.sh does) or set LIGHTVM_LINUX_SOURCE", path.display())]
    NoSource {
        /// Where it was looked for.
        path: PathBuf,
    },
    /// A file operation failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// On what.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A build step failed.
    #[error("{step} failed ({status}); last output:\n{tail}")]
    Step {
        /// The command.
        step: String,
        /// Its exit status.
        status: String,
        /// Its last lines of output.
        tail: String,
    },
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> KernelBuildError {
    let path = path.to_owned();
    move |source| KernelBuildError::Io { what, path, source }
}

/// The cache root, from the environment (see the module docs).
pub fn default_cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("LIGHTVM_KERNEL_CACHE") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(dir).join("lightvm/kernels");
    }
    let system = PathBuf::from("/var/cache/lightvm/kernels");
    if fs::create_dir_all(&system).is_ok() && writable(&system) {
        return system;
    }
    let home = std::env::var_os("HOME").map_or_else(std::env::temp_dir, PathBuf::from);
    home.join(".cache/lightvm/kernels")
}

fn writable(dir: &Path) -> bool {
    let probe = dir.join(format!(".probe-{}", std::process::id()));
    let ok = fs::write(&probe, b"").is_ok();
    let _ = fs::remove_file(&probe);
    ok
}

/// Debian's newest `linux-source-*.tar.xz` in /usr/src, or `$LIGHTVM_LINUX_SOURCE`.
pub fn default_source() -> PathBuf {
    if let Some(path) = std::env::var_os("LIGHTVM_LINUX_SOURCE") {
        return PathBuf::from(path);
    }
    let mut found: Vec<PathBuf> = fs::read_dir("/usr/src")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("linux-source-") && n.ends_with(".tar.xz"))
        })
        .collect();
    found.sort();
    found
        .pop()
        .unwrap_or_else(|| PathBuf::from("/usr/src/linux-source-6.1.tar.xz"))
}

/// The fragments of a profile, in the order they are applied.
pub fn profile_fragments(dir: &Path, profile: &str) -> Result<Vec<PathBuf>, KernelBuildError> {
    let valid = !profile.is_empty()
        && profile
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    let path = dir.join(format!("{profile}.config"));
    if !valid || !path.is_file() {
        let mut available: Vec<String> = fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                e.file_name()
                    .to_str()?
                    .strip_suffix(".config")
                    .map(str::to_owned)
            })
            .collect();
        available.sort();
        return Err(KernelBuildError::UnknownProfile {
            profile: profile.to_owned(),
            path,
            available: available.join(", "),
        });
    }
    let base = dir.join("base.config");
    Ok(if profile == "base" {
        vec![base]
    } else {
        vec![base, path]
    })
}

/// The options a fragment sets (`CONFIG_X=value` lines; `# CONFIG_X is not set`
/// and comments are not checked).
pub fn fragment_options(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| l.starts_with("CONFIG_"))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

impl KernelBuild {
    /// A build of `profile` with the default source, fragments in `fragments_dir`,
    /// the default cache and one job per CPU.
    pub fn new(profile: &str, fragments_dir: impl Into<PathBuf>) -> Self {
        Self {
            profile: profile.to_owned(),
            fragments_dir: fragments_dir.into(),
            source: default_source(),
            cache_dir: default_cache_dir(),
            jobs: std::thread::available_parallelism().map_or(2, |n| n.get()),
        }
    }

    /// The cache key of this build.
    pub fn hash(&self) -> Result<String, KernelBuildError> {
        let fragments = profile_fragments(&self.fragments_dir, &self.profile)?;
        let meta = fs::metadata(&self.source).map_err(|_| KernelBuildError::NoSource {
            path: self.source.clone(),
        })?;
        let mut hasher = Sha256::new();
        hasher.update(RECIPE_VERSION);
        hasher.update(
            self.source
                .file_name()
                .map(|n| n.as_encoded_bytes())
                .unwrap_or_default(),
        );
        hasher.update(meta.len().to_le_bytes());
        for fragment in &fragments {
            let text = fs::read(fragment).map_err(io("reading", fragment))?;
            hasher.update(
                fragment
                    .file_name()
                    .map(|n| n.as_encoded_bytes())
                    .unwrap_or_default(),
            );
            hasher.update((text.len() as u64).to_le_bytes());
            hasher.update(&text);
        }
        let digest = hasher.finalize();
        Ok(digest[..8].iter().map(|b| format!("{b:02x}")).collect())
    }

    /// Returns the cached kernel, building it first if needed.
    pub fn build(
        &self,
        mut progress: impl FnMut(Progress),
    ) -> Result<BuiltKernel, KernelBuildError> {
        let hash = self.hash()?;
        let fragments = profile_fragments(&self.fragments_dir, &self.profile)?;
        fs::create_dir_all(&self.cache_dir).map_err(io("creating", &self.cache_dir))?;
        let entry = self.cache_dir.join(&hash);
        let lock_path = self.cache_dir.join(format!("{hash}.lock"));
        let lock = fs::File::create(&lock_path).map_err(io("creating", &lock_path))?;
        // SAFETY: flock on a descriptor we own; released when `lock` is dropped.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(io("locking", &lock_path)(std::io::Error::last_os_error()));
        }
        if let Some(built) = self.cached(&entry, &hash) {
            return Ok(built);
        }

        let started = Instant::now();
        let work = self.cache_dir.join(format!("{hash}.build"));
        let _ = fs::remove_dir_all(&work);
        fs::create_dir_all(&work).map_err(io("creating", &work))?;
        let result = self.build_in(&work, &fragments, &mut progress);
        let outcome = result.and_then(|dropped| {
            progress(Progress::Finishing);
            let staged = self.cache_dir.join(format!("{hash}.new"));
            let _ = fs::remove_dir_all(&staged);
            fs::create_dir_all(&staged).map_err(io("creating", &staged))?;
            for (from, to) in [
                ("vmlinux", "vmlinux"),
                ("arch/x86/boot/bzImage", "bzImage"),
                (".config", "config"),
            ] {
                fs::copy(work.join(from), staged.join(to))
                    .map_err(io("copying", &work.join(from)))?;
            }
            let info = serde_json::json!({
                "profile": self.profile,
                "build_seconds": started.elapsed().as_secs_f64(),
                "dropped": dropped,
            });
            fs::write(staged.join("build.json"), info.to_string())
                .map_err(io("writing", &staged))?;
            fs::rename(&staged, &entry).map_err(io("renaming", &staged))?;
            Ok(())
        });
        let _ = fs::remove_dir_all(&work);
        outcome?;
        let mut built = self
            .cached(&entry, &hash)
            .ok_or_else(|| io("reading", &entry)(std::io::ErrorKind::NotFound.into()))?;
        built.cached = false;
        Ok(built)
    }

    fn cached(&self, entry: &Path, hash: &str) -> Option<BuiltKernel> {
        let info: serde_json::Value =
            serde_json::from_slice(&fs::read(entry.join("build.json")).ok()?).ok()?;
        let vmlinux = entry.join("vmlinux");
        let bzimage = entry.join("bzImage");
        (vmlinux.is_file() && bzimage.is_file()).then(|| BuiltKernel {
            vmlinux,
            bzimage,
            config: entry.join("config"),
            hash: hash.to_owned(),
            cached: true,
            build_time: Duration::from_secs_f64(info["build_seconds"].as_f64().unwrap_or(0.0)),
            dropped: info["dropped"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default(),
        })
    }

    fn build_in(
        &self,
        work: &Path,
        fragments: &[PathBuf],
        progress: &mut impl FnMut(Progress),
    ) -> Result<Vec<String>, KernelBuildError> {
        progress(Progress::Unpacking);
        run(
            Command::new("tar")
                .arg("-xf")
                .arg(&self.source)
                .arg("--strip-components=1")
                .arg("-C")
                .arg(work),
            "unpacking the kernel source",
            &mut |_| {},
        )?;
        progress(Progress::Configuring);
        let make = || {
            let mut make = Command::new("make");
            make.current_dir(work).arg("ARCH=x86_64");
            make
        };
        run(make().arg("tinyconfig"), "make tinyconfig", &mut |_| {})?;
        run(
            Command::new("scripts/kconfig/merge_config.sh")
                .current_dir(work)
                .env("ARCH", "x86_64")
                .arg("-m")
                .arg(".config")
                .args(fragments),
            "merging the config fragments",
            &mut |_| {},
        )?;
        run(make().arg("olddefconfig"), "make olddefconfig", &mut |_| {})?;

        let config = fs::read_to_string(work.join(".config"))
            .map_err(io("reading", &work.join(".config")))?;
        let mut dropped = Vec::new();
        for fragment in fragments {
            let text = fs::read_to_string(fragment).map_err(io("reading", fragment))?;
            for (key, value) in fragment_options(&text) {
                let kept = if value == "n" {
                    !config.lines().any(|l| l.starts_with(&format!("{key}=")))
                } else {
                    config.lines().any(|l| l == format!("{key}={value}"))
                };
                if !kept {
                    dropped.push(format!("{key}={value}"));
                }
            }
        }

        let mut step = 0;
        run(
            make()
                .arg(format!("-j{}", self.jobs.max(1)))
                .args(["vmlinux", "bzImage"]),
            "make vmlinux bzImage",
            &mut |line: &str| {
                step += 1;
                progress(Progress::Compiling {
                    step,
                    what: line.split_whitespace().collect::<Vec<_>>().join(" "),
                });
            },
        )?;
        Ok(dropped)
    }
}

/// Runs a command, feeding each stdout line to `on_line`; on failure, the error
/// carries the last lines of its output (stdout and stderr).
fn run(
    command: &mut Command,
    step: &str,
    on_line: &mut dyn FnMut(&str),
) -> Result<(), KernelBuildError> {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| KernelBuildError::Step {
            step: step.to_owned(),
            status: format!("could not start: {e}"),
            tail: String::new(),
        })?;
    let stderr = child.stderr.take();
    let errors = std::thread::spawn(move || {
        let mut lines = Vec::new();
        if let Some(stderr) = stderr {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                lines.push(line);
            }
        }
        lines
    });
    let mut tail: Vec<String> = Vec::new();
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            on_line(&line);
            tail.push(line);
            if tail.len() > 20 {
                tail.remove(0);
            }
        }
    }
    let status = child.wait().map_err(|e| KernelBuildError::Step {
        step: step.to_owned(),
        status: e.to_string(),
        tail: String::new(),
    })?;
    let errors = errors.join().unwrap_or_default();
    if status.success() {
        return Ok(());
    }
    tail.extend(errors.into_iter().rev().take(20).rev());
    Err(KernelBuildError::Step {
        step: step.to_owned(),
        status: status.to_string(),
        tail: tail.join("\n"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo_fragments() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../kernel")
    }

    #[test]
    fn profiles_stack_on_base_and_unknown_ones_list_the_rest() {
        let dir = repo_fragments();
        assert_eq!(
            profile_fragments(&dir, "base").unwrap(),
            vec![dir.join("base.config")]
        );
        assert_eq!(
            profile_fragments(&dir, "general").unwrap(),
            vec![dir.join("base.config"), dir.join("general.config")]
        );
        let error = profile_fragments(&dir, "nope").unwrap_err().to_string();
        assert!(error.contains("base, general"), "{error}");
        assert!(profile_fragments(&dir, "../etc/passwd").is_err());
    }

    #[test]
    fn the_base_fragment_has_what_lightvm_needs() {
        let text = fs::read_to_string(repo_fragments().join("base.config")).unwrap();
        let options = fragment_options(&text);
        for needed in [
            "CONFIG_SERIAL_8250_CONSOLE",
            "CONFIG_EARLY_PRINTK",
            "CONFIG_PVH",
            "CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES",
            "CONFIG_VIRTIO_BLK",
            "CONFIG_VIRTIO_NET",
            "CONFIG_BLK_DEV_INITRD",
            "CONFIG_EXT4_FS",
        ] {
            assert!(
                options.iter().any(|(k, v)| k == needed && v == "y"),
                "{needed}"
            );
        }
    }

    #[test]
    fn the_hash_follows_the_fragments_and_the_source() {
        let tmp = std::env::temp_dir().join(format!("lightvm-kernel-hash-{}", std::process::id()));
        let frags = tmp.join("kernel");
        fs::create_dir_all(&frags).unwrap();
        fs::write(frags.join("base.config"), "CONFIG_A=y\n").unwrap();
        fs::write(frags.join("app.config"), "CONFIG_B=y\n").unwrap();
        let source = tmp.join("linux-source-9.9.tar.xz");
        fs::write(&source, b"pretend").unwrap();
        let build = |profile: &str| KernelBuild {
            profile: profile.into(),
            fragments_dir: frags.clone(),
            source: source.clone(),
            cache_dir: tmp.join("cache"),
            jobs: 1,
        };
        let base = build("base").hash().unwrap();
        assert_eq!(base, build("base").hash().unwrap());
        assert_ne!(base, build("app").hash().unwrap());
        fs::write(frags.join("base.config"), "CONFIG_A=n\n").unwrap();
        assert_ne!(base, build("base").hash().unwrap());
        let missing = KernelBuild {
            source: tmp.join("none.tar.xz"),
            ..build("base")
        };
        assert!(matches!(
            missing.hash(),
            Err(KernelBuildError::NoSource { .. })
        ));
        fs::remove_dir_all(&tmp).unwrap();
    }
}
