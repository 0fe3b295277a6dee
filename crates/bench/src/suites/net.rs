//! Network suites: UDP/TCP round-trip time and TCP throughput (net), and HTTP
//! requests/s and latency over a sweep of load (http).
//!
//! Each platform's server runs at once on the run's private network
//! ([`crate::netns`]): the unikernels and the Linux programs behind a tap each,
//! the process and the container behind veth pairs, one link away from the
//! clients each. The clients interleave
//! their rounds over the platforms, so that noise on the machine lands on all of
//! them alike. Each pooled row's VMs come from a daemon of its own (one per lightvm
//! platform), run inside the clients' namespace so that its shells can open their
//! tap.

use std::collections::BTreeMap;
use std::net::{SocketAddr, SocketAddrV4};

use crate::context::{Context, Instance};
use crate::netclient::{self, Round, WrkReport};
use crate::netns::Testbed;
use crate::platform::{which, Platform, Workload};
use crate::results::{Metric, PlotKind, Skip, SuiteResult};

/// Size of the round-trip messages (bytes): a small request, as the papers use.
const MESSAGE: usize = 64;

/// Platforms that have no place on the test network, and why.
fn off_the_network(platform: Platform) -> Option<String> {
    Testbed::address(platform)
        .is_none()
        .then(|| format!("{platform} has no server on the test network"))
}

/// Why the suite cannot run at all here, or the test network. `tools` are the
/// programs it needs (a name on `PATH` or an absolute path) and the Debian
/// package of each.
pub(super) fn testbed(tools: &[(&str, &str)]) -> Result<Testbed, String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err(
            "needs root to create its network namespaces, tap and veth pairs: run the bench as root"
                .to_owned(),
        );
    }
    let missing: Vec<String> = tools
        .iter()
        .filter(|(tool, _)| {
            let path = std::path::Path::new(tool);
            if path.is_absolute() {
                !crate::platform::is_executable(path)
            } else {
                which(tool).is_none()
            }
        })
        .map(|(tool, package)| format!("{tool} (apt-get install {package}, or ./scripts/setup.sh)"))
        .collect();
    if !missing.is_empty() {
        return Err(format!("needs {}", missing.join(", ")));
    }
    Testbed::create().map_err(|e| format!("cannot build the test network: {e}"))
}

/// One platform's server, running.
pub(super) struct Server {
    pub platform: Platform,
    pub address: SocketAddr,
    pub instance: Instance,
}

/// Starts `workload`'s server on every platform that can run it; the others are
/// added to `skipped` with the reason.
pub(super) fn start_servers(
    ctx: &mut Context<'_>,
    testbed: &Testbed,
    workload: Workload,
    skipped: &mut Vec<Skip>,
) -> Vec<Server> {
    let (platforms, plan_skips) = ctx.plan(workload, &off_the_network);
    for skip in plan_skips {
        add_skip(skipped, skip);
    }
    let mut servers = Vec::new();
    for platform in platforms {
        let (Some(address), Some(attachment)) =
            (Testbed::address(platform), testbed.attachment(platform))
        else {
            continue;
        };
        match ctx.start_attached(platform, workload, Some(&attachment)) {
            Ok(instance) => servers.push(Server {
                platform,
                address: SocketAddr::V4(SocketAddrV4::new(
                    address,
                    workload.port().unwrap_or_default(),
                )),
                instance,
            }),
            Err(error) => fail(ctx, skipped, platform, workload, error.to_string()),
        }
    }
    servers
}

pub(super) fn add_skip(skipped: &mut Vec<Skip>, skip: Skip) {
    if !skipped.iter().any(|s| s.platform == skip.platform) {
        skipped.push(skip);
    }
}

pub(super) fn fail(
    ctx: &Context<'_>,
    skipped: &mut Vec<Skip>,
    platform: Platform,
    workload: Workload,
    reason: String,
) {
    ctx.progress.note(&format!(
        "{}: {platform} failed, skipped: {reason}",
        workload.name()
    ));
    add_skip(
        skipped,
        Skip {
            platform,
            reason: format!("{} failed: {reason}", workload.name()),
        },
    );
}

pub(super) fn stop_all(ctx: &mut Context<'_>, servers: Vec<Server>) {
    for server in servers {
        ctx.stop(server.instance);
    }
}

/// What the rounds of one platform measured.
#[derive(Default)]
struct Measured {
    samples: Vec<f64>,
    /// Unanswered requests, one count per round.
    lost: Vec<f64>,
}

impl Measured {
    fn of(rounds: Vec<Round>) -> Self {
        let mut measured = Measured::default();
        for round in rounds {
            measured.samples.extend(round.samples);
            measured.lost.push(round.lost as f64);
        }
        measured
    }
}

