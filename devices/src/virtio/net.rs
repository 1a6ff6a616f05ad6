//! virtio-net over a tap: one receive queue (0) and one transmit queue (1), no control
//! queue, no multiqueue. Frames cross the tap with the 12-byte virtio_net_hdr_v1 the guest
//! uses (VIRTIO_F_VERSION_1), so headers pass through unchanged; the device offers
//! checksum and TSO offloads (the guest-side ones only as far as the tap took them when
//! probed at open) and mergeable receive buffers, which lets a frame span several of the
//! guest's receive buffers.
//!
//! Layout: `net/tap.rs` opens the tap, `net/engine.rs` moves frames between the queues and
//! the tap (transmit there, receive in `net/rx.rs`), `net/worker.rs` is the thread that
//! waits for work. Every frame the device loses is counted ([`NetStats`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use virtio_bindings::virtio_net::{
    VIRTIO_NET_F_CSUM, VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_ECN, VIRTIO_NET_F_GUEST_TSO4,
    VIRTIO_NET_F_GUEST_TSO6, VIRTIO_NET_F_GUEST_UFO, VIRTIO_NET_F_HOST_ECN, VIRTIO_NET_F_HOST_TSO4,
    VIRTIO_NET_F_HOST_TSO6, VIRTIO_NET_F_MAC, VIRTIO_NET_F_MRG_RXBUF, VIRTIO_NET_F_STATUS,
    VIRTIO_NET_S_LINK_UP,
};
use vm_memory::GuestMemoryMmap;

use super::worker_thread::WorkerThread;
use super::VIRTIO_F_VERSION_1;
use super::{ActiveQueue, VirtioDevice, VirtioError, VirtioInterrupt, TYPE_NET};
use crate::services::WorkerSpawner;

mod engine;
mod rx;
mod tap;
mod worker;

#[cfg(any(test, feature = "mock"))]
pub use engine::{Engine, RxOutcome, TxOutcome};
pub use tap::VNET_HDR_LEN;
use tap::{Tap, TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6, TUN_F_TSO_ECN, TUN_F_UFO};

/// Each queue's maximum size.
pub const QUEUE_SIZE: u16 = 256;
pub const RX_QUEUE: u16 = 0;
pub const TX_QUEUE: u16 = 1;
/// The largest frame either way, its virtio-net header included (64 KiB of TSO payload
/// with Ethernet and VLAN headers).
pub const MAX_FRAME_LEN: usize = 65562;
/// Frames (or chains) served each way before the worker looks for a stop again.
pub const BUDGET: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("tap {name:?}: not a valid interface name: {reason}; use 1 to 15 characters without '/', ':', '%' or whitespace")]
    InvalidName { name: String, reason: &'static str },
    #[error("tap {name}: /dev/net/tun is missing; load the tun module (modprobe tun)")]
    TunMissing { name: String },
    #[error("tap {name}: permission denied: creating a tap needs CAP_NET_ADMIN, and an existing one must belong to this user; create it first with `ip tuntap add {name} mode tap user {uid}`")]
    PermissionDenied { name: String, uid: u32 },
    #[error("tap {name}: busy: another process has it open; stop that process or use another tap")]
    Busy { name: String },
    #[error("tap {name}: an interface of that name exists but is not a single-queue tap; use another name, or delete it with `ip link delete {name}`")]
    NotATap { name: String },
    #[error("tap {name}: {source}")]
    Io {
        name: String,
        #[source]
        source: std::io::Error,
    },
}

/// The device's frame counters, shared with its worker.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub rx_frames: AtomicU64,
    pub rx_bytes: AtomicU64,
    pub rx_dropped: AtomicU64,
    pub tx_frames: AtomicU64,
    pub tx_bytes: AtomicU64,
    pub tx_dropped: AtomicU64,
    pub bad_chains: AtomicU64,
}

impl Counters {
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> NetStats {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        NetStats {
            rx_frames: get(&self.rx_frames),
            rx_bytes: get(&self.rx_bytes),
            rx_dropped: get(&self.rx_dropped),
            tx_frames: get(&self.tx_frames),
            tx_bytes: get(&self.tx_bytes),
            tx_dropped: get(&self.tx_dropped),
            bad_chains: get(&self.bad_chains),
        }
    }
}

