//! `lightvm run`: boot one unikernel (or Linux kernel) and report how it ended.
//!
//! Unless `--no-jail`, the VM runs in a process of its own (`lightvm_vmm::jail`):
//! this process checks the request and prepares what needs the host (the
//! platform, the Linux personality's image and root filesystem archive), then
//! forks the VM process into its namespaces and cgroup and waits for it as its
//! supervisor. The VM process opens and builds the VM, locks itself down, runs
//! the guest and reports; its exit code is the command's.

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use anyhow::Context;
use lightvm_vmm::jail::{
    self, CgroupReport, CpuMax, Ended, Jail, JailConfig, JailReport, Limits, Spawned,
};
use lightvm_vmm::linux::{CpuFeature, DiskConfig, LinuxVmSpec, NetConfig, DEFAULT_CMDLINE};
use lightvm_vmm::{
    parse_mem_size, LinuxVm, LinuxVmConfig, Platform, RunReport, SandboxPolicy, Vm, VmConfig,
    VmExit,
};
use serde::Serialize;

use crate::cli::RunArgs;

/// `--json` output: the run report plus what the caller needs to interpret it.
#[derive(Serialize)]
struct JsonResult<'a> {
    image: &'a Path,
    exit_code: u8,
    #[serde(flatten)]
    report: &'a RunReport,
}

/// `--json` output when the VM process was killed before it could report.
#[derive(Serialize)]
struct KilledResult<'a> {
    image: &'a Path,
    exit_code: u8,
    exit: Killed<'a>,
}

#[derive(Serialize)]
struct Killed<'a> {
    kind: &'static str,
    signal: i32,
    reason: &'a str,
}

/// What is to run, with what the host had to prepare for it. `notice` is the
/// line saying why the platform is not kvm, printed once the VM is built.
enum Guest {
    /// A unikernel image.
    Unikernel {
        image: PathBuf,
        platform: Platform,
        notice: Option<String>,
    },
    /// A Linux program on the personality: its image and the packed root.
    LinuxProgram {
        program: PathBuf,
        personality: PathBuf,
        archive: PathBuf,
        platform: Platform,
        notice: Option<String>,
    },
    /// A Linux kernel.
    Linux { kernel: PathBuf },
}

impl Guest {
    /// What the report names as the image.
    fn image(&self) -> &Path {
        match self {
            Guest::Unikernel { image, .. } => image,
            Guest::LinuxProgram { program, .. } => program,
            Guest::Linux { kernel } => kernel,
        }
    }

    /// The archive this process made, to remove when the VM is gone.
    fn archive(&self) -> Option<&Path> {
        match self {
            Guest::LinuxProgram { archive, .. } => Some(archive),
            _ => None,
        }
    }
}

pub fn run(args: &RunArgs) -> anyhow::Result<u8> {
    // Opened before the guest starts: a bad path fails at once, and a jailed,
    // sandboxed monitor may write what it opened but open nothing more.
    let mut report_file = args
        .report
        .as_ref()
        .map(|path| File::create(path).with_context(|| format!("--report {}", path.display())))
        .transpose()?;
    let jail_config = (!args.no_jail).then(|| jail_config(args)).transpose()?;
    let guest = prepare(args)?;
    let mut jail = None;
    if let Some(config) = &jail_config {
        let keep: Vec<i32> = report_file.iter().map(AsRawFd::as_raw_fd).collect();
        match jail::spawn(config, &keep)? {
            Spawned::Monitor(monitor) => jail = Some(monitor),
            Spawned::Supervisor(supervisor) => {
                let ended = supervisor.wait();
                if let Some(archive) = guest.archive() {
                    let _ = std::fs::remove_file(archive);
                }
                return Ok(supervised(args, &guest, report_file.as_mut(), ended?));
            }
        }
    }
    let report = run_vm(args, &guest, jail.as_mut(), report_file.as_ref())?;
    let code = report.exit.exit_code();
    let result = JsonResult {
        image: guest.image(),
        exit_code: code,
        report: &report,
    };
    if let (Some(file), Some(path)) = (&mut report_file, &args.report) {
        file.write_all(&serde_json::to_vec(&result)?)
            .with_context(|| format!("--report {}", path.display()))?;
    }
    if args.json {
        println!("{}", serde_json::to_string(&result)?);
    } else {
        describe(&report);
    }
    Ok(code)
}

