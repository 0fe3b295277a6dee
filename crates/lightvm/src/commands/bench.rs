//! `lightvm bench <suite>`: builds the workloads' unikernels, runs the suite on
//! every available platform with progress bars, prints the headline table and
//! writes results.json, results.csv, the plots and report.html.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use lightvm_bench::{BenchConfig, NetParams, Platform, Progress, Results, Workload};
use lightvm_images::unikernel::UnikernelBuild;

use crate::cli::BenchArgs;

/// Where a guest lives in a source checkout.
fn guest_dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../guests")
        .join(name)
}

/// Builds `guests/NAME`; the error as text, for the suites' skip reasons.
fn build_guest(name: &str) -> Result<PathBuf, String> {
    let built = UnikernelBuild {
        quiet: true,
        ..UnikernelBuild::new(guest_dir(name))
    }
    .build()
    .map_err(|e| format!("building guests/{name}: {e}"))?;
    std::fs::canonicalize(&built.path).map_err(|e| format!("{}: {e}", built.path.display()))
}

/// Builds the Linux personality (crates/personality) for the linux-program rows;
/// the error as text, for their skip reasons.
fn build_personality() -> Result<PathBuf, String> {
    let path = lightvm_images::personality::build()
        .map_err(|e| format!("building the Linux personality (crates/personality): {e}"))?;
    std::fs::canonicalize(&path).map_err(|e| format!("{}: {e}", path.display()))
}

/// Progress bars on stderr (hidden when it is not a terminal).
struct Bars {
    bar: RefCell<Option<indicatif::ProgressBar>>,
}

impl Bars {
    fn finish(&self) {
        if let Some(bar) = self.bar.borrow_mut().take() {
            bar.finish_and_clear();
        }
    }
}

