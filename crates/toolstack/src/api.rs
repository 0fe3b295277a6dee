//! The REST API's request and response bodies, and its errors. `docs/openapi.json`
//! describes the same shapes; a test keeps the two in step.

use std::path::PathBuf;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use crate::state::{ExitRecord, VmRecord};

/// `POST /vms`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    /// Absolute path of the unikernel image on the daemon's host. The daemon
    /// opens it with the client's own rights: a regular file of at most 1 GiB.
    pub image: PathBuf,
    /// Guest memory, e.g. "2M" (default: the pool's size, so the request is served
    /// from the pool).
    pub mem: Option<String>,
    /// The guest command line.
    #[serde(default)]
    pub cmdline: String,
    /// Stop the guest after this many milliseconds.
    pub timeout_ms: Option<u64>,
    /// A network interface, `tap=NAME[,mac=MAC]` as for `lightvm run --net`. The
    /// tap must already exist in the daemon's network namespace: the VM's shell
    /// attaches to it at boot and never creates one, because a tap made on the fly
    /// would have no address or route and would vanish with the VM.
    #[serde(default)]
    pub net: Option<String>,
}

/// A VM as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VmView {
    /// Its id.
    pub id: String,
    /// `running` or `exited`.
    pub state: VmState,
    /// Image path.
    pub image: PathBuf,
    /// Guest memory in bytes.
    pub mem_size: u64,
    /// Command line.
    pub cmdline: String,
    /// The network interface, `tap=NAME,mac=MAC` with the MAC it was given, so a
    /// client sees which tap and address the guest is on; absent without one.
    #[serde(default)]
    pub net: Option<String>,
    /// Shell process id.
    pub pid: u32,
    /// The uid of the client that created it: only that client and root may stop
    /// it, remove it or read its console.
    #[serde(default)]
    pub owner_uid: u32,
    /// Creation time, ms since the UNIX epoch.
    pub created_unix_ms: u64,
    /// Seconds since creation (running) or lifetime (exited).
    pub uptime_s: f64,
    /// How it ended, once it has.
    pub exit: Option<ExitRecord>,
    /// Creation timings, when this daemon created it.
    pub timings: Option<CreateTimings>,
}

/// Where the time of one creation went.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct CreateTimings {
    /// Request received → guest's boot-done hypercall, as the daemon saw it (µs).
    pub api_to_boot_done_us: f64,
    /// Boot request received by the shell → boot-done (µs), measured in the shell.
    pub shell_boot_done_us: f64,
    /// Whether a prepared shell from the pool served the request.
    pub pooled: bool,
}

/// A VM's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VmState {
    /// Its guest runs.
    Running,
    /// It has ended; `exit` says how.
    Exited,
}

impl VmView {
    /// Builds the view of a stored VM.
    pub fn new(
        record: &VmRecord,
        exit: Option<&ExitRecord>,
        timings: Option<CreateTimings>,
    ) -> Self {
        let end = exit.map_or_else(crate::state::now_unix_ms, |e| e.ended_unix_ms);
        Self {
            id: record.id.clone(),
            state: if exit.is_some() {
                VmState::Exited
            } else {
                VmState::Running
            },
            image: record.image.clone(),
            mem_size: record.mem_size,
            cmdline: record.cmdline.clone(),
            net: record.net.clone(),
            pid: record.pid,
            owner_uid: record.owner_uid,
            created_unix_ms: record.created_unix_ms,
            uptime_s: end.saturating_sub(record.created_unix_ms) as f64 / 1000.0,
            exit: exit.cloned(),
            timings,
        }
    }
}

/// `GET /pool`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PoolStatus {
    /// Shells the pool keeps ready.
    pub target: usize,
    /// Shells ready now.
    pub ready: usize,
    /// Shells being prepared.
    pub preparing: usize,
    /// Guest memory of pooled shells, bytes.
    pub mem_size: u64,
    /// Where the daemon's VMs run.
    pub platform: lightvm_vmm::Platform,
    /// When the last preparations failed: how many in a row, and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing: Option<PoolFailure>,
}

/// Shell preparations failing in a row (the pool retries with a growing delay).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolFailure {
    /// Failures in a row.
    pub in_a_row: u32,
    /// The last one's reason.
    pub error: String,
}

/// `PUT /pool`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolResize {
    /// The new target.
    pub size: usize,
}

/// Every error answer: a status and `{"error": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// One line for the user.
    pub message: String,
}

/// The error body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: String,
}

impl ApiError {
    /// 400: the request is wrong.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 403: the client may not use what it names (a file, a tap, another's VM).
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, message)
    }

    /// 404: no such VM.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    /// 422: the image cannot be booted.
    pub fn unprocessable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, message)
    }

    /// 429: a configured limit is reached.
    pub fn limit(message: impl Into<String>) -> Self {
        Self::new(StatusCode::TOO_MANY_REQUESTS, message)
    }

    /// 500: the daemon failed.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    /// 507: the state directory is full.
    pub fn insufficient_storage(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INSUFFICIENT_STORAGE, message)
    }

    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(ErrorBody {
                error: self.message,
            }),
        )
            .into_response()
    }
}
