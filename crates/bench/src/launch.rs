//! Starting instances and timing them to their marker: the first byte the workload
//! writes to its stdout, which it does first thing in `main` (a process, a
//! container and `lightvm run` alike), so "time to main" is measured the same way
//! on every platform that has a stdout.

use std::io::Read;
use std::os::fd::AsRawFd;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::BenchError;

/// How long a workload may take to reach its marker before the run gives up.
pub(crate) const MARKER_TIMEOUT: Duration = Duration::from_secs(30);

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
pub(crate) fn stderr_to(path: &std::path::Path) -> Stdio {
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
    fn memory_of_this_process_is_readable() {
        let (rss, pss) = rss_pss_kib(std::process::id()).unwrap();
        assert!(rss > 0 && pss > 0 && pss <= rss);
        assert!(mem_used_kib().unwrap() > 0);
    }
}
