//! virtio-vsock (`devices::virtio::vsock`) through the virtio-pci transport, with real Unix
//! sockets on the host side: a `VirtioPciDevice` over a `VirtioVsock` (CID 3) whose socket is
//! in the temporary directory, a listener at `<socket>_6000` for guest connections, 320 KiB
//! of guest RAM with the three queues (16 entries) set up and the device activated.
//!
//! Ops (`kind % 12`): 0 a guest tx packet (header fields from `value`: op, wrong CIDs or
//! type, ports from small sets (guest 1000/1001/5000/5001, host 6000/6001 and the first
//! ephemeral ports) so they meet live connections, length, flags, credit; the
//! chain's shape from `width`: one descriptor, header + payload, a split header, or a
//! write-only payload); 1 rx buffers (count, size, writable or not, split); 2 a queue
//! notify; 3 a host client connects; 4 a host client writes (`CONNECT <port>\n`, a big
//! block, or raw bytes); 5 a host client shuts its write side or closes; 6 the `_6000`
//! listener accepts; 7 host clients read what is there; 8 wait (up to 2 ms) for an rx
//! completion; 9 guest RAM write of `width` bytes (rings, buffers); 10 driver reset
//! (worker joined), then maybe reactivation; 11 the guest answers the last REQUEST it got
//! (RESPONSE or RST).
//!
//! Checked: nothing panics (here or in the worker); a reset joins the worker; dropping the
//! device joins it, leaves no ioeventfd behind and removes the socket file.

#![no_main]

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use devices::pci::PciDevice;
use devices::virtio::mock::MockServices;
use devices::virtio::{VirtioPciDevice, VirtioVsock};
use libfuzzer_sys::fuzz_target;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use zhitong_fuzz::ops;

const RAM: usize = 0x5_0000;
const CID: u64 = 3;
const QS: u16 = 16;
const TX_HDR: u64 = 0x1_0000;
const TX_DATA: u64 = 0x1_0100;
const RX_BUFS: u64 = 0x3_0000;
const FIRST_EPHEMERAL: u32 = 1 << 30;

fn desc_at(q: u16) -> u64 {
    0x1000 + 0x3000 * u64::from(q)
}

struct Guest {
    dev: VirtioPciDevice,
    mem: GuestMemoryMmap,
    next: [u16; 3],
    avail: [u16; 3],
    rx_seen: u16,
}

impl Guest {
    fn common(&mut self, off: u64, len: usize, v: u64) {
        self.dev.bar_write(0, off, &v.to_le_bytes()[..len]);
    }

    fn activate(&mut self) {
        self.common(0x14, 1, 0);
        self.common(0x14, 1, 3);
        self.common(0x08, 4, 1);
        self.common(0x0c, 4, 1);
        self.common(0x14, 1, 0xb);
        self.mem
            .write_slice(&[0u8; 0x9000], GuestAddress(0x1000))
            .unwrap();
        self.next = [0; 3];
        self.avail = [0; 3];
        self.rx_seen = 0;
        for q in 0..3u16 {
            let d = desc_at(q);
            self.common(0x16, 2, q.into());
            self.common(0x18, 2, QS.into());
            self.common(0x1a, 2, 0xffff);
            for (off, a) in [(0x20, d), (0x28, d + 0x1000), (0x30, d + 0x2000)] {
                self.common(off, 4, a);
                self.common(off + 4, 4, 0);
            }
            self.common(0x1c, 2, 1);
        }
        for _ in 0..8 {
            let i = self.next[0];
            self.post(0, &[(RX_BUFS + 0x1000 * u64::from(i), 0x1000, 2)]);
        }
        self.common(0x14, 1, 0xf);
    }

    fn post(&mut self, q: usize, descs: &[(u64, u32, u16)]) {
        let head = self.next[q];
        for (i, &(addr, len, flags)) in descs.iter().enumerate() {
            let idx = (head + i as u16) % QS;
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
            let at = desc_at(q as u16) + 16 * u64::from(idx);
            self.mem.write_slice(&raw, GuestAddress(at)).unwrap();
        }
        self.next[q] = (head + descs.len() as u16) % QS;
        let avail = desc_at(q as u16) + 0x1000;
        let slot = avail + 4 + 2 * u64::from(self.avail[q] % QS);
        self.mem.write_obj(head, GuestAddress(slot)).unwrap();
        self.avail[q] = self.avail[q].wrapping_add(1);
        self.mem
            .write_obj(self.avail[q], GuestAddress(avail + 2))
            .unwrap();
    }

