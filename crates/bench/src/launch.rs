//! Starting instances and timing them to their marker: the first byte the workload
//! writes to its stdout, which it does first thing in `main` (a process, a
//! container and `lightvm run` alike), so "time to main" is measured the same way
//! on every platform that has a stdout. A server that writes nothing when it is
//! ready (a Debian program) is ready once a client's connection is accepted.

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::BenchError;
use crate::netns::Netns;

/// How long a workload may take to reach its marker before the run gives up.
pub(crate) const MARKER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a server may take to accept its first connection: a dynamically
/// linked program on the Linux personality loads its libraries first, each
/// first touch of a page a fault that a nested KVM handles slowly.
pub(crate) const ACCEPT_TIMEOUT: Duration = Duration::from_secs(90);

/// How the bench knows that an instance has started.
#[derive(Clone, Copy)]
pub(crate) enum Ready<'a> {
    /// Its first byte on stdout.
    FirstOutput,
    /// A connection from the clients' namespace to `address` is accepted.
    Accepting {
        clients: &'a Netns,
        address: SocketAddr,
    },
}

/// A finished run of a workload.
#[derive(Debug, Clone)]
pub(crate) struct RunOutcome {
    /// Start → first stdout byte (µs).
    pub to_main_us: f64,
    /// Start → exit (µs).
    pub to_exit_us: f64,
    /// Everything it printed.
    pub stdout: String,
}

/// Microseconds since `start`.
pub(crate) fn micros_since(start: Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1e6
}

/// Waits up to `timeout` for `stdout` to become readable, then reads one byte.
fn read_first_byte(stdout: &mut ChildStdout, timeout: Duration) -> std::io::Result<u8> {
    let mut poll = libc::pollfd {
        fd: stdout.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let millis = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: one valid pollfd on a descriptor this ChildStdout owns, for the call.
    let ready = unsafe { libc::poll(&mut poll, 1, millis) };
    if ready < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if ready == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no output within {} s", timeout.as_secs()),
        ));
    }
    let mut first = [0u8; 1];
    stdout.read_exact(&mut first)?;
    Ok(first[0])
}

/// Spawns `command` with its stdout on a pipe and waits for the first byte on it;
/// returns the child (stdout still open), µs from spawn to that byte, and the byte.
pub(crate) fn spawn_to_marker(
    mut command: Command,
    platform: &'static str,
) -> Result<(Child, f64, u8), BenchError> {
    command.stdin(Stdio::null()).stdout(Stdio::piped());
    let start = Instant::now();
    let mut child = command
        .spawn()
        .map_err(|e| BenchError::platform(platform, format!("spawn: {e}")))?;
    let marker = match child.stdout.as_mut() {
        Some(stdout) => read_first_byte(stdout, MARKER_TIMEOUT),
        None => Err(std::io::Error::other("no stdout pipe")),
    };
    let to_main_us = micros_since(start);
    match marker {
        Ok(byte) => Ok((child, to_main_us, byte)),
        Err(error) => {
            let _ = child.kill();
            let status = child.wait().map_or(String::new(), |s| format!(" ({s})"));
            Err(BenchError::platform(
                platform,
                format!("waiting for the workload's first output: {error}{status}"),
            ))
        }
    }
}

