//! The pool of prepared shells: LightVM's *prepare* phase, run ahead of requests.
//!
//! Shells are prepared for one [`ShellKind`]: a guest memory size, and whether
//! the guest runs Linux programs (a KVM vCPU that runs them is set up otherwise
//! before it first runs: host CPUID, CR4.FSGSBASE and OSXSAVE, XCR0). The pool
//! keeps two lanes, one per kind of guest — unikernels of `--pool-mem`, Linux
//! programs of `--linux-pool-mem` — each with its own target and its own record
//! of failures. A background task keeps both at their targets, a few shells at a
//! time; a create takes a ready shell of its kind (or, for a kind the pool does
//! not keep, prepares one on the spot). Every shell is a [`ChildShell`]: one
//! that leaves the pool any way but into a VM — the pool shrunk, a create
//! cancelled, the daemon stopping — is killed and reaped, never left running or
//! as a zombie.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lightvm_vmm::jail::JailReport;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::net::UnixStream;
use tokio::sync::Notify;

use crate::api::{LinuxPoolStatus, PoolFailure, PoolStatus};
use crate::process::{ChildShell, Spawner};
use crate::protocol::{self, ShellEvent};

/// How long a shell may take to prepare, or a guest to reach boot-done, before the
/// daemon gives up on it.
pub const SHELL_DEADLINE: Duration = Duration::from_secs(30);
/// Shells prepared at once, both lanes together: process creation and KVM setup
/// are CPU-bound.
const PREPARE_PARALLELISM: usize = 2;
/// The first wait after a failed preparation; it doubles with each failure in a
/// row, up to [`BACKOFF_MAX`].
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
/// The longest wait between failing preparations.
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// What a shell is prepared for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ShellKind {
    /// Guest memory in bytes: only a guest of this size boots in it.
    pub mem_size: u64,
    /// Whether it runs Linux programs (`VmConfig::for_linux_programs`).
    pub linux: bool,
}

/// A prepared, warmed shell waiting for a request.
pub struct ReadyShell {
    /// The process.
    pub process: ChildShell,
    /// The control socket.
    pub control: BufReader<UnixStream>,
    /// The jail it locked itself into (its cgroup, with the default limits for
    /// its kind), as it reported it.
    pub jail: Option<JailReport>,
}

#[derive(Default)]
struct PoolState {
    ready: VecDeque<ReadyShell>,
    target: usize,
    preparing: usize,
    /// Shell preparations that failed in a row, and when to try again: a host that
    /// cannot prepare shells (no platform, no memory) is not asked to in a loop.
    failures: u32,
    retry_at: Option<Instant>,
    last_error: Option<String>,
}

/// The shells of one kind.
struct Lane {
    kind: ShellKind,
    state: Mutex<PoolState>,
}

impl Lane {
    fn new(kind: ShellKind, target: usize) -> Self {
        Self {
            kind,
            state: Mutex::new(PoolState {
                target,
                ..PoolState::default()
            }),
        }
    }

    /// (target, ready, preparing, failing).
    fn counts(&self) -> (usize, usize, usize, Option<PoolFailure>) {
        let state = lock(&self.state);
        (
            state.target,
            state.ready.len(),
            state.preparing,
            state.last_error.as_ref().map(|error| PoolFailure {
                in_a_row: state.failures,
                error: error.clone(),
            }),
        )
    }
}

/// How shells are made.
#[derive(Debug, Clone)]
pub struct ShellSpec {
    /// The `lightvm` executable.
    pub exe: PathBuf,
    /// Where the VMs run.
    pub platform: lightvm_vmm::Platform,
    /// Where shells' stderr goes.
    pub log: PathBuf,
    /// Whether shells run in their jail.
    pub jail: bool,
}

/// The pool.
pub struct Pool {
    spec: ShellSpec,
    spawner: Spawner,
    /// The unikernel lane, then the Linux-program lane.
    lanes: [Lane; 2],
    changed: Notify,
}

