//! The clients of the net, http and apps suites: round trips and bulk transfers
//! timed here, one sample each, and the reports of wrk, redis-benchmark and
//! iperf3 read back. They run on a thread inside the test network
//! ([`crate::netns::Netns::run_in`]); the tools they start inherit its network
//! namespace.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

/// Round trips sent before the timed ones on each new socket: ARP, the server's
/// first wake-up and the caches are not what is measured.
const WARM_UP_TRIPS: usize = 20;
/// How long one reply may take before the datagram counts as lost.
const REPLY_TIMEOUT: Duration = Duration::from_millis(200);
/// Lost datagrams after which the server is taken for dead.
const MAX_LOST: usize = 10;
/// How long a TCP read or write may make no progress before the server is taken
/// for stalled (a blocked write would otherwise hang the run).
const STALL_TIMEOUT: Duration = Duration::from_secs(10);

fn context(what: String) -> impl FnOnce(io::Error) -> io::Error {
    move |e| io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// What one client round measured.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Round {
    /// One sample per answered request: a round trip's time (µs), or a transfer's
    /// rate.
    pub samples: Vec<f64>,
    /// Timed requests that got no answer (UDP datagrams whose echo did not come
    /// back within [`REPLY_TIMEOUT`]).
    pub lost: usize,
}

/// `count` UDP echo round trips of `size`-byte datagrams (at least 8: each carries
/// its trip's number), one in flight. An echo that comes back after its trip gave
/// up is recognised by its number and dropped, so it is never taken for the echo
/// of a later trip.
pub(crate) fn udp_round_trips(server: SocketAddr, count: usize, size: usize) -> io::Result<Round> {
    let socket = UdpSocket::bind("0.0.0.0:0").map_err(context("bind".to_owned()))?;
    socket
        .connect(server)
        .map_err(context(format!("connect {server}")))?;
    socket.set_read_timeout(Some(REPLY_TIMEOUT))?;
    let mut message = vec![0x42u8; size.max(8)];
    let mut reply = vec![0u8; message.len()];
    let mut round = Round {
        samples: Vec::with_capacity(count),
        lost: 0,
    };
    let mut unanswered = 0;
    for trip in 0..WARM_UP_TRIPS + count {
        let number = (trip as u64).to_le_bytes();
        message[..8].copy_from_slice(&number);
        let start = Instant::now();
        socket
            .send(&message)
            .map_err(context(format!("send to {server}")))?;
        let answered = wait_for_echo(&socket, &mut reply, number, start);
        let timed = trip >= WARM_UP_TRIPS;
        match (answered, timed) {
            (true, true) => round.samples.push(micros(start)),
            (true, false) => {}
            (false, _) => {
                round.lost += usize::from(timed);
                unanswered += 1;
                if unanswered > MAX_LOST {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("{server}: {unanswered} datagrams got no echo"),
                    ));
                }
            }
        }
    }
    Ok(round)
}

/// Receives until the echo numbered `number` arrives (true) or the trip that
/// started at `start` has waited [`REPLY_TIMEOUT`] (false). The socket's read
/// timeout bounds each receive, so the usual case costs one `recv`.
fn wait_for_echo(socket: &UdpSocket, reply: &mut [u8], number: [u8; 8], start: Instant) -> bool {
    loop {
        match socket.recv(reply) {
            Ok(len) if len >= 8 && reply[..8] == number => return true,
            Ok(_) if start.elapsed() < REPLY_TIMEOUT => {}
            Ok(_) | Err(_) => return false,
        }
    }
}

/// `count` TCP echo round trips of `size` bytes on one new connection: each one's
/// time (µs).
pub(crate) fn tcp_round_trips(
    server: SocketAddr,
    count: usize,
    size: usize,
) -> io::Result<Vec<f64>> {
    let mut stream = connect(server)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(STALL_TIMEOUT))?;
    stream.set_write_timeout(Some(STALL_TIMEOUT))?;
    let message = vec![0x42u8; size];
    let mut reply = vec![0u8; size];
    let mut samples = Vec::with_capacity(count);
    for trip in 0..WARM_UP_TRIPS + count {
        let start = Instant::now();
        stream
            .write_all(&message)
            .map_err(context(format!("send to {server}")))?;
        stream
            .read_exact(&mut reply)
            .map_err(context(format!("echo from {server}")))?;
        if trip >= WARM_UP_TRIPS {
            samples.push(micros(start));
        }
    }
    Ok(samples)
}

