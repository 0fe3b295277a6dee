//! The daemon's core: VM creation (the execute phase, on the request path), exit
//! watching, removal and adoption after a restart, over the parts that each keep
//! one concern: the shell [`Pool`], the [`Registry`] of VMs with the running
//! count's guards, the request checks ([`request`]), the [`ImageCache`], the
//! [`Consoles`], and for Linux programs the personality and the root filesystem
//! [`Packer`].
//!
//! The request path takes a ready shell from the pool, writes the VM's record, sends
//! one request and waits for the guest's boot-done: no step grows with the number of
//! VMs. Each running VM costs the daemon one pidfd and a small map entry. No file is
//! touched on the runtime's thread: every open, read and write runs on a blocking
//! thread, so a slow disk or a slow image stalls its own request only.
//!
//! A create runs in a task of its own, not in its client's connection: a client
//! that goes away mid-create does not cut it off at an arbitrary point. The task
//! sees the client leave and rolls the create back — the shell killed and reaped,
//! the VM's directory removed, its place in the count given back — by dropping
//! what it holds, so every point it can stop at is covered by the same guards.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use lightvm_vmm::jail::{Cgroup, CgroupReport, JailReport, Limits};
use lightvm_vmm::{NetConfig, VmConfig};
use tokio::io::unix::AsyncFd;
use tokio::sync::oneshot;

use crate::access::Peer;
use crate::api::{
    ApiError, CreateRequest, CreateTimings, Guest, PoolResize, PoolStatus, VmState, VmView,
};
use crate::blocking;
use crate::console::{Console, Consoles};
use crate::images::ImageCache;
use crate::linux::{Packer, Personality};
use crate::metrics::{self, Gauges, Metrics, VmJail};
use crate::pool::{self, Pool, ShellKind, ShellSpec};
use crate::process::{self, ChildShell, NotAShell, Reaped};
use crate::protocol::{self, BootFiles, BootRequest, LinuxBoot, ShellEvent};
use crate::registry::{Registry, Slot, VmEntry};
use crate::request::{self, CheckedRequest, DefaultMem};
use crate::state::{self, ExitRecord, LinuxProgramRecord, Outcome, StateDir, VmRecord};

/// How the daemon is set up.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// Where the API listens.
    pub socket: PathBuf,
    /// The group that owns the socket, if not the daemon's.
    pub socket_group: Option<u32>,
    /// The socket's permission bits: who may connect (write permission).
    pub socket_mode: u32,
    /// Where VM state lives.
    pub state_dir: PathBuf,
    /// Shells to keep ready.
    pub pool_size: usize,
    /// Guest memory of pooled shells (requests of another size are served cold).
    pub pool_mem: u64,
    /// Shells to keep ready for Linux programs.
    pub linux_pool_size: usize,
    /// Their guest memory, and a Linux program's when its create names none.
    pub linux_pool_mem: u64,
    /// The Linux personality image Linux programs run on.
    pub personality: PersonalityImage,
    /// Most VMs running at once.
    pub max_vms: usize,
    /// Most guest memory per VM.
    pub max_mem: u64,
    /// The `lightvm` executable, run as `lightvm shell` for each VM.
    pub shell_exe: PathBuf,
    /// Where the VMs run.
    pub platform: lightvm_vmm::Platform,
    /// Whether the daemon's threads run under its seccomp filter
    /// ([`crate::seccomp`]).
    pub seccomp: bool,
    /// Whether the VMs' shells run in their jail (`--no-jail`: not).
    pub jail: bool,
}

