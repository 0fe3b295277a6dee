//! What a jail is asked to apply ([`JailConfig`]) and what it applied
//! ([`JailReport`]): plain, serde-able data, so that a daemon can hand the same
//! request to its shells.

use serde::{Deserialize, Serialize};

/// The unprivileged uid and gid a monitor started as root drops to when none is
/// asked for: `nobody`, which owns no file.
pub const DEFAULT_ID: u32 = 65534;

/// What the monitor needs beyond its guest's memory, for the default memory
/// limit: its own code and heap, KVM's per-VM kernel memory (~0.7 MiB on our
/// hosts), the page tables, the console and device buffers. Measured at 1–3 MiB
/// for a unikernel (`memory.max_usage_in_bytes` of `lightvm run`); the rest is
/// room, plus [`OVERHEAD_PER_GUEST_MIB`] for tables that grow with the guest.
pub const MONITOR_OVERHEAD: u64 = 32 << 20;

/// One MiB of monitor overhead per this many MiB of guest memory (page tables,
/// KVM's shadow pages).
pub const OVERHEAD_PER_GUEST_MIB: u64 = 64;

/// Tasks a VM process may hold beyond its own monitor threads (KVM's per-VM
/// worker, a thread the C library starts, …): the default `pids.max` is the
/// monitor's threads plus this.
pub const PIDS_SLACK: u64 = 8;

/// The jail of one VM process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JailConfig {
    /// The uid to run as when started as root.
    pub uid: u32,
    /// The gid to run as when started as root.
    pub gid: u32,
    /// Whether to enter a new, empty network namespace. The taps a VM uses are
    /// opened before and keep working from inside it.
    pub network_namespace: bool,
    /// The limits of the VM's cgroup.
    pub limits: Limits,
    /// `RLIMIT_NOFILE`; `None`: the highest descriptor open at lock-down plus
    /// a little room (the monitor opens nothing once its VM is built).
    pub nofile: Option<u64>,
    /// `RLIMIT_FSIZE`; `None`: unlimited, because a console or report on a file
    /// grows for as long as the guest prints. A daemon that caps its console logs
    /// can set it.
    pub fsize: Option<u64>,
    /// `RLIMIT_NPROC`; `None`: not set. The kernel counts it per uid across the
    /// host, so on a uid every VM shares (the default) it would bound the host's
    /// VMs, not one VM's tasks: that bound is the cgroup's `pids.max`. Set it
    /// when each VM has a uid of its own.
    pub nproc: Option<u64>,
}

impl Default for JailConfig {
    fn default() -> Self {
        Self {
            uid: DEFAULT_ID,
            gid: DEFAULT_ID,
            network_namespace: true,
            limits: Limits::default(),
            nofile: None,
            fsize: None,
            nproc: None,
        }
    }
}

/// The limits of a VM's cgroup; `None` leaves one unset.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// `memory.max` (`memory.limit_in_bytes` on cgroup v1), in bytes.
    pub memory_max: Option<u64>,
    /// `cpu.max` (`cpu.cfs_quota_us` and `cpu.cfs_period_us` on v1).
    pub cpu_max: Option<CpuMax>,
    /// `pids.max`: tasks (threads) in the group.
    pub pids_max: Option<u64>,
}

impl Limits {
    /// The defaults for a guest of `mem_size` bytes whose monitor runs `threads`
    /// threads: memory for the guest and the monitor, tasks for the monitor's
    /// threads and a few more, no CPU limit.
    pub fn for_guest(mem_size: u64, threads: u64) -> Self {
        let overhead = MONITOR_OVERHEAD + (mem_size / OVERHEAD_PER_GUEST_MIB);
        Self {
            memory_max: Some(mem_size.saturating_add(overhead)),
            cpu_max: None,
            pids_max: Some(threads + PIDS_SLACK),
        }
    }
}

/// A CPU bandwidth limit: `quota_us` of CPU time every `period_us`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CpuMax {
    /// CPU time per period, in microseconds.
    pub quota_us: u64,
    /// The period, in microseconds.
    pub period_us: u64,
}

/// A `--cpu-limit` that cannot be a CPU limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid CPU limit {0:?}: expected a number of CPUs above 0, e.g. 0.5, 1 or 2")]
pub struct CpuSyntax(pub String);

impl CpuMax {
    /// The period the kernel uses by default.
    pub const PERIOD_US: u64 = 100_000;

