//! Density: create N idle VMs one after another through the daemon, and record how
//! long each creation took and how much host memory the VMs hold as N grows.
//!
//! This is LightVM's headline experiment: with the prepare phase done ahead of time
//! and no central store on the creation path, the 10,000th VM should cost what the
//! 1st did. The daemon is started for the run with its own state directory, asked
//! for one VM at a time (each request waits until the pool has a prepared shell, so
//! what is measured is the execute phase, as the daemon serves it), and every VM is
//! killed at the end. A `posix_spawn` baseline is measured in the same run,
//! interleaved with the VMs (one spawn every `sample_every` VMs), so that both see
//! the same machine load.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hyper::{Method, StatusCode};
use lightvm_toolstack::api::{PoolStatus, VmView};
use lightvm_toolstack::Client;
use serde::Serialize;

use crate::boot::{build_baseline, spawn_process, BenchError};
use crate::stats::Summary;

/// How long to wait for the pool to offer a prepared shell before asking anyway.
const POOL_WAIT: Duration = Duration::from_secs(10);

/// The density run's parameters.
#[derive(Debug, Clone)]
pub struct DensityBench {
    /// The `lightvm` executable (run as the daemon).
    pub lightvm_exe: PathBuf,
    /// An idle unikernel image (it must keep running).
    pub image: PathBuf,
    /// VMs to create.
    pub count: usize,
    /// The daemon's pool size.
    pub pool: usize,
    /// Host memory is sampled every this many VMs.
    pub sample_every: usize,
    /// Where the CSV, SVG and the daemon's state go.
    pub out_dir: PathBuf,
}

/// One created VM.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct DensitySample {
    /// Its position: the n-th VM.
    pub n: usize,
    /// Client round trip of the create request (µs).
    pub request_us: f64,
    /// Request received → guest boot-done, in the daemon (µs).
    pub daemon_us: f64,
    /// Whether a prepared shell served it.
    pub pooled: bool,
    /// Host memory in use (MemTotal − MemAvailable, KiB) after it, when sampled.
    pub mem_used_kib: Option<u64>,
}

/// The outcome of a run.
#[derive(Debug, Clone, Serialize)]
pub struct DensityResults {
    /// Every VM.
    pub samples: Vec<DensitySample>,
    /// VMs asked for.
    pub requested: usize,
    /// Why the run stopped early, if it did.
    pub stopped_early: Option<String>,
    /// posix_spawn of a static hello → exit, interleaved with the VMs: (n, µs).
    pub process_spawns: Vec<(usize, f64)>,
    /// Host memory used before the first VM (KiB).
    pub mem_used_before_kib: u64,
    /// The CSV written.
    pub csv: PathBuf,
    /// The plot written.
    pub svg: PathBuf,
}

impl DensityResults {
    /// Summary of the interleaved posix_spawn baseline.
    pub fn process_spawn(&self) -> Option<Summary> {
        Summary::of(
            &self
                .process_spawns
                .iter()
                .map(|(_, us)| *us)
                .collect::<Vec<_>>(),
        )
    }

    /// Summary of the daemon-side creation latency.
    pub fn latency(&self) -> Option<Summary> {
        Summary::of(&self.samples.iter().map(|s| s.daemon_us).collect::<Vec<_>>())
    }

    /// Host memory per VM: growth of memory in use over the run divided by VMs.
    pub fn mem_per_vm_kib(&self) -> Option<f64> {
        let last = self
            .samples
            .iter()
            .rev()
            .find_map(|s| s.mem_used_kib.map(|m| (s.n, m)))?;
        Some(last.1.saturating_sub(self.mem_used_before_kib) as f64 / last.0 as f64)
    }

