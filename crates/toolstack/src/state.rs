//! The daemon's state directory: one directory per VM, so that no central store
//! sits on the creation path (LightVM's "noxs") and a restarted daemon can find every
//! VM it left running.
//!
//! ```text
//! <state>/daemon.lock          held (flock) by the running daemon
//! <state>/vms/<id>/vm.json     what was asked for, and which process runs it
//! <state>/vms/<id>/console.log the guest's console
//! <state>/vms/<id>/result.json how it ended (written by the shell, or the daemon)
//! ```

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use lightvm_vmm::{RunReport, VmExit};
use serde::{Deserialize, Serialize};

/// A VM as created: written once, before its guest starts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmRecord {
    /// The VM's id.
    pub id: String,
    /// The image it runs.
    pub image: PathBuf,
    /// Guest memory in bytes.
    pub mem_size: u64,
    /// The guest command line.
    pub cmdline: String,
    /// Its network interface, `tap=NAME,mac=MAC`, if it has one. Records written
    /// before VMs had networks lack the field; they read as `None`, so a daemon
    /// still adopts those VMs.
    #[serde(default)]
    pub net: Option<String>,
    /// The shell process running it.
    pub pid: u32,
    /// That process's start time (clock ticks since boot, /proc/PID/stat field 22):
    /// with the pid it identifies the process even if the pid is reused.
    pub pid_start_time: u64,
    /// When it was created (ms since the UNIX epoch).
    pub created_unix_ms: u64,
}

/// How a VM ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The guest called exit.
    Exited,
    /// The guest faulted.
    Crashed,
    /// The guest broke the hypercall ABI.
    AbiViolation,
    /// The guest outran its timeout.
    TimedOut,
    /// Stopped through the API.
    Stopped,
    /// Its process was killed by something else.
    Killed,
    /// Its process was gone when a restarted daemon looked for it.
    Lost,
    /// The guest could not be started.
    Failed,
}

/// The end of a VM, as stored in `result.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExitRecord {
    /// What kind of end.
    pub outcome: Outcome,
    /// The guest's exit status, when it exited.
    pub status: Option<u32>,
    /// One line for the user.
    pub detail: String,
    /// When it ended (ms since the UNIX epoch).
    pub ended_unix_ms: u64,
    /// Console bytes delivered.
    pub console_bytes: u64,
    /// Console bytes dropped by the rate limit.
    pub console_dropped: u64,
}

impl ExitRecord {
    /// An end that the VMM did not report (stopped, killed, lost, failed).
    pub fn new(outcome: Outcome, detail: impl Into<String>) -> Self {
        Self {
            outcome,
            status: None,
            detail: detail.into(),
            ended_unix_ms: now_unix_ms(),
            console_bytes: 0,
            console_dropped: 0,
        }
    }

    /// The record of a run the VMM finished.
    pub fn from_report(report: &RunReport) -> Self {
        let (outcome, status) = match &report.exit {
            VmExit::Exited { status, .. } => (Outcome::Exited, Some(*status)),
            VmExit::Crashed(_) => (Outcome::Crashed, None),
            VmExit::AbiViolation { .. } => (Outcome::AbiViolation, None),
            VmExit::TimedOut { .. } => (Outcome::TimedOut, None),
        };
        Self {
            outcome,
            status,
            detail: report.exit.to_string(),
            ended_unix_ms: now_unix_ms(),
            console_bytes: report.console_bytes,
            console_dropped: report.console_dropped,
        }
    }
}

/// Milliseconds since the UNIX epoch.
pub fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

/// File names inside a VM's directory.
pub const VM_RECORD: &str = "vm.json";
/// See [`VM_RECORD`].
pub const EXIT_RECORD: &str = "result.json";
/// See [`VM_RECORD`].
pub const CONSOLE_LOG: &str = "console.log";

impl StateDir {
    /// Opens (creating if needed) a state directory.
    pub fn open(root: impl Into<PathBuf>) -> std::io::Result<Self> {
        let root = root.into();
        std::fs::create_dir_all(root.join("vms"))?;
        Ok(Self { root })
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Takes the daemon lock: one daemon per state directory. The lock lives as long
    /// as the returned file.
    pub fn lock(&self) -> std::io::Result<File> {
        use std::os::fd::AsRawFd;
        let file = File::create(self.root.join("daemon.lock"))?;
        // SAFETY: flock on a descriptor we own; no memory is involved.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(file)
    }

    /// A VM's directory.
    pub fn vm_dir(&self, id: &str) -> PathBuf {
        self.root.join("vms").join(id)
    }

    /// Every VM directory with a readable record, and its end if it has one.
    pub fn scan(&self) -> std::io::Result<Vec<(VmRecord, Option<ExitRecord>)>> {
        let mut found = Vec::new();
        for entry in std::fs::read_dir(self.root.join("vms"))? {
            let dir = entry?.path();
            let Ok(record) = read_json::<VmRecord>(&dir.join(VM_RECORD)) else {
                continue;
            };
            let exit = read_json::<ExitRecord>(&dir.join(EXIT_RECORD)).ok();
            found.push((record, exit));
        }
        Ok(found)
    }
}

/// Reads a JSON file.
pub fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> std::io::Result<T> {
    let bytes = std::fs::read(path)?;
    serde_json::from_slice(&bytes).map_err(std::io::Error::other)
}

/// Writes a JSON file atomically (temporary file, then rename), so a reader — or a
/// daemon restarted after a crash — never sees half of it.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> std::io::Result<()> {
    let temporary = path.with_extension("tmp");
    let mut file = File::create(&temporary)?;
    file.write_all(&serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?)?;
    drop(file);
    std::fs::rename(&temporary, path)
}

