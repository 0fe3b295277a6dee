//! Apps: Debian's own servers, unmodified — nginx under wrk, redis-server under
//! redis-benchmark, iperf3 — measured as the host's process (the baseline), in
//! a container, and as Linux programs on the personality on each lightvm
//! platform, on the net suite's private network ([`crate::netns`]), with the
//! same configuration everywhere ([`crate::apps`]).
//!
//! Each program's servers run at once; the clients' tools run in the clients'
//! namespace and interleave their rounds over the platforms, one warm-up round
//! first.

use std::collections::BTreeMap;

use super::net;
use crate::apps::{IPERF3, NGINX, REDIS};
use crate::context::Context;
use crate::netclient::{self, RedisReport, WrkReport};
use crate::netns::Testbed;
use crate::platform::{Platform, Workload};
use crate::results::{Metric, PlotKind, SuiteResult};

/// Rounds of each program that are not recorded: connections, ARP, the
/// servers' first requests (and, for a Linux program, its code's first runs).
const WARMUP_ROUNDS: usize = 1;

/// The redis-benchmark tests, as they name them, and their metrics' ids.
const REDIS_TESTS: [(&str, &str, &str); 2] = [
    ("SET", "apps-redis-set", "apps-redis-set-p50"),
    ("GET", "apps-redis-get", "apps-redis-get-p50"),
];

pub(super) fn run(ctx: &mut Context<'_>) -> SuiteResult {
    let params = ctx.config.net.clone();
    let mut result = super::suite(&format!(
        "Debian's own servers, unmodified and dynamically linked, as their packages install them: nginx-light ({nginx}), redis-server ({redis}) and iperf3 ({iperf3}). The same program with the same configuration runs as the host's process (the baseline, in the server namespace of the net suite's private network), in a runc container (the program's root filesystem — the program, its loader and libraries, its configuration, made as `lightvm rootfs` makes one — read-only, with tmpfs on /run and /tmp) and as a Linux program on the personality (`lightvm run --platform P --rootfs ROOT PROGRAM -- ARGS`, that root packed into the VM, behind a tap like the unikernels). nginx: one process (`master_process off`), sendfile, a {page}-byte static page; wrk (one thread) keeps {connections} connections open for {seconds} s: requests/s and its p50 and p99 latency. redis-server: no persistence; `redis-benchmark -t set,get -n {requests} -c {clients}`: requests/s of SET and GET and their median latency. iperf3: one TCP stream for {iperf3_seconds} s from the clients to the server, then from the server (-R): the receiver's rate. The clients run in the clients' namespace and interleave {warmup} warm-up and {rounds} measured rounds over the platforms; the figure is the median of the rounds. lightvm's unikernels are libos applications: these programs have no unikernel rows.",
        nginx = NGINX.program,
        redis = REDIS.program,
        iperf3 = IPERF3.program,
        page = crate::apps::NGINX_PAGE.len(),
        connections = params.nginx_connections,
        seconds = params.nginx_seconds,
        requests = params.redis_requests,
        clients = params.redis_clients,
        iperf3_seconds = params.iperf3_seconds,
        warmup = WARMUP_ROUNDS,
        rounds = params.app_rounds,
    ));
    let testbed = match net::testbed(&[
        ("ip", "iproute2"),
        ("wrk", "wrk"),
        (NGINX.program, NGINX.package),
        (REDIS.program, REDIS.package),
        ("redis-benchmark", "redis-tools"),
        (IPERF3.program, IPERF3.package),
    ]) {
        Ok(testbed) => testbed,
        Err(reason) => {
            result.skipped_reason = Some(reason);
            return result;
        }
    };
    let rounds = WARMUP_ROUNDS + params.app_rounds.max(1);
    ctx.progress
        .stage("apps", (3 * rounds * Testbed::platforms().len()) as u64);
    let mut skipped = Vec::new();

    let (connections, seconds) = (params.nginx_connections, params.nginx_seconds);
    let nginx = net::interleaved(
        ctx,
        &testbed,
        Workload::Nginx,
        rounds,
        &mut skipped,
        &|address| netclient::wrk(address, connections, seconds),
    );
    let (requests, clients) = (params.redis_requests, params.redis_clients);
    let redis = net::interleaved(
        ctx,
        &testbed,
        Workload::Redis,
        rounds,
        &mut skipped,
        &|address| {
            let reports = netclient::redis_benchmark(address, requests, clients)?;
            REDIS_TESTS
                .iter()
                .map(|(test, _, _)| {
                    reports
                        .iter()
                        .find(|(name, _)| name == test)
                        .map(|(_, report)| *report)
                        .ok_or_else(|| format!("redis-benchmark reported no {test}: {reports:?}"))
                })
                .collect::<Result<Vec<RedisReport>, String>>()
        },
    );
    let iperf3_seconds = params.iperf3_seconds;
    let iperf3 = net::interleaved(
        ctx,
        &testbed,
        Workload::Iperf3,
        rounds,
        &mut skipped,
        &|address| {
            Ok([
                netclient::iperf3(address, iperf3_seconds, false)?,
                netclient::iperf3(address, iperf3_seconds, true)?,
            ])
        },
    );
    ctx.leave_network();

    for (platform, runs) in &nginx {
        let errors: u64 = runs.iter().map(|r| r.errors).sum();
        if errors > 0 {
            ctx.progress.note(&format!(
                "apps: nginx on {platform}: {errors} socket errors or non-2xx responses"
            ));
        }
    }
    result.skipped = skipped;
    result.metrics = nginx_metrics(nginx, connections);
    result.metrics.extend(redis_metrics(redis));
    result.metrics.extend(iperf3_metrics(iperf3));
    result
}

