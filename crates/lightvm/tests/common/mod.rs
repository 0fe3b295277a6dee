//! What every end-to-end test needs: the `lightvm` binary, guest images built by it
//! (once per test binary), and for the device tests network namespaces and VMs
//! running in the background.
//!
//! Every test that needs a network makes its own namespace (`lvm-test-<pid>-<n>`)
//! with a tap inside it at 10.0.0.1/24; the guest gets 10.0.0.2. Nothing touches the
//! host's interfaces, and all traffic stays inside the namespace. The namespace is
//! deleted when its guard drops, after the VMs in it are killed — on failure too.

// Each test binary uses its own subset of these helpers.
#![allow(dead_code)]

pub mod programs;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The binary under test.
pub const LIGHTVM: &str = env!("CARGO_BIN_EXE_lightvm");

/// The guest's address and the command line that gives it.
pub const GUEST_IP: &str = "10.0.0.2";
/// See [`GUEST_IP`].
pub const GUEST_CMDLINE: &str = "ip=10.0.0.2/24 gw=10.0.0.1";
/// The tap inside each test namespace.
pub const TAP: &str = "lvmtap0";

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The image of guest `name`, built through the real `lightvm build` the first time
/// a test of this binary asks for it.
pub fn image(name: &str) -> PathBuf {
    static BUILT: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let out = std::env::temp_dir()
        .join(format!("lightvm-e2e-{}", std::process::id()))
        .join(format!("{name}.elf"));
    let mut built = BUILT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if !built.iter().any(|b| b == name) {
        let output = Command::new(LIGHTVM)
            .arg("build")
            .arg(repo().join("guests").join(name))
            .arg("--out")
            .arg(&out)
            .output()
            .expect("run lightvm build");
        assert!(
            output.status.success(),
            "lightvm build {name} failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        built.push(name.to_owned());
    }
    out
}

/// Whether this process may make network namespaces (root with `ip`); the network
/// tests say so and pass vacuously where it may not.
pub fn can_use_netns() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let ip = Command::new("ip").arg("-V").output().is_ok();
    if !(root && ip) {
        eprintln!("skipping: network tests need root and iproute2 (ip)");
    }
    root && ip
}

fn run_ok(cmd: &mut Command) {
    let output = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        output.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A network namespace with a tap at 10.0.0.1/24, deleted on drop.
pub struct Netns {
    pub name: String,
    vms: Mutex<Vec<Arc<Mutex<Child>>>>,
}

impl Netns {
    pub fn new() -> Netns {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "lvm-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        run_ok(Command::new("ip").args(["netns", "add", &name]));
        // From here on the guard deletes the namespace, whatever fails next.
        let ns = Netns {
            name,
            vms: Mutex::new(Vec::new()),
        };
        ns.exec_ok(&["ip", "link", "set", "lo", "up"]);
        ns.exec_ok(&["ip", "tuntap", "add", "dev", TAP, "mode", "tap"]);
        ns.exec_ok(&["ip", "addr", "add", "10.0.0.1/24", "dev", TAP]);
        ns.exec_ok(&["ip", "link", "set", TAP, "up"]);
        ns
    }

    /// `ip netns exec NAME args…` as a command to finish building.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).args(args);
        cmd
    }

    pub fn exec(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("ip netns exec")
    }

    pub fn exec_ok(&self, args: &[&str]) {
        run_ok(&mut self.command(args));
    }

    /// Starts `lightvm run --platform PLATFORM IMAGE --net tap=TAP --cmdline
    /// GUEST_CMDLINE extra…` in the namespace and waits until its console prints
    /// `ready`.
    pub fn start_vm(
        &self,
        platform: lightvm_vmm::Platform,
        image: &Path,
        extra_cmdline: &str,
        ready: &str,
    ) -> Vm {
        let cmdline = format!("{GUEST_CMDLINE} {extra_cmdline}");
        let mut cmd = self.command(&[
            LIGHTVM,
            "run",
            "--platform",
            platform.name(),
            image.to_str().expect("utf-8 path"),
            "--mem",
            "64M",
            "--timeout",
            "120s",
            "--net",
            &format!("tap={TAP}"),
            "--cmdline",
            &cmdline,
        ]);
        let vm = Vm::spawn(&mut cmd);
        self.vms.lock().unwrap().push(vm.child.clone());
        vm.wait_for(ready, Duration::from_secs(20));
        vm
    }

    /// Runs `f` on a thread that has entered the namespace, so the sockets it opens
    /// live there.
    pub fn run_inside<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/var/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let ns = std::fs::File::open(&path).expect("open the namespace");
            use std::os::fd::AsRawFd;
            // SAFETY: setns on a namespace descriptor we hold; it changes only this
            // thread's network namespace (and that of threads it creates).
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .expect("the thread inside the namespace panicked")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for vm in self.vms.lock().unwrap().iter() {
            let mut child = vm.lock().unwrap();
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// The VM process of the `lightvm run` with pid `supervisor`: the jail runs the
/// VM in a child of the command's process, which supervises it.
pub fn vm_process(supervisor: u32) -> u32 {
    let children = format!("/proc/{supervisor}/task/{supervisor}/children");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(&children).unwrap_or_default();
        if let Some(pid) = text.split_whitespace().next().and_then(|p| p.parse().ok()) {
            return pid;
        }
        assert!(
            Instant::now() < deadline,
            "lightvm run {supervisor} has no VM process"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A `lightvm run` in the background, its stdout read line by line.
pub struct Vm {
    pub child: Arc<Mutex<Child>>,
    lines: Receiver<String>,
    seen: Mutex<Vec<String>>,
}

impl Vm {
    pub fn spawn(cmd: &mut Command) -> Vm {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn lightvm");
        let (tx, rx) = mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        Vm {
            child: Arc::new(Mutex::new(child)),
            lines: rx,
            seen: Mutex::new(Vec::new()),
        }
    }

    /// Waits for a console line containing `text`; panics with what was seen after
    /// `timeout`.
    pub fn wait_for(&self, text: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.lock().unwrap().push(line.clone());
                    if line.contains(text) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no {text:?} from the VM within {timeout:?}; it printed:\n{}",
                    self.seen.lock().unwrap().join("\n")
                ),
            }
        }
    }

    /// Waits for the VMM to exit; its exit code and everything it printed.
    pub fn wait(&self, timeout: Duration) -> (Option<i32>, String) {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self.child.lock().unwrap().try_wait().expect("wait") {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "the VM did not exit within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        // The reader threads end at EOF; give them a moment to hand over the rest.
        while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200)) {
            self.seen.lock().unwrap().push(line);
        }
        (status.code(), self.seen.lock().unwrap().join("\n"))
    }

    pub fn kill(&self) {
        let mut child = self.child.lock().unwrap();
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The VMM handled the situation: no Rust panic of its own.
pub fn assert_no_vmm_panic(output: &str) {
    assert!(
        !output.contains("panicked at") || output.contains("guest"),
        "the VMM panicked:\n{output}"
    );
    assert!(
        !output.contains("RUST_BACKTRACE"),
        "the VMM panicked:\n{output}"
    );
}
