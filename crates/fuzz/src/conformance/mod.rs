//! Schema-driven conformance fuzzing of a running daemon against
//! `docs/openapi.json`: what schemathesis does, in Rust.
//!
//! Schemathesis is a Python tool built on hypothesis and hypothesis-jsonschema;
//! neither it nor hypothesis-jsonschema is packaged by Debian, and this project
//! builds with cargo alone. So the fuzzer is written here, over crates that do
//! the hard parts: `jsonschema` validates every answer, hyper speaks HTTP/1.1,
//! `rand`'s seeded generator makes a campaign replayable.
//!
//! Each case is one request to one documented operation (path parameters, query
//! and body drawn from its schemas, [`generate`]) — or a request the document
//! says nothing of (an undocumented method, an unknown path) — and the answer
//! must pass schemathesis's checks:
//!
//! * `not_a_server_error`: an answer, not a dropped connection; no 500, and no
//!   other 5xx the operation does not document (503 and 507 say something of
//!   the host, and are documented where they can happen);
//! * `status_code_conformance`: a status the operation documents;
//! * `content_type_conformance`: the documented content type (none for 204);
//! * `response_schema_conformance`: the body validates against the documented
//!   schema;
//! * `negative_data_rejection`: a request the schema refuses (a wrong type, a
//!   missing or unknown field, a number out of bounds, malformed JSON, a wrong
//!   content type) gets a 4xx;
//! * `unsupported_method`: a method the path does not document gets a 405 with
//!   an `Allow` header and a JSON error;
//! * `one_line_error`: every JSON error names the problem in one line;
//!
//! and two of the daemon's own: after every case it still answers `GET /pool`
//! (`daemon_alive`), and its listing agrees with its metrics; at the end, once
//! every VM is removed, none is listed or counted and no VM's shell process is
//! left (`no_leaked_vm`).

pub mod daemon;
pub mod generate;
pub mod http;
pub mod spec;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use generate::Hints;
use http::{encode, Answer, RawRequest};
use spec::{Operation, Spec};

