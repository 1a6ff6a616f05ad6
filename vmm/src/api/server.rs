//! The API socket: bind (replacing a stale socket, refusing a live one), serve one
//! connection at a time with timeouts, remove the socket file when dropped.

use std::io::ErrorKind;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::http::{read_request, ReadError, Response};
use super::{respond, VmControl};
use crate::config::VmConfig;

/// How long a client may take to send its request, or to take the response.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);
/// How often `serve` checks whether it should return.
const POLL_INTERVAL_MS: i32 = 100;

#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("the API socket {p} is in use by a running zhitong; stop that VM or pick another --api-socket path", p = .0.display())]
    InUse(PathBuf),
    #[error("{p} exists and is not a socket; remove it or pick another --api-socket path", p = .0.display())]
    NotASocket(PathBuf),
    #[error("cannot create the API socket {}: {source}; check that its directory exists and is writable", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

pub struct ApiServer {
    path: PathBuf,
    listener: UnixListener,
    /// (device, inode) of the socket file we created, so Drop removes only ours.
    id: Option<(u64, u64)>,
    stop: AtomicBool,
}

impl ApiServer {
    /// Listen on `path`. A socket file nobody listens on (left by a zhitong that was
    /// killed) is replaced; a live one, or a file that is not a socket, is refused.
    pub fn bind(path: &Path) -> Result<Self, BindError> {
        let io = |source| BindError::Io {
            path: path.to_owned(),
            source,
        };
        match std::fs::symlink_metadata(path) {
            Ok(meta) if !meta.file_type().is_socket() => {
                return Err(BindError::NotASocket(path.to_owned()))
            }
            Ok(_) => match UnixStream::connect(path) {
                Ok(_) => return Err(BindError::InUse(path.to_owned())),
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                    log::info!("removing the stale API socket {}", path.display());
                    std::fs::remove_file(path).map_err(io)?;
                }
                Err(e) => return Err(io(e)),
            },
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(io(e)),
        }
        let listener = UnixListener::bind(path).map_err(io)?;
        let id = std::fs::symlink_metadata(path)
            .ok()
            .map(|m| (m.dev(), m.ino()));
        Ok(Self {
            path: path.to_owned(),
            listener,
            id,
            stop: AtomicBool::new(false),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Make `serve` return (within a tenth of a second).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Answer requests about `vm` one connection at a time until `stop` is called.
    pub fn serve(&self, vm: &dyn VmControl, config: &VmConfig) {
        while !self.stop.load(Ordering::SeqCst) {
            if !self.readable() {
                continue;
            }
            match self.listener.accept() {
                Ok((stream, _)) => handle_connection(stream, vm, config),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    log::warn!("API socket accept: {e}");
                    std::thread::sleep(Duration::from_millis(POLL_INTERVAL_MS as u64));
                }
            }
        }
    }

    /// Wait up to the poll interval for a connection.
    fn readable(&self) -> bool {
        let mut fd = libc::pollfd {
            fd: self.listener.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, for the length given.
        let n = unsafe { libc::poll(&mut fd, 1, POLL_INTERVAL_MS) };
        n > 0 && fd.revents & libc::POLLIN != 0
    }
}

fn handle_connection(mut stream: UnixStream, vm: &dyn VmControl, config: &VmConfig) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(CLIENT_TIMEOUT));
    let _ = stream.set_write_timeout(Some(CLIENT_TIMEOUT));
    let response = match read_request(&mut stream) {
        Ok(req) => {
            let r = respond(&req, vm, config);
            log::debug!("API {} {} -> {}", req.method, req.path, r.status);
            r
        }
        Err(ReadError::Reply(r)) => {
            log::debug!("API bad request -> {}", r.status);
            r
        }
        Err(ReadError::Io(e)) => {
            log::debug!("API connection dropped: {e}");
            return;
        }
    };
    write_response(&mut stream, &response);
}

fn write_response(stream: &mut UnixStream, response: &Response) {
    if let Err(e) = response.write_to(stream) {
        log::debug!("API response not delivered: {e}");
    }
    let _ = stream.shutdown(std::net::Shutdown::Both);
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        let ours = std::fs::symlink_metadata(&self.path)
            .ok()
            .map(|m| (m.dev(), m.ino()));
        if ours.is_some() && ours == self.id {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::client;
    use super::super::tests_support::{config, FakeVm};
    use super::*;
    use crate::handle::VmState;
    use std::io::{Read, Write};

    fn socket_path(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("zhitong-api-{}-{name}.sock", std::process::id()))
    }

    #[test]
    fn serves_requests_and_survives_bad_clients() {
        let path = socket_path("serve");
        let server = ApiServer::bind(&path).unwrap();
        let vm = FakeVm::new(VmState::Running);
        let cfg = config();
        std::thread::scope(|s| {
            s.spawn(|| server.serve(&vm, &cfg));

            let r = client::request(&path, "GET", "/vm", None).unwrap();
            assert_eq!(r.status, 200, "{}", r.body);
            assert!(r.body.contains("\"state\":\"running\""), "{}", r.body);

            // A client that sends garbage, then one that sends half a request and leaves,
            // then one that connects and says nothing, then one that sends non-UTF-8.
            let mut c = UnixStream::connect(&path).unwrap();
            c.write_all(b"\x00\x01garbage\r\n\r\n").unwrap();
            let mut out = String::new();
            c.read_to_string(&mut out).unwrap();
            assert!(out.starts_with("HTTP/1.1 400 "), "{out}");
            drop(UnixStream::connect(&path).map(|mut c| c.write_all(b"GET /v")));
            drop(UnixStream::connect(&path).unwrap());
            let mut c = UnixStream::connect(&path).unwrap();
            c.write_all(b"GET /\xff HTTP/1.1\r\n\r\n").unwrap();
            let mut out = Vec::new();
            c.read_to_end(&mut out).unwrap();
            assert!(out.starts_with(b"HTTP/1.1 400 "));

            let r =
                client::request(&path, "PUT", "/vm/shutdown", Some("{\"timeout_s\":1}")).unwrap();
            assert_eq!(r.status, 202, "{}", r.body);
            let r = client::request(&path, "PUT", "/vm/reboot", None).unwrap();
            assert_eq!(r.status, 202, "{}", r.body);
            let r = client::request(&path, "PUT", "/vm/pause", None).unwrap();
            assert_eq!(r.status, 409, "{}", r.body);
            server.stop();
        });
        // A live server refuses a second bind; the socket is removed when dropped.
        let second = ApiServer::bind(&path).err();
        assert!(matches!(second, Some(BindError::InUse(_))), "{second:?}");
        drop(server);
        assert!(!path.exists());
    }

    #[test]
    fn stale_sockets_are_replaced_other_files_refused() {
        let path = socket_path("stale");
        let _ = std::fs::remove_file(&path);
        drop(UnixListener::bind(&path).unwrap()); // leaves the file, nobody listens
        assert!(path.exists());
        let server = ApiServer::bind(&path).unwrap();
        drop(server);
        assert!(!path.exists());

        std::fs::write(&path, "not a socket").unwrap();
        let err = ApiServer::bind(&path).err().unwrap().to_string();
        assert!(err.contains("not a socket") && err.contains("; "), "{err}");
        assert!(path.exists(), "a regular file is left alone");
        std::fs::remove_file(&path).unwrap();

        let err = ApiServer::bind(Path::new("/nonexistent-dir/x.sock"))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("/nonexistent-dir/x.sock"), "{err}");
    }
}
