//! The command-line grammar.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// lightvm: virtual machines as cheap, small and dense as processes.
#[derive(Debug, Parser)]
#[command(name = "lightvm", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The sub-commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build a Rust guest application (a crate using libos) into a unikernel image.
    Build(BuildArgs),
    /// Boot a unikernel image (or a Linux kernel, with --kernel) and wait for it to
    /// end; the exit code is the guest's.
    ///
    /// Exit codes: 0-123 the guest's status (a Linux guest's reboot is 0), 124 timed
    /// out, 125 lightvm failed, 126 the guest crashed, 127 the guest broke the
    /// hypercall ABI, 128+N the VM process was killed by signal N (137: by its
    /// cgroup's memory limit, among others).
    Run(Box<RunArgs>),
    /// Show the platforms unikernels can run on here, and why any cannot.
    Platforms(PlatformsArgs),
    /// Make a minimal root filesystem for host programs: each program, its loader
    /// and the libraries it needs (for `lightvm run --rootfs`).
    Rootfs(RootfsArgs),
    /// Linux kernels for lightvm's Linux microVMs.
    #[command(subcommand)]
    Kernel(KernelCommand),
    /// Measure processes, containers and unikernels side by side: results.json,
    /// results.csv, a plot per metric and report.html.
    Bench(BenchArgs),
    /// Run the toolstack daemon: a pool of pre-created VM shells behind a REST API.
    Daemon(DaemonArgs),
    /// Create a VM through the daemon and wait until its guest reaches main.
    Create(CreateArgs),
    /// List the daemon's VMs.
    Ps(PsArgs),
    /// Show one VM as JSON.
    Inspect(VmIdArgs),
    /// Show a VM's console output.
    Logs(LogsArgs),
    /// Stop a VM (its process is killed).
    Stop(VmIdArgs),
    /// Stop a VM if it runs and remove it.
    Rm(VmIdArgs),
    /// Show or resize the daemon's pool of prepared shells.
    Pool(PoolArgs),
    /// One VM shell process (started by the daemon, not by hand).
    #[command(hide = true)]
    Shell(ShellArgs),
}

/// `lightvm rootfs`.
#[derive(Debug, Args)]
pub struct RootfsArgs {
    /// Host programs to put in the root, at their own paths (absolute).
    #[arg(required = true)]
    pub programs: Vec<PathBuf>,
    /// The directory to fill (made if missing).
    #[arg(long, short)]
    pub out: PathBuf,
    /// A host file or directory to copy in at the same path (configuration,
    /// data, libraries the program opens itself); repeatable.
    #[arg(long, value_name = "PATH")]
    pub add: Vec<PathBuf>,
    /// Leave out the base files (/etc/passwd, /etc/group, /etc/hosts, /tmp).
    #[arg(long)]
    pub no_base: bool,
}

/// Default API socket.
pub const DEFAULT_SOCKET: &str = "/run/lightvm/api.sock";

/// Where the client finds the daemon.
#[derive(Debug, Args)]
pub struct SocketArg {
    /// The daemon's API socket.
    #[arg(long, env = "LIGHTVM_SOCKET", default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,
}

