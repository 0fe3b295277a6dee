//! The platforms compared and the workloads they run.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::apps::{self, App};

/// Where a workload runs. Every suite runs the same work on each platform that is
/// available and says why it skipped the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Platform {
    /// A static host binary started with `posix_spawn`: the baseline of every ratio.
    Process,
    /// The same binary in a real OCI runtime (runc), from a bundle the suite writes.
    Container,
    /// The equivalent lightvm unikernel, on one of lightvm's platforms, started
    /// cold or from a pool.
    Unikernel(Unikernel),
    /// The process row's own program (its static binary, or a Debian
    /// program with its libraries), unmodified, run as a unikernel on lightvm's
    /// Linux personality (`lightvm run --rootfs`), on one of lightvm's
    /// platforms, started cold.
    LinuxProgram(lightvm_vmm::Platform),
    /// A Linux guest in a microVM (lightvm's Linux boot path).
    LinuxMicrovm,
    /// QEMU's `-M microvm` machine, a peer VMM.
    QemuMicrovm,
    /// Firecracker, a peer VMM.
    Firecracker,
    /// Cloud Hypervisor, a peer VMM.
    CloudHypervisor,
}

/// One way of running lightvm's unikernels: a row of every table. Each of
/// lightvm's platforms (KVM, the sandboxed process) is measured started cold and
/// from a pool, because the two differ by the work the pool does ahead of time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Unikernel {
    /// The platform the guest runs on (`--platform` of `lightvm run` and the daemon).
    pub on: lightvm_vmm::Platform,
    /// How an instance is started.
    pub start: Start,
}

/// How an instance of a unikernel is started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Start {
    /// `lightvm run --platform P IMAGE`: a new lightvm process prepares a new VM
    /// and boots the image in it.
    Cold,
    /// POST /vms to a `lightvm daemon --platform P` started for the run: the image
    /// is loaded into a shell the daemon prepared ahead of time.
    Pool,
}

impl Start {
    /// Both, cold first.
    pub const ALL: [Start; 2] = [Start::Cold, Start::Pool];
}

impl Unikernel {
    /// Every unikernel row, in table order: each lightvm platform, cold then pooled.
    pub const ALL: [Unikernel; 4] = [
        Unikernel::new(lightvm_vmm::Platform::Kvm, Start::Cold),
        Unikernel::new(lightvm_vmm::Platform::Kvm, Start::Pool),
        Unikernel::new(lightvm_vmm::Platform::Process, Start::Cold),
        Unikernel::new(lightvm_vmm::Platform::Process, Start::Pool),
    ];

    /// The row of `on`, started as `start`.
    pub const fn new(on: lightvm_vmm::Platform, start: Start) -> Self {
        Self { on, start }
    }

    /// `unikernel-PLATFORM-cold` or `unikernel-PLATFORM-pool`.
    pub fn name(self) -> &'static str {
        use lightvm_vmm::Platform::{Kvm, Process};
        match (self.on, self.start) {
            (Kvm, Start::Cold) => "unikernel-kvm-cold",
            (Kvm, Start::Pool) => "unikernel-kvm-pool",
            (Process, Start::Cold) => "unikernel-process-cold",
            (Process, Start::Pool) => "unikernel-process-pool",
        }
    }

    fn description(self) -> String {
        let vm = vm_of(self.on);
        match self.start {
            Start::Cold => format!(
                "`lightvm run --platform {} IMAGE`: a new lightvm process boots the equivalent unikernel in {vm} it creates",
                self.on
            ),
            Start::Pool => format!(
                "POST /vms to a `lightvm daemon --platform {}` started for the run: the unikernel is loaded into a pre-created, warmed shell, {vm}",
                self.on
            ),
        }
    }
}

/// What a guest of lightvm platform `on` runs in, for descriptions.
fn vm_of(on: lightvm_vmm::Platform) -> &'static str {
    match on {
        lightvm_vmm::Platform::Kvm => "a KVM VM",
        lightvm_vmm::Platform::Process => {
            "a seccomp-sandboxed host process (lightvm's platform for hosts without KVM)"
        }
    }
}

