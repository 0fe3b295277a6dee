//! The pooled unikernel platforms (`unikernel-kvm-pool`, `unikernel-process-pool`):
//! a `lightvm daemon --platform P` started for the run, with its own socket and
//! state directory, asked for one VM at a time over its API.
//!
//! Each request first waits (untimed) until the pool has a prepared shell, so what
//! is timed is the execute phase as a client sees it: POST /vms → the answer, which
//! the daemon sends when the guest signals boot-done (its `main` runs). The daemon
//! and every VM it started are killed when the [`PoolDaemon`] is dropped.

use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hyper::{Method, StatusCode};
use lightvm_toolstack::api::{PoolStatus, VmState, VmView};
use lightvm_toolstack::process::{pidfd_open, pidfd_signal};
use lightvm_toolstack::Client;

use crate::error::BenchError;
use crate::launch::micros_since;
use crate::netns::{GuestNet, Netns};
use crate::platform::{Start, Unikernel};

/// How long to wait for the pool to offer a prepared shell.
const POOL_WAIT: Duration = Duration::from_secs(30);
/// How long a VM may run before [`PoolDaemon::wait_exit`] gives up.
const EXIT_WAIT: Duration = Duration::from_secs(60);

/// A daemon of this run.
pub(crate) struct PoolDaemon {
    /// The row it serves (`unikernel-kvm-pool` …), for its errors.
    row: &'static str,
    child: Child,
    client: Client,
    runtime: tokio::runtime::Runtime,
    state: PathBuf,
    /// The process of each VM created and not yet removed, by pid, held as a
    /// pidfd: the bench can check that a removed VM's process has ended and kill
    /// what is left on drop without ever signalling a recycled pid.
    vms: BTreeMap<u32, OwnedFd>,
}

/// A VM the daemon created.
#[derive(Debug, Clone)]
pub(crate) struct PoolVm {
    pub id: String,
    pub pid: u32,
    /// POST /vms → answer (µs), as the client saw it.
    pub request_us: f64,
    /// The shell's boot request → guest boot-done (µs), as the shell measured it.
    pub shell_boot_done_us: Option<f64>,
}

/// What a daemon of the run is for.
pub(crate) struct DaemonSpec<'a> {
    /// Its files under the work directory are `NAME.sock`, `NAME.log`, `NAME-state`.
    pub name: &'a str,
    /// Where its VMs run (`--platform`).
    pub platform: lightvm_vmm::Platform,
    /// Shells kept prepared.
    pub pool: usize,
    /// Their guest memory (`--pool-mem`).
    pub pool_mem: &'a str,
    /// Most VMs at once.
    pub max_vms: usize,
    /// The network namespace to run in, where its VMs' taps are.
    pub netns: Option<&'a Netns>,
}