    /// Median daemon latency of the VMs around the n-th (a window of 1% of the run,
    /// at least 1), for "the 1st vs the 1,000th vs the 10,000th".
    pub fn latency_around(&self, n: usize) -> Option<f64> {
        let window = (self.samples.len() / 100).max(1);
        let near: Vec<f64> = self
            .samples
            .iter()
            .filter(|s| s.n + window > n && s.n < n + window)
            .map(|s| s.daemon_us)
            .collect();
        Summary::of(&near).map(|s| s.median)
    }
}

/// Stops the daemon and every VM it started, however the run ends.
struct RunningDaemon {
    child: Child,
    vm_pids: Vec<u32>,
}

impl Drop for RunningDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for pid in &self.vm_pids {
            if let Ok(pid) = libc::pid_t::try_from(*pid) {
                // SAFETY: kill(2) on a VM shell process this run created.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

impl DensityBench {
    /// Runs the experiment; `progress` is called after each VM with (n, count).
    pub fn run(
        &self,
        mut progress: impl FnMut(usize, usize),
    ) -> Result<DensityResults, BenchError> {
        let failed = |detail: String| BenchError::Platform {
            platform: "density",
            detail,
        };
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| BenchError::Io { path, source }
        };
        std::fs::create_dir_all(&self.out_dir).map_err(io(&self.out_dir))?;
        let baseline = build_baseline(&self.out_dir)?;
        let mut process_spawns = Vec::new();

        let state = self.out_dir.join("daemon-state");
        let socket = self.out_dir.join("daemon.sock");
        let _ = std::fs::remove_dir_all(&state);
        let child = Command::new(&self.lightvm_exe)
            .arg("daemon")
            .arg("--socket")
            .arg(&socket)
            .arg("--state-dir")
            .arg(&state)
            .arg("--pool")
            .arg(self.pool.to_string())
            .arg("--max-vms")
            .arg((self.count + self.pool).to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| failed(format!("starting the daemon: {e}")))?;
        let mut daemon = RunningDaemon {
            child,
            vm_pids: Vec::with_capacity(self.count),
        };
        let client = Client::new(&socket);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| failed(e.to_string()))?;

        let mem_used_before_kib = mem_used_kib().unwrap_or_default();
        let mut samples = Vec::with_capacity(self.count);
        let mut stopped_early = None;
        let body = serde_json::json!({ "image": self.image });
        for n in 1..=self.count {
            runtime.block_on(wait_for_shell(&client));
            let started = Instant::now();
            let answer = runtime.block_on(client.call(Method::POST, "/vms", Some(&body)));
            let request_us = started.elapsed().as_secs_f64() * 1e6;
            let vm = match answer {
                Ok(answer) if answer.status == StatusCode::CREATED => {
                    serde_json::from_slice::<VmView>(&answer.body).map_err(|e| e.to_string())
                }
                Ok(answer) => Err(answer.error_message()),
                Err(error) => Err(error.to_string()),
            };
            let vm = match vm {
                Ok(vm) => vm,
                Err(error) => {
                    stopped_early = Some(format!("VM {n} could not be created: {error}"));
                    break;
                }
            };
            daemon.vm_pids.push(vm.pid);
            let timings = vm
                .timings
                .ok_or_else(|| failed("no timings in the answer".into()))?;
            let sampled = n % self.sample_every.max(1) == 0 || n == self.count || n == 1;
            if sampled {
                let (_, exit_us) = spawn_process(&baseline)?;
                process_spawns.push((n, exit_us));
            }
            samples.push(DensitySample {
                n,
                request_us,
                daemon_us: timings.api_to_boot_done_us,
                pooled: timings.pooled,
                mem_used_kib: if sampled { mem_used_kib() } else { None },
            });
            progress(n, self.count);
        }
        drop(daemon);
        let _ = std::fs::remove_dir_all(&state);

        let csv = self.out_dir.join("density.csv");
        let svg = self.out_dir.join("density.svg");
        write_csv(&csv, &samples).map_err(io(&csv))?;
        let results = DensityResults {
            samples,
            requested: self.count,
            stopped_early,
            process_spawns,
            mem_used_before_kib,
            csv,
            svg: svg.clone(),
        };
        plot(&svg, &results).map_err(|e| failed(format!("plotting: {e}")))?;
        Ok(results)
    }
}