/// `lightvm daemon`.
#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// Where to serve the API.
    #[arg(long, env = "LIGHTVM_SOCKET", default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// The group that owns the socket (a name from /etc/group, or a number): with
    /// --socket-mode 0660 (the default when a group is given), its members may use
    /// the API. Files a client names are opened with that client's own rights.
    #[arg(long, value_name = "GROUP")]
    pub socket_group: Option<String>,
    /// The socket's permission bits, in octal: who may connect (0600 — the
    /// daemon's user alone — unless a --socket-group is given, then 0660).
    #[arg(long, value_name = "MODE", value_parser = parse_mode)]
    pub socket_mode: Option<u32>,
    /// Where VM state lives (a restarted daemon adopts the VMs found there).
    #[arg(long, default_value = "/var/lib/lightvm")]
    pub state_dir: PathBuf,
    /// Shells to keep prepared.
    #[arg(long, default_value_t = 4)]
    pub pool: usize,
    /// Guest memory of pooled shells (requests for other sizes are created cold).
    #[arg(long, default_value = "2M")]
    pub pool_mem: String,
    /// Shells to keep prepared for Linux programs (`lightvm create --rootfs`):
    /// a KVM vCPU is set up for them before it first runs, so they have a pool
    /// of their own.
    #[arg(long, default_value_t = 1)]
    pub linux_pool: usize,
    /// Guest memory of the shells for Linux programs, and of a Linux program
    /// whose create names none (as `lightvm run --rootfs`'s default).
    #[arg(long, default_value = "512M")]
    pub linux_pool_mem: String,
    /// The Linux personality image Linux programs run on (default: built from
    /// crates/personality at start, which Cargo skips when it is up to date; if
    /// that fails, the daemon runs unikernels only and says why).
    #[arg(long, value_name = "IMAGE")]
    pub personality: Option<PathBuf>,
    /// Most VMs running at once.
    #[arg(long, default_value_t = 10_000)]
    pub max_vms: usize,
    /// Most guest memory per VM.
    #[arg(long, default_value = "1G")]
    pub max_mem: String,
    /// Where the VMs run (see `lightvm run --platform`).
    #[arg(long, value_enum, default_value_t = PlatformChoice::Auto)]
    pub platform: PlatformChoice,
    /// Run without the daemon's seccomp filter (for debugging a call it refuses:
    /// the filter kills the daemon on any call off its list; its VMs run on).
    #[arg(long)]
    pub no_seccomp: bool,
    /// Run the VMs' shells without their jail (namespaces, empty root,
    /// unprivileged uid, rlimits, cgroup), as `lightvm run --no-jail` does: for
    /// debugging, and to measure what the jail costs. Their seccomp filters
    /// stay; a create's limits are then refused.
    #[arg(long)]
    pub no_jail: bool,
}

/// How a Linux program runs, for `lightvm run --rootfs` and `lightvm create
/// --rootfs` alike (each of these needs `--rootfs`).
#[derive(Debug, Args)]
pub struct LinuxProgramArgs {
    /// The Linux program's arguments (after `--`): it runs unmodified, as a
    /// unikernel, on the Linux personality.
    #[arg(last = true, requires = "rootfs")]
    pub program_args: Vec<String>,
    /// With --rootfs: an environment variable for the program, KEY=VALUE
    /// (repeatable; default PATH, HOME and TERM).
    #[arg(long, requires = "rootfs", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// With --rootfs: the program's working directory.
    #[arg(long, requires = "rootfs", default_value = "/")]
    pub cwd: String,
    /// With --rootfs: print each system call the program makes and its result
    /// on the console, and at the end the calls that are not implemented.
    #[arg(long, requires = "rootfs")]
    pub trace_syscalls: bool,
}

impl LinuxProgramArgs {
    /// The environment given, or `None` for the default one.
    pub fn env(&self) -> Option<Vec<String>> {
        (!self.env.is_empty()).then(|| self.env.clone())
    }
}

/// `lightvm create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The unikernel image (its path is resolved here and sent absolute); with
    /// --rootfs, the Linux program's path inside the root filesystem.
    pub image: PathBuf,
    /// Run an unmodified Linux program from this root filesystem (a directory,
    /// packed by the daemon with your rights), as `lightvm run --rootfs` does.
    #[arg(long, value_name = "DIR")]
    pub rootfs: Option<PathBuf>,
    #[command(flatten)]
    pub program: LinuxProgramArgs,
    /// Guest memory (default: the pool's size; for a Linux program, the
    /// Linux-program pool's).
    #[arg(long)]
    pub mem: Option<String>,
    /// Command line passed to the guest.
    #[arg(long, default_value = "")]
    pub cmdline: String,
    /// Stop the guest after this long.
    #[arg(long, value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// A host tap interface for the guest's NIC, tap=NAME[,mac=MAC], as for `lightvm
    /// run`; the tap must already exist in the daemon's network namespace (the
    /// daemon never creates one), the guest's address comes from --cmdline (e.g.
    /// "ip=10.0.0.2/24 gw=10.0.0.1").
    #[arg(long, value_name = "tap=NAME[,mac=MAC]")]
    pub net: Option<String>,
    /// The memory the VM's process may use (its cgroup's memory.max), e.g. 64M;
    /// default: the guest's memory plus the monitor's overhead, as for `lightvm run`.
    #[arg(long, value_name = "SIZE")]
    pub memory_limit: Option<String>,
    /// The CPU time the VM's process may use, in CPUs (its cgroup's cpu.max),
    /// e.g. 0.5 or 2; default: no limit.
    #[arg(long, value_name = "CPUS")]
    pub cpu_limit: Option<String>,
    /// The tasks the VM's process may have (its cgroup's pids.max).
    #[arg(long, value_name = "N")]
    pub pids_limit: Option<u64>,
    /// Print the VM as JSON instead of its id.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub socket: SocketArg,
}