/// `rounds` rounds, each measuring every server of `workload` once with
/// `measure` (run on a thread inside the clients' namespace); every round's
/// result, by platform, in order. A server whose round fails is stopped and
/// skipped; the others go on.
pub(super) fn interleaved<T: Send>(
    ctx: &mut Context<'_>,
    testbed: &Testbed,
    workload: Workload,
    rounds: usize,
    skipped: &mut Vec<Skip>,
    measure: &(dyn Fn(SocketAddr) -> Result<T, String> + Sync),
) -> BTreeMap<Platform, Vec<T>> {
    let mut servers = start_servers(ctx, testbed, workload, skipped);
    let mut measured: BTreeMap<Platform, Vec<T>> = BTreeMap::new();
    for _ in 0..rounds {
        let mut index = 0;
        while index < servers.len() {
            let address = servers[index].address;
            let round = match testbed.clients.run_in(|| measure(address)) {
                Ok(result) => result,
                Err(error) => Err(error.to_string()),
            };
            ctx.progress.advance();
            match round {
                Ok(round) => {
                    measured
                        .entry(servers[index].platform)
                        .or_default()
                        .push(round);
                    index += 1;
                }
                Err(reason) => {
                    let server = servers.remove(index);
                    measured.remove(&server.platform);
                    fail(ctx, skipped, server.platform, workload, reason);
                    ctx.stop(server.instance);
                }
            }
        }
    }
    stop_all(ctx, servers);
    measured
}

pub(super) fn run_net(ctx: &mut Context<'_>) -> SuiteResult {
    let params = ctx.config.net.clone();
    let mut result = super::suite(&format!(
        "Each platform's server runs on a private network made for the run: network namespaces holding a tap for each guest row (each unikernel row: `lightvm run --platform P`, and per lightvm platform P a daemon whose pool holds shells of the guest's size; each linux-program row: `lightvm run --platform P --rootfs`; all run in the clients' namespace) and a veth pair each for the process and for the container (runc joins the namespace), every server one virtual link from the clients, deleted afterwards. Clients run in the bench itself, on a thread inside that network, and interleave {rounds} rounds over the platforms. UDP and TCP round trip: {MESSAGE}-byte echo requests (udp-echo, tcp-echo; RFC 862), one in flight, {per} per platform, each timed (warm-up trips first). TCP throughput: {mib} MiB into a discard server (sink; RFC 863) on a new connection, timed until the server closes after reading everything, {transfers} transfers per platform. Servers: the unikernels (smoltcp in the guest, packets through rings in guest memory, one exit per batch) and the same work as one-threaded epoll C servers (crates/bench/baselines), static binaries that the process and the container run and that the linux-program rows run unmodified on the Linux personality (its sockets over the same smoltcp and rings, the program's system calls answered inside the guest).",
        rounds = params.rounds,
        per = params.round_trips,
        mib = params.transfer_mib,
        transfers = params.transfers,
    ));
    let testbed = match testbed(&[("ip", "iproute2")]) {
        Ok(testbed) => testbed,
        Err(reason) => {
            result.skipped_reason = Some(reason);
            return result;
        }
    };
    let rounds = params.rounds.max(1);
    let per_round = params.round_trips.div_ceil(rounds).max(1);
    ctx.progress.stage(
        "net",
        ((2 * rounds + params.transfers) * Testbed::platforms().len()) as u64,
    );
    let mut skipped = Vec::new();

    let mut udp = Metric::new(
        "net-udp-rtt",
        "UDP echo round trip (64 B)",
        "us",
        PlotKind::Bars,
        true,
    );
    let udp_samples = interleaved(
        ctx,
        &testbed,
        Workload::UdpEcho,
        rounds,
        &mut skipped,
        &|address| {
            netclient::udp_round_trips(address, per_round, MESSAGE).map_err(|e| e.to_string())
        },
    );
    let mut tcp = Metric::new(
        "net-tcp-rtt",
        "TCP echo round trip (64 B)",
        "us",
        PlotKind::Bars,
        true,
    );
    let tcp_samples = interleaved(
        ctx,
        &testbed,
        Workload::TcpEcho,
        rounds,
        &mut skipped,
        &|address| {
            netclient::tcp_round_trips(address, per_round, MESSAGE)
                .map(|samples| Round { samples, lost: 0 })
                .map_err(|e| e.to_string())
        },
    );
    let mut throughput = Metric::new(
        "net-tcp-throughput",
        "TCP throughput into a discard server",
        "MB/s",
        PlotKind::Bars,
        false,
    );
    let mib = params.transfer_mib.max(1);
    let throughput_samples = interleaved(
        ctx,
        &testbed,
        Workload::Sink,
        params.transfers.max(1),
        &mut skipped,
        &|address| {
            netclient::tcp_send(address, mib)
                .map(|rate| Round {
                    samples: vec![rate],
                    lost: 0,
                })
                .map_err(|e| e.to_string())
        },
    );
    let mut udp_lost = Metric {
        headline: false,
        ..Metric::new(
            "net-udp-lost",
            &format!("UDP echo requests without an echo, per round of {per_round}"),
            "datagrams",
            PlotKind::Bars,
            true,
        )
    };
    for (platform, rounds) in udp_samples {
        let measured = Measured::of(rounds);
        udp_lost.push(platform, measured.lost, None);
        udp.push(platform, measured.samples, None);
    }
    for (metric, rounds) in [
        (&mut tcp, tcp_samples),
        (&mut throughput, throughput_samples),
    ] {
        for (platform, rounds) in rounds {
            metric.push(platform, Measured::of(rounds).samples, None);
        }
    }
    ctx.leave_network();
    result.skipped = skipped;
    result.metrics = vec![udp, tcp, throughput, udp_lost];
    result
}