/// Why a campaign could not run at all (its failures are in its [`Report`]).
#[derive(Debug, thiserror::Error)]
pub enum ConformanceError {
    /// The document could not be used.
    #[error(transparent)]
    Spec(#[from] spec::SpecError),
    /// A documented schema is no JSON Schema the validator takes.
    #[error("{operation}: the schema of {what} does not compile: {message}")]
    Schema {
        /// The operation.
        operation: String,
        /// Which schema.
        what: String,
        /// The validator's complaint.
        message: String,
    },
    /// A schema uses what the generator cannot honour.
    #[error("{operation}: the generator does not honour {keywords:?}")]
    Unsupported {
        /// The operation.
        operation: String,
        /// The keywords.
        keywords: Vec<String>,
    },
    /// No runtime.
    #[error("starting a tokio runtime: {0}")]
    Runtime(std::io::Error),
    /// The daemon to fuzz could not be started.
    #[error(transparent)]
    Daemon(#[from] daemon::DaemonError),
}

/// Builds what a campaign's daemon needs into `dir` (the `hello` guest, the
/// Linux personality), starts `lightvm daemon` there with a small pool, and runs
/// `cases` cases from `seed` against it. The daemon's log is appended to the
/// report's failures if it died.
pub fn against_new_daemon(
    lightvm: &std::path::Path,
    dir: &std::path::Path,
    cases: u64,
    seed: u64,
    stop_at_first: bool,
    verbose: bool,
) -> Result<Report, ConformanceError> {
    std::fs::create_dir_all(dir).map_err(|source| daemon::DaemonError::Io {
        what: format!("making {}", dir.display()),
        source,
    })?;
    let hello = dir.join("hello.elf");
    let personality = dir.join("personality.elf");
    if !hello.exists() {
        daemon::build(lightvm, &daemon::repo().join("guests/hello"), &hello)?;
    }
    if !personality.exists() {
        daemon::build(
            lightvm,
            &daemon::repo().join("crates/personality"),
            &personality,
        )?;
    }
    let args: Vec<String> = [
        "--pool",
        "1",
        "--linux-pool",
        "0",
        "--max-vms",
        "8",
        "--linux-pool-mem",
        "128M",
        "--max-mem",
        "256M",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .chain([
        "--personality".to_owned(),
        personality.display().to_string(),
    ])
    .collect();
    // A root filesystem for Linux programs: the hello unikernel is no Linux
    // program, so the personality fails to run it, but the create gets that far.
    let rootfs = dir.join("rootfs");
    std::fs::create_dir_all(&rootfs)
        .and_then(|()| std::fs::copy(&hello, rootfs.join("hello.elf")).map(drop))
        .map_err(|source| daemon::DaemonError::Io {
            what: format!("making {}", rootfs.display()),
            source,
        })?;
    let mut daemon = daemon::Daemon::start(lightvm, dir, &args)?;
    let text = |s: &str| json!(s);
    let path = |p: &std::path::Path| json!(p.display().to_string());
    let mut hints = Hints::default();
    let mut good = |name: &str, values: Vec<Value>| hints.values.insert(name.into(), values);
    good("image", vec![path(&hello)]);
    good("rootfs", vec![path(&rootfs)]);
    good("program", vec![text("/hello.elf")]);
    good("mem", ["2M", "4M", "128M"].map(text).to_vec());
    good("timeout_ms", vec![json!(1), json!(50), json!(2000)]);
    good(
        "cmdline",
        vec![text(""), text("ip=10.0.0.2/24 gw=10.0.0.1")],
    );
    good("args", vec![json!([]), json!(["-v", "x y"])]);
    good("env", vec![json!([]), json!(["GREETING=hello"])]);
    good("cwd", vec![text("/")]);
    good("size", (0..4).map(|n| json!(n)).collect());
    good("linux_size", vec![json!(0), json!(1)]);
    good("tail", (0..3).map(|n| json!(n)).collect());
    let mut trap = |name: &str, values: Vec<Value>| hints.traps.insert(name.into(), values);
    trap(
        "image",
        vec![
            path(dir),
            text("/dev/null"),
            text("/dev/zero"),
            path(&personality),
            text("relative/hello.elf"),
        ],
    );
    trap("rootfs", vec![path(dir), text("/nonexistent")]);
    trap("program", vec![text("relative"), text("/nonexistent")]);
    trap(
        "mem",
        ["1M", "0", "64K", "2G", "16E", "abc", "2m", " 2M"]
            .map(text)
            .to_vec(),
    );
    trap(
        "net",
        vec![
            text("tap=lvmfuzz0"),
            text("tap=lvmfuzz0,mac=06:00:00:00:00:01"),
        ],
    );
    for linux_only in ["args", "env", "cwd", "trace_syscalls"] {
        hints.only_with.insert(linux_only.into(), "rootfs".into());
    }
    let config = Config {
        spec: daemon::repo().join("docs/openapi.json"),
        socket: daemon.socket(),
        seed,
        cases,
        hints,
        timeout: Duration::from_secs(30),
        stop_at_first,
        verbose,
    };
    let mut report = run(&config)?;
    if !daemon.running() {
        report.failures.push(Failure {
            check: "daemon_alive",
            case: report.cases,
            operation: "the daemon".into(),
            kind: "its process".into(),
            request: None,
            message: format!("the daemon exited; its log:\n{}", daemon.log()),
            answer: None,
        });
    }
    Ok(report)
}

/// A campaign.
#[derive(Debug, Clone)]
pub struct Config {
    /// The OpenAPI document.
    pub spec: PathBuf,
    /// The daemon's socket.
    pub socket: PathBuf,
    /// Seeds every draw: the same seed and document replay the same requests.
    pub seed: u64,
    /// How many cases.
    pub cases: u64,
    /// Values by property name the schema cannot describe (see [`Hints`]).
    pub hints: Hints,
    /// How long one answer may take.
    pub timeout: Duration,
    /// Stop at the first failure (to replay it), rather than collect them all.
    pub stop_at_first: bool,
    /// Print every case and its answer's status and first line on stderr.
    pub verbose: bool,
}

/// One check an answer failed.
#[derive(Debug, Clone)]
pub struct Failure {
    /// Which check (schemathesis's name where it has one).
    pub check: &'static str,
    /// The case's number (from 0), to replay with the same seed.
    pub case: u64,
    /// The operation, or what was sent where there is none.
    pub operation: String,
    /// What the case was.
    pub kind: String,
    /// The request.
    pub request: Option<RawRequest>,
    /// What went wrong.
    pub message: String,
    /// The answer's status and body, if there was one.
    pub answer: Option<(u16, String)>,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "[{}] case {} — {} ({}): {}",
            self.check, self.case, self.operation, self.kind, self.message
        )?;
        if let Some(request) = &self.request {
            writeln!(f, "  request: {request}")?;
        }
        if let Some((status, body)) = &self.answer {
            let cut: String = body.chars().take(400).collect();
            writeln!(f, "  answer: {status} {cut}")?;
        }
        Ok(())
    }
}

/// What a campaign did.
#[derive(Debug, Default)]
pub struct Report {
    /// The seed it ran with.
    pub seed: u64,
    /// Cases sent.
    pub cases: u64,
    /// Answers by operation and status.
    pub statuses: BTreeMap<String, BTreeMap<u16, u64>>,
    /// VMs created (201s).
    pub created: u64,
    /// Every failure, in order; [`Report::distinct`] groups them.
    pub failures: Vec<Failure>,
    /// How long it took.
    pub elapsed: Duration,
}

impl Report {
    /// The first failure of each (check, operation, status) — what to fix.
    pub fn distinct(&self) -> Vec<&Failure> {
        let mut seen = Vec::new();
        let mut out = Vec::new();
        for failure in &self.failures {
            let key = (
                failure.check,
                failure.operation.clone(),
                failure.answer.as_ref().map(|a| a.0),
            );
            if !seen.contains(&key) {
                seen.push(key);
                out.push(failure);
            }
        }
        out
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{} cases in {:.1} s (seed {}), {} VMs created, {} failures ({} distinct)",
            self.cases,
            self.elapsed.as_secs_f64(),
            self.seed,
            self.created,
            self.failures.len(),
            self.distinct().len()
        )?;
        for (operation, statuses) in &self.statuses {
            let list: Vec<String> = statuses.iter().map(|(s, n)| format!("{s}×{n}")).collect();
            writeln!(f, "  {operation:<28} {}", list.join(" "))?;
        }
        for failure in self.distinct() {
            write!(f, "{failure}")?;
        }
        Ok(())
    }
}

