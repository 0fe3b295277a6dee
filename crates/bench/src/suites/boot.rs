//! Boot: request → the workload's `main`, and → its exit, interleaved.

use std::collections::BTreeMap;

use crate::context::Context;
use crate::platform::{Platform, Workload};
use crate::results::{Metric, PlotKind, Skip, SuiteResult};

pub(super) fn run(ctx: &mut Context<'_>) -> SuiteResult {
    let mut result = super::suite(
        "The hello workload (print one line, exit 0) started on each platform, one of each per round, interleaved so that machine noise hits all alike, back to back in an order rotated every round so that no platform always follows the teardown of another (runc's namespaces and cgroups are torn down asynchronously); warm-up rounds first. On a nested VM, a spawn that lands on an idle vCPU waits for its wake-up (milliseconds): the process baseline is sensitive to how busy the machine is, so compare ratios within one run. To main: from the request (spawn of the process, of `runc run`, of `lightvm run --platform P`; POST /vms to the daemon of platform P for the pooled rows) to the first byte the workload writes in main, read from its stdout pipe — for a pool, to the daemon's answer, sent when the guest's boot-done hypercall (first thing in main) arrives. To exit: to the reaped exit of the spawned command (runc and lightvm included); a pool's client does not wait for exit. Start-up inside the platform: the VMM's own timing from VM creation (cold) or from the shell's boot request (pooled: the execute phase) to the guest's boot-done, on either lightvm platform. The Linux-program rows run the process's own static binary, unmodified, with `lightvm run --platform P --rootfs ROOT /hello` on the Linux personality (ROOT holds only that binary; the launch packs it into an archive first): their boot-done is stamped by the personality right before it jumps to the program's entry point, after unpacking the root and loading the program, and their main is the program's first write, after glibc's start-up system calls (each the first call of its site: a trap into the monitor).",
    );
    let (mut platforms, skipped) = ctx.plan(Workload::Hello, &super::none);
    result.skipped = skipped;
    let rounds = ctx.config.warmup + ctx.config.runs;
    let mut to_main: BTreeMap<Platform, Vec<f64>> = BTreeMap::new();
    let mut to_exit: BTreeMap<Platform, Vec<f64>> = BTreeMap::new();
    let mut vm_to_main: BTreeMap<Platform, Vec<f64>> = BTreeMap::new();
    ctx.progress.stage("boot", rounds as u64);
    for round in 0..rounds {
        let record = round >= ctx.config.warmup;
        let mut failed = Vec::new();
        // Rotate the order each round, so that no platform always pays for the
        // asynchronous teardown of the one before it (a container's namespaces and
        // cgroup). Runs go back to back: a pause would let the vCPUs go idle, and
        // waking an idle vCPU of a nested VM costs milliseconds.
        let mut order = platforms.clone();
        if !order.is_empty() {
            let shift = round % order.len();
            order.rotate_left(shift);
        }
        for platform in order {
            match ctx.run_once(platform, Workload::Hello) {
                Ok(run) if record => {
                    to_main.entry(platform).or_default().push(run.to_main_us);
                    if let Some(exit) = run.to_exit_us {
                        to_exit.entry(platform).or_default().push(exit);
                    }
                    if let Some(start) = run.vm_to_main_us {
                        vm_to_main.entry(platform).or_default().push(start);
                    }
                }
                Ok(_) => {}
                Err(error) => failed.push((platform, error.to_string())),
            }
        }
        for (platform, reason) in failed {
            ctx.progress
                .note(&format!("boot: {platform} failed, skipped: {reason}"));
            platforms.retain(|p| *p != platform);
            to_main.remove(&platform);
            to_exit.remove(&platform);
            vm_to_main.remove(&platform);
            result.skipped.push(Skip {
                platform,
                reason: format!("failed: {reason}"),
            });
        }
        ctx.progress.advance();
    }
    let mut main = Metric::new(
        "boot-to-main",
        "Time to the workload's main",
        "us",
        PlotKind::LogBars,
        true,
    );
    let mut exit = Metric::new(
        "boot-to-exit",
        "Time to the workload's exit",
        "us",
        PlotKind::LogBars,
        true,
    );
    for (platform, samples) in to_main {
        main.push(platform, samples, None);
    }
    for (platform, samples) in to_exit {
        exit.push(platform, samples, None);
    }
    let mut start = Metric::new(
        "boot-vm-to-main",
        "Start-up to main, measured inside the platform: VM creation (cold) or boot request (pooled shell) to the guest's main, as the VMM times it, without the lightvm process or the API; a process's spawn to its main",
        "us",
        PlotKind::LogBars,
        true,
    );
    for (platform, samples) in vm_to_main {
        start.push(platform, samples, None);
    }
    result.metrics = vec![main, exit, start];
    result
}
