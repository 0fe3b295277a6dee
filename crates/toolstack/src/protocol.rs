//! The control channel between the daemon and a shell process: one JSON object per
//! line over a Unix stream socket (the shell's stdin).
//!
//! It is used only around a VM's start: the shell says it is ready, the daemon sends
//! the one request, the shell says when the guest booted (or why it could not). After
//! that the daemon closes its end and watches the process through a pidfd, so a
//! running VM costs the daemon one file descriptor; how the VM ended is written to
//! its state directory by whoever sees it end.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Daemon → shell.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShellRequest {
    /// Boot this image (the execute phase).
    Boot(BootRequest),
}

/// What a shell needs to boot a guest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BootRequest {
    /// The unikernel image.
    pub image: PathBuf,
    /// The guest command line.
    pub cmdline: String,
    /// The network interface, `tap=NAME,mac=MAC` as the daemon validated it (the
    /// MAC filled in). The shell opens the tap itself, at boot, in the daemon's
    /// network namespace.
    #[serde(default)]
    pub net: Option<String>,
    /// Stop the guest after this long.
    pub timeout_ms: Option<u64>,
    /// The VM's state directory: console log and result go there.
    pub vm_dir: PathBuf,
}

/// Shell → daemon.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShellEvent {
    /// Prepared and warmed: ready for a [`ShellRequest::Boot`].
    Ready {
        /// µs the prepare phase took (process start excluded).
        prepare_us: f64,
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
            net: Some("tap=tap0,mac=06:00:ac:10:00:02".into()),
            timeout_ms: Some(5),
            vm_dir: "/state/vms/x".into(),
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
    fn garbage_is_an_error_not_a_panic() {
        assert!(decode::<ShellEvent>(b"not json").is_err());
        assert!(decode::<ShellRequest>(b"{\"boot\":{}}").is_err());
    }
}