/// Compiled validators: each operation's request body, and each response's.
struct Validators {
    bodies: BTreeMap<String, jsonschema::Validator>,
    responses: BTreeMap<(String, String), jsonschema::Validator>,
}

fn compile(
    operation: &Operation,
    what: &str,
    schema: &Value,
) -> Result<jsonschema::Validator, ConformanceError> {
    jsonschema::validator_for(&spec::to_json_schema(schema)).map_err(|e| ConformanceError::Schema {
        operation: operation.name(),
        what: what.to_owned(),
        message: e.to_string(),
    })
}

impl Validators {
    fn new(spec: &Spec) -> Result<Self, ConformanceError> {
        let mut bodies = BTreeMap::new();
        let mut responses = BTreeMap::new();
        for op in &spec.operations {
            let drawn = op
                .parameters
                .iter()
                .map(|p| &p.schema)
                .chain(op.body.as_ref().map(|(_, schema, _)| schema));
            for schema in drawn {
                let keywords = generate::unsupported(schema);
                if !keywords.is_empty() {
                    return Err(ConformanceError::Unsupported {
                        operation: op.name(),
                        keywords,
                    });
                }
            }
            if let Some((_, schema, _)) = &op.body {
                bodies.insert(op.name(), compile(op, "the request body", schema)?);
            }
            for (status, response) in &op.responses {
                if let Some((content_type, schema)) = &response.content {
                    if content_type == "application/json" {
                        let what = format!("its {status} answer");
                        responses.insert((op.name(), status.clone()), compile(op, &what, schema)?);
                    }
                }
            }
        }
        Ok(Self { bodies, responses })
    }
}

/// A request to send, and what the answer must be beyond the common checks.
struct Case {
    operation: Option<Operation>,
    label: String,
    kind: String,
    request: RawRequest,
    expect: Expect,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Only the common checks.
    Conform,
    /// The request is invalid: a 4xx.
    Rejected,
    /// An undocumented method: 405 with `Allow`.
    MethodNotAllowed,
    /// An unknown path: a JSON 404.
    NotFound,
}

/// What the campaign knows of the daemon's VMs.
#[derive(Default)]
struct Known {
    live: Vec<String>,
    removed: Vec<String>,
    pids: Vec<u32>,
}

