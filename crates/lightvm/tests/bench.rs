//! End-to-end: `lightvm bench all --quick` on this machine, checked for what it
//! must produce — results.json valid against docs/bench-results.schema.json, every
//! plot file present and non-empty, a report that shows every plot — and never for
//! how fast anything was: timings belong in the results, not in assertions.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

const LIGHTVM: &str = env!("CARGO_BIN_EXE_lightvm");

/// Checks `value` against `schema`, for the keywords the results schema uses:
/// `type` (one or several), `enum`, `required`, `properties`,
/// `additionalProperties` (false or a schema), `items`, `minItems`, `minimum` and
/// local `$ref`s. Returns every violation, each with its JSON path.
fn validate(value: &Value, schema: &Value, root: &Value, path: &str, errors: &mut Vec<String>) {
    if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
        let pointer = reference.trim_start_matches('#');
        match root.pointer(pointer) {
            Some(target) => validate(value, target, root, path, errors),
            None => errors.push(format!("{path}: unresolvable $ref {reference}")),
        }
        return;
    }
    if let Some(types) = schema.get("type") {
        let allowed: Vec<&str> = match types {
            Value::String(t) => vec![t.as_str()],
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        let matches = |t: &str| match t {
            "object" => value.is_object(),
            "array" => value.is_array(),
            "string" => value.is_string(),
            "boolean" => value.is_boolean(),
            "null" => value.is_null(),
            "number" => value.is_number(),
            "integer" => value.is_u64() || value.is_i64(),
            _ => false,
        };
        if !allowed.iter().any(|t| matches(t)) {
            errors.push(format!("{path}: {value} is not of type {allowed:?}"));
            return;
        }
    }
    if let Some(options) = schema.get("enum").and_then(Value::as_array) {
        if !options.contains(value) {
            errors.push(format!("{path}: {value} is not one of {options:?}"));
        }
    }
    if let (Some(minimum), Some(number)) = (
        schema.get("minimum").and_then(Value::as_f64),
        value.as_f64(),
    ) {
        if number < minimum {
            errors.push(format!("{path}: {number} < minimum {minimum}"));
        }
    }
    if let Some(object) = value.as_object() {
        for required in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(name) = required.as_str() {
                if !object.contains_key(name) {
                    errors.push(format!("{path}: missing required field {name:?}"));
                }
            }
        }
        let properties = schema.get("properties").and_then(Value::as_object);
        for (name, field) in object {
            let field_path = format!("{path}.{name}");
            match properties.and_then(|p| p.get(name)) {
                Some(field_schema) => validate(field, field_schema, root, &field_path, errors),
                None => match schema.get("additionalProperties") {
                    Some(Value::Bool(false)) => {
                        errors.push(format!("{field_path}: not allowed by the schema"))
                    }
                    Some(extra) if extra.is_object() => {
                        validate(field, extra, root, &field_path, errors)
                    }
                    _ => {}
                },
            }
        }
    }
    if let Some(array) = value.as_array() {
        if let Some(min) = schema.get("minItems").and_then(Value::as_u64) {
            if (array.len() as u64) < min {
                errors.push(format!("{path}: fewer than {min} items"));
            }
        }
        if let Some(items) = schema.get("items") {
            for (index, item) in array.iter().enumerate() {
                validate(item, items, root, &format!("{path}[{index}]"), errors);
            }
        }
    }
}

/// Whether `suite` was skipped for a tool this machine lacks (`needs wrk (apt-get
/// install wrk …)`): a machine without setup.sh's packages, not a failure. A
/// test network that could not be built is a failure and is not excused.
fn suite_skipped(results: &Value, suite: &str) -> bool {
    results["suites"].as_array().into_iter().flatten().any(|s| {
        s["suite"] == suite
            && s["skipped_reason"]
                .as_str()
                .is_some_and(|reason| reason.starts_with("needs "))
    })
}

/// The platforms with a series in `suite`'s `metric`.
fn measured_platforms(results: &Value, suite: &str, metric: &str) -> Vec<String> {
    results["suites"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["suite"] == suite)
        .flat_map(|s| s["metrics"].as_array().into_iter().flatten())
        .filter(|m| m["id"] == metric)
        .flat_map(|m| m["series"].as_array().into_iter().flatten())
        .filter_map(|s| s["platform"].as_str().map(str::to_owned))
        .collect()
}