/// `lightvm ps`.
#[derive(Debug, Args)]
pub struct PsArgs {
    /// JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub socket: SocketArg,
}

/// Commands that name one VM.
#[derive(Debug, Args)]
pub struct VmIdArgs {
    /// The VM's id.
    pub id: String,
    #[command(flatten)]
    pub socket: SocketArg,
}

/// `lightvm logs`.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The VM's id.
    pub id: String,
    /// Keep printing new output until the VM ends.
    #[arg(long, short)]
    pub follow: bool,
    /// Only the last N lines.
    #[arg(long)]
    pub tail: Option<usize>,
    #[command(flatten)]
    pub socket: SocketArg,
}

/// `lightvm pool`.
#[derive(Debug, Args)]
pub struct PoolArgs {
    /// Set the number of shells to keep prepared.
    #[arg(long)]
    pub size: Option<usize>,
    /// Set the number of shells to keep prepared for Linux programs.
    #[arg(long)]
    pub linux_size: Option<usize>,
    /// JSON instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub socket: SocketArg,
}

/// `lightvm shell`.
#[derive(Debug, Args)]
pub struct ShellArgs {
    /// The platform the VM runs on.
    #[arg(long)]
    pub platform: lightvm_vmm::Platform,
    /// Guest memory in bytes.
    #[arg(long)]
    pub mem: u64,
    /// Prepare the VM for Linux programs (the Linux personality).
    #[arg(long)]
    pub linux: bool,
    /// Prepare it without the jail (the daemon's --no-jail).
    #[arg(long)]
    pub no_jail: bool,
}

/// `lightvm platforms`.
#[derive(Debug, Args)]
pub struct PlatformsArgs {
    /// Print only the names of the platforms this host can run, one per line.
    #[arg(long)]
    pub available: bool,
}

/// `lightvm build`.
#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Directory of the guest application (holding its Cargo.toml).
    pub app_dir: PathBuf,
    /// Where to copy the finished image (default: print the path in the build tree).
    #[arg(long, short)]
    pub out: Option<PathBuf>,
    /// Build without optimisations.
    #[arg(long)]
    pub debug: bool,
}

