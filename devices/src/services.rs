//! What devices need from the VM, as traits the VMM implements over KVM. Devices hold them
//! as `Arc<dyn ...>`; unit tests implement them in memory.

use vmm_sys_util::eventfd::EventFd;

/// A failure of the VMM-side service (a KVM ioctl, no free slot or GSI...).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ServiceError(pub String);

/// An MSI message as the guest programs it into an MSI capability or MSI-X table entry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MsiMessage {
    pub addr_lo: u32,
    pub addr_hi: u32,
    pub data: u32,
}

/// Interrupt delivery: GSI routes for MSI, and irqfds binding eventfds to GSIs.
pub trait InterruptRouter: Send + Sync {
    /// Reserve a GSI for one MSI/MSI-X vector.
    fn allocate_msi_gsi(&self) -> Result<u32, ServiceError>;
    /// Point `gsi` at `msg` (installs or updates the route).
    fn set_msi_route(&self, gsi: u32, msg: MsiMessage) -> Result<(), ServiceError>;
    /// Remove `gsi`'s route and give the GSI back.
    fn release_msi_gsi(&self, gsi: u32);
    /// Signalling `evt` raises `gsi`.
    fn register_irqfd(&self, evt: &EventFd, gsi: u32) -> Result<(), ServiceError>;
    /// Level-triggered: `evt` asserts `gsi` (an IOAPIC pin); `resample` is signalled when the
    /// guest EOIs it, so the device can be unmasked and re-assert if still pending.
    fn register_irqfd_with_resample(
        &self,
        evt: &EventFd,
        resample: &EventFd,
        gsi: u32,
    ) -> Result<(), ServiceError>;
    fn unregister_irqfd(&self, evt: &EventFd, gsi: u32) -> Result<(), ServiceError>;
}

/// An opaque handle for a mapping made by [`MemoryMapper::map`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MappingId(pub u32);

/// Host memory made visible to the guest at a guest-physical address without exits
/// (a KVM memory slot).
pub trait MemoryMapper: Send + Sync {
    /// Map `size` bytes at `host_addr` to guest-physical `gpa`.
    ///
    /// # Safety
    /// `host_addr..host_addr+size` must stay mapped in this process until `unmap` is called.
    unsafe fn map(
        &self,
        gpa: u64,
        size: u64,
        host_addr: *mut u8,
    ) -> Result<MappingId, ServiceError>;
    /// Remove mapping `id`. On an error the mapping may still be live in the guest: the
    /// caller must keep the host range mapped (and may retry).
    fn unmap(&self, id: MappingId) -> Result<(), ServiceError>;
}

/// The IOMMU address space the VM's passed-through devices DMA in (iova = guest
/// physical). Guest RAM is mapped by the VMM; this maps device BARs too, so that one device
/// reaches another's BAR by DMA (peer-to-peer).
pub trait DmaMapper: Send + Sync {
    /// Map `size` bytes at `host_addr` for DMA at `iova`.
    ///
    /// # Safety
    /// `host_addr..host_addr+size` must stay mapped in this process until `unmap` of the
    /// same range succeeds.
    unsafe fn map(&self, iova: u64, size: u64, host_addr: *mut u8) -> Result<(), ServiceError>;
    /// Remove the mapping at `iova..iova+size`. On an error it may still be live: the
    /// caller must keep the host range mapped.
    fn unmap(&self, iova: u64, size: u64) -> Result<(), ServiceError>;
}

/// Guest writes to an MMIO address that signal an eventfd in the kernel, without an exit to
/// the VMM (KVM ioeventfd).
pub trait IoEventRegistrar: Send + Sync {
    /// Writes of any width to guest-physical `addr` signal `evt`.
    fn register_ioevent(&self, evt: &EventFd, addr: u64) -> Result<(), ServiceError>;
    fn unregister_ioevent(&self, evt: &EventFd, addr: u64) -> Result<(), ServiceError>;
}

/// Threads the devices run their work on; the VMM applies its seccomp filter for `kind` in
/// the new thread before `body` runs.
pub trait WorkerSpawner: Send + Sync {
    fn spawn(
        &self,
        name: String,
        kind: WorkerKind,
        body: Box<dyn FnOnce() + Send>,
    ) -> std::io::Result<std::thread::JoinHandle<()>>;
}

/// What a worker thread does, so the VMM can pick its seccomp filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerKind {
    /// A virtio-blk queue: polls eventfds, preads/pwrites/fdatasyncs one file, touches guest
    /// RAM.
    VirtioBlock,
    /// virtio-net's two queues: polls eventfds and the tap, reads and writes frames on the
    /// tap (read/write only, no ioctl), touches guest RAM.
    VirtioNet,
    /// virtio-vsock: polls eventfds and Unix sockets, accepts and connects (AF_UNIX),
    /// sends and receives on them, touches guest RAM.
    VirtioVsock,
}