/// Where the daemon's Linux personality image comes from.
#[derive(Debug, Clone)]
pub enum PersonalityImage {
    /// Named by the operator (`--personality`): a daemon that cannot open it
    /// does not start.
    Given(PathBuf),
    /// Built at start (from `crates/personality`); if that failed, why: the
    /// daemon then serves unikernels only, and says why to a Linux program's
    /// create (503).
    Built(Result<PathBuf, String>),
}

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The state directory is unusable.
    #[error("state directory {path}: {source}")]
    State {
        /// The directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Another daemon holds the state directory.
    #[error("another lightvm daemon is using {0}")]
    Locked(PathBuf),
    /// The socket could not be bound.
    #[error("cannot listen on {path}: {source}")]
    Socket {
        /// The socket path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A setting is out of range.
    #[error("{0}")]
    Config(String),
    /// The seccomp filter could not be installed.
    #[error(transparent)]
    Seccomp(#[from] crate::seccomp::SeccompError),
}

/// The daemon: shared by every request handler.
pub struct Daemon {
    config: DaemonConfig,
    state: StateDir,
    pool: Arc<Pool>,
    registry: Registry,
    images: Arc<ImageCache>,
    /// The personality Linux programs run on, or why there is none.
    personality: Result<Personality, String>,
    packer: Packer,
    consoles: Consoles,
    metrics: Metrics,
    id_seed: u64,
    id_counter: AtomicU64,
    _lock: std::fs::File,
}

/// A VM being made. Dropped before it is entered in the registry — the create
/// failed or its client went away — it gives back all it holds: the shell is
/// killed and reaped, the count given back, the directory removed.
struct NewVm {
    record: VmRecord,
    shell: ChildShell,
    _slot: Slot,
    dir: VmDir,
    timings: Option<CreateTimings>,
}

/// A new VM's directory, removed (on a blocking thread) when dropped unless kept.
struct VmDir {
    path: Option<PathBuf>,
}

impl VmDir {
    fn keep(mut self) -> PathBuf {
        self.path.take().unwrap_or_default()
    }
}

impl Drop for VmDir {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            let remove = move || {
                let _ = std::fs::remove_dir_all(path);
            };
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => drop(runtime.spawn_blocking(remove)),
                Err(_) => remove(),
            }
        }
    }
}

/// The files of the guest a create boots, opened for its shell.
struct GuestFiles {
    /// The unikernel's image, or the personality's.
    image: std::fs::File,
    /// Its path, for the record and messages.
    image_path: PathBuf,
    /// A Linux program's root filesystem archive.
    module: Option<std::fs::File>,
    /// The Linux program, as its record keeps it.
    linux: Option<LinuxProgramRecord>,
}

/// How a create failed.
enum Failure {
    /// Before a VM existed: nothing to record.
    Refused(ApiError),
    /// The VM was made but its guest did not start: it is entered as failed
    /// (boxed: a VM being made is large beside an error).
    Boot(Box<NewVm>, ApiError),
}

impl From<ApiError> for Failure {
    fn from(error: ApiError) -> Self {
        Self::Refused(error)
    }
}

impl Daemon {
    /// Opens the state directory (taking its lock). Call [`Daemon::adopt`] next.
    pub fn open(config: DaemonConfig) -> Result<Arc<Self>, DaemonError> {
        raise_fd_limit();
        VmConfig::check_mem_size(config.pool_mem)
            .map_err(|e| DaemonError::Config(e.to_string()))?;
        let state_error = |source| DaemonError::State {
            path: config.state_dir.clone(),
            source,
        };
        let state = StateDir::open(&config.state_dir).map_err(state_error)?;
        let lock = state.lock().map_err(|e| match e.raw_os_error() {
            Some(libc::EWOULDBLOCK) => DaemonError::Locked(config.state_dir.clone()),
            _ => state_error(e),
        })?;
        VmConfig::check_mem_size(config.linux_pool_mem)
            .map_err(|e| DaemonError::Config(format!("--linux-pool-mem: {e}")))?;
        let personality = match &config.personality {
            PersonalityImage::Given(path) => Ok(Personality::open(path)
                .map_err(|e| DaemonError::Config(format!("--personality: {e}")))?),
            PersonalityImage::Built(built) => built.clone().and_then(|path| {
                Personality::open(&path).map_err(|e| format!("the personality built at start: {e}"))
            }),
        };
        // A daemon without a personality keeps no shells for Linux programs, nor
        // one whose Linux shells are larger than a VM may be.
        let linux_pool_size = if personality.is_err() {
            0
        } else if config.linux_pool_mem > config.max_mem {
            eprintln!(
                "lightvm daemon: keeping no shells for Linux programs: --linux-pool-mem ({} MiB) is above --max-mem ({} MiB)",
                config.linux_pool_mem >> 20,
                config.max_mem >> 20
            );
            0
        } else {
            config.linux_pool_size
        };
        let packer = Packer::new(state.root().join("archives"));
        let spec = ShellSpec {
            exe: config.shell_exe.clone(),
            platform: config.platform,
            log: state.root().join("shells.log"),
            jail: config.jail,
        };
        let pool = Pool::new(
            spec,
            (config.pool_mem, config.pool_size),
            (config.linux_pool_mem, linux_pool_size),
        )
        .map_err(|e| DaemonError::Config(format!("starting the shell spawner thread: {e}")))?;
        Ok(Arc::new(Self {
            pool: Arc::new(pool),
            registry: Registry::new(config.max_vms),
            config,
            state,
            images: Arc::new(ImageCache::default()),
            personality,
            packer,
            consoles: Consoles::default(),
            metrics: Metrics::default(),
            id_seed: random_seed(),
            id_counter: AtomicU64::new(0),
            _lock: lock,
        }))
    }

