//! The small HTTP/1.1 subset the API speaks: one request per connection, bodies sized by
//! `Content-Length` (no chunked encoding), bounded header and body sizes, JSON responses
//! that close the connection.

use std::io::{self, Read, Write};

/// Request line plus headers may not exceed this.
pub const MAX_HEAD: usize = 8 * 1024;
/// Bodies may not exceed this.
pub const MAX_BODY: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// The path without query string.
    pub path: String,
    pub body: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// Extra headers (Content-Type, Content-Length and Connection are always sent).
    pub headers: Vec<(&'static str, String)>,
    /// JSON text.
    pub body: String,
}

impl Response {
    /// `body` as JSON (keys in the order it serializes them).
    pub fn json(status: u16, body: &impl serde::Serialize) -> Self {
        match serde_json::to_string(body) {
            Ok(body) => Self {
                status,
                headers: Vec::new(),
                body,
            },
            Err(e) => Self::error(
                500,
                format!("cannot encode the reply ({e}); this is a zhitong bug, please report it"),
            ),
        }
    }

    /// `{"error": line}`: one line naming the cause and the fix.
    pub fn error(status: u16, line: impl Into<String>) -> Self {
        Self::json(status, &serde_json::json!({ "error": line.into() }))
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    pub fn write_to(&self, w: &mut impl Write) -> io::Result<()> {
        let mut head = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
            self.status,
            reason(self.status),
            self.body.len()
        );
        for (name, value) in &self.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        w.write_all(head.as_bytes())?;
        w.write_all(self.body.as_bytes())?;
        w.flush()
    }
}

pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

/// Why a request could not be read; each maps to an error response (or to closing the
/// connection when the client is gone).
#[derive(Debug)]
pub enum ReadError {
    /// The client went away or timed out: no response is possible or useful.
    Io(io::Error),
    /// A response the client should get.
    Reply(Response),
}

fn bad(line: &str) -> ReadError {
    ReadError::Reply(Response::error(400, line))
}

/// Read one request. Never reads more than `MAX_HEAD + MAX_BODY` bytes and the blank line
/// that ends the head.
pub fn read_request(r: &mut impl Read) -> Result<Request, ReadError> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let head_end = loop {
        if let Some(end) = find_head_end(&buf) {
            break end;
        }
        if buf.len() > MAX_HEAD {
            return Err(ReadError::Reply(Response::error(
                431,
                format!("the request head is over {MAX_HEAD} bytes; send shorter headers"),
            )));
        }
        match r.read(&mut chunk) {
            Ok(0) if buf.is_empty() => {
                return Err(ReadError::Io(io::ErrorKind::UnexpectedEof.into()))
            }
            Ok(0) => return Err(bad("the request ended before its headers did; send a complete HTTP/1.1 request ending its headers with an empty line")),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if is_timeout(&e) && !buf.is_empty() => {
                return Err(ReadError::Reply(Response::error(
                    408,
                    "the request head did not arrive in time; send the whole request at once",
                )))
            }
            Err(e) => return Err(ReadError::Io(e)),
        }
    };
    if head_end > MAX_HEAD {
        return Err(ReadError::Reply(Response::error(
            431,
            format!("the request head is over {MAX_HEAD} bytes; send shorter headers"),
        )));
    }
    let head = std::str::from_utf8(&buf[..head_end])
        .map_err(|_| bad("the request head is not UTF-8; send an ASCII HTTP/1.1 request"))?;
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (method, target, version) = match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(m), Some(t), Some(v), None) if !m.is_empty() && !t.is_empty() => (m, t, v),
        _ => {
            return Err(bad(
                "malformed request line; send 'METHOD /path HTTP/1.1', e.g. 'GET /vm HTTP/1.1'",
            ))
        }
    };
    if !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(bad("malformed method; use GET or PUT"));
    }
    if !version.starts_with("HTTP/1.") {
        return Err(ReadError::Reply(Response::error(
            505,
            format!("{version:?} is not supported; speak HTTP/1.1"),
        )));
    }
    if !target.starts_with('/') {
        return Err(bad("the request target must be a path; use e.g. /vm"));
    }
    let path = target.split(['?', '#']).next().unwrap_or(target).to_owned();
    let method = method.to_owned();

    let mut content_length: Option<usize> = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Err(bad("malformed header line; use 'Name: value'"));
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            let n: usize = value
                .parse()
                .map_err(|_| bad("bad Content-Length; give the body size in bytes"))?;
            if content_length.is_some_and(|old| old != n) {
                return Err(bad("conflicting Content-Length headers; send one"));
            }
            content_length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(ReadError::Reply(Response::error(
                411,
                "chunked bodies are not supported; send the body with a Content-Length",
            )));
        }
    }
    let length = content_length.unwrap_or(0);
    if length > MAX_BODY {
        return Err(ReadError::Reply(Response::error(
            413,
            format!("the body is {length} bytes, over the {MAX_BODY}-byte limit; send a smaller JSON body"),
        )));
    }
    let mut body = buf[head_end + 4..].to_vec();
    if body.len() > length {
        body.truncate(length);
    }
    while body.len() < length {
        let want = (length - body.len()).min(chunk.len());
        match r.read(&mut chunk[..want]) {
            Ok(0) => {
                return Err(bad(
                    "the body is shorter than its Content-Length; send the whole body",
                ))
            }
            Ok(n) => body.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if is_timeout(&e) => {
                return Err(ReadError::Reply(Response::error(
                    408,
                    "the body did not arrive in time; send Content-Length bytes promptly",
                )))
            }
            Err(e) => return Err(ReadError::Io(e)),
        }
    }
    Ok(Request { method, path, body })
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n")
}

/// A response as the client reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientResponse {
    pub status: u16,
    pub body: String,
}

