//! Host memory per idle instance.

use crate::context::{instance_memory, Context};
use crate::platform::{Platform, Workload};
use crate::results::{Metric, PlotKind, Skip, SuiteResult};

pub(super) fn run(ctx: &mut Context<'_>) -> SuiteResult {
    let mut result = super::suite(
        "K idle instances (the idle workload: print a line, then wait without using CPU) of each platform run side by side; for each, the sum over all its host processes of RSS and PSS from /proc/PID/smaps_rollup (PSS divides shared pages — the binary, the lightvm executable, an image mapped by many VMs — among their users). Processes: the process; the container's init (runc detaches and exits); the `lightvm run` process, whose guest memory is a mapping of it (a KVM memory slot, or the process platform's guest mapped at its own addresses), so the guest memory touched is included; a pooled row's VM shell process, likewise. Kernel memory (page tables, namespaces, cgroups, KVM's own structures) is not in PSS: the density suite's MemAvailable figures include it.",
    );
    let (platforms, skipped) = ctx.plan(Workload::Idle, &super::none);
    result.skipped = skipped;
    let k = ctx.config.memory_instances;
    let mut pss = Metric::new(
        "memory-pss",
        "Host memory per idle instance (PSS)",
        "KiB",
        PlotKind::LogBars,
        true,
    );
    let mut rss = Metric::new(
        "memory-rss",
        "Host memory per idle instance (RSS)",
        "KiB",
        PlotKind::LogBars,
        true,
    );
    ctx.progress.stage("memory", (platforms.len() * k) as u64);
    for platform in platforms {
        match measure(ctx, platform, k) {
            Ok((r, p)) => {
                rss.push(platform, r, None);
                pss.push(platform, p, None);
            }
            Err(reason) => {
                ctx.progress
                    .note(&format!("memory: {platform} failed, skipped: {reason}"));
                result.skipped.push(Skip {
                    platform,
                    reason: format!("failed: {reason}"),
                });
            }
        }
    }
    result.metrics = vec![pss, rss];
    result
}

fn measure(
    ctx: &mut Context<'_>,
    platform: Platform,
    k: usize,
) -> Result<(Vec<f64>, Vec<f64>), String> {
    let mut instances = Vec::with_capacity(k);
    let mut failure = None;
    for _ in 0..k {
        match ctx.start(platform, Workload::Idle) {
            Ok(instance) => instances.push(instance),
            Err(error) => {
                failure = Some(error.to_string());
                break;
            }
        }
        ctx.progress.advance();
    }
    // Let every instance settle into its wait before reading its memory.
    std::thread::sleep(std::time::Duration::from_millis(100));
    let mut rss = Vec::new();
    let mut pss = Vec::new();
    for instance in &instances {
        match instance_memory(instance) {
            Some((r, p)) => {
                rss.push(r as f64);
                pss.push(p as f64);
            }
            None => failure = Some("an instance's /proc/PID/smaps_rollup could not be read".into()),
        }
    }
    for instance in instances {
        ctx.stop(instance);
    }
    match failure {
        Some(reason) => Err(reason),
        None => Ok((rss, pss)),
    }
}
