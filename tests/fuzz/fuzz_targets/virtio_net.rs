//! virtio-net's frame engine (`devices::virtio::net::Engine`) between two queues in guest
//! memory the input writes, and a SOCK_SEQPACKET pair standing in for the tap, run by hand
//! (no worker thread: deterministic).
//!
//! Input: a 16-byte header (byte 0: log2 of the rx queue size, 1: of the tx queue size,
//! 2: bit 0 mergeable receive buffers), then ops (`kind % 7`):
//! 0 write descriptor `addr >> 8 & 0xff` of queue `addr & 1`: guest address
//!   `value >> 32`, length `value as u32`, flags `addr >> 16 & 7` (NEXT, WRITE, INDIRECT),
//!   next `addr >> 24`; 1 make head `addr >> 8` available on queue `addr & 1`; 2 the tap
//!   has a frame of `value % 70000` bytes (pattern `addr`); 3 a transmit round; 4 a receive
//!   round; 5 a raw write of `width` bytes anywhere in guest memory (rings included);
//!   6 set queue `addr & 1`'s available index to `value`. (Raw writes spare the used
//!   rings, which the checks read.)
//!
//! Checked: rounds never hang or panic; every frame the tap gave is delivered, dropped (and
//! counted) or waiting, exactly, once the tap is drained; a waiting frame means the round
//! asked for buffers; frames reaching the tap are whole (header included, at most
//! MAX_FRAME_LEN) and as many as the counters say; bytes delivered never exceed those
//! given; a used ring entry names a descriptor of the ring and never claims more bytes than
//! the largest frame (0 for transmit), while no buffer can overlap the used rings.

#![no_main]

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::Arc;

use devices::virtio::net::{Engine, RxOutcome, MAX_FRAME_LEN, VNET_HDR_LEN};
use devices::virtio::{ActiveQueue, VirtioInterrupt};
use libfuzzer_sys::fuzz_target;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;
use zhitong_fuzz::{ops, Op};

const HEADER_LEN: usize = 16;
const MEM_SIZE: usize = 256 << 10;
/// Ring bases: rx at 0, tx at 0x3000 (descriptors, then avail +0x1000, used +0x2000).
const RING: [u64; 2] = [0, 0x3000];

struct NoIrq;

impl VirtioInterrupt for NoIrq {
    fn signal_queue(&self, _vector: u16) {}
    fn signal_config(&self) {}
}

fn socketpair() -> (OwnedFd, File) {
    let mut fds = [0i32; 2];
    // SAFETY: room for the two descriptors.
    let r = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    assert_eq!(r, 0);
    // SAFETY: fresh descriptors, owned by nobody else.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) }
}

fn queue(mem: &GuestMemoryMmap, index: u16, size: u16) -> ActiveQueue {
    let base = RING[usize::from(index)];
    let mut q = Queue::new(256).unwrap();
    q.set_size(size);
    q.set_desc_table_address(Some(base as u32), Some(0));
    q.set_avail_ring_address(Some((base + 0x1000) as u32), Some(0));
    q.set_used_ring_address(Some((base + 0x2000) as u32), Some(0));
    q.set_ready(true);
    assert!(q.is_valid(mem));
    ActiveQueue {
        queue: q,
        notifier: EventFd::new(libc::EFD_NONBLOCK).unwrap(),
        index,
    }
}

struct Fuzz {
    mem: GuestMemoryMmap,
    engine: Engine,
    peer: File,
    sizes: [u16; 2],
    avail: [u16; 2],
    /// Frames the tap gave, their bytes; frames that came out on the tap.
    given: u64,
    given_bytes: u64,
    taken: u64,
    used_seen: [u16; 2],
    /// A buffer may overlap a used ring (a descriptor reaching one, an indirect table or a
    /// raw write that may hold such descriptors): the device then writes frame data over
    /// it, as the guest asked, and the used entries are no longer checked.
    tainted: bool,
}

impl Fuzz {
    fn write_desc(&mut self, op: &Op) {
        let q = (op.addr & 1) as usize;
        let idx = u64::from((op.addr >> 8) as u8 as u16 % self.sizes[q]);
        let mut raw = [0u8; 16];
        raw[0..8].copy_from_slice(&(op.value >> 32).to_le_bytes());
        raw[8..12].copy_from_slice(&(op.value as u32).to_le_bytes());
        raw[12..14].copy_from_slice(&((op.addr >> 16) as u16 & 7).to_le_bytes());
        raw[14..16].copy_from_slice(&u16::from((op.addr >> 24) as u8).to_le_bytes());
        let at = GuestAddress(RING[q] + 16 * idx);
        self.mem.write_slice(&raw, at).unwrap();
        let (start, len) = (op.value >> 32, op.value & 0xffff_ffff);
        let overlaps = RING
            .iter()
            .any(|&b| start < b + 0x3000 && start + len > b + 0x2000);
        if overlaps || (op.addr >> 16) & 4 != 0 {
            self.tainted = true;
        }
    }

