//! The `container` platform: the process baseline's static binary run by runc, the
//! reference OCI runtime, from a bundle this module writes (a rootfs holding only
//! the binary, and the `config.json` of a stock `runc spec`: pid, network, ipc,
//! uts and mount namespaces, a read-only root, the default mounts and masks).
//!
//! runc keeps its state under a directory of this run (`--root`), so nothing is
//! left in the host's `/run/runc`, and every container this run started is deleted
//! when the [`Runc`] is dropped.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::BenchError;
use crate::launch::{self, RunOutcome};
use crate::platform::which;

const PLATFORM: &str = "container";

/// runc, ready to run bundles of this run.
#[derive(Debug)]
pub(crate) struct Runc {
    exe: PathBuf,
    /// runc's state directory for this run.
    root: PathBuf,
    /// Where bundles and logs go.
    work: PathBuf,
    /// Containers started detached and not yet deleted.
    live: RefCell<Vec<String>>,
    next: RefCell<u64>,
}

/// Whether the container platform can run here: why not, if it cannot.
pub(crate) fn probe() -> Result<PathBuf, String> {
    let exe =
        which("runc").ok_or("runc not installed (apt-get install runc, or ./scripts/setup.sh)")?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err("runc needs root here (rootless runc needs a user-namespace setup this suite does not do): run the bench as root".to_owned());
    }
    Ok(exe)
}

/// The stock `runc spec` configuration, running `/app` without a terminal; in a
/// new, empty network namespace, or in the existing one at `network`.
fn config_json(network: Option<&Path>) -> serde_json::Value {
    let network = match network {
        Some(path) => serde_json::json!({"type": "network", "path": path}),
        None => serde_json::json!({"type": "network"}),
    };
    let caps = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"];
    serde_json::json!({
        "ociVersion": "1.0.2-dev",
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": ["/app"],
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "cwd": "/",
            "capabilities": {
                "bounding": caps, "effective": caps, "permitted": caps, "ambient": caps
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": true
        },
        "root": {"path": "rootfs", "readonly": true},
        "hostname": "lightvm-bench",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
             "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}
        ],
        "linux": {
            "resources": {"devices": [{"allow": false, "access": "rwm"}]},
            "namespaces": [
                {"type": "pid"}, network, {"type": "ipc"},
                {"type": "uts"}, {"type": "mount"}
            ],
            "maskedPaths": [
                "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
                "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
                "/proc/sched_debug", "/sys/firmware", "/proc/scsi"
            ],
            "readonlyPaths": [
                "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"
            ]
        }
    })
}

/// Writes an OCI bundle for `binary` under `dir`: `rootfs/app` and `config.json`,
/// joining the network namespace at `network` if one is given.
pub(crate) fn write_bundle(
    dir: &Path,
    binary: &Path,
    network: Option<&Path>,
) -> Result<(), BenchError> {
    let rootfs = dir.join("rootfs");
    std::fs::create_dir_all(&rootfs).map_err(BenchError::io(&rootfs))?;
    for mount_point in ["proc", "dev", "sys"] {
        let path = rootfs.join(mount_point);
        std::fs::create_dir_all(&path).map_err(BenchError::io(&path))?;
    }
    let app = rootfs.join("app");
    std::fs::copy(binary, &app).map_err(BenchError::io(&app))?;
    let config = dir.join("config.json");
    let text = serde_json::to_string_pretty(&config_json(network))?;
    std::fs::write(&config, text).map_err(BenchError::io(&config))?;
    Ok(())
}

/// Total size of the files under `dir` (bytes).
pub(crate) fn tree_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.file_type() {
            Ok(t) if t.is_dir() => tree_size(&entry.path()),
            Ok(t) if t.is_file() => entry.metadata().map_or(0, |m| m.len()),
            _ => 0,
        })
        .sum()
}

impl Runc {
    /// runc at `exe`, with its state and bundles under `work`.
    pub(crate) fn new(exe: PathBuf, work: &Path) -> Result<Self, BenchError> {
        let root = work.join("runc-state");
        std::fs::create_dir_all(&root).map_err(BenchError::io(&root))?;
        Ok(Self {
            exe,
            root,
            work: work.to_owned(),
            live: RefCell::new(Vec::new()),
            next: RefCell::new(0),
        })
    }

