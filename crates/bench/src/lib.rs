//! `lightvm bench`: the evaluation of the papers lightvm follows — processes,
//! containers, unikernels and VMs compared on image size, memory, start-up time,
//! density, CPU, memory bandwidth, network and HTTP — as one reproducible command.
//!
//! A run measures every available platform in one process, interleaved where it
//! can, and reports each metric as samples, min/median/p99/max and the ratio to the
//! `process` baseline of the same run (machines are noisy; only same-run ratios are
//! compared). It writes, to its output directory, `results.json` (schema in
//! `docs/bench-results.schema.json`), `results.csv`, an SVG and a PNG per metric
//! and `report.html`. Platforms or suites whose parts are missing are skipped with
//! the reason, never estimated.

mod apps;
mod context;
mod daemon;
pub mod error;
mod launch;
mod netclient;
mod netns;
pub mod platform;
mod plot;
mod report;
pub mod results;
mod runc;
pub mod stats;
pub mod suites;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

pub use error::BenchError;
pub use platform::{Platform, Start, Unikernel, Workload};
pub use results::{Metric, Reference, Results, Series, SuiteResult};
pub use stats::Summary;
pub use suites::Suite;

use context::Context;
use results::{Machine, PlatformStatus};

/// Reports progress while a run goes on (the CLI draws progress bars).
pub trait Progress {
    /// A new stage of `total` steps begins.
    fn stage(&self, name: &str, total: u64);
    /// One step of the current stage is done.
    fn advance(&self);
    /// A line for the user (a skipped platform, a failure).
    fn note(&self, text: &str);
}

/// How much the net, http and apps suites measure.
#[derive(Debug, Clone)]
pub struct NetParams {
    /// Round trips per platform and protocol (UDP, TCP).
    pub round_trips: usize,
    /// Interleaved rounds they are spread over (also the transfers' rounds).
    pub rounds: usize,
    /// Transfers per platform into the discard server.
    pub transfers: usize,
    /// MiB per transfer.
    pub transfer_mib: usize,
    /// Seconds of each wrk run.
    pub http_seconds: u32,
    /// Open connections at each step of the HTTP sweep (it stops early once no
    /// platform's rate grows).
    pub http_connections: Vec<usize>,
    /// Extra wrk runs at each platform's best step.
    pub http_repeats: usize,
    /// Measured rounds of each Debian program (apps), after one warm-up round;
    /// each round measures every platform once.
    pub app_rounds: usize,
    /// Seconds of each wrk run against nginx.
    pub nginx_seconds: u32,
    /// Connections wrk keeps open against nginx (one wrk thread).
    pub nginx_connections: usize,
    /// Requests of each redis-benchmark test (SET, GET).
    pub redis_requests: usize,
    /// redis-benchmark's parallel clients.
    pub redis_clients: usize,
    /// Seconds of each iperf3 test (one each way per round).
    pub iperf3_seconds: u32,
}

impl NetParams {
    /// A few seconds per suite, for CI.
    pub fn quick() -> Self {
        Self {
            round_trips: 1000,
            rounds: 5,
            transfers: 3,
            transfer_mib: 16,
            http_seconds: 1,
            http_connections: vec![1, 8, 64],
            http_repeats: 0,
            app_rounds: 2,
            nginx_seconds: 1,
            nginx_connections: 32,
            redis_requests: 2000,
            redis_clients: 50,
            iperf3_seconds: 1,
        }
    }

    /// A full run: enough samples for a p99 and a sweep to saturation.
    pub fn full() -> Self {
        Self {
            round_trips: 20_000,
            rounds: 10,
            transfers: 5,
            transfer_mib: 256,
            http_seconds: 5,
            http_connections: vec![1, 2, 4, 8, 16, 32, 64, 128, 256],
            http_repeats: 2,
            app_rounds: 5,
            nginx_seconds: 4,
            nginx_connections: 32,
            redis_requests: 20_000,
            redis_clients: 50,
            iperf3_seconds: 2,
        }
    }
}

