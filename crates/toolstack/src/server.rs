//! The REST/JSON API over a Unix socket (axum). Handlers only translate HTTP to
//! [`Daemon`] calls; `docs/openapi.json` documents every route in [`ROUTES`].

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::api::{ApiError, CreateRequest, PoolResize, PoolStatus, VmView};
use crate::daemon::{Daemon, DaemonError};

/// Every route the API serves, as (method, path): the OpenAPI test checks that
/// `docs/openapi.json` documents exactly these.
pub const ROUTES: &[(&str, &str)] = &[
    ("get", "/vms"),
    ("post", "/vms"),
    ("get", "/vms/{id}"),
    ("delete", "/vms/{id}"),
    ("post", "/vms/{id}/stop"),
    ("get", "/vms/{id}/console"),
    ("get", "/pool"),
    ("put", "/pool"),
    ("get", "/metrics"),
];

/// How often a followed console is checked for new output.
const FOLLOW_INTERVAL: Duration = Duration::from_millis(50);

/// The router: every handler, plus JSON 404s for everything else.
pub fn router(daemon: Arc<Daemon>) -> Router {
    Router::new()
        .route("/vms", get(list_vms).post(create_vm))
        .route("/vms/{id}", get(inspect_vm).delete(remove_vm))
        .route("/vms/{id}/stop", post(stop_vm))
        .route("/vms/{id}/console", get(console))
        .route("/pool", get(pool_status).put(resize_pool))
        .route("/metrics", get(metrics))
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .with_state(daemon)
}

/// Serves the API until SIGINT or SIGTERM. Running VMs are left running: the next
/// daemon adopts them.
pub async fn serve(daemon: Arc<Daemon>) -> Result<(), DaemonError> {
    let socket = daemon.config().socket.clone();
    let socket_error = |source| DaemonError::Socket {
        path: socket.clone(),
        source,
    };
    if let Some(parent) = socket.parent() {
        std::fs::create_dir_all(parent).map_err(socket_error)?;
    }
    // Holding the state lock means no other daemon serves this state; a socket file
    // left by a killed daemon is stale.
    remove_stale_socket(&socket).map_err(socket_error)?;
    let listener = tokio::net::UnixListener::bind(&socket).map_err(socket_error)?;
    tokio::spawn(daemon.clone().refill_pool());
    axum::serve(listener, router(daemon))
        .with_graceful_shutdown(shutdown_signal())
        .await
        .map_err(socket_error)
}

fn remove_stale_socket(socket: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(socket) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut interrupt), Ok(mut terminate)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = interrupt.recv() => {}
        _ = terminate.recv() => {}
    }
}

fn json_body<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    body.map(|Json(value)| value)
        .map_err(|rejection| ApiError::bad_request(rejection.body_text()))
}

async fn create_vm(
    State(daemon): State<Arc<Daemon>>,
    body: Result<Json<CreateRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<VmView>), ApiError> {
    let request = json_body(body)?;
    Ok((StatusCode::CREATED, Json(daemon.create(request).await?)))
}

async fn list_vms(State(daemon): State<Arc<Daemon>>) -> Json<Vec<VmView>> {
    Json(daemon.list())
}