    /// Adopts the VMs found in the state directory; call inside the runtime,
    /// before serving. What is found there is checked, not trusted: a directory or
    /// record that is not one this daemon writes is left alone and named on
    /// stderr, one line each; a recorded process is adopted only if it is provably
    /// the VM's shell ([`process::check_shell`]), and a VM whose process is not is
    /// recorded as lost, its process never signalled. Returns how many running
    /// VMs were adopted.
    pub fn adopt(self: &Arc<Self>) -> Result<usize, DaemonError> {
        let scan = self.state.scan().map_err(|source| DaemonError::State {
            path: self.config.state_dir.clone(),
            source,
        })?;
        for refused in &scan.refused {
            eprintln!("lightvm daemon: not adopting vms/{refused}");
        }
        if scan.staging_removed > 0 {
            eprintln!(
                "lightvm daemon: removed {} unfinished VM directories of creates cut short",
                scan.staging_removed
            );
        }
        let mut adopted = 0;
        for (record, exit) in scan.found {
            let vm_dir = self.state.vm_dir(&record.id);
            if let Some(exit) = exit {
                self.registry.insert(VmEntry::ended(record, exit, None));
                continue;
            }
            let kind = ShellKind {
                mem_size: record.mem_size,
                linux: record.linux.is_some(),
            };
            let shell = process::check_shell(
                record.pid,
                record.pid_start_time,
                &self.config.shell_exe,
                kind,
            );
            let watched = shell.and_then(|pidfd| {
                process::watchable(pidfd).map_err(|e| NotAShell::Other(e.to_string()))
            });
            match watched {
                Ok(pidfd) => {
                    let pidfd = Arc::new(pidfd);
                    let id = record.id.clone();
                    let slot = self.registry.reserve_adopted();
                    self.registry
                        .insert(VmEntry::running(record, pidfd.clone(), slot, None));
                    self.watch(id, pidfd);
                    adopted += 1;
                }
                Err(why) => {
                    if let NotAShell::Other(why) = &why {
                        eprintln!(
                            "lightvm daemon: VM {}: not adopting its process: {why}; the VM is recorded as lost",
                            record.id
                        );
                    }
                    let exit = lost(&vm_dir);
                    self.registry.insert(VmEntry::ended(record, exit, None));
                }
            }
        }
        Ok(adopted)
    }

    /// The configuration.
    pub fn config(&self) -> &DaemonConfig {
        &self.config
    }

    /// Why this daemon runs no Linux programs, if it runs none.
    pub fn linux_unavailable(&self) -> Option<&str> {
        self.personality.as_ref().err().map(String::as_str)
    }

    /// Stops the pool's shells and removes their groups: the daemon is stopping
    /// (its VMs run on).
    pub async fn shut_down_pool(&self) {
        self.pool.shut_down().await;
    }

    /// Keeps the pool at its target, forever; spawn once.
    pub async fn refill_pool(self: Arc<Self>) {
        self.pool.clone().refill().await;
    }

    /// Creates a VM for `peer` and answers once its guest has reached `main`. If
    /// this future is dropped (the client went away) before it answers, the
    /// create is rolled back.
    pub async fn create(
        self: &Arc<Self>,
        request: CreateRequest,
        peer: Peer,
    ) -> Result<VmView, ApiError> {
        let (answer, answered) = oneshot::channel();
        let daemon = self.clone();
        tokio::spawn(async move { daemon.create_detached(request, peer, answer).await });
        answered
            .await
            .map_err(|_| ApiError::internal("the create stopped unexpectedly"))?
    }

    /// A create, in its own task; it answers on `answer`, and rolls back when no
    /// one waits for that answer any more.
    async fn create_detached(
        self: Arc<Self>,
        request: CreateRequest,
        peer: Peer,
        mut answer: oneshot::Sender<Result<VmView, ApiError>>,
    ) {
        let started = Instant::now();
        // Dropping `make` when the client leaves drops whatever it holds then.
        let made = tokio::select! {
            made = self.make(request, &peer, started) => made,
            () = answer.closed() => return,
        };
        if answer.is_closed() {
            return;
        }
        let result = match made {
            Ok(vm) => Ok(self.enter(vm)),
            Err(Failure::Refused(error)) => Err(error),
            Err(Failure::Boot(vm, error)) => {
                let exit = self.enter_failed(*vm, &error).await;
                Err(ended_before_main(error, &exit))
            }
        };
        // The client left between the check above and now: the VM was entered,
        // so it is removed like any other.
        if let Err(Ok(view)) = answer.send(result) {
            let _ = self.remove(&view.id, &Peer::root()).await;
        }
    }

