//! Frames between the queues and the tap, one bounded round at a time: the worker calls
//! [`Engine::tx`] when the transmit queue was notified (or the tap can take frames again)
//! and [`Engine::rx`] when the tap has frames (or the guest added receive buffers).
//! Transmit is here, receive in `rx.rs`.
//!
//! Transmit: a chain is the 12-byte header and the frame, all device-readable, at most
//! [`MAX_FRAME_LEN`] bytes; it is gathered through a bounce buffer and written to the tap
//! as one frame. A chain that breaks the rules is completed without being sent (and
//! counted). When the tap cannot take a frame (EAGAIN) the chain stays on the available
//! ring for the next round.

use std::sync::Arc;

use virtio_queue::{DescriptorChain, QueueOwnedT, QueueT};
use vm_memory::{Bytes, GuestMemoryBackend, GuestMemoryMmap};

use super::tap::{Tap, VNET_HDR_LEN};
#[cfg(any(test, feature = "mock"))]
use super::NetStats;
use super::{Counters, BUDGET, MAX_FRAME_LEN};
use crate::virtio::{ActiveQueue, VirtioInterrupt};

/// Descriptors a chain may have (Linux uses at most MAX_SKB_FRAGS + 2).
pub(crate) const MAX_DESCRIPTORS: usize = 64;

/// How a transmit round ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxOutcome {
    /// The available ring is empty.
    Idle,
    /// The tap is full: wait until it is writable.
    Blocked,
    /// The budget ran out with chains left.
    More,
}

/// How a receive round ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RxOutcome {
    /// The tap has no frame waiting.
    Idle,
    /// A frame waits for receive buffers (or the tap failed): wait for the guest's notify.
    NeedBuffers,
    /// The budget ran out with frames perhaps left.
    More,
}

pub struct Engine {
    pub(super) tap: Arc<Tap>,
    pub(super) mem: GuestMemoryMmap,
    pub(super) rxq: ActiveQueue,
    pub(super) txq: ActiveQueue,
    pub(super) interrupt: Arc<dyn VirtioInterrupt>,
    pub(super) counters: Arc<Counters>,
    pub(super) mrg_rxbuf: bool,
    /// A frame read from the tap (header first), waiting for buffers when `pending` is set.
    pub(super) rx_buf: Vec<u8>,
    pub(super) pending: Option<usize>,
    tx_buf: Vec<u8>,
}

impl Engine {
    pub(crate) fn new(
        tap: Arc<Tap>,
        mem: GuestMemoryMmap,
        rxq: ActiveQueue,
        txq: ActiveQueue,
        interrupt: Arc<dyn VirtioInterrupt>,
        counters: Arc<Counters>,
        mrg_rxbuf: bool,
    ) -> Self {
        Self {
            tap,
            mem,
            rxq,
            txq,
            interrupt,
            counters,
            mrg_rxbuf,
            rx_buf: vec![0; MAX_FRAME_LEN],
            pending: None,
            tx_buf: vec![0; MAX_FRAME_LEN],
        }
    }

    /// An engine over one end of a SOCK_SEQPACKET pair (fuzzing, tests), driven by hand.
    #[cfg(any(test, feature = "mock"))]
    pub fn with_socket(
        fd: std::os::fd::OwnedFd,
        mem: GuestMemoryMmap,
        rxq: ActiveQueue,
        txq: ActiveQueue,
        interrupt: Arc<dyn VirtioInterrupt>,
        mrg_rxbuf: bool,
    ) -> Self {
        let tap = Arc::new(Tap::socket(fd, "socket"));
        Self::new(tap, mem, rxq, txq, interrupt, Arc::default(), mrg_rxbuf)
    }

    /// The counters so far (as [`super::VirtioNet::stats`]).
    #[cfg(any(test, feature = "mock"))]
    pub fn stats(&self) -> NetStats {
        self.counters.snapshot()
    }

    /// Whether a frame read from the tap waits for receive buffers.
    #[cfg(any(test, feature = "mock"))]
    pub fn has_pending(&self) -> bool {
        self.pending.is_some()
    }

