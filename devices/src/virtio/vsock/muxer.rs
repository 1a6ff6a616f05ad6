//! The connections by (local port, peer port), the listener and the host clients still
//! sending their `CONNECT` line, and the packets owed to the guest: per connection (its
//! control packets and data, served round-robin from a ready queue) and RSTs for packets
//! that belong to no connection (a bounded queue).

use std::collections::{BTreeMap, VecDeque};
use std::ffi::OsString;
use std::os::unix::io::AsRawFd;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::conn::{Conn, Next, Verdict};
use super::host::{self, Line, Pending};
use super::packet::*;

/// Live connections plus host clients still sending their first line.
pub const MAX_CONNS: usize = 1024;
/// RSTs waiting for an rx buffer; more are dropped.
const MAX_RSTS: usize = 2 * MAX_CONNS;
/// Host connections accepted per wakeup.
const ACCEPT_BUDGET: usize = 16;
/// For the first line of a host client.
pub const LINE_TIMEOUT: Duration = Duration::from_secs(5);
/// For the guest's answer to a host client's connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Host-initiated connections take local ports from here up.
pub const FIRST_EPHEMERAL: u32 = 1 << 30;
/// How long the listener rests after accept fails (out of descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// (local port, peer port).
pub type Key = (u32, u32);

/// What a pollfd the muxer added stands for.
#[derive(Debug, Clone, Copy)]
pub enum Slot {
    Listener,
    Pending(u64),
    Conn(Key),
}

pub struct Muxer {
    cid: u64,
    /// The listener's path: guest connections to port P go to `<base>_P`.
    base: OsString,
    listener: Arc<UnixListener>,
    listener_rest: Option<Instant>,
    conns: BTreeMap<Key, Conn>,
    pending: BTreeMap<u64, Pending>,
    next_pending: u64,
    ready: VecDeque<Key>,
    rsts: VecDeque<Header>,
    next_port: u32,
}

fn pollfd(fd: i32, events: i16) -> libc::pollfd {
    libc::pollfd {
        fd,
        events,
        revents: 0,
    }
}

impl Muxer {
    pub fn new(cid: u64, path: PathBuf, listener: Arc<UnixListener>) -> Self {
        Self {
            cid,
            base: path.into_os_string(),
            listener,
            listener_rest: None,
            conns: BTreeMap::new(),
            pending: BTreeMap::new(),
            next_pending: 0,
            ready: VecDeque::new(),
            rsts: VecDeque::new(),
            next_port: FIRST_EPHEMERAL,
        }
    }

    fn full(&self) -> bool {
        self.conns.len() + self.pending.len() >= MAX_CONNS
    }

    fn push_rst(&mut self, h: Header) {
        if self.rsts.len() < MAX_RSTS {
            self.rsts.push_back(h);
        } else {
            crate::limited!(warn, "virtio-vsock: too many RSTs pending; one dropped");
        }
    }

    /// Act on a connection's verdict; queue it if it has something for the guest.
    fn settle(&mut self, key: Key, v: Verdict) {
        let Some(c) = self.conns.get_mut(&key) else {
            return;
        };
        let v = if v == Verdict::Keep && c.finished() {
            Verdict::Reset
        } else {
            v
        };
        match v {
            Verdict::Keep => {
                if c.wants_output() && !c.queued {
                    c.queued = true;
                    self.ready.push_back(key);
                }
            }
            Verdict::Reset => {
                let h = c.reset_header();
                self.conns.remove(&key);
                self.push_rst(h);
            }
            Verdict::Drop => {
                self.conns.remove(&key);
            }
        }
    }

    /// The pollfds for the listener, pending clients and connections.
    pub fn poll_set(&self, now: Instant, fds: &mut Vec<libc::pollfd>, slots: &mut Vec<Slot>) {
        if self.listener_rest.is_none_or(|t| t <= now) {
            fds.push(pollfd(self.listener.as_raw_fd(), libc::POLLIN));
            slots.push(Slot::Listener);
        }
        for (id, p) in &self.pending {
            fds.push(pollfd(p.stream.as_raw_fd(), libc::POLLIN));
            slots.push(Slot::Pending(*id));
        }
        for (key, c) in &self.conns {
            if let Some(ev) = c.poll_events() {
                fds.push(pollfd(c.stream.as_raw_fd(), ev));
                slots.push(Slot::Conn(*key));
            }
        }
    }

    pub fn on_poll(&mut self, slot: Slot, revents: i16, now: Instant) {
        match slot {
            Slot::Listener => self.accept(now),
            Slot::Pending(id) => self.read_line(id, now),
            Slot::Conn(key) => {
                if let Some(c) = self.conns.get_mut(&key) {
                    let v = c.on_poll(revents);
                    self.settle(key, v);
                }
            }
        }
    }

    fn accept(&mut self, now: Instant) {
        self.listener_rest = None;
        for _ in 0..ACCEPT_BUDGET {
            match host::accept(&self.listener) {
                Ok(Some(stream)) if self.full() => {
                    crate::limited!(
                        warn,
                        "virtio-vsock: {MAX_CONNS} connections live; a host client was refused"
                    );
                    drop(stream);
                }
                Ok(Some(stream)) => {
                    let id = self.next_pending;
                    self.next_pending += 1;
                    self.pending
                        .insert(id, Pending::new(stream, now + LINE_TIMEOUT));
                }
                Ok(None) => return,
                Err(e) => {
                    crate::limited!(warn, "virtio-vsock: cannot accept a host client: {e}");
                    self.listener_rest = Some(now + ACCEPT_BACKOFF);
                    return;
                }
            }
        }
    }