/// `lightvm run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The unikernel image (an ELF built by `lightvm build`); with --rootfs, the
    /// Linux program's path inside the root filesystem; omit it with --kernel.
    #[arg(required_unless_present = "kernel", conflicts_with = "kernel")]
    pub image: Option<PathBuf>,
    /// Run an unmodified Linux program from this root filesystem (a directory,
    /// packed at launch); the positional argument is its path inside it.
    #[arg(long, conflicts_with = "kernel", value_name = "DIR")]
    pub rootfs: Option<PathBuf>,
    #[command(flatten)]
    pub program: LinuxProgramArgs,
    /// With --rootfs: the Linux personality's image (default: built from
    /// crates/personality, which Cargo skips when it is up to date).
    #[arg(long, requires = "rootfs", value_name = "IMAGE")]
    pub personality: Option<PathBuf>,
    /// Boot a Linux kernel instead: an ELF vmlinux (PVH or 64-bit entry) or a bzImage.
    #[arg(long)]
    pub kernel: Option<PathBuf>,
    /// Linux: an initramfs / initrd image.
    #[arg(long, requires = "kernel")]
    pub initrd: Option<PathBuf>,
    /// Linux: number of vCPUs.
    #[arg(long, requires = "kernel", default_value_t = 1)]
    pub vcpus: u32,
    /// Linux: CPUID features to hide from the guest, e.g. xsave,popcnt.
    #[arg(long, requires = "kernel", value_name = "FEATURES")]
    pub cpu_clear: Option<String>,
    /// A raw disk image, PATH[,ro] (ro refuses the guest's writes). Linux: a
    /// virtio-blk device, repeatable (vda, vdb, …); unikernels: one disk.
    #[arg(long, value_name = "PATH[,ro]")]
    pub disk: Vec<String>,
    /// A host tap interface, tap=NAME[,mac=MAC]. Linux: a virtio-net device,
    /// repeatable; unikernels: one NIC, the tap created if missing (needs
    /// CAP_NET_ADMIN), the guest's address from its command line (e.g. --cmdline
    /// "ip=10.0.0.2/24 gw=10.0.0.1").
    #[arg(long, value_name = "tap=NAME[,mac=MAC]")]
    pub net: Vec<String>,
    /// Guest memory: a multiple of 2 MiB, e.g. 2M, 64M, 1G (a bare number is MiB).
    /// Default: 2M for unikernels, 128M for Linux.
    #[arg(long)]
    pub mem: Option<String>,
    /// Command line passed to the guest (Linux default: "console=ttyS0 reboot=k
    /// panic=1 pci=off"; lightvm appends its virtio-mmio devices). A unikernel
    /// and a Linux program (--rootfs) take their network from it:
    /// "ip=ADDR/PREFIX [gw=ADDR]" or "dhcp".
    #[arg(long)]
    pub cmdline: Option<String>,
    /// Stop the guest after this long, e.g. 500ms, 5s, 2m (exit code 124).
    #[arg(long, value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// Print the result and timings as JSON on stdout; the guest console goes to stderr.
    #[arg(long)]
    pub json: bool,
    /// Also write the JSON result to this file (the console stays on stdout).
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Where a unikernel runs: kvm (a KVM VM), process (a seccomp-sandboxed
    /// process, for hosts without /dev/kvm), or auto: kvm where /dev/kvm is usable,
    /// else process. Linux guests always run on kvm.
    #[arg(long, value_enum, default_value_t = PlatformChoice::Auto, conflicts_with = "kernel")]
    pub platform: PlatformChoice,
    /// The memory the VM process may use (its cgroup's memory.max), e.g. 64M;
    /// default: the guest's memory plus the monitor's overhead.
    #[arg(long, value_name = "SIZE")]
    pub memory_limit: Option<String>,
    /// The CPU time the VM process may use, in CPUs (its cgroup's cpu.max), e.g.
    /// 0.5 or 2; default: no limit.
    #[arg(long, value_name = "CPUS")]
    pub cpu_limit: Option<String>,
    /// The tasks (threads) the VM process may have (its cgroup's pids.max);
    /// default: its monitor's threads and a few more.
    #[arg(long, value_name = "N")]
    pub pids_limit: Option<u64>,
    /// The uid the VM process drops to when lightvm runs as root (default 65534,
    /// nobody).
    #[arg(long, value_name = "UID", conflicts_with = "no_jail")]
    pub jail_uid: Option<u32>,
    /// The gid the VM process drops to when lightvm runs as root (default 65534).
    #[arg(long, value_name = "GID", conflicts_with = "no_jail")]
    pub jail_gid: Option<u32>,
    /// Run the VM in this process, without its jail (namespaces, empty root,
    /// unprivileged uid, resource limits, cgroup): for debugging the monitor. The
    /// seccomp filters stay.
    #[arg(long, conflicts_with_all = ["memory_limit", "cpu_limit", "pids_limit"])]
    pub no_jail: bool,
}