/// Sends `mib` MiB to a discard server on a new connection and waits for it to
/// close (it does once it has read everything): MB/s over the whole transfer,
/// connection set-up included.
pub(crate) fn tcp_send(server: SocketAddr, mib: usize) -> io::Result<f64> {
    let chunk = vec![0x5au8; 1 << 20];
    let started = Instant::now();
    let mut stream = connect(server)?;
    stream.set_read_timeout(Some(STALL_TIMEOUT))?;
    stream.set_write_timeout(Some(STALL_TIMEOUT))?;
    for _ in 0..mib {
        stream
            .write_all(&chunk)
            .map_err(context(format!("send to {server}")))?;
    }
    stream.shutdown(Shutdown::Write)?;
    let mut rest = Vec::new();
    stream
        .read_to_end(&mut rest)
        .map_err(context(format!("waiting for {server} to close")))?;
    let bytes = (mib << 20) as f64;
    Ok(bytes / started.elapsed().as_secs_f64() / 1e6)
}

fn connect(server: SocketAddr) -> io::Result<TcpStream> {
    TcpStream::connect_timeout(&server, Duration::from_secs(5))
        .map_err(context(format!("connect {server}")))
}

fn micros(start: Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1e6
}

/// What one wrk run reports.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct WrkReport {
    /// Requests completed per second.
    pub requests_per_s: f64,
    /// Median latency (µs).
    pub p50_us: f64,
    /// 99th-percentile latency (µs).
    pub p99_us: f64,
    /// Socket errors and non-2xx responses together.
    pub errors: u64,
}

/// One wrk run (one thread, `connections` open, `seconds` long) against
/// `http://ADDRESS/`, from the calling thread's network namespace.
pub(crate) fn wrk(
    address: SocketAddr,
    connections: usize,
    seconds: u32,
) -> Result<WrkReport, String> {
    let output = Command::new("wrk")
        .args(["-t1", "--latency", "--timeout", "5s"])
        .arg(format!("-c{connections}"))
        .arg(format!("-d{seconds}s"))
        .arg(format!("http://{address}/"))
        .output()
        .map_err(|e| format!("running wrk: {e}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    match parse_wrk(&stdout) {
        // A server that accepts connections but never answers leaves wrk with
        // nothing measured (and latencies of 0): a failure, not a fast step.
        Some(report) if output.status.success() && report.requests_per_s > 0.0 => Ok(report),
        _ => Err(format!(
            "wrk -c{connections} failed ({}): {} {}",
            output.status,
            stdout.trim(),
            String::from_utf8_lossy(&output.stderr).trim()
        )),
    }
}

/// Reads `wrk --latency`'s report.
pub(crate) fn parse_wrk(report: &str) -> Option<WrkReport> {
    let mut requests_per_s = None;
    let mut p50_us = None;
    let mut p99_us = None;
    let mut errors = 0;
    for line in report.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Requests/sec:", rate] => requests_per_s = rate.parse().ok(),
            ["50%", latency] => p50_us = duration_us(latency),
            ["99%", latency] => p99_us = duration_us(latency),
            ["Non-2xx", "or", "3xx", "responses:", n] => errors += n.parse::<u64>().ok()?,
            ["Socket", "errors:", rest @ ..] => {
                errors += rest
                    .iter()
                    .filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok())
                    .sum::<u64>();
            }
            _ => {}
        }
    }
    Some(WrkReport {
        requests_per_s: requests_per_s?,
        p50_us: p50_us?,
        p99_us: p99_us?,
        errors,
    })
}

/// What one redis-benchmark test (`SET`, `GET` …) measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct RedisReport {
    /// Requests completed per second.
    pub requests_per_s: f64,
    /// Median latency (µs).
    pub p50_us: f64,
}