    fn notify(&mut self, q: u16) {
        self.dev
            .bar_write(0, 0x3000 + 4 * u64::from(q), &q.to_le_bytes());
    }

    fn rx_used(&self) -> u16 {
        self.mem
            .read_obj(GuestAddress(desc_at(0) + 0x2002))
            .unwrap()
    }

    /// The newest REQUEST header among the rx completions not looked at yet.
    fn last_request(&mut self) -> Option<[u8; 44]> {
        let mut found = None;
        let used = self.rx_used();
        while self.rx_seen != used {
            let at = desc_at(0) + 0x2004 + 8 * u64::from(self.rx_seen % QS);
            self.rx_seen = self.rx_seen.wrapping_add(1);
            let id: u32 = self.mem.read_obj(GuestAddress(at)).unwrap();
            let d = desc_at(0) + 16 * u64::from(id % u32::from(QS));
            let addr: u64 = self.mem.read_obj(GuestAddress(d)).unwrap();
            let mut h = [0u8; 44];
            if self.mem.read_slice(&mut h, GuestAddress(addr)).is_ok() && h[30] == 1 {
                found = Some(h);
            }
        }
        found
    }

    fn send(&mut self, hdr: &[u8; 44], payload_len: usize, width: usize) {
        self.mem.write_slice(hdr, GuestAddress(TX_HDR)).unwrap();
        let n = payload_len as u32;
        match width {
            1 => {
                self.mem
                    .write_slice(hdr, GuestAddress(TX_DATA - 44))
                    .unwrap();
                self.post(1, &[(TX_DATA - 44, 44 + n, 0)]);
            }
            2 => self.post(1, &[(TX_HDR, 44, 0), (TX_DATA, n, 0)]),
            4 => self.post(1, &[(TX_HDR, 20, 0), (TX_HDR + 20, 24, 0), (TX_DATA, n, 0)]),
            _ => self.post(1, &[(TX_HDR, 44, 0), (TX_DATA, n, 2)]),
        }
        self.notify(1);
    }
}

fn header(op: zhitong_fuzz::Op) -> ([u8; 44], usize) {
    let v = op.value;
    let mut h = [0u8; 44];
    let src_cid = if v & 0x10 != 0 {
        u64::from(op.addr)
    } else {
        CID
    };
    let dst_cid = if v & 0x20 != 0 {
        u64::from(op.addr >> 8)
    } else {
        2
    };
    let kind: u16 = if v & 0x40 != 0 {
        (op.addr >> 16) as u16
    } else {
        1
    };
    let src_port: u32 = [1000, 1001, 5000, 5001][((v >> 8) & 3) as usize];
    let dst_port = match (v >> 10) & 7 {
        0 | 1 => 6000,
        2 => 6001,
        s => FIRST_EPHEMERAL + s as u32 - 3,
    };
    let payload = ((v >> 16) & 0xffff) as usize;
    let len = if v & 0x80 != 0 {
        (v >> 16) as u32
    } else {
        payload as u32
    };
    h[0..8].copy_from_slice(&src_cid.to_le_bytes());
    h[8..16].copy_from_slice(&dst_cid.to_le_bytes());
    h[16..20].copy_from_slice(&src_port.to_le_bytes());
    h[20..24].copy_from_slice(&dst_port.to_le_bytes());
    h[24..28].copy_from_slice(&len.to_le_bytes());
    h[28..30].copy_from_slice(&kind.to_le_bytes());
    h[30..32].copy_from_slice(&((v & 0xf) as u16).to_le_bytes());
    h[32..36].copy_from_slice(&(((v >> 32) & 3) as u32).to_le_bytes());
    h[36..40].copy_from_slice(&((v >> 34) as u32 & 0x7_ffff).to_le_bytes());
    h[40..44].copy_from_slice(&op.addr.to_le_bytes());
    (h, payload)
}

fn sock_path() -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("zfv{}-{n}.sock", std::process::id()))
}

