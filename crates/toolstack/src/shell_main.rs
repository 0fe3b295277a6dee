//! The shell process: one per VM (Firecracker's isolation, and the only layout that
//! stays flat to 10,000 VMs under the task, fd and MMU-notifier limits DESIGN.md
//! measured). It prepares and warms a [`Shell`], says so, waits for the one boot
//! request, runs the guest on its only thread and records how it ended.

use std::ffi::CString;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use lightvm_vmm::devices::config::DeviceSyntax;
use lightvm_vmm::{NetConfig, Platform, Shell, VmConfig};

use crate::protocol::{self, BootRequest, ShellEvent, ShellRequest};
use crate::state::{self, ExitRecord, Outcome};

/// Largest console log per VM. The VMM's rate limit bounds how fast it grows; this
/// bounds how far, for guests that print for days.
const CONSOLE_LOG_MAX: u64 = 64 << 20;

/// Runs a shell on `control` (the daemon's socket); returns the process exit code:
/// the guest's status, or the codes `lightvm run` uses for the VMM's verdicts.
pub fn run(platform: Platform, mem_size: u64, control: UnixStream) -> i32 {
    let prepare_started = Instant::now();
    let mut events = match control.try_clone() {
        Ok(events) => events,
        Err(_) => return 125,
    };
    let shell = Shell::create(platform, mem_size).and_then(|mut shell| {
        shell.warm()?;
        Ok(shell)
    });
    let shell = match shell {
        Ok(shell) => shell,
        Err(error) => {
            send(
                &mut events,
                &ShellEvent::Failed {
                    error: error.to_string(),
                },
            );
            return 125;
        }
    };
    send(
        &mut events,
        &ShellEvent::Ready {
            prepare_us: prepare_started.elapsed().as_secs_f64() * 1e6,
        },
    );

    let mut line = Vec::new();
    match BufReader::new(control).read_until(b'\n', &mut line) {
        // The daemon went away before using this shell: nothing to run.
        Ok(0) | Err(_) => return 0,
        Ok(_) => {}
    }
    let request = match protocol::decode::<ShellRequest>(&line) {
        Ok(ShellRequest::Boot(request)) => request,
        Err(error) => {
            send(
                &mut events,
                &ShellEvent::Failed {
                    error: format!("bad request: {error}"),
                },
            );
            return 125;
        }
    };
    boot(shell, mem_size, &request, events)
}

fn boot(shell: Shell, mem_size: u64, request: &BootRequest, mut events: UnixStream) -> i32 {
    let fail = |events: &mut UnixStream, error: String| {
        send(
            events,
            &ShellEvent::Failed {
                error: error.clone(),
            },
        );
        let _ = state::record_exit_once(&request.vm_dir, &ExitRecord::new(Outcome::Failed, error));
        125
    };
    let timeout = request.timeout_ms.map(Duration::from_millis);
    let config = match VmConfig::new(&request.image, mem_size, request.cmdline.as_str(), timeout) {
        Ok(config) => config,
        Err(error) => return fail(&mut events, error.to_string()),
    };
    let config = match boot_net(request.net.as_deref()) {
        Ok(net) => config.with_net(net),
        Err(error) => return fail(&mut events, error.to_string()),
    };
    let console = match CappedLog::open(&request.vm_dir.join(state::CONSOLE_LOG)) {
        Ok(console) => console,
        Err(error) => return fail(&mut events, format!("console log: {error}")),
    };
    let mut vm = match shell.boot(&config, Box::new(console)) {
        Ok(vm) => vm,
        Err(error) => return fail(&mut events, error.to_string()),
    };
    let timings = vm.timings();
    let setup_us = timings.image_load_us + timings.vm_setup_us;
    vm.on_boot_done(Box::new(move |boot_done_us| {
        send(
            &mut events,
            &ShellEvent::Booted {
                boot_done_us,
                setup_us,
            },
        );
    }));
    let report = match vm.run() {
        Ok(report) => report,
        Err(error) => {
            let _ = state::record_exit_once(
                &request.vm_dir,
                &ExitRecord::new(Outcome::Failed, error.to_string()),
            );
            return 125;
        }
    };
    let _ = state::record_exit_once(&request.vm_dir, &ExitRecord::from_report(&report));
    i32::from(report.exit.exit_code())
}