/// A run's parameters.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// The `lightvm` executable (for `lightvm run` and the daemon).
    pub lightvm_exe: PathBuf,
    /// The unikernel of each workload, or why it could not be built.
    pub guests: BTreeMap<Workload, Result<PathBuf, String>>,
    /// The Linux personality's image for the `linux-program-*` rows, or why it
    /// could not be built; `None` when no suite of the run runs Linux programs.
    pub personality: Option<Result<PathBuf, String>>,
    /// Where results, plots and the report go; scratch files go to `OUT/work`.
    pub out_dir: PathBuf,
    /// Whether `--quick` was given.
    pub quick: bool,
    /// Measured rounds of the boot suite.
    pub runs: usize,
    /// Unrecorded rounds before them.
    pub warmup: usize,
    /// Idle instances per platform in the memory suite.
    pub memory_instances: usize,
    /// Instances per platform in the density suite.
    pub density_count: usize,
    /// Measured runs of the compute kernel.
    pub cpu_runs: usize,
    /// Runs of the STREAM kernel.
    pub stream_runs: usize,
    /// Measured runs of the syscall workload per platform (each one a median of
    /// batches inside the program).
    pub syscall_runs: usize,
    /// The daemon's pool size for `unikernel-pool`.
    pub pool: usize,
    /// Only these platforms (all when `None`).
    pub platforms: Option<Vec<Platform>>,
    /// The net and http suites' sizes.
    pub net: NetParams,
    /// The command line, recorded in the results.
    pub command: Vec<String>,
    /// Version strings to record (`lightvm` …); tool versions are added.
    pub versions: BTreeMap<String, String>,
}

/// Runs `suites` and writes every output file; returns the results.
pub fn run(
    config: &BenchConfig,
    suites: &[Suite],
    progress: &dyn Progress,
) -> Result<Results, BenchError> {
    let started = Instant::now();
    let started_unix_s = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let out = &config.out_dir;
    let work = out.join("work");
    std::fs::create_dir_all(&work).map_err(BenchError::io(&work))?;
    let machine = machine();

    let workloads: BTreeSet<Workload> = suites
        .iter()
        .flat_map(|s| s.workloads().iter().copied())
        .collect();
    let mut baselines = BTreeMap::new();
    for &workload in &workloads {
        match workload.baseline() {
            platform::Baseline::Source { code, defines } => {
                baselines.insert(workload, build_baseline(&work, workload, code, defines)?);
            }
            // A Debian program the host lacks: the suite that runs it says so.
            platform::Baseline::Debian(app) => {
                if app.installed() {
                    baselines.insert(workload, PathBuf::from(app.program));
                }
            }
        }
    }
    let mut unavailable = BTreeMap::new();
    let mut versions = config.versions.clone();
    if let Some(v) = first_line("cc", &["--version"]) {
        versions.insert("cc".to_owned(), v);
    }
    let runc = match runc::probe() {
        Ok(exe) => {
            let runc = runc::Runc::new(exe, &work)?;
            // The Debian programs' bundles are written when they start: they
            // run on the test network only.
            for (workload, binary) in &baselines {
                if workload.app().is_none() {
                    runc::write_bundle(
                        &runc.bundle(workload.name()),
                        &runc::BundleRoot::Binary(binary),
                        None,
                    )?;
                }
            }
            if let Some(v) = runc.version() {
                versions.insert("runc".to_owned(), v);
            }
            Some(runc)
        }
        Err(reason) => {
            unavailable.insert(Platform::Container, reason);
            None
        }
    };
    // Each unikernel and Linux-program row runs where its lightvm platform does;
    // where it cannot, lightvm_vmm says why in words about this host (no
    // /dev/kvm, a permission…).
    for on in lightvm_vmm::Platform::ALL {
        if let Err(why) = on.check() {
            for platform in Platform::ALL
                .into_iter()
                .filter(|p| p.lightvm() == Some(on))
            {
                unavailable.insert(platform, why.reason.clone());
            }
        }
    }
    let linux_host = platform::LinuxHost::detect();
    for platform in Platform::LINUX_PEERS {
        unavailable.insert(platform, platform::linux_peer_reason(platform, &linux_host));
    }
    let apps = workloads.iter().any(|w| w.app().is_some());
    for (tool, args) in [
        ("wrk", &["--version"][..]),
        ("qemu-system-x86_64", &["--version"][..]),
    ]
    .into_iter()
    .chain(
        [
            ("nginx", &["-v"][..]),
            ("redis-server", &["--version"][..]),
            ("redis-benchmark", &["--version"][..]),
            ("iperf3", &["--version"][..]),
        ]
        .into_iter()
        .filter(|_| apps),
    ) {
        if let Some(v) = first_line(tool, args) {
            versions.insert(tool.to_owned(), v);
        }
    }
    let platforms_at_start = unavailable.clone();

    let mut ctx = Context::new(config, progress, work.clone(), baselines, unavailable, runc);
    let mut suite_results = Vec::new();
    let unique: BTreeSet<Suite> = suites.iter().copied().collect();
    for suite in Suite::ALL.into_iter().filter(|s| unique.contains(s)) {
        let result = suite.run(&mut ctx);
        if let Some(reason) = &result.skipped_reason {
            progress.note(&format!("{suite}: skipped: {reason}"));
        }
        suite_results.push(result);
    }
    drop(ctx);

    let png = platform::which("rsvg-convert").is_some();
    if !png {
        progress
            .note("rsvg-convert not found: SVG plots only (apt-get install librsvg2-bin for PNGs)");
    }
    for suite in &mut suite_results {
        for metric in &mut suite.metrics {
            if !metric.series.is_empty() {
                metric.files = plot::draw(metric, out, png)?;
            }
        }
    }
    let results = Results {
        schema_version: results::SCHEMA_VERSION,
        command: config.command.clone(),
        started_unix_s,
        duration_s: started.elapsed().as_secs_f64(),
        quick: config.quick,
        runs: config.runs,
        warmup: config.warmup,
        machine,
        versions,
        platforms: Platform::ALL
            .into_iter()
            .map(|platform| {
                let reason = platforms_at_start.get(&platform).cloned();
                PlatformStatus {
                    platform,
                    description: platform.description(),
                    available: reason.is_none(),
                    reason,
                }
            })
            .collect(),
        suites: suite_results,
    };
    let json = out.join("results.json");
    std::fs::write(&json, serde_json::to_string_pretty(&results)?)
        .map_err(BenchError::io(&json))?;
    results::write_csv(&out.join("results.csv"), &results)?;
    let html = out.join("report.html");
    std::fs::write(&html, report::html(&results)).map_err(BenchError::io(&html))?;
    let _ = std::fs::remove_dir_all(&work);
    Ok(results)
}

