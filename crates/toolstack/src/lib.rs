//! The lightvm toolstack: a daemon that keeps a pool of pre-created VM shells
//! (LightVM's *prepare* phase) so that creating a VM on request is only the
//! *execute* phase, at the same cost for the 1st VM and the 10,000th.
//!
//! Requests flow: [`server`] (HTTP, the client's credentials) → [`daemon::Daemon`]
//! (creation, removal, adoption) over its parts — the shell [`pool`], the
//! [`registry`] of VMs and the running count, the [`request`] checks, the
//! [`images`] a client names, opened with its rights ([`access`]), the [`linux`]
//! programs' personality and root filesystems, packed with its rights too, and
//! the [`console`] readers — → a shell process ([`shell_main`], one per VM) over the
//! [`protocol`] → the VMM. VM state lives in one directory per VM ([`state`]), so a
//! restarted daemon adopts the VMs it left running.

pub mod access;
pub mod api;
pub mod client;
pub mod console;
pub mod daemon;
pub mod images;
pub mod linux;
pub mod metrics;
pub mod pool;
pub mod process;
pub mod protocol;
pub mod registry;
pub mod request;
pub mod seccomp;
pub mod server;
pub mod shell_main;
pub mod state;

/// Runs blocking work (file and /proc I/O, waiting on a process) on the runtime's
/// blocking threads: the daemon's runtime has one thread, which must never wait.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, api::ApiError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| api::ApiError::internal(format!("a blocking task failed: {e}")))
}

pub use client::Client;
pub use daemon::{Daemon, DaemonConfig, DaemonError, PersonalityImage};