impl Platform {
    /// Every platform, in the order tables and plots show them (baseline first).
    pub const ALL: [Platform; 12] = [
        Platform::Process,
        Platform::Container,
        Platform::Unikernel(Unikernel::ALL[0]),
        Platform::Unikernel(Unikernel::ALL[1]),
        Platform::Unikernel(Unikernel::ALL[2]),
        Platform::Unikernel(Unikernel::ALL[3]),
        Platform::LINUX_PROGRAMS[0],
        Platform::LINUX_PROGRAMS[1],
        Platform::LinuxMicrovm,
        Platform::QemuMicrovm,
        Platform::Firecracker,
        Platform::CloudHypervisor,
    ];

    /// The Linux-program rows, one per lightvm platform: `linux-program-kvm`,
    /// `linux-program-process`.
    pub const LINUX_PROGRAMS: [Platform; 2] = [
        Platform::LinuxProgram(lightvm_vmm::Platform::Kvm),
        Platform::LinuxProgram(lightvm_vmm::Platform::Process),
    ];

    /// The Linux-guest platforms, skipped for what this host and this bench lack.
    pub const LINUX_PEERS: [Platform; 4] = [
        Platform::LinuxMicrovm,
        Platform::QemuMicrovm,
        Platform::Firecracker,
        Platform::CloudHypervisor,
    ];

    /// The short name used in results, tables and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Platform::Process => "process",
            Platform::Container => "container",
            Platform::Unikernel(unikernel) => unikernel.name(),
            Platform::LinuxProgram(lightvm_vmm::Platform::Kvm) => "linux-program-kvm",
            Platform::LinuxProgram(lightvm_vmm::Platform::Process) => "linux-program-process",
            Platform::LinuxMicrovm => "linux-microvm",
            Platform::QemuMicrovm => "qemu-microvm",
            Platform::Firecracker => "firecracker",
            Platform::CloudHypervisor => "cloud-hypervisor",
        }
    }

    /// One sentence on what an instance of this platform is.
    pub fn description(self) -> String {
        match self {
            Platform::Process => {
                "static C binary, posix_spawn (Rust's Command) of a new process".to_owned()
            }
            Platform::Container => {
                "the same static binary in runc (OCI bundle written by the suite: stock `runc spec` namespaces, read-only rootfs holding only the binary)".to_owned()
            }
            Platform::Unikernel(unikernel) => unikernel.description(),
            Platform::LinuxProgram(on) => format!(
                "`lightvm run --platform {on} --rootfs ROOT /PROGRAM`: the process row's program — its static binary, or in the apps suite the Debian program with its libraries — unmodified, as a unikernel on lightvm's Linux personality (its system calls answered inside the guest), in {} a new lightvm process creates",
                vm_of(on)
            ),
            Platform::LinuxMicrovm => "a Linux kernel + initramfs in a lightvm microVM".to_owned(),
            Platform::QemuMicrovm => "QEMU -M microvm booting Linux".to_owned(),
            Platform::Firecracker => "Firecracker booting Linux".to_owned(),
            Platform::CloudHypervisor => "Cloud Hypervisor booting Linux".to_owned(),
        }
    }

    /// The unikernel row this platform is, if it is one of lightvm's unikernels.
    pub fn unikernel(self) -> Option<Unikernel> {
        match self {
            Platform::Unikernel(unikernel) => Some(unikernel),
            _ => None,
        }
    }

    /// The lightvm platform this row runs on, for the unikernel and Linux-program rows.
    pub fn lightvm(self) -> Option<lightvm_vmm::Platform> {
        match self {
            Platform::Unikernel(unikernel) => Some(unikernel.on),
            Platform::LinuxProgram(on) => Some(on),
            _ => None,
        }
    }
}