/// Runs a campaign against the daemon at `config.socket`.
pub fn run(config: &Config) -> Result<Report, ConformanceError> {
    let spec = Spec::load(&config.spec)?;
    let validators = Validators::new(&spec)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(ConformanceError::Runtime)?;
    let started = Instant::now();
    let mut rng = StdRng::seed_from_u64(config.seed);
    let mut report = Report {
        seed: config.seed,
        ..Report::default()
    };
    let mut known = Known::default();
    let send = |request: &RawRequest| {
        runtime.block_on(http::send(&config.socket, request, config.timeout))
    };
    for number in 0..config.cases {
        let mut hints = config.hints.clone();
        let ids: Vec<Value> = known
            .live
            .iter()
            .chain(known.removed.iter())
            .map(|id| json!(id))
            .collect();
        hints.values.insert("id".into(), ids);
        // One case in three aims to get far: hints nearly always, few optional
        // fields, a valid request to a documented operation (VMs get created,
        // and later cases reach them by id). The others explore.
        let plausible = rng.random_range(0..3) == 0;
        if plausible {
            hints.odds = 0.95;
            hints.optional = 0.2;
            hints.plausible = true;
        }
        let case = draw(&mut rng, &spec, &hints, &validators, plausible);
        let answer = send(&case.request);
        if config.verbose {
            let shown = match &answer {
                Ok(a) => {
                    let text = String::from_utf8_lossy(&a.body);
                    format!(
                        "{} {}",
                        a.status,
                        text.chars().take(160).collect::<String>()
                    )
                }
                Err(e) => format!("no answer: {e}"),
            };
            eprintln!("case {number}: {} ({}) -> {shown}", case.label, case.kind);
        }
        let mut failures = Vec::new();
        let mut fail = |check: &'static str, message: String, answer: Option<&Answer>| {
            failures.push(Failure {
                check,
                case: number,
                operation: case.label.clone(),
                kind: case.kind.clone(),
                request: Some(case.request.clone()),
                message,
                answer: answer.map(|a| (a.status, String::from_utf8_lossy(&a.body).into_owned())),
            });
        };
        match &answer {
            Err(e) => fail("not_a_server_error", format!("no answer: {e}"), None),
            Ok(answer) => {
                *report
                    .statuses
                    .entry(case.label.clone())
                    .or_default()
                    .entry(answer.status)
                    .or_default() += 1;
                check(&case, answer, &validators, &spec, &mut fail);
                track(&case, answer, &mut known, &mut report);
            }
        }
        report.cases += 1;
        // The daemon must still answer, whatever the case did to it.
        let alive = send(&get("/pool"));
        if !alive.as_ref().is_ok_and(|a| a.status == 200) {
            let message = match &alive {
                Ok(a) => format!("GET /pool answered {}", a.status),
                Err(e) => format!("GET /pool: {e}"),
            };
            fail("daemon_alive", message, alive.as_ref().ok());
            report.failures.append(&mut failures);
            break;
        }
        if number % 50 == 49 {
            if let Err(message) = runtime.block_on(agree(&config.socket, config.timeout)) {
                fail("listing_agrees_with_metrics", message, None);
            }
        }
        let failed = !failures.is_empty();
        report.failures.append(&mut failures);
        if failed && config.stop_at_first {
            break;
        }
    }
    // Remove every VM; then none may be listed, counted, or left running.
    if let Err(message) = runtime.block_on(remove_all(&config.socket, config.timeout, &known.pids))
    {
        report.failures.push(Failure {
            check: "no_leaked_vm",
            case: report.cases,
            operation: "the end of the campaign".into(),
            kind: "cleanup".into(),
            request: None,
            message,
            answer: None,
        });
    }
    report.elapsed = started.elapsed();
    Ok(report)
}

fn get(target: &str) -> RawRequest {
    RawRequest {
        method: "GET".into(),
        target: target.into(),
        content_type: None,
        body: None,
    }
}