impl Pool {
    /// A pool of `target` unikernel shells of `mem_size` bytes and `linux_target`
    /// shells for Linux programs of `linux_mem_size` bytes, empty until
    /// [`Pool::refill`] runs. It starts the [`Spawner`] thread: call it before the
    /// daemon's seccomp filter is installed.
    pub fn new(
        spec: ShellSpec,
        (mem_size, target): (u64, usize),
        (linux_mem_size, linux_target): (u64, usize),
    ) -> std::io::Result<Self> {
        Ok(Self {
            spec,
            spawner: Spawner::start()?,
            lanes: [
                Lane::new(
                    ShellKind {
                        mem_size,
                        linux: false,
                    },
                    target,
                ),
                Lane::new(
                    ShellKind {
                        mem_size: linux_mem_size,
                        linux: true,
                    },
                    linux_target,
                ),
            ],
            changed: Notify::new(),
        })
    }

    fn lane(&self, linux: bool) -> &Lane {
        &self.lanes[usize::from(linux)]
    }

    /// The kind of shell the pool keeps for unikernels (`linux` false) or Linux
    /// programs.
    pub fn kind(&self, linux: bool) -> ShellKind {
        self.lane(linux).kind
    }

    /// A ready shell of `kind`, if the pool has one.
    pub fn take(&self, kind: ShellKind) -> Option<ReadyShell> {
        let lane = self.lane(kind.linux);
        if lane.kind != kind {
            return None;
        }
        let shell = lock(&lane.state).ready.pop_front();
        self.changed.notify_one();
        shell
    }