    pub(super) fn rx_notifier(&self) -> &vmm_sys_util::eventfd::EventFd {
        &self.rxq.notifier
    }

    pub(super) fn tx_notifier(&self) -> &vmm_sys_util::eventfd::EventFd {
        &self.txq.notifier
    }

    /// Put `head` in `q`'s used ring with `len` bytes written; false if it cannot be.
    pub(super) fn complete(
        mem: &GuestMemoryMmap,
        q: &mut ActiveQueue,
        head: u16,
        len: u32,
    ) -> bool {
        if head >= q.queue.size() {
            crate::limited!(
                warn,
                "virtio-net: queue {}: head {head} out of range",
                q.index
            );
            return false;
        }
        match q.queue.add_used(mem, head, len) {
            Ok(()) => true,
            Err(e) => {
                crate::limited!(warn, "virtio-net: queue {}: used ring: {e}", q.index);
                false
            }
        }
    }

    /// Interrupt the guest for `q` if it wants one.
    pub(super) fn signal(
        mem: &GuestMemoryMmap,
        interrupt: &dyn VirtioInterrupt,
        q: &mut ActiveQueue,
        used: bool,
    ) {
        if used && q.queue.needs_notification(mem).unwrap_or(true) {
            interrupt.signal_queue(q.index);
        }
    }

    /// Serve up to [`BUDGET`] transmit chains.
    pub fn tx(&mut self) -> TxOutcome {
        let mut used = false;
        let mut outcome = TxOutcome::Idle;
        for i in 0..=BUDGET {
            let before = self.txq.queue.next_avail();
            let chain = match self.txq.queue.iter(&self.mem) {
                Ok(mut it) => it.next(),
                Err(e) => {
                    crate::limited!(warn, "virtio-net: the transmit ring is unusable: {e}");
                    None
                }
            };
            let Some(chain) = chain else {
                break;
            };
            if i == BUDGET {
                self.txq.queue.set_next_avail(before);
                outcome = TxOutcome::More;
                break;
            }
            let head = chain.head_index();
            match gather(&self.mem, chain, &mut self.tx_buf) {
                Some(len) => match self.tap.send(&self.tx_buf[..len]) {
                    Ok(true) => {
                        Counters::add(&self.counters.tx_frames, 1);
                        Counters::add(&self.counters.tx_bytes, len as u64);
                    }
                    Ok(false) => {
                        // Keep the chain: it is sent when the tap is writable again.
                        self.txq.queue.set_next_avail(before);
                        outcome = TxOutcome::Blocked;
                        break;
                    }
                    Err(e) => {
                        crate::limited!(warn, "virtio-net: tap {}: write: {e}", self.tap.name());
                        Counters::add(&self.counters.tx_dropped, 1);
                    }
                },
                None => {
                    crate::limited!(
                        debug,
                        "virtio-net: transmit chain {head} is invalid; dropped"
                    );
                    Counters::add(&self.counters.bad_chains, 1);
                    Counters::add(&self.counters.tx_dropped, 1);
                }
            }
            used |= Self::complete(&self.mem, &mut self.txq, head, 0);
        }
        Self::signal(&self.mem, &*self.interrupt, &mut self.txq, used);
        outcome
    }
}

/// Copy a transmit chain into `buf`; its length, or None if the chain is invalid.
fn gather(
    mem: &GuestMemoryMmap,
    chain: DescriptorChain<&GuestMemoryMmap>,
    buf: &mut [u8],
) -> Option<usize> {
    let mut len: usize = 0;
    for (i, d) in chain.enumerate() {
        if i == MAX_DESCRIPTORS || d.is_write_only() {
            return None;
        }
        let n = d.len() as usize;
        let end = len.checked_add(n).filter(|&e| e <= buf.len())?;
        if !mem.check_range(d.addr(), n) {
            return None;
        }
        mem.read_slice(&mut buf[len..end], d.addr()).ok()?;
        len = end;
    }
    (len >= VNET_HDR_LEN).then_some(len)
}

impl Drop for Engine {
    fn drop(&mut self) {
        if self.pending.take().is_some() {
            Counters::add(&self.counters.rx_dropped, 1);
        }
    }
}
