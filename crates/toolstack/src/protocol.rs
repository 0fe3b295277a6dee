//! The control channel between the daemon and a shell process: one JSON object per
//! line over a Unix stream socket (the shell's stdin).
//!
//! It is used only around a VM's start: the shell says it is ready, the daemon sends
//! the one request, the shell says when the guest booted (or why it could not). After
//! that the daemon closes its end and watches the process through a pidfd, so a
//! running VM costs the daemon one file descriptor; how the VM ended is written to
//! its state directory by whoever sees it end.
//!
//! The shell opens nothing by name: a process-platform shell is already in its own
//! namespaces when the request comes, and the daemon is the one that decides which
//! files a client may have its VM use. So the boot request carries the files it
//! needs as open descriptors ([`BootFiles`], SCM_RIGHTS on the same message), and
//! names them only for messages.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use lightvm_vmm::jail::JailReport;
use lightvm_vmm::NetConfig;
use sendfd::{RecvWithFd, SendWithFd};
use serde::{Deserialize, Serialize};

/// Daemon → shell.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShellRequest {
    /// Boot this image (the execute phase).
    Boot(BootRequest),
}

/// What a shell needs to boot a guest, beside its [`BootFiles`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BootRequest {
    /// The unikernel image's path, for messages (its file comes open).
    pub image: PathBuf,
    /// The guest command line.
    pub cmdline: String,
    /// The network interface, as the daemon validated it (the MAC filled in); its
    /// tap comes open, attached in the daemon's network namespace.
    #[serde(default)]
    pub net: Option<NetConfig>,
    /// Stop the guest after this long.
    pub timeout_ms: Option<u64>,
    /// Present when the guest is a Linux program: the image is the personality,
    /// the VM is set up for Linux programs, and the root filesystem's archive
    /// comes open as its module. Requests of daemons from before Linux programs
    /// lack it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linux: Option<LinuxBoot>,
}

/// A Linux program's part of a boot request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinuxBoot {
    /// The root filesystem the archive was packed from, for messages (the archive
    /// comes open, and has no name).
    pub rootfs: PathBuf,
}

/// The files a boot request hands over, open, in this order on the wire.
#[derive(Debug)]
pub struct BootFiles {
    /// The image, read-only.
    pub image: File,
    /// The console log, append-only.
    pub console: File,
    /// Where the shell writes how the guest ended (`result.json`, empty until then).
    pub result: File,
    /// The root filesystem archive, read-only, when the guest is a Linux program
    /// (the request's `linux`).
    pub module: Option<File>,
    /// The tap, when the request has a network.
    pub tap: Option<File>,
}

impl BootFiles {
    const MAX: usize = 5;

    fn raw(&self) -> Vec<RawFd> {
        let mut fds = vec![
            self.image.as_raw_fd(),
            self.console.as_raw_fd(),
            self.result.as_raw_fd(),
        ];
        fds.extend(self.module.as_ref().map(AsRawFd::as_raw_fd));
        fds.extend(self.tap.as_ref().map(AsRawFd::as_raw_fd));
        fds
    }

    /// The files of `request`, which says which of the optional ones came.
    fn from_received(fds: Vec<OwnedFd>, request: &BootRequest) -> Result<Self, String> {
        let (with_module, with_tap) = (request.linux.is_some(), request.net.is_some());
        let expected = 3 + usize::from(with_module) + usize::from(with_tap);
        if fds.len() != expected {
            return Err(format!(
                "the request came with {} descriptors, not {expected}",
                fds.len()
            ));
        }
        let mut files = fds.into_iter().map(File::from);
        let mut next = || files.next().ok_or("missing descriptor");
        Ok(Self {
            image: next()?,
            console: next()?,
            result: next()?,
            module: if with_module { Some(next()?) } else { None },
            tap: if with_tap { Some(next()?) } else { None },
        })
    }
}

