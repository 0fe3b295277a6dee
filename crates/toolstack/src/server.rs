//! The REST/JSON API over a Unix socket (axum). Handlers only translate HTTP to
//! [`Daemon`] calls; `docs/openapi.json` documents every route in [`ROUTES`].

use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, FromRequest, Path as UrlPath, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::IncomingStream;
use axum::{Json, Router};
use serde::Deserialize;
use tokio::net::UnixListener;

use crate::access::Peer;
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

/// Who is on the other end of a connection: its socket's peer credentials, read
/// once when it connects.
#[derive(Debug, Clone)]
pub struct Client(Option<Peer>);

impl Client {
    /// The peer, or a 403 if the kernel would not say who it is.
    fn peer(&self) -> Result<Peer, ApiError> {
        self.0
            .clone()
            .ok_or_else(|| ApiError::forbidden("the daemon cannot tell who this client is"))
    }
}

impl Connected<IncomingStream<'_, UnixListener>> for Client {
    fn connect_info(stream: IncomingStream<'_, UnixListener>) -> Self {
        Self(Peer::of_socket(stream.io().as_raw_fd()))
    }
}

/// The router: every handler, plus JSON errors for everything else. Serve it
/// with connection info ([`Client`]), as [`serve`] does.
pub fn router(daemon: Arc<Daemon>) -> Router {
    with_json_fallbacks(
        Router::new()
            .route("/vms", get(list_vms).post(create_vm))
            .route("/vms/{id}", get(inspect_vm).delete(remove_vm))
            .route("/vms/{id}/stop", post(stop_vm))
            .route("/vms/{id}/console", get(console))
            .route("/pool", get(pool_status).put(resize_pool))
            .route("/metrics", get(metrics)),
    )
    .layer(axum::middleware::from_fn(read_body_first))
    .with_state(daemon)
}

/// A JSON 404 for a path the API does not serve, and a JSON 405 for a method a
/// path does not take. axum's own 405 has an empty body, so a client (and the
/// CLI, which shows `error`) would get no message; axum still adds the `Allow`
/// header, naming the path's methods, to what the fallback answers.
fn with_json_fallbacks<S: Clone + Send + Sync + 'static>(router: Router<S>) -> Router<S> {
    router
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .method_not_allowed_fallback(|method: axum::http::Method| async move {
            ApiError::method_not_allowed(format!("this endpoint does not take {method}"))
        })
}

/// Serves the API until SIGINT or SIGTERM. Running VMs are left running: the next
/// daemon adopts them.
pub async fn serve(daemon: Arc<Daemon>) -> Result<(), DaemonError> {
    let config = daemon.config();
    let socket = config.socket.clone();
    let socket_error = |source| DaemonError::Socket {
        path: socket.clone(),
        source,
    };
    let listener =
        listen(&socket, config.socket_group, config.socket_mode).map_err(socket_error)?;
    // From here on, this thread and every thread it starts make only the calls on
    // the daemon's allow-list.
    if config.seccomp {
        crate::seccomp::install_for_daemon()?;
    }
    tokio::spawn(daemon.clone().refill_pool());
    let served = axum::serve(
        listener,
        router(daemon.clone()).into_make_service_with_connect_info::<Client>(),
    )
    .with_graceful_shutdown(shutdown_signal())
    .await
    .map_err(socket_error);
    daemon.shut_down_pool().await;
    served
}

/// Binds the API socket with its group and mode. Who may connect is who may
/// write to the socket file; it is bound under a umask that lets no one else in,
/// so there is no moment at which it is open wider than `mode`.
fn listen(socket: &Path, group: Option<u32>, mode: u32) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(parent) = socket.parent() {
        std::fs::create_dir_all(parent)?;
    }
    // Holding the state lock means no other daemon serves this state; a socket file
    // left by a killed daemon is stale.
    remove_stale_socket(socket)?;
    // SAFETY: umask only swaps the process's file-creation mask; no file is
    // created by another thread of the daemon while it serves no request yet.
    let previous = unsafe { libc::umask(0o177) };
    let bound = UnixListener::bind(socket);
    // SAFETY: as above.
    unsafe { libc::umask(previous) };
    let listener = bound?;
    if let Some(gid) = group {
        std::os::unix::fs::chown(socket, None, Some(gid))?;
    }
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(mode & 0o777))?;
    Ok(listener)
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