    /// Makes a VM up to its guest's boot-done.
    async fn make(
        &self,
        request: CreateRequest,
        peer: &Peer,
        started: Instant,
    ) -> Result<NewVm, Failure> {
        let default_mem = DefaultMem {
            unikernel: self.config.pool_mem,
            linux: self.config.linux_pool_mem,
        };
        let CheckedRequest {
            kind,
            net,
            boot_cmdline,
            limits,
        } = request::check_request(&request, default_mem, self.config.max_mem)?;
        let slot = self.registry.reserve().ok_or_else(|| {
            ApiError::limit(format!(
                "{} VMs are running, this daemon's limit",
                self.registry.max()
            ))
        })?;
        // What the guest boots: an image the client may read, or the personality
        // with a root filesystem packed with the client's rights.
        let guest = match &request.guest {
            Guest::Image(path) => GuestFiles {
                image: self.images.open(path, peer, kind.mem_size).await?,
                image_path: path.clone(),
                module: None,
                linux: None,
            },
            Guest::Linux(program) => {
                let personality = self.personality.as_ref().map_err(|why| {
                    ApiError::unavailable(format!(
                        "this daemon runs no Linux programs: {why}; start it with --personality IMAGE"
                    ))
                })?;
                personality.check_fits(kind.mem_size)?;
                let limit = personality.archive_limit(kind.mem_size);
                let packed = self
                    .packer
                    .pack(program, peer, limit, kind.mem_size)
                    .await?;
                GuestFiles {
                    image: personality.file()?,
                    image_path: personality.path().to_owned(),
                    module: Some(packed.file),
                    linux: Some(LinuxProgramRecord {
                        rootfs: program.rootfs.clone(),
                        program: program.program.clone(),
                        args: program.args.clone(),
                        cwd: program.cwd.clone(),
                        trace_syscalls: program.trace_syscalls,
                        archive_bytes: packed.bytes,
                    }),
                }
            }
        };
        // The tap before a shell: a missing one fails this create alone.
        let tap = match &net {
            Some(net) => {
                let (name, peer) = (net.config.tap.clone(), peer.clone());
                Some(blocking(move || request::open_tap(&name, &peer)).await??)
            }
            None => None,
        };
        let (shell, pooled) = match self.pool.take(kind) {
            Some(shell) => (shell, true),
            None => (
                self.pool
                    .prepare(kind)
                    .await
                    .map_err(|e| ApiError::internal(format!("cannot start a VM shell: {e}")))?,
                false,
            ),
        };
        let pool::ReadyShell {
            process: shell,
            mut control,
            jail,
        } = shell;
        // The shell's group has its kind's default limits; a request that asks
        // for others has them set now (a dropped shell's group goes with it:
        // the next shell's jail sweeps the groups of ended processes).
        let jail = self.set_limits(jail, limits).await?;

        let id = self.new_id();
        let net = net.map(|net| net.for_vm(&id));
        let pid = shell.pid;
        let record = VmRecord {
            id: id.clone(),
            image: guest.image_path.clone(),
            linux: guest.linux.clone(),
            mem_size: kind.mem_size,
            cmdline: request.cmdline.clone(),
            net: net.as_ref().map(NetConfig::to_string),
            pid,
            pid_start_time: 0,
            created_unix_ms: state::now_unix_ms(),
            owner_uid: peer.uid,
            jail,
        };
        // The directory is owned by a VmDir from the moment it exists: if this
        // future is dropped while the blocking thread makes it, the result, dropped
        // in turn, removes it.
        let (record, files, dir) = {
            let state = self.state.clone();
            blocking(move || {
                let record = VmRecord {
                    pid_start_time: process::start_time(pid).unwrap_or_default(),
                    ..record
                };
                let files = state.create_vm(&record)?;
                let dir = VmDir {
                    path: Some(state.vm_dir(&record.id)),
                };
                Ok::<_, std::io::Error>((record, files, dir))
            })
            .await?
            .map_err(|e| self.state_error(&e))?
        };
        let mut vm = NewVm {
            record,
            shell,
            _slot: slot,
            dir,
            timings: None,
        };
        let linux = guest.linux.as_ref().map(|program| LinuxBoot {
            rootfs: program.rootfs.clone(),
        });
        let files = BootFiles {
            image: guest.image,
            console: files.console,
            result: files.result,
            module: guest.module,
            tap: tap.map(lightvm_vmm::devices::tap::Tap::into_file),
        };
        let boot = BootRequest {
            image: guest.image_path,
            cmdline: boot_cmdline,
            net,
            timeout_ms: request.timeout_ms,
            linux,
        };
        let event = async {
            protocol::send_boot(control.get_ref(), &boot, &files)
                .await
                .map_err(|e| format!("sending the boot request: {e}"))?;
            // The shell holds them now; a Linux program's archive, which has no
            // name, lives as long as its mapping in the shell.
            drop(files);
            pool::read_event(&mut control).await
        }
        .await;
        match event {
            Ok(ShellEvent::Booted { boot_done_us, .. }) => {
                let timings = CreateTimings {
                    api_to_boot_done_us: started.elapsed().as_secs_f64() * 1e6,
                    shell_boot_done_us: boot_done_us,
                    pooled,
                };
                self.metrics
                    .observe_creation(timings.api_to_boot_done_us / 1e6, pooled);
                vm.timings = Some(timings);
                Ok(vm)
            }
            Ok(ShellEvent::Failed { error }) => {
                Err(Failure::Boot(Box::new(vm), ApiError::unprocessable(error)))
            }
            Ok(other) => Err(Failure::Boot(
                Box::new(vm),
                ApiError::internal(format!("unexpected message from the shell: {other:?}")),
            )),
            Err(error) => Err(Failure::Boot(
                Box::new(vm),
                ApiError::internal(format!("the VM's shell failed: {error}")),
            )),
        }
    }

