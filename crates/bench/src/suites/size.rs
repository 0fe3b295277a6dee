//! Image size on disk: what has to be stored and shipped to run the workload.

use crate::context::Context;
use crate::platform::{Platform, Workload};
use crate::results::{Metric, PlotKind, Skip, SuiteResult};
use crate::runc::tree_size;

pub(super) fn run(ctx: &mut Context<'_>) -> SuiteResult {
    let mut result = super::suite(
        "Bytes on disk of what runs the hello workload: the static binary (process); the OCI bundle, i.e. rootfs holding only that binary plus config.json (container: the smallest possible; images with a distribution base are megabytes); the unikernel ELF image (every unikernel row, on either lightvm platform, cold or pooled, boots the same file); a Linux-program row: the same static binary as the process plus the Linux personality's image (one image serves every program). Runtimes (runc, lightvm) are not counted.",
    );
    let (platforms, skipped) = ctx.plan(Workload::Hello, &super::none);
    result.skipped = skipped;
    let mut metric = Metric::new(
        "size-image",
        "Image size on disk",
        "KiB",
        PlotKind::LogBars,
        true,
    );
    ctx.progress.stage("size", platforms.len() as u64);
    for platform in platforms {
        let baseline = || {
            ctx.baselines
                .get(&Workload::Hello)
                .and_then(|p| std::fs::metadata(p).ok())
                .map(|m| m.len())
                .ok_or_else(|| "the hello baseline is missing".to_owned())
        };
        let bytes = match platform {
            Platform::Process => baseline(),
            Platform::LinuxProgram(_) => ctx
                .personality()
                .and_then(|p| std::fs::metadata(p).map_err(|e| e.to_string()))
                .and_then(|personality| Ok(baseline()? + personality.len())),
            Platform::Container => ctx
                .runc
                .as_ref()
                .map(|runc| tree_size(&runc.bundle(Workload::Hello.name())))
                .ok_or_else(|| "runc is not available".to_owned()),
            Platform::Unikernel(_) => ctx
                .guest(Workload::Hello)
                .and_then(|p| std::fs::metadata(p).map_err(|e| e.to_string()))
                .map(|m| m.len()),
            other => Err(format!("{other} has no image in this build")),
        };
        match bytes {
            Ok(bytes) => metric.push(platform, vec![bytes as f64 / 1024.0], None),
            Err(reason) => result.skipped.push(Skip { platform, reason }),
        }
        ctx.progress.advance();
    }
    result.metrics.push(metric);
    result
}