    /// Keeps both lanes at their targets, forever; spawn once. After a failed
    /// preparation a lane waits, twice as long after each failure in a row, and
    /// says what failed once (and again only when the reason changes); the other
    /// lane goes on meanwhile.
    pub async fn refill(self: Arc<Self>) {
        loop {
            let now = Instant::now();
            let mut busy: usize = self
                .lanes
                .iter()
                .map(|lane| lock(&lane.state).preparing)
                .sum();
            let mut next_retry: Option<Instant> = None;
            for (index, lane) in self.lanes.iter().enumerate() {
                let wanted = {
                    let mut state = lock(&lane.state);
                    if let Some(at) = state.retry_at.filter(|at| *at > now) {
                        next_retry = Some(next_retry.map_or(at, |next| next.min(at)));
                        continue;
                    }
                    let wanted = state
                        .target
                        .saturating_sub(state.ready.len() + state.preparing)
                        .min(PREPARE_PARALLELISM.saturating_sub(busy));
                    state.preparing += wanted;
                    wanted
                };
                busy += wanted;
                for _ in 0..wanted {
                    let pool = self.clone();
                    tokio::spawn(async move {
                        let lane = &pool.lanes[index];
                        let shell = pool.prepare(lane.kind).await;
                        pool.prepared(lane, shell);
                    });
                }
            }
            match next_retry {
                Some(at) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(at.into()) => {}
                        () = self.changed.notified() => {}
                    }
                }
                None => self.changed.notified().await,
            }
        }
    }

    fn prepared(&self, lane: &Lane, shell: Result<ReadyShell, String>) {
        let mut state = lock(&lane.state);
        state.preparing -= 1;
        match shell {
            Ok(shell) => {
                state.failures = 0;
                state.retry_at = None;
                state.last_error = None;
                if state.ready.len() < state.target {
                    state.ready.push_back(shell);
                }
            }
            Err(error) => {
                let delay = BACKOFF_FIRST
                    .saturating_mul(1 << state.failures.min(16))
                    .min(BACKOFF_MAX);
                state.failures = state.failures.saturating_add(1);
                state.retry_at = Some(Instant::now() + delay);
                if state.last_error.as_deref() != Some(error.as_str()) {
                    eprintln!(
                        "lightvm daemon: preparing a shell{} failed: {error}; retrying with a growing delay (up to {} s)",
                        if lane.kind.linux { " for Linux programs" } else { "" },
                        BACKOFF_MAX.as_secs()
                    );
                    state.last_error = Some(error);
                }
            }
        }
        drop(state);
        self.changed.notify_one();
    }

    /// Runs `job` on the spawner thread, outside the daemon's seccomp filter:
    /// for the cgroup work of the shells' jails (mkdir, rmdir and writes the
    /// daemon's own threads may not make).
    pub async fn outside_filter<T: Send + 'static>(
        &self,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> std::io::Result<T> {
        self.spawner.run(job).await
    }

    /// Starts a shell of `kind` and waits until it is prepared. A shell that
    /// fails is killed and reaped.
    pub async fn prepare(&self, kind: ShellKind) -> Result<ReadyShell, String> {
        let spec = &self.spec;
        // The process is a ChildShell from the moment it exists: if this future is
        // dropped while the spawner starts it, the spawner stops and reaps it.
        let (process, control) = self
            .spawner
            .spawn(&spec.exe, spec.platform, kind, &spec.log, spec.jail)
            .await
            .map_err(|e| format!("starting a shell process: {e}"))?;
        control.set_nonblocking(true).map_err(|e| e.to_string())?;
        let control = UnixStream::from_std(control).map_err(|e| e.to_string())?;
        let mut control = BufReader::new(control);
        let ev = read_event(&mut control).await;
        match ev? {
            ShellEvent::Ready { jail, .. } => Ok(ReadyShell {
                process,
                control,
                jail,
            }),
            ShellEvent::Failed { error } => Err(error),
            other => Err(format!("unexpected message from a new shell: {other:?}")),
        }
    }

    /// The pool's state; `linux_unavailable` says why Linux programs are not
    /// run, if they are not.
    pub fn status(&self, linux_unavailable: Option<String>) -> PoolStatus {
        let (target, ready, preparing, failing) = self.lane(false).counts();
        let linux = self.lane(true);
        let (linux_target, linux_ready, linux_preparing, linux_failing) = linux.counts();
        PoolStatus {
            target,
            ready,
            preparing,
            mem_size: self.lane(false).kind.mem_size,
            platform: self.spec.platform,
            failing,
            linux: LinuxPoolStatus {
                target: linux_target,
                ready: linux_ready,
                preparing: linux_preparing,
                mem_size: linux.kind.mem_size,
                failing: linux_failing,
                unavailable: linux_unavailable,
            },
        }
    }

    /// For a daemon that stops: both lanes' targets to 0, their ready shells
    /// killed and reaped, and then their cgroups removed (on the spawner thread,
    /// outside the daemon's filter; a shell still preparing ends with its
    /// preparation, and its group is swept before the next daemon's first shell).
    pub async fn shut_down(&self) {
        let mut shells = Vec::new();
        for lane in &self.lanes {
            let mut state = lock(&lane.state);
            state.target = 0;
            shells.extend(state.ready.drain(..));
        }
        let mut groups = Vec::new();
        for shell in shells {
            groups.extend(
                shell
                    .jail
                    .as_ref()
                    .and_then(|jail| lightvm_vmm::jail::Cgroup::reopen(&jail.cgroup)),
            );
            let _ = tokio::task::spawn_blocking(move || shell.process.stop()).await;
        }
        // Cgroup::remove waits a little for a reaped process to leave its group.
        let _ = self
            .spawner
            .run(move || groups.iter().for_each(lightvm_vmm::jail::Cgroup::remove))
            .await;
    }

    /// Changes a lane's target (`linux`: the Linux-program lane's); surplus
    /// ready shells are stopped and reaped.
    pub fn resize(&self, linux: bool, size: usize) {
        let surplus: Vec<ReadyShell> = {
            let mut state = lock(&self.lane(linux).state);
            state.target = size;
            let keep = size.min(state.ready.len());
            state.ready.drain(keep..).collect()
        };
        drop(surplus);
        self.changed.notify_one();
    }
}

/// The longest event line a shell may send: events are a few hundred bytes, and a
/// shell runs next to a guest, so what it says is read with a bound.
const EVENT_MAX: u64 = 64 << 10;

/// Reads one event from a shell, within [`SHELL_DEADLINE`] and [`EVENT_MAX`].
pub async fn read_event(control: &mut BufReader<UnixStream>) -> Result<ShellEvent, String> {
    let mut line = Vec::new();
    let mut bounded = control.take(EVENT_MAX);
    let read = tokio::time::timeout(SHELL_DEADLINE, bounded.read_until(b'\n', &mut line))
        .await
        .map_err(|_| "the shell did not answer in time".to_owned())?
        .map_err(|e| format!("reading from the shell: {e}"))?;
    if read == 0 {
        return Err("the shell process ended unexpectedly".to_owned());
    }
    if line.len() as u64 >= EVENT_MAX && !line.ends_with(b"\n") {
        return Err(format!(
            "a message from the shell is over {EVENT_MAX} bytes"
        ));
    }
    protocol::decode(&line).map_err(|e| format!("bad message from the shell: {e}"))
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