impl Progress for Bars {
    fn stage(&self, name: &str, total: u64) {
        self.finish();
        let style = indicatif::ProgressStyle::with_template(
            "{prefix:>8} [{elapsed_precise}] {wide_bar} {pos}/{len} ({eta})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
        let bar = indicatif::ProgressBar::new(total).with_style(style);
        bar.set_prefix(name.to_owned());
        *self.bar.borrow_mut() = Some(bar);
    }

    fn advance(&self) {
        if let Some(bar) = self.bar.borrow().as_ref() {
            bar.inc(1);
        }
    }

    fn note(&self, text: &str) {
        match self.bar.borrow().as_ref() {
            Some(bar) if !bar.is_hidden() => bar.println(format!("lightvm: {text}")),
            _ => eprintln!("lightvm: {text}"),
        }
    }
}

pub fn bench(args: &BenchArgs) -> anyhow::Result<u8> {
    let suites = &args.suite.0;
    let runs = args.runs.unwrap_or(if args.quick { 10 } else { 50 });
    anyhow::ensure!(runs > 0, "--runs must be at least 1");
    let density_count = args.count.unwrap_or(if args.quick { 20 } else { 200 });
    anyhow::ensure!(density_count > 0, "--count must be at least 1");
    let pool = args.pool.unwrap_or(if args.quick { 4 } else { 16 });
    anyhow::ensure!(pool > 0, "--pool must be at least 1");

    let workloads: BTreeSet<Workload> = suites
        .iter()
        .flat_map(|s| s.workloads().iter().copied())
        .collect();
    let wanted =
        |platform: Platform| args.platforms.is_empty() || args.platforms.contains(&platform);
    let mut guests = BTreeMap::new();
    for &workload in &workloads {
        if let Ok(name) = workload.guest() {
            eprintln!("lightvm: building the {name} unikernel…");
            guests.insert(workload, build_guest(name));
        }
    }
    let linux_programs = workloads.iter().any(|w| w.linux_program_mem().is_ok())
        && Platform::LINUX_PROGRAMS.into_iter().any(wanted);
    let personality = linux_programs.then(|| {
        eprintln!("lightvm: building the Linux personality…");
        build_personality()
    });
    let out = args.out.clone();
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let config = BenchConfig {
        lightvm_exe: std::env::current_exe().context("finding the lightvm executable")?,
        guests,
        personality,
        out_dir: out.clone(),
        quick: args.quick,
        runs,
        warmup: if args.quick { 3 } else { (runs / 10).max(3) },
        memory_instances: if args.quick { 3 } else { runs.min(10) },
        density_count,
        cpu_runs: if args.quick { 2 } else { runs.min(10) },
        stream_runs: if args.quick { 1 } else { runs.min(5) },
        syscall_runs: if args.quick { 3 } else { runs.min(20) },
        pool,
        platforms: (!args.platforms.is_empty()).then(|| args.platforms.clone()),
        net: if args.quick {
            NetParams::quick()
        } else {
            NetParams::full()
        },
        command: std::env::args().collect(),
        versions: BTreeMap::from([("lightvm".to_owned(), env!("CARGO_PKG_VERSION").to_owned())]),
    };
    let bars = Bars {
        bar: RefCell::new(None),
    };
    let results = lightvm_bench::run(&config, suites, &bars)?;
    bars.finish();
    print_headline(&results)?;
    println!("\nwrote {}", out.join("report.html").display());
    Ok(0)
}

/// The headline: every metric's median per platform, with its ratio to process.
fn print_headline(results: &Results) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "median per platform (ratio to the process median of this run)\n"
    )?;
    let platforms = results.measured_platforms();
    let metrics: Vec<_> = results
        .suites
        .iter()
        .flat_map(|s| &s.metrics)
        .filter(|m| m.headline)
        .collect();
    let cell = |metric: &lightvm_bench::Metric, platform| {
        metric
            .series_of(platform)
            .and_then(|s| {
                let median = s.summary?.median;
                let ratio = s
                    .ratio_to_process
                    .map_or(String::new(), |r| format!(" ({r:.2}x)"));
                Some(format!("{median:.1}{ratio}"))
            })
            .unwrap_or_else(|| "-".to_owned())
    };
    // Each column as wide as its name or its widest cell: six or more platforms
    // still fit a wide terminal.
    let widths: Vec<usize> = platforms
        .iter()
        .map(|&platform| {
            metrics
                .iter()
                .map(|m| cell(m, platform).chars().count())
                .chain([platform.name().len()])
                .max()
                .unwrap_or_default()
        })
        .collect();
    let id_width = metrics
        .iter()
        .map(|m| m.id.len())
        .max()
        .unwrap_or_default()
        .max("metric".len());
    write!(out, "{:<id_width$} {:>6}", "metric", "unit")?;
    for (platform, width) in platforms.iter().zip(&widths) {
        write!(out, "  {:>width$}", platform.name())?;
    }
    writeln!(out)?;
    for metric in metrics {
        write!(out, "{:<id_width$} {:>6}", metric.id, metric.unit)?;
        for (platform, width) in platforms.iter().zip(&widths) {
            write!(out, "  {:>width$}", cell(metric, *platform))?;
        }
        writeln!(out)?;
    }
    for suite in &results.suites {
        if let Some(reason) = &suite.skipped_reason {
            writeln!(out, "\n{}: skipped: {reason}", suite.suite)?;
        }
        for skip in &suite.skipped {
            if results
                .platforms
                .iter()
                .any(|p| p.platform == skip.platform && p.available)
            {
                writeln!(
                    out,
                    "{}: {} skipped: {}",
                    suite.suite, skip.platform, skip.reason
                )?;
            }
        }
    }
    let unavailable: Vec<String> = results
        .platforms
        .iter()
        .filter_map(|p| Some(format!("  {}: {}", p.platform, p.reason.as_ref()?)))
        .collect();
    if !unavailable.is_empty() {
        writeln!(out, "\nnot available here:\n{}", unavailable.join("\n"))?;
    }
    Ok(())
}
