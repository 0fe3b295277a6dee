//! End-to-end block device: a raw image file as the guest's disk, on every platform
//! the host has.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{assert_no_vmm_panic, image, Vm, LIGHTVM};
use lightvm_vmm::Platform;

/// A scratch disk image of `size` bytes, removed on drop.
struct Disk(std::path::PathBuf);

impl Disk {
    fn new(platform: Platform, tag: &str, size: u64) -> Disk {
        let path = std::env::temp_dir().join(format!(
            "lightvm-disk-{}-{platform}-{tag}.img",
            std::process::id()
        ));
        let file = std::fs::File::create(&path).unwrap();
        file.set_len(size).unwrap();
        Disk(path)
    }

    fn arg(&self, ro: bool) -> String {
        format!("{}{}", self.0.display(), if ro { ",ro" } else { "" })
    }
}

impl Drop for Disk {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn run(platform: Platform, name: &str, disk: &str, cmdline: &str) -> std::process::Output {
    Command::new(LIGHTVM)
        .args([
            "run",
            "--platform",
            platform.name(),
            image(name).to_str().unwrap(),
            "--mem",
            "16M",
            "--timeout",
            "30s",
        ])
        .args(["--disk", disk, "--cmdline", cmdline])
        .output()
        .unwrap()
}

fn text(output: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The pattern blocktest writes (guests/blocktest).
fn pattern(sector: u64, i: usize) -> u8 {
    (sector as usize * 31 + i * 7 + 1) as u8
}

fn writes_read_back_and_read_only_is_enforced(platform: Platform) {
    let disk = Disk::new(platform, "rw", 4 << 20);
    let output = run(platform, "blocktest", &disk.arg(false), "");
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert!(text(&output).contains("blocktest: ok"));

    let output = run(platform, "blocktest", &disk.arg(true), "verify");
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let output = run(platform, "blocktest", &disk.arg(true), "readonly");
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert!(text(&output).contains("read-only refused"));
}

fn flushed_writes_survive_killing_the_vmm(platform: Platform) {
    let disk = Disk::new(platform, "kill", 1 << 20);
    let mut cmd = Command::new(LIGHTVM);
    cmd.args([
        "run",
        "--platform",
        platform.name(),
        image("blocktest").to_str().unwrap(),
        "--mem",
        "16M",
        "--timeout",
        "60s",
    ])
    .args(["--disk", &disk.arg(false), "--cmdline", "hold"]);
    let vm = Vm::spawn(&mut cmd);
    vm.wait_for("blocktest: flushed", Duration::from_secs(20));
    // SIGKILL: no destructor, no buffered write gets a chance to run.
    vm.kill();
    let bytes = std::fs::read(&disk.0).unwrap();
    for sector in 0..64u64 {
        for i in 0..512 {
            assert_eq!(
                bytes[sector as usize * 512 + i],
                pattern(sector, i),
                "sector {sector} byte {i} was not on disk after the flush"
            );
        }
    }
}

#[test]
fn a_missing_image_is_a_lightvm_error() {
    let output = run(
        Platform::Process,
        "blocktest",
        "/nonexistent/lightvm.img",
        "",
    );
    assert_eq!(output.status.code(), Some(125));
    assert!(text(&output).contains("--disk"), "{}", text(&output));
}

fn a_broken_block_ring_stops_the_vm(platform: Platform) {
    let disk = Disk::new(platform, "broken", 1 << 20);
    let output = run(platform, "brokenring", &disk.arg(false), "mode=block");
    let out = text(&output);
    assert_eq!(output.status.code(), Some(127), "{out}");
    assert!(
        out.contains("block ring entry 0") && out.contains("lies outside"),
        "{out}"
    );
    assert_no_vmm_panic(&out);
}

lightvm_testkit::platform_tests!(
    lightvm_vmm::Platform;
    writes_read_back_and_read_only_is_enforced,
    flushed_writes_survive_killing_the_vmm,
    a_broken_block_ring_stops_the_vm,
);
