//! The daemon's state directory: one directory per VM, so that no central store
//! sits on the creation path (LightVM's "noxs") and a restarted daemon can find every
//! VM it left running.
//!
//! ```text
//! <state>/daemon.lock             held (flock) by the running daemon
//! <state>/vms/<id>/vm.json        what was asked for, and which process runs it
//! <state>/vms/<id>/console.log    the guest's console
//! <state>/vms/<id>/result.json    how it ended (written by the shell, or the daemon)
//! <state>/vms/.creating-<id>/     a VM's directory while its record is written
//! ```
//!
//! Whatever is found here after a restart is read as untrusted input: only
//! directories named by an id of the daemon's own form ([`is_vm_id`]) whose record
//! names that same id are taken, and records are read with a size bound and never
//! through a symbolic link, so a planted `vm.json` can neither make the daemon write
//! outside its directory nor read without end.

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
    /// The image it runs (for a Linux program, the personality's).
    pub image: PathBuf,
    /// The Linux program it runs, if it runs one. Records written before the
    /// daemon ran Linux programs lack it: they are unikernels'.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linux: Option<LinuxProgramRecord>,
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
    /// The uid of the client that created it: a client other than root may stop,
    /// remove and read the console of its own VMs only. Records written before
    /// clients were told apart lack it; those VMs are root's.
    #[serde(default)]
    pub owner_uid: u32,
    /// The jail its shell runs in, with the limits the daemon set at create;
    /// its cgroup is removed once the VM has ended (also by a restarted daemon).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jail: Option<lightvm_vmm::jail::JailReport>,
}

/// The Linux program a VM runs, as its record keeps it and the API shows it. Its
/// environment is not kept: every client may inspect every VM, and an
/// environment is where secrets are passed (Linux too shows a process's command
/// line to all, its environment to its owner alone).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinuxProgramRecord {
    /// The root filesystem it was packed from.
    pub rootfs: PathBuf,
    /// The program's path inside it.
    pub program: String,
    /// Its arguments after `argv[0]`.
    pub args: Vec<String>,
    /// Its working directory.
    pub cwd: String,
    /// Whether its system calls are traced on the console.
    pub trace_syscalls: bool,
    /// The size of the archive the root filesystem was packed into.
    pub archive_bytes: u64,
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
    /// Its cgroup's OOM killer killed it: it used more memory than its
    /// `memory_limit`.
    OutOfMemory,
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

    /// A VM's directory. `id` must be one the daemon made or validated
    /// ([`is_vm_id`]): it becomes a path component.
    pub fn vm_dir(&self, id: &str) -> PathBuf {
        self.root.join("vms").join(id)
    }

    fn staging_dir(&self, id: &str) -> PathBuf {
        self.root.join("vms").join(format!("{STAGING_PREFIX}{id}"))
    }

    /// Makes a VM's directory: under a staging name it writes the record and opens
    /// the console log and exit record, then gives the directory its final name in
    /// one rename. A daemon killed half-way leaves a staging directory, which the
    /// next [`StateDir::scan`] removes, never a VM directory without a record; the
    /// opened files stay valid across the rename. On failure (a full disk) nothing
    /// is left behind.
    pub fn create_vm(&self, record: &VmRecord) -> std::io::Result<VmFiles> {
        if !is_vm_id(&record.id) {
            return Err(std::io::Error::other(format!(
                "{:?} is not a VM id",
                record.id
            )));
        }
        let staging = self.staging_dir(&record.id);
        let made = std::fs::create_dir(&staging)
            .and_then(|()| write_json(&staging.join(VM_RECORD), record))
            .and_then(|()| open_vm_files(&staging))
            .and_then(|files| {
                std::fs::rename(&staging, self.vm_dir(&record.id))?;
                Ok(files)
            });
        if made.is_err() {
            let _ = std::fs::remove_dir_all(&staging);
        }
        made
    }

    /// Every VM directory with a valid record, and its end if it has one; what was
    /// refused, one line each; and staging directories left by a killed daemon,
    /// which it removes (the daemon's lock is held: no create is under way).
    pub fn scan(&self) -> std::io::Result<Scan> {
        let mut scan = Scan::default();
        for entry in std::fs::read_dir(self.root.join("vms"))? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                scan.refused.push(format!(
                    "{:?}: not a VM id",
                    entry.file_name().to_string_lossy()
                ));
                continue;
            };
            if let Some(id) = name.strip_prefix(STAGING_PREFIX) {
                if is_vm_id(id) && std::fs::remove_dir_all(entry.path()).is_ok() {
                    scan.staging_removed += 1;
                    continue;
                }
            }
            match self.read_vm(name, &entry.path()) {
                Ok(found) => scan.found.push(found),
                Err(why) => scan.refused.push(format!("{name}: {why}")),
            }
        }
        Ok(scan)
    }

    /// Reads one VM directory found by [`StateDir::scan`], or says why it is not
    /// taken.
    fn read_vm(&self, name: &str, dir: &Path) -> Result<(VmRecord, Option<ExitRecord>), String> {
        if !is_vm_id(name) {
            return Err("not a VM id (16 lowercase hex digits)".to_owned());
        }
        let metadata = std::fs::symlink_metadata(dir).map_err(|e| e.to_string())?;
        if !metadata.is_dir() {
            return Err("not a directory".to_owned());
        }
        let record =
            read_json::<VmRecord>(&dir.join(VM_RECORD)).map_err(|e| format!("{VM_RECORD}: {e}"))?;
        if record.id != name {
            return Err(format!(
                "{VM_RECORD} names the id {:?}, not its own directory",
                record.id
            ));
        }
        // An exit record is empty until the shell writes it: absent or unreadable,
        // the VM has not ended as far as the record says.
        let exit = read_json::<ExitRecord>(&dir.join(EXIT_RECORD)).ok();
        Ok((record, exit))
    }
}