/// Parse a whole response (the server closes the connection after it).
pub fn parse_response(bytes: &[u8]) -> Result<ClientResponse, String> {
    let end = find_head_end(bytes).ok_or("the response has no end of headers")?;
    let head = std::str::from_utf8(&bytes[..end]).map_err(|_| "the response head is not UTF-8")?;
    let status_line = head.split("\r\n").next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let status = match (parts.next(), parts.next()) {
        (Some(v), Some(code)) if v.starts_with("HTTP/1.") => code
            .parse::<u16>()
            .map_err(|_| format!("bad status line {status_line:?}"))?,
        _ => return Err(format!("bad status line {status_line:?}")),
    };
    let body = String::from_utf8_lossy(&bytes[end + 4..]).into_owned();
    Ok(ClientResponse { status, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(bytes: &[u8]) -> Result<Request, ReadError> {
        read_request(&mut &bytes[..])
    }

    fn status(bytes: &[u8]) -> u16 {
        match read(bytes) {
            Err(ReadError::Reply(r)) => {
                let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
                let line = v["error"].as_str().unwrap();
                assert!(!line.contains('\n') && line.contains(';'), "{line}");
                r.status
            }
            other => panic!("expected an error reply, got {other:?}"),
        }
    }

    #[test]
    fn parses_a_request_with_a_body() {
        let req = read(
            b"PUT /vm/shutdown?x=1 HTTP/1.1\r\nHost: localhost\r\ncontent-length: 16\r\n\r\n{\"timeout_s\": 5}",
        )
        .unwrap();
        assert_eq!(req.method, "PUT");
        assert_eq!(req.path, "/vm/shutdown");
        assert_eq!(req.body, b"{\"timeout_s\": 5}");
        let req = read(b"GET /vm HTTP/1.0\r\n\r\n").unwrap();
        assert_eq!((req.method.as_str(), req.body.len()), ("GET", 0));
    }

    #[test]
    fn garbage_gets_a_4xx_never_a_panic() {
        assert_eq!(status(b"GET /vm HTTP/1.1\r\nHost: x\r\n"), 400);
        assert_eq!(status(b"\r\n\r\n"), 400);
        assert_eq!(status(b"GET\r\n\r\n"), 400);
        assert_eq!(status(b"GET /vm HTTP/1.1 extra\r\n\r\n"), 400);
        assert_eq!(status(b"get /vm HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(status(b"GET vm HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(status(b"GET /vm HTTP/2\r\n\r\n"), 505);
        assert_eq!(status(b"GET /vm HTTP/1.1\r\nnocolon\r\n\r\n"), 400);
        assert_eq!(status(b"GET /\xff\xfe HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(
            status(b"PUT /vm HTTP/1.1\r\nContent-Length: -1\r\n\r\n"),
            400
        );
        assert_eq!(
            status(b"PUT /vm HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n"),
            400
        );
        assert_eq!(
            status(b"PUT /vm HTTP/1.1\r\nContent-Length: 10\r\n\r\n{}"),
            400
        );
        assert_eq!(
            status(b"PUT /vm HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n{}"),
            400
        );
        assert_eq!(
            status(b"PUT /vm HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
            411
        );
        assert_eq!(
            status(b"PUT /vm HTTP/1.1\r\nContent-Length: 10000000\r\n\r\n"),
            413
        );
    }

    #[test]
    fn huge_heads_are_cut_off() {
        let mut req = b"GET /vm HTTP/1.1\r\nX: ".to_vec();
        req.extend_from_slice(&vec![b'a'; MAX_HEAD * 4]);
        req.extend_from_slice(b"\r\n\r\n");
        assert_eq!(status(&req), 431);
        // Endless header bytes without a blank line: stops reading after the limit.
        let mut endless = std::io::repeat(b'a');
        assert!(matches!(
            read_request(&mut endless),
            Err(ReadError::Reply(Response { status: 431, .. }))
        ));
    }

    #[test]
    fn every_truncation_of_a_request_is_handled() {
        let full = b"PUT /vm/shutdown HTTP/1.1\r\nContent-Length: 16\r\n\r\n{\"timeout_s\": 5}";
        for n in 0..full.len() {
            match read(&full[..n]) {
                Err(ReadError::Io(_)) => assert_eq!(n, 0),
                Err(ReadError::Reply(r)) => assert_eq!(r.status, 400, "at {n}"),
                Ok(r) => panic!("truncated at {n} parsed as {r:?}"),
            }
        }
        assert!(read(full).is_ok());
    }

    #[test]
    fn pseudo_random_bytes_never_panic() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for len in 0..400 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    // Any byte, with CR, LF, space and ':' often.
                    match x % 8 {
                        0..=3 => (x >> 8) as u8,
                        4 => b'\r',
                        5 => b'\n',
                        6 => b' ',
                        _ => b':',
                    }
                })
                .collect();
            let _ = read(&bytes);
        }
    }

    #[test]
    fn responses_round_trip() {
        let r = Response::error(405, "PUT only; use PUT").with_header("Allow", "PUT");
        let mut out = Vec::new();
        r.write_to(&mut out).unwrap();
        let text = String::from_utf8(out.clone()).unwrap();
        assert!(
            text.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"),
            "{text}"
        );
        assert!(text.contains("\r\nAllow: PUT\r\n"), "{text}");
        assert!(text.contains("Content-Length: 29\r\n"), "{text}");
        let parsed = parse_response(&out).unwrap();
        assert_eq!(parsed.status, 405);
        assert_eq!(parsed.body, r.body);
        assert!(parse_response(b"garbage").is_err());
        assert!(parse_response(b"HTTP/1.1 abc\r\n\r\n").is_err());
    }
}