/// Sends a boot request and its files (daemon side).
pub async fn send_boot(
    control: &tokio::net::UnixStream,
    request: &BootRequest,
    files: &BootFiles,
) -> std::io::Result<()> {
    let line = encode(&ShellRequest::Boot(request.clone()));
    let fds = files.raw();
    let mut sent = 0;
    while sent < line.len() {
        control.writable().await?;
        // The descriptors travel with the first bytes.
        let attach: &[RawFd] = if sent == 0 { &fds } else { &[] };
        match control.send_with_fd(&line[sent..], attach) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads one boot request and its files (shell side): `Ok(None)` when the daemon
/// went away without sending one.
pub fn receive_boot(control: &UnixStream) -> Result<Option<(BootRequest, BootFiles)>, String> {
    let mut line = Vec::new();
    let mut fds = Vec::new();
    let mut buf = [0u8; 4096];
    while !line.contains(&b'\n') {
        let mut raw = [-1 as RawFd; BootFiles::MAX];
        let (n, received) = control
            .recv_with_fd(&mut buf, &mut raw)
            .map_err(|e| format!("reading the request: {e}"))?;
        // SAFETY: the kernel installed these descriptors in this process for us
        // alone; nothing else owns them.
        fds.extend(
            raw.iter()
                .take(received)
                .map(|&fd| unsafe { OwnedFd::from_raw_fd(fd) }),
        );
        if n == 0 {
            return Ok(None);
        }
        line.extend_from_slice(buf.get(..n).unwrap_or_default());
        if line.len() > 1 << 20 {
            return Err("the request is over 1 MiB".to_owned());
        }
    }
    let ShellRequest::Boot(request) =
        decode::<ShellRequest>(&line).map_err(|e| format!("bad request: {e}"))?;
    let files = BootFiles::from_received(fds, &request)?;
    Ok(Some((request, files)))
}

/// Shell → daemon.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShellEvent {
    /// Prepared and warmed: ready for a [`ShellRequest::Boot`].
    Ready {
        /// µs the prepare phase took (process start excluded).
        prepare_us: f64,
        /// The jail the shell locked itself into while it prepared (shells of
        /// daemons from before the jail send none).
        #[serde(default)]
        jail: Option<JailReport>,
    },
    /// The guest reached its `main`.
    Booted {
        /// µs from receiving the request to the boot-done hypercall.
        boot_done_us: f64,
        /// µs of that spent loading the image and writing the boot state.
        setup_us: f64,
    },
    /// The guest could not be started (the image was refused, KVM failed…).
    Failed {
        /// One line for the user.
        error: String,
    },
}

/// Serialises an event or request as one line.
pub fn encode<T: Serialize>(message: &T) -> Vec<u8> {
    let mut line = serde_json::to_vec(message).unwrap_or_else(|_| b"{}".to_vec());
    line.push(b'\n');
    line
}

/// Parses one line.
pub fn decode<'a, T: Deserialize<'a>>(line: &'a [u8]) -> Result<T, serde_json::Error> {
    serde_json::from_slice(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_as_single_lines() {
        let request = ShellRequest::Boot(BootRequest {
            image: "/images/hello".into(),
            cmdline: "a\nb".into(),
            net: Some(NetConfig::parse("tap=tap0,mac=06:00:ac:10:00:02", 0).unwrap()),
            timeout_ms: Some(5),
            linux: Some(LinuxBoot {
                rootfs: "/roots/nginx".into(),
            }),
        });
        let line = encode(&request);
        assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
        assert_eq!(decode::<ShellRequest>(&line).unwrap(), request);
        let event = ShellEvent::Booted {
            boot_done_us: 1.5,
            setup_us: 0.5,
        };
        assert_eq!(decode::<ShellEvent>(&encode(&event)).unwrap(), event);
    }

    #[test]
    fn a_boot_request_carries_its_files() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (daemon, shell) = std::os::unix::net::UnixStream::pair().unwrap();
        daemon.set_nonblocking(true).unwrap();
        let dir = std::env::temp_dir().join(format!("lightvm-protocol-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = |name: &str| dir.join(name);
        std::fs::write(path("image"), b"IMAGE").unwrap();
        let request = BootRequest {
            image: path("image"),
            cmdline: "x".into(),
            net: None,
            timeout_ms: None,
            linux: Some(LinuxBoot {
                rootfs: dir.clone(),
            }),
        };
        std::fs::write(path("archive"), b"070701").unwrap();
        let files = BootFiles {
            image: File::open(path("image")).unwrap(),
            console: File::create(path("console")).unwrap(),
            result: File::create(path("result")).unwrap(),
            module: Some(File::open(path("archive")).unwrap()),
            tap: None,
        };
        runtime.block_on(async {
            let daemon = tokio::net::UnixStream::from_std(daemon).unwrap();
            send_boot(&daemon, &request, &files).await.unwrap();
        });
        let (received, mut files) = receive_boot(&shell).unwrap().unwrap();
        assert_eq!(received, request);
        let mut image = String::new();
        std::io::Read::read_to_string(&mut files.image, &mut image).unwrap();
        assert_eq!(image, "IMAGE");
        let mut archive = String::new();
        std::io::Read::read_to_string(files.module.as_mut().unwrap(), &mut archive).unwrap();
        assert_eq!(archive, "070701", "the module comes after the result file");
        std::io::Write::write_all(&mut files.result, b"done").unwrap();
        assert_eq!(std::fs::read(path("result")).unwrap(), b"done");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_request_with_the_wrong_files_is_refused() {
        let (daemon, shell) = std::os::unix::net::UnixStream::pair().unwrap();
        let line = encode(&ShellRequest::Boot(BootRequest {
            image: "/x".into(),
            cmdline: String::new(),
            net: None,
            timeout_ms: None,
            linux: None,
        }));
        std::io::Write::write_all(&mut &daemon, &line).unwrap();
        let error = receive_boot(&shell).unwrap_err();
        assert!(error.contains("0 descriptors"), "{error}");
        drop(daemon);
        assert!(receive_boot(&shell).unwrap().is_none());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(decode::<ShellEvent>(b"not json").is_err());
        assert!(decode::<ShellRequest>(b"{\"boot\":{}}").is_err());
    }
}
