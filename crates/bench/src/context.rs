//! What every suite shares: the platforms available on this machine, and one way
//! to run a workload on each of them, to its end or as a running instance.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use crate::daemon::{DaemonSpec, PoolDaemon, PoolVm};
use crate::error::BenchError;
use crate::launch::{self, Ready, RunOutcome};
use crate::netns::Attachment;
use crate::platform::{Platform, Start, Unikernel, Workload};
use crate::runc::{self, Runc};
use crate::{BenchConfig, Progress};

/// A finished run of a workload on one platform.
#[derive(Debug, Clone)]
pub(crate) struct Run {
    /// Request → the workload's `main` (µs).
    pub to_main_us: f64,
    /// Request → its exit (µs), where the platform shows it.
    pub to_exit_us: Option<f64>,
    /// VM creation (or, pooled, the shell's boot request) → the guest's `main`, as
    /// the VMM measures it: a VM's own start-up, without the `lightvm` process or
    /// the API around it. For a process: spawn → `main`, the same moment.
    pub vm_to_main_us: Option<f64>,
    /// What it printed.
    pub output: String,
}

/// A running instance.
pub(crate) struct Instance {
    /// Request → the workload's `main` (µs).
    pub to_main_us: f64,
    /// Every host process of the instance.
    pub pids: Vec<u32>,
    handle: Handle,
}

enum Handle {
    Child(Child),
    Container(String),
    Pool {
        vm: PoolVm,
        /// The daemon it came from.
        daemon: DaemonKey,
    },
}

/// The shared state of one bench run.
pub(crate) struct Context<'a> {
    pub config: &'a BenchConfig,
    pub progress: &'a dyn Progress,
    /// Scratch space: baselines, bundles, logs, the daemon's state.
    pub work: PathBuf,
    /// The process baselines, by workload.
    pub baselines: BTreeMap<Workload, PathBuf>,
    /// Why each unavailable platform is.
    pub unavailable: BTreeMap<Platform, String>,
    pub runc: Option<Runc>,
    /// The run's daemons, one per lightvm platform, shell size and network,
    /// started on first use.
    daemons: BTreeMap<DaemonKey, PoolDaemon>,
}

/// Which daemon of the run: a daemon runs one platform, a pool's shells have one
/// size, and its shells can open only the taps of the namespace the daemon runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct DaemonKey {
    /// Its `--platform`.
    on: lightvm_vmm::Platform,
    /// The guest memory of its shells (`--pool-mem`).
    pool_mem: &'static str,
    /// Whether it runs in the test network's clients' namespace.
    networked: bool,
}

impl<'a> Context<'a> {
    pub(crate) fn new(
        config: &'a BenchConfig,
        progress: &'a dyn Progress,
        work: PathBuf,
        baselines: BTreeMap<Workload, PathBuf>,
        unavailable: BTreeMap<Platform, String>,
        runc: Option<Runc>,
    ) -> Self {
        Self {
            config,
            progress,
            work,
            baselines,
            unavailable,
            runc,
            daemons: BTreeMap::new(),
        }
    }

    /// The guest image of `workload`, or why there is none.
    pub(crate) fn guest(&self, workload: Workload) -> Result<&Path, String> {
        workload.guest().map_err(str::to_owned)?;
        match self.config.guests.get(&workload) {
            Some(Ok(path)) => Ok(path),
            Some(Err(reason)) => Err(reason.clone()),
            None => Err(format!("no {} unikernel image was given", workload.name())),
        }
    }

    /// The Linux personality's image, or why there is none.
    pub(crate) fn personality(&self) -> Result<&Path, String> {
        match &self.config.personality {
            Some(Ok(path)) => Ok(path),
            Some(Err(reason)) => Err(reason.clone()),
            None => Err("no Linux personality image was given".to_owned()),
        }
    }

    /// The root filesystem `workload`'s program runs from as a Linux program
    /// (and a Debian program in a container, and as a process, whose prefix it
    /// is), made on first use, then reused: for a C baseline, a root holding
    /// only its static binary, as `/NAME`; for a Debian program, the program
    /// with its libraries and configuration ([`crate::apps`]).
    fn root(&self, workload: Workload) -> Result<PathBuf, BenchError> {
        let root = self.work.join(format!("rootfs-{}", workload.name()));
        let program = root.join(self.program_in_root(workload).trim_start_matches('/'));
        if !program.exists() {
            match workload.app() {
                Some(app) => app.make_root(&root)?,
                None => {
                    std::fs::create_dir_all(&root).map_err(BenchError::io(&root))?;
                    std::fs::copy(self.baseline(workload)?, &program)
                        .map_err(BenchError::io(&program))?;
                }
            }
        }
        Ok(root)
    }

