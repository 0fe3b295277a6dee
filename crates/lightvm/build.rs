//! Sets `cfg(kvm)` where this host's KVM can run the tests that need it.
fn main() {
    lightvm_testkit::emit_kvm_cfg();
}