impl From<Unikernel> for Platform {
    fn from(unikernel: Unikernel) -> Self {
        Platform::Unikernel(unikernel)
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Platform {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Platform::ALL
            .into_iter()
            .find(|p| p.name() == text)
            .ok_or_else(|| {
                let names: Vec<&str> = Platform::ALL.iter().map(|p| p.name()).collect();
                format!("unknown platform {text:?} (one of: {})", names.join(", "))
            })
    }
}

/// A platform is its name in results.json, as on the command line.
impl Serialize for Platform {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Platform {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

/// The work a platform runs: the same on each — a host binary (also what a
/// container and a Linux-program row run, unmodified) and, where one exists, the
/// equivalent unikernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Workload {
    /// Print one line, exit 0 (boot, size).
    Hello,
    /// Print one line, then wait without using CPU until stopped (memory, density).
    Idle,
    /// The fixed compute kernel (cpu).
    Cpu,
    /// The STREAM-like memory-bandwidth kernel (cpu).
    Stream,
    /// UDP echo on port 7 (net: UDP round trips).
    UdpEcho,
    /// TCP echo on port 7 (net: TCP round trips).
    TcpEcho,
    /// TCP discard on port 9 (net: TCP throughput).
    Sink,
    /// HTTP/1.1 server of a small fixed body on port 80 (http).
    Httpd,
    /// Times system calls and prints ns per call (syscall); a program only, with
    /// no unikernel: a unikernel makes hypercalls, not system calls.
    Syscall,
    /// Debian's nginx serving a small static page on port 80 (apps).
    Nginx,
    /// Debian's redis-server on port 6379 (apps).
    Redis,
    /// Debian's iperf3 server on port 5201 (apps).
    Iperf3,
}

/// Where a workload's program comes from: the process row runs it, and the
/// container and Linux-program rows run the same file, unmodified.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Baseline {
    /// A C source of `crates/bench/baselines`, compiled static with these flags
    /// (`-DSERVER=…` picks one server out of a shared source).
    Source {
        code: &'static str,
        defines: &'static [&'static str],
    },
    /// A Debian program as its package installs it on the host.
    Debian(&'static App),
}

/// Why the Debian programs have no unikernel rows.
const NO_UNIKERNEL_OF_APPS: &str = "a Debian program, unmodified: lightvm's unikernels are libos applications, so it runs as a Linux program on the personality (the linux-program rows)";

impl Workload {
    /// Every workload: each has a host baseline; all but `Syscall` and the
    /// Debian programs a unikernel.
    pub const ALL: [Workload; 12] = [
        Workload::Hello,
        Workload::Idle,
        Workload::Cpu,
        Workload::Stream,
        Workload::UdpEcho,
        Workload::TcpEcho,
        Workload::Sink,
        Workload::Httpd,
        Workload::Syscall,
        Workload::Nginx,
        Workload::Redis,
        Workload::Iperf3,
    ];

    /// Its name: `guests/NAME`, and the baseline's binary and bundle.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Hello => "hello",
            Workload::Idle => "idle",
            Workload::Cpu => "cpu",
            Workload::Stream => "stream",
            Workload::UdpEcho => "udp-echo",
            Workload::TcpEcho => "tcp-echo",
            Workload::Sink => "sink",
            Workload::Httpd => "httpd",
            Workload::Syscall => "syscall",
            Workload::Nginx => "nginx",
            Workload::Redis => "redis",
            Workload::Iperf3 => "iperf3",
        }
    }

    /// Its unikernel's directory name under `guests/`, or why it has none.
    pub fn guest(self) -> Result<&'static str, &'static str> {
        match self {
            Workload::Syscall => Err(
                "a unikernel makes hypercalls, not system calls: the syscall workload runs as a process, in a container and as a Linux program",
            ),
            Workload::Nginx | Workload::Redis | Workload::Iperf3 => Err(NO_UNIKERNEL_OF_APPS),
            other => Ok(other.name()),
        }
    }

    /// Guest memory of its `linux-program-*` rows (the Linux personality keeps a
    /// quarter of it, at least 16 MiB, as its own heap), or why this workload
    /// has no such rows yet.
    pub fn linux_program_mem(self) -> Result<&'static str, &'static str> {
        match self {
            Workload::Hello | Workload::Syscall => Ok("64M"),
            // The personality's default for `lightvm run --rootfs`: a 128 MiB
            // heap holds the socket buffers (64 KiB each way) of hundreds of
            // connections; only what is touched costs host memory.
            Workload::UdpEcho
            | Workload::TcpEcho
            | Workload::Sink
            | Workload::Httpd
            | Workload::Nginx
            | Workload::Redis
            | Workload::Iperf3 => Ok("512M"),
            Workload::Idle | Workload::Cpu | Workload::Stream => Err(
                "not measured as a Linux program yet: the linux-program rows run in the size, boot, syscall, net and http suites",
            ),
        }
    }

    /// Guest memory its unikernel needs: STREAM's arrays take 96 MiB; the network
    /// servers' socket buffers and smoltcp state a few MiB. (Workloads without
    /// a unikernel: the smallest.)
    pub fn guest_mem(self) -> &'static str {
        match self {
            Workload::Stream => "128M",
            Workload::UdpEcho | Workload::TcpEcho | Workload::Sink | Workload::Httpd => "64M",
            Workload::Hello
            | Workload::Idle
            | Workload::Cpu
            | Workload::Syscall
            | Workload::Nginx
            | Workload::Redis
            | Workload::Iperf3 => "2M",
        }
    }

    /// The port its server listens on, for the network workloads (the same in
    /// its guest, its C baseline and the Debian program's configuration).
    pub fn port(self) -> Option<u16> {
        match self {
            Workload::UdpEcho | Workload::TcpEcho => Some(7),
            Workload::Sink => Some(9),
            Workload::Httpd | Workload::Nginx => Some(80),
            Workload::Redis => Some(6379),
            Workload::Iperf3 => Some(5201),
            Workload::Hello
            | Workload::Idle
            | Workload::Cpu
            | Workload::Stream
            | Workload::Syscall => None,
        }
    }

    /// The Debian program it runs, if it is one.
    pub(crate) fn app(self) -> Option<&'static App> {
        match self.baseline() {
            Baseline::Debian(app) => Some(app),
            Baseline::Source { .. } => None,
        }
    }

    /// Where its program comes from.
    pub(crate) fn baseline(self) -> Baseline {
        let source = |code, defines| Baseline::Source { code, defines };
        match self {
            Workload::Hello => source(include_str!("../baselines/hello.c"), &[]),
            Workload::Idle => source(include_str!("../baselines/idle.c"), &[]),
            Workload::Cpu => source(include_str!("../baselines/cpu.c"), &[]),
            Workload::Stream => source(include_str!("../baselines/stream.c"), &[]),
            Workload::UdpEcho => source(include_str!("../baselines/udp-echo.c"), &[]),
            Workload::TcpEcho => source(
                include_str!("../baselines/tcp-server.c"),
                &["-DSERVER=SERVER_ECHO"],
            ),
            Workload::Sink => source(
                include_str!("../baselines/tcp-server.c"),
                &["-DSERVER=SERVER_SINK"],
            ),
            Workload::Httpd => source(
                include_str!("../baselines/tcp-server.c"),
                &["-DSERVER=SERVER_HTTP"],
            ),
            Workload::Syscall => source(include_str!("../baselines/syscall.c"), &[]),
            Workload::Nginx => Baseline::Debian(&apps::NGINX),
            Workload::Redis => Baseline::Debian(&apps::REDIS),
            Workload::Iperf3 => Baseline::Debian(&apps::IPERF3),
        }
    }
}

