//! Receive: a frame is read from the tap into the engine's bounce buffer, then copied
//! into as many of the guest's receive chains as it needs (mergeable buffers; without
//! them it must fit in one), num_buffers set in its header, and each chain completed with
//! the bytes it got, in order.
//!
//! A frame is only read once the previous one was placed; one that finds too few buffers
//! waits in the bounce buffer (the chains it looked at stay on the ring) until the guest
//! adds more. Chains that break the rules (a device-readable descriptor, outside guest
//! RAM, too many descriptors, no room, a first buffer smaller than the header) are
//! completed empty — after the frame being placed, so its buffers stay consecutive in the
//! used ring, as num_buffers needs.

use virtio_queue::Queue;
use virtio_queue::{DescriptorChain, QueueOwnedT, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

use super::engine::{Engine, RxOutcome, MAX_DESCRIPTORS};
use super::tap::VNET_HDR_LEN;
use super::{Counters, BUDGET, MAX_FRAME_LEN};

/// Offset of num_buffers in virtio_net_hdr_v1.
const NUM_BUFFERS: usize = 10;

/// A receive chain's writable buffers.
struct Chain {
    head: u16,
    bufs: Vec<(GuestAddress, usize)>,
    room: usize,
}

/// The chain's buffers if it is a valid receive chain (room counted up to the largest
/// frame: more is never used).
fn writable(mem: &GuestMemoryMmap, chain: DescriptorChain<&GuestMemoryMmap>) -> Result<Chain, u16> {
    let head = chain.head_index();
    let mut bufs = Vec::new();
    let mut room: usize = 0;
    for (i, d) in chain.enumerate() {
        if i == MAX_DESCRIPTORS || !d.is_write_only() {
            return Err(head);
        }
        let n = d.len() as usize;
        if !mem.check_range(d.addr(), n) {
            return Err(head);
        }
        if n > 0 && room < MAX_FRAME_LEN {
            bufs.push((d.addr(), n));
            room = room.saturating_add(n);
        }
    }
    if room == 0 {
        return Err(head);
    }
    Ok(Chain { head, bufs, room })
}

/// What became of the frame waiting in the bounce buffer.
enum Placed {
    /// In the guest's buffers (or dropped, counted).
    Done,
    /// Not enough buffers yet.
    Wait,
}

impl Engine {
    /// Move up to [`BUDGET`] frames from the tap to the guest.
    pub fn rx(&mut self) -> RxOutcome {
        let mut used = false;
        let outcome = self.rx_round(&mut used);
        Self::signal(&self.mem, &*self.interrupt, &mut self.rxq, used);
        outcome
    }

    fn rx_round(&mut self, used: &mut bool) -> RxOutcome {
        for _ in 0..BUDGET {
            let len = match self.pending {
                Some(len) => len,
                None => match self.tap.recv(&mut self.rx_buf) {
                    Ok(Some(n)) if n < VNET_HDR_LEN => {
                        Counters::add(&self.counters.rx_dropped, 1);
                        continue;
                    }
                    Ok(Some(n)) => {
                        self.pending = Some(n);
                        n
                    }
                    Ok(None) => return RxOutcome::Idle,
                    Err(e) => {
                        crate::limited!(warn, "virtio-net: tap {}: read: {e}", self.tap.name());
                        return RxOutcome::NeedBuffers;
                    }
                },
            };
            match self.place(len, used) {
                Placed::Done => self.pending = None,
                Placed::Wait => return RxOutcome::NeedBuffers,
            }
        }
        RxOutcome::More
    }

    fn pop<'m>(
        q: &mut Queue,
        mem: &'m GuestMemoryMmap,
    ) -> Option<DescriptorChain<&'m GuestMemoryMmap>> {
        match q.iter(mem) {
            Ok(mut it) => it.next(),
            Err(e) => {
                crate::limited!(warn, "virtio-net: the receive ring is unusable: {e}");
                None
            }
        }
    }

    /// Place the `len`-byte frame in the bounce buffer into receive chains.
    fn place(&mut self, len: usize, used: &mut bool) -> Placed {
        let mut start = self.rxq.queue.next_avail();
        let mut chains: Vec<Chain> = Vec::new();
        let mut bad: Vec<u16> = Vec::new();
        let mut room: usize = 0;
        // At most a ring's worth of chains: the available ring holds no more.
        let limit = usize::from(self.rxq.queue.size());
        while room < len {
            if chains.len() + bad.len() >= limit {
                // A full ring without room for it: the frame can never be placed.
                self.rxq.queue.set_next_avail(start);
                crate::limited!(
                    debug,
                    "virtio-net: a {len}-byte frame does not fit the whole receive ring; dropped"
                );
                Counters::add(&self.counters.rx_dropped, 1);
                return Placed::Done;
            }
            let before = self.rxq.queue.next_avail();
            let Some(chain) = Self::pop(&mut self.rxq.queue, &self.mem) else {
                self.rxq.queue.set_next_avail(start);
                return Placed::Wait;
            };
            let chain = match writable(&self.mem, chain) {
                Ok(c) if chains.is_empty() && c.room < VNET_HDR_LEN => Err(c.head),
                other => other,
            };
            match chain {
                Ok(c) if !self.mrg_rxbuf && c.room < len => {
                    // Without mergeable buffers the frame must fit one chain: the guest
                    // posted buffers too small for it (they stay for smaller frames).
                    self.rxq.queue.set_next_avail(before);
                    crate::limited!(
                        debug,
                        "virtio-net: a {len}-byte frame does not fit a {}-byte receive buffer; dropped",
                        c.room
                    );
                    Counters::add(&self.counters.rx_dropped, 1);
                    return Placed::Done;
                }
                Ok(c) => {
                    room = room.saturating_add(c.room);
                    chains.push(c);
                }
                Err(head) => {
                    Counters::add(&self.counters.bad_chains, 1);
                    crate::limited!(debug, "virtio-net: receive chain {head} is invalid");
                    if chains.is_empty() {
                        // Nothing placed yet: complete it now, for good.
                        *used |= Self::complete(&self.mem, &mut self.rxq, head, 0);
                        start = self.rxq.queue.next_avail();
                    } else {
                        bad.push(head);
                    }
                }
            }
        }
        self.fill(len, &chains, used);
        self.complete_bad(&bad, used);
        Placed::Done
    }

    fn complete_bad(&mut self, bad: &[u16], used: &mut bool) {
        for &head in bad {
            *used |= Self::complete(&self.mem, &mut self.rxq, head, 0);
        }
    }

    /// Copy the frame into `chains` (which have room for it) and complete them.
    fn fill(&mut self, len: usize, chains: &[Chain], used: &mut bool) {
        // Fewer chains than the ring size (≤ 32768), so this fits.
        let n = chains.len() as u16;
        self.rx_buf[NUM_BUFFERS..NUM_BUFFERS + 2].copy_from_slice(&n.to_le_bytes());
        let mut off: usize = 0;
        let mut ok = true;
        for c in chains {
            let mut written: usize = 0;
            for &(addr, buf_len) in &c.bufs {
                let take = buf_len.min(len - off);
                if take == 0 {
                    break;
                }
                let data = &self.rx_buf[off..off + take];
                ok &= self.mem.write_slice(data, addr).is_ok();
                off += take;
                written += take;
            }
            // written ≤ MAX_FRAME_LEN.
            *used |= Self::complete(&self.mem, &mut self.rxq, c.head, written as u32);
        }
        if ok && off == len {
            Counters::add(&self.counters.rx_frames, 1);
            Counters::add(&self.counters.rx_bytes, len as u64);
        } else {
            Counters::add(&self.counters.rx_dropped, 1);
        }
    }
}