/// What the device moved and lost since it was opened (bytes include the 12-byte header).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetStats {
    pub rx_frames: u64,
    pub rx_bytes: u64,
    /// Frames from the tap the guest never got: too short, too big for a receive buffer
    /// without mergeable buffers, or held when the device was reset.
    pub rx_dropped: u64,
    pub tx_frames: u64,
    pub tx_bytes: u64,
    /// Guest frames not sent: a bad chain, or the tap refused them.
    pub tx_dropped: u64,
    /// Chains completed unused because they broke the rules (direction, size, address).
    pub bad_chains: u64,
}

/// Reads a device's [`NetStats`] from anywhere ([`VirtioNet::stats_handle`]).
#[derive(Clone)]
pub struct StatsHandle(Arc<Counters>);

impl StatsHandle {
    pub fn get(&self) -> NetStats {
        self.0.snapshot()
    }
}

/// A locally administered unicast MAC derived from `seed` (FNV-1a 64 of it): the same
/// seed always gives the same address.
pub fn stable_mac(seed: &[u8]) -> [u8; 6] {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in seed {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let b = h.to_be_bytes();
    let mut mac = [b[0], b[1], b[2], b[3], b[4], b[5]];
    // Fold in the bytes left out, then: locally administered (bit 1), unicast (bit 0 clear).
    mac[0] ^= b[6];
    mac[5] ^= b[7];
    mac[0] = (mac[0] | 0x02) & !0x01;
    mac
}

const fn bit(n: u32) -> u64 {
    1 << n
}

/// The features offered with a tap that took `offloads` (TUN_F_*).
fn offered_features(offloads: u32) -> u64 {
    let mut f = VIRTIO_F_VERSION_1
        | bit(VIRTIO_NET_F_CSUM)
        | bit(VIRTIO_NET_F_HOST_TSO4)
        | bit(VIRTIO_NET_F_HOST_TSO6)
        | bit(VIRTIO_NET_F_HOST_ECN)
        | bit(VIRTIO_NET_F_MAC)
        | bit(VIRTIO_NET_F_STATUS)
        | bit(VIRTIO_NET_F_MRG_RXBUF);
    if offloads & TUN_F_CSUM == 0 {
        return f;
    }
    f |= bit(VIRTIO_NET_F_GUEST_CSUM);
    for (flag, feature) in [
        (TUN_F_TSO4, VIRTIO_NET_F_GUEST_TSO4),
        (TUN_F_TSO6, VIRTIO_NET_F_GUEST_TSO6),
        (TUN_F_TSO_ECN, VIRTIO_NET_F_GUEST_ECN),
        (TUN_F_UFO, VIRTIO_NET_F_GUEST_UFO),
    ] {
        if offloads & flag != 0 {
            f |= bit(feature);
        }
    }
    f
}

/// The tap offloads (TUN_F_*) for the features the driver accepted: what the guest can
/// take from the tap. Nothing without GUEST_CSUM (the spec's dependencies, checked again).
fn offload_flags(acked: u64) -> u32 {
    if acked & bit(VIRTIO_NET_F_GUEST_CSUM) == 0 {
        return 0;
    }
    let mut o = TUN_F_CSUM;
    if acked & bit(VIRTIO_NET_F_GUEST_TSO4) != 0 {
        o |= TUN_F_TSO4;
    }
    if acked & bit(VIRTIO_NET_F_GUEST_TSO6) != 0 {
        o |= TUN_F_TSO6;
    }
    if acked & bit(VIRTIO_NET_F_GUEST_ECN) != 0 && o & (TUN_F_TSO4 | TUN_F_TSO6) != 0 {
        o |= TUN_F_TSO_ECN;
    }
    if acked & bit(VIRTIO_NET_F_GUEST_UFO) != 0 {
        o |= TUN_F_UFO;
    }
    o
}

pub struct VirtioNet {
    tap: Arc<Tap>,
    mac: [u8; 6],
    features: u64,
    acked: u64,
    counters: Arc<Counters>,
    spawner: Option<Arc<dyn WorkerSpawner>>,
    worker: Option<WorkerThread>,
}

impl VirtioNet {
    /// Attach to tap `tap` (creating it if it does not exist, which needs CAP_NET_ADMIN);
    /// the guest sees `mac`.
    pub fn open(tap: &str, mac: [u8; 6]) -> Result<VirtioNet, NetError> {
        Ok(Self::with_tap(Tap::open(tap)?, mac))
    }

    /// One end of a `socketpair(AF_UNIX, SOCK_SEQPACKET)` (non-blocking) in place of a tap:
    /// each message is a frame with its 12-byte header; every offload counts as accepted.
    #[cfg(any(test, feature = "mock"))]
    pub fn with_socket(fd: std::os::fd::OwnedFd, mac: [u8; 6]) -> VirtioNet {
        Self::with_tap(Tap::socket(fd, "socket"), mac)
    }

    fn with_tap(tap: Tap, mac: [u8; 6]) -> VirtioNet {
        VirtioNet {
            features: offered_features(tap.offloads()),
            tap: Arc::new(tap),
            mac,
            acked: 0,
            counters: Arc::default(),
            spawner: None,
            worker: None,
        }
    }

    pub fn tap_name(&self) -> &str {
        self.tap.name()
    }

    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// The TUN_F_* offloads the tap accepted when probed at open.
    pub fn tap_offloads(&self) -> u32 {
        self.tap.offloads()
    }

    /// Whether a worker thread is running.
    pub fn is_running(&self) -> bool {
        self.worker.is_some()
    }

    pub fn stats(&self) -> NetStats {
        self.counters.snapshot()
    }

    /// A handle that reads the counters after the device moved into its transport.
    pub fn stats_handle(&self) -> StatsHandle {
        StatsHandle(self.counters.clone())
    }

    fn stop(&mut self) {
        if let Some(w) = self.worker.take() {
            w.stop();
        }
    }

    fn config(&self) -> [u8; 8] {
        let mut c = [0u8; 8];
        c[..6].copy_from_slice(&self.mac);
        c[6..8].copy_from_slice(&(VIRTIO_NET_S_LINK_UP as u16).to_le_bytes());
        c
    }
}

impl VirtioDevice for VirtioNet {
    fn device_type(&self) -> u32 {
        TYPE_NET
    }

    fn features(&self) -> u64 {
        self.features
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE, QUEUE_SIZE]
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        let config = self.config();
        let Ok(start) = usize::try_from(offset) else {
            return;
        };
        for (i, b) in data.iter_mut().enumerate() {
            if let Some(v) = start.checked_add(i).and_then(|o| config.get(o)) {
                *b = *v;
            }
        }
    }

    fn set_worker_spawner(&mut self, spawner: Arc<dyn WorkerSpawner>) {
        self.spawner = Some(spawner);
    }

    fn ack_features(&mut self, features: u64) {
        self.acked = features & self.features;
    }

    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        queues: Vec<ActiveQueue>,
        interrupt: Arc<dyn VirtioInterrupt>,
    ) -> Result<(), VirtioError> {
        if self.worker.is_some() {
            return Err(VirtioError::AlreadyActive);
        }
        let got = queues.len();
        let mut rx = None;
        let mut tx = None;
        for q in queues {
            match q.index {
                RX_QUEUE => rx = Some(q),
                TX_QUEUE => tx = Some(q),
                _ => {}
            }
        }
        let (Some(rx), Some(tx)) = (rx, tx) else {
            return Err(VirtioError::MissingQueues { needed: 2, got });
        };
        let spawner = self.spawner.clone().ok_or(VirtioError::NoSpawner)?;
        let offload = offload_flags(self.acked);
        if let Err(e) = self.tap.set_offload(offload) {
            // The tap took these at open; without them the guest would get frames it
            // cannot parse, so the driver must try again.
            return Err(VirtioError::Backend {
                what: format!("tap {}: cannot set offloads {offload:#x}", self.tap.name()),
                source: e,
            });
        }
        let mrg = self.acked & bit(VIRTIO_NET_F_MRG_RXBUF) != 0;
        let engine = engine::Engine::new(
            self.tap.clone(),
            mem,
            rx,
            tx,
            interrupt,
            self.counters.clone(),
            mrg,
        );
        self.worker = Some(worker::start(&*spawner, engine)?);
        Ok(())
    }

    fn reset(&mut self) {
        self.stop();
        self.acked = 0;
    }
}

impl Drop for VirtioNet {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod unit_tests;
