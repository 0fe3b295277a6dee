//! Density: N idle instances created one after another, each timed to its `main`,
//! host memory sampled as N grows; all are stopped before the next platform.

use crate::context::Context;
use crate::launch::mem_used_kib;
use crate::platform::{Platform, Workload};
use crate::results::{Metric, PlotKind, Skip, SuiteResult};

struct Curve {
    latency: Vec<f64>,
    n: Vec<f64>,
    memory_n: Vec<f64>,
    memory_mib: Vec<f64>,
}

pub(super) fn run(ctx: &mut Context<'_>) -> SuiteResult {
    let mut result = super::suite(
        "N idle instances of each platform created one after another and left running; each creation is timed from its request to the workload's main, as in the boot suite (the pool's requests wait, untimed, until a prepared shell is ready). Host memory in use (MemTotal − MemAvailable, kernel memory included) is sampled as N grows, relative to before the first instance; its growth divided by N is the memory per instance. MemAvailable is machine-wide: other work on the machine moves it, so read the slope, not single points. All instances are stopped before the next platform starts.",
    );
    let (platforms, skipped) = ctx.plan(Workload::Idle, &super::none);
    result.skipped = skipped;
    let count = ctx.config.density_count.max(1);
    let every = (count / 20).max(1);
    let mut latency = Metric::lines(
        "density-latency",
        "Creation latency of the n-th instance",
        "us",
        "n-th instance (n - 1 already running)",
    );
    latency.plot = PlotKind::LogLines;
    let mut memory = Metric::lines(
        "density-memory",
        "Host memory used by n idle instances",
        "MiB",
        "instances running (n)",
    );
    memory.headline = false;
    let mut per_instance = Metric::new(
        "density-memory-per-instance",
        "Host memory per instance at N (MemAvailable drop / N)",
        "KiB",
        PlotKind::LogBars,
        true,
    );
    ctx.progress
        .stage("density", (platforms.len() * count) as u64);
    for platform in platforms {
        match curve(ctx, platform, count, every) {
            Ok(curve) => {
                if let (Some(&n), Some(&mib)) = (curve.memory_n.last(), curve.memory_mib.last()) {
                    per_instance.push(platform, vec![mib * 1024.0 / n.max(1.0)], None);
                }
                latency.push(platform, curve.latency, Some(curve.n));
                memory.push(platform, curve.memory_mib, Some(curve.memory_n));
            }
            Err(reason) => {
                ctx.progress
                    .note(&format!("density: {platform} failed, skipped: {reason}"));
                result.skipped.push(Skip {
                    platform,
                    reason: format!("failed: {reason}"),
                });
            }
        }
    }
    result.metrics = vec![latency, memory, per_instance];
    result
}

fn curve(
    ctx: &mut Context<'_>,
    platform: Platform,
    count: usize,
    every: usize,
) -> Result<Curve, String> {
    let before = mem_used_kib().unwrap_or_default();
    let mut curve = Curve {
        latency: Vec::with_capacity(count),
        n: Vec::with_capacity(count),
        memory_n: vec![0.0],
        memory_mib: vec![0.0],
    };
    let mut instances = Vec::with_capacity(count);
    let mut failure = None;
    for n in 1..=count {
        match ctx.start(platform, Workload::Idle) {
            Ok(instance) => {
                curve.latency.push(instance.to_main_us);
                curve.n.push(n as f64);
                instances.push(instance);
            }
            Err(error) => {
                failure = Some(format!("instance {n}: {error}"));
                break;
            }
        }
        if n % every == 0 || n == count {
            if let Some(used) = mem_used_kib() {
                curve.memory_n.push(n as f64);
                curve
                    .memory_mib
                    .push(used.saturating_sub(before) as f64 / 1024.0);
            }
        }
        ctx.progress.advance();
    }
    for instance in instances {
        ctx.stop(instance);
    }
    match failure {
        Some(reason) => Err(reason),
        None => Ok(curve),
    }
}
