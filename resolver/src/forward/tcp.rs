//! One question over TCP to one upstream: for an asker on TCP whose answer did not fit in the
//! upstream's UDP reply.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::wire;

#[derive(Debug, thiserror::Error)]
pub enum AskError {
    #[error("timed out")]
    Timeout,
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("reply does not match the query")]
    Mismatch,
}

/// Send `query` (id `id`, question `question`) to `server` over a fresh TCP connection and
/// return the matching reply, all within `timeout`.
pub async fn ask(
    server: SocketAddr,
    query: &[u8],
    question: &[u8],
    timeout: Duration,
) -> Result<Vec<u8>, AskError> {
    let id = u16::from_be_bytes([query[0], query[1]]);
    let work = async {
        let mut s = TcpStream::connect(server).await?;
        let mut framed = Vec::with_capacity(query.len() + 2);
        framed.extend_from_slice(&(query.len() as u16).to_be_bytes());
        framed.extend_from_slice(query);
        s.write_all(&framed).await?;
        let mut len = [0u8; 2];
        s.read_exact(&mut len).await?;
        let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
        s.read_exact(&mut buf).await?;
        if wire::answers_question(&buf, id, question) {
            Ok(buf)
        } else {
            Err(AskError::Mismatch)
        }
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| AskError::Timeout)?
}