/// Draws one case.
fn draw(
    rng: &mut StdRng,
    spec: &Spec,
    hints: &Hints,
    validators: &Validators,
    plausible: bool,
) -> Case {
    let roll = if plausible {
        100
    } else {
        rng.random_range(0..100)
    };
    if roll < 6 {
        return undocumented_method(rng, spec);
    }
    if roll < 9 {
        return unknown_path(rng);
    }
    let operation = spec
        .operations
        .choose(rng)
        .cloned()
        .unwrap_or_else(unreachable_operation);
    let mut kind = Vec::new();
    let mut expect = Expect::Conform;
    // Parameters: valid from their schemas (or hints), or now and then invalid.
    let mut path = operation.path.clone();
    let mut query = Vec::new();
    for parameter in &operation.parameters {
        let as_text = |value: &Value| match value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        if parameter.location == "path" {
            let value = generate::valid(rng, &parameter.schema, Some(&parameter.name), hints);
            path = path.replace(
                &format!("{{{}}}", parameter.name),
                &encode(&as_text(&value)),
            );
        } else if parameter.location == "query" {
            let mode = if plausible {
                5
            } else {
                rng.random_range(0..10)
            };
            match mode {
                0..=3 => {}
                4..=7 => {
                    let value =
                        generate::valid(rng, &parameter.schema, Some(&parameter.name), hints);
                    query.push(format!("{}={}", parameter.name, encode(&as_text(&value))));
                }
                _ => {
                    let bad = [
                        "-1",
                        "abc",
                        "1.5",
                        "",
                        "true%00",
                        "99999999999999999999999",
                        "yes",
                    ]
                    .choose(rng)
                    .copied()
                    .unwrap_or("abc");
                    let admitted =
                        jsonschema::validator_for(&spec::to_json_schema(&parameter.schema))
                            .ok()
                            .and_then(|v| {
                                let parsed: Value = serde_json::from_str(bad).ok()?;
                                Some(v.is_valid(&parsed))
                            })
                            .unwrap_or(false);
                    if !admitted {
                        expect = Expect::Rejected;
                        kind.push(format!("{}={bad:?} (invalid)", parameter.name));
                    }
                    query.push(format!("{}={bad}", parameter.name));
                }
            }
        }
    }
    let has_query = operation.parameters.iter().any(|p| p.location == "query");
    if has_query && !plausible && rng.random_range(0..20) == 0 {
        query.push("unknown=1".into());
        expect = Expect::Rejected;
        kind.push("an unknown query parameter".into());
    }
    let mut target = path;
    if !query.is_empty() {
        target = format!("{target}?{}", query.join("&"));
    }
    let mut request = RawRequest {
        method: operation.method.clone(),
        target,
        content_type: None,
        body: None,
    };
    if let Some((content_type, schema, _)) = &operation.body {
        request.content_type = Some(content_type.clone());
        let validator = validators.bodies.get(&operation.name());
        let mut body = generate::valid(rng, schema, None, hints);
        let mode = if plausible {
            0
        } else {
            rng.random_range(0..10)
        };
        match mode {
            0..=3 => kind.push("a valid body".into()),
            4..=6 => {
                let (bad, how) = generate::invalid(rng, schema, hints);
                body = bad;
                if validator.is_some_and(|v| !v.is_valid(&body)) {
                    expect = Expect::Rejected;
                    kind.push(format!("an invalid body: {how}"));
                } else {
                    kind.push(format!("a body meant to be invalid, but admitted: {how}"));
                }
            }
            _ => {
                let (raw, how, invalid) = mangle(rng, &body);
                request.body = Some(raw);
                if invalid {
                    expect = Expect::Rejected;
                }
                kind.push(how);
                if rng.random_bool(0.3) {
                    let (content_type, how) = wrong_content_type(rng);
                    request.content_type = content_type;
                    expect = Expect::Rejected;
                    kind.push(how);
                }
            }
        }
        if request.body.is_none() {
            request.body = Some(body.to_string().into_bytes());
            if !plausible && rng.random_range(0..12) == 0 {
                let (content_type, how) = wrong_content_type(rng);
                request.content_type = content_type;
                expect = Expect::Rejected;
                kind.push(how);
            }
        }
    }
    Case {
        label: operation.name(),
        operation: Some(operation),
        kind: if kind.is_empty() {
            "valid".into()
        } else {
            kind.join("; ")
        },
        request,
        expect,
    }
}

fn unreachable_operation() -> Operation {
    Operation {
        method: "GET".into(),
        path: "/pool".into(),
        parameters: Vec::new(),
        body: None,
        responses: BTreeMap::new(),
    }
}

