//! What every end-to-end test needs: the `lightvm` binary and guest images built by
//! it, once per test binary.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The binary under test.
pub const LIGHTVM: &str = env!("CARGO_BIN_EXE_lightvm");

/// Every guest application the tests use.
pub const GUESTS: [&str; 9] = [
    "hello", "panic", "badptr", "spin", "fault", "flood", "exitcode", "selftest", "idle",
];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The image of guest `name`, built through the real `lightvm build` (all guests
/// once per test binary).
pub fn image(name: &str) -> PathBuf {
    static IMAGES: OnceLock<PathBuf> = OnceLock::new();
    let dir = IMAGES.get_or_init(|| {
        let out = std::env::temp_dir().join(format!("lightvm-e2e-{}", std::process::id()));
        for guest in GUESTS {
            let output = Command::new(LIGHTVM)
                .arg("build")
                .arg(repo().join("guests").join(guest))
                .arg("--out")
                .arg(out.join(format!("{guest}.elf")))
                .output()
                .expect("run lightvm build");
            assert!(
                output.status.success(),
                "lightvm build {guest} failed:\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        out
    });
    dir.join(format!("{name}.elf"))
}
