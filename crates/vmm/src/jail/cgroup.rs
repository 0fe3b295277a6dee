//! A cgroup of its own for each VM process, with its memory, CPU and pids limits.
//!
//! The group is made *below the group the monitor was started in*, never beside
//! it: whoever placed lightvm (a systemd unit, a container, a test harness) keeps
//! accounting for and bounding everything its VMs use. It is named
//! `lightvm-<supervisor pid>`, made by the supervisor before the VM process
//! exists and removed by it once that process has ended; groups left by a
//! supervisor that was killed are removed by the next one that finds them empty.
//!
//! cgroup v2 is used for the controllers it has; a controller it lacks is looked
//! for in a cgroup v1 hierarchy (hosts that mount memory, cpu and pids as v1, as
//! our development machines do). v2 only nests a limited group below one that
//! delegates the controller (`cgroup.subtree_control`), which a group holding
//! processes — like the monitor's own, unless it is the root — cannot do; then
//! that controller is skipped, and the reason says so.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::config::{CgroupReport, CpuMax, Limits};

/// The controllers a VM's limits use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Controller {
    /// `memory.max`.
    Memory,
    /// `cpu.max`.
    Cpu,
    /// `pids.max`.
    Pids,
}

impl Controller {
    fn name(self) -> &'static str {
        match self {
            Controller::Memory => "memory",
            Controller::Cpu => "cpu",
            Controller::Pids => "pids",
        }
    }

    /// The controllers `limits` need.
    fn wanted(limits: &Limits) -> Vec<Controller> {
        let mut wanted = Vec::new();
        if limits.memory_max.is_some() {
            wanted.push(Controller::Memory);
        }
        if limits.cpu_max.is_some() {
            wanted.push(Controller::Cpu);
        }
        if limits.pids_max.is_some() {
            wanted.push(Controller::Pids);
        }
        wanted
    }
}

/// Where some controllers' groups are made: the monitor's own group in one
/// hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    /// 2 or 1.
    pub version: u8,
    /// The monitor's group's directory.
    pub parent: PathBuf,
    /// The controllers of this hierarchy the VM's limits use.
    pub controllers: Vec<Controller>,
    /// On v2, controllers that `parent` must delegate first.
    pub delegate: Vec<Controller>,
}

/// One mount of a cgroup hierarchy, from `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Mount {
    /// The cgroup path the mount shows at its mount point (not `/` in a
    /// container that sees a subtree).
    root: String,
    point: PathBuf,
    /// v1: the controllers of the hierarchy; v2: none (they are in files).
    controllers: Vec<String>,
    v2: bool,
}

/// The cgroup mounts in `mountinfo` (the text of `/proc/self/mountinfo`).
fn mounts(mountinfo: &str) -> Vec<Mount> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let (before, after) = line.split_once(" - ")?;
            let fields: Vec<&str> = before.split(' ').collect();
            let mut after = after.split(' ');
            let fstype = after.next()?;
            let _source = after.next()?;
            let options = after.next().unwrap_or("");
            let (root, point) = (fields.get(3)?, fields.get(4)?);
            let v2 = match fstype {
                "cgroup2" => true,
                "cgroup" => false,
                _ => return None,
            };
            Some(Mount {
                root: unescape(root),
                point: PathBuf::from(unescape(point)),
                controllers: if v2 {
                    Vec::new()
                } else {
                    options.split(',').map(str::to_owned).collect()
                },
                v2,
            })
        })
        .collect()
}

/// mountinfo escapes spaces, tabs, newlines and backslashes as `\ooo`.
fn unescape(text: &str) -> String {
    let mut out = Vec::with_capacity(text.len());
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|digits| {
            std::str::from_utf8(digits)
                .ok()
                .and_then(|d| u8::from_str_radix(d, 8).ok())
        });
        match (bytes[i], octal) {
            (b'\\', Some(byte)) => {
                out.push(byte);
                i += 4;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The monitor's group in the hierarchy whose `/proc/self/cgroup` line matches.
fn own_path(proc_cgroup: &str, matches: impl Fn(&str, &[&str]) -> bool) -> Option<String> {
    proc_cgroup.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let id = parts.next()?;
        let controllers: Vec<&str> = parts.next()?.split(',').collect();
        let path = parts.next()?;
        matches(id, &controllers).then(|| path.to_owned())
    })
}