/// Waits until a connection from `clients` to `address` is accepted (then
/// closes it), asking `alive` between tries whether the server still runs.
pub(crate) fn wait_accepting(
    clients: &Netns,
    address: SocketAddr,
    alive: &mut dyn FnMut() -> Result<(), String>,
) -> Result<(), String> {
    let deadline = Instant::now() + ACCEPT_TIMEOUT;
    loop {
        let connected = clients
            .run_in(|| TcpStream::connect_timeout(&address, Duration::from_millis(500)))
            .map_err(|e| e.to_string())?;
        if connected.is_ok() {
            return Ok(());
        }
        alive()?;
        if Instant::now() >= deadline {
            return Err(format!(
                "nothing accepted a connection to {address} within {} s",
                ACCEPT_TIMEOUT.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Spawns `command` with its stdout and stderr to `log` and waits until a
/// connection to `address` from `clients` is accepted; returns the child and
/// the µs from spawn to then.
pub(crate) fn spawn_to_accepting(
    mut command: Command,
    platform: &'static str,
    log: &Path,
    clients: &Netns,
    address: SocketAddr,
) -> Result<(Child, f64), BenchError> {
    let output = std::fs::File::create(log).map_err(BenchError::io(log))?;
    let output_too = output.try_clone().map_err(BenchError::io(log))?;
    command
        .stdin(Stdio::null())
        .stdout(output)
        .stderr(output_too);
    let start = Instant::now();
    let mut child = command
        .spawn()
        .map_err(|e| BenchError::platform(platform, format!("spawn: {e}")))?;
    let accepted = wait_accepting(clients, address, &mut || match child.try_wait() {
        Ok(None) => Ok(()),
        Ok(Some(status)) => Err(format!("it exited with {status} before listening")),
        Err(e) => Err(format!("wait: {e}")),
    });
    let to_ready_us = micros_since(start);
    match accepted {
        Ok(()) => Ok((child, to_ready_us)),
        Err(error) => {
            kill(child);
            let output = std::fs::read_to_string(log).unwrap_or_default();
            let tail: Vec<&str> = output.lines().rev().take(5).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            Err(BenchError::platform(
                platform,
                format!("{error}; its last output: {}", tail.join(" | ")),
            ))
        }
    }
}

/// Runs `command` to its end, timed to its first output byte and to its exit; a
/// non-zero exit is an error that quotes `stderr_log` (where its stderr went).
pub(crate) fn run_to_exit(
    command: Command,
    platform: &'static str,
    stderr_log: Option<&std::path::Path>,
) -> Result<RunOutcome, BenchError> {
    let start = Instant::now();
    let (mut child, to_main_us, first) = spawn_to_marker(command, platform)?;
    let mut bytes = vec![first];
    if let Some(mut pipe) = child.stdout.take() {
        pipe.read_to_end(&mut bytes)
            .map_err(|e| BenchError::platform(platform, format!("reading its output: {e}")))?;
    }
    let stdout = String::from_utf8_lossy(&bytes).into_owned();
    let status = child
        .wait()
        .map_err(|e| BenchError::platform(platform, format!("wait: {e}")))?;
    let to_exit_us = micros_since(start);
    if !status.success() {
        let log = stderr_log
            .and_then(|path| std::fs::read_to_string(path).ok())
            .map(|text| format!(": {}", text.trim()))
            .unwrap_or_default();
        return Err(BenchError::platform(
            platform,
            format!("the workload exited with {status}{log}"),
        ));
    }
    Ok(RunOutcome {
        to_main_us,
        to_exit_us,
        stdout,
    })
}

/// Kills and reaps a child this run started.
pub(crate) fn kill(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Resident and proportional set size of a process (KiB), from
/// `/proc/PID/smaps_rollup`: PSS splits shared pages (the static binary, the
/// lightvm executable, an image mapped by many VMs) among their users.
pub(crate) fn rss_pss_kib(pid: u32) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let field = |name: &str| -> Option<u64> {
        text.lines()
            .find(|l| l.starts_with(name))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    Some((field("Rss:")?, field("Pss:")?))
}

/// Where host memory in use is read from.
///
/// The machine's MemTotal − MemAvailable moves with everything else the machine
/// does (on a shared build machine, compilers taking and freeing gigabytes), so
/// where the run sits in a memory cgroup of its own, its charge is read instead:
/// every instance the run starts is charged there (children inherit the cgroup,
/// runc nests its containers' cgroups under the caller's, and the kernel memory
/// KVM allocates for a VM is charged to its process's cgroup), and nothing else
/// the machine does is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HostMemory {
    /// The usage file of the run's memory cgroup (v1 `memory.usage_in_bytes`,
    /// v2 `memory.current`).
    Cgroup(PathBuf),
    /// MemTotal − MemAvailable: the run is in the root cgroup, or its cgroup's
    /// usage cannot be read.
    Machine,
}

impl HostMemory {
    /// The run's memory cgroup where it has one and its usage can be read.
    pub(crate) fn detect() -> Self {
        let cgroups = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        cgroup_usage_file(&cgroups)
            .filter(|file| read_u64(file).is_some())
            .map_or(HostMemory::Machine, HostMemory::Cgroup)
    }

    /// Memory in use now (KiB).
    pub(crate) fn used_kib(&self) -> Option<u64> {
        match self {
            HostMemory::Cgroup(file) => read_u64(file).map(|bytes| bytes / 1024),
            HostMemory::Machine => mem_used_kib(),
        }
    }

    /// What is read, for the suite's method.
    pub(crate) fn describe(&self) -> String {
        match self {
            HostMemory::Cgroup(file) => format!(
                "the memory charged to the bench's own memory cgroup ({}): user and kernel memory of every instance, which inherit the cgroup (runc nests its containers' cgroups under it), and of nothing else on the machine",
                file.display()
            ),
            HostMemory::Machine => "MemTotal − MemAvailable, kernel memory included (the bench runs in the root memory cgroup, so this figure is machine-wide: other work on the machine moves it; read the slope, not single points)".to_owned(),
        }
    }
}

/// The usage file of the memory cgroup that `/proc/self/cgroup` (its text) names:
/// v1's `memory.usage_in_bytes` in the memory hierarchy, else v2's
/// `memory.current`; `None` in the root cgroup, whose figure is the machine's.
fn cgroup_usage_file(proc_self_cgroup: &str) -> Option<PathBuf> {
    let mut unified = None;
    for line in proc_self_cgroup.lines() {
        let mut fields = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let relative = path.trim_start_matches('/');
        if relative.is_empty() {
            continue;
        }
        if controllers.split(',').any(|c| c == "memory") {
            return Some(
                Path::new("/sys/fs/cgroup/memory")
                    .join(relative)
                    .join("memory.usage_in_bytes"),
            );
        }
        if controllers.is_empty() {
            unified = Some(
                Path::new("/sys/fs/cgroup")
                    .join(relative)
                    .join("memory.current"),
            );
        }
    }
    unified
}

fn read_u64(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// MemTotal − MemAvailable (KiB): host memory in use, kernel memory included.
pub(crate) fn mem_used_kib() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let field = |name: &str| -> Option<u64> {
        meminfo
            .lines()
            .find(|l| l.starts_with(name))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    Some(field("MemTotal:")?.saturating_sub(field("MemAvailable:")?))
}

/// The value of `key=` in a workload's `lightvm-bench …` result line.
pub(crate) fn result_field<'a>(stdout: &'a str, kind: &str, key: &str) -> Option<&'a str> {
    let prefix = format!("lightvm-bench {kind} ");
    let line = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix(prefix.as_str()))?;
    line.split_whitespace()
        .find_map(|pair| pair.strip_prefix(key)?.strip_prefix('='))
}

/// Opens (truncating) a log file for a child's stderr; `Stdio::null()` if it cannot.
pub(crate) fn stderr_to(path: &Path) -> Stdio {
    std::fs::File::create(path).map_or_else(|_| Stdio::null(), Stdio::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_lines_are_parsed_by_key() {
        let out = "noise\nlightvm-bench cpu iterations=5 ns=123 checksum=0xab\n";
        assert_eq!(result_field(out, "cpu", "ns"), Some("123"));
        assert_eq!(result_field(out, "cpu", "checksum"), Some("0xab"));
        assert_eq!(result_field(out, "cpu", "n"), None);
        assert_eq!(result_field(out, "stream", "ns"), None);
    }

    #[test]
    fn a_process_is_timed_to_its_first_byte_and_exit() {
        let mut command = Command::new("sh");
        command.args(["-c", "echo hi; sleep 0.05"]);
        let outcome = run_to_exit(command, "process", None).unwrap();
        assert_eq!(outcome.stdout, "hi\n");
        assert!(outcome.to_exit_us >= outcome.to_main_us);
    }

    #[test]
    fn a_failing_workload_is_an_error() {
        let mut command = Command::new("sh");
        command.args(["-c", "echo x; exit 3"]);
        assert!(run_to_exit(command, "process", None).is_err());
    }

    #[test]
    fn the_memory_cgroup_is_found_in_either_hierarchy() {
        let v1 = "9:name=systemd:/\n4:memory:/process_api/abc\n0::/\n";
        assert_eq!(
            cgroup_usage_file(v1),
            Some(PathBuf::from(
                "/sys/fs/cgroup/memory/process_api/abc/memory.usage_in_bytes"
            ))
        );
        let v2 = "0::/user.slice/session-1.scope\n";
        assert_eq!(
            cgroup_usage_file(v2),
            Some(PathBuf::from(
                "/sys/fs/cgroup/user.slice/session-1.scope/memory.current"
            ))
        );
        assert_eq!(cgroup_usage_file("4:memory:/\n0::/\n"), None, "the root");
        assert_eq!(cgroup_usage_file(""), None);
    }

    #[test]
    fn host_memory_in_use_is_readable() {
        let host = HostMemory::detect();
        assert!(host.used_kib().is_some_and(|kib| kib > 0), "{host:?}");
        assert!(!host.describe().is_empty());
    }

    #[test]
    fn memory_of_this_process_is_readable() {
        let (rss, pss) = rss_pss_kib(std::process::id()).unwrap();
        assert!(rss > 0 && pss > 0 && pss <= rss);
        assert!(mem_used_kib().unwrap() > 0);
    }
}
