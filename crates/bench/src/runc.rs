//! The `container` platform: the process baseline's static binary run by runc, the
//! reference OCI runtime, from a bundle this module writes (a rootfs holding only
//! the binary, and the `config.json` of a stock `runc spec`: pid, network, ipc,
//! uts and mount namespaces, a read-only root, the default mounts and masks). A
//! Debian program runs the same way from its root filesystem ([`crate::apps`]),
//! with tmpfs on `/run` and `/tmp` for what it writes.
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

/// What a bundle's container runs, and from which root filesystem.
pub(crate) enum BundleRoot<'a> {
    /// A rootfs of the bundle's own holding only this static binary, run as
    /// `/app`.
    Binary(&'a Path),
    /// An existing root directory (a Debian program's), shared read-only, with
    /// tmpfs on `/run` and `/tmp`; `args[0]` is the program's path inside it.
    Tree { root: &'a Path, args: Vec<String> },
}

/// The stock `runc spec` configuration, running `args` from `root` without a
/// terminal, with tmpfs on `scratch`; in a new, empty network namespace, or in
/// the existing one at `network`.
fn config_json(
    root: &Path,
    args: &[String],
    scratch: &[&str],
    network: Option<&Path>,
) -> serde_json::Value {
    let network = match network {
        Some(path) => serde_json::json!({"type": "network", "path": path}),
        None => serde_json::json!({"type": "network"}),
    };
    let caps = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"];
    let mut config = serde_json::json!({
        "ociVersion": "1.0.2-dev",
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": args,
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "cwd": "/",
            "capabilities": {
                "bounding": caps, "effective": caps, "permitted": caps, "ambient": caps
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": true
        },
        "root": {"path": root, "readonly": true},
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
    });
    if let Some(mounts) = config["mounts"].as_array_mut() {
        mounts.extend(scratch.iter().map(|dir| {
            serde_json::json!({"destination": dir, "type": "tmpfs", "source": "tmpfs",
                "options": ["nosuid", "nodev", "mode=1777", "size=65536k"]})
        }));
    }
    config
}

/// Writes an OCI bundle under `dir` — `config.json`, and for a lone binary
/// `rootfs/app` — joining the network namespace at `network` if one is given.
pub(crate) fn write_bundle(
    dir: &Path,
    content: &BundleRoot<'_>,
    network: Option<&Path>,
) -> Result<(), BenchError> {
    let (rootfs, args, scratch): (PathBuf, Vec<String>, &[&str]) = match content {
        BundleRoot::Binary(binary) => {
            let rootfs = dir.join("rootfs");
            let app = rootfs.join("app");
            std::fs::create_dir_all(&rootfs).map_err(BenchError::io(&rootfs))?;
            std::fs::copy(binary, &app).map_err(BenchError::io(&app))?;
            (rootfs, vec!["/app".to_owned()], &[])
        }
        BundleRoot::Tree { root, args } => {
            std::fs::create_dir_all(dir).map_err(BenchError::io(dir))?;
            (root.to_path_buf(), args.clone(), &["/run", "/tmp"])
        }
    };
    for mount_point in ["proc", "dev", "sys"].iter().chain(scratch) {
        let path = rootfs.join(mount_point.trim_start_matches('/'));
        std::fs::create_dir_all(&path).map_err(BenchError::io(&path))?;
    }
    let config = dir.join("config.json");
    let root = match content {
        BundleRoot::Binary(_) => PathBuf::from("rootfs"),
        BundleRoot::Tree { .. } => rootfs,
    };
    let text = serde_json::to_string_pretty(&config_json(&root, &args, scratch, network))?;
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

    /// `runc run --detach` of the bundle in `bundle`, timed until it is ready:
    /// its first output byte, or a connection accepted; returns the container
    /// id, the pid of its init and the µs.
    pub(crate) fn start(
        &self,
        bundle: &Path,
        ready: launch::Ready<'_>,
    ) -> Result<(String, u32, f64), BenchError> {
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
        let with_log = |e: BenchError| {
            let detail = std::fs::read_to_string(&log).unwrap_or_default();
            BenchError::platform(PLATFORM, format!("{e} {}", detail.trim()))
        };
        let to_main_us = match ready {
            launch::Ready::FirstOutput => {
                let (mut runc, to_main_us, _) =
                    launch::spawn_to_marker(command, PLATFORM).map_err(with_log)?;
                // A detached runc exits once the container runs; the container
                // keeps the pipe.
                let _ = runc.wait();
                to_main_us
            }
            launch::Ready::Accepting { clients, address } => {
                // The container's output goes where runc's went.
                command.stdout(launch::stderr_to(&self.work.join("runc-app.log")));
                let started = std::time::Instant::now();
                let status = command
                    .status()
                    .map_err(|e| BenchError::platform(PLATFORM, format!("runc run: {e}")))?;
                if !status.success() {
                    return Err(with_log(BenchError::platform(
                        PLATFORM,
                        format!("runc run --detach: {status}"),
                    )));
                }
                launch::wait_accepting(clients, address, &mut || {
                    self.state(&id)
                        .map(|_| ())
                        .ok_or_else(|| "its container ended".to_owned())
                })
                .map_err(|e| with_log(BenchError::platform(PLATFORM, e)))?;
                launch::micros_since(started)
            }
        };
        let pid = self
            .state(&id)
            .ok_or_else(|| BenchError::platform(PLATFORM, "runc state gave no pid"))?;
        Ok((id, pid, to_main_us))
    }

    /// The pid of a running container's init, from `runc state`.
    fn state(&self, id: &str) -> Option<u32> {
        let state = self
            .command()
            .arg("state")
            .arg(id)
            .stderr(Stdio::null())
            .output()
            .ok()?;
        let value = serde_json::from_slice::<serde_json::Value>(&state.stdout).ok()?;
        if value.get("status")?.as_str()? != "running" {
            return None;
        }
        u32::try_from(value.get("pid")?.as_u64()?).ok()
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
        let config = config_json(Path::new("rootfs"), &["/app".to_owned()], &[], None);
        assert_eq!(config["process"]["args"][0], "/app");
        assert_eq!(config["process"]["terminal"], false);
        assert_eq!(config["root"]["readonly"], true);
        assert_eq!(config["linux"]["namespaces"].as_array().unwrap().len(), 5);
        assert_eq!(config["linux"]["namespaces"][1]["type"], "network");
        assert!(config["linux"]["namespaces"][1].get("path").is_none());
    }

    #[test]
    fn a_bundle_can_join_an_existing_network_namespace() {
        let config = config_json(
            Path::new("rootfs"),
            &["/app".to_owned()],
            &[],
            Some(Path::new("/run/netns/x")),
        );
        assert_eq!(
            config["linux"]["namespaces"][1],
            serde_json::json!({"type": "network", "path": "/run/netns/x"})
        );
    }

    #[test]
    fn a_debian_programs_bundle_shares_its_root_read_only_with_scratch_space() {
        let dir = std::env::temp_dir().join(format!("lightvm-bench-bundle-{}", std::process::id()));
        let root = dir.join("root");
        let _ = std::fs::remove_dir_all(&dir);
        let args = vec![
            "/usr/sbin/nginx".to_owned(),
            "-p".to_owned(),
            "/".to_owned(),
        ];
        write_bundle(
            &dir.join("bundle"),
            &BundleRoot::Tree {
                root: &root,
                args: args.clone(),
            },
            None,
        )
        .unwrap();
        let config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("bundle/config.json")).unwrap())
                .unwrap();
        assert_eq!(config["root"]["path"], root.to_str().unwrap());
        assert_eq!(config["root"]["readonly"], true);
        assert_eq!(config["process"]["args"], serde_json::json!(args));
        let tmpfs: Vec<&str> = config["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["type"] == "tmpfs" && m["source"] == "tmpfs")
            .filter_map(|m| m["destination"].as_str())
            .collect();
        assert_eq!(tmpfs, ["/dev", "/run", "/tmp"]);
        assert!(root.join("run").is_dir() && root.join("proc").is_dir());
        assert!(!dir.join("bundle/rootfs").exists(), "no copy of the root");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