    /// Sets the limits a create asked for in its shell's cgroup and returns
    /// the jail report with them. A limit the host has no group for is skipped,
    /// and the report says so; one the kernel refuses (a memory limit below what
    /// the shell already uses) fails the create.
    async fn set_limits(
        &self,
        jail: Option<JailReport>,
        limits: Limits,
    ) -> Result<Option<JailReport>, ApiError> {
        let Some(mut jail) = jail else {
            if limits == Limits::default() {
                return Ok(None);
            }
            return Err(ApiError::unprocessable(
                "this daemon runs its VMs without their jail (--no-jail): it sets no limits",
            ));
        };
        if limits == Limits::default() {
            return Ok(Some(jail));
        }
        let Some(mut group) = Cgroup::reopen(&jail.cgroup) else {
            jail.skipped
                .push("the limits asked for: the VM has no cgroup to set them in".to_owned());
            return Ok(Some(jail));
        };
        // Writes to files the daemon's filter allows (openat, write): on a
        // blocking thread of its own, not queued behind a shell's start on the
        // spawner thread.
        let set = blocking(move || group.set_limits(&limits).map(|()| group.report())).await?;
        match set {
            Ok(report) => {
                if let (
                    CgroupReport::Applied {
                        memory_max,
                        cpu_max,
                        pids_max,
                        ..
                    },
                    CgroupReport::Applied {
                        memory_max: set_memory,
                        cpu_max: set_cpu,
                        pids_max: set_pids,
                        ..
                    },
                ) = (&mut jail.cgroup, report)
                {
                    let unset = [
                        (
                            "memory_limit",
                            limits.memory_max.is_some() && set_memory.is_none(),
                        ),
                        ("cpu_limit", limits.cpu_max.is_some() && set_cpu.is_none()),
                        (
                            "pids_limit",
                            limits.pids_max.is_some() && set_pids.is_none(),
                        ),
                    ];
                    for (field, _) in unset.iter().filter(|(_, unset)| *unset) {
                        jail.skipped.push(format!(
                            "{field}: no hierarchy here has the VM's group with that controller"
                        ));
                    }
                    (*memory_max, *cpu_max, *pids_max) = (set_memory, set_cpu, set_pids);
                }
                Ok(Some(jail))
            }
            Err(error) => Err(ApiError::unprocessable(format!(
                "the VM's limits cannot be set: {error}"
            ))),
        }
    }

    /// After a VM's process has ended: whether its cgroup's OOM killer ended it
    /// (and the limit), then the group removed.
    async fn release_cgroup(&self, jail: Option<&JailReport>) -> Option<Option<u64>> {
        let group = Cgroup::reopen(&jail?.cgroup)?;
        self.pool
            .outside_filter(move || {
                let oom = group.oom_killed().then(|| group.memory_max());
                group.remove();
                oom
            })
            .await
            .ok()
            .flatten()
    }

