//! One HTTP/1.1 exchange with the daemon over its Unix socket, with hyper's
//! client, which sends any method, header and body it is given (malformed
//! JSON, a wrong content type, 3 MB bodies) and decodes chunked answers.

use std::path::Path;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;

/// A request as the fuzzer built it.
#[derive(Debug, Clone)]
pub struct RawRequest {
    /// The method (any token, not only the standard ones).
    pub method: String,
    /// Path and query, already percent-encoded.
    pub target: String,
    /// The `Content-Type` header, if any.
    pub content_type: Option<String>,
    /// The body, if any.
    pub body: Option<Vec<u8>>,
}

impl std::fmt::Display for RawRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.target.len() > 300 {
            let cut: String = self.target.chars().take(200).collect();
            write!(f, "{} {cut}… ({} bytes)", self.method, self.target.len())?;
        } else {
            write!(f, "{} {}", self.method, self.target)?;
        }
        if let Some(content_type) = &self.content_type {
            write!(f, "\n  Content-Type: {content_type}")?;
        }
        if let Some(body) = &self.body {
            let text = String::from_utf8_lossy(body);
            if text.len() > 600 {
                let cut: String = text.chars().take(300).collect();
                write!(f, "\n  body ({} bytes): {cut}…", body.len())?;
            } else {
                write!(f, "\n  body: {text}")?;
            }
        }
        Ok(())
    }
}

/// The daemon's answer.
#[derive(Debug, Clone)]
pub struct Answer {
    /// Its status code.
    pub status: u16,
    /// Its `Content-Type`, if any.
    pub content_type: Option<String>,
    /// Its `Allow`, if any.
    pub allow: Option<String>,
    /// The whole body.
    pub body: Vec<u8>,
}

/// Sends `request` on a new connection and reads the whole answer. An error is
/// a connection the daemon refused or dropped, or no answer within `timeout`.
pub async fn send(
    socket: &Path,
    request: &RawRequest,
    timeout: Duration,
) -> Result<Answer, String> {
    match tokio::time::timeout(timeout, exchange(socket, request)).await {
        Ok(result) => result,
        Err(_) => Err(format!("no complete answer within {timeout:?}")),
    }
}

async fn exchange(socket: &Path, request: &RawRequest) -> Result<Answer, String> {
    let stream = UnixStream::connect(socket)
        .await
        .map_err(|e| format!("connecting: {e}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(connection);
    let method = Method::from_bytes(request.method.as_bytes()).map_err(|e| e.to_string())?;
    let mut builder = Request::builder()
        .method(method)
        .uri(&request.target)
        .header(hyper::header::HOST, "lightvm");
    if let Some(content_type) = &request.content_type {
        builder = builder.header(hyper::header::CONTENT_TYPE, content_type);
    }
    let body = Bytes::from(request.body.clone().unwrap_or_default());
    let built = builder
        .body(Full::new(body))
        .map_err(|e| format!("the fuzzer built a request hyper refuses: {e}"))?;
    let response = sender
        .send_request(built)
        .await
        .map_err(|e| format!("the connection failed before an answer: {e}"))?;
    let header = |name| {
        response
            .headers()
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    let content_type = header(hyper::header::CONTENT_TYPE);
    let allow = header(hyper::header::ALLOW);
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("the connection failed in the answer's body: {e}"))?
        .to_bytes()
        .to_vec();
    Ok(Answer {
        status,
        content_type,
        allow,
        body,
    })
}

/// `text` percent-encoded for a path segment or a query value: everything but
/// RFC 3986's unreserved characters.
pub fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn everything_but_unreserved_characters_is_encoded() {
        assert_eq!(super::encode("a-b_c.d~"), "a-b_c.d~");
        assert_eq!(super::encode("a/b c\0ü"), "a%2Fb%20c%00%C3%BC");
    }
}
