//! A create request, checked: everything that needs no file, process or shell is
//! validated here, so a malformed request is a 400 before the pool is touched; the
//! one host resource a request names besides its image — a tap — is opened here
//! too, with the client's rights.

use std::path::Path;
use std::time::Duration;

use lightvm_vmm::devices::tap::Tap;
use lightvm_vmm::{parse_mem_size, NetConfig, VmConfig};

use crate::access::Peer;
use lightvm_vmm::jail::{CpuMax, Limits};

use crate::api::{ApiError, CreateRequest, Guest, LimitsRequest};
use crate::pool::ShellKind;

/// What [`check_request`] derived from a create request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedRequest {
    /// The shell it needs: its guest memory, and whether it runs a Linux
    /// program.
    pub kind: ShellKind,
    /// The network interface asked for.
    pub net: Option<NetRequest>,
    /// The command line the guest boots with: the request's, plus the
    /// personality's `lx.trace` when a Linux program's calls are traced.
    pub boot_cmdline: String,
    /// The limits the request asks for beyond its shell's defaults (those it
    /// does not name are `None`: the shell's group keeps its own).
    pub limits: Limits,
}

/// Guest memory of a create that names none: the size of the pool's shells for
/// its kind of guest, so that it is served from the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DefaultMem {
    /// For unikernels.
    pub unikernel: u64,
    /// For Linux programs.
    pub linux: u64,
}

/// A create request's network interface, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetRequest {
    /// The interface.
    pub config: NetConfig,
    /// Whether the request named the MAC; if not, the VM gets one of its own.
    pub mac_given: bool,
}