/// The metrics a unikernel row is measured in, as (suite, metric, cold, pooled):
/// every metric of every suite, except the time to exit, which the pool's client
/// does not wait for.
const UNIKERNEL_METRICS: &[(&str, &str, bool, bool)] = &[
    ("size", "size-image", true, true),
    ("boot", "boot-to-main", true, true),
    ("boot", "boot-to-exit", true, false),
    ("boot", "boot-vm-to-main", true, true),
    ("memory", "memory-pss", true, true),
    ("memory", "memory-rss", true, true),
    ("density", "density-latency", true, true),
    ("density", "density-latency-first", true, true),
    ("density", "density-latency-last", true, true),
    ("density", "density-latency-growth", true, true),
    ("density", "density-memory", true, true),
    ("density", "density-memory-per-instance", true, true),
    ("cpu", "cpu-kernel", true, true),
    ("cpu", "stream-copy", true, true),
    ("cpu", "stream-triad", true, true),
    ("net", "net-udp-rtt", true, true),
    ("net", "net-tcp-rtt", true, true),
    ("net", "net-tcp-throughput", true, true),
    ("http", "http-peak-rate", true, true),
    ("http", "http-rate", true, true),
];

/// The metrics of the apps suite: Debian's nginx, redis-server and iperf3 as
/// the host's process, in a container and on the Linux personality.
const APP_METRICS: &[&str] = &[
    "apps-nginx-rate",
    "apps-nginx-latency-p50",
    "apps-nginx-latency-p99",
    "apps-redis-set",
    "apps-redis-set-p50",
    "apps-redis-get",
    "apps-redis-get-p50",
    "apps-iperf3-to-server",
    "apps-iperf3-from-server",
];

/// The metrics a Linux-program row (the process row's program on the Linux
/// personality) is measured in, as (suite, metric); the other suites skip it,
/// naming what it lacks there.
const LINUX_PROGRAM_METRICS: &[(&str, &str)] = &[
    ("size", "size-image"),
    ("boot", "boot-to-main"),
    ("boot", "boot-to-exit"),
    ("boot", "boot-vm-to-main"),
    ("syscall", "syscall-getppid"),
    ("syscall", "syscall-generic"),
    ("syscall", "syscall-clock-gettime"),
    ("syscall", "syscall-first-call"),
    ("net", "net-udp-rtt"),
    ("net", "net-tcp-rtt"),
    ("net", "net-tcp-throughput"),
    ("http", "http-peak-rate"),
    ("http", "http-rate"),
    ("apps", "apps-nginx-rate"),
    ("apps", "apps-nginx-latency-p50"),
    ("apps", "apps-nginx-latency-p99"),
    ("apps", "apps-redis-set"),
    ("apps", "apps-redis-set-p50"),
    ("apps", "apps-redis-get"),
    ("apps", "apps-redis-get-p50"),
    ("apps", "apps-iperf3-to-server"),
    ("apps", "apps-iperf3-from-server"),
];

/// Every row of lightvm platform `on` — its cold and pooled unikernels and its
/// Linux program — with the (suite, metric)s it is measured in.
fn rows(on: lightvm_vmm::Platform) -> Vec<(String, Vec<(&'static str, &'static str)>)> {
    let unikernel = |pooled: bool| {
        UNIKERNEL_METRICS
            .iter()
            .filter(|&&(_, _, in_cold, in_pool)| if pooled { in_pool } else { in_cold })
            .map(|&(suite, metric, _, _)| (suite, metric))
            .collect()
    };
    vec![
        (format!("unikernel-{on}-cold"), unikernel(false)),
        (format!("unikernel-{on}-pool"), unikernel(true)),
        (
            format!("linux-program-{on}"),
            LINUX_PROGRAM_METRICS.to_vec(),
        ),
    ]
}

/// `on` is available here: each of its rows has a series in each of its metrics
/// (a network suite may be skipped only for a missing tool or for want of root),
/// and a suite that leaves a row out says why — never because it failed.
fn assert_rows_measured(results: &Value, on: lightvm_vmm::Platform, stderr: &str) {
    for (row, metrics) in rows(on) {
        for &(suite, metric) in &metrics {
            if suite_skipped(results, suite) {
                continue;
            }
            let measured = measured_platforms(results, suite, metric);
            assert!(
                measured.contains(&row),
                "{metric}: {row} ran: {measured:?}\n{stderr}"
            );
        }
        for suite in results["suites"].as_array().into_iter().flatten() {
            if !suite["skipped_reason"].is_null() {
                continue;
            }
            for skip in suite["skipped"].as_array().into_iter().flatten() {
                if skip["platform"] == row.as_str() {
                    let reason = skip["reason"].as_str().unwrap_or_default();
                    assert!(
                        !reason.starts_with("failed"),
                        "{}: {row} {reason}\n{stderr}",
                        suite["suite"]
                    );
                    assert!(
                        !metrics.iter().any(|(s, _)| suite["suite"] == *s),
                        "{}: {row} skipped: {reason}",
                        suite["suite"]
                    );
                }
            }
        }
    }
}

