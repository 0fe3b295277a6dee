//! The daemon's core: the shell pool (prepare phase, in the background), VM creation
//! (execute phase, on the request path), exit watching and adoption after a restart.
//!
//! The request path takes a ready shell from the pool, writes the VM's record, sends
//! one request and waits for the guest's boot-done: no step grows with the number of
//! VMs. Each running VM costs the daemon one pidfd and a small map entry.

use std::collections::{HashMap, VecDeque};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use lightvm_vmm::devices::tap::Tap;
use lightvm_vmm::{parse_mem_size, NetConfig, UnikernelImage, VmConfig};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::UnixStream;
use tokio::sync::Notify;

use crate::api::{ApiError, CreateRequest, CreateTimings, PoolFailure, PoolStatus, VmView};
use crate::metrics::{Gauges, Metrics};
use crate::process::{self, Reaped, SpawnedShell};
use crate::protocol::{self, BootFiles, BootRequest, ShellEvent};
use crate::state::{self, ExitRecord, Outcome, StateDir, VmRecord};

/// How long a shell may take to prepare, or a guest to reach boot-done, before the
/// daemon gives up on it.
const SHELL_DEADLINE: Duration = Duration::from_secs(30);
/// Shells prepared at once: process creation and KVM setup are CPU-bound.
const PREPARE_PARALLELISM: usize = 2;

/// How the daemon is set up.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// Where the API listens.
    pub socket: PathBuf,
    /// Where VM state lives.
    pub state_dir: PathBuf,
    /// Shells to keep ready.
    pub pool_size: usize,
    /// Guest memory of pooled shells (requests of another size are served cold).
    pub pool_mem: u64,
    /// Most VMs running at once.
    pub max_vms: usize,
    /// Most guest memory per VM.
    pub max_mem: u64,
    /// The `lightvm` executable, run as `lightvm shell` for each VM.
    pub shell_exe: PathBuf,
    /// Where the VMs run.
    pub platform: lightvm_vmm::Platform,
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
}

/// A prepared, warmed shell waiting for a request.
struct ReadyShell {
    pid: u32,
    pidfd: OwnedFd,
    control: BufReader<UnixStream>,
}

#[derive(Default)]
struct Pool {
    ready: VecDeque<ReadyShell>,
    target: usize,
    preparing: usize,
    /// Shell preparations that failed in a row, and when to try again: a host that
    /// cannot prepare shells (no platform, no memory) is not asked to in a loop.
    failures: u32,
    retry_at: Option<Instant>,
    last_error: Option<String>,
}

/// The first wait after a failed preparation; it doubles with each failure in a
/// row, up to [`BACKOFF_MAX`].
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
/// The longest wait between failing preparations.
const BACKOFF_MAX: Duration = Duration::from_secs(30);

struct VmEntry {
    record: VmRecord,
    exit: Option<ExitRecord>,
    timings: Option<CreateTimings>,
    /// Present while the process runs: to stop it.
    pidfd: Option<Arc<AsyncFd<OwnedFd>>>,
    stop_requested: bool,
}

/// The daemon: shared by every request handler.
pub struct Daemon {
    config: DaemonConfig,
    state: StateDir,
    pool: Mutex<Pool>,
    pool_changed: Notify,
    vms: RwLock<HashMap<String, VmEntry>>,
    running: AtomicUsize,
    metrics: Metrics,
    id_seed: u64,
    id_counter: AtomicU64,
    images: Mutex<HashMap<PathBuf, ImageCheck>>,
    _lock: std::fs::File,
}

