//! `lightvm bench boot`: the hello unikernel's boot time next to a process's.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use lightvm_bench::{BootBench, BootResults, DensityBench};
use lightvm_images::unikernel::UnikernelBuild;

use crate::cli::{BenchBootArgs, BenchDensityArgs};

/// Where a guest lives in a source checkout.
fn guest_dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../guests")
        .join(name)
}

/// `image`, or the named guest built from the source checkout.
fn image_or_guest(image: Option<&PathBuf>, guest: &str) -> anyhow::Result<PathBuf> {
    match image {
        Some(image) => Ok(image.clone()),
        None => {
            eprintln!("lightvm: building the {guest} unikernel…");
            Ok(UnikernelBuild::new(guest_dir(guest))
                .build()
                .with_context(|| format!("building guests/{guest} (pass --image to use another)"))?
                .path)
        }
    }
}

pub fn density(args: &BenchDensityArgs) -> anyhow::Result<u8> {
    anyhow::ensure!(args.count > 0, "--count must be at least 1");
    let bench = DensityBench {
        lightvm_exe: std::env::current_exe()?,
        image: std::fs::canonicalize(image_or_guest(args.image.as_ref(), "idle")?)?,
        count: args.count,
        pool: args.pool,
        sample_every: args.sample_every,
        out_dir: args.out.clone(),
    };
    let bar = indicatif::ProgressBar::new(args.count as u64).with_style(
        indicatif::ProgressStyle::with_template(
            "{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} VMs ({per_sec})",
        )?,
    );
    bar.set_prefix("density");
    let results = bench.run(|n, _| bar.set_position(n as u64))?;
    bar.finish_and_clear();
    let created = results.samples.len();
    println!("Density: {created} idle VMs created one after another through the daemon\n");
    if let Some(reason) = &results.stopped_early {
        println!("stopped early: {reason}");
    }
    if let (Some(latency), Some(spawn)) = (results.latency(), results.process_spawn()) {
        let spawn = spawn.median;
        println!(
            "creation (request → boot-done): p50 {:.0} µs, p99 {:.0} µs; posix_spawn of a static process p50 {spawn:.0} µs (ratio {:.2}x)",
            latency.median,
            latency.p99,
            latency.median / spawn
        );
    }
    let mut around = vec![1, 1000, 10_000, created];
    around.retain(|&n| n <= created);
    around.dedup();
    for n in around {
        {
            if let Some(median) = results.latency_around(n) {
                println!("  around VM {n:>5}: {median:.0} µs");
            }
        }
    }
    if let Some(per_vm) = results.mem_per_vm_kib() {
        println!("host memory per idle VM: {per_vm:.0} KiB (MemTotal − MemAvailable growth / VMs)");
    }
    println!(
        "\nwrote {} and {}",
        results.csv.display(),
        results.svg.display()
    );
    Ok(0)
}

pub fn boot(args: &BenchBootArgs) -> anyhow::Result<u8> {
    let runs = if args.quick { 20 } else { args.runs };
    anyhow::ensure!(runs > 0, "--runs must be at least 1");
    let unikernel = image_or_guest(args.image.as_ref(), "hello")?;
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
