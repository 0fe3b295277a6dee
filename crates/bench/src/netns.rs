//! The private network of the net and http suites: network namespaces made for the
//! run and deleted after it (also when a suite fails), so that no host interface is
//! touched and no packet leaves them.
//!
//! ```text
//! lvmbench-PID (clients)                        server side
//!   vproc    10.0.1.1/24 ── veth ─── eth0 10.0.1.2 in lvmbench-PID-p (the process)
//!   vctr     10.0.2.1/24 ── veth ─── eth0 10.0.2.2 in lvmbench-PID-c (runc joins it)
//!   lvmtap0 10.0.10.1/24 ── tap ──── unikernel-kvm-cold 10.0.10.2 (lightvm run --net, VMM here)
//!   lvmtap1 10.0.11.1/24 ── tap ──── unikernel-kvm-pool 10.0.11.2 (a daemon in this namespace)
//!   lvmtap2 10.0.12.1/24 ── tap ──── unikernel-process-cold 10.0.12.2
//!   lvmtap3 10.0.13.1/24 ── tap ──── unikernel-process-pool 10.0.13.2
//!   lvmtap4 10.0.14.1/24 ── tap ──── linux-program-kvm 10.0.14.2 (lightvm run --rootfs --net)
//!   lvmtap5 10.0.15.1/24 ── tap ──── linux-program-process 10.0.15.2
//! ```
//!
//! Every server is one virtual link away from the clients, each on its own subnet,
//! so all of them can run at once and the clients can interleave their rounds.
//! Each guest row — every row that runs on one of lightvm's platforms, a
//! unikernel or a Linux program — has its tap and subnet, numbered by its place
//! among them in [`Platform::ALL`]; they all join the network the same way.

use std::ffi::OsStr;
use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::BenchError;
use crate::platform::Platform;

/// Where `ip netns` keeps its namespaces.
const NETNS_DIR: &str = "/run/netns";
/// The prefix of this suite's namespaces; the rest names the run's pid.
const PREFIX: &str = "lvmbench-";
/// The first subnet of the guest rows (10.0.N.0/24, one each from here).
const GUEST_SUBNETS: u8 = 10;

/// The rows whose servers are guests behind a tap: every row on one of
/// lightvm's platforms (unikernels, cold and pooled, and Linux programs), in
/// table order.
fn guest_rows() -> impl Iterator<Item = Platform> {
    Platform::ALL
        .into_iter()
        .filter(|platform| platform.lightvm().is_some())
}

/// The place of a guest row among [`guest_rows`]: its tap and subnet.
fn guest_index(platform: Platform) -> Option<usize> {
    guest_rows().position(|row| row == platform)
}

/// The tap of the guest row at `index`, in the clients' namespace.
fn tap_name(index: usize) -> String {
    format!("lvmtap{index}")
}

/// A network namespace made by `ip netns add`, deleted on drop.
#[derive(Debug)]
pub(crate) struct Netns {
    name: String,
}

impl Netns {
    /// Makes the namespace and brings its loopback up.
    pub(crate) fn create(name: String) -> Result<Self, BenchError> {
        ip(&["netns", "add", &name])?;
        let netns = Self { name };
        netns.ip(&["link", "set", "lo", "up"])?;
        Ok(netns)
    }

    /// Its name for `ip netns`.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Its bind mount: what runc's `namespaces[].path` and `setns` take.
    pub(crate) fn path(&self) -> PathBuf {
        Path::new(NETNS_DIR).join(&self.name)
    }

    /// `ip -n NAME ARGS…`: configures the namespace from outside.
    pub(crate) fn ip(&self, args: &[&str]) -> Result<(), BenchError> {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// `program` run inside the namespace (`ip netns exec` execs it, so the child's
    /// pid is the program's own).
    pub(crate) fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name]).arg(program);
        command
    }

    /// Runs `work` on a thread that has joined the namespace: the sockets it opens
    /// live there, while the rest of the run stays in the host's namespace.
    pub(crate) fn run_in<T: Send>(&self, work: impl FnOnce() -> T + Send) -> Result<T, BenchError> {
        let path = self.path();
        let file = File::open(&path).map_err(BenchError::io(&path))?;
        std::thread::scope(|scope| {
            scope
                .spawn(move || enter(&file).map(|()| work()))
                .join()
                .map_err(|_| BenchError::platform("bench", "a client thread panicked"))?
                .map_err(BenchError::io(path))
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.name]);
    }
}