/// Why a boot request's network interface cannot be given to its guest.
#[derive(Debug, thiserror::Error)]
pub enum BootNetError {
    /// The `net` text does not parse (the daemon checks it first; this is a guard).
    #[error("net: {0}")]
    Syntax(#[from] DeviceSyntax),
    /// No interface of that name in this network namespace.
    #[error(
        "tap interface {tap:?} does not exist in the daemon's network namespace; \
         create it first (ip tuntap add dev {tap} mode tap)"
    )]
    NoSuchTap {
        /// The interface asked for.
        tap: String,
    },
    /// The interface could not be looked up.
    #[error("looking up tap interface {tap:?}: {source}")]
    Lookup {
        /// The interface asked for.
        tap: String,
        /// The OS error.
        source: std::io::Error,
    },
}

/// The network interface of a boot request, checked to exist.
///
/// The VMM's tap opener creates a missing tap (what `lightvm run` wants, as root),
/// but a daemon's VM on a tap made on the fly would sit on a link with no address
/// and no route that disappears with it: a typo in `net` would look like a working
/// VM. So an interface that does not exist is an error here; one that exists but is
/// no tap, or is attached to another VM, is refused when the VMM opens it.
pub fn boot_net(text: Option<&str>) -> Result<Option<NetConfig>, BootNetError> {
    let Some(text) = text else {
        return Ok(None);
    };
    let net = NetConfig::parse(text, 0)?;
    // Interface names never hold a NUL (the parser bounds their length, the VMM
    // refuses odd bytes); one that does cannot exist either.
    let Ok(name) = CString::new(net.tap.as_str()) else {
        return Err(BootNetError::NoSuchTap { tap: net.tap });
    };
    // SAFETY: if_nametoindex reads a NUL-terminated string that outlives the call.
    if unsafe { libc::if_nametoindex(name.as_ptr()) } == 0 {
        let error = std::io::Error::last_os_error();
        return Err(match error.raw_os_error() {
            Some(libc::ENODEV | libc::ENXIO) => BootNetError::NoSuchTap { tap: net.tap },
            _ => BootNetError::Lookup {
                tap: net.tap,
                source: error,
            },
        });
    }
    Ok(Some(net))
}

/// Best effort: the daemon may have closed its end (it does after boot), and a VM
/// runs on whether or not anyone listens.
fn send(events: &mut UnixStream, event: &ShellEvent) {
    let _ = events.write_all(&protocol::encode(event));
}

/// The console log: appends, and refuses more than [`CONSOLE_LOG_MAX`] bytes (the
/// console then counts the rest as dropped).
struct CappedLog {
    file: std::fs::File,
    written: u64,
}

impl CappedLog {
    fn open(path: &Path) -> std::io::Result<Self> {
        let file = std::fs::File::options()
            .create(true)
            .append(true)
            .open(path)?;
        let written = file.metadata()?.len();
        Ok(Self { file, written })
    }
}

impl Write for CappedLog {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.written + buf.len() as u64 > CONSOLE_LOG_MAX {
            return Err(std::io::Error::other("console log is full"));
        }
        let n = self.file.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_net_is_no_interface() {
        assert_eq!(boot_net(None).unwrap(), None);
    }

    #[test]
    fn a_missing_interface_is_named_in_the_error() {
        let error = boot_net(Some("tap=lvmnosuch0")).unwrap_err();
        assert!(
            matches!(&error, BootNetError::NoSuchTap { tap } if tap == "lvmnosuch0"),
            "{error:?}"
        );
        assert!(
            error.to_string().contains("\"lvmnosuch0\" does not exist"),
            "{error}"
        );
    }

    #[test]
    fn an_existing_interface_passes_the_check() {
        // Every network namespace has a loopback; the VMM refuses it later, as no tap.
        let net = boot_net(Some("tap=lo,mac=02:00:00:00:00:01")).unwrap();
        assert_eq!(
            net.map(|n| n.to_string()).as_deref(),
            Some("tap=lo,mac=02:00:00:00:00:01")
        );
    }

    #[test]
    fn bad_text_is_a_syntax_error() {
        assert!(matches!(
            boot_net(Some("tap=")),
            Err(BootNetError::Syntax(_))
        ));
    }
}