fn wrong_content_type(rng: &mut StdRng) -> (Option<String>, String) {
    let content_type = [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
        Some("application/xml"),
        Some(""),
    ]
    .choose(rng)
    .copied()
    .flatten();
    let how = match content_type {
        None => "no content type".to_owned(),
        Some(c) => format!("content type {c:?}"),
    };
    (content_type.map(str::to_owned), how)
}

/// A body broken below the schema: bytes that are no JSON, or JSON at the edges
/// of what parsers take. The flag says whether the daemon must refuse it.
fn mangle(rng: &mut StdRng, body: &Value) -> (Vec<u8>, String, bool) {
    let text = body.to_string();
    match rng.random_range(0..9) {
        0 => {
            let cut = rng.random_range(0..text.len().max(1));
            let prefix: String = text.chars().take(cut).collect();
            (prefix.into_bytes(), "a truncated body".into(), true)
        }
        1 => {
            let garbage = [
                "",
                "{",
                "}",
                "{]",
                "nul",
                "{\"a\":}",
                "{'a':1}",
                "\u{feff}{}",
                "{}x",
                "[1,]",
            ]
            .choose(rng)
            .copied()
            .unwrap_or("{");
            (
                garbage.as_bytes().to_vec(),
                format!("malformed JSON {garbage:?}"),
                true,
            )
        }
        2 => {
            let depth = rng.random_range(100..100_000);
            let nested = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
            (
                nested.into_bytes(),
                format!("arrays nested {depth} deep"),
                true,
            )
        }
        3 => {
            let mut bytes = text.into_bytes();
            bytes.extend_from_slice(&[0xff, 0xfe, 0x00]);
            (bytes, "invalid UTF-8 after the JSON".into(), true)
        }
        4 => {
            let size = rng.random_range(2 << 20..4 << 20);
            let huge = json!({ "cmdline": "x".repeat(size), "size": 1 });
            (
                huge.to_string().into_bytes(),
                format!("a {size}-byte body"),
                true,
            )
        }
        5 => {
            // A number only text can hold, in place of every number (or added).
            let number = generate::raw_number(rng);
            let mut object = body.as_object().cloned().unwrap_or_default();
            let key = object
                .iter()
                .find(|(_, v)| v.is_number())
                .map(|(k, _)| k.clone())
                .unwrap_or_else(|| "timeout_ms".into());
            object.insert(key.clone(), json!("__NUMBER__"));
            let text = Value::Object(object)
                .to_string()
                .replace("\"__NUMBER__\"", &number);
            // Whether the schema admits it depends on the field (1E2 is an
            // integer to JSON Schema, not to serde): only the common checks.
            (text.into_bytes(), format!("`{key}`: {number}"), false)
        }
        6 => {
            // The same key twice: serde takes the last or refuses it; either way
            // no 5xx.
            let inner = text.trim_start_matches('{');
            let doubled = if inner.is_empty() || inner == "}" {
                "{\"size\":1,\"size\":2}".to_owned()
            } else {
                format!("{{\"image\":\"/x\",{inner}")
            };
            (doubled.into_bytes(), "a key given twice".into(), false)
        }
        7 => {
            let mut object = body.as_object().cloned().unwrap_or_default();
            let key = object
                .keys()
                .next()
                .cloned()
                .unwrap_or_else(|| "image".into());
            object.insert(key.clone(), json!(format!("a{}b", '\0')));
            (
                Value::Object(object).to_string().into_bytes(),
                format!("`{key}` with a NUL"),
                false,
            )
        }
        _ => (
            format!("  \n\t{text}\n  ").into_bytes(),
            "whitespace around the JSON".into(),
            false,
        ),
    }
}

fn undocumented_method(rng: &mut StdRng, spec: &Spec) -> Case {
    let paths = spec.paths();
    let path = paths.choose(rng).cloned().unwrap_or_else(|| "/vms".into());
    let documented = spec.methods_of(&path);
    let candidates: Vec<&str> = ["GET", "PUT", "POST", "DELETE", "PATCH"]
        .into_iter()
        .filter(|m| !documented.iter().any(|d| d == m))
        .collect();
    let method = candidates.choose(rng).copied().unwrap_or("PATCH");
    let target = path.replace("{id}", "vm-fuzz");
    Case {
        operation: None,
        label: format!("{method} {path} (undocumented)"),
        kind: "an undocumented method".into(),
        request: RawRequest {
            method: method.into(),
            target,
            content_type: Some("application/json".into()),
            body: Some(b"{}".to_vec()),
        },
        expect: Expect::MethodNotAllowed,
    }
}

