//! One module per sub-command.

mod bench;
mod build;
mod kernel;
mod run;

use crate::cli::{BenchCommand, Cli, Command, KernelCommand};

/// Runs the parsed command; returns the process exit code.
pub fn dispatch(cli: Cli) -> anyhow::Result<u8> {
    match cli.command {
        Command::Build(args) => build::build(&args),
        Command::Run(args) => run::run(&args),
        Command::Kernel(KernelCommand::Build(args)) => kernel::build(&args),
        Command::Bench(BenchCommand::Boot(args)) => bench::boot(&args),
    }
}
