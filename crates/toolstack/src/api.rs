//! The REST API's request and response bodies, and its errors. `docs/openapi.json`
//! describes the same shapes; a test keeps the two in step.

use std::path::PathBuf;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use crate::state::{ExitRecord, LinuxProgramRecord, VmRecord};

/// `POST /vms`: the guest — a unikernel image, or a Linux program in a root
/// filesystem — and how to run it. On the wire the guest's fields sit beside the
/// others (`{"image": …}` or `{"rootfs": …, "program": …, "args": […]}`); they are
/// checked as they are read ([`CreateRequestError`]), so what the daemon gets is
/// one guest or the other, never both or half of one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "CreateRequestWire", into = "CreateRequestWire")]
pub struct CreateRequest {
    /// What runs.
    pub guest: Guest,
    /// Guest memory, e.g. "2M" (default: the pool's size for that kind of guest,
    /// so the request is served from the pool).
    pub mem: Option<String>,
    /// The guest command line (a Linux program takes its network from it, as a
    /// unikernel does: `ip=ADDR/PREFIX gw=ADDR`).
    pub cmdline: String,
    /// Stop the guest after this many milliseconds.
    pub timeout_ms: Option<u64>,
    /// A network interface, `tap=NAME[,mac=MAC]` as for `lightvm run --net`. The
    /// tap must already exist in the daemon's network namespace: the VM's shell
    /// attaches to it at boot and never creates one, because a tap made on the fly
    /// would have no address or route and would vanish with the VM.
    pub net: Option<String>,
    /// The VM's limits, beyond the defaults `lightvm run` gives: its cgroup's
    /// memory.max (a size, e.g. "64M"), cpu.max (in CPUs, e.g. "0.5") and
    /// pids.max. Checked at the edge: a bad one is a 400.
    pub limits: LimitsRequest,
}

/// The limits a create asks for; `None` keeps the default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LimitsRequest {
    /// `memory_limit`: a size, as `mem` takes it.
    pub memory: Option<String>,
    /// `cpu_limit`: CPUs, a JSON number or string.
    pub cpu: Option<String>,
    /// `pids_limit`: tasks.
    pub pids: Option<u64>,
}

/// `cpu_limit` as sent: `0.5` or `"0.5"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
enum CpuLimitWire {
    Number(serde_json::Number),
    Text(String),
}

impl CreateRequest {
    /// A request to boot the unikernel `image`, with every option at its default.
    pub fn image(image: impl Into<PathBuf>) -> Self {
        Self {
            guest: Guest::Image(image.into()),
            mem: None,
            cmdline: String::new(),
            timeout_ms: None,
            net: None,
            limits: LimitsRequest::default(),
        }
    }
}

/// The guest a create names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Guest {
    /// Absolute path of a unikernel image on the daemon's host. The daemon opens
    /// it with the client's own rights: a regular file of at most 1 GiB.
    Image(PathBuf),
    /// An unmodified Linux program, run on the Linux personality (`lightvm run
    /// --rootfs`).
    Linux(LinuxProgram),
}

/// A Linux program and the root filesystem it runs in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinuxProgram {
    /// Absolute path of a directory on the daemon's host: packed whole, with the
    /// client's own rights, into the archive the personality unpacks.
    pub rootfs: PathBuf,
    /// The program's absolute path inside the root filesystem.
    pub program: String,
    /// Its arguments after `argv[0]` (which is its file name).
    pub args: Vec<String>,
    /// Its environment, `NAME=VALUE` each; `None`: PATH, HOME and TERM, as
    /// `lightvm run` gives.
    pub env: Option<Vec<String>>,
    /// Its working directory inside the root filesystem.
    pub cwd: String,
    /// Print every system call it makes, with its result, on the console.
    pub trace_syscalls: bool,
}

/// Most bytes of arguments and environment a Linux program is given (with a NUL
/// each): they travel in the launch file and land on the program's first stack.
pub const MAX_LAUNCH_STRINGS: usize = 256 << 10;
/// Longest program or working-directory path (Linux's `PATH_MAX`).
const MAX_PATH: usize = 4096;

