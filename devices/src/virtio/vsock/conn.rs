//! One stream connection between a guest port and a host Unix stream: its state, the
//! control packets it owes the guest, and credit accounting both ways (virtio 1.2
//! §5.10.6.3).
//!
//! Guest → host: payload goes straight to the host stream; what the stream does not take
//! waits in a buffer that the credit we advertise ([`BUF_ALLOC`]) bounds: the guest may
//! have at most that many bytes sent and not yet forwarded (`rx_cnt - fwd_cnt`), and a
//! guest that sends more is reset. Host → guest: we read the stream only when the guest
//! has credit for it (`peer_buf_alloc - (tx_cnt - peer_fwd_cnt)`) and an rx buffer.

use std::io;
use std::net::Shutdown;
use std::os::unix::io::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::Instant;

use super::host;
use super::packet::*;

/// The receive buffer we advertise per connection.
pub const BUF_ALLOC: u32 = 256 << 10;
/// Forwarded bytes after which we tell the guest (a credit update) unasked.
const UPDATE_AFTER: u32 = BUF_ALLOC / 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Host-initiated: our REQUEST is out, the guest's RESPONSE is awaited.
    Connecting,
    Established,
}

/// What the connection's owner should do with it after an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Keep,
    /// Send the guest an RST and forget the connection.
    Reset,
    /// Forget it silently (the guest reset it).
    Drop,
}

/// The next thing a connection sends the guest.
pub enum Next {
    /// A header; its payload (`len` bytes) is at the start of the caller's buffer.
    Packet(Header),
    Nothing,
    Reset,
}

pub struct Conn {
    pub stream: UnixStream,
    guest_cid: u64,
    local_port: u32,
    peer_port: u32,
    state: State,
    /// Host-initiated and not answered by then: give up.
    pub deadline: Option<Instant>,
    /// In the owner's ready queue.
    pub queued: bool,
    send_request: bool,
    send_response: bool,
    send_update: bool,
    send_shutdown: bool,
    credit_requested: bool,
    /// The host stream has data (or EOF) we have not read yet.
    host_readable: bool,
    /// Nothing more goes to the guest (host EOF, or the guest shut its receive side).
    to_guest_done: bool,
    /// The guest sends no more.
    from_guest_done: bool,
    host_write_shut: bool,
    /// For the host stream: our own bytes (`ctrl` of them, the OK line) then guest data.
    buf: Vec<u8>,
    ctrl: usize,
    rx_cnt: u32,
    fwd_cnt: u32,
    fwd_sent: u32,
    tx_cnt: u32,
    peer_buf_alloc: u32,
    peer_fwd_cnt: u32,
}

impl Conn {
    fn new(stream: UnixStream, guest_cid: u64, local_port: u32, peer_port: u32) -> Self {
        Self {
            stream,
            guest_cid,
            local_port,
            peer_port,
            state: State::Connecting,
            deadline: None,
            queued: false,
            send_request: false,
            send_response: false,
            send_update: false,
            send_shutdown: false,
            credit_requested: false,
            host_readable: false,
            to_guest_done: false,
            from_guest_done: false,
            host_write_shut: false,
            buf: Vec::new(),
            ctrl: 0,
            rx_cnt: 0,
            fwd_cnt: 0,
            fwd_sent: 0,
            tx_cnt: 0,
            peer_buf_alloc: 0,
            peer_fwd_cnt: 0,
        }
    }

    /// A host client asked for guest port `peer_port`: a REQUEST goes out.
    pub fn connecting(s: UnixStream, cid: u64, local: u32, peer: u32, deadline: Instant) -> Self {
        let mut c = Self::new(s, cid, local, peer);
        c.send_request = true;
        c.deadline = Some(deadline);
        c
    }

    /// The guest's REQUEST `hdr` reached a host listener: a RESPONSE goes out.
    pub fn accepted(stream: UnixStream, hdr: &Header) -> Self {
        let mut c = Self::new(stream, hdr.src_cid, hdr.dst_port, hdr.src_port);
        c.state = State::Established;
        c.send_response = true;
        c.peer_buf_alloc = hdr.buf_alloc;
        c.peer_fwd_cnt = hdr.fwd_cnt;
        c
    }