    /// The bundle directory of a workload (written by [`write_bundle`]).
    pub(crate) fn bundle(&self, workload: &str) -> PathBuf {
        self.work.join("bundles").join(workload)
    }

    fn next_id(&self) -> String {
        let mut next = self.next.borrow_mut();
        *next += 1;
        format!("lightvm-bench-{}-{}", std::process::id(), *next)
    }

    fn command(&self) -> Command {
        let mut command = Command::new(&self.exe);
        command.arg("--root").arg(&self.root);
        command
    }

    /// `runc run` of a workload's bundle, to its end (runc deletes the container).
    pub(crate) fn run(&self, workload: &str) -> Result<RunOutcome, BenchError> {
        let log = self.work.join("runc-run.log");
        let mut command = self.command();
        command
            .arg("run")
            .arg("--bundle")
            .arg(self.bundle(workload))
            .arg(self.next_id())
            .stderr(launch::stderr_to(&log));
        launch::run_to_exit(command, PLATFORM, Some(&log))
    }

    /// `runc run --detach` of the bundle in `bundle`, timed to its first output
    /// byte; returns the container id, the pid of its init and the µs.
    pub(crate) fn start(&self, bundle: &Path) -> Result<(String, u32, f64), BenchError> {
        let id = self.next_id();
        let log = self.work.join("runc-start.log");
        let mut command = self.command();
        command
            .arg("run")
            .arg("--detach")
            .arg("--bundle")
            .arg(bundle)
            .arg(&id)
            .stderr(launch::stderr_to(&log));
        self.live.borrow_mut().push(id.clone());
        let (mut runc, to_main_us, _) =
            launch::spawn_to_marker(command, PLATFORM).map_err(|e| {
                let detail = std::fs::read_to_string(&log).unwrap_or_default();
                BenchError::platform(PLATFORM, format!("{e} {}", detail.trim()))
            })?;
        // A detached runc exits once the container runs; the container keeps the pipe.
        let _ = runc.wait();
        let state = self
            .command()
            .arg("state")
            .arg(&id)
            .stderr(Stdio::null())
            .output()
            .map_err(|e| BenchError::platform(PLATFORM, format!("runc state: {e}")))?;
        let pid = serde_json::from_slice::<serde_json::Value>(&state.stdout)
            .ok()
            .and_then(|v| v.get("pid")?.as_u64())
            .and_then(|pid| u32::try_from(pid).ok())
            .ok_or_else(|| BenchError::platform(PLATFORM, "runc state gave no pid"))?;
        Ok((id, pid, to_main_us))
    }

    /// Kills and deletes a container started with [`Runc::start`].
    pub(crate) fn delete(&self, id: &str) {
        let _ = self
            .command()
            .args(["delete", "--force", id])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        self.live.borrow_mut().retain(|live| live != id);
    }

    /// `runc --version`'s first line.
    pub(crate) fn version(&self) -> Option<String> {
        let output = Command::new(&self.exe).arg("--version").output().ok()?;
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .next()
            .map(str::to_owned)
    }
}

impl Drop for Runc {
    fn drop(&mut self) {
        let live = std::mem::take(&mut *self.live.borrow_mut());
        for id in live {
            self.delete(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bundle_runs_app_without_a_terminal_on_a_read_only_root() {
        let config = config_json(None);
        assert_eq!(config["process"]["args"][0], "/app");
        assert_eq!(config["process"]["terminal"], false);
        assert_eq!(config["root"]["readonly"], true);
        assert_eq!(config["linux"]["namespaces"].as_array().unwrap().len(), 5);
        assert_eq!(config["linux"]["namespaces"][1]["type"], "network");
        assert!(config["linux"]["namespaces"][1].get("path").is_none());
    }

    #[test]
    fn a_bundle_can_join_an_existing_network_namespace() {
        let config = config_json(Some(Path::new("/run/netns/x")));
        assert_eq!(
            config["linux"]["namespaces"][1],
            serde_json::json!({"type": "network", "path": "/run/netns/x"})
        );
    }
}