/// Why a create request's body was refused as it was read (a 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CreateRequestError {
    /// Neither guest is named.
    #[error(
        "name the guest: \"image\" (a unikernel), or \"rootfs\" and \"program\" (a Linux program)"
    )]
    NoGuest,
    /// Both are.
    #[error("\"image\" and \"rootfs\" exclude each other: a VM runs a unikernel image or a Linux program")]
    TwoGuests,
    /// A root filesystem without the program to run in it.
    #[error("\"rootfs\" needs \"program\": the path of the program to run inside it")]
    NoProgram,
    /// A Linux program's field without a root filesystem.
    #[error("\"{0}\" is for a Linux program: it needs \"rootfs\"")]
    NotLinux(&'static str),
    /// A path that must be absolute inside the root filesystem is not.
    #[error("{field} {value:?}: not an absolute path inside the root filesystem")]
    Relative {
        /// `program` or `cwd`.
        field: &'static str,
        /// Its value.
        value: String,
    },
    /// A string no Linux program can be given.
    #[error("{field}: holds a NUL byte")]
    Nul {
        /// Which.
        field: &'static str,
    },
    /// An environment entry that is no `NAME=VALUE`.
    #[error("env {0:?}: not NAME=VALUE")]
    BadEnv(String),
    /// Too long a path, or too many arguments.
    #[error("{field}: {len} bytes, more than the {max} a Linux program is given")]
    TooLong {
        /// Which.
        field: &'static str,
        /// Its length.
        len: usize,
        /// The bound.
        max: usize,
    },
}

/// `POST /vms` as it is sent: every field of either guest, checked into a
/// [`CreateRequest`].
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateRequestWire {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    image: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rootfs: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    program: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    args: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    env: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cwd: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    trace_syscalls: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    mem: Option<String>,
    #[serde(default)]
    cmdline: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    net: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    memory_limit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cpu_limit: Option<CpuLimitWire>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pids_limit: Option<u64>,
}

impl TryFrom<CreateRequestWire> for CreateRequest {
    type Error = CreateRequestError;

    fn try_from(wire: CreateRequestWire) -> Result<Self, Self::Error> {
        let guest = match (wire.image, wire.rootfs) {
            (Some(_), Some(_)) => return Err(CreateRequestError::TwoGuests),
            (None, None) if wire.program.is_some() => {
                return Err(CreateRequestError::NotLinux("program"))
            }
            (None, None) => return Err(CreateRequestError::NoGuest),
            (Some(image), None) => {
                let linux_only = [
                    ("program", wire.program.is_some()),
                    ("args", wire.args.is_some()),
                    ("env", wire.env.is_some()),
                    ("cwd", wire.cwd.is_some()),
                    ("trace_syscalls", wire.trace_syscalls.is_some()),
                ];
                if let Some((field, _)) = linux_only.iter().find(|(_, given)| *given) {
                    return Err(CreateRequestError::NotLinux(field));
                }
                Guest::Image(image)
            }
            (None, Some(rootfs)) => Guest::Linux(LinuxProgram::checked(
                rootfs,
                wire.program.ok_or(CreateRequestError::NoProgram)?,
                wire.args.unwrap_or_default(),
                wire.env,
                wire.cwd.unwrap_or_else(|| "/".to_owned()),
                wire.trace_syscalls.unwrap_or(false),
            )?),
        };
        Ok(Self {
            guest,
            mem: wire.mem,
            cmdline: wire.cmdline,
            timeout_ms: wire.timeout_ms,
            net: wire.net,
            limits: LimitsRequest {
                memory: wire.memory_limit,
                cpu: wire.cpu_limit.map(|cpu| match cpu {
                    CpuLimitWire::Number(n) => n.to_string(),
                    CpuLimitWire::Text(text) => text,
                }),
                pids: wire.pids_limit,
            },
        })
    }
}

impl From<CreateRequest> for CreateRequestWire {
    fn from(request: CreateRequest) -> Self {
        let mut wire = Self {
            mem: request.mem,
            cmdline: request.cmdline,
            timeout_ms: request.timeout_ms,
            net: request.net,
            memory_limit: request.limits.memory,
            cpu_limit: request.limits.cpu.map(CpuLimitWire::Text),
            pids_limit: request.limits.pids,
            ..Self::default()
        };
        match request.guest {
            Guest::Image(image) => wire.image = Some(image),
            Guest::Linux(program) => {
                wire.rootfs = Some(program.rootfs);
                wire.program = Some(program.program);
                wire.args = Some(program.args);
                wire.env = program.env;
                wire.cwd = Some(program.cwd);
                wire.trace_syscalls = Some(program.trace_syscalls);
            }
        }
        wire
    }
}

