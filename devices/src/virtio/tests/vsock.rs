//! virtio-vsock through the transport, the test playing the guest's driver (three queues
//! laid out by hand) and the host's processes (real Unix sockets in a temporary directory).

mod flows;
mod open;

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::{BAR0_ADDR, BAR2_ADDR, F_WRITE};
use crate::pci::config::{COMMAND, COMMAND_MEMORY};
use crate::pci::PciDevice;
use crate::virtio::mock::MockServices;
use crate::virtio::vsock::packet::*;
use crate::virtio::{status, VirtioPciDevice, VirtioVsock, NO_VECTOR};

pub const CID: u64 = 3;
const RAM: usize = 8 << 20;
const QS: u16 = 64;
const RX_BUFS: u64 = 0x10_0000;
pub const RX_LEN: u32 = 0x2000;
const TX_HDR: u64 = 0x40_0000;
const TX_DATA: u64 = 0x40_1000;
/// What the test guest advertises per connection unless told otherwise.
pub const GUEST_BUF: u32 = 1 << 20;

struct Vq {
    base: u64,
    next_desc: u16,
    avail_idx: u16,
    used_seen: u16,
}

impl Vq {
    fn desc(&self) -> u64 {
        self.base
    }
    fn avail(&self) -> u64 {
        self.base + 0x1000
    }
    fn used(&self) -> u64 {
        self.base + 0x2000
    }
}

pub struct Guest {
    pub dev: VirtioPciDevice,
    pub mem: GuestMemoryMmap,
    pub svc: MockServices,
    pub sock: PathBuf,
    pub dir: tempfile::TempDir,
    q: Vec<Vq>,
}

impl Guest {
    /// A device at `<tmp>/v.sock`, activated, with every rx buffer posted.
    pub fn new() -> Self {
        let mut g = Self::inactive();
        g.activate();
        g
    }