    fn peer_credit(&self) -> u32 {
        let in_flight = self.tx_cnt.wrapping_sub(self.peer_fwd_cnt);
        self.peer_buf_alloc.saturating_sub(in_flight)
    }

    fn data_waiting(&self) -> bool {
        self.state == State::Established && self.host_readable && !self.to_guest_done
    }

    /// Whether [`Conn::next_packet`] may have something.
    pub fn wants_output(&self) -> bool {
        self.send_request
            || self.send_response
            || self.state == State::Established && (self.send_update || self.send_shutdown)
            || self.data_waiting() && (self.peer_credit() > 0 || !self.credit_requested)
    }

    /// Every packet (of ours) is sent the guest's way, and nothing more will be.
    pub fn finished(&self) -> bool {
        self.state == State::Established
            && self.from_guest_done
            && self.to_guest_done
            && self.buf.is_empty()
            && !self.send_shutdown
            && !self.send_response
    }

    /// The poll(2) events to wait for on the host stream; None: leave it out (it has
    /// unread data we wait to send, and a hang-up would only wake us again).
    pub fn poll_events(&self) -> Option<i16> {
        let mut ev = 0;
        if !self.buf.is_empty() {
            ev |= libc::POLLOUT;
        }
        if self.state == State::Established && !self.to_guest_done && !self.host_readable {
            ev |= libc::POLLIN;
        }
        (ev != 0 || !self.host_readable).then_some(ev)
    }

    pub fn on_poll(&mut self, revents: i16) -> Verdict {
        if revents & libc::POLLERR != 0 {
            return Verdict::Reset;
        }
        if revents & libc::POLLOUT != 0 && self.flush() == Verdict::Reset {
            return Verdict::Reset;
        }
        if revents & (libc::POLLIN | libc::POLLHUP) != 0 {
            if self.state == State::Established && !self.to_guest_done {
                self.host_readable = true;
            } else if revents & libc::POLLHUP != 0 {
                // The client is gone and there is nothing left to read.
                return Verdict::Reset;
            }
        }
        Verdict::Keep
    }

    fn header(&mut self, op: u16, len: u32) -> Header {
        self.fwd_sent = self.fwd_cnt;
        self.send_update = false;
        if op == OP_RW {
            self.tx_cnt = self.tx_cnt.wrapping_add(len);
        }
        Header {
            src_cid: HOST_CID,
            dst_cid: self.guest_cid,
            src_port: self.local_port,
            dst_port: self.peer_port,
            len,
            kind: TYPE_STREAM,
            op,
            flags: if op == OP_SHUTDOWN { SHUTDOWN_SEND } else { 0 },
            buf_alloc: BUF_ALLOC,
            fwd_cnt: self.fwd_cnt,
        }
    }