    /// The path of `workload`'s program in its root.
    fn program_in_root(&self, workload: Workload) -> String {
        workload.app().map_or_else(
            || format!("/{}", workload.name()),
            |app| app.program.to_owned(),
        )
    }

    /// The arguments of `workload`'s program when its root is seen at `prefix`
    /// (none for the C baselines).
    fn args(workload: Workload, prefix: &Path) -> Vec<OsString> {
        workload.app().map_or_else(Vec::new, |app| app.args(prefix))
    }

    /// How to tell that `workload`'s server has started: its first output
    /// (the C baselines and the unikernels print a line first thing), or, for a
    /// Debian program, a connection to its port accepted from the clients.
    fn ready<'n>(
        workload: Workload,
        net: Option<&Attachment<'n>>,
    ) -> Result<Ready<'n>, BenchError> {
        if workload.app().is_none() {
            return Ok(Ready::FirstOutput);
        }
        match (net, workload.port()) {
            (Some(net), Some(port)) => Ok(Ready::Accepting {
                clients: net.clients,
                address: SocketAddr::from((net.address, port)),
            }),
            _ => Err(BenchError::platform(
                "bench",
                format!(
                    "{} runs only as a server on the test network",
                    workload.name()
                ),
            )),
        }
    }

    /// Spawns `command` (its stderr already going to `log`) and waits until it
    /// is `ready`; returns the child and the µs from spawn to then.
    fn spawn_ready(
        command: Command,
        platform: Platform,
        ready: Ready<'_>,
        log: &Path,
    ) -> Result<(Child, f64), BenchError> {
        match ready {
            Ready::FirstOutput => launch::spawn_to_marker(command, platform.name())
                .map(|(child, to_main_us, _)| (child, to_main_us)),
            Ready::Accepting { clients, address } => {
                launch::spawn_to_accepting(command, platform.name(), log, clients, address)
            }
        }
    }

    fn baseline(&self, workload: Workload) -> Result<&Path, BenchError> {
        self.baselines
            .get(&workload)
            .map(PathBuf::as_path)
            .ok_or_else(|| {
                BenchError::platform("process", format!("no {} baseline", workload.name()))
            })
    }

    /// The platforms a suite of `workload` runs on, and the skips (with reasons) of
    /// the rest; `extra` may exclude more (platform → reason).
    pub(crate) fn plan(
        &self,
        workload: Workload,
        extra: &dyn Fn(Platform) -> Option<String>,
    ) -> (Vec<Platform>, Vec<crate::results::Skip>) {
        let mut run = Vec::new();
        let mut skipped = Vec::new();
        for platform in Platform::ALL {
            if let Some(wanted) = &self.config.platforms {
                if !wanted.contains(&platform) {
                    continue;
                }
            }
            let reason = self
                .unavailable
                .get(&platform)
                .cloned()
                .or_else(|| match platform {
                    Platform::Unikernel(_) => self.guest(workload).err(),
                    Platform::LinuxProgram(_) => workload
                        .linux_program_mem()
                        .err()
                        .map(str::to_owned)
                        .or_else(|| self.personality().err()),
                    _ => None,
                })
                .or_else(|| extra(platform));
            match reason {
                Some(reason) => skipped.push(crate::results::Skip { platform, reason }),
                None => run.push(platform),
            }
        }
        (run, skipped)
    }

    /// The daemon of `on` whose shells fit `workload`, in the test network's
    /// namespace when `net` is given; started on first use. The one of the idle and
    /// hello guests keeps `--pool` shells (density creates many); the others one.
    fn daemon(
        &mut self,
        on: lightvm_vmm::Platform,
        net: Option<&Attachment<'_>>,
        workload: Workload,
    ) -> Result<(DaemonKey, &mut PoolDaemon), BenchError> {
        let key = DaemonKey {
            on,
            pool_mem: workload.guest_mem(),
            networked: net.is_some(),
        };
        let main = key.pool_mem == Workload::Idle.guest_mem() && !key.networked;
        if !self.daemons.contains_key(&key) {
            let name = format!(
                "daemon-{on}-{}{}",
                key.pool_mem,
                if key.networked { "-net" } else { "" }
            );
            let spec = DaemonSpec {
                name: &name,
                platform: on,
                pool: if main { self.config.pool } else { 1 },
                pool_mem: key.pool_mem,
                max_vms: if main {
                    self.config.density_count + self.config.pool + 64
                } else {
                    16
                },
                netns: net.map(|net| net.netns),
            };
            let daemon = PoolDaemon::start(&self.config.lightvm_exe, &self.work, spec)?;
            self.daemons.insert(key, daemon);
        }
        let row = Unikernel::new(on, Start::Pool).name();
        self.daemons
            .get_mut(&key)
            .map(|daemon| (key, daemon))
            .ok_or_else(|| BenchError::platform(row, "no daemon"))
    }

    /// Stops the daemons on the test network: the net suites call this before their
    /// network is deleted.
    pub(crate) fn leave_network(&mut self) {
        self.daemons.retain(|key, _| !key.networked);
    }

    /// `lightvm run --platform P` of a cold row's guest — `workload`'s unikernel,
    /// or for a Linux-program row its baseline from a root of its own on the
    /// Linux personality — on the test network if `net` is given; its stderr
    /// goes to `log`.
    fn lightvm_run(
        &self,
        platform: Platform,
        workload: Workload,
        log: &Path,
        net: Option<&Attachment<'_>>,
    ) -> Result<Command, BenchError> {
        let row = platform.name();
        let failed = |reason: String| BenchError::platform(row, reason);
        let (on, mem, target): (_, _, Vec<std::ffi::OsString>) = match platform {
            Platform::Unikernel(Unikernel {
                on,
                start: Start::Cold,
            }) => {
                let image = self.guest(workload).map_err(failed)?;
                (on, workload.guest_mem(), vec![image.into()])
            }
            Platform::LinuxProgram(on) => {
                let mem = workload
                    .linux_program_mem()
                    .map_err(|reason| failed(reason.to_owned()))?;
                let personality = self.personality().map_err(failed)?;
                let root = self.root(workload)?;
                let mut target = vec![
                    "--personality".into(),
                    personality.into(),
                    "--rootfs".into(),
                    root.into(),
                    self.program_in_root(workload).into(),
                ];
                let args = Self::args(workload, Path::new("/"));
                if !args.is_empty() {
                    target.push("--".into());
                    target.extend(args);
                }
                (on, mem, target)
            }
            other => return Err(failed(format!("{other} is not started by `lightvm run`"))),
        };
        let exe = &self.config.lightvm_exe;
        let mut command = net.map_or_else(|| Command::new(exe), |net| net.netns.command(exe));
        command
            .arg("run")
            .arg("--platform")
            .arg(on.name())
            .arg("--mem")
            .arg(mem);
        if let Some(guest) = net.and_then(|net| net.guest.as_ref()) {
            command
                .arg("--net")
                .arg(format!("tap={}", guest.tap))
                .arg("--cmdline")
                .arg(&guest.cmdline);
        }
        command.args(target).stderr(launch::stderr_to(log));
        Ok(command)
    }

    /// Where a platform's instances write their stderr (the last one's is kept).
    fn log(&self, platform: Platform) -> PathBuf {
        self.work.join(format!("{platform}.log"))
    }

    /// Runs `workload` once on `platform`, to its end.
    pub(crate) fn run_once(
        &mut self,
        platform: Platform,
        workload: Workload,
    ) -> Result<Run, BenchError> {
        let from = |outcome: RunOutcome| Run {
            to_main_us: outcome.to_main_us,
            to_exit_us: Some(outcome.to_exit_us),
            vm_to_main_us: None,
            output: outcome.stdout,
        };
        let log = self.log(platform);
        match platform {
            Platform::Process => {
                let mut command = Command::new(self.baseline(workload)?);
                command.stderr(launch::stderr_to(&log));
                launch::run_to_exit(command, platform.name(), Some(&log))
                    .map(from)
                    .map(|run| Run {
                        vm_to_main_us: Some(run.to_main_us),
                        ..run
                    })
            }
            Platform::Container => {
                let runc = self.runc.as_ref().ok_or_else(|| {
                    BenchError::platform(platform.name(), "runc is not available")
                })?;
                runc.run(workload.name()).map(from)
            }
            Platform::Unikernel(Unikernel {
                start: Start::Cold, ..
            })
            | Platform::LinuxProgram(_) => {
                let report = self.work.join(format!("{platform}.json"));
                let mut command = self.lightvm_run(platform, workload, &log, None)?;
                command.arg("--report").arg(&report);
                let run = launch::run_to_exit(command, platform.name(), Some(&log)).map(from)?;
                let vm_to_main_us = std::fs::read(&report)
                    .ok()
                    .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
                    .and_then(|result| result["timings"]["boot_done_us"].as_f64());
                Ok(Run {
                    vm_to_main_us,
                    ..run
                })
            }
            Platform::Unikernel(Unikernel {
                on,
                start: Start::Pool,
            }) => {
                let image = self
                    .guest(workload)
                    .map_err(|reason| BenchError::platform(platform.name(), reason))?
                    .to_owned();
                let (_, daemon) = self.daemon(on, None, workload)?;
                let vm = daemon.create(&image, workload.guest_mem(), None)?;
                let output = match workload {
                    Workload::Hello => Ok(String::new()),
                    _ => daemon.wait_exit(&vm.id),
                };
                let removed = daemon.remove(&vm);
                if let Err(error) = removed {
                    self.progress.note(&error.to_string());
                }
                Ok(Run {
                    to_main_us: vm.request_us,
                    to_exit_us: None,
                    vm_to_main_us: vm.shell_boot_done_us,
                    output: output?,
                })
            }
            other => Err(BenchError::platform(
                "bench",
                format!("{other} cannot run workloads in this build"),
            )),
        }
    }

    /// Starts `workload` on `platform` and returns once its `main` runs.
    pub(crate) fn start(
        &mut self,
        platform: Platform,
        workload: Workload,
    ) -> Result<Instance, BenchError> {
        self.start_attached(platform, workload, None)
    }

    /// The same, on the test network of the net suites when `net` is given.
    pub(crate) fn start_attached(
        &mut self,
        platform: Platform,
        workload: Workload,
        net: Option<&Attachment<'_>>,
    ) -> Result<Instance, BenchError> {
        let log = self.log(platform);
        let ready = Self::ready(workload, net)?;
        match platform {
            Platform::Process => {
                let baseline = self.baseline(workload)?;
                let mut command =
                    net.map_or_else(|| Command::new(baseline), |net| net.netns.command(baseline));
                if workload.app().is_some() {
                    // The host's own program, reading the configuration of
                    // its root: the root is its prefix.
                    command.args(Self::args(workload, &self.root(workload)?));
                }
                command.stderr(launch::stderr_to(&log));
                let (child, to_main_us) = Self::spawn_ready(command, platform, ready, &log)?;
                Ok(Instance {
                    to_main_us,
                    pids: vec![child.id()],
                    handle: Handle::Child(child),
                })
            }
            Platform::Container => {
                let runc = self.runc.as_ref().ok_or_else(|| {
                    BenchError::platform(platform.name(), "runc is not available")
                })?;
                let bundle = match net {
                    None => runc.bundle(workload.name()),
                    Some(net) => {
                        let bundle =
                            runc.bundle(&format!("{}-{}", workload.name(), net.netns.name()));
                        let root = match workload.app() {
                            None => None,
                            Some(_) => Some(self.root(workload)?),
                        };
                        let content = match &root {
                            None => runc::BundleRoot::Binary(self.baseline(workload)?),
                            Some(root) => runc::BundleRoot::Tree {
                                root,
                                args: std::iter::once(self.program_in_root(workload).into())
                                    .chain(Self::args(workload, Path::new("/")))
                                    .map(|arg| arg.to_string_lossy().into_owned())
                                    .collect(),
                            },
                        };
                        runc::write_bundle(&bundle, &content, Some(&net.netns.path()))?;
                        bundle
                    }
                };
                let (id, pid, to_main_us) = runc.start(&bundle, ready)?;
                Ok(Instance {
                    to_main_us,
                    pids: vec![pid],
                    handle: Handle::Container(id),
                })
            }
            Platform::Unikernel(Unikernel {
                start: Start::Cold, ..
            })
            | Platform::LinuxProgram(_) => {
                let command = self.lightvm_run(platform, workload, &log, net)?;
                let (child, to_main_us) = Self::spawn_ready(command, platform, ready, &log)?;
                Ok(Instance {
                    to_main_us,
                    pids: vec![child.id()],
                    handle: Handle::Child(child),
                })
            }
            Platform::Unikernel(Unikernel {
                on,
                start: Start::Pool,
            }) => {
                let image = self
                    .guest(workload)
                    .map_err(|reason| BenchError::platform(platform.name(), reason))?
                    .to_owned();
                let guest = net.and_then(|net| net.guest.as_ref());
                let (daemon, pool) = self.daemon(on, net, workload)?;
                let vm = pool.create(&image, workload.guest_mem(), guest)?;
                Ok(Instance {
                    to_main_us: vm.request_us,
                    pids: vec![vm.pid],
                    handle: Handle::Pool { vm, daemon },
                })
            }
            other => Err(BenchError::platform(
                "bench",
                format!("{other} cannot run workloads in this build"),
            )),
        }
    }

    /// Stops an instance and frees what it held (untimed).
    pub(crate) fn stop(&mut self, instance: Instance) {
        match instance.handle {
            Handle::Child(child) => launch::kill(child),
            Handle::Container(id) => {
                if let Some(runc) = &self.runc {
                    runc.delete(&id);
                }
            }
            Handle::Pool { vm, daemon } => {
                if let Some(Err(error)) = self.daemons.get_mut(&daemon).map(|d| d.remove(&vm)) {
                    self.progress.note(&error.to_string());
                }
            }
        }
    }
}

/// Sum of RSS and PSS (KiB) over every process of an instance.
pub(crate) fn instance_memory(instance: &Instance) -> Option<(u64, u64)> {
    instance
        .pids
        .iter()
        .map(|pid| launch::rss_pss_kib(*pid))
        .try_fold((0, 0), |(rss, pss), m| {
            let (r, p) = m?;
            Some((rss + r, pss + p))
        })
}
