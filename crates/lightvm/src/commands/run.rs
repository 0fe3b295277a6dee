//! `lightvm run`: boot one unikernel (or Linux kernel) and report how it ended.

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::Path;

use anyhow::Context;
use lightvm_vmm::linux::{CpuFeature, DiskConfig, LinuxVmSpec, NetConfig, DEFAULT_CMDLINE};
use lightvm_vmm::{
    parse_mem_size, LinuxVm, LinuxVmConfig, RunReport, SandboxPolicy, Vm, VmConfig, VmExit,
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

pub fn run(args: &RunArgs) -> anyhow::Result<u8> {
    let console: Box<dyn Write + Send> = if args.json {
        Box::new(std::io::stderr())
    } else {
        Box::new(std::io::stdout())
    };
    // Opened before the guest starts: a bad path fails at once, and a sandboxed
    // monitor may write what it opened but open nothing more.
    let mut report_file = args
        .report
        .as_ref()
        .map(|path| File::create(path).with_context(|| format!("--report {}", path.display())))
        .transpose()?;
    let (image, report) = match (&args.kernel, &args.image) {
        (Some(kernel), _) => (kernel.as_path(), run_linux(args, kernel, console)?),
        (None, Some(program)) if args.rootfs.is_some() => {
            let keep = report_file.as_ref().map(AsRawFd::as_raw_fd);
            (
                program.as_path(),
                run_linux_program(args, program, console, keep)?,
            )
        }
        (None, Some(image)) => {
            let keep = report_file.as_ref().map(AsRawFd::as_raw_fd);
            (image.as_path(), run_unikernel(args, image, console, keep)?)
        }
        (None, None) => anyhow::bail!("nothing to boot: give an image, or --kernel"),
    };
    let code = report.exit.exit_code();
    let result = JsonResult {
        image,
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

/// Boots a unikernel; `report_fd` is a file the monitor still writes after the
/// guest started (the process platform's sandbox keeps it).
fn run_unikernel(
    args: &RunArgs,
    image: &Path,
    console: Box<dyn Write + Send>,
    report_fd: Option<i32>,
) -> anyhow::Result<RunReport> {
    let mem_size = parse_mem_size(args.mem.as_deref().unwrap_or("2M")).context("--mem")?;
    let cmdline = args.cmdline.as_deref().unwrap_or("");
    let config = VmConfig::new(image, mem_size, cmdline, args.timeout)?
        .with_net(single(&args.net, "--net")?.map(str::parse).transpose()?)
        .with_disk(single(&args.disk, "--disk")?.map(str::parse).transpose()?);
    let platform = args.platform.resolve()?;
    let mut vm = Vm::build(platform, &config, console)
        .with_context(|| format!("cannot boot {}", image.display()))?;
    vm.set_sandbox(SandboxPolicy::writable(report_fd));
    Ok(vm.run()?)
}

/// Guest memory of a Linux program when `--mem` names none: room for a program,
/// its libraries and heap, and the personality's own heap (only what is touched
/// costs host memory).
const LINUX_PROGRAM_MEM: &str = "512M";

/// Runs an unmodified Linux program: the personality image with the packed root
/// filesystem as its module.
fn run_linux_program(
    args: &RunArgs,
    program: &Path,
    console: Box<dyn Write + Send>,
    report_fd: Option<i32>,
) -> anyhow::Result<RunReport> {
    let root = args.rootfs.as_deref().context("--rootfs")?;
    let personality = match &args.personality {
        Some(image) => image.clone(),
        None => lightvm_images::personality::build()
            .context("building the Linux personality (crates/personality)")?,
    };
    let exe = program.to_string_lossy();
    let env = (!args.env.is_empty()).then(|| args.env.clone());
    let launch = lightvm_images::rootfs::Launch::new(&exe, &args.program_args, env, &args.cwd);
    let archive = tempfile_path("rootfs.cpio");
    let packed = lightvm_images::rootfs::pack(root, &launch, &archive);
    if packed.is_err() {
        let _ = std::fs::remove_file(&archive);
    }
    packed?;
    let vm = (|| {
        let mem_size =
            parse_mem_size(args.mem.as_deref().unwrap_or(LINUX_PROGRAM_MEM)).context("--mem")?;
        // The personality reads the network's address from the command line, as
        // every lightvm unikernel does; `lx.*` words are its own.
        let mut cmdline = args.cmdline.clone().unwrap_or_default();
        if args.trace_syscalls {
            cmdline.push_str(" lx.trace");
        }
        let config = VmConfig::new(&personality, mem_size, cmdline.trim(), args.timeout)?
            .with_module(Some(archive.clone()))
            .for_linux_programs(true)
            .with_net(single(&args.net, "--net")?.map(str::parse).transpose()?)
            .with_disk(single(&args.disk, "--disk")?.map(str::parse).transpose()?);
        let platform = args.platform.resolve()?;
        Vm::build(platform, &config, console)
            .with_context(|| format!("cannot run {}", program.display()))
    })();
    // The archive is mapped now (or the VM failed): its name is not needed, and
    // once the guest runs the sandbox would not let it go.
    let _ = std::fs::remove_file(&archive);
    let mut vm = vm?;
    vm.set_sandbox(SandboxPolicy::writable(report_fd));
    Ok(vm.run()?)
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

fn run_linux(
    args: &RunArgs,
    kernel: &Path,
    console: Box<dyn Write + Send>,
) -> anyhow::Result<RunReport> {
    let mem_size = match &args.mem {
        Some(mem) => parse_mem_size(mem).context("--mem")?,
        None => LinuxVmConfig::DEFAULT_MEM,
    };
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
    let vm = LinuxVm::build(&config, console)
        .with_context(|| format!("cannot boot {}", kernel.display()))?;
    Ok(vm.run()?)
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