/// `on` is not available here: all its rows are listed as unavailable with
/// `reason`, measured nowhere, and skipped with that reason by every suite that ran.
fn assert_rows_skipped(results: &Value, on: lightvm_vmm::Platform, reason: &str) {
    for (row, _) in rows(on) {
        let status = results["platforms"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["platform"] == row.as_str())
            .unwrap_or_else(|| panic!("{row} is listed in platforms"));
        assert_eq!(status["available"], false, "{status}");
        assert_eq!(status["reason"], reason, "{row}: the reason of this host");
        for suite in results["suites"].as_array().into_iter().flatten() {
            for metric in suite["metrics"].as_array().into_iter().flatten() {
                assert!(
                    !metric["series"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|s| s["platform"] == row.as_str()),
                    "{row} measured in {}",
                    metric["id"]
                );
            }
            if suite["skipped_reason"].is_null() {
                assert!(
                    suite["skipped"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|skip| skip["platform"] == row.as_str() && skip["reason"] == reason),
                    "{}: {row} skipped with {reason:?}",
                    suite["suite"]
                );
            }
        }
    }
}

/// The syscall suite ran the host process, and every figure of every row is
/// also compared with the process's getppid() of the same run: the reference
/// is that median, and the process's own getppid() is 1× of it.
fn assert_syscall_figures_compare_with_the_hosts_getppid(results: &Value, stderr: &str) {
    let suite = results["suites"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["suite"] == "syscall")
        .expect("a syscall suite");
    let metrics = suite["metrics"].as_array().unwrap();
    let ids: Vec<&str> = metrics.iter().filter_map(|m| m["id"].as_str()).collect();
    assert_eq!(
        ids,
        LINUX_PROGRAM_METRICS
            .iter()
            .filter(|(s, _)| *s == "syscall")
            .map(|(_, m)| *m)
            .collect::<Vec<_>>()
    );
    let series = |metric: &Value, platform: &str| -> Value {
        metric["series"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|s| s["platform"] == platform)
            .cloned()
            .unwrap_or(Value::Null)
    };
    let getppid = &metrics[0];
    let host = series(getppid, "process");
    assert!(
        host.is_object(),
        "the process ran the syscall suite\n{stderr}"
    );
    let reference = getppid["reference"]["value"].as_f64().expect("a reference");
    assert_eq!(Some(reference), host["summary"]["median"].as_f64());
    assert_eq!(host["ratio_to_reference"].as_f64(), Some(1.0));
    for metric in metrics {
        assert_eq!(
            metric["reference"], getppid["reference"],
            "{}",
            metric["id"]
        );
        assert_eq!(metric["unit"], "ns");
        for s in metric["series"].as_array().unwrap() {
            assert!(s["ratio_to_reference"].is_number(), "{}: {s}", metric["id"]);
        }
    }
    // A unikernel makes hypercalls: its rows are left out, saying so.
    for skip in suite["skipped"].as_array().unwrap() {
        let platform = skip["platform"].as_str().unwrap();
        if platform.starts_with("unikernel-") {
            assert!(
                skip["reason"]
                    .as_str()
                    .unwrap()
                    .contains("hypercalls, not system calls")
                    || results["platforms"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|p| p["platform"] == platform && p["available"] == false),
                "{skip}"
            );
        }
    }
}

