//! `lightvm kernel build`: a Lupine-style kernel from Debian's linux-source.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use lightvm_images::kernel::{KernelBuild, Progress, ESTIMATED_STEPS};

use crate::cli::KernelBuildArgs;

/// Where the fragments live in a source checkout (`kernel/`), unless
/// `$LIGHTVM_KERNEL_FRAGMENTS` says otherwise.
fn fragments_dir() -> PathBuf {
    std::env::var_os("LIGHTVM_KERNEL_FRAGMENTS").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../kernel"),
        PathBuf::from,
    )
}

pub fn build(args: &KernelBuildArgs) -> anyhow::Result<u8> {
    let mut build = KernelBuild::new(&args.profile, fragments_dir());
    if let Some(jobs) = args.jobs {
        build.jobs = jobs;
    }
    let hash = build.hash()?;
    let terminal = std::io::stderr().is_terminal();
    let bar = if terminal {
        ProgressBar::new(ESTIMATED_STEPS)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {wide_msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    let built = build.build(|progress| match progress {
        Progress::Unpacking => {
            bar.set_message("unpacking linux-source");
            if !terminal {
                eprintln!(
                    "lightvm: building kernel profile {} ({hash}): unpacking {}",
                    args.profile,
                    build.source.display()
                );
            }
        }
        Progress::Configuring => {
            bar.set_message("tinyconfig + fragments");
            if !terminal {
                eprintln!(
                    "lightvm: configuring (tinyconfig + kernel/{}.config)",
                    args.profile
                );
            }
        }
        Progress::Compiling { step, what } => {
            if step > bar.length().unwrap_or(0) {
                bar.set_length(step + 50);
            }
            bar.set_position(step);
            bar.set_message(what);
            if !terminal && step % 250 == 0 {
                eprintln!("lightvm: compiling, step {step} of about {ESTIMATED_STEPS}");
            }
        }
        Progress::Finishing => bar.set_message("copying into the cache"),
    });
    bar.finish_and_clear();
    let built = built?;
    for option in &built.dropped {
        eprintln!("lightvm: warning: {option} from the fragments did not survive Kconfig (unmet dependency)");
    }
    let size = |p: &PathBuf| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    eprintln!(
        "lightvm: kernel {} ({}): vmlinux {:.1} MiB, bzImage {:.1} MiB; {} in {:.0} s",
        args.profile,
        built.hash,
        size(&built.vmlinux) as f64 / 1048576.0,
        size(&built.bzimage) as f64 / 1048576.0,
        if built.cached {
            "cached, built"
        } else {
            "built"
        },
        built.build_time.as_secs_f64()
    );
    let vmlinux = match &args.out {
        Some(out) => {
            std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
            for (from, name) in [(&built.vmlinux, "vmlinux"), (&built.bzimage, "bzImage")] {
                std::fs::copy(from, out.join(name))
                    .with_context(|| format!("copying {name} to {}", out.display()))?;
            }
            out.join("vmlinux")
        }
        None => built.vmlinux.clone(),
    };
    println!("{}", vmlinux.display());
    Ok(0)
}
