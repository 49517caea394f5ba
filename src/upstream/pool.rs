//! Opening connections to an upstream server (its pool of idle ones is the codec's:
//! [`crate::proto::h1::pool`]).

use std::time::Duration;

use tokio::net::TcpStream;

use crate::config::ServerAddr;
use crate::proto::h1::upstream::Conn;

/// Why no connection could be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connect timed out")]
    Timeout,
    #[error("connect failed: {0}")]
    Io(std::io::Error),
    /// The connection closed before the request could be sent.
    #[error("connection closed before the request was sent")]
    Closed,
}

/// Opens a new connection (TCP_NODELAY).
pub async fn connect(addr: &ServerAddr, timeout: Duration) -> Result<Box<Conn>, ConnectError> {
    let stream = tokio::time::timeout(timeout, async {
        match addr {
            ServerAddr::Ip(a) => TcpStream::connect(*a).await,
            ServerAddr::Name(host, port) => TcpStream::connect((host.as_str(), *port)).await,
        }
    })
    .await
    .map_err(|_| ConnectError::Timeout)?
    .map_err(ConnectError::Io)?;
    let _ = stream.set_nodelay(true);
    Ok(Conn::new(stream))
}
