//! A small client for the daemon's API over its Unix socket, for the CLI and tests.

use std::path::{Path, PathBuf};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;

/// Why a request did not get an answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket could not be reached (no daemon?).
    #[error(
        "cannot reach the lightvm daemon at {path}: {source} (start it with `lightvm daemon`)"
    )]
    Connect {
        /// The socket path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The HTTP exchange failed.
    #[error("talking to the lightvm daemon: {0}")]
    Http(String),
}

/// An API client bound to one socket.
#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
}

/// A complete answer.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The status.
    pub status: StatusCode,
    /// The body.
    pub body: Bytes,
}

impl Answer {
    /// The error message of a failed answer (`{"error": …}`), or the body as text.
    pub fn error_message(&self) -> String {
        serde_json::from_slice::<crate::api::ErrorBody>(&self.body)
            .map(|e| e.error)
            .unwrap_or_else(|_| String::from_utf8_lossy(&self.body).into_owned())
    }
}

impl Client {
    /// A client for the daemon listening on `socket`.
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Self {
            socket: socket.into(),
        }
    }

    /// The socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Sends one request (a JSON body if given) and reads the whole answer.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<Answer, ClientError> {
        let mut answer = Vec::new();
        let status = self
            .stream(method, path, body, |chunk| answer.extend_from_slice(chunk))
            .await?;
        Ok(Answer {
            status,
            body: Bytes::from(answer),
        })
    }

    /// Sends one request and hands each chunk of the answer to `on_chunk` as it
    /// arrives (for followed consoles).
    pub async fn stream(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
        mut on_chunk: impl FnMut(&[u8]),
    ) -> Result<StatusCode, ClientError> {
        let stream =
            UnixStream::connect(&self.socket)
                .await
                .map_err(|source| ClientError::Connect {
                    path: self.socket.clone(),
                    source,
                })?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| ClientError::Http(e.to_string()))?;
        tokio::spawn(connection);
        let payload = body.map(|b| b.to_string()).unwrap_or_default();
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, "lightvm");
        if body.is_some() {
            request = request.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        let request = request
            .body(Full::new(Bytes::from(payload)))
            .map_err(|e| ClientError::Http(e.to_string()))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| ClientError::Http(e.to_string()))?;
        let status = response.status();
        let mut body = response.into_body();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| ClientError::Http(e.to_string()))?;
            if let Some(data) = frame.data_ref() {
                on_chunk(data);
            }
        }
        Ok(status)
    }
}