/// Waits until the pool has a prepared shell (or gives up after [`POOL_WAIT`]).
async fn wait_for_shell(client: &Client) {
    let deadline = Instant::now() + POOL_WAIT;
    while Instant::now() < deadline {
        let ready = client
            .call(Method::GET, "/pool", None)
            .await
            .ok()
            .and_then(|a| serde_json::from_slice::<PoolStatus>(&a.body).ok())
            .is_some_and(|pool| pool.ready > 0);
        if ready {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// MemTotal − MemAvailable, KiB.
fn mem_used_kib() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let field = |name: &str| -> Option<u64> {
        meminfo
            .lines()
            .find(|l| l.starts_with(name))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    Some(field("MemTotal:")?.saturating_sub(field("MemAvailable:")?))
}

fn write_csv(path: &Path, samples: &[DensitySample]) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(out, "n,request_us,daemon_us,pooled,mem_used_kib")?;
    for s in samples {
        let mem = s.mem_used_kib.map_or(String::new(), |m| m.to_string());
        writeln!(
            out,
            "{},{:.1},{:.1},{},{mem}",
            s.n, s.request_us, s.daemon_us, s.pooled
        )?;
    }
    out.flush()
}

/// Two panels: creation latency of every VM against N, and host memory against N.
fn plot(path: &Path, results: &DensityResults) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;
    let root = SVGBackend::new(path, (1000, 800)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(400);
    let n_max = results.samples.last().map_or(1, |s| s.n).max(1);

    let all_ms = results
        .samples
        .iter()
        .map(|s| s.daemon_us)
        .chain(results.process_spawns.iter().map(|(_, us)| *us))
        .map(|us| us / 1000.0);
    let (low, high) = all_ms.fold((f64::MAX, 0.0f64), |(lo, hi), ms| (lo.min(ms), hi.max(ms)));
    let low = if low.is_finite() && low > 0.0 {
        low / 1.5
    } else {
        0.01
    };
    let high = high.max(low * 10.0) * 1.5;
    let mut chart = ChartBuilder::on(&top)
        .caption(
            "Creation latency: VM from the pool (request → guest boot-done) vs posix_spawn",
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0..n_max, (low..high).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("VMs already running (N)")
        .y_desc("latency (ms, log scale)")
        .draw()?;
    chart
        .draw_series(
            results
                .samples
                .iter()
                .map(|s| Circle::new((s.n, s.daemon_us / 1000.0), 1, BLUE.filled())),
        )?
        .label("unikernel VM from the daemon's pool")
        .legend(|(x, y)| Circle::new((x + 10, y), 3, BLUE.filled()));
    chart
        .draw_series(
            results
                .process_spawns
                .iter()
                .map(|(n, us)| Circle::new((*n, us / 1000.0), 2, RED.filled())),
        )?
        .label("posix_spawn of a static process → exit (same run)")
        .legend(|(x, y)| Circle::new((x + 10, y), 3, RED.filled()));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;

    let memory: Vec<(usize, f64)> = results
        .samples
        .iter()
        .filter_map(|s| {
            let used = s.mem_used_kib?.saturating_sub(results.mem_used_before_kib);
            Some((s.n, used as f64 / 1024.0))
        })
        .collect();
    let memory_max = memory.iter().map(|(_, m)| *m).fold(1.0, f64::max);
    let mut chart = ChartBuilder::on(&bottom)
        .caption("Host memory used by the VMs", ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0..n_max, 0.0..memory_max * 1.05)?;
    chart
        .configure_mesh()
        .x_desc("VMs running (N)")
        .y_desc("memory (MiB)")
        .draw()?;
    chart.draw_series(LineSeries::new(memory, BLUE.stroke_width(2)))?;
    root.present()?;
    Ok(())
}
