//! `/metrics` in Prometheus text format: VMs by state, the pool, and a histogram of
//! creation latency (request → guest boot-done).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// Upper bounds of the latency buckets, in seconds: from 100 µs (a pooled VM) to
/// 100 ms (a cold one on a loaded host).
const BUCKETS: [f64; 10] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
];

/// Lock-free counters: observed on the creation path, so no lock is taken there.
#[derive(Debug, Default)]
pub struct Metrics {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_ns: AtomicU64,
    created: AtomicU64,
    pooled: AtomicU64,
}

/// Gauges read at scrape time.
#[derive(Debug, Clone, Copy, Default)]
pub struct Gauges {
    /// VMs whose guest runs.
    pub running: usize,
    /// VMs that ended and are not yet removed.
    pub exited: usize,
    /// Ready shells.
    pub pool_ready: usize,
    /// The pool's target.
    pub pool_target: usize,
    /// Ready shells for Linux programs.
    pub linux_pool_ready: usize,
    /// The Linux-program pool's target.
    pub linux_pool_target: usize,
}

impl Metrics {
    /// Records one creation.
    pub fn observe_creation(&self, seconds: f64, pooled: bool) {
        for (bucket, bound) in self.buckets.iter().zip(BUCKETS) {
            if seconds <= bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_ns
            .fetch_add((seconds * 1e9) as u64, Ordering::Relaxed);
        self.created.fetch_add(1, Ordering::Relaxed);
        if pooled {
            self.pooled.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The exposition text.
    pub fn render(&self, gauges: Gauges) -> String {
        let mut out = String::new();
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "# HELP lightvm_vms VMs known to the daemon, by state.");
        let _ = writeln!(out, "# TYPE lightvm_vms gauge");
        let _ = writeln!(out, "lightvm_vms{{state=\"running\"}} {}", gauges.running);
        let _ = writeln!(out, "lightvm_vms{{state=\"exited\"}} {}", gauges.exited);
        let _ = writeln!(
            out,
            "# HELP lightvm_pool_ready Prepared shells ready to boot a guest."
        );
        let _ = writeln!(out, "# TYPE lightvm_pool_ready gauge");
        let _ = writeln!(out, "lightvm_pool_ready {}", gauges.pool_ready);
        let _ = writeln!(
            out,
            "# HELP lightvm_pool_target Shells the pool keeps ready."
        );
        let _ = writeln!(out, "# TYPE lightvm_pool_target gauge");
        let _ = writeln!(out, "lightvm_pool_target {}", gauges.pool_target);
        let _ = writeln!(
            out,
            "# HELP lightvm_linux_pool_ready Prepared shells ready to boot a Linux program."
        );
        let _ = writeln!(out, "# TYPE lightvm_linux_pool_ready gauge");
        let _ = writeln!(out, "lightvm_linux_pool_ready {}", gauges.linux_pool_ready);
        let _ = writeln!(
            out,
            "# HELP lightvm_linux_pool_target Shells the Linux-program pool keeps ready."
        );
        let _ = writeln!(out, "# TYPE lightvm_linux_pool_target gauge");
        let _ = writeln!(
            out,
            "lightvm_linux_pool_target {}",
            gauges.linux_pool_target
        );
        let _ = writeln!(
            out,
            "# HELP lightvm_vms_created_total VMs created, and how many from the pool."
        );
        let _ = writeln!(out, "# TYPE lightvm_vms_created_total counter");
        let _ = writeln!(
            out,
            "lightvm_vms_created_total{{path=\"pool\"}} {}",
            self.pooled.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "lightvm_vms_created_total{{path=\"cold\"}} {}",
            self.created.load(Ordering::Relaxed) - self.pooled.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP lightvm_vm_create_seconds API request to guest boot-done."
        );
        let _ = writeln!(out, "# TYPE lightvm_vm_create_seconds histogram");
        for (bucket, bound) in self.buckets.iter().zip(BUCKETS) {
            let _ = writeln!(
                out,
                "lightvm_vm_create_seconds_bucket{{le=\"{bound}\"}} {}",
                bucket.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "lightvm_vm_create_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            out,
            "lightvm_vm_create_seconds_sum {}",
            self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9
        );
        let _ = writeln!(out, "lightvm_vm_create_seconds_count {count}");
        out
    }
}

/// One running VM's jail, for [`render_jails`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VmJail {
    /// The VM's id (the daemon's: 16 hex digits, nothing to escape).
    pub id: String,
    /// Whether its process runs in a jail (its shell reported one).
    pub jailed: bool,
    /// Its uid, when jailed.
    pub uid: Option<u32>,
    /// What the host did not allow, counted.
    pub skipped: usize,
    /// Its cgroup's memory.max, cpu.max in CPUs and pids.max, as set.
    pub memory_max: Option<u64>,
    /// CPUs.
    pub cpu_max: Option<f64>,
    /// Tasks.
    pub pids_max: Option<u64>,
}

/// A gauge family of [`render_jails`]: name, help, and the value of one VM.
type Family = (&'static str, &'static str, fn(&VmJail) -> Option<f64>);

/// The per-VM jail gauges: whether each running VM is jailed, and the limits
/// of its cgroup (a limit the VM does not have is left out).
pub fn render_jails(out: &mut String, vms: &[VmJail]) {
    let families: [Family; 6] = [
        ("lightvm_vm_jailed", "1 when the VM's process runs in its jail (namespaces, empty root, uid, rlimits, cgroup).", |vm| Some(if vm.jailed { 1.0 } else { 0.0 })),
        ("lightvm_vm_jail_skipped", "Parts of the jail this host did not allow (GET /vms/{id} says which and why).", |vm| Some(vm.skipped as f64)),
        ("lightvm_vm_uid", "The uid the VM's process runs as.", |vm| vm.uid.map(f64::from)),
        ("lightvm_vm_memory_max_bytes", "The VM's cgroup memory limit.", |vm| vm.memory_max.map(|m| m as f64)),
        ("lightvm_vm_cpu_max_cpus", "The VM's cgroup CPU limit, in CPUs.", |vm| vm.cpu_max),
        ("lightvm_vm_pids_max", "The VM's cgroup task limit.", |vm| vm.pids_max.map(|m| m as f64)),
    ];
    for (name, help, value) in families {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} gauge");
        for vm in vms {
            if let Some(value) = value(vm) {
                let _ = writeln!(out, "{name}{{id=\"{}\"}} {value}", vm.id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn jails_render_one_line_per_vm_and_limit() {
        let mut out = String::new();
        super::render_jails(
            &mut out,
            &[super::VmJail {
                id: "00ab".into(),
                jailed: true,
                uid: Some(65534),
                skipped: 0,
                memory_max: Some(16 << 20),
                cpu_max: Some(0.5),
                pids_max: None,
            }],
        );
        assert!(out.contains("lightvm_vm_jailed{id=\"00ab\"} 1\n"), "{out}");
        assert!(
            out.contains("lightvm_vm_memory_max_bytes{id=\"00ab\"} 16777216\n"),
            "{out}"
        );
        assert!(
            out.contains("lightvm_vm_cpu_max_cpus{id=\"00ab\"} 0.5\n"),
            "{out}"
        );
        assert!(!out.contains("lightvm_vm_pids_max{"), "{out}");
    }

    use super::*;

    #[test]
    fn buckets_are_cumulative_and_the_count_matches() {
        let metrics = Metrics::default();
        metrics.observe_creation(0.0002, true);
        metrics.observe_creation(0.003, false);
        let text = metrics.render(Gauges::default());
        assert!(text.contains("lightvm_vm_create_seconds_bucket{le=\"0.0001\"} 0"));
        assert!(text.contains("lightvm_vm_create_seconds_bucket{le=\"0.00025\"} 1"));
        assert!(text.contains("lightvm_vm_create_seconds_bucket{le=\"0.005\"} 2"));
        assert!(text.contains("lightvm_vm_create_seconds_bucket{le=\"+Inf\"} 2"));
        assert!(text.contains("lightvm_vm_create_seconds_count 2"));
        assert!(text.contains("lightvm_vms_created_total{path=\"pool\"} 1"));
        assert!(text.contains("lightvm_vms_created_total{path=\"cold\"} 1"));
    }
}
