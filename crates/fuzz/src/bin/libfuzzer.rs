//! The coverage-guided fuzzer: libFuzzer around one target, chosen by the
//! `LIGHTVM_FUZZ_TARGET` environment variable (libFuzzer owns the command line).
//! Built and run by `scripts/fuzz.sh`, which passes the SanitizerCoverage flags.
#![no_main]

use std::sync::OnceLock;

fn target() -> &'static lightvm_fuzz::Target {
    static TARGET: OnceLock<&'static lightvm_fuzz::Target> = OnceLock::new();
    TARGET.get_or_init(|| {
        let name = std::env::var("LIGHTVM_FUZZ_TARGET").unwrap_or_default();
        lightvm_fuzz::find(&name).unwrap_or_else(|| {
            let names: Vec<_> = lightvm_fuzz::TARGETS.iter().map(|t| t.name).collect();
            eprintln!(
                "lightvm-fuzz: set LIGHTVM_FUZZ_TARGET to one of: {}",
                names.join(" ")
            );
            std::process::exit(2)
        })
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    (target().run)(data);
});