fn unknown_path(rng: &mut StdRng) -> Case {
    let target = [
        "/",
        "/vm",
        "/VMS",
        "/vms/x/y",
        "/vms/x/stop/now",
        "/pool/1",
        "/metrics/",
        "/%2e%2e/etc",
    ]
    .choose(rng)
    .copied()
    .unwrap_or("/nope");
    Case {
        operation: None,
        label: "an unknown path".into(),
        kind: target.into(),
        request: get(target),
        expect: Expect::NotFound,
    }
}

/// The checks of one answer.
fn check(
    case: &Case,
    answer: &Answer,
    validators: &Validators,
    spec: &Spec,
    fail: &mut impl FnMut(&'static str, String, Option<&Answer>),
) {
    let status = answer.status;
    let media = answer
        .content_type
        .as_deref()
        .map(|c| c.split(';').next().unwrap_or("").trim().to_owned());
    let json_error = |fail: &mut dyn FnMut(&'static str, String, Option<&Answer>)| {
        if media.as_deref() != Some("application/json") {
            fail(
                "content_type_conformance",
                format!(
                    "an error answered with content type {:?}, not a JSON error",
                    answer.content_type
                ),
                Some(answer),
            );
            return;
        }
        match serde_json::from_slice::<Value>(&answer.body) {
            Ok(body) => match body.get("error").and_then(Value::as_str) {
                Some(message) if !message.is_empty() && !message.contains('\n') => {}
                Some(message) => fail(
                    "one_line_error",
                    format!("error {message:?} is not one line"),
                    Some(answer),
                ),
                None => fail(
                    "response_schema_conformance",
                    "an error body with no `error` string".into(),
                    Some(answer),
                ),
            },
            Err(e) => fail(
                "response_schema_conformance",
                format!("the error body is no JSON: {e}"),
                Some(answer),
            ),
        }
    };
    match case.expect {
        Expect::MethodNotAllowed => {
            if status != 405 {
                fail(
                    "unsupported_method",
                    format!("{status}, not 405"),
                    Some(answer),
                );
                return;
            }
            let path = case.label.split(' ').nth(1).unwrap_or("");
            let mut documented = spec.methods_of(path);
            documented.sort();
            let mut allowed: Vec<String> = answer
                .allow
                .as_deref()
                .unwrap_or("")
                .split(',')
                .map(|m| m.trim().to_owned())
                .filter(|m| !m.is_empty() && m != "HEAD")
                .collect();
            allowed.sort();
            if allowed != documented {
                fail(
                    "unsupported_method",
                    format!(
                        "Allow {:?}, but the document has {documented:?}",
                        answer.allow
                    ),
                    Some(answer),
                );
            }
            json_error(fail);
            return;
        }
        Expect::NotFound => {
            if status != 404 {
                fail(
                    "status_code_conformance",
                    format!("{status} for an unknown path, not 404"),
                    Some(answer),
                );
            }
            json_error(fail);
            return;
        }
        Expect::Conform | Expect::Rejected => {}
    }
    let Some(operation) = &case.operation else {
        return;
    };
    if status >= 500 && (status == 500 || operation.response(status).is_none()) {
        fail("not_a_server_error", format!("{status}"), Some(answer));
    }
    if case.expect == Expect::Rejected && !(400..500).contains(&status) {
        fail(
            "negative_data_rejection",
            format!("{status} for a request the schema refuses"),
            Some(answer),
        );
    }
    let Some(documented) = operation.response(status) else {
        let known: Vec<&String> = operation.responses.keys().collect();
        fail(
            "status_code_conformance",
            format!("{status} is not documented (only {known:?})"),
            Some(answer),
        );
        return;
    };
    match &documented.content {
        None => {
            if !answer.body.is_empty() {
                fail(
                    "content_type_conformance",
                    format!("{status} documents no body, but one came"),
                    Some(answer),
                );
            }
        }
        Some((content_type, _)) => {
            if media.as_deref() != Some(content_type.as_str()) {
                fail(
                    "content_type_conformance",
                    format!(
                        "content type {:?}, documented {content_type}",
                        answer.content_type
                    ),
                    Some(answer),
                );
                return;
            }
            if let Some(validator) = validators
                .responses
                .get(&(operation.name(), status.to_string()))
            {
                match serde_json::from_slice::<Value>(&answer.body) {
                    Err(e) => fail(
                        "response_schema_conformance",
                        format!("no JSON: {e}"),
                        Some(answer),
                    ),
                    Ok(body) => {
                        let errors: Vec<String> = validator
                            .iter_errors(&body)
                            .take(3)
                            .map(|e| format!("{} at {}", e, e.instance_path()))
                            .collect();
                        if !errors.is_empty() {
                            fail(
                                "response_schema_conformance",
                                errors.join("; "),
                                Some(answer),
                            );
                        }
                        if status >= 400 {
                            json_error(fail);
                        }
                    }
                }
            }
        }
    }
}

/// Notes the VMs a case created or removed.
fn track(case: &Case, answer: &Answer, known: &mut Known, report: &mut Report) {
    let Some(operation) = &case.operation else {
        return;
    };
    if operation.method == "POST" && operation.path == "/vms" && answer.status == 201 {
        if let Ok(vm) = serde_json::from_slice::<Value>(&answer.body) {
            if let Some(id) = vm.get("id").and_then(Value::as_str) {
                known.live.push(id.to_owned());
            }
            if let Some(pid) = vm
                .get("pid")
                .and_then(Value::as_u64)
                .and_then(|p| u32::try_from(p).ok())
            {
                known.pids.push(pid);
            }
            report.created += 1;
        }
    }
    if operation.method == "DELETE" && answer.status == 204 {
        let id = case
            .request
            .target
            .strip_prefix("/vms/")
            .unwrap_or("")
            .to_owned();
        if let Some(at) = known.live.iter().position(|l| encode(l) == id) {
            let removed = known.live.remove(at);
            known.removed.push(removed);
        }
    }
}

/// The daemon's metrics and its listing count the same VMs.
async fn agree(socket: &std::path::Path, timeout: Duration) -> Result<(), String> {
    let listed = http::send(socket, &get("/vms"), timeout).await?;
    let listed: Vec<Value> =
        serde_json::from_slice(&listed.body).map_err(|e| format!("GET /vms: {e}"))?;
    let metrics = http::send(socket, &get("/metrics"), timeout).await?;
    let text = String::from_utf8_lossy(&metrics.body);
    let gauge = |state: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("lightvm_vms{{state=\"{state}\"}} ")))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(u64::MAX)
    };
    let (running, exited) = (gauge("running"), gauge("exited"));
    let counted = running.saturating_add(exited);
    if counted != listed.len() as u64 {
        return Err(format!(
            "GET /vms lists {} VMs, /metrics counts {running} running and {exited} exited",
            listed.len()
        ));
    }
    Ok(())
}