impl PoolDaemon {
    /// Starts `lightvm daemon` as `spec` says and waits until its pool has a shell.
    pub(crate) fn start(
        lightvm: &Path,
        work: &Path,
        spec: DaemonSpec<'_>,
    ) -> Result<Self, BenchError> {
        let row = Unikernel::new(spec.platform, Start::Pool).name();
        let failed = |detail: String| BenchError::platform(row, detail);
        let state = work.join(format!("{}-state", spec.name));
        let socket = work.join(format!("{}.sock", spec.name));
        let _ = std::fs::remove_dir_all(&state);
        let _ = std::fs::remove_file(&socket);
        let log = work.join(format!("{}.log", spec.name));
        let mut command = spec
            .netns
            .map_or_else(|| Command::new(lightvm), |netns| netns.command(lightvm));
        let child = command
            .arg("daemon")
            .arg("--platform")
            .arg(spec.platform.name())
            .arg("--socket")
            .arg(&socket)
            .arg("--state-dir")
            .arg(&state)
            .arg("--pool")
            .arg(spec.pool.to_string())
            .arg("--pool-mem")
            .arg(spec.pool_mem)
            .arg("--max-vms")
            .arg(spec.max_vms.to_string())
            // The rows measure unikernels: no shells kept for Linux programs.
            .arg("--linux-pool")
            .arg("0")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(crate::launch::stderr_to(&log))
            .spawn()
            .map_err(|e| failed(format!("starting the daemon: {e}")))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| failed(e.to_string()))?;
        let mut daemon = Self {
            row,
            child,
            client: Client::new(&socket),
            runtime,
            state,
            vms: BTreeMap::new(),
        };
        let pool = daemon.wait_ready().map_err(|e| {
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            failed(format!("{e} {}", log.trim()))
        })?;
        if let Ok(Some(status)) = daemon.child.try_wait() {
            return Err(failed(format!("the daemon exited at once ({status})")));
        }
        // The row's name promises a platform: make sure the daemon runs it.
        if pool.platform != spec.platform {
            return Err(failed(format!(
                "asked for --platform {}, the daemon runs {}",
                spec.platform, pool.platform
            )));
        }
        Ok(daemon)
    }

    /// Waits (untimed) until the pool has a prepared shell; returns the pool's state.
    pub(crate) fn wait_ready(&self) -> Result<PoolStatus, BenchError> {
        let deadline = Instant::now() + POOL_WAIT;
        loop {
            let pool = self
                .runtime
                .block_on(self.client.call(Method::GET, "/pool", None))
                .ok()
                .and_then(|a| serde_json::from_slice::<PoolStatus>(&a.body).ok());
            if let Some(pool) = pool.filter(|p| p.ready > 0) {
                return Ok(pool);
            }
            if Instant::now() > deadline {
                return Err(BenchError::platform(
                    self.row,
                    format!("no prepared shell within {} s", POOL_WAIT.as_secs()),
                ));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Creates a VM of `image` with `mem` of guest memory, on the tap of `net` if
    /// given, timed from the request to the daemon's answer (sent at the guest's
    /// boot-done).
    pub(crate) fn create(
        &mut self,
        image: &Path,
        mem: &str,
        net: Option<&GuestNet>,
    ) -> Result<PoolVm, BenchError> {
        self.wait_ready()?;
        let mut body = serde_json::json!({ "image": image, "mem": mem });
        if let Some(net) = net {
            body["net"] = serde_json::json!(format!("tap={}", net.tap));
            body["cmdline"] = serde_json::json!(net.cmdline);
        }
        let start = Instant::now();
        let answer = self
            .runtime
            .block_on(self.client.call(Method::POST, "/vms", Some(&body)));
        let request_us = micros_since(start);
        let vm = match answer {
            Ok(answer) if answer.status == StatusCode::CREATED => {
                serde_json::from_slice::<VmView>(&answer.body).map_err(|e| e.to_string())
            }
            Ok(answer) => Err(answer.error_message()),
            Err(error) => Err(error.to_string()),
        }
        .map_err(|e| BenchError::platform(self.row, format!("creating a VM: {e}")))?;
        if let Some(pidfd) = self.watch(vm.pid) {
            self.vms.insert(vm.pid, pidfd);
        }
        Ok(PoolVm {
            shell_boot_done_us: vm.timings.map(|t| t.shell_boot_done_us),
            id: vm.id,
            pid: vm.pid,
            request_us,
        })
    }

    /// Waits until the VM has exited and returns its console output.
    pub(crate) fn wait_exit(&self, id: &str) -> Result<String, BenchError> {
        let deadline = Instant::now() + EXIT_WAIT;
        loop {
            let vm = self
                .runtime
                .block_on(self.client.call(Method::GET, &format!("/vms/{id}"), None))
                .ok()
                .and_then(|a| serde_json::from_slice::<VmView>(&a.body).ok());
            if vm.is_some_and(|vm| vm.state == VmState::Exited) {
                break;
            }
            if Instant::now() > deadline {
                return Err(BenchError::platform(
                    self.row,
                    format!("VM {id} still running after {} s", EXIT_WAIT.as_secs()),
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let console = self
            .runtime
            .block_on(
                self.client
                    .call(Method::GET, &format!("/vms/{id}/console"), None),
            )
            .map_err(|e| BenchError::platform(self.row, format!("reading the console: {e}")))?;
        Ok(String::from_utf8_lossy(&console.body).into_owned())
    }

    /// A pidfd for the VM process `pid`, if it is still this daemon's shell: a VM
    /// that has already ended (hello exits at once) may have had its pid reused by
    /// an unrelated process, which the bench must never signal.
    fn watch(&self, pid: u32) -> Option<OwnedFd> {
        let pidfd = pidfd_open(pid).ok()?;
        // The pidfd now pins whatever process holds `pid`: check it is ours.
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let parent: u32 = stat
            .rsplit_once(')')?
            .1
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()?;
        (parent == self.child.id()).then_some(pidfd)
    }

    /// Stops (if it runs) and removes a VM; untimed. A VM whose process still runs
    /// once the daemon has removed it is killed here, and that is the error: a
    /// server left running would hold its tap and its network namespace.
    pub(crate) fn remove(&mut self, vm: &PoolVm) -> Result<(), BenchError> {
        let answer = self.runtime.block_on(self.client.call(
            Method::DELETE,
            &format!("/vms/{}", vm.id),
            None,
        ));
        let Some(pidfd) = self.vms.remove(&vm.pid) else {
            return Ok(());
        };
        if has_ended(&pidfd, LINGER) {
            return Ok(());
        }
        kill(&pidfd);
        let answer = match answer {
            Ok(answer) if answer.status.is_success() => answer.status.to_string(),
            Ok(answer) => answer.error_message(),
            Err(error) => error.to_string(),
        };
        Err(BenchError::platform(
            self.row,
            format!(
                "VM {} (pid {}) still ran after DELETE /vms/{} ({answer}); the bench killed it",
                vm.id, vm.pid, vm.id
            ),
        ))
    }
}

/// How long a removed VM's process may take to end before the bench kills it.
const LINGER: Duration = Duration::from_secs(1);

impl Drop for PoolDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // VMs outlive their daemon (a restarted daemon adopts them): kill the ones
        // this run created and did not remove. A pool shell that was never used
        // exits when its control socket to the daemon closes.
        for pidfd in self.vms.values() {
            kill(pidfd);
        }
        let _ = std::fs::remove_dir_all(&self.state);
    }
}

/// Whether the process of `pidfd` ends within `wait` (a pidfd polls readable
/// once its process has exited).
fn has_ended(pidfd: &OwnedFd, wait: Duration) -> bool {
    let mut poll = libc::pollfd {
        fd: pidfd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let millis = libc::c_int::try_from(wait.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: one valid pollfd on a descriptor `pidfd` owns, for the call.
    unsafe { libc::poll(&mut poll, 1, millis) > 0 }
}

/// SIGKILLs the process of `pidfd` (nothing if it has ended).
fn kill(pidfd: &OwnedFd) {
    let _ = pidfd_signal(pidfd, libc::SIGKILL);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_is_watched_and_killed_through_its_pidfd() {
        let mut child = Command::new("sleep").arg("60").spawn().unwrap();
        let pidfd = pidfd_open(child.id()).unwrap();
        assert!(!has_ended(&pidfd, Duration::from_millis(10)), "it sleeps");
        kill(&pidfd);
        assert!(has_ended(&pidfd, Duration::from_secs(5)), "killed");
        assert!(!child.wait().unwrap().success());
    }
}
