//! What a run produces: every sample with its summary and its ratio to the process
//! baseline of the same run, serialised as `results.json` (schema:
//! `docs/bench-results.schema.json`) and `results.csv`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::BenchError;
use crate::platform::Platform;
use crate::stats::Summary;

/// The version of the results format; bumped when a field changes meaning.
/// 2: the unikernel rows are named by lightvm platform (`unikernel-kvm-cold`,
/// `unikernel-process-pool` …) instead of `unikernel-cold` and `unikernel-pool`.
/// 3: the `linux-program-*` rows and the `syscall` suite; a metric may name a
/// second yardstick (`reference`) and its series carry their ratio to it.
/// 4: the `apps` suite (Debian's nginx, redis-server and iperf3), and the
/// `linux-program-*` rows in the `net` and `http` suites.
pub const SCHEMA_VERSION: u32 = 4;

/// A whole run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Results {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// The command line that produced it.
    pub command: Vec<String>,
    /// Start of the run, seconds since the UNIX epoch.
    pub started_unix_s: u64,
    /// Wall-clock length of the run (s).
    pub duration_s: f64,
    /// Whether `--quick` was given.
    pub quick: bool,
    /// Measured runs per platform (`--runs`).
    pub runs: usize,
    /// Unrecorded runs before them.
    pub warmup: usize,
    /// The machine it ran on.
    pub machine: Machine,
    /// Versions of lightvm and of every tool used.
    pub versions: BTreeMap<String, String>,
    /// Every platform, and why it was not available if it was not.
    pub platforms: Vec<PlatformStatus>,
    /// The suites run.
    pub suites: Vec<SuiteResult>,
}

impl Results {
    /// The platforms with a series in any metric, in the order of `Platform::ALL`:
    /// the columns of every table of this run.
    pub fn measured_platforms(&self) -> Vec<Platform> {
        Platform::ALL
            .into_iter()
            .filter(|p| {
                self.suites
                    .iter()
                    .flat_map(|s| &s.metrics)
                    .any(|m| m.series_of(*p).is_some())
            })
            .collect()
    }
}

/// The machine: what a reader needs to judge the numbers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Machine {
    /// Host name.
    pub hostname: String,
    /// Kernel release.
    pub kernel: String,
    /// CPU model.
    pub cpu_model: String,
    /// CPUs available to the run.
    pub cpus: usize,
    /// Physical memory (KiB).
    pub mem_total_kib: u64,
    /// Whether the machine is itself a VM (the CPU's hypervisor flag): its KVM is
    /// then nested.
    pub virtualized: bool,
    /// Whether `/dev/kvm` could be opened.
    pub kvm: bool,
    /// Load average (1 min) when the run started: other work on the machine.
    pub load_average_start: f64,
    /// Whether the run had root (runc needs it).
    pub root: bool,
}

/// One platform's availability on this machine.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlatformStatus {
    /// Which.
    pub platform: Platform,
    /// What an instance is.
    pub description: String,
    /// Whether suites could use it.
    pub available: bool,
    /// Why not, when not.
    pub reason: Option<String>,
}

/// One suite's outcome.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SuiteResult {
    /// The suite's name (`boot`, `size` …).
    pub suite: String,
    /// How the suite measures, for the report.
    pub method: String,
    /// Why the whole suite was skipped, if it was.
    pub skipped_reason: Option<String>,
    /// Platforms this suite skipped, and why.
    pub skipped: Vec<Skip>,
    /// What it measured.
    pub metrics: Vec<Metric>,
    /// Wall-clock length of the suite (s).
    pub duration_s: f64,
}

/// A platform left out of a suite.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Skip {
    /// Which.
    pub platform: Platform,
    /// Why.
    pub reason: String,
}

/// How a metric is plotted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PlotKind {
    /// One bar per platform (median, whisker min–p99) on a log scale: quantities
    /// that differ by orders of magnitude (boot time, size).
    LogBars,
    /// One bar per platform on a linear scale.
    Bars,
    /// One line per platform over `x` (density, rate sweeps).
    Lines,
    /// The same on a log scale, for platforms orders of magnitude apart.
    LogLines,
    /// Lines over a doubling `x` (1, 2, 4 … connections), on a log `x` axis.
    Sweep,
    /// The same with a log `y` axis too (latency that grows by orders of magnitude).
    LogSweep,
}

/// One measured quantity, on every platform.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Metric {
    /// Identifier, also the plot's file name (`boot-to-main` → `boot-to-main.svg`).
    pub id: String,
    /// Title of its plot and table.
    pub title: String,
    /// Unit of the samples (`us`, `KiB`, `MB/s` …).
    pub unit: String,
    /// Label of `x` for line plots.
    pub x_label: Option<String>,
    /// Whether smaller is better (time, size) or larger (throughput).
    pub lower_is_better: bool,
    /// How it is plotted.
    pub plot: PlotKind,
    /// One series per platform measured.
    pub series: Vec<Series>,
    /// Whether its median belongs in the headline table (not for curves whose
    /// median over x means nothing, such as memory as N grows).
    pub headline: bool,
    /// A second yardstick besides the process median of this metric, if any.
    pub reference: Option<Reference>,
    /// The plot files written, relative to the output directory.
    pub files: Vec<String>,
}

/// A value every median of a metric is also compared with: one measured in the
/// same run, such as the host's `getppid()` for every system call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reference {
    /// What it is, for tables (`the process's getppid()`).
    pub label: String,
    /// Its value, in the metric's unit.
    pub value: f64,
}

