//! The shell process: one per VM (Firecracker's isolation, and the only layout that
//! stays flat to 10,000 VMs under the task, fd and MMU-notifier limits DESIGN.md
//! measured). It prepares and warms a [`Shell`] — on the process platform it also
//! enters its namespaces then, so that only the filter is left for the boot —
//! says so, waits for the one boot request and the files that come with it, runs
//! the guest on its only thread and writes how it ended into the result file it was
//! handed.

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use lightvm_vmm::devices::tap::Tap;
use lightvm_vmm::jail::{self, CpuMax, JailConfig, Limits};
use lightvm_vmm::unikernel::boot::Module;
use lightvm_vmm::unikernel::devices::Devices;
use lightvm_vmm::unikernel::GuestParts;
use lightvm_vmm::{Platform, SandboxPolicy, Shell, UnikernelImage, Vm, VmConfig};

use crate::protocol::{self, BootFiles, BootRequest, ShellEvent};
use crate::state::{ExitRecord, Outcome};

/// Largest console log per VM. The VMM's rate limit bounds how fast it grows; this
/// bounds how far, for guests that print for days.
const CONSOLE_LOG_MAX: u64 = 64 << 20;

/// The jail of a shell for guests of `mem_size` bytes: `lightvm run`'s defaults
/// for a monitor of one thread (the daemon changes the cgroup's limits at execute
/// when a request asks for others), and a console log capped at
/// `CONSOLE_LOG_MAX` (64 MiB) whatever the guest prints.
///
/// Its CPU limit is all the host's CPUs — no limit in effect — so that the
/// group is made in the CPU controller's hierarchy too, where a request's
/// `cpu_limit` is then one write (a process joins a hierarchy cheaply only
/// while it is root and single-threaded, in prepare).
pub fn jail_config(mem_size: u64) -> JailConfig {
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    JailConfig {
        limits: Limits {
            cpu_max: Some(CpuMax {
                quota_us: CpuMax::PERIOD_US.saturating_mul(cpus as u64),
                period_us: CpuMax::PERIOD_US,
            }),
            ..Limits::for_guest(mem_size, 1)
        },
        fsize: Some(CONSOLE_LOG_MAX + (1 << 20)),
        ..JailConfig::default()
    }
}

/// Runs a shell on `control` (the daemon's socket), prepared for guests of
/// `mem_size` bytes that run Linux programs or not (`linux`), in its jail or not
/// (`jail`, the daemon's `--no-jail`); returns the process
/// exit code: the guest's status, or the codes `lightvm run` uses for the VMM's
/// verdicts.
pub fn run(platform: Platform, mem_size: u64, linux: bool, jail: bool, control: UnixStream) -> i32 {
    let prepare_started = Instant::now();
    // The cgroup first, so that what the shell allocates is charged there.
    let mut jail =
        jail.then(|| jail::enter_started(&jail_config(mem_size), &[control.as_raw_fd()]));
    let mut events = match control.try_clone() {
        Ok(events) => events,
        Err(_) => return 125,
    };
    let shell = Shell::create_for(platform, mem_size, linux)
        .map_err(|e| e.to_string())
        .and_then(|mut shell| {
            shell.warm().map_err(|e| e.to_string())?;
            // The VM is built and everything it needs at execute comes as open
            // descriptors over `control`: lock down now, off the request path.
            let report = jail
                .as_mut()
                .map(jail::Jail::lock_down)
                .transpose()
                .map_err(|e| e.to_string())?;
            shell.isolate().map_err(|e| e.to_string())?;
            Ok((shell, report))
        });
    let (shell, report) = match shell {
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
            jail: report,
        },
    );

    match protocol::receive_boot(&control) {
        // The daemon went away before using this shell: nothing to run.
        Ok(None) => 0,
        Ok(Some((request, files))) if request.linux.is_some() != linux => {
            let error = if linux {
                "this shell was prepared for Linux programs, and the request is a unikernel's"
            } else {
                "this shell was prepared for unikernels, and the request is a Linux program's"
            };
            send(
                &mut events,
                &ShellEvent::Failed {
                    error: error.to_owned(),
                },
            );
            drop(files);
            125
        }
        Ok(Some((request, files))) => boot(shell, mem_size, &request, files, events),
        Err(error) => {
            send(&mut events, &ShellEvent::Failed { error });
            125
        }
    }
}

fn boot(
    shell: Shell,
    mem_size: u64,
    request: &BootRequest,
    files: BootFiles,
    mut events: UnixStream,
) -> i32 {
    let started = Instant::now();
    let BootFiles {
        image,
        console,
        mut result,
        module,
        tap,
    } = files;
    let writable = [events.as_raw_fd(), console.as_raw_fd(), result.as_raw_fd()];
    let vm = load(
        shell,
        mem_size,
        request,
        (image, console, module, tap),
        started,
    );
    let mut vm = match vm {
        Ok(vm) => vm,
        Err(error) => {
            send(
                &mut events,
                &ShellEvent::Failed {
                    error: error.clone(),
                },
            );
            write_result(&mut result, &ExitRecord::new(Outcome::Failed, error));
            return 125;
        }
    };
    // What the monitor still writes once the guest runs: events, console, result.
    vm.set_sandbox(SandboxPolicy::writable(writable));
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
    match vm.run() {
        Ok(report) => {
            write_result(&mut result, &ExitRecord::from_report(&report));
            i32::from(report.exit.exit_code())
        }
        Err(error) => {
            write_result(
                &mut result,
                &ExitRecord::new(Outcome::Failed, error.to_string()),
            );
            125
        }
    }
}

/// The files a boot request brought: image, console, module, tap.
type Opened = (File, File, Option<File>, Option<File>);

/// The execute phase up to the guest's start: the request checked again on
/// receipt, the image (and a Linux program's root filesystem archive, its module)
/// read from its file, the devices and console made from theirs, all loaded into
/// the shell.
fn load(
    shell: Shell,
    mem_size: u64,
    request: &BootRequest,
    (image, console, module, tap): Opened,
    started: Instant,
) -> Result<Vm, String> {
    let timeout = request.timeout_ms.map(Duration::from_millis);
    let config = VmConfig::new(&request.image, mem_size, request.cmdline.as_str(), timeout)
        .map_err(|e| e.to_string())?
        .with_net(request.net.clone())
        .for_linux_programs(request.linux.is_some());
    let module = match (module, &request.linux) {
        (Some(file), Some(linux)) => {
            Some(Module::from_file(file, &linux.rootfs).map_err(|e| e.to_string())?)
        }
        _ => None,
    };
    let image = UnikernelImage::from_open_file(image, &request.image).map_err(|e| e.to_string())?;
    let image_loaded = started.elapsed();
    let net = match (tap, &request.net) {
        (Some(tap), Some(net)) => Some((Tap::from_file(tap, net.tap.clone()), net.mac)),
        _ => None,
    };
    let devices = Devices::new(net, None).map_err(|e| e.to_string())?;
    let console = CappedLog::new(console).map_err(|e| format!("console log: {e}"))?;
    shell
        .boot_opened(
            &image,
            GuestParts { devices, module },
            &config,
            Box::new(console),
            (started, image_loaded),
        )
        .map_err(|e| e.to_string())
}

/// Writes the exit record into the file the daemon handed over: one write, read by
/// the daemon once this process has ended.
fn write_result(file: &mut File, record: &ExitRecord) {
    if let Ok(bytes) = serde_json::to_vec_pretty(record) {
        let _ = file.write_all(&bytes);
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
    file: File,
    written: u64,
}

impl CappedLog {
    fn new(file: File) -> std::io::Result<Self> {
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