/// Where a platform stands in the HTTP sweep.
#[derive(Default)]
struct Sweep {
    connections: Vec<f64>,
    rate: Vec<f64>,
    p50_us: Vec<f64>,
    p99_us: Vec<f64>,
    /// The best rate so far and the connections that gave it.
    best: Option<(f64, usize)>,
    /// Steps in a row that did not beat the best by [`GROWTH`].
    flat_steps: usize,
}

/// A step that does not raise the best rate by this factor adds no throughput.
const GROWTH: f64 = 1.05;
/// Steps in a row without growth after which a platform is saturated.
const SATURATED_AFTER: usize = 2;

impl Sweep {
    fn record(&mut self, connections: usize, report: WrkReport) {
        self.connections.push(connections as f64);
        self.rate.push(report.requests_per_s);
        self.p50_us.push(report.p50_us);
        self.p99_us.push(report.p99_us);
        match self.best {
            Some((best, _)) if report.requests_per_s < best * GROWTH => {
                self.flat_steps += 1;
                if report.requests_per_s > best {
                    self.best = Some((report.requests_per_s, connections));
                }
            }
            _ => {
                self.best = Some((report.requests_per_s, connections));
                self.flat_steps = 0;
            }
        }
    }

    fn saturated(&self) -> bool {
        self.flat_steps >= SATURATED_AFTER
    }
}

/// One wrk run from the clients' namespace.
fn wrk(
    testbed: &Testbed,
    address: SocketAddr,
    connections: usize,
    seconds: u32,
) -> Result<WrkReport, String> {
    testbed
        .clients
        .run_in(|| netclient::wrk(address, connections, seconds))
        .map_err(|e| e.to_string())?
}

