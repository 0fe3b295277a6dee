//! Syscall: what a system call costs a program on each platform — a host system
//! call, or in a Linux-program row a call answered inside the guest by the Linux
//! personality, through a rewritten site or through the monitor's trap.

use std::collections::BTreeMap;

use crate::context::Context;
use crate::launch::result_field;
use crate::platform::{Platform, Workload};
use crate::results::{Metric, PlotKind, Reference, Skip, SuiteResult};
use crate::stats::Summary;

/// The program's figures: its key in the result line, the metric's id and title
/// (ns per call; the first call: ns).
const CALLS: [(&str, &str, &str); 4] = [
    (
        "getppid",
        "syscall-getppid",
        "getppid() through glibc's wrapper (guest: its rewritten site)",
    ),
    (
        "syscall",
        "syscall-generic",
        "syscall(SYS_getppid) through glibc's syscall() (guest: a trap every call)",
    ),
    (
        "clock_gettime",
        "syscall-clock-gettime",
        "clock_gettime(CLOCK_MONOTONIC) (host: the kernel's vDSO; guest: the personality's)",
    ),
    (
        "first_getppid",
        "syscall-first-call",
        "The program's first getppid() (guest: the trap that rewrites its site)",
    ),
];

/// The key every figure is compared with: the process's `getppid()`.
const REFERENCE: &str = "getppid";

pub(super) fn run(ctx: &mut Context<'_>) -> SuiteResult {
    let mut result = super::suite(
        "One static C program (crates/bench/baselines/syscall.c), the same binary on every platform: as a process, in a container, and unmodified as a Linux program on the Linux personality on each lightvm platform, cold. Inside one run it times, in batches of a calibrated number of calls of at least 4 ms each (the median of 5 batches, after 64 warm-up calls): (a) getppid() through glibc's wrapper, whose site is `mov $110,%eax; syscall` — in the guest the first call traps into the monitor (kvm: the `syscall` enters the monitor's CPL 0 stub, whose port write is a VM exit; process: seccomp's SIGSYS) and the site is rewritten into a jump into the personality, so the timed calls are function calls inside the guest; (b) syscall(SYS_getppid) through glibc's generic syscall(), which loads the number with `mov %rdi,%rax`: its site is never rewritten, so in the guest every call takes the trap, the cost each site pays once; (c) clock_gettime(CLOCK_MONOTONIC): the kernel's vDSO on the host, the personality's in the guest (named in AT_SYSINFO_EHDR as Linux names its own), which reads the TSC and a data page of the personality's calibration: no system call at all on either; and (d) the program's first getppid() alone (one call, so noisy; in the guest the trap and the rewrite). The program prints one line of figures; one warm-up round, then interleaved rounds, a new instance of every platform per round. Each figure is shown as ns and as its ratio to the process's getppid() of this run (a host system call), besides the usual ratio to the process's own figure. A unikernel makes hypercalls, not system calls: its rows have no part here.",
    );
    let (mut platforms, skipped) = ctx.plan(Workload::Syscall, &super::none);
    result.skipped = skipped;
    let warmup = 1;
    let rounds = warmup + ctx.config.syscall_runs;
    let mut samples: BTreeMap<(Platform, &str), Vec<f64>> = BTreeMap::new();
    ctx.progress.stage("syscall", rounds as u64);
    for round in 0..rounds {
        let mut failed = Vec::new();
        let mut order = platforms.clone();
        if !order.is_empty() {
            let shift = round % order.len();
            order.rotate_left(shift);
        }
        for platform in order {
            match figures(ctx, platform) {
                Ok(figures) if round >= warmup => {
                    for (key, value) in figures {
                        samples.entry((platform, key)).or_default().push(value);
                    }
                }
                Ok(_) => {}
                Err(reason) => failed.push((platform, reason)),
            }
        }
        for (platform, reason) in failed {
            ctx.progress
                .note(&format!("syscall: {platform} failed, skipped: {reason}"));
            platforms.retain(|p| *p != platform);
            samples.retain(|(p, _), _| *p != platform);
            result.skipped.push(Skip {
                platform,
                reason: format!("failed: {reason}"),
            });
        }
        ctx.progress.advance();
    }
    let reference = samples
        .get(&(Platform::Process, REFERENCE))
        .and_then(|s| Summary::of(s))
        .map(|s| Reference {
            label: "the process's getppid()".to_owned(),
            value: s.median,
        });
    result.metrics = CALLS
        .iter()
        .map(|&(key, id, title)| {
            let mut metric = Metric::new(id, title, "ns", PlotKind::LogBars, true);
            metric.reference = reference.clone();
            for &platform in &platforms {
                if let Some(values) = samples.remove(&(platform, key)) {
                    metric.push(platform, values, None);
                }
            }
            metric
        })
        .collect();
    result
}

/// One run of the program on `platform`: every figure of its result line.
fn figures(ctx: &mut Context<'_>, platform: Platform) -> Result<Vec<(&'static str, f64)>, String> {
    let run = ctx
        .run_once(platform, Workload::Syscall)
        .map_err(|e| e.to_string())?;
    parse(&run.output)
}

/// The figures of the program's `lightvm-bench syscall …` line.
fn parse(output: &str) -> Result<Vec<(&'static str, f64)>, String> {
    CALLS
        .iter()
        .map(|&(key, _, _)| {
            result_field(output, "syscall", key)
                .and_then(|value| value.parse::<f64>().ok())
                .filter(|value| value.is_finite() && *value >= 0.0)
                .map(|value| (key, value))
                .ok_or_else(|| format!("no {key} figure in its output: {:?}", output.trim()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_programs_line_is_parsed() {
        let line = "lightvm-bench syscall getppid=85.2 syscall=1629.3 clock_gettime=134.1 first_getppid=2870\n";
        assert_eq!(
            parse(line).unwrap(),
            [
                ("getppid", 85.2),
                ("syscall", 1629.3),
                ("clock_gettime", 134.1),
                ("first_getppid", 2870.0)
            ]
        );
        let error = parse("lightvm-bench syscall getppid=85.2\n").unwrap_err();
        assert!(error.contains("no syscall figure"), "{error}");
        assert!(parse(
            "lightvm-bench syscall getppid=nan syscall=1 clock_gettime=1 first_getppid=1"
        )
        .is_err());
    }

    #[test]
    fn the_reference_is_one_of_the_figures() {
        assert!(CALLS.iter().any(|(key, _, _)| *key == REFERENCE));
    }
}
