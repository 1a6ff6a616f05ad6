//! The host side's sockets, through the few syscalls the worker's seccomp filter allows:
//! accept4, socket (AF_UNIX) + connect, recvfrom (recv) and sendto (send, never SIGPIPE),
//! and the `CONNECT <port>\n` line a host client starts with.

use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::io::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::Instant;

/// The longest first line a host client may send, newline included.
pub const MAX_LINE: usize = 32;

fn result(r: isize) -> io::Result<usize> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

/// A pending connection from the listener, non-blocking; None when there is none.
pub fn accept(listener: &UnixListener) -> io::Result<Option<UnixStream>> {
    // SAFETY: accept4 on a listening socket we own; no address is asked for.
    let fd = unsafe {
        libc::accept4(
            listener.as_raw_fd(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
        )
    };
    if fd < 0 {
        let e = io::Error::last_os_error();
        return match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(None),
            _ if e.raw_os_error() == Some(libc::ECONNABORTED) => Ok(None),
            _ => Err(e),
        };
    }
    // SAFETY: accept4 returned a new descriptor that nothing else owns.
    Ok(Some(unsafe { UnixStream::from_raw_fd(fd) }))
}

/// Connect, non-blocking, to the Unix stream socket at `path`. A listener whose backlog is
/// full (EAGAIN) counts as a refusal.
pub fn connect(path: &Path) -> io::Result<UnixStream> {
    let bytes = path.as_os_str().as_bytes();
    // SAFETY: sockaddr_un is plain data; all zeroes is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    if bytes.len() >= addr.sun_path.len() {
        return Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG));
    }
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    // SAFETY: socket(2) with constant arguments.
    let fd = unsafe {
        libc::socket(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new descriptor that nothing else owns (closed on every path by the drop).
    let stream = unsafe { UnixStream::from_raw_fd(fd) };
    let len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
    // SAFETY: `addr` is a valid sockaddr_un of `len` bytes that outlives the call.
    let r = unsafe { libc::connect(fd, (&addr as *const libc::sockaddr_un).cast(), len) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(stream)
}

/// recv(2), non-blocking; `peek` leaves the bytes in the socket.
pub fn recv(fd: RawFd, buf: &mut [u8], peek: bool) -> io::Result<usize> {
    let flags = libc::MSG_DONTWAIT | if peek { libc::MSG_PEEK } else { 0 };
    loop {
        // SAFETY: `buf` is valid for writes of its length.
        let r = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), flags) };
        match result(r) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// send(2), non-blocking, without SIGPIPE.
pub fn send(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    loop {
        // SAFETY: `buf` is valid for reads of its length.
        let r = unsafe {
            libc::send(
                fd,
                buf.as_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
        match result(r) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// The port of a `CONNECT <port>` line (without its newline; a trailing CR is allowed).
pub fn parse_connect(line: &[u8]) -> Option<u32> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let digits = line.strip_prefix(b"CONNECT ")?;
    if digits.is_empty() || digits.len() > 10 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// An accepted host client that has not sent its whole first line yet.
pub struct Pending {
    pub stream: UnixStream,
    pub deadline: Instant,
    line: [u8; MAX_LINE],
    len: usize,
}

/// What reading a pending client's line came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// Not complete yet.
    More,
    /// A valid line: connect to this guest port. Bytes after the line are still unread.
    Connect(u32),
    /// EOF, an error, an invalid or overlong line: close the client.
    Bad,
}

impl Pending {
    pub fn new(stream: UnixStream, deadline: Instant) -> Self {
        Self {
            stream,
            deadline,
            line: [0; MAX_LINE],
            len: 0,
        }
    }

    /// Consume what the client sent of its line, never past the newline.
    pub fn read_line(&mut self) -> Line {
        let fd = self.stream.as_raw_fd();
        let room = &mut self.line[self.len..];
        let n = match recv(fd, room, true) {
            Ok(0) => return Line::Bad,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Line::More,
            Err(_) => return Line::Bad,
        };
        let end = room[..n].iter().position(|&b| b == b'\n');
        let take = end.map_or(n, |i| i + 1);
        // Consume exactly what was peeked (up to the newline): into the same place.
        match recv(fd, &mut room[..take], false) {
            Ok(m) if m == take => {}
            _ => return Line::Bad,
        }
        self.len += take;
        match end {
            Some(_) => match parse_connect(&self.line[..self.len - 1]) {
                Some(port) => Line::Connect(port),
                None => Line::Bad,
            },
            None if self.len == MAX_LINE => Line::Bad,
            None => Line::More,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_lines() {
        assert_eq!(parse_connect(b"CONNECT 5000"), Some(5000));
        assert_eq!(parse_connect(b"CONNECT 4294967295\r"), Some(u32::MAX));
        for bad in [
            &b"CONNECT 4294967296"[..],
            b"CONNECT ",
            b"CONNECT -1",
            b"CONNECT 12 ",
            b"connect 1",
            b"CONNECT +1",
            b"",
        ] {
            assert_eq!(parse_connect(bad), None, "{bad:?}");
        }
    }
}
