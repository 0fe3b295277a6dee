//! The command-line grammar.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// lightvm: virtual machines as cheap, small and dense as processes.
#[derive(Debug, Parser)]
#[command(name = "lightvm", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The sub-commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build a Rust guest application (a crate using libos) into a unikernel image.
    Build(BuildArgs),
    /// Boot a unikernel image and wait for it to end; the exit code is the guest's.
    ///
    /// Exit codes: 0-123 the guest's status, 124 timed out, 125 lightvm failed,
    /// 126 the guest crashed, 127 the guest broke the hypercall ABI.
    Run(RunArgs),
    /// Measure lightvm against processes.
    #[command(subcommand)]
    Bench(BenchCommand),
}

/// `lightvm build`.
#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Directory of the guest application (holding its Cargo.toml).
    pub app_dir: PathBuf,
    /// Where to copy the finished image (default: print the path in the build tree).
    #[arg(long, short)]
    pub out: Option<PathBuf>,
    /// Build without optimisations.
    #[arg(long)]
    pub debug: bool,
}

/// `lightvm run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The unikernel image (an ELF built by `lightvm build`).
    pub image: PathBuf,
    /// Guest memory: a multiple of 2 MiB, e.g. 2M, 64M, 1G (a bare number is MiB).
    #[arg(long, default_value = "2M")]
    pub mem: String,
    /// Command line passed to the guest.
    #[arg(long, default_value = "")]
    pub cmdline: String,
    /// Stop the guest after this long, e.g. 500ms, 5s, 2m (exit code 124).
    #[arg(long, value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// Print the result and timings as JSON on stdout; the guest console goes to stderr.
    #[arg(long)]
    pub json: bool,
    /// Network interface on a host tap: tap=NAME[,mac=XX:XX:XX:XX:XX:XX]. The tap is
    /// created if missing (needs CAP_NET_ADMIN); the guest's address comes from its
    /// command line (e.g. --cmdline "ip=10.0.0.2/24 gw=10.0.0.1").
    #[arg(long, value_name = "tap=NAME[,mac=..]")]
    pub net: Option<lightvm_vmm::NetConfig>,
    /// Disk backed by a raw image file: PATH[,ro] (ro refuses the guest's writes).
    #[arg(long, value_name = "PATH[,ro]")]
    pub disk: Option<lightvm_vmm::DiskConfig>,
}

/// `lightvm bench`.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Boot time: the hello unikernel next to a static process doing the same work.
    Boot(BenchBootArgs),
}

/// `lightvm bench boot`.
#[derive(Debug, Args)]
pub struct BenchBootArgs {
    /// Measured runs per platform.
    #[arg(long, default_value_t = 100)]
    pub runs: usize,
    /// Fewer runs (20), for a quick look.
    #[arg(long)]
    pub quick: bool,
    /// The unikernel image to boot (default: build guests/hello).
    #[arg(long)]
    pub image: Option<PathBuf>,
    /// Print the results as JSON.
    #[arg(long)]
    pub json: bool,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    let duration = match trimmed.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => humantime::parse_duration(trimmed)
            .map_err(|e| format!("{e} (expected e.g. 500ms, 5s, 2m)"))?,
    };
    if duration.is_zero() {
        return Err("must be greater than zero".to_owned());
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_grammar_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations_accept_units_and_bare_seconds() {
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert!(parse_duration("0").is_err());
        assert!(parse_duration("soon").is_err());
    }
}