/// Compiles a workload's C baseline (`code`, with `defines`) as a static binary
/// under `work`.
fn build_baseline(
    work: &Path,
    workload: Workload,
    code: &str,
    defines: &[&str],
) -> Result<PathBuf, BenchError> {
    let name = workload.name();
    let source = work.join(format!("{name}.c"));
    let binary = work.join(format!("{name}-static"));
    std::fs::write(&source, code).map_err(BenchError::io(&source))?;
    let output = Command::new("cc")
        .args(["-static", "-O2"])
        .args(defines)
        .arg("-o")
        .arg(&binary)
        .arg(&source)
        .output()
        .map_err(|e| BenchError::Baseline {
            name,
            detail: format!("running cc: {e}"),
        })?;
    if !output.status.success() {
        return Err(BenchError::Baseline {
            name,
            detail: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    Ok(binary)
}

/// The first line a tool prints for `args` (stdout, else stderr).
fn first_line(tool: &str, args: &[&str]) -> Option<String> {
    let path = platform::which(tool)?;
    let output = Command::new(path).args(args).output().ok()?;
    let text = if output.stdout.is_empty() {
        output.stderr
    } else {
        output.stdout
    };
    String::from_utf8_lossy(&text)
        .lines()
        .find(|l| !l.trim().is_empty())
        .map(|l| l.trim().to_owned())
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// What the report says about the machine.
fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_field = |name: &str| {
        cpuinfo
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_owned())
    };
    let mem_total_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()
        })
        .unwrap_or_default();
    Machine {
        hostname: read_trimmed("/proc/sys/kernel/hostname"),
        kernel: read_trimmed("/proc/sys/kernel/osrelease"),
        cpu_model: cpu_field("model name").unwrap_or_else(|| "unknown".to_owned()),
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        mem_total_kib,
        virtualized: cpu_field("flags")
            .is_some_and(|f| f.split_whitespace().any(|x| x == "hypervisor")),
        kvm: lightvm_vmm::Platform::Kvm.check().is_ok(),
        load_average_start: read_trimmed("/proc/loadavg")
            .split_whitespace()
            .next()
            .and_then(|l| l.parse().ok())
            .unwrap_or_default(),
        // SAFETY: geteuid has no preconditions and cannot fail.
        root: unsafe { libc::geteuid() } == 0,
    }
}
