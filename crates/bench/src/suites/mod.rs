//! The suites. Each runs the same workload on every available platform and
//! returns its metrics, with the platforms it skipped and why.

mod apps;
mod boot;
mod cpu;
mod density;
mod memory;
mod net;
mod size;
mod syscall;

use std::fmt;
use std::str::FromStr;
use std::time::Instant;

use crate::context::Context;
use crate::platform::Workload;
use crate::results::SuiteResult;

/// A benchmark suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Suite {
    /// Time to the workload's `main` and to its exit.
    Boot,
    /// N idle instances one after another: latency of each, memory as N grows.
    Density,
    /// Host memory per idle instance.
    Memory,
    /// Image size on disk.
    Size,
    /// UDP/TCP round-trip time and TCP throughput.
    Net,
    /// HTTP requests/s and latency over a sweep of load.
    Http,
    /// A fixed compute kernel and memory bandwidth.
    Cpu,
    /// Nanoseconds per system call: a host's, and a Linux program's on the
    /// Linux personality (rewritten, trapped).
    Syscall,
    /// Debian's own servers, unmodified: nginx, redis-server and iperf3 as a
    /// host process, in a container and on the Linux personality.
    Apps,
}

impl Suite {
    /// Every suite, in the order `all` runs them (cheapest first).
    pub const ALL: [Suite; 9] = [
        Suite::Size,
        Suite::Boot,
        Suite::Syscall,
        Suite::Memory,
        Suite::Density,
        Suite::Cpu,
        Suite::Net,
        Suite::Http,
        Suite::Apps,
    ];

    /// Its name on the command line and in results.
    pub fn name(self) -> &'static str {
        match self {
            Suite::Boot => "boot",
            Suite::Density => "density",
            Suite::Memory => "memory",
            Suite::Size => "size",
            Suite::Net => "net",
            Suite::Http => "http",
            Suite::Cpu => "cpu",
            Suite::Syscall => "syscall",
            Suite::Apps => "apps",
        }
    }

    /// One line on what it measures (the command line's help).
    pub fn about(self) -> &'static str {
        match self {
            Suite::Boot => "Time to the workload's main and exit",
            Suite::Density => {
                "N idle instances one after another: latency of each, memory as N grows"
            }
            Suite::Memory => "Host memory per idle instance",
            Suite::Size => "Image size on disk",
            Suite::Net => "UDP/TCP round-trip time and TCP throughput",
            Suite::Http => "HTTP requests/s and latency over a load sweep",
            Suite::Cpu => "A fixed compute kernel and STREAM memory bandwidth",
            Suite::Syscall => {
                "ns per system call: the host's, and a Linux program's on the personality (rewritten site, trap, clock)"
            }
            Suite::Apps => {
                "Debian's nginx (wrk), redis-server (redis-benchmark) and iperf3, unmodified: host process, container, Linux personality"
            }
        }
    }

    /// The workloads it runs: their baselines are compiled and their unikernels
    /// built only when a suite of the run needs them.
    pub fn workloads(self) -> &'static [Workload] {
        match self {
            Suite::Boot | Suite::Size => &[Workload::Hello],
            Suite::Density | Suite::Memory => &[Workload::Idle],
            Suite::Cpu => &[Workload::Cpu, Workload::Stream],
            Suite::Net => &[Workload::UdpEcho, Workload::TcpEcho, Workload::Sink],
            Suite::Http => &[Workload::Httpd],
            Suite::Syscall => &[Workload::Syscall],
            Suite::Apps => &[Workload::Nginx, Workload::Redis, Workload::Iperf3],
        }
    }

    pub(crate) fn run(self, ctx: &mut Context<'_>) -> SuiteResult {
        let started = Instant::now();
        let mut result = match self {
            Suite::Boot => boot::run(ctx),
            Suite::Density => density::run(ctx),
            Suite::Memory => memory::run(ctx),
            Suite::Size => size::run(ctx),
            Suite::Net => net::run_net(ctx),
            Suite::Http => net::run_http(ctx),
            Suite::Cpu => cpu::run(ctx),
            Suite::Syscall => syscall::run(ctx),
            Suite::Apps => apps::run(ctx),
        };
        result.suite = self.name().to_owned();
        result.duration_s = started.elapsed().as_secs_f64();
        for metric in &mut result.metrics {
            metric.finish();
        }
        result
    }
}

impl fmt::Display for Suite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Suite {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Suite::ALL
            .into_iter()
            .find(|s| s.name() == text)
            .ok_or_else(|| format!("unknown suite {text:?}"))
    }
}

/// A suite result with its method and no measurements yet.
fn suite(method: &str) -> SuiteResult {
    SuiteResult {
        suite: String::new(),
        method: method.to_owned(),
        skipped_reason: None,
        skipped: Vec::new(),
        metrics: Vec::new(),
        duration_s: 0.0,
    }
}

/// No extra exclusions.
fn none(_: crate::platform::Platform) -> Option<String> {
    None
}