pub(super) fn run_http(ctx: &mut Context<'_>) -> SuiteResult {
    let params = ctx.config.net.clone();
    let mut result = super::suite(&format!(
        "HTTP/1.1 keep-alive GETs of the same 32-byte body, driven by wrk (one thread, closed loop) from the clients' namespace of the net suite's private network, {seconds} s per step, at {steps} open connections in turn — the offered load — until no platform's rate grows by 5% for two steps (saturation). Every step measures each platform in turn. Servers: the httpd unikernel (one vCPU, smoltcp) on each unikernel row and a one-threaded epoll C server (static) for the process and the container, the same binary unmodified on the Linux personality for the linux-program rows. The peak is the rate at the best step's connections, measured again {repeats} times (with no repeats, the best step's own rate).",
        seconds = params.http_seconds,
        steps = params
            .http_connections
            .iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        repeats = params.http_repeats,
    ));
    let testbed = match testbed(&[("ip", "iproute2"), ("wrk", "wrk")]) {
        Ok(testbed) => testbed,
        Err(reason) => {
            result.skipped_reason = Some(reason);
            return result;
        }
    };
    let mut skipped = Vec::new();
    let mut servers = start_servers(ctx, &testbed, Workload::Httpd, &mut skipped);
    ctx.progress.stage(
        "http",
        (servers.len() * (params.http_connections.len() + params.http_repeats + 1)) as u64,
    );
    // Warm-up: connections, ARP, the servers' first requests.
    let mut index = 0;
    while index < servers.len() {
        let warm = wrk(&testbed, servers[index].address, 8, 1);
        ctx.progress.advance();
        match warm {
            Ok(_) => index += 1,
            Err(reason) => {
                let server = servers.remove(index);
                fail(ctx, &mut skipped, server.platform, Workload::Httpd, reason);
                ctx.stop(server.instance);
            }
        }
    }
    let mut sweeps: BTreeMap<Platform, Sweep> = servers
        .iter()
        .map(|s| (s.platform, Sweep::default()))
        .collect();
    for &connections in &params.http_connections {
        let mut index = 0;
        while index < servers.len() {
            let server = &servers[index];
            let step = wrk(&testbed, server.address, connections, params.http_seconds);
            ctx.progress.advance();
            match step {
                Ok(report) => {
                    if report.errors > 0 {
                        ctx.progress.note(&format!(
                            "http: {} had {} errors at {connections} connections",
                            server.platform, report.errors
                        ));
                    }
                    if let Some(sweep) = sweeps.get_mut(&server.platform) {
                        sweep.record(connections, report);
                    }
                    index += 1;
                }
                Err(reason) => {
                    let server = servers.remove(index);
                    sweeps.remove(&server.platform);
                    fail(ctx, &mut skipped, server.platform, Workload::Httpd, reason);
                    ctx.stop(server.instance);
                }
            }
        }
        if sweeps.values().all(Sweep::saturated) {
            break;
        }
    }
    // The best step is the maximum of noisy steps: with repeats, the peak is their
    // measurements alone, at that step's connections.
    let mut peaks: BTreeMap<Platform, Vec<f64>> = BTreeMap::new();
    for _ in 0..params.http_repeats {
        for server in &servers {
            let Some((_, connections)) = sweeps.get(&server.platform).and_then(|s| s.best) else {
                continue;
            };
            let again = wrk(&testbed, server.address, connections, params.http_seconds);
            ctx.progress.advance();
            match again {
                Ok(report) => peaks
                    .entry(server.platform)
                    .or_default()
                    .push(report.requests_per_s),
                Err(reason) => ctx.progress.note(&format!(
                    "http: {} repeat failed: {reason}",
                    server.platform
                )),
            }
        }
    }
    if params.http_repeats == 0 {
        peaks = sweeps
            .iter()
            .filter_map(|(p, s)| Some((*p, vec![s.best?.0])))
            .collect();
    }
    stop_all(ctx, servers);
    ctx.leave_network();

    let sweep = |id: &str, title: &str, unit: &str, plot: PlotKind, lower_is_better: bool| Metric {
        plot,
        lower_is_better,
        headline: false,
        ..Metric::lines(id, title, unit, "open connections (wrk, one thread)")
    };
    let mut rate = sweep(
        "http-rate",
        "HTTP requests/s by offered load",
        "req/s",
        PlotKind::Sweep,
        false,
    );
    let mut p50 = sweep(
        "http-latency-p50",
        "HTTP median latency by offered load",
        "us",
        PlotKind::LogSweep,
        true,
    );
    let mut p99 = sweep(
        "http-latency-p99",
        "HTTP 99th-percentile latency by offered load",
        "us",
        PlotKind::LogSweep,
        true,
    );
    let mut peak = Metric::new(
        "http-peak-rate",
        "HTTP requests/s at saturation (at the sweep's best step)",
        "req/s",
        PlotKind::Bars,
        false,
    );
    for (platform, sweep) in sweeps {
        rate.push(platform, sweep.rate, Some(sweep.connections.clone()));
        p50.push(platform, sweep.p50_us, Some(sweep.connections.clone()));
        p99.push(platform, sweep.p99_us, Some(sweep.connections));
        if let Some(samples) = peaks.remove(&platform) {
            peak.push(platform, samples, None);
        }
    }
    result.skipped = skipped;
    result.metrics = vec![peak, rate, p50, p99];
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(rate: f64) -> WrkReport {
        WrkReport {
            requests_per_s: rate,
            p50_us: 10.0,
            p99_us: 20.0,
            errors: 0,
        }
    }

    #[test]
    fn a_sweep_is_saturated_after_two_steps_without_growth() {
        let mut sweep = Sweep::default();
        sweep.record(1, report(100.0));
        sweep.record(2, report(180.0));
        assert!(!sweep.saturated());
        sweep.record(4, report(185.0));
        assert!(!sweep.saturated(), "one flat step");
        sweep.record(8, report(170.0));
        assert!(sweep.saturated());
        assert_eq!(sweep.best, Some((185.0, 4)), "the best step, even if flat");
        assert_eq!(sweep.connections, [1.0, 2.0, 4.0, 8.0]);
    }

    #[test]
    fn growth_resets_saturation() {
        let mut sweep = Sweep::default();
        sweep.record(1, report(100.0));
        sweep.record(2, report(101.0));
        sweep.record(4, report(200.0));
        assert!(!sweep.saturated());
        assert_eq!(sweep.best, Some((200.0, 4)));
    }

    #[test]
    fn only_platforms_with_a_server_address_are_on_the_network() {
        assert!(off_the_network(Platform::Process).is_none());
        assert!(off_the_network(Platform::Container).is_none());
        for unikernel in crate::platform::Unikernel::ALL {
            assert!(off_the_network(unikernel.into()).is_none(), "{unikernel:?}");
        }
        for program in Platform::LINUX_PROGRAMS {
            assert!(off_the_network(program).is_none(), "{program}");
        }
        assert!(off_the_network(Platform::QemuMicrovm).is_some());
    }
}