/// `--platform`: a platform, or the host's default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PlatformChoice {
    /// KVM where /dev/kvm is usable, else the process platform.
    Auto,
    /// A KVM virtual machine.
    Kvm,
    /// A seccomp-sandboxed host process.
    Process,
}

impl PlatformChoice {
    /// The platform this names, or `None` for `auto`.
    pub fn platform(self) -> Option<lightvm_vmm::Platform> {
        match self {
            PlatformChoice::Auto => None,
            PlatformChoice::Kvm => Some(lightvm_vmm::Platform::Kvm),
            PlatformChoice::Process => Some(lightvm_vmm::Platform::Process),
        }
    }

    /// The platform to run on: the one named, or the host's default, saying on
    /// stderr (one line) when that default is not kvm, and why.
    pub fn resolve(self) -> Result<lightvm_vmm::Platform, lightvm_vmm::Unavailable> {
        let (platform, notice) = self.choose()?;
        if let Some(notice) = notice {
            eprintln!("{notice}");
        }
        Ok(platform)
    }

    /// As [`PlatformChoice::resolve`], with the line to print (when the default
    /// is not kvm) handed back rather than printed: `lightvm run` prints it only
    /// once the VM is built, so that a request it refuses gets one line, the
    /// refusal.
    pub fn choose(
        self,
    ) -> Result<(lightvm_vmm::Platform, Option<String>), lightvm_vmm::Unavailable> {
        if let Some(platform) = self.platform() {
            platform.check()?;
            return Ok((platform, None));
        }
        let (platform, passed_over) = lightvm_vmm::Platform::choose()?;
        let notice = passed_over.map(|why| {
            format!(
                "lightvm: running on the {platform} platform: {} (choose with --platform)",
                why.reason
            )
        });
        Ok((platform, notice))
    }
}

/// `lightvm kernel`.
#[derive(Debug, Subcommand)]
pub enum KernelCommand {
    /// Build a Linux kernel from Debian's linux-source: tinyconfig plus the
    /// profile's config fragments (kernel/<profile>.config), cached by config hash.
    Build(KernelBuildArgs),
}

/// `lightvm kernel build`.
#[derive(Debug, Args)]
pub struct KernelBuildArgs {
    /// The profile: base, general, or any kernel/<name>.config (applied after base).
    #[arg(long, default_value = "base")]
    pub profile: String,
    /// Copy vmlinux (and bzImage) into this directory.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Parallel make jobs (default: the number of CPUs).
    #[arg(long)]
    pub jobs: Option<usize>,
}

/// The suites a `lightvm bench` argument names: one, or every one for `all`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suites(pub Vec<lightvm_bench::Suite>);

/// Accepts a suite's name or `all`, each listed with what it measures in `--help`.
fn suites_parser() -> impl clap::builder::TypedValueParser<Value = Suites> {
    use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
    use lightvm_bench::Suite;
    let names = Suite::ALL
        .iter()
        .map(|suite| PossibleValue::new(suite.name()).help(suite.about()))
        .chain([PossibleValue::new("all").help("Every suite")]);
    PossibleValuesParser::new(names).map(|name| {
        Suites(
            Suite::ALL
                .into_iter()
                .filter(|suite| name == "all" || suite.name() == name)
                .collect(),
        )
    })
}

/// Accepts a bench platform's name, each listed with what an instance is in
/// `--help` (the unikernel rows: one cold and one pooled per lightvm platform;
/// the Linux-program rows: one per lightvm platform).
fn platforms_parser() -> impl clap::builder::TypedValueParser<Value = lightvm_bench::Platform> {
    use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
    use lightvm_bench::Platform;
    let names = Platform::ALL
        .iter()
        .map(|platform| PossibleValue::new(platform.name()).help(platform.description()));
    PossibleValuesParser::new(names).try_map(|name| name.parse::<Platform>())
}