impl LinuxProgram {
    /// A Linux program whose strings a Linux program can be given: paths
    /// absolute and bounded, no NUL anywhere, the environment `NAME=VALUE`,
    /// arguments and environment within [`MAX_LAUNCH_STRINGS`]. (The root
    /// filesystem's path is checked with the image's, by the daemon.)
    pub fn checked(
        rootfs: PathBuf,
        program: String,
        args: Vec<String>,
        env: Option<Vec<String>>,
        cwd: String,
        trace_syscalls: bool,
    ) -> Result<Self, CreateRequestError> {
        for (field, value) in [("program", &program), ("cwd", &cwd)] {
            if !value.starts_with('/') {
                return Err(CreateRequestError::Relative {
                    field,
                    value: value.clone(),
                });
            }
            if value.len() > MAX_PATH {
                return Err(CreateRequestError::TooLong {
                    field,
                    len: value.len(),
                    max: MAX_PATH,
                });
            }
        }
        let strings = [
            ("program", std::slice::from_ref(&program)),
            ("cwd", std::slice::from_ref(&cwd)),
            ("args", &args),
        ]
        .into_iter()
        .chain(env.as_deref().map(|env| ("env", env)));
        let mut launch_bytes = 0;
        for (field, values) in strings {
            for value in values {
                if value.contains('\0') {
                    return Err(CreateRequestError::Nul { field });
                }
                launch_bytes += value.len() + 1;
            }
        }
        if launch_bytes > MAX_LAUNCH_STRINGS {
            return Err(CreateRequestError::TooLong {
                field: "args and env",
                len: launch_bytes,
                max: MAX_LAUNCH_STRINGS,
            });
        }
        if let Some(bad) = env.iter().flatten().find(|entry| {
            entry
                .split_once('=')
                .is_none_or(|(name, _)| name.is_empty())
        }) {
            return Err(CreateRequestError::BadEnv(bad.clone()));
        }
        Ok(Self {
            rootfs,
            program,
            args,
            env,
            cwd,
            trace_syscalls,
        })
    }
}

/// A VM as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VmView {
    /// Its id.
    pub id: String,
    /// `running` or `exited`.
    pub state: VmState,
    /// Image path: the unikernel's, or for a Linux program the personality's.
    pub image: PathBuf,
    /// The Linux program it runs, if it runs one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linux: Option<LinuxProgramRecord>,
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
    /// The jail its process runs in: namespaces, root, uid, rlimits, its
    /// cgroup and limits, and what the host did not allow (and why). Absent for
    /// VMs of daemons from before the jail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jail: Option<lightvm_vmm::jail::JailReport>,
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
            linux: record.linux.clone(),
            mem_size: record.mem_size,
            cmdline: record.cmdline.clone(),
            net: record.net.clone(),
            pid: record.pid,
            owner_uid: record.owner_uid,
            created_unix_ms: record.created_unix_ms,
            uptime_s: end.saturating_sub(record.created_unix_ms) as f64 / 1000.0,
            exit: exit.cloned(),
            timings,
            jail: record.jail.clone(),
        }
    }
}

/// `GET /pool`: the pool of shells for unikernels (its fields at the top level,
/// as before Linux programs had a pool) and the pool for Linux programs.
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
    /// The shells prepared for Linux programs (`lightvm daemon --linux-pool`).
    #[serde(default)]
    pub linux: LinuxPoolStatus,
}

/// The pool of shells prepared for Linux programs: a KVM vCPU that runs them is
/// set up differently from the first (CPUID, CR4, XCR0), and their guests are
/// larger, so they have shells of their own.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LinuxPoolStatus {
    /// Shells the pool keeps ready.
    pub target: usize,
    /// Shells ready now.
    pub ready: usize,
    /// Shells being prepared.
    pub preparing: usize,
    /// Guest memory of pooled shells, bytes.
    pub mem_size: u64,
    /// When the last preparations failed: how many in a row, and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing: Option<PoolFailure>,
    /// Why this daemon runs no Linux programs, if it runs none (no personality
    /// image: it could not be built at start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unavailable: Option<String>,
}

/// Shell preparations failing in a row (the pool retries with a growing delay).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolFailure {
    /// Failures in a row.
    pub in_a_row: u32,
    /// The last one's reason.
    pub error: String,
}

/// `PUT /pool`: new targets, for either pool or both.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolResize {
    /// The unikernel pool's new target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<usize>,
    /// The Linux-program pool's new target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linux_size: Option<usize>,
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

    /// 405: the endpoint does not take this method.
    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(StatusCode::METHOD_NOT_ALLOWED, message)
    }

    /// 422: the image cannot be booted.
    pub fn unprocessable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, message)
    }

    /// 409: what the request names changed while the daemon read it.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, message)
    }

    /// 413: what the request names is larger than the VM may take.
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, message)
    }

    /// 503: the daemon cannot serve this kind of request (no Linux personality).
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, message)
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
                error: one_line(&self.message),
            }),
        )
            .into_response()
    }
}