/// The jail `args` ask for: the VM's cgroup limits from its memory and threads,
/// or the flags.
fn jail_config(args: &RunArgs) -> anyhow::Result<JailConfig> {
    let (mem_size, threads) = match (&args.kernel, &args.rootfs) {
        (Some(_), _) => (
            mem_or(args, LinuxVmConfig::DEFAULT_MEM)?,
            // main, the vCPUs, a receive thread per NIC
            1 + u64::from(args.vcpus) + args.net.len() as u64,
        ),
        (None, Some(_)) => (mem_or(args, parse_mem_size(LINUX_PROGRAM_MEM)?)?, 1),
        (None, None) => (mem_or(args, VmConfig::DEFAULT_MEM)?, 1),
    };
    let mut limits = Limits::for_guest(mem_size, threads);
    if let Some(text) = &args.memory_limit {
        let limit = parse_mem_size(text).context("--memory-limit")?;
        anyhow::ensure!(limit > 0, "--memory-limit must be more than zero");
        limits.memory_max = Some(limit);
    }
    if let Some(text) = &args.cpu_limit {
        limits.cpu_max = Some(CpuMax::from_cpus(text).context("--cpu-limit")?);
    }
    if let Some(pids) = args.pids_limit {
        anyhow::ensure!(pids > 0, "--pids-limit must be more than zero");
        limits.pids_max = Some(pids);
    }
    let defaults = JailConfig::default();
    Ok(JailConfig {
        uid: args.jail_uid.unwrap_or(defaults.uid),
        gid: args.jail_gid.unwrap_or(defaults.gid),
        limits,
        ..defaults
    })
}

fn mem_or(args: &RunArgs, default: u64) -> anyhow::Result<u64> {
    match &args.mem {
        Some(mem) => parse_mem_size(mem).context("--mem"),
        None => Ok(default),
    }
}

/// What the host prepares before the VM process exists: the platform (saying
/// why when it is not kvm), and for a Linux program the personality's image
/// (which may run cargo) and the packed root filesystem.
fn prepare(args: &RunArgs) -> anyhow::Result<Guest> {
    match (&args.kernel, &args.image) {
        (Some(kernel), _) => Ok(Guest::Linux {
            kernel: kernel.clone(),
        }),
        (None, Some(program)) if args.rootfs.is_some() => {
            let (platform, notice) = args.platform.choose()?;
            let (personality, archive) = prepare_linux_program(args, program)?;
            Ok(Guest::LinuxProgram {
                program: program.clone(),
                personality,
                archive,
                platform,
                notice,
            })
        }
        (None, Some(image)) => {
            let (platform, notice) = args.platform.choose()?;
            Ok(Guest::Unikernel {
                image: image.clone(),
                platform,
                notice,
            })
        }
        (None, None) => anyhow::bail!("nothing to boot: give an image, or --kernel"),
    }
}

/// Builds, locks down (when jailed) and runs the VM: the VM process's work.
fn run_vm(
    args: &RunArgs,
    guest: &Guest,
    jail: Option<&mut Jail>,
    report_file: Option<&File>,
) -> anyhow::Result<RunReport> {
    let console: Box<dyn Write + Send> = if args.json {
        Box::new(std::io::stderr())
    } else {
        Box::new(std::io::stdout())
    };
    // What the monitor still writes once the guest runs: its sandbox keeps it.
    let policy = SandboxPolicy::writable(report_file.map(AsRawFd::as_raw_fd));
    let report = match guest {
        Guest::Unikernel {
            image,
            platform,
            notice,
        } => {
            let mut vm = build_unikernel(args, image, *platform, console)?;
            print_notice(notice);
            let jail = lock_down(jail)?;
            vm.set_sandbox(policy);
            RunReport { jail, ..vm.run()? }
        }
        Guest::LinuxProgram {
            program,
            personality,
            archive,
            platform,
            notice,
        } => {
            let vm = build_linux_program(args, program, personality, archive, *platform, console);
            // The archive is mapped now (or the VM failed): its name is not needed,
            // and once the process is locked down it could not be removed.
            let _ = std::fs::remove_file(archive);
            let mut vm = vm?;
            print_notice(notice);
            let jail = lock_down(jail)?;
            vm.set_sandbox(policy);
            RunReport { jail, ..vm.run()? }
        }
        Guest::Linux { kernel } => {
            let mut vm = build_linux(args, kernel, console)?;
            let jail = lock_down(jail)?;
            vm.set_sandbox(policy);
            RunReport { jail, ..vm.run()? }
        }
    };
    Ok(report)
}