/// `redis-benchmark -t set,get -n REQUESTS -c CLIENTS --csv` against
/// `address`, from the calling thread's network namespace: each test's report
/// by its name (`SET`, `GET`).
pub(crate) fn redis_benchmark(
    address: SocketAddr,
    requests: usize,
    clients: usize,
) -> Result<Vec<(String, RedisReport)>, String> {
    let output = Command::new("redis-benchmark")
        .arg("-h")
        .arg(address.ip().to_string())
        .arg("-p")
        .arg(address.port().to_string())
        .args(["-t", "set,get", "--csv"])
        .arg("-n")
        .arg(requests.to_string())
        .arg("-c")
        .arg(clients.to_string())
        .output()
        .map_err(|e| format!("running redis-benchmark: {e}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let reports = parse_redis_csv(&stdout);
    if !output.status.success() || reports.is_empty() {
        return Err(format!(
            "redis-benchmark failed ({}): {} {}",
            output.status,
            stdout.trim(),
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(reports)
}

/// Reads `redis-benchmark --csv`: a header naming the columns, then a line per
/// test (`"SET","21739.13","2.143",…`).
pub(crate) fn parse_redis_csv(csv: &str) -> Vec<(String, RedisReport)> {
    let fields = |line: &str| -> Vec<String> {
        line.split(',')
            .map(|field| field.trim().trim_matches('"').to_owned())
            .collect()
    };
    let mut lines = csv.lines().filter(|line| line.starts_with('"'));
    let Some(header) = lines.next().map(fields) else {
        return Vec::new();
    };
    let column = |name: &str| header.iter().position(|h| h == name);
    let (Some(test), Some(rps), Some(p50)) =
        (column("test"), column("rps"), column("p50_latency_ms"))
    else {
        return Vec::new();
    };
    lines
        .filter_map(|line| {
            let values = fields(line);
            let number = |index: usize| values.get(index)?.parse::<f64>().ok();
            Some((
                values.get(test)?.clone(),
                RedisReport {
                    requests_per_s: number(rps)?,
                    p50_us: number(p50)? * 1e3,
                },
            ))
        })
        .collect()
}

/// One iperf3 test of `seconds` against the server at `address`, from the
/// calling thread's network namespace: the receiver's rate (MB/s), the client
/// sending or, with `reverse`, the server.
pub(crate) fn iperf3(address: SocketAddr, seconds: u32, reverse: bool) -> Result<f64, String> {
    let mut command = Command::new("iperf3");
    command
        .arg("-c")
        .arg(address.ip().to_string())
        .arg("-p")
        .arg(address.port().to_string())
        .arg("-t")
        .arg(seconds.to_string())
        .arg("-J");
    if reverse {
        command.arg("-R");
    }
    let output = command
        .output()
        .map_err(|e| format!("running iperf3: {e}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    match parse_iperf3(&stdout) {
        Ok(rate) if output.status.success() => Ok(rate),
        Ok(_) => Err(format!("iperf3 failed ({})", output.status)),
        Err(error) => Err(format!("iperf3 failed ({}): {error}", output.status)),
    }
}

/// The receiver's rate (MB/s) in `iperf3 -J`'s report, or its error.
pub(crate) fn parse_iperf3(json: &str) -> Result<f64, String> {
    let report: serde_json::Value =
        serde_json::from_str(json).map_err(|e| format!("its report is not JSON: {e}"))?;
    if let Some(error) = report["error"].as_str() {
        return Err(error.to_owned());
    }
    report["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .filter(|bits| *bits > 0.0)
        .map(|bits| bits / 8.0 / 1e6)
        .ok_or_else(|| "its report has no received rate".to_owned())
}

/// wrk's durations: `42.00us`, `1.23ms`, `2.00s`, `1.50m`.
fn duration_us(text: &str) -> Option<f64> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().ok()?;
    let scale = match unit {
        "us" => 1.0,
        "ms" => 1e3,
        "s" => 1e6,
        "m" => 60e6,
        "h" => 3600e6,
        _ => return None,
    };
    Some(value * scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPORT: &str = "Running 1s test @ http://127.0.0.1/
  1 threads and 4 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    64.57us  245.92us   4.73ms   98.86%
    Req/Sec    73.74k     9.40k   91.31k    60.00%
  Latency Distribution
     50%   42.00us
     75%   52.00us
     90%   61.00us
     99%    1.20ms
  73006 requests in 1.00s, 8.35MB read
  Socket errors: connect 0, read 2, write 0, timeout 5
  Non-2xx or 3xx responses: 3
Requests/sec:  72975.93
Transfer/sec:      8.35MB
";

    #[test]
    fn wrk_reports_are_read_with_their_units() {
        let report = parse_wrk(REPORT).unwrap();
        assert_eq!(report.requests_per_s, 72975.93);
        assert_eq!(report.p50_us, 42.0);
        assert_eq!(report.p99_us, 1200.0);
        assert_eq!(report.errors, 10);
    }

    #[test]
    fn a_failed_wrk_run_has_no_report() {
        assert_eq!(
            parse_wrk("unable to connect to 10.0.0.2:http Connection refused"),
            None
        );
        assert_eq!(duration_us("12.5xs"), None);
        assert_eq!(duration_us("2.00s"), Some(2e6));
    }

    #[test]
    fn redis_benchmark_csv_is_read_by_its_header() {
        let csv = "\"test\",\"rps\",\"avg_latency_ms\",\"min_latency_ms\",\"p50_latency_ms\",\"p95_latency_ms\",\"p99_latency_ms\",\"max_latency_ms\"
\"SET\",\"21739.13\",\"2.143\",\"0.144\",\"0.783\",\"7.663\",\"12.663\",\"36.223\"
\"GET\",\"42462.85\",\"1.051\",\"0.144\",\"0.775\",\"3.455\",\"5.703\",\"7.439\"
";
        let reports = parse_redis_csv(csv);
        assert_eq!(reports.len(), 2);
        assert_eq!(reports[0].0, "SET");
        assert_eq!(reports[0].1.requests_per_s, 21739.13);
        assert!((reports[1].1.p50_us - 775.0).abs() < 1e-6);
        assert!(parse_redis_csv("Could not connect to Redis at 10.0.0.2:6379").is_empty());
    }

    #[test]
    fn iperf3_reports_give_the_receivers_rate_or_the_error() {
        let report = r#"{"start": {}, "end": {"sum_sent": {"bits_per_second": 9e9},
            "sum_received": {"bits_per_second": 8e9}}}"#;
        assert_eq!(parse_iperf3(report), Ok(1000.0));
        assert_eq!(
            parse_iperf3(r#"{"start": {}, "end": {}, "error": "unable to connect to server"}"#),
            Err("unable to connect to server".to_owned())
        );
        assert!(parse_iperf3("iperf3: error").is_err());
        assert!(parse_iperf3(r#"{"end": {"sum_received": {"bits_per_second": 0}}}"#).is_err());
    }

    #[test]
    fn round_trips_and_transfers_against_local_servers() {
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let udp_addr = udp.local_addr().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while let Ok((n, from)) = udp.recv_from(&mut buf) {
                let _ = udp.send_to(&buf[..n], from);
            }
        });
        let round = udp_round_trips(udp_addr, 50, 64).unwrap();
        assert_eq!((round.samples.len(), round.lost), (50, 0));
        assert!(round.samples.iter().all(|&s| s > 0.0));

        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let tcp_addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for mut stream in listener.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut buf = [0u8; 65536];
                    while let Ok(n) = stream.read(&mut buf) {
                        if n == 0 || stream.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        assert_eq!(tcp_round_trips(tcp_addr, 30, 64).unwrap().len(), 30);

        let sink = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let sink_addr = sink.local_addr().unwrap();
        std::thread::spawn(move || {
            for mut stream in sink.incoming().flatten() {
                let _ = std::io::copy(&mut stream, &mut std::io::sink());
            }
        });
        assert!(tcp_send(sink_addr, 2).unwrap() > 0.0);
    }

    #[test]
    fn echoes_of_other_trips_are_skipped() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        server.connect(client.local_addr().unwrap()).unwrap();
        client.set_read_timeout(Some(REPLY_TIMEOUT)).unwrap();
        let mut reply = [0u8; 16];
        // A late echo of trip 7 is queued before trip 8's.
        server.send(&7u64.to_le_bytes()).unwrap();
        server.send(&8u64.to_le_bytes()).unwrap();
        assert!(wait_for_echo(
            &client,
            &mut reply,
            8u64.to_le_bytes(),
            Instant::now()
        ));
        // Only other trips' echoes: the trip gives up.
        server.send(&7u64.to_le_bytes()).unwrap();
        assert!(!wait_for_echo(
            &client,
            &mut reply,
            9u64.to_le_bytes(),
            Instant::now()
        ));
        // Too short to carry a number.
        server.send(b"x").unwrap();
        assert!(!wait_for_echo(
            &client,
            &mut reply,
            0u64.to_le_bytes(),
            Instant::now()
        ));
    }

    #[test]
    fn a_silent_udp_server_is_an_error_not_a_hang() {
        let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
        let error = udp_round_trips(silent.local_addr().unwrap(), 5, 8).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
    }
}