/// `lightvm bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Which suite to run.
    #[arg(value_parser = suites_parser())]
    pub suite: Suites,
    /// Few runs and small counts (boot, size and memory in well under two minutes).
    #[arg(long)]
    pub quick: bool,
    /// Where results.json, results.csv, the plots and report.html go.
    #[arg(long, default_value = "lightvm-out/bench")]
    pub out: PathBuf,
    /// Measured runs per platform (boot rounds; memory, cpu, stream and syscall use up to 10, 10, 5 and 20).
    #[arg(long)]
    pub runs: Option<usize>,
    /// Instances per platform in the density suite (up to 10,000 VMs on our machines).
    #[arg(long)]
    pub count: Option<usize>,
    /// The daemons' pool of prepared shells for the unikernel-*-pool platforms.
    #[arg(long)]
    pub pool: Option<usize>,
    /// Only these platforms, comma-separated (process is the baseline of every
    /// ratio): process, container, unikernel-{kvm,process}-{cold,pool},
    /// linux-program-{kvm,process} (the process row's binary, unmodified, on the
    /// Linux personality), and the Linux-guest peers.
    #[arg(long, value_delimiter = ',', value_parser = platforms_parser())]
    pub platforms: Vec<lightvm_bench::Platform>,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    let duration = match trimmed.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => humantime::parse_duration(trimmed)
            .map_err(|e| format!("{e} (expected e.g. 500ms, 5s, 2m)"))?,
    };
    if duration.is_zero() {
        return Err("must be greater than zero".to_owned());
    }
    Ok(duration)
}

/// An octal permission mode, e.g. `0660` or `660`.
fn parse_mode(text: &str) -> Result<u32, String> {
    let digits = text.strip_prefix("0o").unwrap_or(text);
    match u32::from_str_radix(digits, 8) {
        Ok(mode) if mode <= 0o777 => Ok(mode),
        _ => Err(format!(
            "{text:?} is not a permission mode (octal, 0000 to 0777, e.g. 0660)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_grammar_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations_accept_units_and_bare_seconds() {
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert!(parse_duration("0").is_err());
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn a_bench_names_one_suite_or_all() {
        use clap::Parser;
        use lightvm_bench::Suite;
        let suites = |name: &str| match Cli::try_parse_from(["lightvm", "bench", name]) {
            Ok(Cli {
                command: Command::Bench(args),
                ..
            }) => Some(args.suite.0),
            _ => None,
        };
        assert_eq!(suites("net"), Some(vec![Suite::Net]));
        assert_eq!(suites("all"), Some(Suite::ALL.to_vec()));
        assert_eq!(suites("nope"), None);
    }

    #[test]
    fn bench_platforms_are_named_per_lightvm_platform() {
        use clap::Parser;
        use lightvm_bench::{Platform, Start, Unikernel};
        let platforms = |list: &str| match Cli::try_parse_from([
            "lightvm",
            "bench",
            "boot",
            "--platforms",
            list,
        ]) {
            Ok(Cli {
                command: Command::Bench(args),
                ..
            }) => Some(args.platforms),
            _ => None,
        };
        assert_eq!(
            platforms("process,unikernel-kvm-pool,unikernel-process-cold"),
            Some(vec![
                Platform::Process,
                Unikernel::new(lightvm_vmm::Platform::Kvm, Start::Pool).into(),
                Unikernel::new(lightvm_vmm::Platform::Process, Start::Cold).into(),
            ])
        );
        assert_eq!(platforms("unikernel-cold"), None, "the old names are gone");
        assert_eq!(
            platforms("process,linux-program-kvm,linux-program-process"),
            Some(vec![
                Platform::Process,
                Platform::LinuxProgram(lightvm_vmm::Platform::Kvm),
                Platform::LinuxProgram(lightvm_vmm::Platform::Process),
            ])
        );
    }

    #[test]
    fn socket_modes_are_octal_permission_bits() {
        assert_eq!(parse_mode("0660"), Ok(0o660));
        assert_eq!(parse_mode("600"), Ok(0o600));
        assert_eq!(parse_mode("0o666"), Ok(0o666));
        for bad in ["", "0999", "4755", "rw-rw----"] {
            assert!(parse_mode(bad).is_err(), "{bad}");
        }
    }
}
