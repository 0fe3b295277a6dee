//! Boot time: how long until the workload's `main` runs, and until it has exited.
//!
//! The workload is "print one line and exit 0" on every platform:
//!
//! * `process` — a static C binary started with `posix_spawn` (std's `Command` uses
//!   it), timed to the first byte on its stdout pipe (its `main` ran) and to `wait`;
//! * `unikernel` — the hello unikernel booted by the VMM library in this process: a
//!   new KVM VM each run, timed by the VMM from the start of `Vm::build` to the
//!   guest's boot-done hypercall (its `main`) and to its exit;
//! * `lightvm-run` — the same unikernel through the `lightvm run` command, a new
//!   process *and* a new VM, timed from spawn to exit: what a user at a shell gets.
//!
//! Runs are interleaved (one of each per round) so machine noise hits all alike.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use lightvm_vmm::{Vm, VmConfig, VmExit};
use serde::Serialize;

use crate::stats::Summary;

/// The C source of the process baseline.
const BASELINE_SOURCE: &str = include_str!("../baselines/hello.c");

/// Why the benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The baseline could not be compiled.
    #[error("cannot build the process baseline ({0}); it needs gcc and static glibc: apt-get install build-essential")]
    Baseline(String),
    /// A platform failed during a run.
    #[error("{platform}: {detail}")]
    Platform {
        /// Which platform.
        platform: &'static str,
        /// What went wrong.
        detail: String,
    },
    /// File-system trouble in the work directory.
    #[error("{path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// The boot benchmark's parameters.
#[derive(Debug, Clone)]
pub struct BootBench {
    /// The hello unikernel image.
    pub unikernel: PathBuf,
    /// The `lightvm` executable, for the `lightvm-run` platform (skipped if `None`).
    pub lightvm_exe: Option<PathBuf>,
    /// Measured rounds.
    pub runs: usize,
    /// Unrecorded rounds first (page cache, CPU frequency, KVM module state).
    pub warmup: usize,
    /// Where the baseline binary is built.
    pub work_dir: PathBuf,
}

/// One platform's figures.
#[derive(Debug, Clone, Serialize)]
pub struct PlatformResult {
    /// Short name.
    pub platform: &'static str,
    /// What exactly was measured.
    pub description: &'static str,
    /// Start to the workload's `main` (µs), when the platform lets us see it.
    pub to_main_us: Option<Summary>,
    /// Start to exit (µs).
    pub to_exit_us: Summary,
}

/// All platforms of one run.
#[derive(Debug, Clone, Serialize)]
pub struct BootResults {
    /// Measured rounds.
    pub runs: usize,
    /// The platforms, `process` first.
    pub platforms: Vec<PlatformResult>,
}

impl BootResults {
    /// Median of `platform`'s metric divided by the process baseline's median.
    pub fn ratio_to_process(&self, platform: &PlatformResult, to_main: bool) -> Option<f64> {
        let pick = |p: &PlatformResult| {
            if to_main {
                p.to_main_us.map(|s| s.median)
            } else {
                Some(p.to_exit_us.median)
            }
        };
        let baseline = self.platforms.iter().find(|p| p.platform == "process")?;
        Some(pick(platform)? / pick(baseline)?)
    }
}

#[derive(Default)]
struct Samples {
    to_main: Vec<f64>,
    to_exit: Vec<f64>,
}

impl BootBench {
    /// Runs every platform `warmup + runs` times, interleaved; `progress` is called
    /// after each round with (round, total rounds).
    pub fn run(&self, mut progress: impl FnMut(usize, usize)) -> Result<BootResults, BenchError> {
        let baseline = build_baseline(&self.work_dir)?;
        let mut process = Samples::default();
        let mut unikernel = Samples::default();
        let mut lightvm_run = Samples::default();
        let total = self.warmup + self.runs;
        for round in 0..total {
            let record = round >= self.warmup;
            let (main, exit) = spawn_process(&baseline)?;
            if record {
                process.to_main.push(main);
                process.to_exit.push(exit);
            }
            let (main, exit) = boot_in_process(&self.unikernel)?;
            if record {
                unikernel.to_main.push(main);
                unikernel.to_exit.push(exit);
            }
            if let Some(exe) = &self.lightvm_exe {
                let exit = spawn_lightvm_run(exe, &self.unikernel)?;
                if record {
                    lightvm_run.to_exit.push(exit);
                }
            }
            progress(round + 1, total);
        }
        let summary = |platform: &'static str, samples: &[f64]| {
            Summary::of(samples).ok_or(BenchError::Platform {
                platform,
                detail: "no samples (zero runs?)".to_owned(),
            })
        };
        let mut platforms = vec![
            PlatformResult {
                platform: "process",
                description: "static C hello, posix_spawn → first stdout byte / wait",
                to_main_us: Some(summary("process", &process.to_main)?),
                to_exit_us: summary("process", &process.to_exit)?,
            },
            PlatformResult {
                platform: "unikernel",
                description:
                    "hello unikernel, new KVM VM in this process → boot-done hypercall / exit",
                to_main_us: Some(summary("unikernel", &unikernel.to_main)?),
                to_exit_us: summary("unikernel", &unikernel.to_exit)?,
            },
        ];
        if self.lightvm_exe.is_some() {
            platforms.push(PlatformResult {
                platform: "lightvm-run",
                description:
                    "`lightvm run` of the hello unikernel: new process + new VM, spawn → exit",
                to_main_us: None,
                to_exit_us: summary("lightvm-run", &lightvm_run.to_exit)?,
            });
        }
        Ok(BootResults {
            runs: self.runs,
            platforms,
        })
    }
}

