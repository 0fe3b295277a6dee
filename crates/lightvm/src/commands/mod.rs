//! One module per sub-command.

mod bench;
mod build;
mod kernel;
mod platforms;
mod rootfs;
mod run;
mod toolstack;

use crate::cli::{Cli, Command, KernelCommand};

/// Runs the parsed command; returns the process exit code.
pub fn dispatch(cli: Cli) -> anyhow::Result<u8> {
    match cli.command {
        Command::Build(args) => build::build(&args),
        Command::Run(args) => run::run(&args),
        Command::Platforms(args) => Ok(platforms::platforms(&args)),
        Command::Rootfs(args) => rootfs::rootfs(&args),
        Command::Kernel(KernelCommand::Build(args)) => kernel::build(&args),
        Command::Bench(args) => bench::bench(&args),
        Command::Daemon(args) => toolstack::daemon(&args),
        Command::Shell(args) => Ok(toolstack::shell(&args)),
        Command::Create(args) => toolstack::create(&args),
        Command::Ps(args) => toolstack::ps(&args),
        Command::Inspect(args) => toolstack::inspect(&args),
        Command::Logs(args) => toolstack::logs(&args),
        Command::Stop(args) => toolstack::stop(&args),
        Command::Rm(args) => toolstack::rm(&args),
        Command::Pool(args) => toolstack::pool(&args),
    }
}