/// Finds `program` on `PATH`.
pub fn which(program: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
}

pub(crate) fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// What this host offers the Linux-guest platforms, detected when a run starts, so
/// that their skip reasons describe the machine the bench runs on.
#[derive(Debug, Clone, Default)]
pub(crate) struct LinuxHost {
    /// Why KVM cannot run guests here, in lightvm_vmm's words, if it cannot.
    pub kvm_unavailable: Option<String>,
    /// Whether this host's KVM is PVM (the `kvm_pvm` module is loaded): it runs
    /// guest user mode natively but emulates guest kernel mode, instruction by
    /// instruction, so a Linux kernel takes minutes to reach init.
    pub kvm_is_pvm: bool,
    /// A Linux kernel built by `lightvm kernel build`, if its cache holds one.
    pub kernel: Option<PathBuf>,
    /// The peer VMMs' executables found on `PATH`.
    pub installed: Vec<&'static str>,
}

/// The executable of each peer VMM and where to get it.
const PEER_EXECUTABLES: [(Platform, &str, &str); 3] = [
    (
        Platform::QemuMicrovm,
        "qemu-system-x86_64",
        "apt-get install qemu-system-x86",
    ),
    (
        Platform::Firecracker,
        "firecracker",
        "Debian has no package of it, and the crates.io crate of that name is an API client, not the VMM",
    ),
    (
        Platform::CloudHypervisor,
        "cloud-hypervisor",
        "Debian has no package of it",
    ),
];

impl LinuxHost {
    /// Looks at this host: its KVM, the kernel cache and `PATH`.
    pub(crate) fn detect() -> Self {
        let kvm_unavailable = lightvm_vmm::Platform::Kvm.check().err().map(|e| e.reason);
        Self {
            kvm_is_pvm: kvm_unavailable.is_none() && Path::new("/sys/module/kvm_pvm").exists(),
            kvm_unavailable,
            kernel: built_kernel(&lightvm_images::kernel::default_cache_dir()),
            installed: PEER_EXECUTABLES
                .iter()
                .map(|(_, exe, _)| *exe)
                .filter(|exe| which(exe).is_some())
                .collect(),
        }
    }
}