/// The directory of cgroup `path` under `mount`, if the mount shows it.
fn directory(mount: &Mount, path: &str) -> Option<PathBuf> {
    let relative = if mount.root == "/" {
        path.trim_start_matches('/')
    } else {
        path.strip_prefix(mount.root.as_str())?
            .trim_start_matches('/')
    };
    Some(mount.point.join(relative))
}

/// Reads a cgroup file of controller names (`cgroup.controllers`,
/// `cgroup.subtree_control`).
fn listed(dir: &Path, file: &str) -> Vec<String> {
    fs::read_to_string(dir.join(file))
        .map(|text| text.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default()
}

/// Where the groups of `wanted` go, from the texts of `/proc/self/mountinfo` and
/// `/proc/self/cgroup`; or why they can go nowhere. v2 first, v1 for what v2 lacks.
pub fn locate(
    mountinfo: &str,
    proc_cgroup: &str,
    wanted: &[Controller],
) -> Result<Vec<Place>, String> {
    let mounts = mounts(mountinfo);
    let mut places = Vec::new();
    let mut left: Vec<Controller> = wanted.to_vec();
    let mut reasons = Vec::new();
    let v2 = mounts.iter().find(|m| m.v2).and_then(|mount| {
        let path = own_path(proc_cgroup, |id, _| id == "0")?;
        Some((directory(mount, &path)?, path))
    });
    if let Some((parent, path)) = v2 {
        let available = listed(&parent, "cgroup.controllers");
        let delegated = listed(&parent, "cgroup.subtree_control");
        let here: Vec<Controller> = left
            .iter()
            .copied()
            .filter(|c| available.iter().any(|a| a == c.name()))
            .collect();
        let delegate: Vec<Controller> = here
            .iter()
            .copied()
            .filter(|c| !delegated.iter().any(|d| d == c.name()))
            .collect();
        if !here.is_empty() && (delegate.is_empty() || path == "/") {
            left.retain(|c| !here.contains(c));
            places.push(Place {
                version: 2,
                parent,
                controllers: here,
                delegate,
            });
        } else if !here.is_empty() {
            reasons.push(format!(
                "cgroup v2 group {path} holds processes and does not delegate {} (cgroup.subtree_control): start lightvm in a group that does",
                names(&delegate)
            ));
        }
    }
    for controller in left.clone() {
        let name = controller.name();
        let Some(mount) = mounts
            .iter()
            .find(|m| !m.v2 && m.controllers.iter().any(|c| c == name))
        else {
            continue;
        };
        let Some(parent) = own_path(proc_cgroup, |id, list| id != "0" && list.contains(&name))
            .and_then(|path| directory(mount, &path))
        else {
            continue;
        };
        left.retain(|c| *c != controller);
        match places
            .iter_mut()
            .find(|p| p.version == 1 && p.parent == parent)
        {
            Some(place) => place.controllers.push(controller),
            None => places.push(Place {
                version: 1,
                parent,
                controllers: vec![controller],
                delegate: Vec::new(),
            }),
        }
    }
    if places.is_empty() {
        if reasons.is_empty() {
            reasons.push(format!(
                "no cgroup hierarchy here has the {} controller",
                names(wanted)
            ));
        }
        return Err(reasons.join("; "));
    }
    Ok(places)
}

fn names(controllers: &[Controller]) -> String {
    controllers
        .iter()
        .map(|c| c.name())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A VM's group, made and limited; removed by [`Cgroup::remove`].
#[derive(Debug)]
pub struct Cgroup {
    groups: Vec<(u8, PathBuf)>,
    limits: Limits,
    /// Controllers asked for that no hierarchy here has.
    missing: Vec<Controller>,
}

impl Cgroup {
    /// Makes group `name` with `limits` below the monitor's own group in each
    /// hierarchy that has a controller they need; or says why it cannot.
    pub fn create(limits: &Limits, name: &str) -> Result<Self, String> {
        let wanted = Controller::wanted(limits);
        if wanted.is_empty() {
            return Err("no limit asked for".to_owned());
        }
        let read =
            |path: &str| fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"));
        let places = locate(
            &read("/proc/self/mountinfo")?,
            &read("/proc/self/cgroup")?,
            &wanted,
        )?;
        Self::create_in(&places, limits, name)
    }

    /// As [`Cgroup::create`], in `places` (found by [`locate`]).
    pub fn create_in(places: &[Place], limits: &Limits, name: &str) -> Result<Self, String> {
        let placed: Vec<Controller> = places
            .iter()
            .flat_map(|p| p.controllers.iter().copied())
            .collect();
        let mut group = Cgroup {
            groups: Vec::new(),
            limits: *limits,
            missing: Controller::wanted(limits)
                .into_iter()
                .filter(|c| !placed.contains(c))
                .collect(),
        };
        for place in places {
            if let Err(error) = group.make(place, name) {
                group.remove();
                return Err(error);
            }
        }
        Ok(group)
    }

    fn make(&mut self, place: &Place, name: &str) -> Result<(), String> {
        // A process in a PID namespace of its own sees no other pid: every
        // group would look stale to it, even one just made for a shell that
        // has not joined it yet. Its starter sweeps instead (`sweep_stale`).
        // SAFETY: getpid has no preconditions.
        if unsafe { libc::getpid() } != 1 {
            sweep(&place.parent);
        }
        if !place.delegate.is_empty() {
            let enable: Vec<String> = place
                .delegate
                .iter()
                .map(|c| format!("+{}", c.name()))
                .collect();
            let file = place.parent.join("cgroup.subtree_control");
            fs::write(&file, enable.join(" "))
                .map_err(|e| format!("cannot delegate {}: {e}", names(&place.delegate)))?;
        }
        let dir = place.parent.join(name);
        match fs::create_dir(&dir) {
            Ok(()) => {}
            // A group of this name left by a process of the same pid, long gone.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                fs::remove_dir(&dir)
                    .and_then(|()| fs::create_dir(&dir))
                    .map_err(|e| format!("cannot make {}: {e}", dir.display()))?;
            }
            Err(e) => {
                return Err(format!(
                    "cannot make {}: {e}{}",
                    dir.display(),
                    if e.kind() == io::ErrorKind::PermissionDenied {
                        " (cgroups need root, or a group delegated to this user)"
                    } else {
                        ""
                    }
                ))
            }
        }
        self.groups.push((place.version, dir.clone()));
        let write = |file: &str, value: String| {
            fs::write(dir.join(file), &value)
                .map_err(|e| format!("cannot set {file} to {value} in {}: {e}", dir.display()))
        };
        for controller in &place.controllers {
            match (controller, place.version) {
                (Controller::Memory, 2) => write("memory.max", memory(&self.limits))?,
                (Controller::Memory, _) => write("memory.limit_in_bytes", memory(&self.limits))?,
                (Controller::Cpu, 2) => {
                    if let Some(cpu) = self.limits.cpu_max {
                        write("cpu.max", cpu.to_cgroup())?;
                    }
                }
                (Controller::Cpu, _) => {
                    if let Some(cpu) = self.limits.cpu_max {
                        write("cpu.cfs_period_us", cpu.period_us.to_string())?;
                        write("cpu.cfs_quota_us", cpu.quota_us.to_string())?;
                    }
                }
                (Controller::Pids, _) => {
                    if let Some(pids) = self.limits.pids_max {
                        write("pids.max", pids.to_string())?;
                    }
                }
            }
        }
        Ok(())
    }

    /// The group a [`CgroupReport`] names, to change its limits or remove it from
    /// another process than the one that made it (the daemon, for its shells'
    /// groups); `None` if the report names none. A directory with
    /// `cgroup.controllers` is a v2 group.
    pub fn reopen(report: &CgroupReport) -> Option<Self> {
        let CgroupReport::Applied {
            paths,
            memory_max,
            cpu_max,
            pids_max,
            ..
        } = report
        else {
            return None;
        };
        let cpu_max = cpu_max.as_deref().and_then(|text| {
            let (quota, period) = text.split_once(' ')?;
            Some(CpuMax {
                quota_us: quota.parse().ok()?,
                period_us: period.parse().ok()?,
            })
        });
        let groups = paths
            .iter()
            .map(PathBuf::from)
            .map(|dir| {
                let version = if dir.join("cgroup.controllers").exists() {
                    2
                } else {
                    1
                };
                (version, dir)
            })
            .collect();
        Some(Self {
            groups,
            limits: Limits {
                memory_max: *memory_max,
                cpu_max,
                pids_max: *pids_max,
            },
            missing: Vec::new(),
        })
    }

    /// Sets the limits `limits` has (those it leaves `None` stay as they are) in
    /// every part of the group that has their controller. Memory goes first: a
    /// limit below what the group already uses fails (`EBUSY` once the kernel
    /// cannot reclaim enough), and then nothing else was changed.
    pub fn set_limits(&mut self, limits: &Limits) -> Result<(), String> {
        // What some part of the group took: only that is reported as applied.
        let (mut memory_set, mut cpu_set, mut pids_set) = (false, false, false);
        for (version, dir) in &self.groups {
            let write = |file: &str, value: String| -> Result<bool, String> {
                let path = dir.join(file);
                if !path.exists() {
                    return Ok(false);
                }
                fs::write(&path, &value)
                    .map(|()| true)
                    .map_err(|e| format!("cannot set {file} to {value} in {}: {e}", dir.display()))
            };
            let v2 = *version == 2;
            if let Some(memory) = limits.memory_max {
                let file = if v2 {
                    "memory.max"
                } else {
                    "memory.limit_in_bytes"
                };
                memory_set |= write(file, memory.to_string())?;
            }
            if let Some(cpu) = limits.cpu_max {
                cpu_set |= if v2 {
                    write("cpu.max", cpu.to_cgroup())?
                } else {
                    write("cpu.cfs_period_us", cpu.period_us.to_string())?
                        && write("cpu.cfs_quota_us", cpu.quota_us.to_string())?
                };
            }
            if let Some(pids) = limits.pids_max {
                pids_set |= write("pids.max", pids.to_string())?;
            }
        }
        if memory_set {
            self.limits.memory_max = limits.memory_max;
        }
        if cpu_set {
            self.limits.cpu_max = limits.cpu_max;
        }
        if pids_set {
            self.limits.pids_max = limits.pids_max;
        }
        Ok(())
    }

    /// Moves the calling thread — a process's only one — into the group's v1
    /// hierarchies, through their `tasks` file. Moving a whole process
    /// (`cgroup.procs`) takes the kernel's cgroup_threadgroup_rwsem for writing,
    /// which waits for an RCU grace period (~10 ms on our development VMs); the
    /// calling thread moving itself needs no such lock.
    pub fn join_v1(&self) -> io::Result<()> {
        for (_, dir) in self.groups.iter().filter(|(v, _)| *v == 1) {
            fs::write(dir.join("tasks"), "0")?;
        }
        Ok(())
    }

    /// Whether the group has a cgroup v2 part, which only [`Cgroup::attach_v2`]
    /// can move a process into.
    pub fn has_v2(&self) -> bool {
        self.groups.iter().any(|(v, _)| *v == 2)
    }

    /// Moves process `pid` into the group's v2 part (`cgroup.procs`: v2 moves
    /// whole processes, and waits for the grace period).
    pub fn attach_v2(&self, pid: libc::pid_t) -> io::Result<()> {
        for (_, dir) in self.groups.iter().filter(|(v, _)| *v == 2) {
            fs::write(dir.join("cgroup.procs"), pid.to_string())?;
        }
        Ok(())
    }

    /// Whether the memory controller's OOM killer killed a process of the group.
    pub fn oom_killed(&self) -> bool {
        self.groups.iter().any(|(version, dir)| {
            let file = if *version == 2 {
                "memory.events"
            } else {
                "memory.oom_control"
            };
            fs::read_to_string(dir.join(file)).is_ok_and(|text| {
                text.lines().any(|line| {
                    line.strip_prefix("oom_kill ")
                        .and_then(|n| n.trim().parse::<u64>().ok())
                        .is_some_and(|n| n > 0)
                })
            })
        })
    }

    /// The memory limit, when one was set.
    pub fn memory_max(&self) -> Option<u64> {
        self.limits.memory_max
    }

    /// What the run report says of the group.
    pub fn report(&self) -> CgroupReport {
        let has = |c: Controller| !self.missing.contains(&c);
        CgroupReport::Applied {
            version: self.groups.iter().map(|(v, _)| *v).min().unwrap_or(2),
            paths: self
                .groups
                .iter()
                .map(|(_, dir)| dir.display().to_string())
                .collect(),
            memory_max: self.limits.memory_max.filter(|_| has(Controller::Memory)),
            cpu_max: self
                .limits
                .cpu_max
                .filter(|_| has(Controller::Cpu))
                .map(|c| c.to_cgroup()),
            pids_max: self.limits.pids_max.filter(|_| has(Controller::Pids)),
        }
    }

    /// What was asked for that no hierarchy here has, one line; `None` if
    /// nothing.
    pub fn missing(&self) -> Option<String> {
        (!self.missing.is_empty()).then(|| {
            format!(
                "cgroup: no hierarchy here has the {} controller",
                names(&self.missing)
            )
        })
    }

    /// Removes the group (once no process is left in it: a process that has just
    /// been reaped can still be leaving it, so a busy group is tried again for a
    /// little while).
    pub fn remove(&self) {
        for (_, dir) in &self.groups {
            for _ in 0..100 {
                match fs::remove_dir(dir) {
                    Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                        std::thread::sleep(std::time::Duration::from_millis(2));
                    }
                    _ => break,
                }
            }
        }
    }
}