    pub fn inactive() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("v.sock");
        let vsock = VirtioVsock::open(CID, &sock).unwrap();
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), RAM)]).unwrap();
        let svc = MockServices::new();
        let mut dev = VirtioPciDevice::new(
            "vsock0".into(),
            Box::new(vsock),
            mem.clone(),
            svc.services(),
            None,
        )
        .unwrap();
        dev.assign_bar(0, BAR0_ADDR);
        dev.assign_bar(2, BAR2_ADDR);
        dev.config_write(COMMAND, &COMMAND_MEMORY.to_le_bytes());
        for bar in dev.bars().iter().filter(|b| b.decoding) {
            dev.bar_mapped(bar).unwrap();
        }
        Self {
            dev,
            mem,
            svc,
            sock,
            dir,
            q: Vec::new(),
        }
    }

    pub fn common_write(&mut self, off: u64, len: usize, v: u64) {
        self.dev.bar_write(0, off, &v.to_le_bytes()[..len]);
    }

    pub fn common_read(&mut self, off: u64, len: usize) -> u64 {
        let mut b = [0u8; 8];
        self.dev.bar_read(0, off, &mut b[..len]);
        u64::from_le_bytes(b)
    }

    /// Reset, negotiate VERSION_1, three queues, DRIVER_OK, rx buffers posted.
    pub fn activate(&mut self) {
        self.common_write(0x14, 1, 0);
        let s = status::ACKNOWLEDGE | status::DRIVER;
        self.common_write(0x14, 1, s.into());
        self.common_write(0x08, 4, 1);
        self.common_write(0x0c, 4, 1);
        self.common_write(0x14, 1, (s | status::FEATURES_OK).into());
        self.mem
            .write_slice(&vec![0u8; 0x30000], GuestAddress(0x10000))
            .unwrap();
        self.q.clear();
        for i in 0..3u16 {
            let base = 0x10000 * (u64::from(i) + 1);
            self.common_write(0x16, 2, i.into());
            assert_eq!(self.common_read(0x18, 2), 256, "max size");
            self.common_write(0x18, 2, QS.into());
            self.common_write(0x1a, 2, NO_VECTOR.into());
            for (off, addr) in [(0x20, base), (0x28, base + 0x1000), (0x30, base + 0x2000)] {
                self.common_write(off, 4, addr & 0xffff_ffff);
                self.common_write(off + 4, 4, addr >> 32);
            }
            self.common_write(0x1c, 2, 1);
            self.q.push(Vq {
                base,
                next_desc: 0,
                avail_idx: 0,
                used_seen: 0,
            });
        }
        for i in 0..QS {
            self.post(
                0,
                &[(RX_BUFS + u64::from(i) * u64::from(RX_LEN), RX_LEN, F_WRITE)],
            );
        }
        self.common_write(
            0x14,
            1,
            (s | status::FEATURES_OK | status::DRIVER_OK).into(),
        );
        assert_ne!(self.common_read(0x14, 1) as u8 & status::DRIVER_OK, 0);
    }

    pub fn notify(&mut self, q: u16) {
        self.dev
            .bar_write(0, 0x3000 + 4 * u64::from(q), &q.to_le_bytes());
    }

    /// A chain on queue `qi` (not notified); returns its head.
    pub fn post(&mut self, qi: usize, descs: &[(u64, u32, u16)]) -> u16 {
        let q = &mut self.q[qi];
        let head = q.next_desc;
        for (i, &(addr, len, flags)) in descs.iter().enumerate() {
            let idx = (q.next_desc + i as u16) % QS;
            let next = (idx + 1) % QS;
            let flags = if i + 1 == descs.len() {
                flags
            } else {
                flags | 1
            };
            let mut raw = [0u8; 16];
            raw[0..8].copy_from_slice(&addr.to_le_bytes());
            raw[8..12].copy_from_slice(&len.to_le_bytes());
            raw[12..14].copy_from_slice(&flags.to_le_bytes());
            raw[14..16].copy_from_slice(&next.to_le_bytes());
            let at = GuestAddress(q.desc() + 16 * u64::from(idx));
            self.mem.write_slice(&raw, at).unwrap();
        }
        q.next_desc = (q.next_desc + descs.len() as u16) % QS;
        let slot = q.avail() + 4 + 2 * u64::from(q.avail_idx % QS);
        self.mem.write_obj(head, GuestAddress(slot)).unwrap();
        q.avail_idx = q.avail_idx.wrapping_add(1);
        self.mem
            .write_obj(q.avail_idx, GuestAddress(q.avail() + 2))
            .unwrap();
        head
    }

    /// The next used entry of queue `qi` within `timeout`: (id, len).
    fn used(&mut self, qi: usize, timeout: Duration) -> Option<(u32, u32)> {
        let deadline = Instant::now() + timeout;
        let q = &self.q[qi];
        loop {
            let idx: u16 = self.mem.read_obj(GuestAddress(q.used() + 2)).unwrap();
            if idx != q.used_seen {
                break;
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let at = q.used() + 4 + 8 * u64::from(q.used_seen % QS);
        let id: u32 = self.mem.read_obj(GuestAddress(at)).unwrap();
        let len: u32 = self.mem.read_obj(GuestAddress(at + 4)).unwrap();
        self.q[qi].used_seen = self.q[qi].used_seen.wrapping_add(1);
        Some((id, len))
    }

    /// The next packet the device sends, within `timeout`; its rx buffer is posted again.
    pub fn try_recv(&mut self, timeout: Duration) -> Option<(Header, Vec<u8>)> {
        let (id, len) = self.used(0, timeout)?;
        // Rx chains are one descriptor each, posted in order: the head is the buffer.
        let addr = RX_BUFS + u64::from(id) * u64::from(RX_LEN);
        let mut raw = vec![0u8; len as usize];
        self.mem.read_slice(&mut raw, GuestAddress(addr)).unwrap();
        let h = Header::parse(raw[..HDR_LEN].try_into().unwrap());
        assert_eq!(
            h.len as usize,
            raw.len() - HDR_LEN,
            "used len = header + payload"
        );
        self.post(0, &[(addr, RX_LEN, F_WRITE)]);
        self.notify(0);
        Some((h, raw[HDR_LEN..].to_vec()))
    }

    pub fn recv(&mut self) -> (Header, Vec<u8>) {
        self.try_recv(Duration::from_secs(10))
            .expect("no packet from the device")
    }

    /// The next packet that is not a credit update.
    pub fn recv_no_update(&mut self) -> (Header, Vec<u8>) {
        loop {
            let p = self.recv();
            if p.0.op != OP_CREDIT_UPDATE {
                return p;
            }
        }
    }

    /// Send a packet on tx (header and payload in descriptors of their own) and wait for
    /// the device to take it.
    pub fn send(&mut self, h: Header, payload: &[u8]) {
        let h = Header {
            len: payload.len() as u32,
            ..h
        };
        self.mem
            .write_slice(&h.to_bytes(), GuestAddress(TX_HDR))
            .unwrap();
        let mut chain = vec![(TX_HDR, HDR_LEN as u32, 0)];
        if !payload.is_empty() {
            self.mem
                .write_slice(payload, GuestAddress(TX_DATA))
                .unwrap();
            chain.push((TX_DATA, payload.len() as u32, 0));
        }
        self.send_chain(&chain);
    }

    pub fn send_chain(&mut self, chain: &[(u64, u32, u16)]) {
        self.post(1, chain);
        self.notify(1);
        self.used(1, Duration::from_secs(10))
            .expect("tx never completed");
    }
}

/// A guest packet from `src_port` (guest) to `dst_port` (host).
pub fn pkt(op: u16, src_port: u32, dst_port: u32) -> Header {
    Header {
        src_cid: CID,
        dst_cid: HOST_CID,
        src_port,
        dst_port,
        len: 0,
        kind: TYPE_STREAM,
        op,
        flags: 0,
        buf_alloc: GUEST_BUF,
        fwd_cnt: 0,
    }
}

/// A host client connected to the device's socket, reads timing out after 10 s.
pub fn client(g: &Guest) -> UnixStream {
    let s = UnixStream::connect(&g.sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// Read exactly `n` bytes.
pub fn read_n(s: &mut UnixStream, n: usize) -> Vec<u8> {
    let mut b = vec![0u8; n];
    s.read_exact(&mut b).unwrap();
    b
}

/// The stream ends (EOF or reset) within its read timeout.
pub fn assert_closed(s: &mut UnixStream) {
    let mut b = [0u8; 64];
    match s.read(&mut b) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("stream still open: {other:?}"),
    }
}

/// Connect a host client to guest `port` and complete the handshake; returns the client
/// and the device's local port.
pub fn host_connect(g: &mut Guest, port: u32) -> (UnixStream, u32) {
    let mut s = client(g);
    s.write_all(format!("CONNECT {port}\n").as_bytes()).unwrap();
    let (h, _) = g.recv();
    assert_eq!(
        (h.op, h.src_cid, h.dst_cid, h.dst_port),
        (OP_REQUEST, HOST_CID, CID, port)
    );
    assert!(h.src_port >= 1 << 30, "ephemeral port {}", h.src_port);
    assert_eq!(h.buf_alloc, crate::virtio::vsock::BUF_ALLOC);
    g.send(pkt(OP_RESPONSE, port, h.src_port), &[]);
    let ok = format!("OK {}\n", h.src_port);
    assert_eq!(read_n(&mut s, ok.len()), ok.as_bytes());
    (s, h.src_port)
}

/// A host listener at `<socket>_<port>`.
pub fn host_listener(g: &Guest, port: u32) -> UnixListener {
    let mut p = g.sock.clone().into_os_string();
    p.push(format!("_{port}"));
    UnixListener::bind(PathBuf::from(p)).unwrap()
}