    /// A local port no live connection uses.
    fn ephemeral_port(&mut self) -> Option<u32> {
        for _ in 0..=MAX_CONNS {
            let p = self.next_port;
            self.next_port = if p == u32::MAX {
                FIRST_EPHEMERAL
            } else {
                p + 1
            };
            if self.conns.range((p, 0)..=(p, u32::MAX)).next().is_none() {
                return Some(p);
            }
        }
        None
    }

    fn read_line(&mut self, id: u64, now: Instant) {
        let Some(p) = self.pending.get_mut(&id) else {
            return;
        };
        match p.read_line() {
            Line::More => {}
            Line::Bad => {
                self.pending.remove(&id);
                crate::limited!(
                    info,
                    "virtio-vsock: a host client did not start with CONNECT <port>; closed"
                );
            }
            Line::Connect(port) => {
                let Some(p) = self.pending.remove(&id) else {
                    return;
                };
                let Some(local) = self.ephemeral_port() else {
                    return;
                };
                let c = Conn::connecting(p.stream, self.cid, local, port, now + CONNECT_TIMEOUT);
                self.conns.insert((local, port), c);
                self.settle((local, port), Verdict::Keep);
            }
        }
    }

    /// Drop host clients and connections whose time is up; returns how long until the
    /// next deadline.
    pub fn expire(&mut self, now: Instant) -> Option<Duration> {
        self.pending.retain(|_, p| p.deadline > now);
        let late: Vec<Key> = self
            .conns
            .iter()
            .filter(|(_, c)| c.deadline.is_some_and(|d| d <= now))
            .map(|(k, _)| *k)
            .collect();
        for key in late {
            self.settle(key, Verdict::Reset);
        }
        let next = self
            .pending
            .values()
            .map(|p| p.deadline)
            .chain(self.conns.values().filter_map(|c| c.deadline))
            .chain(self.listener_rest)
            .min()?;
        Some(next.saturating_duration_since(now))
    }

    /// A packet from the guest.
    pub fn on_guest_packet(&mut self, hdr: &Header, payload: &[u8]) {
        if hdr.src_cid != self.cid || hdr.dst_cid != HOST_CID || hdr.kind != TYPE_STREAM {
            crate::limited!(
                debug,
                "virtio-vsock: packet from cid {} to cid {} of type {} refused",
                hdr.src_cid,
                hdr.dst_cid,
                hdr.kind
            );
            if hdr.op != OP_RST {
                let mut r = hdr.reset_reply();
                r.src_cid = HOST_CID;
                r.dst_cid = self.cid;
                self.push_rst(r);
            }
            return;
        }
        let key = (hdr.dst_port, hdr.src_port);
        match self.conns.get_mut(&key) {
            Some(c) => {
                let v = if hdr.op == OP_REQUEST {
                    Verdict::Reset
                } else {
                    c.on_guest_packet(hdr, payload)
                };
                self.settle(key, v);
            }
            None if hdr.op == OP_REQUEST => self.connect_host(hdr),
            None if hdr.op == OP_RST => {}
            None => self.push_rst(hdr.reset_reply()),
        }
    }

    /// A tx packet whose payload could not be read: reset what it belongs to.
    pub fn bad_packet(&mut self, hdr: &Header) {
        crate::limited!(debug, "virtio-vsock: a tx packet with a bad payload; reset");
        let key = (hdr.dst_port, hdr.src_port);
        let ours = hdr.src_cid == self.cid && hdr.dst_cid == HOST_CID;
        if ours && self.conns.contains_key(&key) {
            self.settle(key, Verdict::Reset);
        } else if hdr.op != OP_RST {
            let mut r = hdr.reset_reply();
            r.src_cid = HOST_CID;
            r.dst_cid = self.cid;
            self.push_rst(r);
        }
    }

    fn connect_host(&mut self, hdr: &Header) {
        if self.full() {
            crate::limited!(
                warn,
                "virtio-vsock: {MAX_CONNS} connections live; a guest request was refused"
            );
            self.push_rst(hdr.reset_reply());
            return;
        }
        let mut path = self.base.clone();
        path.push(format!("_{}", hdr.dst_port));
        match host::connect(path.as_ref()) {
            Ok(stream) => {
                let key = (hdr.dst_port, hdr.src_port);
                self.conns.insert(key, Conn::accepted(stream, hdr));
                self.settle(key, Verdict::Keep);
            }
            Err(e) => {
                crate::limited!(
                    debug,
                    "virtio-vsock: guest connection to port {}: {}: {e}; refused",
                    hdr.dst_port,
                    PathBuf::from(path).display()
                );
                self.push_rst(hdr.reset_reply());
            }
        }
    }

    pub fn has_output(&self) -> bool {
        !self.rsts.is_empty() || !self.ready.is_empty()
    }

    /// The next packet for the guest, with a payload of at most `room` bytes put at the
    /// start of `buf`.
    pub fn next_packet(&mut self, room: usize, buf: &mut [u8]) -> Option<Header> {
        if let Some(h) = self.rsts.pop_front() {
            return Some(h);
        }
        for _ in 0..self.ready.len() {
            let key = self.ready.pop_front()?;
            let Some(c) = self.conns.get_mut(&key) else {
                continue;
            };
            c.queued = false;
            match c.next_packet(room, buf) {
                Next::Packet(h) => {
                    self.settle(key, Verdict::Keep);
                    return Some(h);
                }
                Next::Nothing => self.settle(key, Verdict::Keep),
                Next::Reset => self.settle(key, Verdict::Reset),
            }
            if let Some(h) = self.rsts.pop_front() {
                return Some(h);
            }
        }
        None
    }
}
