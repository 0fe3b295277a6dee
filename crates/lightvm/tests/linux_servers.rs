//! End-to-end: Debian's own dynamically linked servers — nginx (nginx-light),
//! redis-server and iperf3 — unmodified, from a root filesystem `lightvm rootfs`
//! made of them, their libraries and their configuration, serve clients over a
//! tap, on every platform the host has. The clients are Debian's own too (curl,
//! redis-cli, iperf3), run inside the test's network namespace.

mod common;

use std::time::{Duration, Instant};

use common::programs::Rootfs;
use common::{can_use_netns, Netns, GUEST_IP};
use lightvm_vmm::Platform;

/// Runs `args` in `netns` until it succeeds or `timeout` passes; its stdout.
fn until_it_answers(netns: &Netns, args: &[&str], timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let output = netns.exec(args);
        if output.status.success() {
            return String::from_utf8_lossy(&output.stdout).into_owned();
        }
        assert!(
            Instant::now() < deadline,
            "{args:?} got no answer within {timeout:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

const NGINX_CONF: &str = "daemon off;
master_process off;
worker_processes 1;
error_log stderr notice;
pid /tmp/nginx.pid;
events { worker_connections 256; }
http {
    include /etc/nginx/mime.types;
    access_log off;
    sendfile on;
    server {
        listen 80;
        root /srv/www;
    }
}
";

fn nginx_serves_its_page_to_curl(platform: Platform) {
    if !can_use_netns() {
        return;
    }
    let root = Rootfs::of_host_programs(
        &format!("nginx-{}", platform.name()),
        &["/usr/sbin/nginx"],
        &["/etc/nginx/mime.types"],
    );
    std::fs::write(root.dir.join("etc/nginx/nginx.conf"), NGINX_CONF).unwrap();
    let page = "<h1>served by nginx in a lightvm unikernel</h1>\n".repeat(100);
    std::fs::create_dir_all(root.dir.join("srv/www")).unwrap();
    std::fs::write(root.dir.join("srv/www/index.html"), &page).unwrap();
    for dir in ["var/lib/nginx", "var/log/nginx", "run"] {
        std::fs::create_dir_all(root.dir.join(dir)).unwrap();
    }
    let netns = Netns::new();
    let _vm = netns.spawn(&mut root.command(
        Some(&netns),
        platform,
        &[],
        "/usr/sbin/nginx",
        &["-c", "/etc/nginx/nginx.conf"],
    ));
    let url = format!("http://{GUEST_IP}/index.html");
    let body = until_it_answers(
        &netns,
        &["curl", "-sf", "--max-time", "5", &url],
        Duration::from_secs(60),
    );
    assert_eq!(body, page);
    // A page that is not there is nginx's 404, not a dead server.
    let missing = format!("http://{GUEST_IP}/missing");
    let code = netns.exec(&[
        "curl",
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &missing,
    ]);
    assert_eq!(String::from_utf8_lossy(&code.stdout), "404");
}

fn redis_answers_set_and_get_from_redis_cli(platform: Platform) {
    if !can_use_netns() {
        return;
    }
    let root = Rootfs::of_host_programs(
        &format!("redis-{}", platform.name()),
        &["/usr/bin/redis-server"],
        &[],
    );
    let netns = Netns::new();
    let vm = netns.spawn(&mut root.command(
        Some(&netns),
        platform,
        &[],
        "/usr/bin/redis-server",
        &[
            "--bind",
            "0.0.0.0",
            "--port",
            "6379",
            "--protected-mode",
            "no",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
        ],
    ));
    vm.wait_for("Ready to accept connections", Duration::from_secs(60));
    let cli = |args: &[&str]| {
        let mut all = vec!["redis-cli", "-h", GUEST_IP, "-p", "6379"];
        all.extend_from_slice(args);
        let output = netns.exec(&all);
        assert!(output.status.success(), "{args:?}: {output:?}");
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    };
    assert_eq!(cli(&["SET", "unikernel", "lightvm"]), "OK");
    assert_eq!(cli(&["GET", "unikernel"]), "lightvm");
    assert_eq!(cli(&["INCR", "counter"]), "1");
    assert_eq!(cli(&["INCR", "counter"]), "2");
    assert_eq!(cli(&["DBSIZE"]), "2");
}

fn iperf3_completes_a_run_against_the_host_client(platform: Platform) {
    if !can_use_netns() {
        return;
    }
    let root = Rootfs::of_host_programs(
        &format!("iperf3-{}", platform.name()),
        &["/usr/bin/iperf3"],
        &[],
    );
    let netns = Netns::new();
    let vm = netns.spawn(&mut root.command(
        Some(&netns),
        platform,
        &[],
        "/usr/bin/iperf3",
        &["-s", "-1"],
    ));
    vm.wait_for("Server listening on 5201", Duration::from_secs(60));
    let output = netns.exec(&["iperf3", "-c", GUEST_IP, "-t", "2", "-J"]);
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "iperf3 -c failed: {report}");
    let json: serde_json::Value = serde_json::from_str(&report).expect("iperf3's JSON report");
    let received = json["end"]["sum_received"]["bytes"].as_u64().unwrap_or(0);
    assert!(received > 0, "nothing received: {report}");
    // The one-off server ends after its one test, and the VM with it.
    let (code, _) = vm.wait(Duration::from_secs(30));
    assert_eq!(code, Some(0));
}

lightvm_testkit::platform_tests!(
    lightvm_vmm::Platform;
    nginx_serves_its_page_to_curl,
    redis_answers_set_and_get_from_redis_cli,
    iperf3_completes_a_run_against_the_host_client,
);