/// Moves the calling thread into the network namespace open as `file`.
fn enter(file: &File) -> std::io::Result<()> {
    // SAFETY: setns with a descriptor this function borrows for the call; with
    // CLONE_NEWNET it changes only the calling thread's network namespace.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Runs `ip ARGS…`; its complaint becomes the error.
fn ip(args: &[&str]) -> Result<(), BenchError> {
    let output = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| BenchError::platform("bench", format!("running ip: {e}")))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(BenchError::platform(
            "bench",
            format!(
                "ip {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        ))
    }
}

/// How an instance joins the test network.
pub(crate) struct Attachment<'a> {
    /// The namespace its process runs in (process, the guest's VMM) or that it
    /// joins (a container).
    pub netns: &'a Netns,
    /// A guest's network (unikernel or Linux program): `None` for the host
    /// platforms.
    pub guest: Option<GuestNet>,
    /// Where the clients run: a server that says nothing when it is ready is
    /// ready once a connection from here to its port is accepted.
    pub clients: &'a Netns,
    /// The server's address.
    pub address: Ipv4Addr,
}

/// A guest's tap and the command line that gives it its address.
pub(crate) struct GuestNet {
    /// The tap, in the clients' namespace (`--net tap=NAME`).
    pub tap: String,
    /// `ip=ADDRESS/24 gw=GATEWAY`.
    pub cmdline: String,
}

/// The clients' namespace and one server namespace per host platform.
pub(crate) struct Testbed {
    /// Where the clients run and the unikernel's tap lives.
    pub clients: Netns,
    process: Netns,
    container: Netns,
}

impl Testbed {
    /// The platforms with a server on the network: the host ones and every
    /// guest row (unikernels and Linux programs).
    pub(crate) fn platforms() -> Vec<Platform> {
        [Platform::Process, Platform::Container]
            .into_iter()
            .chain(guest_rows())
            .collect()
    }

    /// Builds the network drawn at the top of this module; namespaces that an
    /// earlier, killed run left behind are deleted first.
    pub(crate) fn create() -> Result<Self, BenchError> {
        remove_stale();
        let base = format!("{PREFIX}{}", std::process::id());
        let clients = Netns::create(base.clone())?;
        let process = Netns::create(format!("{base}-p"))?;
        let container = Netns::create(format!("{base}-c"))?;
        for (index, row) in guest_rows().enumerate() {
            tap(&clients, &tap_name(index), subnet(row))?;
        }
        veth(&clients, "vproc", &process, subnet(Platform::Process))?;
        veth(&clients, "vctr", &container, subnet(Platform::Container))?;
        Ok(Self {
            clients,
            process,
            container,
        })
    }

    /// The address of `platform`'s server.
    pub(crate) fn address(platform: Platform) -> Option<Ipv4Addr> {
        Testbed::platforms()
            .contains(&platform)
            .then(|| Ipv4Addr::new(10, 0, subnet(platform), 2))
    }

    /// How `platform`'s server joins the network; `None` for platforms it has no
    /// place for.
    pub(crate) fn attachment(&self, platform: Platform) -> Option<Attachment<'_>> {
        let address = Self::address(platform)?;
        let (netns, guest) = match platform {
            Platform::Process => (&self.process, None),
            Platform::Container => (&self.container, None),
            guest => {
                let [a, b, c, _] = address.octets();
                let cmdline = format!("ip={address}/24 gw={a}.{b}.{c}.1");
                let tap = tap_name(guest_index(guest)?);
                (&self.clients, Some(GuestNet { tap, cmdline }))
            }
        };
        Some(Attachment {
            netns,
            guest,
            clients: &self.clients,
            address,
        })
    }
}

/// The third octet of `platform`'s subnet (meaningful for [`Testbed::platforms`]).
fn subnet(platform: Platform) -> u8 {
    match platform {
        Platform::Process => 1,
        Platform::Container => 2,
        guest => guest_index(guest).map_or(0, |index| {
            GUEST_SUBNETS.saturating_add(u8::try_from(index).unwrap_or(u8::MAX))
        }),
    }
}

/// A tap in the clients' namespace at 10.0.SUBNET.1/24; its unikernel is .2.
fn tap(clients: &Netns, name: &str, subnet: u8) -> Result<(), BenchError> {
    clients.ip(&["tuntap", "add", "dev", name, "mode", "tap"])?;
    clients.ip(&["addr", "add", &format!("10.0.{subnet}.1/24"), "dev", name])?;
    clients.ip(&["link", "set", name, "up"])
}

/// A veth pair from the clients (`name`, 10.0.SUBNET.1) to `eth0` of `server`
/// (10.0.SUBNET.2).
fn veth(clients: &Netns, name: &str, server: &Netns, subnet: u8) -> Result<(), BenchError> {
    clients.ip(&[
        "link",
        "add",
        name,
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        server.name(),
    ])?;
    clients.ip(&["addr", "add", &format!("10.0.{subnet}.1/24"), "dev", name])?;
    clients.ip(&["link", "set", name, "up"])?;
    server.ip(&["addr", "add", &format!("10.0.{subnet}.2/24"), "dev", "eth0"])?;
    server.ip(&["link", "set", "eth0", "up"])
}

/// Deletes this suite's namespaces whose run is gone (killed before it could).
fn remove_stale() {
    let Ok(entries) = std::fs::read_dir(NETNS_DIR) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = ip(&["netns", "del", &name]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_server_has_its_own_subnet() {
        let addresses: Vec<Ipv4Addr> = Testbed::platforms()
            .into_iter()
            .filter_map(Testbed::address)
            .collect();
        assert_eq!(
            addresses.len(),
            2 + crate::platform::Unikernel::ALL.len() + Platform::LINUX_PROGRAMS.len()
        );
        for (i, a) in addresses.iter().enumerate() {
            for b in &addresses[i + 1..] {
                assert_ne!(a.octets()[2], b.octets()[2], "{a} and {b}");
            }
        }
        assert_eq!(Testbed::address(Platform::QemuMicrovm), None);
    }

    #[test]
    fn every_guest_row_has_its_own_tap() {
        let rows: Vec<Platform> = guest_rows().collect();
        let taps: std::collections::BTreeSet<String> = rows
            .iter()
            .map(|row| tap_name(guest_index(*row).unwrap()))
            .collect();
        assert_eq!(taps.len(), rows.len());
        assert!(taps.iter().all(|tap| tap.len() < 16), "IFNAMSIZ: {taps:?}");
        for (index, unikernel) in crate::platform::Unikernel::ALL.into_iter().enumerate() {
            // The unikernel rows keep the taps and subnets they always had.
            assert_eq!(guest_index(unikernel.into()), Some(index), "{unikernel:?}");
        }
        for program in Platform::LINUX_PROGRAMS {
            assert!(rows.contains(&program), "{program}");
        }
        assert_eq!(guest_index(Platform::Process), None);
        assert_eq!(guest_index(Platform::QemuMicrovm), None);
    }
}