fn print_notice(notice: &Option<String>) {
    if let Some(notice) = notice {
        eprintln!("{notice}");
    }
}

/// The one step every kind of VM takes between being built and running: the
/// jail's lock-down, when it runs in one.
fn lock_down(jail: Option<&mut Jail>) -> anyhow::Result<Option<JailReport>> {
    let Some(jail) = jail else {
        return Ok(None);
    };
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let report = jail.lock_down()?;
    // Root expects limits; a user rarely has a cgroup to give (the report says why).
    if let (true, CgroupReport::Skipped { skipped }) = (root, &report.cgroup) {
        eprintln!("lightvm: the VM runs without a cgroup of its own: {skipped}");
    }
    Ok(Some(report))
}

/// What the supervisor says, and exits with, once the VM process has ended.
fn supervised(args: &RunArgs, guest: &Guest, report: Option<&mut File>, ended: Ended) -> u8 {
    let (signal, out_of_memory, interrupted) = match ended {
        Ended::Exited(code) => return code,
        Ended::Killed {
            signal,
            out_of_memory,
            interrupted,
        } => (signal, out_of_memory, interrupted),
    };
    let code = |signal: i32| u8::try_from(128 + signal).unwrap_or(u8::MAX);
    let reason = match (out_of_memory, interrupted) {
        // Stopped because this command was interrupted (Ctrl-C): it ends as if
        // that signal had killed it, silently, as a shell expects.
        (_, Some(interrupted)) => return code(interrupted),
        (Some(limit), None) => format!(
            "the VM was stopped: its process used all the memory its cgroup allows ({} MiB, memory.max); give it more with --memory-limit",
            limit >> 20
        ),
        (None, None) if signal == libc::SIGSYS => "the monitor was stopped by its seccomp filter: it made a system call outside its thread's allow-list (a lightvm bug; the kernel's audit log names the call)".to_owned(),
        (None, None) => format!("the VM process was killed by signal {signal}"),
    };
    eprintln!("lightvm: {reason}");
    let code = code(signal);
    let result = KilledResult {
        image: guest.image(),
        exit_code: code,
        exit: Killed {
            kind: "killed",
            signal,
            reason: &reason,
        },
    };
    if let (Some(file), Ok(json)) = (report, serde_json::to_vec(&result)) {
        let _ = file.write_all(&json);
    }
    if args.json {
        if let Ok(json) = serde_json::to_string(&result) {
            println!("{json}");
        }
    }
    code
}

/// Builds a unikernel VM.
fn build_unikernel(
    args: &RunArgs,
    image: &Path,
    platform: Platform,
    console: Box<dyn Write + Send>,
) -> anyhow::Result<Vm> {
    let mem_size = parse_mem_size(args.mem.as_deref().unwrap_or("2M")).context("--mem")?;
    let cmdline = args.cmdline.as_deref().unwrap_or("");
    let config = VmConfig::new(image, mem_size, cmdline, args.timeout)?
        .with_net(single(&args.net, "--net")?.map(str::parse).transpose()?)
        .with_disk(single(&args.disk, "--disk")?.map(str::parse).transpose()?);
    Vm::build(platform, &config, console)
        .with_context(|| format!("cannot boot {}", image.display()))
}

/// Guest memory of a Linux program when `--mem` names none: room for a program,
/// its libraries and heap, and the personality's own heap (only what is touched
/// costs host memory).
const LINUX_PROGRAM_MEM: &str = "512M";