fuzz_target!(|data: &[u8]| {
    let sock = sock_path();
    let vsock = VirtioVsock::open(CID, &sock).unwrap();
    let mut port = sock.clone().into_os_string();
    port.push("_6000");
    let port = PathBuf::from(port);
    let _ = std::fs::remove_file(&port);
    let listener = UnixListener::bind(&port).unwrap();
    listener.set_nonblocking(true).unwrap();
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), RAM)]).unwrap();
    let svc = MockServices::new();
    let mut dev = VirtioPciDevice::new(
        "fuzz".into(),
        Box::new(vsock),
        mem.clone(),
        svc.services(),
        None,
    )
    .unwrap();
    dev.assign_bar(0, 0xc000_0000);
    dev.assign_bar(2, 0xc001_0000);
    dev.config_write(4, &2u16.to_le_bytes());
    for bar in dev.bars().iter().filter(|b| b.decoding) {
        dev.bar_mapped(bar).unwrap();
    }
    let mut g = Guest {
        dev,
        mem: mem.clone(),
        next: [0; 3],
        avail: [0; 3],
        rx_seen: 0,
    };
    g.activate();
    let mut streams: Vec<UnixStream> = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    for op in ops(data) {
        let v = op.value;
        let pick = |n: usize| op.addr as usize % n.max(1);
        match op.kind % 12 {
            0 => {
                let (h, payload) = header(op);
                let bytes: Vec<u8> = (0..payload).map(|i| (i as u8) ^ (v as u8)).collect();
                mem.write_slice(&bytes, GuestAddress(TX_DATA)).unwrap();
                g.send(&h, payload, op.width);
            }
            1 => {
                for _ in 0..(v & 3) + 1 {
                    let i = g.next[0];
                    let size = match (v >> 2) & 3 {
                        0 => 44,
                        1 => 60,
                        2 => 0x1000,
                        _ => op.addr & 0xffff,
                    };
                    let flags = if v & 0x10 != 0 { 0 } else { 2 };
                    let at = RX_BUFS + 0x1000 * u64::from(i);
                    if v & 0x20 != 0 {
                        g.post(0, &[(at, 30, flags), (at + 30, size, flags)]);
                    } else {
                        g.post(0, &[(at, size, flags)]);
                    }
                }
            }
            2 => g.notify((op.addr % 3) as u16),
            3 if streams.len() < 16 => {
                if let Ok(s) = UnixStream::connect(&sock) {
                    s.set_nonblocking(true).unwrap();
                    streams.push(s);
                }
            }
            4 if !streams.is_empty() => {
                let i = pick(streams.len());
                let bytes = if v & 1 != 0 {
                    let port = match (v >> 1) & 3 {
                        0 | 1 => 5000,
                        2 => 6000,
                        _ => (v >> 8) as u32,
                    };
                    format!("CONNECT {port}\n").into_bytes()
                } else if v & 2 != 0 {
                    vec![v as u8; ((v >> 16) & 0xffff) as usize]
                } else {
                    op.data(op.width)
                };
                let _ = streams[i].write(&bytes);
            }
            5 if !streams.is_empty() => {
                let i = pick(streams.len());
                if v & 1 != 0 {
                    let _ = streams[i].shutdown(std::net::Shutdown::Write);
                } else {
                    streams.swap_remove(i);
                }
            }
            6 if streams.len() < 16 => {
                if let Ok((s, _)) = listener.accept() {
                    s.set_nonblocking(true).unwrap();
                    streams.push(s);
                }
            }
            7 => {
                for s in &mut streams {
                    let _ = s.read(&mut buf);
                }
            }
            8 => {
                let before = g.rx_used();
                let deadline = Instant::now() + Duration::from_millis(2);
                while g.rx_used() == before && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
            9 => {
                let addr = u64::from(op.addr) % RAM as u64;
                let n = op.width.min(RAM - addr as usize);
                mem.write_slice(&op.data(op.width)[..n], GuestAddress(addr))
                    .unwrap();
            }
            10 => {
                g.common(0x14, 1, 0);
                assert_eq!(svc.spawner.live(), 0, "reset joins the worker");
                if v & 1 != 0 {
                    g.activate();
                }
            }
            11 => {
                if let Some(req) = g.last_request() {
                    let mut h = [0u8; 44];
                    h[0..8].copy_from_slice(&req[8..16]);
                    h[8..16].copy_from_slice(&req[0..8]);
                    h[16..20].copy_from_slice(&req[20..24]);
                    h[20..24].copy_from_slice(&req[16..20]);
                    h[28] = 1;
                    h[30] = if v & 1 != 0 { 3 } else { 2 };
                    h[36..40].copy_from_slice(&((v >> 8) as u32).to_le_bytes());
                    g.send(&h, 0, 2);
                }
            }
            _ => {}
        }
    }
    drop(g);
    assert_eq!(svc.spawner.live(), 0, "worker joined");
    assert!(svc.ioevents.state().is_empty());
    assert!(!sock.exists(), "socket removed");
    drop(listener);
    let _ = std::fs::remove_file(&port);
});
