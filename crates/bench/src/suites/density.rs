//! Density: N idle instances created one after another, each timed to its `main`,
//! host memory sampled as N grows; all are stopped before the next platform.

use crate::context::Context;
use crate::launch::HostMemory;
use crate::platform::{Platform, Workload};
use crate::results::{Metric, PlotKind, Skip, SuiteResult};
use crate::stats::Summary;

struct Curve {
    latency: Vec<f64>,
    n: Vec<f64>,
    memory_n: Vec<f64>,
    memory_mib: Vec<f64>,
}

pub(super) fn run(ctx: &mut Context<'_>) -> SuiteResult {
    let host = HostMemory::detect();
    let mut result = super::suite(&format!(
        "N idle instances of each platform created one after another and left running; each creation is timed from its request to the workload's main, as in the boot suite (a pool's requests wait, untimed, until a prepared shell is ready). Host memory in use is sampled as N grows, relative to before the first instance; its growth divided by N is the memory per instance. Host memory in use is {}. The first and the last creations (up to ten each) are reported apart, with the ratio of their medians: whether the N-th instance costs what the first did. All instances are stopped before the next platform starts.",
        host.describe()
    ));
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
        &format!("Host memory per instance at N = {count} (growth in use / N)"),
        "KiB",
        PlotKind::LogBars,
        true,
    );
    // Whether the N-th creation costs what the first did (LightVM's claim): the
    // first and the last few creations, and the ratio of their medians (a window,
    // not one sample each: single creations on a noisy machine can be off by
    // milliseconds).
    let window = edge_window(count);
    let mut first = Metric::new(
        "density-latency-first",
        &format!("Creation latency of the {}", instances(1, window)),
        "us",
        PlotKind::LogBars,
        true,
    );
    let mut last = Metric::new(
        "density-latency-last",
        &format!(
            "Creation latency of the {}",
            instances(count + 1 - window, count)
        ),
        "us",
        PlotKind::LogBars,
        true,
    );
    let mut growth = Metric::new(
        "density-latency-growth",
        &format!(
            "Creation latency of the {} over the {} (medians; 1 = the {} costs what the 1st did)",
            instances(count + 1 - window, count),
            instances(1, window),
            ordinal(count)
        ),
        "x",
        PlotKind::Bars,
        true,
    );
    ctx.progress
        .stage("density", (platforms.len() * count) as u64);
    for platform in platforms {
        match curve(ctx, &host, platform, count, every) {
            Ok(curve) => {
                if let (Some(&n), Some(&mib)) = (curve.memory_n.last(), curve.memory_mib.last()) {
                    per_instance.push(platform, vec![mib * 1024.0 / n.max(1.0)], None);
                }
                let head = curve.latency[..window.min(curve.latency.len())].to_vec();
                let tail = curve.latency[curve.latency.len().saturating_sub(window)..].to_vec();
                if let (Some(h), Some(t)) = (Summary::of(&head), Summary::of(&tail)) {
                    if h.median > 0.0 {
                        growth.push(platform, vec![t.median / h.median], None);
                    }
                }
                first.push(platform, head, None);
                last.push(platform, tail, None);
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
    result.metrics = vec![latency, first, last, growth, memory, per_instance];
    result
}

/// How many creations at each end of a density run are compared: ten, or fewer
/// when the run is too short for two windows of ten.
fn edge_window(count: usize) -> usize {
    (count / 2).clamp(1, 10)
}

/// `1st`, `2nd`, `3rd`, `11th`, `1000th` …
fn ordinal(n: usize) -> String {
    let suffix = match (n % 10, n % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

/// `5th instance`, or `1st to 10th instances`.
fn instances(from: usize, to: usize) -> String {
    if from == to {
        format!("{} instance", ordinal(from))
    } else {
        format!("{} to {} instances", ordinal(from), ordinal(to))
    }
}

fn curve(
    ctx: &mut Context<'_>,
    host: &HostMemory,
    platform: Platform,
    count: usize,
    every: usize,
) -> Result<Curve, String> {
    let before = host.used_kib().unwrap_or_default();
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
            if let Some(used) = host.used_kib() {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_count_in_ordinals() {
        assert_eq!(instances(1, 10), "1st to 10th instances");
        assert_eq!(instances(991, 1000), "991st to 1000th instances");
        assert_eq!(instances(2, 2), "2nd instance");
        assert_eq!(ordinal(13), "13th");
        assert_eq!(ordinal(23), "23rd");
        assert_eq!(ordinal(112), "112th");
    }

    #[test]
    fn the_compared_windows_never_overlap() {
        assert_eq!(edge_window(1), 1);
        assert_eq!(edge_window(2), 1);
        assert_eq!(edge_window(20), 10);
        assert_eq!(edge_window(1000), 10);
        for count in 2..40 {
            assert!(2 * edge_window(count) <= count, "{count}");
        }
    }
}