/// What [`StateDir::scan`] found.
#[derive(Debug, Default)]
pub struct Scan {
    /// The VMs with valid records, and their ends if they have ended.
    pub found: Vec<(VmRecord, Option<ExitRecord>)>,
    /// Entries that were not taken, one line each (the entry, then why).
    pub refused: Vec<String>,
    /// Staging directories of creates a killed daemon left unfinished, removed.
    pub staging_removed: usize,
}

/// Whether `id` has the form of the ids this daemon gives: 16 lowercase hex
/// digits. Nothing else may name a VM directory (no `/`, no `..`, no dot file).
pub fn is_vm_id(id: &str) -> bool {
    id.len() == 16 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A VM directory's name while it is being made.
const STAGING_PREFIX: &str = ".creating-";

/// Largest record file the daemon reads: a record is a few hundred bytes, so a
/// larger file is not one the daemon or a shell wrote.
pub const RECORD_MAX: u64 = 64 << 10;

/// Reads a JSON record: a regular file (no symbolic link, FIFO or device is
/// followed or opened for reading), at most [`RECORD_MAX`] bytes.
pub fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> std::io::Result<T> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let file = File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    let metadata = file.metadata()?;
    if !metadata.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    if metadata.len() > RECORD_MAX {
        return Err(std::io::Error::other(format!(
            "{} bytes, larger than a record can be ({RECORD_MAX})",
            metadata.len()
        )));
    }
    let mut bytes = Vec::new();
    file.take(RECORD_MAX + 1).read_to_end(&mut bytes)?;
    serde_json::from_slice(&bytes).map_err(std::io::Error::other)
}