/// The apps suite measured Debian's programs as the host's process (the
/// baseline of its ratios) and in a container, in every one of its metrics —
/// unless it was skipped for a missing tool, or runc is not available here, in
/// which case the container is listed as unavailable with the reason. The
/// unikernel rows are left out, saying why.
fn assert_apps_measured(results: &Value, stderr: &str) {
    let suite = results["suites"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["suite"] == "apps")
        .expect("an apps suite");
    if suite_skipped(results, "apps") {
        return;
    }
    let ids: Vec<&str> = suite["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    assert_eq!(ids, APP_METRICS, "{stderr}");
    let container_available = results["platforms"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["platform"] == "container" && p["available"] == true);
    for metric in APP_METRICS {
        let measured = measured_platforms(results, "apps", metric);
        assert!(
            measured.contains(&"process".to_owned()),
            "{metric}: the host's process ran: {measured:?}\n{stderr}"
        );
        if container_available {
            assert!(
                measured.contains(&"container".to_owned()),
                "{metric}: the container ran: {measured:?}\n{stderr}"
            );
        }
    }
    for skip in suite["skipped"].as_array().unwrap() {
        let platform = skip["platform"].as_str().unwrap();
        let reason = skip["reason"].as_str().unwrap();
        assert!(!reason.contains(" failed: "), "{skip}\n{stderr}");
        if platform.starts_with("unikernel-") {
            let unavailable = results["platforms"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["platform"] == platform && p["available"] == false);
            assert!(
                reason.contains("linux-program rows") || unavailable,
                "{skip}"
            );
        }
    }
}

fn schema() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/bench-results.schema.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn the_validator_rejects_what_the_schema_forbids() {
    let schema = schema();
    let check = |value: &Value| {
        let mut errors = Vec::new();
        validate(value, &schema, &schema, "$", &mut errors);
        errors
    };
    assert!(!check(&serde_json::json!({})).is_empty(), "missing fields");
    assert!(!check(&serde_json::json!([])).is_empty(), "wrong type");
    let mut errors = Vec::new();
    let platform = &schema["$defs"]["platform"];
    validate(
        &serde_json::json!("vm"),
        platform,
        &schema,
        "$",
        &mut errors,
    );
    assert_eq!(errors.len(), 1, "not an enum member: {errors:?}");
}

#[test]
fn bench_all_quick_writes_valid_results_every_plot_and_the_report() {
    let out = std::env::temp_dir().join(format!("lightvm-bench-all-{}", std::process::id()));
    let child = Command::new(LIGHTVM)
        .args(["bench", "all", "--quick"])
        .arg("--out")
        .arg(&out)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run lightvm bench all --quick");
    let bench_pid = child.id();
    let output = child.wait_with_output().expect("wait for lightvm bench");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "lightvm bench failed:\n{stderr}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("boot-to-main"),
        "a headline table:\n{stdout}"
    );

    let results: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap())
            .expect("results.json is JSON");
    let schema = schema();
    let mut errors = Vec::new();
    validate(&results, &schema, &schema, "$", &mut errors);
    assert!(
        errors.is_empty(),
        "results.json breaks its schema:\n{}",
        errors.join("\n")
    );

    let suites: Vec<&str> = results["suites"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["suite"].as_str().unwrap())
        .collect();
    assert_eq!(
        suites,
        ["size", "boot", "syscall", "memory", "density", "cpu", "net", "http", "apps"]
    );

    let report = std::fs::read_to_string(out.join("report.html")).expect("report.html");
    let mut plots = 0;
    for suite in results["suites"].as_array().unwrap() {
        for metric in suite["metrics"].as_array().unwrap() {
            let id = metric["id"].as_str().unwrap();
            let has_series = !metric["series"].as_array().unwrap().is_empty();
            let files: Vec<&str> = metric["files"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| f.as_str().unwrap())
                .collect();
            if has_series {
                assert!(
                    files.contains(&format!("{id}.svg").as_str())
                        && files.contains(&format!("{id}.png").as_str()),
                    "{id}: an SVG and a PNG, got {files:?}"
                );
            }
            for file in files {
                let size = std::fs::metadata(out.join(file))
                    .map(|m| m.len())
                    .unwrap_or(0);
                assert!(size > 0, "{file} is missing or empty");
                if file.ends_with(".svg") {
                    assert!(
                        report.contains(&format!("src=\"{file}\"")),
                        "the report shows {file}"
                    );
                    plots += 1;
                }
            }
            // Every measured series is summarised, with a ratio when process ran.
            for series in metric["series"].as_array().unwrap() {
                assert!(series["summary"].is_object(), "{id}: {series}");
            }
        }
    }
    assert!(plots >= 5, "size, boot, memory and density plots at least");
    let csv = std::fs::read_to_string(out.join("results.csv")).expect("results.csv");
    assert!(csv.starts_with("suite,metric,unit,platform,index,x,value\n"));
    assert!(csv.lines().count() > 10);

    // The baseline ran, and every lightvm platform this host has ran cold and
    // pooled in every metric that applies to it; a platform it lacks is skipped
    // everywhere, with the reason lightvm gives for this host.
    assert!(
        measured_platforms(&results, "boot", "boot-to-main").contains(&"process".to_owned()),
        "{stderr}"
    );
    for on in lightvm_vmm::Platform::ALL {
        match on.check() {
            Ok(()) => assert_rows_measured(&results, on, &stderr),
            Err(unavailable) => assert_rows_skipped(&results, on, &unavailable.reason),
        }
    }
    assert_syscall_figures_compare_with_the_hosts_getppid(&results, &stderr);
    assert_apps_measured(&results, &stderr);
    let leftover: Vec<String> = std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(&format!("lvmbench-{bench_pid}")))
        .collect();
    assert!(leftover.is_empty(), "namespaces left behind: {leftover:?}");
    // A suite that cannot run says why.
    for suite in results["suites"].as_array().unwrap() {
        if suite["metrics"].as_array().unwrap().is_empty() {
            assert!(suite["skipped_reason"].is_string(), "{}", suite["suite"]);
        }
    }
    std::fs::remove_dir_all(&out).unwrap();
}
