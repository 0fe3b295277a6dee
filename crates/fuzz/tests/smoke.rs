//! CI's smoke pass of every fuzz target: its seeds, then mutations of them under
//! the crate's stable driver. Seconds, not a campaign: it proves each target
//! still builds and runs and that no shallow input breaks the code under test.
//! `LIGHTVM_FUZZ_SMOKE=N` changes the number of mutations per target.

use lightvm_fuzz::{driver, find, TARGETS};

fn executions() -> u64 {
    std::env::var("LIGHTVM_FUZZ_SMOKE")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(2000)
}

fn smoke(name: &str) {
    let target = find(name).expect("a target of that name");
    assert!(!(target.seeds)().is_empty(), "{name} has no seeds");
    if let Err(crash) = driver::run(target, executions(), 0x5eed) {
        panic!(
            "{name} failed after {} executions: {}\ninput ({} bytes): {:02x?}",
            crash.executions,
            crash.message,
            crash.input.len(),
            crash.input
        );
    }
}

#[test]
fn every_target_has_a_smoke_test() {
    let source = include_str!("smoke.rs");
    for target in TARGETS {
        assert!(
            source.contains(&format!("smoke(\"{}\")", target.name)),
            "no smoke test for {}",
            target.name
        );
    }
}

#[test]
fn unikernel_elf() {
    smoke("unikernel_elf");
}

#[test]
fn hypercall() {
    smoke("hypercall");
}

#[test]
fn unikernel_ring() {
    smoke("unikernel_ring");
}

#[test]
fn linux_kernel() {
    smoke("linux_kernel");
}

#[test]
fn boot_params() {
    smoke("boot_params");
}

#[test]
fn virtio_blk() {
    smoke("virtio_blk");
}

#[test]
fn virtio_net() {
    smoke("virtio_net");
}

#[test]
fn api_request() {
    smoke("api_request");
}

#[test]
fn lx_rootfs() {
    smoke("lx_rootfs");
}

#[test]
fn lx_launch() {
    smoke("lx_launch");
}

#[test]
fn lx_elf() {
    smoke("lx_elf");
}

#[test]
fn lx_memory() {
    smoke("lx_memory");
}

#[test]
fn lx_paths() {
    smoke("lx_paths");
}