/// The files of a VM's directory its shell writes, opened by the daemon.
pub struct VmFiles {
    /// The console log, opened to append.
    pub console: File,
    /// The exit record, created empty: the shell writes it when the guest ends.
    pub result: File,
}

/// Opens (creating) a VM's console log and empty exit record, for its shell.
pub fn open_vm_files(vm_dir: &Path) -> std::io::Result<VmFiles> {
    let console = File::options()
        .create(true)
        .append(true)
        .open(vm_dir.join(CONSOLE_LOG))?;
    let result = File::options()
        .create(true)
        .write(true)
        .truncate(true)
        .open(vm_dir.join(EXIT_RECORD))?;
    Ok(VmFiles { console, result })
}

/// Writes the exit record unless one is already there (the shell's own report wins
/// over the daemon's guess).
pub fn record_exit_once(vm_dir: &Path, exit: &ExitRecord) -> std::io::Result<ExitRecord> {
    let path = vm_dir.join(EXIT_RECORD);
    if let Ok(existing) = read_json::<ExitRecord>(&path) {
        return Ok(existing);
    }
    write_json(&path, exit)?;
    Ok(exit.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_state() -> StateDir {
        let dir = std::env::temp_dir().join(format!(
            "lightvm-state-test-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        StateDir::open(dir).unwrap()
    }

    fn record(id: &str) -> VmRecord {
        VmRecord {
            id: id.into(),
            image: "/img".into(),
            mem_size: 2 << 20,
            cmdline: String::new(),
            net: None,
            pid: 1,
            pid_start_time: 2,
            created_unix_ms: 3,
        }
    }

    #[test]
    fn records_round_trip_and_scan_finds_them() {
        let state = temp_state();
        for id in ["a", "b"] {
            let dir = state.vm_dir(id);
            std::fs::create_dir_all(&dir).unwrap();
            write_json(&dir.join(VM_RECORD), &record(id)).unwrap();
        }
        record_exit_once(&state.vm_dir("b"), &ExitRecord::new(Outcome::Stopped, "x")).unwrap();
        std::fs::create_dir_all(state.vm_dir("junk")).unwrap();
        std::fs::write(state.vm_dir("junk").join(VM_RECORD), "{").unwrap();
        let mut found = state.scan().unwrap();
        found.sort_by(|a, b| a.0.id.cmp(&b.0.id));
        assert_eq!(found.len(), 2, "the unreadable record is skipped");
        assert_eq!(found[0], (record("a"), None));
        assert_eq!(
            found[1].1.as_ref().map(|e| e.outcome),
            Some(Outcome::Stopped)
        );
        std::fs::remove_dir_all(state.root()).unwrap();
    }

    #[test]
    fn a_record_from_before_networks_still_reads() {
        let old = r#"{"id": "a", "image": "/img", "mem_size": 2097152, "cmdline": "",
                      "pid": 1, "pid_start_time": 2, "created_unix_ms": 3}"#;
        let record: VmRecord = serde_json::from_str(old).unwrap();
        assert_eq!(record, self::record("a"));
        let mut networked = self::record("b");
        networked.net = Some("tap=tap0,mac=06:00:ac:10:00:02".into());
        let text = serde_json::to_string(&networked).unwrap();
        assert!(
            text.contains(r#""net":"tap=tap0,mac=06:00:ac:10:00:02""#),
            "{text}"
        );
        assert_eq!(serde_json::from_str::<VmRecord>(&text).unwrap(), networked);
    }

    #[test]
    fn the_first_exit_record_wins() {
        let state = temp_state();
        let dir = state.vm_dir("v");
        std::fs::create_dir_all(&dir).unwrap();
        record_exit_once(&dir, &ExitRecord::new(Outcome::Exited, "first")).unwrap();
        let kept = record_exit_once(&dir, &ExitRecord::new(Outcome::Killed, "second")).unwrap();
        assert_eq!(kept.detail, "first");
        std::fs::remove_dir_all(state.root()).unwrap();
    }

    #[test]
    fn a_second_lock_is_refused() {
        let state = temp_state();
        let _held = state.lock().unwrap();
        assert!(state.lock().is_err());
        std::fs::remove_dir_all(state.root()).unwrap();
    }
}