    /// The next packet for the guest, its payload (at most `room` bytes) read into `buf`.
    pub fn next_packet(&mut self, room: usize, buf: &mut [u8]) -> Next {
        if std::mem::take(&mut self.send_request) {
            return Next::Packet(self.header(OP_REQUEST, 0));
        }
        if std::mem::take(&mut self.send_response) {
            return Next::Packet(self.header(OP_RESPONSE, 0));
        }
        if self.state != State::Established {
            return Next::Nothing;
        }
        if self.data_waiting() {
            let credit = self.peer_credit();
            if credit == 0 {
                if !std::mem::replace(&mut self.credit_requested, true) {
                    return Next::Packet(self.header(OP_CREDIT_REQUEST, 0));
                }
            } else if room > 0 {
                let n = room.min(credit as usize).min(MAX_PAYLOAD).min(buf.len());
                match host::recv(self.stream.as_raw_fd(), &mut buf[..n], false) {
                    Ok(0) => {
                        self.host_readable = false;
                        self.to_guest_done = true;
                        self.send_shutdown = true;
                    }
                    // n ≤ MAX_PAYLOAD fits in u32.
                    Ok(got) => {
                        // A short read drained the stream: poll it again.
                        self.host_readable = got == n;
                        return Next::Packet(self.header(OP_RW, got as u32));
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.host_readable = false,
                    Err(_) => return Next::Reset,
                }
            }
        }
        if std::mem::take(&mut self.send_shutdown) {
            return Next::Packet(self.header(OP_SHUTDOWN, 0));
        }
        if self.send_update {
            return Next::Packet(self.header(OP_CREDIT_UPDATE, 0));
        }
        Next::Nothing
    }

    /// Write what is buffered for the host; shut its write side once the guest is done.
    pub fn flush(&mut self) -> Verdict {
        while !self.buf.is_empty() {
            match host::send(self.stream.as_raw_fd(), &self.buf) {
                Ok(n) => {
                    let ours = n.min(self.ctrl);
                    self.ctrl -= ours;
                    // n - ours ≤ the buffer, bounded by BUF_ALLOC: fits in u32.
                    self.fwd_cnt = self.fwd_cnt.wrapping_add((n - ours) as u32);
                    self.buf.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => return Verdict::Reset,
            }
        }
        if self.buf.is_empty() && self.from_guest_done && !self.host_write_shut {
            self.host_write_shut = true;
            let _ = self.stream.shutdown(Shutdown::Write);
        }
        if self.fwd_cnt.wrapping_sub(self.fwd_sent) >= UPDATE_AFTER {
            self.send_update = true;
        }
        Verdict::Keep
    }

    /// A packet from the guest for this connection.
    pub fn on_guest_packet(&mut self, hdr: &Header, payload: &[u8]) -> Verdict {
        self.peer_buf_alloc = hdr.buf_alloc;
        self.peer_fwd_cnt = hdr.fwd_cnt;
        if self.peer_credit() > 0 {
            self.credit_requested = false;
        }
        let established = self.state == State::Established;
        match hdr.op {
            OP_RST => Verdict::Drop,
            OP_RESPONSE if !established && !self.send_request => {
                self.state = State::Established;
                self.deadline = None;
                let ok = format!("OK {}\n", self.local_port);
                self.ctrl += ok.len();
                self.buf.extend_from_slice(ok.as_bytes());
                self.flush()
            }
            OP_RW if established && !self.from_guest_done => {
                let unforwarded = self.rx_cnt.wrapping_sub(self.fwd_cnt) as usize;
                if unforwarded + payload.len() > BUF_ALLOC as usize {
                    crate::limited!(
                        warn,
                        "virtio-vsock: guest port {} sent beyond its credit; connection reset",
                        self.peer_port
                    );
                    return Verdict::Reset;
                }
                // payload ≤ MAX_PAYLOAD fits in u32.
                self.rx_cnt = self.rx_cnt.wrapping_add(payload.len() as u32);
                self.buf.extend_from_slice(payload);
                self.flush()
            }
            OP_CREDIT_UPDATE if established => Verdict::Keep,
            OP_CREDIT_REQUEST if established => {
                self.send_update = true;
                Verdict::Keep
            }
            OP_SHUTDOWN if established => {
                if hdr.flags & SHUTDOWN_RCV != 0 {
                    self.to_guest_done = true;
                    self.host_readable = false;
                    self.send_shutdown = false;
                }
                if hdr.flags & SHUTDOWN_SEND != 0 {
                    self.from_guest_done = true;
                    return self.flush();
                }
                Verdict::Keep
            }
            _ => {
                crate::limited!(
                    debug,
                    "virtio-vsock: op {} out of place on guest port {}; connection reset",
                    hdr.op,
                    self.peer_port
                );
                Verdict::Reset
            }
        }
    }

    /// The RST that ends this connection.
    pub fn reset_header(&self) -> Header {
        Header {
            src_cid: HOST_CID,
            dst_cid: self.guest_cid,
            src_port: self.local_port,
            dst_port: self.peer_port,
            kind: TYPE_STREAM,
            op: OP_RST,
            ..Header::default()
        }
    }
}