/// Most bytes of a request body the API takes: its bodies are a few hundred.
const BODY_MAX: usize = 2 << 20;

/// How much of a larger body is read, and dropped, before the 413 is sent.
const DRAIN_MAX: usize = 64 << 20;

/// Reads every request's body before its handler runs: at most [`BODY_MAX`]
/// kept, past it up to [`DRAIN_MAX`] read and dropped and a 413 sent. A handler
/// that answers without reading the body (a wrong content type, one over the
/// limit) would otherwise have hyper close the connection while the client is
/// still sending, and the client would see a reset connection instead of the
/// error (api-conformance found it: HTTP/1.1 servers are to read on before they
/// close, RFC 9112 §9.6, which hyper leaves to the application).
async fn read_body_first(request: Request, next: Next) -> Response {
    use http_body_util::BodyExt;
    let (parts, mut body) = request.into_parts();
    let mut kept = Vec::new();
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            return ApiError::bad_request("the request body could not be read").into_response();
        };
        if let Some(data) = frame.data_ref() {
            total = total.saturating_add(data.len());
            if total <= BODY_MAX {
                kept.extend_from_slice(data);
            } else if total > DRAIN_MAX {
                break;
            }
        }
    }
    if total > BODY_MAX {
        return ApiError::too_large(format!("the request body is over {} MiB", BODY_MAX >> 20))
            .into_response();
    }
    next.run(Request::from_parts(parts, Body::from(kept))).await
}

/// A JSON body as `T`, or a 400 naming what is wrong with it. A member that is
/// `null` is refused like any other value of the wrong type: the document gives
/// every field a type and no `null`, and a client that means "the default"
/// leaves the field out (serde alone would take `null` as absent for an
/// `Option`, which the document does not say).
struct JsonBody<T>(T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let Json(value) = Json::<serde_json::Value>::from_request(request, state)
            .await
            .map_err(|rejection| ApiError::bad_request(rejection.body_text()))?;
        if let Some((name, _)) = value
            .as_object()
            .and_then(|object| object.iter().find(|(_, v)| v.is_null()))
        {
            return Err(ApiError::bad_request(format!(
                "{name}: null is no value here; leave the field out for its default"
            )));
        }
        // Through axum's decoder again, for its messages (with the field's path).
        let bytes = serde_json::to_vec(&value).map_err(|e| ApiError::internal(e.to_string()))?;
        Json::<T>::from_bytes(&bytes)
            .map(|Json(decoded)| Self(decoded))
            .map_err(|rejection| ApiError::bad_request(rejection.body_text()))
    }
}

