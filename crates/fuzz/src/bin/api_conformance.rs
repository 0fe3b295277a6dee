//! `api-conformance`: schemathesis's checks of a running `lightvm daemon`
//! against `docs/openapi.json` (see `lightvm_fuzz::conformance`).
//!
//!     api-conformance --cases 10000 [--seed S] [--lightvm PATH] [--dir DIR]
//!
//! It builds the `hello` guest and the Linux personality, starts a daemon on a
//! socket and state directory of its own under DIR, sends the cases, and prints
//! the statuses seen and the first failure of each kind, with the seed and the
//! request to replay it. Exit status 1 when a check failed.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use lightvm_fuzz::conformance;

#[derive(Debug, Parser)]
#[command(about = "Fuzz a running lightvm daemon against docs/openapi.json")]
struct Args {
    /// How many requests to send.
    #[arg(long, default_value_t = 1000)]
    cases: u64,
    /// The seed (default: from the clock); the same seed replays the same cases.
    #[arg(long)]
    seed: Option<u64>,
    /// The `lightvm` binary (default: the one beside this program).
    #[arg(long)]
    lightvm: Option<PathBuf>,
    /// Scratch directory for the daemon's socket, state and images.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Stop at the first failing case.
    #[arg(long)]
    stop_at_first: bool,
    /// Print every case and the answer's status on stderr.
    #[arg(long, short)]
    verbose: bool,
}

fn main() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    let lightvm = match args.lightvm {
        Some(path) => path,
        None => std::env::current_exe()
            .context("finding this program")?
            .with_file_name("lightvm"),
    };
    anyhow::ensure!(
        lightvm.exists(),
        "no lightvm binary at {} (build it, or give --lightvm)",
        lightvm.display()
    );
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    });
    let dir = args.dir.unwrap_or_else(|| {
        std::env::temp_dir().join(format!("lightvm-api-conformance-{}", std::process::id()))
    });
    println!(
        "api-conformance: {} cases, seed {seed}, daemon in {}",
        args.cases,
        dir.display()
    );
    let report = conformance::against_new_daemon(
        &lightvm,
        &dir,
        args.cases,
        seed,
        args.stop_at_first,
        args.verbose,
    )?;
    print!("{report}");
    let _ = std::fs::remove_dir_all(&dir);
    if report.failures.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        println!(
            "replay: api-conformance --seed {seed} --cases {} --stop-at-first",
            report.failures[0].case + 1
        );
        Ok(ExitCode::from(1))
    }
}