    /// Enters a booted VM in the registry (its slot moves into the entry) and
    /// watches its process; the control socket is dropped, so a running VM costs
    /// one descriptor.
    fn enter(self: &Arc<Self>, vm: NewVm) -> VmView {
        let NewVm {
            record,
            shell,
            _slot: slot,
            dir,
            timings,
        } = vm;
        dir.keep();
        let id = record.id.clone();
        match shell.into_watchable() {
            Ok(pidfd) => {
                let pidfd = Arc::new(pidfd);
                let entry = VmEntry::running(record, pidfd.clone(), slot, timings);
                let view = entry.view();
                self.registry.insert(entry);
                self.watch(id, pidfd);
                view
            }
            Err(error) => {
                // A process the daemon cannot watch is one it cannot account
                // for: it was stopped, and the VM is entered as failed.
                let exit = ExitRecord::new(
                    Outcome::Failed,
                    format!("the daemon cannot watch the VM's process: {error}"),
                );
                let entry = VmEntry::ended(record, exit, timings);
                let view = entry.view();
                self.registry.insert(entry);
                view
            }
        }
    }

    /// Enters a VM whose guest did not start as ended, with why; its shell is
    /// stopped and reaped. Returns how it ended: what the shell recorded, if it
    /// recorded anything, else `error`.
    async fn enter_failed(&self, vm: NewVm, error: &ApiError) -> ExitRecord {
        let NewVm {
            record, shell, dir, ..
        } = vm;
        let dir = dir.keep();
        drop(shell);
        // The shell is killed and reaped on a blocking thread: its group empties
        // a moment later (Cgroup::remove waits a little for that).
        self.release_cgroup(record.jail.as_ref()).await;
        let guess = ExitRecord::new(Outcome::Failed, &error.message);
        let exit = blocking(move || state::record_exit_once(&dir, &guess).unwrap_or(guess))
            .await
            .unwrap_or_else(|_| ExitRecord::new(Outcome::Failed, &error.message));
        self.registry
            .insert(VmEntry::ended(record, exit.clone(), None));
        exit
    }

    /// Waits for a VM's process to end, reaps it and records how it ended.
    fn watch(self: &Arc<Self>, id: String, pidfd: Arc<AsyncFd<OwnedFd>>) {
        let daemon = self.clone();
        tokio::spawn(async move {
            // Readable once the process has exited; an error also means it is gone.
            let _ = pidfd.readable().await;
            let reaped = {
                let pidfd = pidfd.clone();
                blocking(move || process::reap(pidfd.get_ref()))
                    .await
                    .unwrap_or(Reaped::NotOurs)
            };
            let (stop_requested, jail) = daemon
                .registry
                .with(&id, |entry| {
                    (entry.stop_requested, entry.record.jail.clone())
                })
                .unwrap_or((false, None));
            let out_of_memory = daemon.release_cgroup(jail.as_ref()).await;
            let guess = match reaped {
                _ if stop_requested => ExitRecord::new(Outcome::Stopped, "stopped through the API"),
                Reaped::Signal(libc::SIGKILL) if out_of_memory.is_some() => ExitRecord::new(
                    Outcome::OutOfMemory,
                    match out_of_memory.flatten() {
                        Some(limit) => format!(
                            "the VM used more memory than its cgroup allows ({limit} bytes) and was killed; ask for a larger memory_limit"
                        ),
                        None => "the VM's cgroup ran out of memory and killed it".to_owned(),
                    },
                ),
                Reaped::Signal(signal) => ExitRecord::new(
                    Outcome::Killed,
                    format!("the VM's process was killed by signal {signal}"),
                ),
                Reaped::Code(code) => ExitRecord::new(
                    Outcome::Failed,
                    format!("the VM's process exited with {code} and left no result"),
                ),
                Reaped::NotOurs => {
                    ExitRecord::new(Outcome::Killed, "the VM's process ended and left no result")
                }
            };
            let vm_dir = daemon.state.vm_dir(&id);
            let fallback = guess.clone();
            let exit = blocking(move || state::record_exit_once(&vm_dir, &guess).unwrap_or(guess))
                .await
                .unwrap_or(fallback);
            daemon.registry.finish(&id, exit);
        });
    }

    /// Every VM.
    pub fn list(&self) -> Vec<VmView> {
        self.registry.list()
    }

    /// One VM.
    pub fn inspect(&self, id: &str) -> Result<VmView, ApiError> {
        self.registry
            .with(id, VmEntry::view)
            .ok_or_else(|| no_such_vm(id))
    }