fn memory(limits: &Limits) -> String {
    limits
        .memory_max
        .map_or("max".to_owned(), |m| m.to_string())
}

/// Removes the empty groups of ended VM processes from the places the groups
/// for `limits` are made in below this process's own groups: for a process that
/// starts VM processes into PID namespaces of their own (the daemon, before each
/// shell), which cannot sweep for themselves.
pub fn sweep_stale(limits: &Limits) {
    let wanted = Controller::wanted(limits);
    let (Ok(mountinfo), Ok(own)) = (
        fs::read_to_string("/proc/self/mountinfo"),
        fs::read_to_string("/proc/self/cgroup"),
    ) else {
        return;
    };
    if let Ok(places) = locate(&mountinfo, &own, &wanted) {
        for place in places {
            sweep(&place.parent);
        }
    }
}

/// Removes the empty groups that supervisors killed before they could clean up
/// left in `parent` (`lightvm-<pid>` of a pid that no longer exists).
fn sweep(parent: &Path) {
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("lightvm-"))
            .and_then(|n| n.parse::<libc::pid_t>().ok())
        else {
            continue;
        };
        // SAFETY: kill with signal 0 sends nothing; it only asks whether `pid` exists.
        let gone = unsafe { libc::kill(pid, 0) } != 0
            && io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
        if gone {
            // Fails, harmlessly, if a process is still in it.
            let _ = fs::remove_dir(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This development host's layout: memory, cpu and pids on v1 (memory in a
    /// group of its own), v2 mounted with none of them.
    const HYBRID_MOUNTS: &str = "\
25 21 0:22 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
26 25 0:23 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
29 25 0:26 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
32 25 0:29 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
34 25 0:31 / /nonexistent-lightvm/unified rw,relatime - cgroup2 cgroup2 rw
";
    const HYBRID_CGROUP: &str = "\
8:pids:/
4:memory:/process_api/d2b0
1:cpu:/
0::/
";

    #[test]
    fn v1_hierarchies_hold_what_v2_lacks() {
        let wanted = [Controller::Memory, Controller::Cpu, Controller::Pids];
        let places = locate(HYBRID_MOUNTS, HYBRID_CGROUP, &wanted).unwrap();
        // The v2 group lists no controllers (here: it does not exist; on the host
        // this mirrors, only hugetlb), so everything goes to v1, each below the
        // monitor's own group.
        assert_eq!(
            places,
            vec![
                Place {
                    version: 1,
                    parent: "/sys/fs/cgroup/memory/process_api/d2b0".into(),
                    controllers: vec![Controller::Memory],
                    delegate: vec![],
                },
                Place {
                    version: 1,
                    parent: "/sys/fs/cgroup/cpu".into(),
                    controllers: vec![Controller::Cpu],
                    delegate: vec![],
                },
                Place {
                    version: 1,
                    parent: "/sys/fs/cgroup/pids".into(),
                    controllers: vec![Controller::Pids],
                    delegate: vec![],
                },
            ]
        );
    }

    #[test]
    fn nothing_to_place_is_one_line_naming_the_controllers() {
        let err = locate("", "0::/\n", &[Controller::Memory, Controller::Pids]).unwrap_err();
        assert_eq!(
            err,
            "no cgroup hierarchy here has the memory, pids controller"
        );
    }

    #[test]
    fn mountinfo_paths_are_unescaped_and_subtrees_resolved() {
        let mounts =
            mounts("40 1 0:50 /lxc/c1 /sys/fs/cgroup/with\\040space rw - cgroup2 cgroup2 rw\n");
        assert_eq!(mounts[0].point, PathBuf::from("/sys/fs/cgroup/with space"));
        assert_eq!(
            directory(&mounts[0], "/lxc/c1/app"),
            Some(PathBuf::from("/sys/fs/cgroup/with space/app"))
        );
        assert_eq!(directory(&mounts[0], "/elsewhere"), None);
    }

    /// A fake v2 hierarchy in a scratch directory: the files a cgroupfs would
    /// have, as plain files.
    fn fake_v2(delegated: &str) -> (PathBuf, String) {
        let root = std::env::temp_dir().join(format!(
            "lightvm-cgroup-{}-{}",
            std::process::id(),
            delegated.len()
        ));
        let group = root.join("svc");
        fs::create_dir_all(&group).unwrap();
        fs::write(
            group.join("cgroup.controllers"),
            "cpuset cpu io memory pids",
        )
        .unwrap();
        fs::write(group.join("cgroup.subtree_control"), delegated).unwrap();
        let mountinfo = format!(
            "34 25 0:31 / {} rw,relatime - cgroup2 cgroup2 rw\n",
            root.display()
        );
        (root, mountinfo)
    }

    #[test]
    fn a_reported_group_is_reopened_and_takes_new_limits_where_it_has_their_files() {
        let root = std::env::temp_dir().join(format!("lightvm-reopen-{}", std::process::id()));
        let (v2, v1_memory) = (root.join("v2/lightvm-7"), root.join("memory/lightvm-7"));
        fs::create_dir_all(&v2).unwrap();
        fs::create_dir_all(&v1_memory).unwrap();
        for (dir, file) in [
            (&v2, "cgroup.controllers"),
            (&v2, "cpu.max"),
            (&v2, "pids.max"),
            (&v1_memory, "memory.limit_in_bytes"),
        ] {
            fs::write(dir.join(file), "").unwrap();
        }
        let report = CgroupReport::Applied {
            version: 1,
            paths: vec![v2.display().to_string(), v1_memory.display().to_string()],
            memory_max: Some(10 << 20),
            cpu_max: Some("200000 100000".into()),
            pids_max: Some(9),
        };
        let mut group = Cgroup::reopen(&report).unwrap();
        assert_eq!(group.report(), report, "reopened as reported");
        let asked = Limits {
            memory_max: Some(16 << 20),
            cpu_max: Some(CpuMax::from_cpus("0.5").unwrap()),
            pids_max: None,
        };
        group.set_limits(&asked).unwrap();
        let read = |path: PathBuf| fs::read_to_string(path).unwrap();
        assert_eq!(read(v1_memory.join("memory.limit_in_bytes")), "16777216");
        assert_eq!(read(v2.join("cpu.max")), "50000 100000");
        assert_eq!(read(v2.join("pids.max")), "", "not asked: untouched");
        let CgroupReport::Applied {
            memory_max,
            cpu_max,
            pids_max,
            ..
        } = group.report()
        else {
            panic!("applied");
        };
        assert_eq!(
            (memory_max, cpu_max.as_deref(), pids_max),
            (Some(16 << 20), Some("50000 100000"), Some(9))
        );
        assert!(Cgroup::reopen(&CgroupReport::default()).is_none());
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_v2_group_that_delegates_gets_the_vms_group_with_its_limits() {
        let (root, mountinfo) = fake_v2("memory pids cpu");
        let wanted = [Controller::Memory, Controller::Cpu, Controller::Pids];
        let places = locate(&mountinfo, "0::/svc\n", &wanted).unwrap();
        assert_eq!(places.len(), 1);
        assert_eq!(places[0].version, 2);
        assert!(places[0].delegate.is_empty());
        let limits = Limits {
            memory_max: Some(34 << 20),
            cpu_max: Some(super::super::CpuMax::from_cpus("0.5").unwrap()),
            pids_max: Some(9),
        };
        let group = Cgroup::create_in(&places, &limits, "lightvm-1").unwrap();
        let dir = root.join("svc/lightvm-1");
        assert_eq!(
            fs::read_to_string(dir.join("memory.max")).unwrap(),
            "35651584"
        );
        assert_eq!(
            fs::read_to_string(dir.join("cpu.max")).unwrap(),
            "50000 100000"
        );
        assert_eq!(fs::read_to_string(dir.join("pids.max")).unwrap(), "9");
        assert!(!group.oom_killed());
        fs::write(
            dir.join("memory.events"),
            "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n",
        )
        .unwrap();
        assert!(group.oom_killed());
        match group.report() {
            CgroupReport::Applied {
                version,
                paths,
                memory_max,
                cpu_max,
                pids_max,
            } => {
                assert_eq!(version, 2);
                assert_eq!(paths, vec![dir.display().to_string()]);
                assert_eq!(memory_max, Some(34 << 20));
                assert_eq!(cpu_max.as_deref(), Some("50000 100000"));
                assert_eq!(pids_max, Some(9));
            }
            other => panic!("{other:?}"),
        }
        let _ = fs::remove_dir_all(&root);
    }

    #[test]
    fn a_v2_group_with_processes_that_does_not_delegate_is_named() {
        let (root, mountinfo) = fake_v2("cpu");
        let err = locate(&mountinfo, "0::/svc\n", &[Controller::Memory]).unwrap_err();
        assert!(
            err.contains("/svc holds processes and does not delegate memory"),
            "{err}"
        );
        let _ = fs::remove_dir_all(&root);
    }

    #[test]
    fn groups_of_supervisors_that_are_gone_are_swept() {
        let parent = std::env::temp_dir().join(format!("lightvm-sweep-{}", std::process::id()));
        let alive = parent.join(format!("lightvm-{}", std::process::id()));
        // No process has pid 2^22 + 1: above pid_max's largest possible value.
        let gone = parent.join("lightvm-4194305");
        let other = parent.join("not-ours-4194305");
        for dir in [&alive, &gone, &other] {
            fs::create_dir_all(dir).unwrap();
        }
        sweep(&parent);
        assert!(alive.exists() && other.exists());
        assert!(!gone.exists());
        let _ = fs::remove_dir_all(&parent);
    }
}
