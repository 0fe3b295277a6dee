//! `lightvm run`: boot one unikernel and report how it ended.

use std::io::Write;

use anyhow::Context;
use lightvm_vmm::{parse_mem_size, RunReport, Vm, VmConfig, VmExit};
use serde::Serialize;

use crate::cli::RunArgs;
use crate::exit_code;

/// `--json` output: the run report plus what the caller needs to interpret it.
#[derive(Serialize)]
struct JsonResult<'a> {
    image: &'a std::path::Path,
    exit_code: u8,
    #[serde(flatten)]
    report: &'a RunReport,
}

pub fn run(args: &RunArgs) -> anyhow::Result<u8> {
    let mem_size = parse_mem_size(&args.mem).context("--mem")?;
    let config = VmConfig::new(&args.image, mem_size, args.cmdline.as_str(), args.timeout)?
        .with_net(args.net.clone())
        .with_disk(args.disk.clone());
    let console: Box<dyn Write + Send> = if args.json {
        Box::new(std::io::stderr())
    } else {
        Box::new(std::io::stdout())
    };
    let vm = Vm::build(&config, console)
        .with_context(|| format!("cannot boot {}", args.image.display()))?;
    let report = vm.run()?;
    let code = exit_code::for_exit(&report.exit);
    if args.json {
        let result = JsonResult {
            image: &args.image,
            exit_code: code,
            report: &report,
        };
        println!("{}", serde_json::to_string(&result)?);
    } else {
        describe(&report);
    }
    Ok(code)
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