async fn inspect_vm(
    State(daemon): State<Arc<Daemon>>,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<VmView>, ApiError> {
    Ok(Json(daemon.inspect(&id)?))
}

async fn stop_vm(
    State(daemon): State<Arc<Daemon>>,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<VmView>, ApiError> {
    Ok(Json(daemon.stop(&id)?))
}

async fn remove_vm(
    State(daemon): State<Arc<Daemon>>,
    UrlPath(id): UrlPath<String>,
) -> Result<StatusCode, ApiError> {
    daemon.remove(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /vms/{id}/console` options.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConsoleQuery {
    /// Only the last N lines.
    tail: Option<usize>,
    /// Keep the response open and stream new output until the VM ends.
    #[serde(default)]
    follow: bool,
}

async fn console(
    State(daemon): State<Arc<Daemon>>,
    UrlPath(id): UrlPath<String>,
    query: Result<Query<ConsoleQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let (path, _) = daemon.console(&id)?;
    let existing = match tokio::fs::read(&path).await {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(ApiError::internal(format!("reading the console: {e}"))),
    };
    let offset = existing.len() as u64;
    let shown = match query.tail {
        Some(lines) => last_lines(&existing, lines).to_vec(),
        None => existing,
    };
    let text = [(header::CONTENT_TYPE, "text/plain; charset=utf-8")];
    if !query.follow {
        return Ok((text, shown).into_response());
    }
    let follow = futures_util::stream::unfold(
        (daemon, id, path, offset, Some(shown), false),
        |(daemon, id, path, offset, first, done)| async move {
            if let Some(first) = first {
                let chunk = Ok::<_, std::io::Error>(Bytes::from(first));
                return Some((chunk, (daemon, id, path, offset, None, false)));
            }
            if done {
                return None;
            }
            loop {
                // Read what is new; once the VM has ended and nothing is new, stop.
                let ended = daemon.has_ended(&id);
                let fresh = read_from(&path, offset).await.unwrap_or_default();
                if !fresh.is_empty() {
                    let next = offset + fresh.len() as u64;
                    return Some((
                        Ok(Bytes::from(fresh)),
                        (daemon, id, path, next, None, false),
                    ));
                }
                if ended {
                    return None;
                }
                tokio::time::sleep(FOLLOW_INTERVAL).await;
            }
        },
    );
    Ok((text, Body::from_stream(follow)).into_response())
}

async fn read_from(path: &Path, offset: u64) -> std::io::Result<Vec<u8>> {
    let mut file = tokio::fs::File::open(path).await?;
    file.seek(std::io::SeekFrom::Start(offset)).await?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).await?;
    Ok(bytes)
}

/// The last `lines` lines of `bytes` (a final newline does not start a new line).
fn last_lines(bytes: &[u8], lines: usize) -> &[u8] {
    if lines == 0 {
        return &[];
    }
    let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    let start = body
        .iter()
        .enumerate()
        .rev()
        .filter(|(_, &b)| b == b'\n')
        .nth(lines - 1)
        .map_or(0, |(i, _)| i + 1);
    bytes.get(start..).unwrap_or_default()
}

async fn pool_status(State(daemon): State<Arc<Daemon>>) -> Json<PoolStatus> {
    Json(daemon.pool_status())
}

async fn resize_pool(
    State(daemon): State<Arc<Daemon>>,
    body: Result<Json<PoolResize>, JsonRejection>,
) -> Result<Json<PoolStatus>, ApiError> {
    let request = json_body(body)?;
    Ok(Json(daemon.resize_pool(request.size)?))
}

async fn metrics(State(daemon): State<Arc<Daemon>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        daemon.metrics(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_takes_whole_last_lines() {
        let log = b"one\ntwo\nthree\n";
        assert_eq!(last_lines(log, 1), b"three\n");
        assert_eq!(last_lines(log, 2), b"two\nthree\n");
        assert_eq!(last_lines(log, 10), log);
        assert_eq!(last_lines(log, 0), b"");
        assert_eq!(last_lines(b"no newline", 1), b"no newline");
        assert_eq!(last_lines(b"", 3), b"");
    }

    #[test]
    fn the_openapi_document_describes_exactly_the_served_routes() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json");
        let text = std::fs::read_to_string(&path).expect("docs/openapi.json");
        let document: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
        assert!(document["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.")));
        let mut documented = Vec::new();
        for (path, item) in document["paths"].as_object().expect("paths") {
            for method in item.as_object().expect("path item").keys() {
                if ["get", "put", "post", "delete", "patch"].contains(&method.as_str()) {
                    documented.push((method.clone(), path.clone()));
                }
            }
        }
        let mut served: Vec<(String, String)> = ROUTES
            .iter()
            .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
            .collect();
        documented.sort();
        served.sort();
        assert_eq!(documented, served);
    }
}
