//! CI's smoke pass of `api-conformance` (crates/fuzz, `conformance`): a few
//! hundred schema-driven requests to a real daemon, started on a socket and
//! state directory of its own, checked as schemathesis checks them against
//! `docs/openapi.json`. The daemon picks its platform (KVM, or seccomp-sandboxed
//! processes on a host without it), so this runs on every host.
//! `LIGHTVM_API_SMOKE=N` changes the number of cases; `scripts/fuzz.sh api N`
//! runs a campaign.

use std::path::Path;

fn cases() -> u64 {
    std::env::var("LIGHTVM_API_SMOKE")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(400)
}

#[test]
fn the_daemon_answers_as_its_openapi_document_says() {
    let dir = std::env::temp_dir().join(format!("lightvm-api-smoke-{}", std::process::id()));
    let lightvm = Path::new(env!("CARGO_BIN_EXE_lightvm"));
    let seed = 0x5eed;
    let report =
        lightvm_fuzz::conformance::against_new_daemon(lightvm, &dir, cases(), seed, false, false)
            .expect("a campaign against a new daemon");
    let _ = std::fs::remove_dir_all(&dir);
    println!("{report}");
    assert!(report.failures.is_empty(), "{report}");
    assert_eq!(report.cases, cases(), "every case was sent");
    // The campaign got past the first checks: VMs were created, and reached.
    assert!(report.created > 0, "no VM was created:\n{report}");
    let reached = report
        .statuses
        .get("GET /vms/{id}")
        .and_then(|statuses| statuses.get(&200));
    assert!(reached.is_some(), "no created VM was inspected:\n{report}");
}
