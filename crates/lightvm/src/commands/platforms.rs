//! `lightvm platforms`: where this host can run unikernels, and why not elsewhere.

use lightvm_vmm::Platform;

use crate::cli::PlatformsArgs;

/// What each platform is, in a few words.
fn what(platform: Platform) -> &'static str {
    match platform {
        Platform::Kvm => "a KVM virtual machine: hardware isolation",
        Platform::Process => "a seccomp-sandboxed process: any Linux host",
    }
}

pub fn platforms(args: &PlatformsArgs) -> u8 {
    let chosen = Platform::choose().ok().map(|(platform, _)| platform);
    for platform in Platform::ALL {
        let check = platform.check();
        if args.available {
            if check.is_ok() {
                println!("{platform}");
            }
            continue;
        }
        let state = match &check {
            Ok(()) if Some(platform) == chosen => "available (the default)".to_owned(),
            Ok(()) => "available".to_owned(),
            Err(unavailable) => format!("unavailable: {}", unavailable.reason),
        };
        println!("{:<8} {:<44} {state}", platform.name(), what(platform));
    }
    0
}