/// `message` with its control characters escaped (`\n` as `\\n`…): messages
/// quote what a client sent (a path, a field), and an error is one line, for
/// the CLI and for logs, whatever the client put in it (api-conformance found a
/// path with CR LF in it echoed as two lines).
fn one_line(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for c in message.chars() {
        if c.is_control() {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_is_one_line_whatever_the_client_put_in_it() {
        let error =
            ApiError::bad_request("image \r\n\r\nHTTP/1.1 200 OK\0\t: not an absolute path");
        let body = error.into_response().into_body();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime");
        let bytes = runtime
            .block_on(http_body_util::BodyExt::collect(body))
            .expect("a body")
            .to_bytes();
        let error: ErrorBody = serde_json::from_slice(&bytes).expect("a JSON error");
        assert_eq!(
            error.error,
            r"image \r\n\r\nHTTP/1.1 200 OK\0\t: not an absolute path"
        );
        assert_eq!(one_line("ü and 𝄞 stay"), "ü and 𝄞 stay");
    }

    fn parse(json: &str) -> Result<CreateRequest, String> {
        serde_json::from_str(json).map_err(|e| e.to_string())
    }

    #[test]
    fn a_create_names_one_guest_whole() {
        let image = parse(r#"{"image": "/images/hello", "mem": "4M"}"#).unwrap();
        assert_eq!(image.guest, Guest::Image("/images/hello".into()));
        assert_eq!(image.mem.as_deref(), Some("4M"));
        let linux = parse(
            r#"{"rootfs": "/roots/nginx", "program": "/usr/sbin/nginx", "args": ["-g", "daemon off;"],
                "env": ["A=1"], "cwd": "/srv", "trace_syscalls": true, "cmdline": "ip=10.0.0.2/24"}"#,
        )
        .unwrap();
        let Guest::Linux(program) = &linux.guest else {
            panic!("{linux:?}");
        };
        assert_eq!(program.rootfs, std::path::Path::new("/roots/nginx"));
        assert_eq!(program.program, "/usr/sbin/nginx");
        assert_eq!(program.args, ["-g", "daemon off;"]);
        assert_eq!(program.env.as_deref(), Some(&["A=1".to_owned()][..]));
        assert_eq!(program.cwd, "/srv");
        assert!(program.trace_syscalls);
        // What is sent is what is read.
        let again = parse(&serde_json::to_string(&linux).unwrap()).unwrap();
        assert_eq!(again, linux);
        let defaults = parse(r#"{"rootfs": "/r", "program": "/p"}"#).unwrap();
        let Guest::Linux(program) = defaults.guest else {
            panic!();
        };
        assert_eq!(
            (program.cwd.as_str(), program.env, program.trace_syscalls),
            ("/", None, false)
        );
        assert!(program.args.is_empty());
    }

    #[test]
    fn half_or_two_guests_are_refused_as_they_are_read() {
        for (json, needle) in [
            (r#"{}"#, "name the guest"),
            (r#"{"cmdline": "x"}"#, "name the guest"),
            (
                r#"{"image": "/i", "rootfs": "/r", "program": "/p"}"#,
                "exclude each other",
            ),
            (r#"{"rootfs": "/r"}"#, "needs \"program\""),
            (r#"{"program": "/p"}"#, "\"program\" is for a Linux program"),
            (
                r#"{"image": "/i", "args": []}"#,
                "\"args\" is for a Linux program",
            ),
            (
                r#"{"image": "/i", "trace_syscalls": false}"#,
                "\"trace_syscalls\" is for",
            ),
            (
                r#"{"rootfs": "/r", "program": "p"}"#,
                "program \"p\": not an absolute path",
            ),
            (
                r#"{"rootfs": "/r", "program": "/p", "cwd": "srv"}"#,
                "cwd \"srv\": not an absolute",
            ),
            (
                r#"{"rootfs": "/r", "program": "/p", "args": ["a\u0000b"]}"#,
                "args: holds a NUL",
            ),
            (
                r#"{"rootfs": "/r", "program": "/p", "env": ["NOEQUALS"]}"#,
                "env \"NOEQUALS\": not NAME=VALUE",
            ),
            (
                r#"{"rootfs": "/r", "program": "/p", "env": ["=x"]}"#,
                "not NAME=VALUE",
            ),
            (
                r#"{"rootfs": "/r", "program": "/p", "shell": true}"#,
                "unknown field",
            ),
            (
                r#"{"rootfs": "/r", "program": "/p", "args": "a b"}"#,
                "invalid type",
            ),
        ] {
            let error = parse(json).unwrap_err();
            assert!(error.contains(needle), "{json}: {error}");
            assert!(!error.contains('\n'), "{json}: {error}");
        }
        let long = format!(
            r#"{{"rootfs": "/r", "program": "/p", "args": ["{}"]}}"#,
            "x".repeat(MAX_LAUNCH_STRINGS)
        );
        assert!(parse(&long).unwrap_err().contains("more than the 262144"));
    }
}
