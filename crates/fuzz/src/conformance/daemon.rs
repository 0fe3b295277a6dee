//! A real `lightvm daemon` for a campaign: its own socket and state directory
//! under a scratch directory, a small pool, and on drop every shell it started
//! killed and the directory removed — on failure too.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::http::{self, RawRequest};

/// Why the daemon, or what it needs, could not be made ready.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// An I/O error on `what`.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// `lightvm build` failed.
    #[error("lightvm build {what} failed:\n{stderr}")]
    Build {
        /// What was built.
        what: String,
        /// Its error output.
        stderr: String,
    },
    /// The daemon did not answer on its socket in time.
    #[error("the daemon did not come up within 60 s; its log:\n{log}")]
    NotUp {
        /// Its standard error.
        log: String,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> DaemonError {
    let what = what.into();
    move |source| DaemonError::Io { what, source }
}

/// The repository this crate was built from (for the guests and the personality).
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Builds `source` (a guest directory or the personality crate) with `lightvm
/// build` into `out`.
pub fn build(lightvm: &Path, source: &Path, out: &Path) -> Result<(), DaemonError> {
    let output = Command::new(lightvm)
        .arg("build")
        .arg(source)
        .arg("--out")
        .arg(out)
        .output()
        .map_err(io(format!("running {}", lightvm.display())))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(DaemonError::Build {
            what: source.display().to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        })
    }
}

/// A running daemon.
pub struct Daemon {
    child: Child,
    dir: PathBuf,
}

impl Daemon {
    /// Starts `lightvm daemon` with its socket and state under `dir` (made
    /// afresh), `args` after the socket and state flags, and waits until it
    /// answers `GET /pool`.
    pub fn start(lightvm: &Path, dir: &Path, args: &[String]) -> Result<Self, DaemonError> {
        let _ = std::fs::remove_dir_all(dir.join("state"));
        std::fs::create_dir_all(dir).map_err(io(format!("making {}", dir.display())))?;
        let log =
            std::fs::File::create(dir.join("daemon.err")).map_err(io("making the daemon's log"))?;
        let child = Command::new(lightvm)
            .arg("daemon")
            .arg("--socket")
            .arg(dir.join("api.sock"))
            .arg("--state-dir")
            .arg(dir.join("state"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(io(format!("starting {} daemon", lightvm.display())))?;
        let daemon = Self {
            child,
            dir: dir.to_owned(),
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(io("starting a tokio runtime"))?;
        let probe = RawRequest {
            method: "GET".into(),
            target: "/pool".into(),
            content_type: None,
            body: None,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let answer =
                runtime.block_on(http::send(&daemon.socket(), &probe, Duration::from_secs(5)));
            if answer.is_ok_and(|a| a.status == 200) {
                return Ok(daemon);
            }
            if Instant::now() > deadline {
                return Err(DaemonError::NotUp { log: daemon.log() });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Its API socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("api.sock")
    }

    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What it wrote to standard error so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("daemon.err")).unwrap_or_default()
    }

    /// Whether the daemon process still runs.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // Shells outlive a killed daemon by design (the next one adopts them):
        // kill the pooled ones (its children) and the VMs recorded in its state.
        let mut pids = children_of(self.child.id());
        pids.extend(recorded_pids(&self.dir.join("state")));
        let _ = self.child.kill();
        let _ = self.child.wait();
        for pid in pids {
            if is_shell(pid) {
                // SAFETY: kill(2) on a pid just seen running a `lightvm shell`.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            }
        }
        let _ = std::fs::remove_dir_all(self.dir.join("state"));
        let _ = std::fs::remove_file(self.socket());
    }
}

/// Whether `pid` runs a `lightvm shell` (a VM's, or a pooled one) and has not
/// been reaped. A zombie counts: its parent never collected it.
pub fn is_shell(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
        let mut args = cmdline.split(|&b| b == 0);
        args.next().is_some_and(|a| a.ends_with(b"lightvm")) && args.next() == Some(&b"shell"[..])
    }) || is_zombie(pid)
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit(')')
            .next()
            .and_then(|rest| rest.split_whitespace().next())
            == Some("Z")
    })
}

fn children_of(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                stat.rsplit(')')
                    .next()
                    .and_then(|rest| rest.split_whitespace().nth(1))
                    .and_then(|ppid| ppid.parse::<u32>().ok())
                    == Some(parent)
            })
        })
        .collect()
}

fn recorded_pids(state: &Path) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir(state.join("vms")) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("vm.json")).ok())
        .filter_map(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
        .filter_map(|v| v["pid"].as_u64().and_then(|p| u32::try_from(p).ok()))
        .collect()
}