/// Writes a JSON file atomically (temporary file, then rename), so a reader — or a
/// daemon restarted after a crash — never sees half of it. A failed write (a full
/// disk) removes the temporary file and leaves any earlier version in place.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> std::io::Result<()> {
    let temporary = path.with_extension("tmp");
    let written = (|| {
        let mut file = File::create(&temporary)?;
        file.write_all(&serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?)?;
        drop(file);
        std::fs::rename(&temporary, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    written
}

/// The files of a VM's directory its shell writes, opened by the daemon.
pub struct VmFiles {
    /// The console log, opened to append.
    pub console: File,
    /// The exit record, created empty: the shell writes it when the guest ends.
    pub result: File,
}

/// Creates a new VM directory's console log and empty exit record, for its shell.
fn open_vm_files(vm_dir: &Path) -> std::io::Result<VmFiles> {
    let console = File::options()
        .create_new(true)
        .append(true)
        .open(vm_dir.join(CONSOLE_LOG))?;
    let result = File::options()
        .create_new(true)
        .write(true)
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

    const A: &str = "000000000000000a";
    const B: &str = "000000000000000b";

    fn record(id: &str) -> VmRecord {
        VmRecord {
            id: id.into(),
            image: "/img".into(),
            linux: None,
            mem_size: 2 << 20,
            cmdline: String::new(),
            net: None,
            pid: 1,
            pid_start_time: 2,
            created_unix_ms: 3,
            owner_uid: 0,
            jail: None,
        }
    }

    fn plant(state: &StateDir, dir: &str, record: &VmRecord) {
        let dir = state.root().join("vms").join(dir);
        std::fs::create_dir_all(&dir).unwrap();
        write_json(&dir.join(VM_RECORD), record).unwrap();
    }

    #[test]
    fn records_round_trip_and_scan_finds_them() {
        let state = temp_state();
        for id in [A, B] {
            state.create_vm(&record(id)).unwrap();
        }
        record_exit_once(&state.vm_dir(B), &ExitRecord::new(Outcome::Stopped, "x")).unwrap();
        let mut scan = state.scan().unwrap();
        scan.found.sort_by(|a, b| a.0.id.cmp(&b.0.id));
        assert_eq!(scan.found.len(), 2);
        assert_eq!(
            scan.found[0],
            (record(A), None),
            "an empty result is no end"
        );
        assert_eq!(
            scan.found[1].1.as_ref().map(|e| e.outcome),
            Some(Outcome::Stopped)
        );
        assert!(scan.refused.is_empty(), "{:?}", scan.refused);
        std::fs::remove_dir_all(state.root()).unwrap();
    }

    #[test]
    fn a_corrupt_record_among_good_ones_is_refused_alone() {
        let state = temp_state();
        state.create_vm(&record(A)).unwrap();
        let junk = state.vm_dir("00000000000000cc");
        std::fs::create_dir_all(&junk).unwrap();
        std::fs::write(junk.join(VM_RECORD), "{").unwrap();
        state.create_vm(&record(B)).unwrap();
        let scan = state.scan().unwrap();
        assert_eq!(scan.found.len(), 2, "the good ones are taken");
        assert_eq!(scan.refused.len(), 1, "{:?}", scan.refused);
        assert!(
            scan.refused[0].starts_with("00000000000000cc: vm.json: "),
            "{:?}",
            scan.refused
        );
        std::fs::remove_dir_all(state.root()).unwrap();
    }

    #[test]
    fn records_that_name_another_place_are_refused() {
        let state = temp_state();
        // An id that climbs out of the state directory, in a directory of a good name.
        plant(&state, A, &record("../../escape"));
        // A directory whose name is not an id, with a record of a good id.
        plant(&state, "not-an-id", &record(B));
        plant(&state, "..data", &record(B));
        // A directory named by an id that its record does not give.
        plant(&state, "00000000000000dd", &record(B));
        // A symbolic link in place of a VM directory.
        let elsewhere = state.root().join("elsewhere");
        std::fs::create_dir_all(&elsewhere).unwrap();
        write_json(&elsewhere.join(VM_RECORD), &record("00000000000000ee")).unwrap();
        std::os::unix::fs::symlink(&elsewhere, state.vm_dir("00000000000000ee")).unwrap();
        let scan = state.scan().unwrap();
        assert!(scan.found.is_empty(), "{:?}", scan.found);
        let mut refused = scan.refused.clone();
        refused.sort();
        assert_eq!(refused.len(), 5, "{refused:?}");
        for (line, needle) in refused.iter().zip([
            "..data: not a VM id",
            "000000000000000a: vm.json names the id \"../../escape\"",
            "00000000000000dd: vm.json names the id \"000000000000000b\"",
            "00000000000000ee: not a directory",
            "not-an-id: not a VM id",
        ]) {
            assert!(
                line.starts_with(needle),
                "{line:?} does not start {needle:?}"
            );
        }
        std::fs::remove_dir_all(state.root()).unwrap();
    }

    #[test]
    fn records_are_read_bounded_and_never_through_links_or_devices() {
        let state = temp_state();
        let dir = state.vm_dir(A);
        std::fs::create_dir_all(&dir).unwrap();
        std::os::unix::fs::symlink("/dev/zero", dir.join(VM_RECORD)).unwrap();
        let error = read_json::<VmRecord>(&dir.join(VM_RECORD)).unwrap_err();
        assert_eq!(error.raw_os_error(), Some(libc::ELOOP), "{error}");
        std::fs::remove_file(dir.join(VM_RECORD)).unwrap();
        let big = File::create(dir.join(VM_RECORD)).unwrap();
        big.set_len(RECORD_MAX + 1).unwrap();
        let error = read_json::<VmRecord>(&dir.join(VM_RECORD)).unwrap_err();
        assert!(
            error.to_string().contains("larger than a record"),
            "{error}"
        );
        let fifo = std::ffi::CString::new(dir.join("fifo").to_str().unwrap()).unwrap();
        // SAFETY: mkfifo reads a NUL-terminated path that outlives the call.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        let error = read_json::<VmRecord>(&dir.join("fifo")).unwrap_err();
        assert!(error.to_string().contains("not a regular file"), "{error}");
        std::fs::remove_dir_all(state.root()).unwrap();
    }

    #[test]
    fn a_create_cut_short_leaves_only_a_staging_directory_that_scan_removes() {
        let state = temp_state();
        std::fs::create_dir_all(state.staging_dir(A)).unwrap();
        state.create_vm(&record(B)).unwrap();
        let scan = state.scan().unwrap();
        assert_eq!(scan.staging_removed, 1);
        assert_eq!(scan.found.len(), 1);
        assert!(!state.staging_dir(A).exists());
        // A create whose directory cannot be made leaves nothing.
        assert!(state.create_vm(&record(B)).is_err(), "the directory exists");
        assert!(!state.staging_dir(B).exists());
        assert!(state.create_vm(&record("../x")).is_err());
        std::fs::remove_dir_all(state.root()).unwrap();
    }

    #[test]
    fn only_the_daemons_own_ids_are_ids() {
        assert!(is_vm_id("0123456789abcdef"));
        for bad in [
            "",
            "0123456789ABCDEF",
            "0123456789abcde",
            "0123456789abcdef0",
            "../../../../etc/",
            "0123456789abcde/",
            ".creating-012345",
        ] {
            assert!(!is_vm_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn a_record_from_before_networks_and_owners_still_reads() {
        let old = r#"{"id": "000000000000000a", "image": "/img", "mem_size": 2097152, "cmdline": "",
                      "pid": 1, "pid_start_time": 2, "created_unix_ms": 3}"#;
        let record: VmRecord = serde_json::from_str(old).unwrap();
        assert_eq!(record, self::record(A));
        let mut networked = self::record(B);
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
        let dir = state.vm_dir(A);
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
