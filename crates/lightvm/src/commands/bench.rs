//! `lightvm bench boot`: the hello unikernel's boot time next to a process's.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use lightvm_bench::{BootBench, BootResults};
use lightvm_images::unikernel::UnikernelBuild;

use crate::cli::BenchBootArgs;

/// Where the hello guest lives in a source checkout.
fn default_hello_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../guests/hello")
}

pub fn boot(args: &BenchBootArgs) -> anyhow::Result<u8> {
    let runs = if args.quick { 20 } else { args.runs };
    anyhow::ensure!(runs > 0, "--runs must be at least 1");
    let unikernel = match &args.image {
        Some(image) => image.clone(),
        None => {
            eprintln!("lightvm: building the hello unikernel…");
            UnikernelBuild::new(default_hello_dir())
                .build()
                .context("building guests/hello (pass --image to use another)")?
                .path
        }
    };
    let bench = BootBench {
        unikernel,
        lightvm_exe: std::env::current_exe().ok(),
        runs,
        warmup: (runs / 10).max(3),
        work_dir: std::env::temp_dir().join("lightvm-bench"),
    };
    let results = bench.run(|round, total| {
        if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            eprint!("\rlightvm: boot benchmark, round {round}/{total}");
            if round == total {
                eprintln!();
            }
        }
    })?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&results)?);
    } else {
        print_table(&results)?;
    }
    Ok(0)
}

fn print_table(results: &BootResults) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "Boot of a hello workload, {} runs each, interleaved (µs; ratio = median / process median)\n",
        results.runs
    )?;
    writeln!(
        out,
        "{:<12} {:>22} {:>7}   {:>22} {:>7}",
        "platform", "to main: p50 / p99", "ratio", "to exit: p50 / p99", "ratio"
    )?;
    for platform in &results.platforms {
        let to_main = platform.to_main_us.map_or("-".to_owned(), |s| {
            format!("{:.0} / {:.0}", s.median, s.p99)
        });
        let ratio = |to_main| {
            results
                .ratio_to_process(platform, to_main)
                .map_or("-".to_owned(), |r| format!("{r:.2}x"))
        };
        writeln!(
            out,
            "{:<12} {:>22} {:>7}   {:>22} {:>7}",
            platform.platform,
            to_main,
            ratio(true),
            format!(
                "{:.0} / {:.0}",
                platform.to_exit_us.median, platform.to_exit_us.p99
            ),
            ratio(false)
        )?;
    }
    writeln!(out)?;
    for platform in &results.platforms {
        writeln!(out, "  {:<12} {}", platform.platform, platform.description)?;
    }
    Ok(())
}