impl NetRequest {
    /// The interface of VM `id`, its MAC fixed before boot so that the record, the
    /// answer and the shell name the same one. Without a `mac=`, the MAC comes from
    /// the VM's id: VMs whose taps share a bridge must not share a MAC, as they
    /// would with one default for all.
    pub fn for_vm(mut self, id: &str) -> NetConfig {
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

/// Checks everything in a create request that needs no file, process or shell
/// (what the body's own parsing checks — one guest, a Linux program's strings —
/// was checked as it was read).
pub fn check_request(
    request: &CreateRequest,
    default_mem: DefaultMem,
    max_mem: u64,
) -> Result<CheckedRequest, ApiError> {
    let (what, path, linux) = match &request.guest {
        Guest::Image(image) => ("image", image, false),
        Guest::Linux(program) => ("rootfs", &program.rootfs, true),
    };
    if !path.is_absolute() {
        return Err(ApiError::bad_request(format!(
            "{what} {}: not an absolute path",
            path.display()
        )));
    }
    let mem_size = match &request.mem {
        Some(mem) => parse_mem_size(mem).map_err(|e| ApiError::bad_request(e.to_string()))?,
        None if linux => default_mem.linux,
        None => default_mem.unikernel,
    };
    if mem_size > max_mem {
        return Err(ApiError::bad_request(format!(
            "memory {mem_size} bytes is above this daemon's limit of {max_mem} bytes"
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
    let boot_cmdline = match &request.guest {
        Guest::Linux(program) if program.trace_syscalls => {
            format!("{} lx.trace", request.cmdline).trim().to_owned()
        }
        _ => request.cmdline.clone(),
    };
    let timeout = request.timeout_ms.map(Duration::from_millis);
    VmConfig::new(path, mem_size, boot_cmdline.as_str(), timeout)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let limits = check_limits(&request.limits)?;
    Ok(CheckedRequest {
        kind: ShellKind { mem_size, linux },
        net,
        boot_cmdline,
        limits,
    })
}

/// Checks a create's `memory_limit`, `cpu_limit` and `pids_limit`, as `lightvm
/// run` checks its `--memory-limit`, `--cpu-limit` and `--pids-limit`.
pub fn check_limits(request: &LimitsRequest) -> Result<Limits, ApiError> {
    let bad = |field: &str, why: String| ApiError::bad_request(format!("{field}: {why}"));
    let memory_max = match &request.memory {
        Some(text) => {
            let limit = parse_mem_size(text).map_err(|e| bad("memory_limit", e.to_string()))?;
            if limit == 0 {
                return Err(bad("memory_limit", "must be more than zero".to_owned()));
            }
            Some(limit)
        }
        None => None,
    };
    let cpu_max = request
        .cpu
        .as_deref()
        .map(CpuMax::from_cpus)
        .transpose()
        .map_err(|e| bad("cpu_limit", e.to_string()))?;
    if request.pids == Some(0) {
        return Err(bad("pids_limit", "must be more than zero".to_owned()));
    }
    Ok(Limits {
        memory_max,
        cpu_max,
        pids_max: request.pids,
    })
}

/// Opens the tap a request names, in the daemon's network namespace, for `peer`.
/// Blocking (sysfs and an ioctl): call it on a blocking thread.
///
/// The VMM's tap opener creates a missing tap (what `lightvm run` wants, as root),
/// but a daemon's VM on a tap made on the fly would sit on a link with no address
/// and no route that disappears with it: a typo in `net` would look like a working
/// VM. So an interface that does not exist is an error here; one that exists but
/// is no tap, or is attached to another VM, is refused when it is opened.
///
/// The daemon may attach to any tap; a client other than root may attach only to a
/// tap the kernel would let it attach to itself — one made for its user or one of
/// its groups (`ip tuntap add dev NAME mode tap user USER` or `group GROUP`).
pub fn open_tap(name: &str, peer: &Peer) -> Result<Tap, ApiError> {
    let missing = || {
        ApiError::unprocessable(format!(
            "tap interface {name:?} does not exist in the daemon's network namespace; \
             create it first (ip tuntap add dev {name} mode tap)"
        ))
    };
    // Interface names never hold a NUL or a `/` (the parser bounds their length,
    // the VMM refuses odd bytes); one that does cannot exist either.
    if name.contains('/') || name.starts_with('.') {
        return Err(missing());
    }
    let c_name = std::ffi::CString::new(name).map_err(|_| missing())?;
    // SAFETY: if_nametoindex reads a NUL-terminated string that outlives the call.
    if unsafe { libc::if_nametoindex(c_name.as_ptr()) } == 0 {
        let error = std::io::Error::last_os_error();
        return Err(match error.raw_os_error() {
            Some(libc::ENODEV | libc::ENXIO) => missing(),
            _ => ApiError::unprocessable(format!("looking up tap interface {name:?}: {error}")),
        });
    }
    if !peer.is_root() {
        check_tap_owner(name, peer, Path::new("/sys/class/net"))?;
    }
    Tap::open(name).map_err(|e| ApiError::unprocessable(format!("net: {e}")))
}

/// Whether `peer` may use tap `name`: its owner is the peer's uid, or its group
/// one of the peer's groups (what the kernel checks for an unprivileged
/// `TUNSETIFF`).
fn check_tap_owner(name: &str, peer: &Peer, sys_net: &Path) -> Result<(), ApiError> {
    let read_id = |file: &str| -> Option<u32> {
        let text = std::fs::read_to_string(sys_net.join(name).join(file)).ok()?;
        text.trim().parse::<u32>().ok()
    };
    if !sys_net.join(name).join("tun_flags").exists() {
        return Err(ApiError::unprocessable(format!(
            "net: {name:?} is not a tap interface"
        )));
    }
    let owner = read_id("owner");
    let group = read_id("group");
    if owner == Some(peer.uid) || group.is_some_and(|gid| peer.in_group(gid)) {
        return Ok(());
    }
    Err(ApiError::forbidden(format!(
        "net: tap {name:?} is not uid {}'s: make it with `ip tuntap add dev {name} mode tap user {}` (or group)",
        peer.uid, peer.uid
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(net: Option<&str>) -> CreateRequest {
        CreateRequest {
            mem: Some("64M".into()),
            cmdline: "ip=10.0.0.2/24".into(),
            net: net.map(str::to_owned),
            ..CreateRequest::image("/images/udp-echo")
        }
    }

    const DEFAULT_MEM: DefaultMem = DefaultMem {
        unikernel: 2 << 20,
        linux: 32 << 20,
    };

    fn check(request: &CreateRequest) -> Result<CheckedRequest, ApiError> {
        check_request(request, DEFAULT_MEM, 64 << 20)
    }

    #[test]
    fn limits_are_checked_at_the_edge() {
        let limits = |memory: Option<&str>, cpu: Option<&str>, pids: Option<u64>| {
            check(&CreateRequest {
                limits: LimitsRequest {
                    memory: memory.map(str::to_owned),
                    cpu: cpu.map(str::to_owned),
                    pids,
                },
                ..request(None)
            })
        };
        let checked = limits(Some("16M"), Some("0.5"), Some(20)).unwrap();
        assert_eq!(
            checked.limits,
            Limits {
                memory_max: Some(16 << 20),
                cpu_max: Some(CpuMax::from_cpus("0.5").unwrap()),
                pids_max: Some(20),
            }
        );
        assert_eq!(limits(None, None, None).unwrap().limits, Limits::default());
        for (memory, cpu, pids, field) in [
            (Some("0"), None, None, "memory_limit"),
            (Some("much"), None, None, "memory_limit"),
            (None, Some("0"), None, "cpu_limit"),
            (None, Some("nan"), None, "cpu_limit"),
            (None, None, Some(0), "pids_limit"),
        ] {
            let error = limits(memory, cpu, pids).unwrap_err();
            assert_eq!(error.status, hyper::StatusCode::BAD_REQUEST, "{field}");
            assert!(error.message.starts_with(field), "{}", error.message);
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
            let error = check(&request(Some(bad))).expect_err(bad);
            assert_eq!(error.status, axum::http::StatusCode::BAD_REQUEST, "{bad:?}");
            assert!(
                error.message.starts_with("net: "),
                "{bad:?}: {}",
                error.message
            );
        }
    }

    #[test]
    fn a_relative_image_or_too_much_memory_is_a_bad_request() {
        let mut relative = request(None);
        relative.guest = Guest::Image("images/hello".into());
        assert!(check(&relative)
            .unwrap_err()
            .message
            .contains("not an absolute path"));
        let mut big = request(None);
        big.mem = Some("128M".into());
        assert!(check(&big).unwrap_err().message.contains("limit"));
    }

    #[test]
    fn a_good_net_is_normalised_with_its_mac() {
        let checked = check(&request(Some("tap=lvmtap0"))).unwrap();
        assert_eq!(checked.kind.mem_size, 64 << 20);
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
        let checked = check(&request(Some("tap=t1,mac=02:00:00:aa:bb:cc"))).unwrap();
        assert_eq!(
            checked.net.unwrap().for_vm("1234567890abcdef").to_string(),
            "tap=t1,mac=02:00:00:aa:bb:cc",
            "a MAC the request names is kept"
        );
        assert_eq!(check(&request(None)).unwrap().net, None);
    }

    #[test]
    fn a_linux_program_gets_its_own_default_memory_and_its_trace_word() {
        let mut linux: CreateRequest = serde_json::from_str(
            r#"{"rootfs": "/roots/hello", "program": "/hello", "trace_syscalls": true, "cmdline": "ip=10.0.0.2/24"}"#,
        )
        .unwrap();
        let checked = check(&linux).unwrap();
        assert_eq!(
            checked.kind,
            ShellKind {
                mem_size: 32 << 20,
                linux: true
            }
        );
        assert_eq!(checked.boot_cmdline, "ip=10.0.0.2/24 lx.trace");
        if let Guest::Linux(program) = &mut linux.guest {
            program.rootfs = "roots/hello".into();
        }
        assert!(check(&linux)
            .unwrap_err()
            .message
            .starts_with("rootfs roots/hello: not an absolute path"));
        let unikernel = check(&CreateRequest::image("/images/hello")).unwrap();
        assert_eq!(
            unikernel.kind,
            ShellKind {
                mem_size: 2 << 20,
                linux: false
            }
        );
        assert_eq!(unikernel.boot_cmdline, "");
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
    fn a_client_may_use_only_a_tap_made_for_it() {
        let sys = std::env::temp_dir().join(format!("lightvm-sysnet-{}", std::process::id()));
        let tap = |name: &str, owner: &str, group: &str| {
            let dir = sys.join(name);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("tun_flags"), "0x1802\n").unwrap();
            std::fs::write(dir.join("owner"), format!("{owner}\n")).unwrap();
            std::fs::write(dir.join("group"), format!("{group}\n")).unwrap();
        };
        tap("mine", "1000", "-1");
        tap("ours", "-1", "50");
        tap("root", "-1", "-1");
        std::fs::create_dir_all(sys.join("eth0")).unwrap();
        let peer = Peer {
            uid: 1000,
            gid: 1000,
            groups: vec![50],
        };
        assert!(check_tap_owner("mine", &peer, &sys).is_ok());
        assert!(check_tap_owner("ours", &peer, &sys).is_ok());
        let refused = check_tap_owner("root", &peer, &sys).unwrap_err();
        assert_eq!(refused.status, axum::http::StatusCode::FORBIDDEN);
        assert!(refused.message.contains("uid 1000"), "{}", refused.message);
        let stranger = Peer {
            uid: 1001,
            gid: 1001,
            groups: Vec::new(),
        };
        assert!(check_tap_owner("mine", &stranger, &sys).is_err());
        assert!(check_tap_owner("eth0", &peer, &sys)
            .unwrap_err()
            .message
            .contains("not a tap"));
        std::fs::remove_dir_all(&sys).unwrap();
    }
}
