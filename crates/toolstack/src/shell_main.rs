//! The shell process: one per VM (Firecracker's isolation, and the only layout that
//! stays flat to 10,000 VMs under the task, fd and MMU-notifier limits DESIGN.md
//! measured). It prepares and warms a [`Shell`], says so, waits for the one boot
//! request, runs the guest on its only thread and records how it ended.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use lightvm_vmm::{Shell, VmConfig};

use crate::protocol::{self, BootRequest, ShellEvent, ShellRequest};
use crate::state::{self, ExitRecord, Outcome};

/// Largest console log per VM. The VMM's rate limit bounds how fast it grows; this
/// bounds how far, for guests that print for days.
const CONSOLE_LOG_MAX: u64 = 64 << 20;

/// Runs a shell on `control` (the daemon's socket); returns the process exit code:
/// the guest's status, or the codes `lightvm run` uses for the VMM's verdicts.
pub fn run(mem_size: u64, control: UnixStream) -> i32 {
    let prepare_started = Instant::now();
    let mut events = match control.try_clone() {
        Ok(events) => events,
        Err(_) => return 125,
    };
    let shell = Shell::create(mem_size).and_then(|mut shell| {
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
    let console = match CappedLog::open(&request.vm_dir.join(state::CONSOLE_LOG)) {
        Ok(console) => console,
        Err(error) => return fail(&mut events, format!("console log: {error}")),
    };
    let mut vm = match shell.boot(&config, Box::new(console)) {
        Ok(vm) => vm,
        Err(error) => return fail(&mut events, error.to_string()),
    };
    let setup_us = vm.timings().image_load_us + vm.timings().vm_setup_us;
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
    match report.exit {
        lightvm_vmm::VmExit::Exited { status, .. } => i32::try_from(status).unwrap_or(127),
        lightvm_vmm::VmExit::TimedOut { .. } => 124,
        lightvm_vmm::VmExit::Crashed(_) => 126,
        lightvm_vmm::VmExit::AbiViolation { .. } => 127,
    }
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