/// A `vmlinux` in the kernel cache (one directory per built configuration).
fn built_kernel(cache: &Path) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(cache)
        .ok()?
        .flatten()
        .map(|entry| entry.path().join("vmlinux"))
        .filter(|vmlinux| vmlinux.is_file())
        .collect();
    found.sort();
    found.pop()
}

/// Why a Linux-guest platform cannot run on `host`: the reason to print when it is
/// skipped. It names what this host lacks (the peer's executable, KVM, a kernel
/// that boots in reasonable time, a built kernel), then what this bench lacks,
/// so that a host that has the rest knows what to add.
pub(crate) fn linux_peer_reason(platform: Platform, host: &LinuxHost) -> String {
    if !Platform::LINUX_PEERS.contains(&platform) {
        return format!("{platform} is not a Linux-guest platform");
    }
    let mut why = Vec::new();
    if let Some((_, exe, hint)) = PEER_EXECUTABLES
        .iter()
        .find(|(peer, exe, _)| *peer == platform && !host.installed.contains(exe))
    {
        why.push(format!("{exe} is not installed ({hint})"));
    }
    match (&host.kvm_unavailable, platform) {
        (Some(reason), Platform::QemuMicrovm) => why.push(format!(
            "{reason}, so QEMU could boot Linux only under TCG (emulated: its timings would measure the emulator)"
        )),
        (Some(reason), _) => why.push(format!("it needs KVM: {reason}")),
        (None, _) if host.kvm_is_pvm => why.push(
            "this host's KVM is PVM (kvm_pvm is loaded): it emulates guest kernel mode, so a Linux boot takes minutes and its timings would measure the emulator".to_owned(),
        ),
        (None, _) => {}
    }
    why.push(match &host.kernel {
        Some(kernel) => format!(
            "a kernel is built ({}), but the bench has no Linux guest workloads yet (an initramfs for each of its programs)",
            kernel.display()
        ),
        None => "no Linux kernel is built here (`lightvm kernel build`), and the bench has no Linux guest workloads yet (an initramfs for each of its programs)".to_owned(),
    });
    why.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platform_names_round_trip() {
        for platform in Platform::ALL {
            assert_eq!(platform.name().parse::<Platform>(), Ok(platform));
            assert_eq!(
                serde_json::to_value(platform).unwrap(),
                serde_json::Value::String(platform.name().to_owned())
            );
            let json = serde_json::to_string(&platform).unwrap();
            assert_eq!(serde_json::from_str::<Platform>(&json).unwrap(), platform);
        }
        assert!("vm".parse::<Platform>().is_err());
        assert!(serde_json::from_str::<Platform>("\"unikernel-cold\"").is_err());
    }

    #[test]
    fn the_table_order_is_the_sort_order() {
        let mut sorted = Platform::ALL;
        sorted.sort();
        assert_eq!(
            sorted,
            Platform::ALL,
            "Metric::finish sorts series by platform"
        );
    }

    #[test]
    fn every_lightvm_platform_has_a_cold_and_a_pooled_row() {
        for on in lightvm_vmm::Platform::ALL {
            for start in Start::ALL {
                let row = Platform::Unikernel(Unikernel::new(on, start));
                assert!(Platform::ALL.contains(&row), "{row}");
                assert!(row.name().contains(on.name()), "{row} names {on}");
                assert!(row.description().contains(&format!("--platform {on}")));
            }
        }
        let names: Vec<&str> = Unikernel::ALL.iter().map(|u| u.name()).collect();
        assert_eq!(
            names,
            [
                "unikernel-kvm-cold",
                "unikernel-kvm-pool",
                "unikernel-process-cold",
                "unikernel-process-pool"
            ]
        );
    }

    #[test]
    fn every_lightvm_platform_has_a_linux_program_row() {
        for on in lightvm_vmm::Platform::ALL {
            let row = Platform::LinuxProgram(on);
            assert!(Platform::ALL.contains(&row), "{row}");
            assert!(Platform::LINUX_PROGRAMS.contains(&row), "{row}");
            assert_eq!(row.name(), format!("linux-program-{on}"));
            assert_eq!(row.lightvm(), Some(on));
            assert!(row
                .description()
                .contains(&format!("--platform {on} --rootfs")));
        }
        assert_eq!(Platform::Process.lightvm(), None);
    }

    #[test]
    fn the_schema_names_every_platform_and_suite() {
        let schema: serde_json::Value =
            serde_json::from_str(include_str!("../../../docs/bench-results.schema.json")).unwrap();
        let names = |value: &serde_json::Value| -> Vec<String> {
            value
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_owned())
                .collect()
        };
        let platforms: Vec<String> = Platform::ALL.iter().map(|p| p.name().to_owned()).collect();
        assert_eq!(names(&schema["$defs"]["platform"]["enum"]), platforms);
        let mut suites: Vec<String> = crate::Suite::ALL
            .iter()
            .map(|s| s.name().to_owned())
            .collect();
        let mut in_schema =
            names(&schema["properties"]["suites"]["items"]["properties"]["suite"]["enum"]);
        suites.sort();
        in_schema.sort();
        assert_eq!(in_schema, suites);
        assert_eq!(
            schema["properties"]["schema_version"]["enum"],
            serde_json::json!([crate::results::SCHEMA_VERSION])
        );
    }

    #[test]
    fn workloads_say_which_rows_they_have() {
        assert!(Workload::Syscall.guest().is_err(), "no unikernel");
        assert!(Workload::Hello.guest().is_ok());
        for app in [Workload::Nginx, Workload::Redis, Workload::Iperf3] {
            assert!(app.app().is_some(), "{app:?}");
            assert!(app.guest().unwrap_err().contains("linux-program"));
            assert!(app.port().is_some());
        }
        assert!(Workload::Httpd.app().is_none());
        for workload in Workload::ALL {
            let expected = !matches!(workload, Workload::Idle | Workload::Cpu | Workload::Stream);
            assert_eq!(
                workload.linux_program_mem().is_ok(),
                expected,
                "{workload:?}"
            );
        }
    }

    fn host(kvm_unavailable: Option<&str>, kvm_is_pvm: bool, kernel: bool) -> LinuxHost {
        LinuxHost {
            kvm_unavailable: kvm_unavailable.map(str::to_owned),
            kvm_is_pvm,
            kernel: kernel.then(|| PathBuf::from("/cache/0123/vmlinux")),
            installed: Vec::new(),
        }
    }

    #[test]
    fn a_host_without_kvm_is_told_so_for_every_linux_peer() {
        let no_kvm = host(Some("no /dev/kvm on this host"), false, false);
        for platform in Platform::LINUX_PEERS {
            let reason = linux_peer_reason(platform, &no_kvm);
            assert!(reason.contains("no /dev/kvm on this host"), "{reason}");
            assert!(!reason.contains("PVM"), "{reason}");
            assert!(reason.contains("no Linux kernel is built"), "{reason}");
        }
    }

    #[test]
    fn a_pvm_host_is_told_its_kvm_emulates_kernel_mode() {
        let pvm = host(None, true, true);
        let reason = linux_peer_reason(Platform::LinuxMicrovm, &pvm);
        assert!(reason.contains("kvm_pvm"), "{reason}");
        assert!(
            reason.contains("a kernel is built (/cache/0123/vmlinux)"),
            "{reason}"
        );
        assert!(!reason.contains("/dev/kvm"), "{reason}");
    }

    #[test]
    fn a_host_with_hardware_kvm_and_the_peers_lacks_only_the_workloads() {
        let mut bare = host(None, false, true);
        bare.installed = PEER_EXECUTABLES.iter().map(|(_, exe, _)| *exe).collect();
        for platform in Platform::LINUX_PEERS {
            let reason = linux_peer_reason(platform, &bare);
            assert!(!reason.contains("KVM"), "{reason}");
            assert!(!reason.contains("not installed"), "{reason}");
            assert!(reason.contains("no Linux guest workloads yet"), "{reason}");
        }
        let missing = host(None, false, true);
        assert!(linux_peer_reason(Platform::Firecracker, &missing)
            .starts_with("firecracker is not installed"));
    }

    #[test]
    fn kernels_are_found_in_the_cache() {
        let cache =
            std::env::temp_dir().join(format!("lightvm-bench-kcache-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&cache);
        assert_eq!(built_kernel(&cache), None, "no cache");
        std::fs::create_dir_all(cache.join("abcd")).unwrap();
        assert_eq!(built_kernel(&cache), None, "an entry without vmlinux");
        std::fs::write(cache.join("abcd/vmlinux"), b"ELF").unwrap();
        assert_eq!(built_kernel(&cache), Some(cache.join("abcd/vmlinux")));
        std::fs::remove_dir_all(&cache).unwrap();
    }
}
