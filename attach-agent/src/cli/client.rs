//! The client side of the Engine API over the agent's unix socket (HTTP/1.1 with hyper), used
//! by every CLI command. One API, one client: the CLI has no private protocol.

use std::path::PathBuf;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::Serialize;
use thiserror::Error;

use crate::engine::types::ErrorResponse;

#[derive(Debug, Error)]
pub enum ClientError {
    /// The daemon answered with an error: printed as the docker CLI does.
    #[error("Error response from daemon: {0}")]
    Daemon(String),
    /// The command line itself is wrong: found here, before anything was sent.
    #[error("{0}")]
    Usage(String),
    #[error("Cannot connect to the attach-agent daemon at unix://{path}. Is the daemon running? ({source})")]
    Connect {
        path: String,
        source: std::io::Error,
    },
    #[error("talking to the daemon: {0}")]
    Http(String),
    #[error("unexpected reply from the daemon: {0}")]
    Decode(String),
    #[error("invalid host {0:?}: expected unix:///path/to/socket")]
    BadHost(String),
}

/// Where the daemon is.
#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
}

impl Client {
    /// From `-H`/`ATTACH_AGENT_HOST`: `unix:///path` or a plain path.
    pub fn new(host: &str) -> Result<Client, ClientError> {
        let path = host.strip_prefix("unix://").unwrap_or(host);
        if path.is_empty() || host.contains("://") && !host.starts_with("unix://") {
            return Err(ClientError::BadHost(host.to_string()));
        }
        Ok(Client {
            socket: PathBuf::from(path),
        })
    }

    /// The daemon's socket.
    pub fn socket(&self) -> &std::path::Path {
        &self.socket
    }

    /// One request; the raw status and body.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .map_err(|source| ClientError::Connect {
                path: self.socket.display().to_string(),
                source,
            })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| ClientError::Http(e.to_string()))?;
        tokio::spawn(conn);
        let uri = format!("/v{}{path}", crate::engine::version::CURRENT_TEXT);
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header("Host", "attach-agent");
        if body.is_some() {
            req = req.header("Content-Type", "application/json");
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| ClientError::Http(e.to_string()))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| ClientError::Http(e.to_string()))?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| ClientError::Http(e.to_string()))?
            .to_bytes();
        Ok((status, bytes))
    }

    /// A request whose error replies become [`ClientError::Daemon`].
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<Bytes, ClientError> {
        let body = body
            .map(serde_json::to_vec)
            .transpose()
            .map_err(|e| ClientError::Http(e.to_string()))?;
        let (status, bytes) = self.raw(method, path, body).await?;
        if status.is_success() || status == StatusCode::NOT_MODIFIED {
            return Ok(bytes);
        }
        let msg = serde_json::from_slice::<ErrorResponse>(&bytes)
            .map(|e| e.message)
            .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).trim().to_string());
        Err(ClientError::Daemon(msg))
    }

    /// A request whose reply is JSON of type `T`.
    pub async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T, ClientError> {
        let bytes = self.call(method, path, body).await?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode(e.to_string()))
    }
}

/// Percent-encode a query or path component.
pub fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
