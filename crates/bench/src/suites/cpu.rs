//! CPU: a fixed compute kernel and a STREAM-like memory-bandwidth kernel, timed
//! inside the workload, so that start-up is not counted.

use std::collections::BTreeMap;

use crate::context::Context;
use crate::launch::result_field;
use crate::platform::{Platform, Workload};
use crate::results::{Metric, PlotKind, Skip, SuiteResult};

const STREAM_KERNELS: [&str; 4] = ["copy", "scale", "add", "triad"];

pub(super) fn run(ctx: &mut Context<'_>) -> SuiteResult {
    let mut result = super::suite(
        "cpu: a serial xorshift64 chain of 20M steps (crates/bench/baselines/cpu.c, and guests/cpu in Rust), timed by the workload itself (CLOCK_MONOTONIC in the process, the TSC in the guest), one run per new instance after a warm-up run; both print a checksum, checked equal to the process's so that every platform did the same work. stream: STREAM's copy, scale, add and triad over three arrays of 4M doubles (3 x 32 MiB, past the last-level cache), best of 5 per kernel, MB/s as STREAM counts bytes. Guest code runs natively (at CPL 3 in a KVM VM; as host code in the process platform's sandbox); differences come from compilers (gcc -O2 vs rustc opt-level 3) and from memory mapping (a KVM guest's memory goes through the host's two-dimensional or, under a nested or PVM KVM, shadow paging; the process platform's is ordinary process memory).",
    );
    let (cpu_platforms, skipped) = ctx.plan(Workload::Cpu, &super::none);
    result.skipped = skipped;
    let runs = ctx.config.cpu_runs;
    let mut cpu = Metric::new(
        "cpu-kernel",
        "Fixed compute kernel (20M xorshift64 steps)",
        "ms",
        PlotKind::Bars,
        true,
    );
    ctx.progress
        .stage("cpu", (cpu_platforms.len() * (runs + 1)) as u64);
    let mut reference: Option<String> = None;
    for platform in cpu_platforms {
        match cpu_runs(ctx, platform, runs, &mut reference) {
            Ok(samples) => cpu.push(platform, samples, None),
            Err(reason) => fail(ctx, &mut result.skipped, platform, "cpu", reason),
        }
    }
    let (stream_platforms, stream_skipped) = ctx.plan(Workload::Stream, &super::none);
    for skip in stream_skipped {
        if !result.skipped.iter().any(|s| s.platform == skip.platform) {
            result.skipped.push(skip);
        }
    }
    let stream_runs = ctx.config.stream_runs;
    let mut stream: BTreeMap<&str, Metric> = STREAM_KERNELS
        .iter()
        .map(|k| {
            let title = format!("Memory bandwidth, STREAM {k}");
            (
                *k,
                Metric::new(
                    &format!("stream-{k}"),
                    &title,
                    "MB/s",
                    PlotKind::Bars,
                    false,
                ),
            )
        })
        .collect();
    ctx.progress
        .stage("stream", (stream_platforms.len() * stream_runs) as u64);
    for platform in stream_platforms {
        match stream_runs_of(ctx, platform, stream_runs) {
            Ok(mut samples) => {
                for (kernel, metric) in stream.iter_mut() {
                    metric.push(platform, samples.remove(kernel).unwrap_or_default(), None);
                }
            }
            Err(reason) => fail(ctx, &mut result.skipped, platform, "stream", reason),
        }
    }
    result.metrics.push(cpu);
    result
        .metrics
        .extend(STREAM_KERNELS.iter().filter_map(|k| stream.remove(k)));
    result
}

fn fail(
    ctx: &Context<'_>,
    skipped: &mut Vec<Skip>,
    platform: Platform,
    what: &str,
    reason: String,
) {
    ctx.progress
        .note(&format!("{what}: {platform} failed, skipped: {reason}"));
    skipped.push(Skip {
        platform,
        reason: format!("{what} failed: {reason}"),
    });
}

fn cpu_runs(
    ctx: &mut Context<'_>,
    platform: Platform,
    runs: usize,
    reference: &mut Option<String>,
) -> Result<Vec<f64>, String> {
    let mut samples = Vec::with_capacity(runs);
    for round in 0..=runs {
        let run = ctx
            .run_once(platform, Workload::Cpu)
            .map_err(|e| e.to_string())?;
        let ns: f64 = result_field(&run.output, "cpu", "ns")
            .and_then(|ns| ns.parse().ok())
            .ok_or_else(|| format!("no result line in its output: {:?}", run.output.trim()))?;
        let checksum = result_field(&run.output, "cpu", "checksum").unwrap_or_default();
        match reference {
            Some(expected) if expected != checksum => {
                return Err(format!(
                    "checksum {checksum} differs from the process's {expected}: not the same work"
                ));
            }
            Some(_) => {}
            None => *reference = Some(checksum.to_owned()),
        }
        if round > 0 {
            samples.push(ns / 1e6);
        }
        ctx.progress.advance();
    }
    Ok(samples)
}

fn stream_runs_of(
    ctx: &mut Context<'_>,
    platform: Platform,
    runs: usize,
) -> Result<BTreeMap<&'static str, Vec<f64>>, String> {
    let mut samples: BTreeMap<&'static str, Vec<f64>> = BTreeMap::new();
    for _ in 0..runs {
        let run = ctx
            .run_once(platform, Workload::Stream)
            .map_err(|e| e.to_string())?;
        for kernel in STREAM_KERNELS {
            let value: f64 = result_field(&run.output, "stream", kernel)
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| {
                    format!("no {kernel} figure in its output: {:?}", run.output.trim())
                })?;
            samples.entry(kernel).or_default().push(value);
        }
        ctx.progress.advance();
    }
    Ok(samples)
}