/// Each platform's measured rounds (the warm-up ones dropped), mapped by `value`.
fn measured<T>(
    rounds: &BTreeMap<Platform, Vec<T>>,
    value: impl Fn(&T) -> f64,
) -> Vec<(Platform, Vec<f64>)> {
    rounds
        .iter()
        .map(|(platform, runs)| {
            let values = runs.iter().skip(WARMUP_ROUNDS).map(&value).collect();
            (*platform, values)
        })
        .collect()
}

fn metric(
    id: &str,
    title: &str,
    unit: &str,
    lower_is_better: bool,
    series: Vec<(Platform, Vec<f64>)>,
) -> Metric {
    let plot = if lower_is_better {
        PlotKind::LogBars
    } else {
        PlotKind::Bars
    };
    let mut metric = Metric::new(id, title, unit, plot, lower_is_better);
    for (platform, samples) in series {
        metric.push(platform, samples, None);
    }
    metric
}

fn nginx_metrics(runs: BTreeMap<Platform, Vec<WrkReport>>, connections: usize) -> Vec<Metric> {
    vec![
        metric(
            "apps-nginx-rate",
            &format!("nginx requests/s (wrk, {connections} connections)"),
            "req/s",
            false,
            measured(&runs, |r| r.requests_per_s),
        ),
        metric(
            "apps-nginx-latency-p50",
            &format!("nginx median latency (wrk, {connections} connections)"),
            "us",
            true,
            measured(&runs, |r| r.p50_us),
        ),
        metric(
            "apps-nginx-latency-p99",
            &format!("nginx 99th-percentile latency (wrk, {connections} connections)"),
            "us",
            true,
            measured(&runs, |r| r.p99_us),
        ),
    ]
}

fn redis_metrics(runs: BTreeMap<Platform, Vec<Vec<RedisReport>>>) -> Vec<Metric> {
    let mut metrics = Vec::new();
    for (index, (test, rate_id, p50_id)) in REDIS_TESTS.iter().enumerate() {
        metrics.push(metric(
            rate_id,
            &format!("redis {test} requests/s (redis-benchmark)"),
            "req/s",
            false,
            measured(&runs, |r| r[index].requests_per_s),
        ));
        metrics.push(Metric {
            headline: false,
            ..metric(
                p50_id,
                &format!("redis {test} median latency (redis-benchmark)"),
                "us",
                true,
                measured(&runs, |r| r[index].p50_us),
            )
        });
    }
    metrics
}

fn iperf3_metrics(runs: BTreeMap<Platform, Vec<[f64; 2]>>) -> Vec<Metric> {
    vec![
        metric(
            "apps-iperf3-to-server",
            "iperf3 TCP throughput, clients to the server",
            "MB/s",
            false,
            measured(&runs, |r| r[0]),
        ),
        metric(
            "apps-iperf3-from-server",
            "iperf3 TCP throughput, the server to the clients (-R)",
            "MB/s",
            false,
            measured(&runs, |r| r[1]),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warm_up_rounds_are_dropped() {
        let rounds = BTreeMap::from([(Platform::Process, vec![1.0, 2.0, 3.0])]);
        assert_eq!(
            measured(&rounds, |v| *v * 10.0),
            [(Platform::Process, vec![20.0, 30.0])]
        );
    }

    #[test]
    fn redis_metrics_take_each_test_in_turn() {
        let report = |rate, p50| RedisReport {
            requests_per_s: rate,
            p50_us: p50,
        };
        let rounds = BTreeMap::from([(
            Platform::Process,
            vec![
                vec![report(1.0, 1.0), report(2.0, 2.0)],
                vec![report(10.0, 100.0), report(20.0, 200.0)],
            ],
        )]);
        let metrics = redis_metrics(rounds);
        let ids: Vec<&str> = metrics.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "apps-redis-set",
                "apps-redis-set-p50",
                "apps-redis-get",
                "apps-redis-get-p50"
            ]
        );
        assert_eq!(metrics[0].series[0].samples, [10.0]);
        assert_eq!(metrics[3].series[0].samples, [200.0]);
        assert!(metrics[0].headline && !metrics[1].headline);
    }
}