/// One platform's samples of a metric.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Series {
    /// Which platform.
    pub platform: Platform,
    /// Every sample, in the order taken.
    pub samples: Vec<f64>,
    /// For line plots: the x of each sample.
    pub x: Option<Vec<f64>>,
    /// Min / median / p99 / max of the samples.
    pub summary: Option<Summary>,
    /// This median divided by the `process` median of the same run.
    pub ratio_to_process: Option<f64>,
    /// This median divided by the metric's [`Reference`], when it has one.
    pub ratio_to_reference: Option<f64>,
}

impl Metric {
    /// A metric with no samples yet.
    pub fn new(id: &str, title: &str, unit: &str, plot: PlotKind, lower_is_better: bool) -> Self {
        Self {
            id: id.to_owned(),
            title: title.to_owned(),
            unit: unit.to_owned(),
            x_label: None,
            lower_is_better,
            plot,
            series: Vec::new(),
            headline: true,
            reference: None,
            files: Vec::new(),
        }
    }

    /// The same, plotted as lines over `x_label`.
    pub fn lines(id: &str, title: &str, unit: &str, x_label: &str) -> Self {
        Self {
            x_label: Some(x_label.to_owned()),
            ..Self::new(id, title, unit, PlotKind::Lines, true)
        }
    }

    /// Adds `platform`'s samples (ignored when there are none).
    pub fn push(&mut self, platform: Platform, samples: Vec<f64>, x: Option<Vec<f64>>) {
        if samples.is_empty() {
            return;
        }
        self.series.push(Series {
            platform,
            summary: Summary::of(&samples),
            samples,
            x,
            ratio_to_process: None,
            ratio_to_reference: None,
        });
    }

    /// The series of `platform`, if measured.
    pub fn series_of(&self, platform: Platform) -> Option<&Series> {
        self.series.iter().find(|s| s.platform == platform)
    }

    /// Fills every series' ratio to the process baseline of this run (and to
    /// the metric's reference, if it has one) and puts the series in
    /// [`Platform::ALL`] order.
    pub fn finish(&mut self) {
        self.series.sort_by_key(|s| s.platform);
        let baseline = self
            .series_of(Platform::Process)
            .and_then(|s| s.summary)
            .map(|s| s.median);
        let reference = self.reference.as_ref().map(|r| r.value);
        let ratio = |summary: Option<Summary>, base: Option<f64>| match (summary, base) {
            (Some(summary), Some(base)) if base > 0.0 => Some(summary.median / base),
            _ => None,
        };
        for series in &mut self.series {
            series.ratio_to_process = ratio(series.summary, baseline);
            series.ratio_to_reference = ratio(series.summary, reference);
        }
    }
}

/// Writes every sample as one CSV row: `suite,metric,unit,platform,index,x,value`.
pub fn write_csv(path: &Path, results: &Results) -> Result<(), BenchError> {
    let write = || -> std::io::Result<()> {
        let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
        writeln!(out, "suite,metric,unit,platform,index,x,value")?;
        for suite in &results.suites {
            for metric in &suite.metrics {
                for series in &metric.series {
                    for (index, value) in series.samples.iter().enumerate() {
                        let x = series
                            .x
                            .as_ref()
                            .and_then(|x| x.get(index))
                            .map_or(String::new(), |x| x.to_string());
                        writeln!(
                            out,
                            "{},{},{},{},{index},{x},{value}",
                            suite.suite, metric.id, metric.unit, series.platform
                        )?;
                    }
                }
            }
        }
        out.flush()
    };
    write().map_err(BenchError::io(path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::{Start, Unikernel};

    const KVM_COLD: Platform =
        Platform::Unikernel(Unikernel::new(lightvm_vmm::Platform::Kvm, Start::Cold));

    #[test]
    fn ratios_are_to_the_process_median_of_the_same_metric() {
        let mut metric = Metric::new("m", "M", "us", PlotKind::LogBars, true);
        metric.push(KVM_COLD, vec![30.0, 10.0, 20.0], None);
        metric.push(Platform::Process, vec![5.0, 10.0, 15.0], None);
        metric.push(Platform::Container, vec![], None);
        metric.finish();
        assert_eq!(metric.series.len(), 2, "empty series are left out");
        assert_eq!(metric.series[0].platform, Platform::Process);
        assert_eq!(metric.series[0].ratio_to_process, Some(1.0));
        assert_eq!(metric.series[1].ratio_to_process, Some(2.0));
    }

    #[test]
    fn a_reference_gives_every_series_a_second_ratio() {
        let mut metric = Metric::new("m", "M", "ns", PlotKind::LogBars, true);
        metric.push(Platform::Process, vec![200.0], None);
        metric.push(KVM_COLD, vec![50.0], None);
        metric.finish();
        assert_eq!(metric.series[1].ratio_to_reference, None, "no reference");
        metric.reference = Some(Reference {
            label: "the process's getppid()".to_owned(),
            value: 100.0,
        });
        metric.finish();
        assert_eq!(metric.series[0].ratio_to_reference, Some(2.0));
        assert_eq!(metric.series[1].ratio_to_reference, Some(0.5));
        assert_eq!(metric.series[1].ratio_to_process, Some(0.25));
    }

    #[test]
    fn no_baseline_no_ratio() {
        let mut metric = Metric::new("m", "M", "us", PlotKind::Bars, true);
        metric.push(KVM_COLD, vec![1.0], None);
        metric.finish();
        assert_eq!(metric.series[0].ratio_to_process, None);
    }
}
