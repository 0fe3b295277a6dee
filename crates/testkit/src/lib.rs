//! What lightvm's tests share: running one test body on every platform, with the
//! tests that need KVM reported as skipped — with the reason — on hosts without it.
//!
//! Rust's test harness has no skip at run time, only `#[ignore]`, which it counts
//! and names. So a crate whose tests need KVM calls [`emit_kvm_cfg`] from its build
//! script: it sets `cfg(kvm)` when the building host can open `/dev/kvm` (tests are
//! built where they run), and [`platform_tests!`] ignores the kvm half of each test
//! otherwise, with a message that says why.

/// From a build script: sets `cfg(kvm)` when `/dev/kvm` can be opened for reading
/// and writing here, and re-runs when `/dev` changes (a KVM module loaded or
/// unloaded, a device node added or removed).
pub fn emit_kvm_cfg() {
    println!("cargo::rustc-check-cfg=cfg(kvm)");
    println!("cargo::rerun-if-changed=/dev");
    let usable = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    if usable {
        println!("cargo::rustc-cfg=kvm");
    }
}

/// Runs each named test function (a `fn(Platform)`) once per platform, as the
/// tests `kvm::NAME` and `process::NAME`; the kvm ones are ignored (skipped, with
/// the reason) where the crate was built without `cfg(kvm)`.
///
/// ```text
/// fn hello_prints(platform: Platform) { … }
/// lightvm_testkit::platform_tests!(lightvm_vmm::Platform; hello_prints);
/// ```
#[macro_export]
macro_rules! platform_tests {
    ($platform:path; $($name:ident),+ $(,)?) => {
        mod kvm {
            $(
                #[test]
                #[cfg_attr(
                    not(kvm),
                    ignore = "needs /dev/kvm: this host has none, or this user cannot open it"
                )]
                fn $name() {
                    use $platform as Platform;
                    super::$name(Platform::Kvm)
                }
            )+
        }
        mod process {
            $(
                #[test]
                fn $name() {
                    use $platform as Platform;
                    super::$name(Platform::Process)
                }
            )+
        }
    };
}

/// A test that only makes sense on kvm (a Linux guest, the vCPU's own state): as
/// `#[test]`, ignored with the reason where there is no KVM.
#[macro_export]
macro_rules! kvm_test {
    ($(#[$meta:meta])* fn $name:ident() $body:block) => {
        #[test]
        #[cfg_attr(
            not(kvm),
            ignore = "needs /dev/kvm: this host has none, or this user cannot open it"
        )]
        $(#[$meta])*
        fn $name() $body
    };
}