    /// Kills a VM's process; its exit is recorded as "stopped".
    pub fn stop(&self, id: &str, peer: &Peer) -> Result<VmView, ApiError> {
        self.registry
            .with_mut(id, |entry| {
                authorise(entry, peer)?;
                if let Some(pidfd) = &entry.pidfd {
                    entry.stop_requested = true;
                    match process::pidfd_signal(pidfd.get_ref(), libc::SIGKILL) {
                        // It has just ended by itself; its watcher records how.
                        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {
                            entry.stop_requested = false;
                        }
                        Err(e) => return Err(ApiError::internal(format!("stopping {id}: {e}"))),
                        Ok(()) => {}
                    }
                }
                Ok(entry.view())
            })
            .ok_or_else(|| no_such_vm(id))?
    }

    /// Stops a VM if it runs, waits for its end to be recorded, and forgets it.
    pub async fn remove(&self, id: &str, peer: &Peer) -> Result<(), ApiError> {
        self.stop(id, peer)?;
        tokio::time::timeout(pool::SHELL_DEADLINE, self.registry.wait_ended(id))
            .await
            .map_err(|_| ApiError::internal(format!("{id} did not stop")))?;
        if !self.registry.forget_ended(id) {
            // Removed by another request meanwhile.
            return Err(no_such_vm(id));
        }
        let vm_dir = self.state.vm_dir(id);
        match blocking(move || std::fs::remove_dir_all(vm_dir)).await? {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(ApiError::internal(format!("removing {id}'s state: {e}")))
            }
            _ => Ok(()),
        }
    }

    /// A VM's console log, opened for one reader from its last `tail` lines.
    pub async fn console(
        &self,
        id: &str,
        peer: &Peer,
        tail: Option<usize>,
    ) -> Result<Console, ApiError> {
        self.registry
            .with(id, |entry| authorise(entry, peer))
            .ok_or_else(|| no_such_vm(id))??;
        let path = self.state.vm_dir(id).join(state::CONSOLE_LOG);
        self.consoles.open(path, tail).await
    }

    /// Whether a VM has ended (or is unknown).
    pub fn has_ended(&self, id: &str) -> bool {
        self.registry.with(id, |e| e.exit.is_some()).unwrap_or(true)
    }

    /// The pool's state.
    pub fn pool_status(&self) -> PoolStatus {
        self.pool
            .status(self.linux_unavailable().map(str::to_owned))
    }

    /// Changes the pools' targets; surplus ready shells are stopped and reaped.
    /// The pool is the daemon's own configuration, and each shell costs host
    /// memory whoever uses it: only root may change it.
    pub fn resize_pool(&self, resize: &PoolResize, peer: &Peer) -> Result<PoolStatus, ApiError> {
        if !peer.is_root() {
            return Err(ApiError::forbidden(format!(
                "only root may resize the pool (this client is uid {})",
                peer.uid
            )));
        }
        if resize.size.is_none() && resize.linux_size.is_none() {
            return Err(ApiError::bad_request(
                "give the pool's new size (\"size\"), the Linux-program pool's (\"linux_size\"), or both",
            ));
        }
        let current = self.pool_status();
        let size = resize.size.unwrap_or(current.target);
        let linux_size = resize.linux_size.unwrap_or(current.linux.target);
        if size.saturating_add(linux_size) > self.config.max_vms {
            return Err(ApiError::bad_request(format!(
                "pools of {size} and {linux_size} are larger than the VM limit ({})",
                self.config.max_vms
            )));
        }
        if let Some(size) = resize.size {
            self.pool.resize(false, size);
        }
        if let Some(size) = resize.linux_size {
            self.pool.resize(true, size);
        }
        Ok(self.pool_status())
    }

    /// Prometheus text.
    pub fn metrics(&self) -> String {
        let (running, exited) = self.registry.counts();
        let pool = self.pool_status();
        let mut out = self.metrics.render(Gauges {
            running,
            exited,
            pool_ready: pool.ready,
            pool_target: pool.target,
            linux_pool_ready: pool.linux.ready,
            linux_pool_target: pool.linux.target,
        });
        let jails: Vec<VmJail> = self
            .list()
            .into_iter()
            .filter(|vm| vm.state == VmState::Running)
            .map(|vm| vm_jail(vm.id, vm.jail.as_ref()))
            .collect();
        metrics::render_jails(&mut out, &jails);
        out
    }

    /// A create's failure to write state: a full disk is said as such (507), and
    /// nothing of the VM is left.
    fn state_error(&self, error: &std::io::Error) -> ApiError {
        match error.raw_os_error() {
            Some(libc::ENOSPC | libc::EDQUOT) => ApiError::insufficient_storage(format!(
                "the state directory {} is full ({error}); the VM was not created",
                self.config.state_dir.display()
            )),
            _ => ApiError::internal(format!("writing the VM's state: {error}")),
        }
    }

    fn new_id(&self) -> String {
        let n = self.id_counter.fetch_add(1, Ordering::Relaxed);
        format!("{:016x}", splitmix64(self.id_seed.wrapping_add(n)))
    }
}

