//! Network suites: UDP/TCP round-trip time and TCP throughput (net), and HTTP
//! requests/s and latency over a sweep of load (http).
//!
//! They need unikernel networking: the guests `udp-echo`, `tcp-echo`, `sink` and
//! `httpd`, and `lightvm run IMAGE --net tap=NAME` with the guest addressed by its
//! command line (`ip=10.0.0.2/24 gw=10.0.0.1`). The measured path is always inside
//! a network namespace of the run (`ip netns add`), with the tap and every address
//! in it, deleted afterwards: nothing touches the host's interfaces. Until those
//! pieces are in the build, the suites say which are missing and are skipped —
//! never estimated.

use crate::context::Context;
use crate::platform::which;
use crate::results::SuiteResult;

/// The guests each suite needs.
const NET_GUESTS: [&str; 3] = ["udp-echo", "tcp-echo", "sink"];
const HTTP_GUESTS: [&str; 1] = ["httpd"];

/// Everything that is missing for a network suite, as one sentence; `None` if
/// nothing is.
fn missing(ctx: &Context<'_>, guests: &[&str], tools: &[(&str, &str)]) -> Option<String> {
    let mut missing = Vec::new();
    if !ctx.config.net.run_has_net_flag {
        missing.push("`lightvm run --net tap=NAME` (not in this build: unikernel networking is being added on another branch)".to_owned());
    }
    for guest in guests {
        if !ctx.config.net.guests.iter().any(|g| g == guest) {
            missing.push(format!("the guests/{guest} unikernel"));
        }
    }
    for (tool, package) in tools {
        if which(tool).is_none() {
            missing.push(format!("{tool} (apt-get install {package})"));
        }
    }
    (!missing.is_empty()).then(|| format!("needs {}", missing.join(", ")))
}

pub(super) fn run_net(ctx: &mut Context<'_>) -> SuiteResult {
    let mut result = super::suite(
        "UDP and TCP round-trip time (one request in flight, ping-pong of 64-byte messages to an echo server) and TCP throughput (one stream into a discard server), each platform's server reached through the same kind of path: a tap (unikernels) or a veth pair (process) inside a network namespace created and deleted by the run.",
    );
    result.skipped_reason = missing(ctx, &NET_GUESTS, &[("ip", "iproute2")]).or_else(|| {
        Some("the networking pieces are present, but this build's net driver is not written yet: nothing is measured rather than something estimated".to_owned())
    });
    result
}

pub(super) fn run_http(ctx: &mut Context<'_>) -> SuiteResult {
    let mut result = super::suite(
        "HTTP/1.1 keep-alive GETs of a small fixed body, driven by wrk at an increasing number of connections until the rate stops growing; requests/s and latency percentiles at each step. Servers: the httpd unikernel on a tap, and a host process on a veth pair, both inside a network namespace of the run.",
    );
    result.skipped_reason = missing(ctx, &HTTP_GUESTS, &[("ip", "iproute2"), ("wrk", "wrk")]).or_else(|| {
        Some("the networking pieces are present, but this build's http driver is not written yet: nothing is measured rather than something estimated".to_owned())
    });
    result
}