    fn set_avail(&mut self, q: usize, idx: u16) {
        self.avail[q] = idx;
        let at = GuestAddress(RING[q] + 0x1000 + 2);
        self.mem.write_obj(idx, at).unwrap();
    }

    fn make_available(&mut self, op: &Op) {
        let q = (op.addr & 1) as usize;
        let head = (op.addr >> 8) as u16;
        let slot = RING[q] + 0x1000 + 4 + 2 * u64::from(self.avail[q] % self.sizes[q]);
        self.mem.write_obj(head, GuestAddress(slot)).unwrap();
        self.set_avail(q, self.avail[q].wrapping_add(1));
    }

    fn give_frame(&mut self, op: &Op) {
        let len = (op.value % 70_000) as usize;
        let frame: Vec<u8> = (0..len).map(|i| (i as u32 ^ op.addr) as u8).collect();
        // A full socket refuses it: then the tap never had it.
        if self.peer.write(&frame).is_ok() {
            self.given += 1;
            self.given_bytes += len.min(MAX_FRAME_LEN) as u64;
        }
    }

    fn drain_peer(&mut self) {
        let mut buf = vec![0u8; MAX_FRAME_LEN + 16];
        while let Ok(n) = self.peer.read(&mut buf) {
            assert!(n >= VNET_HDR_LEN, "a {n}-byte frame reached the tap");
            assert!(n <= MAX_FRAME_LEN, "a {n}-byte frame reached the tap");
            self.taken += 1;
        }
        assert_eq!(self.taken, self.engine.stats().tx_frames);
    }

    /// Used entries added since last time claim no more than a frame's bytes.
    fn check_used(&mut self, q: usize) {
        let used = RING[q] + 0x2000;
        let idx: u16 = self.mem.read_obj(GuestAddress(used + 2)).unwrap();
        let new = idx.wrapping_sub(self.used_seen[q]).min(self.sizes[q]);
        if self.tainted {
            self.used_seen[q] = idx;
            return;
        }
        for i in 0..new {
            let slot = self.used_seen[q].wrapping_add(i) % self.sizes[q];
            let at = used + 4 + 8 * u64::from(slot);
            let id: u32 = self.mem.read_obj(GuestAddress(at)).unwrap();
            let len: u32 = self.mem.read_obj(GuestAddress(at + 4)).unwrap();
            assert!(id < u32::from(self.sizes[q]), "used id {id}");
            assert!(len as usize <= MAX_FRAME_LEN, "used len {len}");
            if q == 1 {
                assert_eq!(len, 0, "transmit completions write nothing");
            }
        }
        self.used_seen[q] = idx;
    }

    fn rx(&mut self) {
        let outcome = self.engine.rx();
        let s = self.engine.stats();
        if self.engine.has_pending() {
            assert_eq!(outcome, RxOutcome::NeedBuffers);
        }
        assert!(s.rx_bytes <= self.given_bytes);
        let waiting = u64::from(self.engine.has_pending());
        let accounted = s.rx_frames + s.rx_dropped + waiting;
        if outcome == RxOutcome::Idle {
            assert_eq!(accounted, self.given, "{s:?}");
        } else {
            assert!(accounted <= self.given, "{s:?}");
        }
        self.check_used(0);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((header, rest)) = data.split_first_chunk::<HEADER_LEN>() else {
        return;
    };
    let size = |b: u8| 1u16 << (b % 9);
    let sizes = [size(header[0]), size(header[1])];
    let mrg = header[2] & 1 != 0;
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap();
    let (fd, peer) = socketpair();
    let rxq = queue(&mem, 0, sizes[0]);
    let txq = queue(&mem, 1, sizes[1]);
    let engine = Engine::with_socket(fd, mem.clone(), rxq, txq, Arc::new(NoIrq), mrg);
    let mut f = Fuzz {
        mem,
        engine,
        peer,
        sizes,
        avail: [0; 2],
        given: 0,
        given_bytes: 0,
        taken: 0,
        used_seen: [0; 2],
        tainted: false,
    };
    for op in ops(rest).take(512) {
        match op.kind % 7 {
            0 => f.write_desc(&op),
            1 => f.make_available(&op),
            2 => f.give_frame(&op),
            3 => {
                f.engine.tx();
                f.drain_peer();
                f.check_used(1);
            }
            4 => f.rx(),
            5 => {
                // Anywhere but the used rings (the device's to write; the checks read them).
                let at = u64::from(op.addr) % MEM_SIZE as u64;
                let len = op.width as u64;
                let in_used = RING
                    .iter()
                    .any(|&b| at + len > b + 0x2000 && at < b + 0x3000);
                if !in_used {
                    let _ = f.mem.write_slice(&op.data(op.width), GuestAddress(at));
                    f.tainted = true;
                }
            }
            _ => {
                let q = (op.addr & 1) as usize;
                f.set_avail(q, op.value as u16);
            }
        }
    }
    // Whatever the guest did, the device still takes its frames out of the tap.
    f.rx();
    if std::env::var_os("VIRTIO_NET_FUZZ_STATS").is_some() {
        eprintln!("{:?}, {} frames on the tap", f.engine.stats(), f.taken);
    }
});
