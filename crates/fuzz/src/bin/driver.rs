//! The fuzz targets without libFuzzer: list them, write their seeds (the corpus
//! `scripts/fuzz.sh` starts from), run one on a file (to reproduce a crash), or
//! run one under the crate's small mutational driver for N executions.
//!
//! ```text
//! fuzz-driver list
//! fuzz-driver seeds TARGET DIR
//! fuzz-driver replay TARGET FILE...
//! fuzz-driver run TARGET N [SEED]
//! ```

use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use lightvm_fuzz::{driver, find, Target, TARGETS};

fn usage() -> ExitCode {
    eprintln!(
        "usage: fuzz-driver list | seeds TARGET DIR | replay TARGET FILE... | run TARGET N [SEED]"
    );
    ExitCode::from(2)
}

fn target(name: &str) -> Result<&'static Target, ExitCode> {
    find(name).ok_or_else(|| {
        eprintln!("fuzz-driver: no target {name:?} (fuzz-driver list names them)");
        ExitCode::from(2)
    })
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match args.as_slice() {
        ["list"] => {
            for target in TARGETS {
                println!("{:<16} {}", target.name, target.feeds);
            }
            Ok(())
        }
        ["seeds", name, dir] => target(name).and_then(|target| write_seeds(target, Path::new(dir))),
        ["replay", name, files @ ..] if !files.is_empty() => target(name).map(|target| {
            for file in files {
                match std::fs::read(file) {
                    Ok(data) => {
                        (target.run)(&data);
                        println!("{file}: no crash");
                    }
                    Err(e) => eprintln!("{file}: {e}"),
                }
            }
        }),
        ["run", name, n, rest @ ..] if rest.len() <= 1 => {
            let (Ok(n), Ok(seed)) = (
                n.parse::<u64>(),
                rest.first().map_or(Ok(1), |s| s.parse::<u64>()),
            ) else {
                return usage();
            };
            target(name).and_then(|target| run(target, n, seed))
        }
        _ => return usage(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(code) => code,
    }
}

fn write_seeds(target: &Target, dir: &Path) -> Result<(), ExitCode> {
    let fail = |e: std::io::Error| {
        eprintln!("fuzz-driver: {}: {e}", dir.display());
        ExitCode::FAILURE
    };
    std::fs::create_dir_all(dir).map_err(fail)?;
    for (i, seed) in (target.seeds)().iter().enumerate() {
        std::fs::write(dir.join(format!("seed-{i}")), seed).map_err(fail)?;
    }
    Ok(())
}

fn run(target: &Target, n: u64, seed: u64) -> Result<(), ExitCode> {
    let started = Instant::now();
    match driver::run(target, n, seed) {
        Ok(done) => {
            let secs = started.elapsed().as_secs_f64();
            println!(
                "{}: {done} executions in {secs:.1} s ({:.0}/s), 0 crashes",
                target.name,
                done as f64 / secs.max(1e-9)
            );
            Ok(())
        }
        Err(crash) => {
            let file = format!("crash-{}-{}", target.name, crash.executions);
            let _ = std::fs::write(&file, &crash.input);
            eprintln!(
                "{}: crash after {} executions: {}\ninput written to {file}",
                target.name, crash.executions, crash.message
            );
            Err(ExitCode::FAILURE)
        }
    }
}