pub(crate) fn build_baseline(work_dir: &Path) -> Result<PathBuf, BenchError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| BenchError::Io { path, source }
    };
    std::fs::create_dir_all(work_dir).map_err(io(work_dir))?;
    let source = work_dir.join("hello.c");
    let binary = work_dir.join("hello-static");
    std::fs::write(&source, BASELINE_SOURCE).map_err(io(&source))?;
    let output = Command::new("cc")
        .args(["-static", "-O2", "-o"])
        .arg(&binary)
        .arg(&source)
        .output()
        .map_err(|e| BenchError::Baseline(format!("running cc: {e}")))?;
    if !output.status.success() {
        return Err(BenchError::Baseline(
            String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        ));
    }
    Ok(binary)
}

fn micros_since(start: Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1e6
}

/// Spawns the baseline; returns (µs to its first output byte, µs to its exit).
pub(crate) fn spawn_process(binary: &Path) -> Result<(f64, f64), BenchError> {
    let failed = |detail: String| BenchError::Platform {
        platform: "process",
        detail,
    };
    let start = Instant::now();
    let mut child = Command::new(binary)
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| failed(format!("spawn: {e}")))?;
    let mut stdout = child
        .stdout
        .take()
        .ok_or_else(|| failed("no stdout pipe".to_owned()))?;
    let mut first = [0u8; 1];
    stdout
        .read_exact(&mut first)
        .map_err(|e| failed(format!("reading its output: {e}")))?;
    let to_main = micros_since(start);
    let status = child.wait().map_err(|e| failed(format!("wait: {e}")))?;
    let to_exit = micros_since(start);
    if !status.success() {
        return Err(failed(format!("baseline exited with {status}")));
    }
    Ok((to_main, to_exit))
}

/// Boots the unikernel with the VMM library; returns (µs to boot done, µs to exit).
fn boot_in_process(image: &Path) -> Result<(f64, f64), BenchError> {
    let failed = |detail: String| BenchError::Platform {
        platform: "unikernel",
        detail,
    };
    let config =
        VmConfig::new(image, VmConfig::DEFAULT_MEM, "", None).map_err(|e| failed(e.to_string()))?;
    let report = Vm::build(&config, Box::new(std::io::sink()))
        .and_then(Vm::run)
        .map_err(|e| failed(e.to_string()))?;
    if !matches!(report.exit, VmExit::Exited { status: 0, .. }) {
        return Err(failed(format!(
            "the guest did not exit cleanly: {}",
            report.exit
        )));
    }
    let to_main = report
        .timings
        .boot_done_us
        .ok_or_else(|| failed("the guest never signalled boot done".to_owned()))?;
    Ok((to_main, report.timings.total_us))
}

/// Runs `lightvm run IMAGE` as a new process; returns µs from spawn to exit.
fn spawn_lightvm_run(exe: &Path, image: &Path) -> Result<f64, BenchError> {
    let start = Instant::now();
    let status = Command::new(exe)
        .arg("run")
        .arg(image)
        .stdout(Stdio::null())
        .status()
        .map_err(|e| BenchError::Platform {
            platform: "lightvm-run",
            detail: format!("spawn: {e}"),
        })?;
    let elapsed = micros_since(start);
    if !status.success() {
        return Err(BenchError::Platform {
            platform: "lightvm-run",
            detail: format!("`lightvm run` exited with {status}"),
        });
    }
    Ok(elapsed)
}
