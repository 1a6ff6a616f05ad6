//! Virtio 1.x devices behind a modern-only virtio-pci transport.
//!
//! API notes (changes from the brief, all device-side; the VMM-facing API —
//! [`VirtioPciDevice::new`], [`VirtioBlock::open`], the service traits — is as specified):
//! - [`VirtioInterrupt::signal_queue`] takes the *queue index* (the device does not know
//!   MSI-X vectors; the transport maps the queue to the vector the driver chose).
//! - [`VirtioInterrupt`] has two provided methods, [`VirtioInterrupt::resample_event`] and
//!   [`VirtioInterrupt::resample`]: with INTx, the level-triggered line must be re-asserted
//!   after the guest's EOI while the ISR is non-zero, and someone has to wait for KVM's
//!   resample eventfd. A device's worker thread polls it beside its queues.
//! - [`VirtioDevice::set_worker_spawner`] (provided, a no-op by default): the transport
//!   hands the device the [`WorkerSpawner`] of its [`VirtioServices`] in
//!   [`VirtioPciDevice::new`], as `activate` has no place for it. A device that needs one
//!   and has none fails activation with [`VirtioError::NoSpawner`].
//! - [`VirtioDevice::ack_features`] (provided, a no-op by default): the transport tells the
//!   device the features the driver accepted right before `activate` (virtio-net sets the
//!   tap's offloads from them).
//!
//! Layout: `pci.rs` is the PCI function (config space, BARs), `caps.rs` the virtio vendor
//! capabilities and the PCI_CFG access window, `common.rs` the common configuration
//! structure (feature negotiation, status state machine, queue setup), `interrupt.rs` MSI-X
//! and INTx, `notify.rs` the ioeventfds; `block.rs` is virtio-blk, `net.rs` virtio-net.

use std::sync::Arc;

use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

use crate::services::{InterruptRouter, IoEventRegistrar, WorkerSpawner};

pub mod block;
mod caps;
mod common;
mod interrupt;
#[cfg(any(test, feature = "mock"))]
pub mod mock;
pub mod net;
mod notify;
mod pci;
#[cfg(test)]
mod tests;
pub mod vsock;
mod worker_thread;

pub use block::{BlockError, VirtioBlock};
pub use net::{stable_mac, NetError, NetStats, VirtioNet};
pub use pci::VirtioPciDevice;
pub use vsock::{VirtioVsock, VsockError};

/// Virtio device type ids (virtio spec 5).
pub const TYPE_NET: u32 = 1;
pub const TYPE_BLOCK: u32 = 2;
pub const TYPE_VSOCK: u32 = 19;

/// Feature bit every modern device offers (and a modern driver must accept).
pub const VIRTIO_F_VERSION_1: u64 = 1 << 32;

/// Device status bits (virtio spec 2.1).
pub mod status {
    pub const ACKNOWLEDGE: u8 = 1;
    pub const DRIVER: u8 = 2;
    pub const DRIVER_OK: u8 = 4;
    pub const FEATURES_OK: u8 = 8;
    pub const DEVICE_NEEDS_RESET: u8 = 0x40;
    pub const FAILED: u8 = 0x80;
}

/// "No MSI-X vector" in msix_config / queue_msix_vector.
pub const NO_VECTOR: u16 = 0xffff;

/// A queue the driver enabled, handed to the device at activation.
pub struct ActiveQueue {
    pub queue: virtio_queue::Queue,
    /// A duplicate of the transport's notifier for this queue (ioeventfd or trapped write).
    pub notifier: EventFd,
    pub index: u16,
}

/// Interrupts a device raises, implemented by the transport (MSI-X or INTx + ISR).
pub trait VirtioInterrupt: Send + Sync {
    /// The used ring of queue `vector` (the queue index, see the module notes) changed.
    fn signal_queue(&self, vector: u16);
    /// The device configuration changed (or the device needs a reset).
    fn signal_config(&self);
    /// An eventfd the device's worker polls beside its queues; when it is readable the
    /// worker calls [`VirtioInterrupt::resample`]. None: nothing to poll.
    fn resample_event(&self) -> Option<&EventFd> {
        None
    }
    /// The guest acknowledged the level-triggered interrupt: re-assert if still pending.
    fn resample(&self) {}
}

/// What a virtio device model implements; the transport drives it.
pub trait VirtioDevice: Send {
    /// The virtio device type ([`TYPE_BLOCK`], ...).
    fn device_type(&self) -> u32;
    /// Feature bits offered ([`VIRTIO_F_VERSION_1`] is added by the transport anyway).
    fn features(&self) -> u64;
    /// One entry per queue: its maximum size (a power of two ≤ 32768).
    fn queue_max_sizes(&self) -> &[u16];
    /// Read the device-specific configuration at `offset` (bytes past its end read 0).
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// A driver write to the device-specific configuration (ignored by default).
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        let _ = (offset, data);
    }
    /// The threads to run work on (the transport calls this once, in its `new`).
    fn set_worker_spawner(&mut self, spawner: Arc<dyn WorkerSpawner>) {
        let _ = spawner;
    }
    /// The features the driver accepted (a subset of [`VirtioDevice::features`] plus
    /// [`VIRTIO_F_VERSION_1`]), told just before [`VirtioDevice::activate`].
    fn ack_features(&mut self, features: u64) {
        let _ = features;
    }
    /// The driver set DRIVER_OK: start serving `queues` (those the driver enabled).
    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        queues: Vec<ActiveQueue>,
        interrupt: Arc<dyn VirtioInterrupt>,
    ) -> Result<(), VirtioError>;
    /// Stop the device's work; returns once it has stopped. A no-op when not active.
    fn reset(&mut self);
}

/// The VMM services a virtio transport and its device use.
#[derive(Clone)]
pub struct VirtioServices {
    pub router: Arc<dyn InterruptRouter>,
    pub ioevents: Arc<dyn IoEventRegistrar>,
    pub spawner: Arc<dyn WorkerSpawner>,
}

#[derive(Debug, thiserror::Error)]
pub enum VirtioError {
    #[error("queue {0} is not usable (size or ring addresses invalid)")]
    InvalidQueue(u16),
    #[error("the device needs {needed} queue(s), the driver enabled {got}")]
    MissingQueues { needed: usize, got: usize },
    #[error("already active")]
    AlreadyActive,
    #[error("cannot create an eventfd: {0}")]
    EventFd(#[source] std::io::Error),
    #[error("no worker spawner was given to the device")]
    NoSpawner,
    #[error("cannot start the worker thread: {0}")]
    Spawn(#[source] std::io::Error),
    #[error("{what}: {source}")]
    Backend {
        what: String,
        #[source]
        source: std::io::Error,
    },
}