/// A validated image, remembered while its file is unchanged, so repeated requests
/// for one image do not re-read and re-parse it on the request path.
#[derive(Clone, PartialEq, Eq)]
struct ImageCheck {
    len: u64,
    modified: Option<std::time::SystemTime>,
    inode: u64,
    end: u64,
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
        let daemon = Arc::new(Self {
            pool: Mutex::new(Pool {
                target: config.pool_size,
                ..Pool::default()
            }),
            config,
            state,
            pool_changed: Notify::new(),
            vms: RwLock::new(HashMap::new()),
            running: AtomicUsize::new(0),
            metrics: Metrics::default(),
            id_seed: random_seed(),
            id_counter: AtomicU64::new(0),
            images: Mutex::new(HashMap::new()),
            _lock: lock,
        });
        Ok(daemon)
    }

    /// Adopts the VMs found in the state directory; call inside the runtime.
    pub fn adopt(self: &Arc<Self>) -> Result<usize, DaemonError> {
        let found = self.state.scan().map_err(|source| DaemonError::State {
            path: self.config.state_dir.clone(),
            source,
        })?;
        let mut adopted = 0;
        for (record, exit) in found {
            let vm_dir = self.state.vm_dir(&record.id);
            let alive =
                exit.is_none() && process::start_time(record.pid) == Some(record.pid_start_time);
            let (exit, pidfd) = match (exit, alive) {
                (Some(exit), _) => (Some(exit), None),
                (None, true) => {
                    match process::pidfd_open(record.pid).and_then(process::watchable) {
                        Ok(pidfd) => (None, Some(Arc::new(pidfd))),
                        Err(_) => (Some(lost(&vm_dir)), None),
                    }
                }
                (None, false) => (Some(lost(&vm_dir)), None),
            };
            if exit.is_none() {
                adopted += 1;
                self.running.fetch_add(1, Ordering::Relaxed);
            }
            let id = record.id.clone();
            write_lock(&self.vms).insert(
                id.clone(),
                VmEntry {
                    record,
                    exit,
                    timings: None,
                    pidfd: pidfd.clone(),
                    stop_requested: false,
                },
            );
            if let Some(pidfd) = pidfd {
                self.watch(id, pidfd);
            }
        }
        Ok(adopted)
    }

    /// The configuration.
    pub fn config(&self) -> &DaemonConfig {
        &self.config
    }

    /// Keeps the pool at its target, forever; spawn once. After a failed
    /// preparation it waits, twice as long after each failure in a row, and says
    /// what failed once (and again only when the reason changes).
    pub async fn refill_pool(self: Arc<Self>) {
        loop {
            let retry_at = lock(&self.pool).retry_at.filter(|at| *at > Instant::now());
            if let Some(at) = retry_at {
                tokio::select! {
                    () = tokio::time::sleep_until(at.into()) => {}
                    () = self.pool_changed.notified() => {}
                }
                continue;
            }
            let wanted = {
                let pool = lock(&self.pool);
                (pool
                    .target
                    .saturating_sub(pool.ready.len() + pool.preparing))
                .min(PREPARE_PARALLELISM.saturating_sub(pool.preparing))
            };
            for _ in 0..wanted {
                lock(&self.pool).preparing += 1;
                let daemon = self.clone();
                tokio::spawn(async move {
                    let shell = daemon.prepare_shell(daemon.config.pool_mem).await;
                    let mut pool = lock(&daemon.pool);
                    pool.preparing -= 1;
                    match shell {
                        Ok(shell) => {
                            pool.failures = 0;
                            pool.retry_at = None;
                            pool.last_error = None;
                            if pool.ready.len() < pool.target {
                                pool.ready.push_back(shell);
                            }
                        }
                        Err(error) => {
                            let delay = BACKOFF_FIRST
                                .saturating_mul(1 << pool.failures.min(16))
                                .min(BACKOFF_MAX);
                            pool.failures = pool.failures.saturating_add(1);
                            pool.retry_at = Some(Instant::now() + delay);
                            if pool.last_error.as_deref() != Some(error.as_str()) {
                                eprintln!(
                                    "lightvm daemon: preparing a shell failed: {error}; retrying with a growing delay (up to {} s)",
                                    BACKOFF_MAX.as_secs()
                                );
                                pool.last_error = Some(error);
                            }
                        }
                    }
                    drop(pool);
                    daemon.pool_changed.notify_one();
                });
            }
            self.pool_changed.notified().await;
        }
    }

    async fn prepare_shell(&self, mem_size: u64) -> Result<ReadyShell, String> {
        let exe = self.config.shell_exe.clone();
        let platform = self.config.platform;
        let log = self.state.root().join("shells.log");
        let spawned: SpawnedShell = tokio::task::spawn_blocking(move || {
            process::spawn_shell(&exe, platform, mem_size, &log)
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("starting a shell process: {e}"))?;
        spawned
            .control
            .set_nonblocking(true)
            .map_err(|e| e.to_string())?;
        let control = UnixStream::from_std(spawned.control).map_err(|e| e.to_string())?;
        let mut control = BufReader::new(control);
        let failure = match read_event(&mut control).await {
            Ok(ShellEvent::Ready { .. }) => {
                return Ok(ReadyShell {
                    pid: spawned.pid,
                    pidfd: spawned.pidfd,
                    control,
                })
            }
            Ok(ShellEvent::Failed { error }) => error,
            Ok(other) => format!("unexpected message from a new shell: {other:?}"),
            Err(error) => error,
        };
        // A shell that failed is this daemon's child: stop and reap it, or it stays
        // a zombie.
        let pidfd = spawned.pidfd;
        let _ = tokio::task::spawn_blocking(move || process::kill_and_reap(&pidfd)).await;
        Err(failure)
    }

    /// Creates a VM and answers once its guest has reached `main`.
    pub async fn create(self: &Arc<Self>, request: CreateRequest) -> Result<VmView, ApiError> {
        let started = Instant::now();
        let checked = check_request(&self.config, &request)?;
        let mem_size = checked.mem_size;
        let image = OpenedImage::open(&request.image)?;
        self.check_image(&image, mem_size)?;
        if self.running.fetch_add(1, Ordering::AcqRel) >= self.config.max_vms {
            self.running.fetch_sub(1, Ordering::AcqRel);
            return Err(ApiError::limit(format!(
                "{} VMs are running, this daemon's limit",
                self.config.max_vms
            )));
        }
        let result = self.create_counted(request, checked, image, started).await;
        if result.is_err() {
            self.running.fetch_sub(1, Ordering::AcqRel);
        }
        result
    }

    async fn create_counted(
        self: &Arc<Self>,
        request: CreateRequest,
        checked: CheckedRequest,
        image: OpenedImage,
        started: Instant,
    ) -> Result<VmView, ApiError> {
        let CheckedRequest { mem_size, net } = checked;
        // The tap before a shell: a missing one fails this create alone.
        let tap = net
            .as_ref()
            .map(|net| open_tap(&net.config.tap))
            .transpose()?;
        let pooled_shell = (mem_size == self.config.pool_mem)
            .then(|| lock(&self.pool).ready.pop_front())
            .flatten();
        self.pool_changed.notify_one();
        let pooled = pooled_shell.is_some();
        let mut shell = match pooled_shell {
            Some(shell) => shell,
            None => self
                .prepare_shell(mem_size)
                .await
                .map_err(|e| ApiError::internal(format!("cannot start a VM shell: {e}")))?,
        };

        let id = self.new_id();
        let net = net.map(|net| net.for_vm(&id));
        let vm_dir = self.state.vm_dir(&id);
        let record = VmRecord {
            id: id.clone(),
            image: request.image.clone(),
            mem_size,
            cmdline: request.cmdline.clone(),
            net: net.as_ref().map(NetConfig::to_string),
            pid: shell.pid,
            pid_start_time: process::start_time(shell.pid).unwrap_or_default(),
            created_unix_ms: state::now_unix_ms(),
        };
        let files = std::fs::create_dir_all(&vm_dir)
            .and_then(|()| state::write_json(&vm_dir.join(state::VM_RECORD), &record))
            .and_then(|()| state::open_vm_files(&vm_dir))
            .map_err(|e| ApiError::internal(format!("writing the VM's state: {e}")))?;
        let files = BootFiles {
            image: image.file,
            console: files.console,
            result: files.result,
            tap: tap.map(Tap::into_file),
        };

        let boot = BootRequest {
            image: request.image,
            cmdline: request.cmdline,
            net,
            timeout_ms: request.timeout_ms,
        };
        let event = async {
            protocol::send_boot(shell.control.get_ref(), &boot, &files)
                .await
                .map_err(|e| format!("sending the boot request: {e}"))?;
            drop(files);
            read_event(&mut shell.control).await
        }
        .await;
        let pidfd = Arc::new(
            process::watchable(shell.pidfd).map_err(|e| ApiError::internal(e.to_string()))?,
        );
        let outcome = match event {
            Ok(ShellEvent::Booted { boot_done_us, .. }) => Ok(boot_done_us),
            Ok(ShellEvent::Failed { error }) => Err(ApiError::unprocessable(error)),
            Ok(other) => Err(ApiError::internal(format!(
                "unexpected message from the shell: {other:?}"
            ))),
            Err(error) => Err(ApiError::internal(format!(
                "the VM's shell failed: {error}"
            ))),
        };
        let timings = outcome
            .as_ref()
            .ok()
            .map(|&shell_boot_done_us| CreateTimings {
                api_to_boot_done_us: started.elapsed().as_secs_f64() * 1e6,
                shell_boot_done_us,
                pooled,
            });
        if let Some(timings) = &timings {
            self.metrics
                .observe_creation(timings.api_to_boot_done_us / 1e6, pooled);
        }
        // The control socket is not needed once the guest runs: drop it, and watch
        // the process through its pidfd alone.
        drop(shell.control);
        // A VM that failed to start is entered as ended: the caller takes it off the
        // running count, and the watcher, finding its end already known, must not
        // do so a second time (that would wrap the count and refuse every later
        // create as over the VM limit).
        let failed = outcome.as_ref().err().map(|error| {
            // A shell that failed before boot-done ends by itself; make sure.
            let _ = process::pidfd_signal(pidfd.get_ref(), libc::SIGKILL);
            let guess = ExitRecord::new(Outcome::Failed, &error.message);
            state::record_exit_once(&vm_dir, &guess).unwrap_or(guess)
        });
        write_lock(&self.vms).insert(
            id.clone(),
            VmEntry {
                record: record.clone(),
                exit: failed,
                timings,
                pidfd: Some(pidfd.clone()),
                stop_requested: outcome.is_err(),
            },
        );
        self.watch(id.clone(), pidfd.clone());
        outcome.map(|_| VmView::new(&record, None, timings))
    }

    /// Validates an opened image once per file version (inode, size and
    /// modification time: a replaced or rewritten file is checked again).
    fn check_image(&self, image: &OpenedImage, mem_size: u64) -> Result<(), ApiError> {
        use std::os::unix::fs::MetadataExt;
        let metadata = image
            .file
            .metadata()
            .map_err(|e| ApiError::bad_request(format!("image {}: {e}", image.path.display())))?;
        let key = |end| ImageCheck {
            len: metadata.len(),
            modified: metadata.modified().ok(),
            inode: metadata.ino(),
            end,
        };
        let cached = lock(&self.images).get(&image.path).cloned();
        let end = match cached {
            Some(check) if check == key(check.end) => check.end,
            _ => {
                let file = image
                    .file
                    .try_clone()
                    .map_err(|e| ApiError::internal(e.to_string()))?;
                let parsed = UnikernelImage::from_open_file(file, &image.path)
                    .map_err(|e| ApiError::unprocessable(e.to_string()))?;
                lock(&self.images).insert(image.path.clone(), key(parsed.end()));
                parsed.end()
            }
        };
        if end > mem_size {
            return Err(ApiError::unprocessable(format!(
                "image needs memory up to {end:#x} but the VM would have {mem_size} bytes; ask for more memory"
            )));
        }
        Ok(())
    }

    /// Waits for a VM's process to end and records how.
    fn watch(self: &Arc<Self>, id: String, pidfd: Arc<AsyncFd<OwnedFd>>) {
        let daemon = self.clone();
        tokio::spawn(async move {
            // Readable once the process has exited; an error also means it is gone.
            let _ = pidfd.readable().await;
            let reaped = process::reap(pidfd.get_ref());
            let vm_dir = daemon.state.vm_dir(&id);
            let stop_requested = read_lock(&daemon.vms)
                .get(&id)
                .is_some_and(|entry| entry.stop_requested);
            let guess = match reaped {
                _ if stop_requested => ExitRecord::new(Outcome::Stopped, "stopped through the API"),
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
            let exit = state::record_exit_once(&vm_dir, &guess).unwrap_or(guess);
            if let Some(entry) = write_lock(&daemon.vms).get_mut(&id) {
                if entry.exit.is_none() {
                    daemon.running.fetch_sub(1, Ordering::AcqRel);
                }
                entry.exit = Some(exit);
                entry.pidfd = None;
            }
        });
    }

    /// Every VM.
    pub fn list(&self) -> Vec<VmView> {
        let vms = read_lock(&self.vms);
        let mut list: Vec<VmView> = vms
            .values()
            .map(|e| VmView::new(&e.record, e.exit.as_ref(), e.timings))
            .collect();
        list.sort_by_key(|v| (v.created_unix_ms, v.id.clone()));
        list
    }

    /// One VM.
    pub fn inspect(&self, id: &str) -> Result<VmView, ApiError> {
        read_lock(&self.vms)
            .get(id)
            .map(|e| VmView::new(&e.record, e.exit.as_ref(), e.timings))
            .ok_or_else(|| no_such_vm(id))
    }

    /// Kills a VM's process; its exit is recorded as "stopped".
    pub fn stop(&self, id: &str) -> Result<VmView, ApiError> {
        let mut vms = write_lock(&self.vms);
        let entry = vms.get_mut(id).ok_or_else(|| no_such_vm(id))?;
        if let Some(pidfd) = &entry.pidfd {
            entry.stop_requested = true;
            process::pidfd_signal(pidfd.get_ref(), libc::SIGKILL)
                .map_err(|e| ApiError::internal(format!("stopping {id}: {e}")))?;
        }
        Ok(VmView::new(
            &entry.record,
            entry.exit.as_ref(),
            entry.timings,
        ))
    }

    /// Stops a VM if it runs, waits for its end to be recorded, and forgets it.
    pub async fn remove(&self, id: &str) -> Result<(), ApiError> {
        self.stop(id)?;
        let deadline = Instant::now() + SHELL_DEADLINE;
        while read_lock(&self.vms)
            .get(id)
            .is_some_and(|e| e.exit.is_none())
        {
            if Instant::now() > deadline {
                return Err(ApiError::internal(format!("{id} did not stop")));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        write_lock(&self.vms).remove(id);
        std::fs::remove_dir_all(self.state.vm_dir(id))
            .map_err(|e| ApiError::internal(format!("removing {id}'s state: {e}")))
    }

    /// Path of a VM's console log, and whether the VM still runs.
    pub fn console(&self, id: &str) -> Result<(PathBuf, bool), ApiError> {
        let running = read_lock(&self.vms)
            .get(id)
            .map(|e| e.exit.is_none())
            .ok_or_else(|| no_such_vm(id))?;
        Ok((self.state.vm_dir(id).join(state::CONSOLE_LOG), running))
    }

    /// Whether a VM has ended (or is unknown).
    pub fn has_ended(&self, id: &str) -> bool {
        read_lock(&self.vms)
            .get(id)
            .is_none_or(|e| e.exit.is_some())
    }

    /// The pool's state.
    pub fn pool_status(&self) -> PoolStatus {
        let pool = lock(&self.pool);
        PoolStatus {
            target: pool.target,
            ready: pool.ready.len(),
            preparing: pool.preparing,
            mem_size: self.config.pool_mem,
            platform: self.config.platform,
            failing: pool.last_error.as_ref().map(|error| PoolFailure {
                in_a_row: pool.failures,
                error: error.clone(),
            }),
        }
    }

    /// Changes the pool's target; surplus ready shells are let go (their processes
    /// exit when their control socket closes).
    pub fn resize_pool(&self, size: usize) -> Result<PoolStatus, ApiError> {
        if size > self.config.max_vms {
            return Err(ApiError::bad_request(format!(
                "a pool of {size} is larger than the VM limit ({})",
                self.config.max_vms
            )));
        }
        let mut pool = lock(&self.pool);
        pool.target = size;
        pool.ready.truncate(size);
        drop(pool);
        self.pool_changed.notify_one();
        Ok(self.pool_status())
    }

    /// Prometheus text.
    pub fn metrics(&self) -> String {
        let (running, exited) = {
            let vms = read_lock(&self.vms);
            let exited = vms.values().filter(|e| e.exit.is_some()).count();
            (vms.len() - exited, exited)
        };
        let pool = self.pool_status();
        self.metrics.render(Gauges {
            running,
            exited,
            pool_ready: pool.ready,
            pool_target: pool.target,
        })
    }

    fn new_id(&self) -> String {
        let n = self.id_counter.fetch_add(1, Ordering::Relaxed);
        format!("{:016x}", splitmix64(self.id_seed.wrapping_add(n)))
    }
}

/// What [`check_request`] derived from a create request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedRequest {
    /// Guest memory in bytes.
    mem_size: u64,
    /// The network interface asked for.
    net: Option<NetRequest>,
}

/// An image file a request named, opened (a regular file, or refused): what the
/// shell gets is what was checked.
#[derive(Debug)]
struct OpenedImage {
    path: PathBuf,
    file: std::fs::File,
}

impl OpenedImage {
    fn open(path: &Path) -> Result<Self, ApiError> {
        let file = lightvm_vmm::loader::open_file(path)
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        Ok(Self {
            path: path.to_owned(),
            file,
        })
    }
}

/// A create request's network interface, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct NetRequest {
    config: NetConfig,
    /// Whether the request named the MAC; if not, the VM gets one of its own.
    mac_given: bool,
}

impl NetRequest {
    /// The interface of VM `id`, its MAC fixed before boot so that the record, the
    /// answer and the shell name the same one. Without a `mac=`, the MAC comes from
    /// the VM's id: VMs whose taps share a bridge must not share a MAC, as they
    /// would with one default for all.
    fn for_vm(mut self, id: &str) -> NetConfig {
        if !self.mac_given {
            self.config.mac = vm_mac(id);
        }
        self.config
    }
}

/// A locally administered unicast MAC derived from a VM id (16 hex digits of a
/// 64-bit mix of the daemon's counter): 40 bits of it, so VMs differ.
fn vm_mac(id: &str) -> [u8; 6] {
    let bits = u64::from_str_radix(id, 16).unwrap_or_else(|_| {
        id.bytes()
            .fold(0u64, |h, b| h.rotate_left(5) ^ u64::from(b))
    });
    let [_, _, _, a, b, c, d, e] = bits.to_be_bytes();
    [0x06, a, b, c, d, e]
}

/// Checks everything in a create request that needs no file, process or shell, so
/// that a malformed request is a 400 before the pool is touched. Public so that
/// the fuzz target `api_request` (crates/fuzz) runs it on any body a client sends.
pub fn check_request(
    config: &DaemonConfig,
    request: &CreateRequest,
) -> Result<CheckedRequest, ApiError> {
    let mem_size = match &request.mem {
        Some(mem) => parse_mem_size(mem).map_err(|e| ApiError::bad_request(e.to_string()))?,
        None => config.pool_mem,
    };
    if mem_size > config.max_mem {
        return Err(ApiError::bad_request(format!(
            "memory {mem_size} bytes is above this daemon's limit of {} bytes",
            config.max_mem
        )));
    }
    let net = request
        .net
        .as_deref()
        .map(|text| {
            NetConfig::parse(text, 0).map(|config| NetRequest {
                config,
                mac_given: text.split(',').any(|part| part.starts_with("mac=")),
            })
        })
        .transpose()
        .map_err(|e| ApiError::bad_request(format!("net: {e}")))?;
    let timeout = request.timeout_ms.map(Duration::from_millis);
    VmConfig::new(&request.image, mem_size, request.cmdline.as_str(), timeout)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    Ok(CheckedRequest { mem_size, net })
}

/// Opens the tap a request names, in the daemon's network namespace. The VMM's
/// tap opener creates a missing tap (what `lightvm run` wants, as root), but a
/// daemon's VM on a tap made on the fly would sit on a link with no address and no
/// route that disappears with it: a typo in `net` would look like a working VM. So
/// an interface that does not exist is an error here; one that exists but is no
/// tap, or is attached to another VM, is refused when it is opened.
fn open_tap(name: &str) -> Result<Tap, ApiError> {
    let missing = || {
        ApiError::unprocessable(format!(
            "tap interface {name:?} does not exist in the daemon's network namespace; \
             create it first (ip tuntap add dev {name} mode tap)"
        ))
    };
    // Interface names never hold a NUL (the parser bounds their length, the VMM
    // refuses odd bytes); one that does cannot exist either.
    let c_name = std::ffi::CString::new(name).map_err(|_| missing())?;
    // SAFETY: if_nametoindex reads a NUL-terminated string that outlives the call.
    if unsafe { libc::if_nametoindex(c_name.as_ptr()) } == 0 {
        let error = std::io::Error::last_os_error();
        return Err(match error.raw_os_error() {
            Some(libc::ENODEV | libc::ENXIO) => missing(),
            _ => ApiError::unprocessable(format!("looking up tap interface {name:?}: {error}")),
        });
    }
    Tap::open(name).map_err(|e| ApiError::unprocessable(format!("net: {e}")))
}

async fn read_event(control: &mut BufReader<UnixStream>) -> Result<ShellEvent, String> {
    let mut line = Vec::new();
    let read = tokio::time::timeout(SHELL_DEADLINE, control.read_until(b'\n', &mut line))
        .await
        .map_err(|_| "the shell did not answer in time".to_owned())?
        .map_err(|e| format!("reading from the shell: {e}"))?;
    if read == 0 {
        return Err("the shell process ended unexpectedly".to_owned());
    }
    protocol::decode(&line).map_err(|e| format!("bad message from the shell: {e}"))
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

/// Locks a mutex; a panic while holding one is a bug that must not take the whole
/// daemon down with poisoned locks, so the data is used as it is.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn read_lock<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write_lock<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> DaemonConfig {
        DaemonConfig {
            socket: "/nonexistent/api.sock".into(),
            state_dir: "/nonexistent/state".into(),
            pool_size: 0,
            pool_mem: 2 << 20,
            max_vms: 10,
            max_mem: 64 << 20,
            shell_exe: "/nonexistent/lightvm".into(),
            platform: lightvm_vmm::Platform::Process,
        }
    }

    fn request(net: Option<&str>) -> CreateRequest {
        CreateRequest {
            image: "/images/udp-echo".into(),
            mem: Some("64M".into()),
            cmdline: "ip=10.0.0.2/24".into(),
            timeout_ms: None,
            net: net.map(str::to_owned),
        }
    }

    #[test]
    fn a_bad_net_is_a_bad_request() {
        for bad in [
            "",
            "tap0",
            "tap=",
            "mac=06:00:00:00:00:01",
            "tap=tap0,mac=01:00:00:00:00:01",
            "tap=tap0,mac=zz:00:00:00:00:01",
            "tap=tap0,speed=10",
            "tap=waytoolonginterfacename",
        ] {
            let error = check_request(&config(), &request(Some(bad))).expect_err(bad);
            assert_eq!(error.status, axum::http::StatusCode::BAD_REQUEST, "{bad:?}");
            assert!(
                error.message.starts_with("net: "),
                "{bad:?}: {}",
                error.message
            );
        }
    }

    #[test]
    fn a_good_net_is_normalised_with_its_mac() {
        let checked = check_request(&config(), &request(Some("tap=lvmtap0"))).unwrap();
        assert_eq!(checked.mem_size, 64 << 20);
        let net = checked.net.unwrap();
        assert_eq!(
            net.clone().for_vm("00000000000000aa").to_string(),
            "tap=lvmtap0,mac=06:00:00:00:00:aa"
        );
        assert_ne!(
            net.clone().for_vm("1234567890abcdef"),
            net.for_vm("1234567890abcdee"),
            "VMs on one bridge need MACs of their own"
        );
        let checked =
            check_request(&config(), &request(Some("tap=t1,mac=02:00:00:aa:bb:cc"))).unwrap();
        assert_eq!(
            checked.net.unwrap().for_vm("1234567890abcdef").to_string(),
            "tap=t1,mac=02:00:00:aa:bb:cc",
            "a MAC the request names is kept"
        );
        assert_eq!(check_request(&config(), &request(None)).unwrap().net, None);
    }

    #[test]
    fn a_create_request_without_net_still_parses() {
        let request: CreateRequest = serde_json::from_str(r#"{"image": "/images/hello"}"#).unwrap();
        assert_eq!(request.net, None);
        let request: CreateRequest =
            serde_json::from_str(r#"{"image": "/i", "net": "tap=tap0"}"#).unwrap();
        assert_eq!(request.net.as_deref(), Some("tap=tap0"));
    }

    #[test]
    fn ids_are_distinct_and_fixed_width() {
        let ids: std::collections::HashSet<String> = (0..10_000)
            .map(|n| format!("{:016x}", splitmix64(n)))
            .collect();
        assert_eq!(ids.len(), 10_000);
        assert!(ids.iter().all(|id| id.len() == 16));
    }
}