async fn create_vm(
    State(daemon): State<Arc<Daemon>>,
    ConnectInfo(client): ConnectInfo<Client>,
    JsonBody(request): JsonBody<CreateRequest>,
) -> Result<(StatusCode, Json<VmView>), ApiError> {
    let peer = client.peer()?;
    Ok((
        StatusCode::CREATED,
        Json(daemon.create(request, peer).await?),
    ))
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
    ConnectInfo(client): ConnectInfo<Client>,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<VmView>, ApiError> {
    Ok(Json(daemon.stop(&id, &client.peer()?)?))
}

async fn remove_vm(
    State(daemon): State<Arc<Daemon>>,
    ConnectInfo(client): ConnectInfo<Client>,
    UrlPath(id): UrlPath<String>,
) -> Result<StatusCode, ApiError> {
    daemon.remove(&id, &client.peer()?).await?;
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
    ConnectInfo(client): ConnectInfo<Client>,
    UrlPath(id): UrlPath<String>,
    query: Result<Query<ConsoleQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let console = daemon.console(&id, &client.peer()?, query.tail).await?;
    let stream = console.stream(query.follow, move || daemon.has_ended(&id));
    Ok((
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        Body::from_stream(stream),
    )
        .into_response())
}

async fn pool_status(State(daemon): State<Arc<Daemon>>) -> Json<PoolStatus> {
    Json(daemon.pool_status())
}

async fn resize_pool(
    State(daemon): State<Arc<Daemon>>,
    ConnectInfo(client): ConnectInfo<Client>,
    JsonBody(request): JsonBody<PoolResize>,
) -> Result<Json<PoolStatus>, ApiError> {
    Ok(Json(daemon.resize_pool(&request, &client.peer()?)?))
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

    #[tokio::test]
    async fn an_unsupported_method_is_a_json_405_naming_the_allowed_ones() {
        use http_body_util::BodyExt;
        use tower::ServiceExt;
        let router = with_json_fallbacks(Router::new().route(
            "/pool",
            get(|| async { "pool" }).put(|| async { "resized" }),
        ));
        let request = axum::http::Request::builder()
            .method("DELETE")
            .uri("/pool")
            .body(Body::empty())
            .expect("a request");
        let response = router.clone().oneshot(request).await.expect("an answer");
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        let allow = response.headers().get(header::ALLOW).cloned();
        assert_eq!(
            allow.as_ref().and_then(|a| a.to_str().ok()),
            Some("GET,HEAD,PUT")
        );
        let content_type = response.headers().get(header::CONTENT_TYPE).cloned();
        assert_eq!(
            content_type.as_ref().and_then(|c| c.to_str().ok()),
            Some("application/json")
        );
        let body = response
            .into_body()
            .collect()
            .await
            .expect("a body")
            .to_bytes();
        let error: serde_json::Value = serde_json::from_slice(&body).expect("a JSON error");
        assert_eq!(error["error"], "this endpoint does not take DELETE");

        let request = axum::http::Request::builder()
            .uri("/nowhere")
            .body(Body::empty())
            .expect("a request");
        let response = router.oneshot(request).await.expect("an answer");
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
    }

    async fn send(router: Router, method: &str, uri: &str, body: Vec<u8>) -> (StatusCode, String) {
        use http_body_util::BodyExt;
        use tower::ServiceExt;
        let request = axum::http::Request::builder()
            .method(method)
            .uri(uri)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body))
            .expect("a request");
        let response = router.oneshot(request).await.expect("an answer");
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("a body")
            .to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_read_and_answered_413() {
        // The handler never reads its body (as a wrong content type's does not).
        let router = Router::new()
            .route("/pool", axum::routing::put(|| async { "took it" }))
            .layer(axum::middleware::from_fn(read_body_first));
        let (status, body) = send(router.clone(), "PUT", "/pool", vec![b'x'; BODY_MAX + 1]).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(body, r#"{"error":"the request body is over 2 MiB"}"#);
        let (status, body) = send(router, "PUT", "/pool", vec![b'x'; BODY_MAX]).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "took it"));
    }

    #[tokio::test]
    async fn a_null_member_is_refused_like_a_wrong_type() {
        let router = Router::new().route(
            "/pool",
            axum::routing::put(|JsonBody(resize): JsonBody<PoolResize>| async move {
                format!("{:?}", resize.size)
            }),
        );
        let (status, body) = send(
            router.clone(),
            "PUT",
            "/pool",
            br#"{"size":1,"linux_size":null}"#.to_vec(),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body.contains("linux_size: null is no value here"), "{body}");
        let (status, body) = send(router.clone(), "PUT", "/pool", br#"{"size":1}"#.to_vec()).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "Some(1)"));
        let (status, body) = send(router, "PUT", "/pool", br#"{"size":"1"}"#.to_vec()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body.contains("size: invalid type"), "{body}");
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