/// The personality's image and the program's root filesystem, packed into an
/// archive (the VM's module).
fn prepare_linux_program(args: &RunArgs, program: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    let root = args.rootfs.as_deref().context("--rootfs")?;
    let personality = match &args.personality {
        Some(image) => image.clone(),
        None => lightvm_images::personality::build()
            .context("building the Linux personality (crates/personality)")?,
    };
    let exe = program.to_string_lossy();
    let program = &args.program;
    let launch = lightvm_images::rootfs::Launch::new(
        &exe,
        &program.program_args,
        program.env(),
        &program.cwd,
    );
    let archive = tempfile_path("rootfs.cpio");
    let packed = lightvm_images::rootfs::pack(root, &launch, &archive);
    if packed.is_err() {
        let _ = std::fs::remove_file(&archive);
    }
    packed?;
    Ok((personality, archive))
}

/// Builds the VM of an unmodified Linux program: the personality image with the
/// packed root filesystem as its module.
fn build_linux_program(
    args: &RunArgs,
    program: &Path,
    personality: &Path,
    archive: &Path,
    platform: Platform,
    console: Box<dyn Write + Send>,
) -> anyhow::Result<Vm> {
    let mem_size =
        parse_mem_size(args.mem.as_deref().unwrap_or(LINUX_PROGRAM_MEM)).context("--mem")?;
    // The personality reads the network's address from the command line, as
    // every lightvm unikernel does; `lx.*` words are its own.
    let mut cmdline = args.cmdline.clone().unwrap_or_default();
    if args.program.trace_syscalls {
        cmdline.push_str(" lx.trace");
    }
    let config = VmConfig::new(personality, mem_size, cmdline.trim(), args.timeout)?
        .with_module(Some(archive.to_owned()))
        .for_linux_programs(true)
        .with_net(single(&args.net, "--net")?.map(str::parse).transpose()?)
        .with_disk(single(&args.disk, "--disk")?.map(str::parse).transpose()?);
    Vm::build(platform, &config, console)
        .with_context(|| format!("cannot run {}", program.display()))
}

/// A path for a temporary file of this process.
fn tempfile_path(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("lightvm-{}-{name}", std::process::id()))
}

/// A unikernel has at most one NIC and one disk: the one value given, if any.
fn single<'a>(values: &'a [String], flag: &str) -> anyhow::Result<Option<&'a str>> {
    match values {
        [] => Ok(None),
        [value] => Ok(Some(value)),
        _ => anyhow::bail!("a unikernel takes one {flag}; several are for Linux guests (--kernel)"),
    }
}

/// Builds a Linux VM.
fn build_linux(
    args: &RunArgs,
    kernel: &Path,
    console: Box<dyn Write + Send>,
) -> anyhow::Result<LinuxVm> {
    let mem_size = mem_or(args, LinuxVmConfig::DEFAULT_MEM)?;
    let cpu_clear = CpuFeature::parse_list(args.cpu_clear.as_deref().unwrap_or(""))?;
    let disks = args
        .disk
        .iter()
        .map(|d| DiskConfig::parse(d))
        .collect::<Result<_, _>>()?;
    let nets = args
        .net
        .iter()
        .enumerate()
        .map(|(i, n)| NetConfig::parse(n, i))
        .collect::<Result<_, _>>()?;
    let config = LinuxVmConfig::new(LinuxVmSpec {
        kernel: kernel.to_owned(),
        initrd: args.initrd.clone(),
        cmdline: args
            .cmdline
            .clone()
            .unwrap_or_else(|| DEFAULT_CMDLINE.to_owned()),
        mem_size,
        vcpus: args.vcpus,
        cpu_clear,
        disks,
        nets,
        timeout: args.timeout,
    })?;
    LinuxVm::build(&config, console).with_context(|| format!("cannot boot {}", kernel.display()))
}

/// Tells the user, on stderr, anything about the run that the exit code does not.
fn describe(report: &RunReport) {
    if report.console_dropped > 0 {
        eprintln!(
            "lightvm: {} bytes of console output were dropped (the guest exceeded {} KiB/s)",
            report.console_dropped,
            lightvm_abi::limits::CONSOLE_BYTES_PER_SEC >> 10
        );
    }
    match &report.exit {
        VmExit::Exited {
            status: 0,
            message: None,
        } => {}
        exit => eprintln!("lightvm: {exit}"),
    }
}
