//! The API socket: bind it owner-only (replacing a stale socket, refusing a live one), serve
//! up to [`MAX_CONNECTIONS`] connections at once, each with a deadline for its request, and
//! remove the socket file when dropped.

use std::fs::Permissions;
use std::io::{self, ErrorKind, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::http::{read_request, ReadError, Response, MAX_BODY, MAX_HEAD};
use super::{respond, VmControl};
use crate::config::VmConfig;

/// How long a client has to send its whole request, counted from its connection. Without it
/// a client sending a byte now and then would hold its connection forever.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(5);
/// Connections served at once; a client beyond them gets 503 at once instead of waiting.
pub const MAX_CONNECTIONS: usize = 8;
/// How long writing a response may block. Responses are far smaller than a socket's buffer,
/// so this only bounds a pathological case (and with it how long `serve` takes to stop).
const WRITE_TIMEOUT: Duration = Duration::from_secs(1);
/// How often the accept loop and each connection check whether `serve` should return.
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// The socket file's mode: only the user running zhitong may connect (and so control the VM).
pub const SOCKET_MODE: u32 = 0o600;

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
    /// [`REQUEST_DEADLINE`]; a field so that tests can shorten it.
    request_deadline: Duration,
}

impl ApiServer {
    /// Listen on `path`, a socket file of mode 0600 whatever the umask. A socket file nobody
    /// listens on (left by a zhitong that was killed) is replaced; a live one, or a file that
    /// is not a socket, is refused.
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
        let listener = listen_owner_only(path).map_err(io)?;
        let id = std::fs::symlink_metadata(path)
            .ok()
            .map(|m| (m.dev(), m.ino()));
        Ok(Self {
            path: path.to_owned(),
            listener,
            id,
            stop: AtomicBool::new(false),
            request_deadline: REQUEST_DEADLINE,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Make `serve` return: within a few tenths of a second, slow clients or not (their
    /// connections are dropped).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Answer requests about `vm` until `stop` is called: each connection on a thread of its
    /// own, up to [`MAX_CONNECTIONS`] at once. Returns once every connection is closed.
    pub fn serve(&self, vm: &dyn VmControl, config: &VmConfig) {
        let active = AtomicUsize::new(0);
        // Leaving the scope joins the connection threads; each sees `stop` within a poll
        // interval.
        std::thread::scope(|s| {
            while !self.stopping() {
                if !self.readable() {
                    continue;
                }
                let stream = match self.listener.accept() {
                    Ok((stream, _)) => stream,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(e) => {
                        log::warn!("API socket accept: {e}");
                        std::thread::sleep(POLL_INTERVAL);
                        continue;
                    }
                };
                let deadline = Instant::now() + self.request_deadline;
                let Some(slot) = Slot::take(&active) else {
                    refuse_busy(stream);
                    continue;
                };
                let spawned = std::thread::Builder::new()
                    .name("api-conn".into())
                    .spawn_scoped(s, move || {
                        let _slot = slot;
                        self.handle_connection(stream, deadline, vm, config);
                    });
                // The closure, with the stream and the slot, is dropped: the client sees
                // the connection close.
                if let Err(e) = spawned {
                    log::warn!("no thread for an API connection ({e}); it is closed");
                }
            }
        });
    }

    /// Wait up to the poll interval for a connection.
    fn readable(&self) -> bool {
        let mut fd = libc::pollfd {
            fd: self.listener.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, for the length given.
        let n = unsafe { libc::poll(&mut fd, 1, POLL_INTERVAL.as_millis() as i32) };
        n > 0 && fd.revents & libc::POLLIN != 0
    }

    fn handle_connection(
        &self,
        mut stream: UnixStream,
        deadline: Instant,
        vm: &dyn VmControl,
        config: &VmConfig,
    ) {
        let _ = stream.set_nonblocking(false);
        let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
        let mut reader = DeadlineReader {
            stream: &stream,
            deadline,
            stop: &self.stop,
        };
        let response = match read_request(&mut reader) {
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
}

/// One of the [`MAX_CONNECTIONS`] connection slots, given back when dropped (also when the
/// connection's thread could not start, or panicked).
struct Slot<'a>(&'a AtomicUsize);

impl<'a> Slot<'a> {
    /// Only the accepting thread takes slots, so a load then an add cannot overshoot.
    fn take(active: &'a AtomicUsize) -> Option<Self> {
        (active.load(Ordering::SeqCst) < MAX_CONNECTIONS).then(|| {
            active.fetch_add(1, Ordering::SeqCst);
            Slot(active)
        })
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Reads a connection until its request deadline, in slices short enough to notice the
/// server stopping. Past the deadline a read fails with `TimedOut` (`read_request` answers
/// 408 once part of a request came); once the server stops, with `ConnectionAborted` (the
/// connection is dropped without an answer).
struct DeadlineReader<'a> {
    stream: &'a UnixStream,
    deadline: Instant,
    stop: &'a AtomicBool,
}

impl Read for DeadlineReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.stop.load(Ordering::SeqCst) {
                return Err(ErrorKind::ConnectionAborted.into());
            }
            let left = self.deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ErrorKind::TimedOut.into());
            }
            self.stream
                .set_read_timeout(Some(left.min(POLL_INTERVAL)))?;
            let mut stream = self.stream;
            match stream.read(buf) {
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                other => return other,
            }
        }
    }
}

/// Answer a connection over the limit with 503 without waiting for its request, so that the
/// accepting thread never blocks on it.
fn refuse_busy(mut stream: UnixStream) {
    log::debug!("API connection refused: {MAX_CONNECTIONS} already open -> 503");
    let _ = stream.set_nonblocking(true);
    let response = Response::error(
        503,
        format!("the API is already serving {MAX_CONNECTIONS} connections; retry in a moment"),
    )
    .with_header("Retry-After", "1");
    let _ = response.write_to(&mut stream);
    // Closing a Unix socket with unread data makes the client's read fail with a reset after
    // the answer: take what the client has sent so far (bounded: the socket is nonblocking).
    let mut sink = [0u8; 4096];
    let mut left = MAX_HEAD + MAX_BODY;
    while left > 0 {
        match stream.read(&mut sink) {
            Ok(n) if n > 0 => left = left.saturating_sub(n),
            _ => break,
        }
    }
    let _ = stream.shutdown(std::net::Shutdown::Both);
}

fn write_response(stream: &mut UnixStream, response: &Response) {
    if let Err(e) = response.write_to(stream) {
        log::debug!("API response not delivered: {e}");
    }
    let _ = stream.shutdown(std::net::Shutdown::Both);
}

/// Bind and listen on `path` with the socket file [`SOCKET_MODE`] whatever the umask. The
/// mode is set between bind(2) and listen(2): until listen, a connect is refused, so there is
/// no moment at which another user could connect. (std's `UnixListener::bind` listens at
/// once, and changing the umask would affect every thread of the process.)
fn listen_owner_only(path: &Path) -> io::Result<UnixListener> {
    // SAFETY: sockaddr_un is plain data, for which all zeroes is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    let bytes = path.as_os_str().as_bytes();
    // Room for the terminating NUL; a NUL inside would name another (abstract) socket.
    if bytes.is_empty() || bytes.len() >= addr.sun_path.len() || bytes.contains(&0) {
        return Err(io::Error::new(
            ErrorKind::InvalidInput,
            format!(
                "a socket path must be 1 to {} bytes without NUL",
                addr.sun_path.len() - 1
            ),
        ));
    }
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (dst, src) in addr.sun_path.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    let len = std::mem::offset_of!(libc::sockaddr_un, sun_path) + bytes.len() + 1;
    // SAFETY: a plain syscall; the new descriptor is owned right away.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a descriptor just created, owned by nothing else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: `addr` is a valid sockaddr_un and `len` does not exceed its size.
    let bound = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_un).cast(),
            len as libc::socklen_t,
        )
    };
    if bound < 0 {
        return Err(io::Error::last_os_error());
    }
    let listening =
        std::fs::set_permissions(path, Permissions::from_mode(SOCKET_MODE)).and_then(|()| {
            // SAFETY: a plain syscall on the bound socket.
            match unsafe { libc::listen(fd.as_raw_fd(), 128) } {
                0 => Ok(()),
                _ => Err(io::Error::last_os_error()),
            }
        });
    if let Err(e) = listening {
        let _ = std::fs::remove_file(path);
        return Err(e);
    }
    Ok(UnixListener::from(fd))
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
    use std::io::Write;

    fn socket_path(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("zhitong-api-{}-{name}.sock", std::process::id()))
    }

    /// Serve `vm` while `f` runs on this thread; the server stops even when `f` panics (an
    /// assertion), so a failing test fails instead of hanging. Returns how long `serve` took
    /// to return once `f` was done.
    fn serving(server: &ApiServer, vm: &FakeVm, f: impl FnOnce()) -> Duration {
        struct StopOnDrop<'a>(&'a ApiServer);
        impl Drop for StopOnDrop<'_> {
            fn drop(&mut self) {
                self.0.stop();
            }
        }
        let cfg = config();
        std::thread::scope(|s| {
            let serve = s.spawn(|| server.serve(vm, &cfg));
            let stop = StopOnDrop(server);
            f();
            let asked = Instant::now();
            drop(stop);
            serve.join().unwrap();
            asked.elapsed()
        })
    }

    #[test]
    fn serves_requests_and_survives_bad_clients() {
        let path = socket_path("serve");
        let server = ApiServer::bind(&path).unwrap();
        let vm = FakeVm::new(VmState::Running);
        serving(&server, &vm, || {
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

    /// A client that sends one byte a second and collects what comes back, until the server
    /// closes the connection (or the bytes run out, after some 30 s).
    fn trickle(path: &Path) -> (String, Duration) {
        let start = Instant::now();
        let mut c = UnixStream::connect(path).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        let mut out = Vec::new();
        for byte in b"GET /vm HTTP/1.1\r\nX-Slow: 123456789\r\n".iter() {
            let _ = c.write_all(&[*byte]); // fails once the server has closed
            let mut buf = [0u8; 512];
            match c.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => break,
            }
        }
        (String::from_utf8_lossy(&out).into_owned(), start.elapsed())
    }

    #[test]
    fn a_trickling_client_gets_408_while_others_are_served() {
        let path = socket_path("trickle");
        let mut server = ApiServer::bind(&path).unwrap();
        server.request_deadline = Duration::from_secs(2);
        let vm = FakeVm::new(VmState::Running);
        serving(&server, &vm, || {
            std::thread::scope(|s| {
                let trickler = s.spawn(|| trickle(&path));
                std::thread::sleep(Duration::from_millis(300));
                let asked = Instant::now();
                let r = client::request(&path, "GET", "/vm", None).unwrap();
                assert_eq!(r.status, 200, "{}", r.body);
                assert!(
                    asked.elapsed() < Duration::from_secs(1),
                    "{:?}",
                    asked.elapsed()
                );
                let (out, took) = trickler.join().unwrap();
                assert!(out.starts_with("HTTP/1.1 408 "), "{out:?}");
                let deadline = Duration::from_secs(2);
                assert!(took >= deadline, "{took:?}");
                assert!(took < deadline + Duration::from_secs(1), "{took:?}");
            });
        });
    }

    #[test]
    fn stop_returns_promptly_with_slow_clients_connected() {
        let path = socket_path("stop");
        let server = ApiServer::bind(&path).unwrap();
        let vm = FakeVm::new(VmState::Running);
        let mut clients = Vec::new();
        let took = serving(&server, &vm, || {
            clients.push(UnixStream::connect(&path).unwrap()); // says nothing
            let mut half_head = UnixStream::connect(&path).unwrap();
            half_head.write_all(b"GET /vm HTTP/1.1\r\n").unwrap();
            let mut half_body = UnixStream::connect(&path).unwrap();
            half_body
                .write_all(b"PUT /vm/shutdown HTTP/1.1\r\nContent-Length: 100\r\n\r\n{")
                .unwrap();
            clients.extend([half_head, half_body]);
            std::thread::sleep(Duration::from_millis(300)); // all three are being served
        });
        assert!(took < Duration::from_secs(1), "{took:?}");
        assert!(vm.calls.lock().unwrap().is_empty(), "no request completed");
    }

    #[test]
    fn connections_over_the_limit_get_503_at_once() {
        let path = socket_path("busy");
        let server = ApiServer::bind(&path).unwrap();
        let vm = FakeVm::new(VmState::Running);
        serving(&server, &vm, || {
            let silent: Vec<UnixStream> = (0..MAX_CONNECTIONS)
                .map(|_| UnixStream::connect(&path).unwrap())
                .collect();
            // Accepted in order, so this one comes after the silent ones took every slot.
            let asked = Instant::now();
            let mut extra = UnixStream::connect(&path).unwrap();
            let mut out = String::new();
            extra.read_to_string(&mut out).unwrap();
            assert!(
                asked.elapsed() < Duration::from_secs(1),
                "{:?}",
                asked.elapsed()
            );
            assert!(out.starts_with("HTTP/1.1 503 "), "{out}");
            assert!(out.contains("\r\nRetry-After: 1\r\n"), "{out}");
            let r = client::request(&path, "GET", "/vm", None).unwrap();
            assert_eq!(r.status, 503, "{}", r.body);
            assert!(r.body.contains("; "), "{}", r.body);
            // Slots come back as the silent clients leave.
            drop(silent);
            let freed = Instant::now();
            loop {
                let r = client::request(&path, "GET", "/vm", None).unwrap();
                if r.status == 200 {
                    break;
                }
                assert!(
                    freed.elapsed() < Duration::from_secs(2),
                    "still {}",
                    r.status
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        });
    }

    #[test]
    fn the_socket_is_owner_only_whatever_the_umask() {
        let path = socket_path("mode");
        // SAFETY: umask cannot fail; the old mask is put back right after.
        let old = unsafe { libc::umask(0) };
        let server = ApiServer::bind(&path);
        unsafe { libc::umask(old) };
        let server = server.unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o7777, SOCKET_MODE, "{mode:o}");
        drop(server);
        let long = Path::new("/tmp").join("x".repeat(200));
        let err = ApiServer::bind(&long).err().unwrap().to_string();
        assert!(err.contains("108") || err.contains("107"), "{err}");
    }
}
