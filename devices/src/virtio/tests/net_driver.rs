//! The driver side of virtio-net for the tests in `net.rs`: two queues laid out in guest
//! memory by hand, and one end of a SOCK_SEQPACKET socket pair in place of the tap (each
//! message is a frame with its 12-byte header).

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use vm_memory::{Bytes, GuestAddress};

use super::Driver;
use crate::virtio::net::{StatsHandle, VirtioNet, MAX_FRAME_LEN, VNET_HDR_LEN};
use crate::virtio::status;

const F_NEXT: u16 = 1;
pub const MRG_RXBUF: u64 = 1 << 15;
pub const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
pub const SIZE: u16 = 16;

/// One queue's rings in guest memory, as the driver keeps them.
pub struct Ring {
    index: u16,
    desc: u64,
    avail: u64,
    used: u64,
    next_desc: u16,
    avail_idx: u16,
}

impl Ring {
    pub fn new(index: u16, base: u64) -> Self {
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

pub struct Net {
    pub d: Driver,
    pub stats: StatsHandle,
    peer: File,
    pub rx: Ring,
    pub tx: Ring,
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
    pub fn start(without: u64) -> Self {
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

    pub fn activate(&mut self, without: u64) {
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
    pub fn post(&mut self, q: u16, descs: &[(u64, u32, u16)]) -> u16 {
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

    pub fn notify(&mut self, q: u16) {
        let off = u64::from(q) * u64::from(self.d.notify_mult);
        self.d.write(2, off, 2, q.into());
    }

    pub fn submit(&mut self, q: u16, descs: &[(u64, u32, u16)]) -> u16 {
        let head = self.post(q, descs);
        self.notify(q);
        head
    }

    pub fn used_idx(&mut self, q: u16) -> u16 {
        let at = self.ring(q).used + 2;
        self.d.mem.read_obj(GuestAddress(at)).unwrap()
    }

    /// Wait for used entry `n` of queue `q`; returns (id, len).
    pub fn wait_used(&mut self, q: u16, n: u16) -> (u32, u32) {
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
    pub fn recv_peer(&mut self, wait: Duration) -> Option<Vec<u8>> {
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

    pub fn send_peer(&mut self, msg: &[u8]) {
        self.peer.write_all(msg).unwrap();
    }

    pub fn read(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut b = vec![0u8; len];
        self.d.mem.read_slice(&mut b, GuestAddress(addr)).unwrap();
        b
    }
}

/// A header (flags/gso fields recognisable) followed by `len` bytes of pattern `seed`.
pub fn frame(seed: u8, len: usize) -> Vec<u8> {
    let mut f = vec![0u8; VNET_HDR_LEN];
    f[0] = 1; // NEEDS_CSUM
    f[6] = seed;
    f.extend((0..len).map(|i| (i as u8).wrapping_mul(31) ^ seed));
    f
}

/// CPU time (user + system, in clock ticks) of thread `tid` of this process.
pub fn cpu_ticks(tid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap();
    // After the command name in parentheses: state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}
