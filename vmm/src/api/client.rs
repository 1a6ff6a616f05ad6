//! A client for the API socket (what `zhitong api` uses).

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use super::http::ClientResponse;
use super::http::{parse_response, MAX_BODY, MAX_HEAD};

/// How long to wait for the server's answer.
pub const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no API socket at {p}; start the VM with 'zhitong run --api-socket {p}' or pass the path it was started with", p = .0.display())]
    Missing(PathBuf),
    #[error("nothing listens on {p} (the zhitong that created it has exited); start the VM again with 'zhitong run --api-socket {p}'", p = .0.display())]
    Refused(PathBuf),
    #[error("no permission to use {p}; run as the user that started the VM, or as root", p = .0.display())]
    Denied(PathBuf),
    #[error("talking to {}: {source}; check that a zhitong serves it", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} did not answer within {}s; check that the zhitong serving it is not stuck", path.display(), TIMEOUT.as_secs())]
    Timeout { path: PathBuf },
    #[error("{} gave a bad HTTP response ({reason}); check that it is a zhitong API socket", path.display())]
    BadResponse { path: PathBuf, reason: String },
}

impl ClientError {
    /// Whether the caller named the wrong socket (usage) rather than the server failing.
    pub fn is_usage(&self) -> bool {
        matches!(self, ClientError::Missing(_) | ClientError::Denied(_))
    }
}

/// Send one request and read the whole response.
pub fn request(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> Result<ClientResponse, ClientError> {
    let io = |source: std::io::Error| match source.kind() {
        ErrorKind::WouldBlock | ErrorKind::TimedOut => ClientError::Timeout {
            path: socket.to_owned(),
        },
        _ => ClientError::Io {
            path: socket.to_owned(),
            source,
        },
    };
    let mut stream = UnixStream::connect(socket).map_err(|e| match e.kind() {
        ErrorKind::NotFound => ClientError::Missing(socket.to_owned()),
        ErrorKind::ConnectionRefused => ClientError::Refused(socket.to_owned()),
        ErrorKind::PermissionDenied => ClientError::Denied(socket.to_owned()),
        _ => io(e),
    })?;
    stream.set_read_timeout(Some(TIMEOUT)).map_err(io)?;
    stream.set_write_timeout(Some(TIMEOUT)).map_err(io)?;
    let body = body.unwrap_or("");
    let mut req =
        format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\n");
    if !body.is_empty() {
        req.push_str("Content-Type: application/json\r\n");
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    // A busy server answers 503 and closes without reading the request, which can make the
    // write fail (or the read end in a reset after the answer): the answer is still there.
    match stream.write_all(req.as_bytes()) {
        Err(e) if e.kind() != ErrorKind::BrokenPipe => return Err(io(e)),
        _ => {}
    }
    let mut bytes = Vec::new();
    match stream
        .take((MAX_HEAD + MAX_BODY) as u64 * 16)
        .read_to_end(&mut bytes)
    {
        Err(e) if e.kind() == ErrorKind::ConnectionReset && !bytes.is_empty() => {}
        other => {
            other.map_err(io)?;
        }
    }
    parse_response(&bytes).map_err(|reason| ClientError::BadResponse {
        path: socket.to_owned(),
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_socket_names_it_and_the_fix() {
        let e = request(Path::new("/nonexistent/zt.sock"), "GET", "/vm", None).unwrap_err();
        assert!(e.is_usage());
        let line = e.to_string();
        assert!(
            line.contains("/nonexistent/zt.sock") && line.contains("--api-socket"),
            "{line}"
        );
    }
}