/// Whether `peer` may act on (stop, remove, read the console of) a VM: root may,
/// and so may the client that created it.
/// The gauges of one VM's jail.
fn vm_jail(id: String, jail: Option<&JailReport>) -> VmJail {
    let Some(jail) = jail else {
        return VmJail {
            id,
            ..VmJail::default()
        };
    };
    let (memory_max, cpu_max, pids_max) = match &jail.cgroup {
        CgroupReport::Applied {
            memory_max,
            cpu_max,
            pids_max,
            ..
        } => (
            *memory_max,
            cpu_max.as_deref().and_then(|text| {
                let (quota, period) = text.split_once(' ')?;
                let (quota, period) = (quota.parse::<f64>().ok()?, period.parse::<f64>().ok()?);
                (period > 0.0).then(|| quota / period)
            }),
            *pids_max,
        ),
        CgroupReport::Skipped { .. } => (None, None, None),
    };
    VmJail {
        id,
        jailed: true,
        uid: Some(jail.uid),
        skipped: jail.skipped.len(),
        memory_max,
        cpu_max,
        pids_max,
    }
}

fn authorise(entry: &VmEntry, peer: &Peer) -> Result<(), ApiError> {
    if peer.is_root() || peer.uid == entry.record.owner_uid {
        return Ok(());
    }
    Err(ApiError::forbidden(format!(
        "VM {} belongs to uid {}",
        entry.record.id, entry.record.owner_uid
    )))
}

fn lost(vm_dir: &Path) -> ExitRecord {
    let guess = ExitRecord::new(
        Outcome::Lost,
        "the VM's process was gone when the daemon restarted",
    );
    state::record_exit_once(vm_dir, &guess).unwrap_or(guess)
}

fn no_such_vm(id: &str) -> ApiError {
    ApiError::not_found(format!("no VM with id {id:?}"))
}

/// Each running VM holds one descriptor (its pidfd): lift the soft limit to the hard
/// one, so the VM limit and not a default of 1024 decides how many VMs can run.
fn raise_fd_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write one plain struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

fn random_seed() -> u64 {
    let mut bytes = [0u8; 8];
    if let Ok(mut urandom) = std::fs::File::open("/dev/urandom") {
        let _ = std::io::Read::read_exact(&mut urandom, &mut bytes);
    }
    u64::from_le_bytes(bytes) ^ u64::from(std::process::id())
}

/// A 64-bit mixer: distinct inputs give distinct, well-spread ids.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The answer to a create whose shell ended before the guest's boot-done. The
/// shell closing its socket reads as a failed shell (a 500), but when the shell
/// recorded how the guest ended — it exited, crashed, broke the ABI — the guest
/// itself ended before its main: a guest that cannot be booted (422), named by
/// that record, as the VM's listing names it.
fn ended_before_main(error: ApiError, exit: &ExitRecord) -> ApiError {
    let shell_recorded = exit.outcome != Outcome::Failed || exit.detail != error.message;
    if error.status == axum::http::StatusCode::INTERNAL_SERVER_ERROR && shell_recorded {
        ApiError::unprocessable(format!(
            "the guest ended before reaching its main: {}",
            exit.detail
        ))
    } else {
        error
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_distinct_fixed_width_and_of_the_checked_form() {
        let ids: std::collections::HashSet<String> = (0..10_000)
            .map(|n| format!("{:016x}", splitmix64(n)))
            .collect();
        assert_eq!(ids.len(), 10_000);
        assert!(ids.iter().all(|id| state::is_vm_id(id)));
    }

    #[test]
    fn a_guest_that_ended_before_its_main_is_a_422_naming_how() {
        let shell_gone = || ApiError::internal("the VM's shell failed: the shell process ended");
        let exited = ExitRecord::new(Outcome::Exited, "guest exited with status 123: no XSAVE");
        let answer = ended_before_main(shell_gone(), &exited);
        assert_eq!(answer.status, axum::http::StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            answer.message,
            "the guest ended before reaching its main: guest exited with status 123: no XSAVE"
        );
        // Nothing recorded by the shell (the daemon's own guess): still the 500.
        let guess = ExitRecord::new(Outcome::Failed, &shell_gone().message);
        assert_eq!(ended_before_main(shell_gone(), &guess).status, 500);
        // A refusal already named by the shell keeps its status.
        let refused = ApiError::unprocessable("the image does not fit");
        assert_eq!(ended_before_main(refused, &exited).status, 422);
    }
}