    /// The limit of `cpus` CPUs (`0.5` is half of one CPU's time, `2` two CPUs').
    pub fn from_cpus(text: &str) -> Result<Self, CpuSyntax> {
        let bad = || CpuSyntax(text.to_owned());
        let cpus: f64 = text.trim().parse().map_err(|_| bad())?;
        // The kernel takes quotas from 1 ms; 1024 CPUs is past any host we run on.
        if !cpus.is_finite() || !(0.01..=1024.0).contains(&cpus) {
            return Err(bad());
        }
        Ok(Self {
            quota_us: (cpus * Self::PERIOD_US as f64).round() as u64,
            period_us: Self::PERIOD_US,
        })
    }

    /// As `cpu.max` writes it: `"QUOTA PERIOD"`.
    pub fn to_cgroup(self) -> String {
        format!("{} {}", self.quota_us, self.period_us)
    }
}

/// What a jail applied, for the run report (`"jail"` in `lightvm run --json`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JailReport {
    /// The namespaces the VM process is in that are its own.
    pub namespaces: Vec<String>,
    /// Its root directory: `"empty"` (a read-only tmpfs with nothing in it), or
    /// `"host"` where no mount namespace could be made.
    pub root: String,
    /// The uid it runs as (in the host's view).
    pub uid: u32,
    /// The gid it runs as (in the host's view).
    pub gid: u32,
    /// The resource limits set.
    pub rlimits: RlimitReport,
    /// Its cgroup, or why it has none.
    pub cgroup: CgroupReport,
    /// What could not be applied here, and why: one line each.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub skipped: Vec<String>,
}

/// The resource limits a jail set (soft and hard alike).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RlimitReport {
    /// `RLIMIT_NOFILE`.
    pub nofile: u64,
    /// `RLIMIT_CORE` (always 0: a core would hold guest memory).
    pub core: u64,
    /// `RLIMIT_FSIZE`, when set.
    pub fsize: Option<u64>,
    /// `RLIMIT_NPROC`, when set.
    pub nproc: Option<u64>,
}

/// A VM's cgroup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum CgroupReport {
    /// The group it runs in and its limits.
    Applied {
        /// 2 (unified) or 1 (a hierarchy per controller).
        version: u8,
        /// The group's directories (one per v1 hierarchy).
        paths: Vec<String>,
        /// `memory.max`, when set.
        memory_max: Option<u64>,
        /// `cpu.max` as the kernel reads it, when set.
        cpu_max: Option<String>,
        /// `pids.max`, when set.
        pids_max: Option<u64>,
    },
    /// Why it has none.
    Skipped {
        /// One line.
        skipped: String,
    },
}

impl Default for CgroupReport {
    fn default() -> Self {
        CgroupReport::Skipped {
            skipped: "not asked for".to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_limits_parse_as_cpus() {
        assert_eq!(
            CpuMax::from_cpus("0.5"),
            Ok(CpuMax {
                quota_us: 50_000,
                period_us: 100_000
            })
        );
        assert_eq!(CpuMax::from_cpus("2").unwrap().to_cgroup(), "200000 100000");
        for bad in ["", "0", "-1", "nan", "inf", "lots", "0.001", "5000"] {
            assert!(CpuMax::from_cpus(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_default_limits_cover_the_guest_and_the_monitor() {
        let limits = Limits::for_guest(64 << 20, 1);
        assert_eq!(
            limits.memory_max,
            Some((64 << 20) + MONITOR_OVERHEAD + (1 << 20))
        );
        assert_eq!(limits.pids_max, Some(1 + PIDS_SLACK));
        assert_eq!(limits.cpu_max, None);
    }

    #[test]
    fn configs_and_reports_travel_as_json() {
        let config = JailConfig {
            uid: 1234,
            limits: Limits {
                cpu_max: Some(CpuMax::from_cpus("1.5").unwrap()),
                ..Limits::for_guest(2 << 20, 1)
            },
            ..JailConfig::default()
        };
        let text = serde_json::to_string(&config).unwrap();
        assert_eq!(serde_json::from_str::<JailConfig>(&text).unwrap(), config);
        assert_eq!(
            serde_json::from_str::<JailConfig>("{}").unwrap(),
            JailConfig::default()
        );
        assert!(serde_json::from_str::<JailConfig>(r#"{"uid": 1, "chroot": "/"}"#).is_err());
        let report = JailReport {
            cgroup: CgroupReport::Skipped {
                skipped: "no cgroup here".into(),
            },
            ..JailReport::default()
        };
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["cgroup"]["skipped"], "no cgroup here");
        assert!(json.get("skipped").is_none(), "nothing skipped: no key");
    }
}