/// Removes every VM the daemon lists; then it must list and count none, and no
/// shell of a VM created in the campaign may still run (or wait unreaped).
async fn remove_all(
    socket: &std::path::Path,
    timeout: Duration,
    pids: &[u32],
) -> Result<(), String> {
    let listed = http::send(socket, &get("/vms"), timeout).await?;
    let listed: Vec<Value> =
        serde_json::from_slice(&listed.body).map_err(|e| format!("GET /vms: {e}"))?;
    for vm in &listed {
        let id = vm.get("id").and_then(Value::as_str).unwrap_or("");
        let request = RawRequest {
            method: "DELETE".into(),
            target: format!("/vms/{}", encode(id)),
            content_type: None,
            body: None,
        };
        let answer = http::send(socket, &request, timeout).await?;
        if answer.status != 204 {
            return Err(format!(
                "DELETE /vms/{id} answered {}: {}",
                answer.status,
                String::from_utf8_lossy(&answer.body)
            ));
        }
    }
    agree(socket, timeout).await?;
    let left = http::send(socket, &get("/vms"), timeout).await?;
    if left.body.as_slice() != b"[]" {
        return Err(format!(
            "VMs listed after all were removed: {}",
            String::from_utf8_lossy(&left.body)
        ));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let running: Vec<u32> = pids
            .iter()
            .copied()
            .filter(|p| daemon::is_shell(*p))
            .collect();
        if running.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "shells of removed VMs still run or wait unreaped: {running:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
