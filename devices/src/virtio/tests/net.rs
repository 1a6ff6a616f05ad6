//! virtio-net through the transport, with one end of a SOCK_SEQPACKET socket pair in place
//! of the tap: each message is a frame with its 12-byte header.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use vm_memory::{Bytes, GuestAddress};

use super::{Driver, F_WRITE};
use crate::services::WorkerKind;
use crate::virtio::net::{StatsHandle, VirtioNet, MAX_FRAME_LEN, VNET_HDR_LEN};
use crate::virtio::status;

const F_NEXT: u16 = 1;
const MRG_RXBUF: u64 = 1 << 15;
const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
const SIZE: u16 = 16;

/// One queue's rings in guest memory, as the driver keeps them.
struct Ring {
    index: u16,
    desc: u64,
    avail: u64,
    used: u64,
    next_desc: u16,
    avail_idx: u16,
}

impl Ring {
    fn new(index: u16, base: u64) -> Self {
        Ring {
            index,
            desc: base,
            avail: base + 0x1000,
            used: base + 0x2000,
            next_desc: 0,
            avail_idx: 0,
        }
    }
}

struct Net {
    d: Driver,
    stats: StatsHandle,
    peer: File,
    rx: Ring,
    tx: Ring,
}

fn socketpair() -> (OwnedFd, File) {
    let mut fds = [0i32; 2];
    // SAFETY: fds has room for the two descriptors socketpair writes.
    let r = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    assert_eq!(r, 0, "socketpair: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors are fresh and owned by nobody else.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) }
}

impl Net {
    /// Negotiate the offered features minus `without`, set up both queues, DRIVER_OK.
    fn start(without: u64) -> Self {
        let (fd, peer) = socketpair();
        let dev = VirtioNet::with_socket(fd, MAC);
        let stats = dev.stats_handle();
        let file = tempfile::NamedTempFile::new().unwrap();
        let d = Driver::with_device("net0", Box::new(dev), file, None);
        let mut n = Net {
            d,
            stats,
            peer,
            rx: Ring::new(0, 0x1000),
            tx: Ring::new(1, 0x4000),
        };
        n.activate(without);
        n
    }

    fn activate(&mut self, without: u64) {
        let f = self.d.device_features() & !without;
        let s = self.d.negotiate(f);
        assert_ne!(s & status::FEATURES_OK, 0);
        for r in [&self.rx, &self.tx] {
            let d = &mut self.d;
            d.common_write(0x16, 2, r.index.into());
            assert_eq!(d.common_read(0x18, 2), 256, "max size");
            d.common_write(0x18, 2, SIZE.into());
            d.common_write(0x1a, 2, u64::from(r.index) + 1);
            for (off, addr) in [(0x20, r.desc), (0x28, r.avail), (0x30, r.used)] {
                d.common_write(off, 4, addr & 0xffff_ffff);
                d.common_write(off + 4, 4, addr >> 32);
            }
            d.common_write(0x1c, 2, 1);
        }
        self.d.set_status(s | status::DRIVER_OK);
        assert_ne!(self.d.status() & status::DRIVER_OK, 0, "activated");
    }

    fn ring(&mut self, q: u16) -> &mut Ring {
        if q == 0 {
            &mut self.rx
        } else {
            &mut self.tx
        }
    }

    /// Put a chain on queue `q`'s available ring (no notify); returns its head.
    fn post(&mut self, q: u16, descs: &[(u64, u32, u16)]) -> u16 {
        let mem = self.d.mem.clone();
        let r = self.ring(q);
        let head = r.next_desc;
        for (i, &(addr, len, flags)) in descs.iter().enumerate() {
            let idx = (r.next_desc + i as u16) % SIZE;
            let last = i + 1 == descs.len();
            let flags = if last { flags } else { flags | F_NEXT };
            let mut raw = [0u8; 16];
            raw[0..8].copy_from_slice(&addr.to_le_bytes());
            raw[8..12].copy_from_slice(&len.to_le_bytes());
            raw[12..14].copy_from_slice(&flags.to_le_bytes());
            raw[14..16].copy_from_slice(&((idx + 1) % SIZE).to_le_bytes());
            mem.write_slice(&raw, GuestAddress(r.desc + 16 * u64::from(idx)))
                .unwrap();
        }
        r.next_desc = (r.next_desc + descs.len() as u16) % SIZE;
        let slot = r.avail + 4 + 2 * u64::from(r.avail_idx % SIZE);
        mem.write_obj(head, GuestAddress(slot)).unwrap();
        r.avail_idx = r.avail_idx.wrapping_add(1);
        mem.write_obj(r.avail_idx, GuestAddress(r.avail + 2))
            .unwrap();
        head
    }

    fn notify(&mut self, q: u16) {
        let off = u64::from(q) * u64::from(self.d.notify_mult);
        self.d.write(2, off, 2, q.into());
    }

    fn submit(&mut self, q: u16, descs: &[(u64, u32, u16)]) -> u16 {
        let head = self.post(q, descs);
        self.notify(q);
        head
    }

    fn used_idx(&mut self, q: u16) -> u16 {
        let at = self.ring(q).used + 2;
        self.d.mem.read_obj(GuestAddress(at)).unwrap()
    }

    /// Wait for used entry `n` of queue `q`; returns (id, len).
    fn wait_used(&mut self, q: u16, n: u16) -> (u32, u32) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.used_idx(q).wrapping_sub(n) as i16 <= 0 {
            assert!(
                Instant::now() < deadline,
                "queue {q}: used entry {n} never came"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        let at = self.ring(q).used + 4 + 8 * u64::from(n % SIZE);
        let id: u32 = self.d.mem.read_obj(GuestAddress(at)).unwrap();
        let len: u32 = self.d.mem.read_obj(GuestAddress(at + 4)).unwrap();
        (id, len)
    }

    /// The next message on the peer, waiting for it up to `wait`.
    fn recv_peer(&mut self, wait: Duration) -> Option<Vec<u8>> {
        let deadline = Instant::now() + wait;
        let mut buf = vec![0u8; MAX_FRAME_LEN + 100];
        loop {
            match self.peer.read(&mut buf) {
                Ok(n) => return Some(buf[..n].to_vec()),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("peer read: {e}"),
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn send_peer(&mut self, msg: &[u8]) {
        self.peer.write_all(msg).unwrap();
    }

    fn read(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut b = vec![0u8; len];
        self.d.mem.read_slice(&mut b, GuestAddress(addr)).unwrap();
        b
    }
}

/// A header (flags/gso fields recognisable) followed by `len` bytes of pattern `seed`.
fn frame(seed: u8, len: usize) -> Vec<u8> {
    let mut f = vec![0u8; VNET_HDR_LEN];
    f[0] = 1; // NEEDS_CSUM
    f[6] = seed;
    f.extend((0..len).map(|i| (i as u8).wrapping_mul(31) ^ seed));
    f
}

const TX_BUF: u64 = 0x80000;
const RX_BUF: u64 = 0x10000;

#[test]
fn a_guest_frame_reaches_the_tap_with_its_header() {
    let mut n = Net::start(0);
    let f = frame(7, 60);
    n.d.mem.write_slice(&f, GuestAddress(TX_BUF)).unwrap();
    // The header in a descriptor of its own, the frame split over two more.
    let head = n.submit(
        1,
        &[(TX_BUF, 12, 0), (TX_BUF + 12, 20, 0), (TX_BUF + 32, 40, 0)],
    );
    assert_eq!(n.wait_used(1, 0), (u32::from(head), 0));
    assert_eq!(n.recv_peer(Duration::from_secs(5)).unwrap(), f);
    // One descriptor with everything.
    n.submit(1, &[(TX_BUF, f.len() as u32, 0)]);
    n.wait_used(1, 1);
    assert_eq!(n.recv_peer(Duration::from_secs(5)).unwrap(), f);
    let s = n.stats.get();
    assert_eq!((s.tx_frames, s.tx_bytes, s.tx_dropped), (2, 2 * 72, 0));
}

#[test]
fn a_tap_frame_lands_in_a_receive_buffer() {
    let mut n = Net::start(0);
    let head = n.submit(0, &[(RX_BUF, 2048, F_WRITE)]);
    let f = frame(3, 100);
    n.send_peer(&f);
    assert_eq!(n.wait_used(0, 0), (u32::from(head), f.len() as u32));
    let got = n.read(RX_BUF, f.len());
    assert_eq!(&got[..10], &f[..10], "header as the tap gave it");
    assert_eq!(u16::from_le_bytes([got[10], got[11]]), 1, "num_buffers");
    assert_eq!(&got[12..], &f[12..]);
    let s = n.stats.get();
    assert_eq!((s.rx_frames, s.rx_bytes, s.rx_dropped), (1, 112, 0));
}

#[test]
fn a_frame_spans_three_small_buffers_with_num_buffers_3() {
    let mut n = Net::start(0);
    let heads: Vec<u16> = (0..4)
        .map(|i| n.post(0, &[(RX_BUF + 0x1000 * i, 512, F_WRITE)]))
        .collect();
    n.notify(0);
    let f = frame(9, 1200); // 1212 bytes: 512 + 512 + 188
    n.send_peer(&f);
    let lens: Vec<(u32, u32)> = (0..3).map(|i| n.wait_used(0, i)).collect();
    assert_eq!(
        lens,
        vec![
            (u32::from(heads[0]), 512),
            (u32::from(heads[1]), 512),
            (u32::from(heads[2]), 188)
        ]
    );
    let mut got = n.read(RX_BUF, 512);
    got.extend(n.read(RX_BUF + 0x1000, 512));
    got.extend(n.read(RX_BUF + 0x2000, 188));
    assert_eq!(u16::from_le_bytes([got[10], got[11]]), 3, "num_buffers");
    assert_eq!(&got[12..], &f[12..]);
    // The fourth buffer is still there for the next frame.
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(n.used_idx(0), 3);
    let g = frame(10, 50);
    n.send_peer(&g);
    assert_eq!(n.wait_used(0, 3), (u32::from(heads[3]), g.len() as u32));
}

#[test]
fn without_buffers_a_frame_waits_for_the_guest() {
    let mut n = Net::start(0);
    let f = frame(5, 300);
    n.send_peer(&f);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(n.used_idx(0), 0);
    // Too few buffers for it: it still waits (and nothing is completed).
    n.submit(0, &[(RX_BUF, 200, F_WRITE)]);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(n.used_idx(0), 0);
    n.submit(0, &[(RX_BUF + 0x1000, 200, F_WRITE)]);
    assert_eq!(n.wait_used(0, 0).1, 200);
    assert_eq!(n.wait_used(0, 1).1, 112);
    let mut got = n.read(RX_BUF, 200);
    got.extend(n.read(RX_BUF + 0x1000, 112));
    assert_eq!(&got[12..], &f[12..]);
    assert_eq!(u16::from_le_bytes([got[10], got[11]]), 2);
}

/// CPU time (user + system, in clock ticks) of thread `tid` of this process.
fn cpu_ticks(tid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap();
    // After the command name in parentheses: state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

#[test]
fn a_frame_waiting_for_buffers_does_not_spin_the_worker() {
    let mut n = Net::start(0);
    n.send_peer(&frame(6, 100));
    std::thread::sleep(Duration::from_millis(20));
    let tid = *n.d.svc.spawner.tids.lock().unwrap().last().unwrap();
    let before = cpu_ticks(tid);
    std::thread::sleep(Duration::from_millis(500));
    let spent = cpu_ticks(tid) - before;
    // A spinning poll would take the whole 50 ticks.
    assert!(
        spent <= 5,
        "the worker used {spent} ticks while the frame waited"
    );
    n.submit(0, &[(RX_BUF, 2048, F_WRITE)]);
    assert_eq!(n.wait_used(0, 0).1, 112);
}

#[test]
fn bad_transmit_chains_are_completed_empty() {
    let mut n = Net::start(0);
    let f = frame(1, 60);
    n.d.mem.write_slice(&f, GuestAddress(TX_BUF)).unwrap();
    // A device-writable descriptor; shorter than the header; over the size limit; outside RAM.
    n.submit(1, &[(TX_BUF, 12, 0), (TX_BUF + 12, 60, F_WRITE)]);
    n.submit(1, &[(TX_BUF, 8, 0)]);
    let big = MAX_FRAME_LEN as u32 - 12 + 1;
    n.submit(1, &[(TX_BUF, 12, 0), (0x10000, big, 0)]);
    n.submit(1, &[(1 << 40, 72, 0)]);
    for i in 0..4 {
        assert_eq!(n.wait_used(1, i).1, 0);
    }
    assert_eq!(n.recv_peer(Duration::from_millis(50)), None);
    let s = n.stats.get();
    assert_eq!((s.tx_frames, s.tx_dropped, s.bad_chains), (0, 4, 4));
    // The largest allowed frame goes through; the device still works.
    n.submit(1, &[(TX_BUF, 12, 0), (0x10000, big - 1, 0)]);
    n.wait_used(1, 4);
    assert_eq!(
        n.recv_peer(Duration::from_secs(5)).unwrap().len(),
        MAX_FRAME_LEN
    );
}

#[test]
fn bad_receive_chains_are_completed_empty_after_the_frame() {
    let mut n = Net::start(0);
    // Read-only (first: completed at once); then a good one, a read-only one, a good one.
    n.post(0, &[(RX_BUF, 512, 0)]);
    n.post(0, &[(RX_BUF + 0x1000, 100, F_WRITE)]);
    n.post(0, &[(RX_BUF + 0x2000, 100, 0)]);
    n.post(0, &[(RX_BUF + 0x3000, 100, F_WRITE)]);
    n.notify(0);
    let f = frame(2, 150); // 162 bytes: 100 + 62
    n.send_peer(&f);
    let used: Vec<(u32, u32)> = (0..4).map(|i| n.wait_used(0, i)).collect();
    assert_eq!(used, vec![(0, 0), (1, 100), (3, 62), (2, 0)]);
    let s = n.stats.get();
    assert_eq!((s.rx_frames, s.rx_dropped, s.bad_chains), (1, 0, 2));
}

#[test]
fn without_mergeable_buffers_a_frame_needs_one_chain() {
    let mut n = Net::start(MRG_RXBUF);
    n.submit(0, &[(RX_BUF, 100, F_WRITE)]);
    // Too big for the posted buffer: dropped, the buffer kept.
    n.send_peer(&frame(1, 200));
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(n.used_idx(0), 0);
    let f = frame(2, 80);
    n.send_peer(&f);
    assert_eq!(n.wait_used(0, 0).1, 92);
    let got = n.read(RX_BUF, 92);
    assert_eq!(u16::from_le_bytes([got[10], got[11]]), 1);
    let s = n.stats.get();
    assert_eq!(
        (s.rx_frames, s.rx_dropped),
        (1, 1),
        "the big frame is counted"
    );
    assert_eq!(&got[12..], &f[12..]);
}

#[test]
fn a_full_tap_keeps_transmit_chains_for_later() {
    let mut n = Net::start(0);
    let count = 14u16;
    let len = 20_000;
    for i in 0..count {
        let f = frame(i as u8, len);
        let at = TX_BUF + 0x5000 * u64::from(i);
        n.d.mem.write_slice(&f, GuestAddress(at)).unwrap();
        n.post(1, &[(at, f.len() as u32, 0)]);
    }
    n.notify(1);
    // The socket holds fewer than all of them until the peer reads.
    std::thread::sleep(Duration::from_millis(100));
    assert!(n.used_idx(1) < count, "the peer's queue never filled");
    for i in 0..count {
        let got = n.recv_peer(Duration::from_secs(5)).expect("frame");
        assert_eq!(got, frame(i as u8, len), "frame {i} in order");
    }
    n.wait_used(1, count - 1);
    let s = n.stats.get();
    assert_eq!((s.tx_frames, s.tx_dropped), (u64::from(count), 0));
}

#[test]
fn config_and_features() {
    let mut n = Net::start(0);
    let f = n.d.device_features();
    for bit in [0, 1, 5, 7, 8, 11, 12, 13, 15, 16, 32] {
        assert_ne!(f & (1 << bit), 0, "feature bit {bit}");
    }
    // No control queue, no multiqueue, no event index.
    for bit in [17, 22, 29] {
        assert_eq!(f & (1 << bit), 0, "feature bit {bit}");
    }
    let mac: Vec<u8> = (0..6).map(|i| n.d.read(4, i, 1) as u8).collect();
    assert_eq!(mac, MAC);
    assert_eq!(n.d.read(4, 6, 2), 1, "link up");
    assert_eq!(n.d.common_read(0x12, 2), 2, "two queues");
}

#[test]
fn reset_joins_the_worker_and_the_tap_stays_open() {
    let mut n = Net::start(0);
    assert_eq!(n.d.svc.spawner.live(), 1);
    assert_eq!(
        *n.d.svc.spawner.kinds.lock().unwrap(),
        vec![WorkerKind::VirtioNet]
    );
    n.d.set_status(0);
    assert_eq!(
        n.d.svc.spawner.live(),
        0,
        "joined before the write returned"
    );
    assert!(!n.d.dev.is_active());
    // A driver reload: fresh rings, and frames flow again over the same tap.
    n.d.mem
        .write_slice(&[0u8; 0x6000], GuestAddress(0x1000))
        .unwrap();
    n.rx = Ring::new(0, 0x1000);
    n.tx = Ring::new(1, 0x4000);
    n.activate(0);
    assert_eq!(n.d.svc.spawner.live(), 1);
    let f = frame(4, 64);
    n.d.mem.write_slice(&f, GuestAddress(TX_BUF)).unwrap();
    n.submit(1, &[(TX_BUF, f.len() as u32, 0)]);
    assert_eq!(n.recv_peer(Duration::from_secs(5)).unwrap(), f);
    let spawner = n.d.svc.spawner.clone();
    drop(n);
    assert_eq!(spawner.live(), 0, "dropping the device joins the worker");
}
