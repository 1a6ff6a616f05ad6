//! What the PCI device needs from VFIO, as a small trait: regions (info, read/write, mmap),
//! interrupts (info, enable with eventfds, disable, INTx unmask) and reset. The real
//! implementation wraps an opened `vfio_ioctls::VfioDevice`; unit tests use an in-memory
//! device (`mock.rs`).

use std::os::unix::io::AsRawFd;

use vfio_bindings::bindings::vfio::{
    VFIO_IRQ_INFO_AUTOMASKED, VFIO_IRQ_INFO_EVENTFD, VFIO_IRQ_INFO_MASKABLE,
    VFIO_IRQ_INFO_NORESIZE, VFIO_PCI_INTX_IRQ_INDEX, VFIO_PCI_MSIX_IRQ_INDEX,
    VFIO_PCI_MSI_IRQ_INDEX, VFIO_REGION_INFO_FLAG_MMAP, VFIO_REGION_INFO_FLAG_READ,
    VFIO_REGION_INFO_FLAG_WRITE,
};
use vfio_ioctls::{VfioDevice, VfioRegionInfoCap};
use vmm_sys_util::eventfd::EventFd;

use super::error::BackendError;
use super::mapping::DeviceMapping;

/// VFIO region index of the PCI config space.
pub const CONFIG_REGION: u32 = 7;
/// VFIO region index of the expansion ROM (BARs 0-5 are regions 0-5).
pub const ROM_REGION: u32 = 6;

/// The VFIO interrupt indexes a PCI device has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IrqIndex {
    Intx,
    Msi,
    Msix,
}

impl IrqIndex {
    pub fn vfio_index(self) -> u32 {
        match self {
            IrqIndex::Intx => VFIO_PCI_INTX_IRQ_INDEX,
            IrqIndex::Msi => VFIO_PCI_MSI_IRQ_INDEX,
            IrqIndex::Msix => VFIO_PCI_MSIX_IRQ_INDEX,
        }
    }
}

/// One mmappable range of a region, relative to the region's start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SparseArea {
    pub offset: u64,
    pub size: u64,
}

/// What VFIO says about a region (VFIO_DEVICE_GET_REGION_INFO and its capabilities).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegionInfo {
    /// 0 when the region (BAR, ROM) is not implemented.
    pub size: u64,
    pub read: bool,
    pub write: bool,
    pub mmap: bool,
    /// The sparse-mmap capability: only these ranges may be mmapped. `None`: the whole region
    /// may be (when `mmap`).
    pub sparse: Option<Vec<SparseArea>>,
    /// The MSI-X-mappable capability: the kernel lets the MSI-X table's pages be mmapped.
    pub msix_mappable: bool,
}

/// What VFIO says about an interrupt index (VFIO_DEVICE_GET_IRQ_INFO).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IrqInfo {
    pub count: u32,
    pub eventfd: bool,
    pub maskable: bool,
    pub automasked: bool,
    pub noresize: bool,
}

impl IrqInfo {
    pub fn from_flags(count: u32, flags: u32) -> Self {
        Self {
            count,
            eventfd: flags & VFIO_IRQ_INFO_EVENTFD != 0,
            maskable: flags & VFIO_IRQ_INFO_MASKABLE != 0,
            automasked: flags & VFIO_IRQ_INFO_AUTOMASKED != 0,
            noresize: flags & VFIO_IRQ_INFO_NORESIZE != 0,
        }
    }
}

/// The VFIO operations the PCI device uses. Failures of reads and writes are the backend's
/// to log (a read that fails leaves all-ones in `data`, like an unclaimed bus cycle).
pub trait VfioBackend: Send {
    fn region_info(&self, index: u32) -> RegionInfo;
    fn region_read(&self, index: u32, offset: u64, data: &mut [u8]);
    fn region_write(&self, index: u32, offset: u64, data: &[u8]);
    /// Map `size` bytes of region `index` from `offset` (page-aligned, inside an mmappable
    /// area) into this process.
    fn mmap_region(
        &self,
        index: u32,
        offset: u64,
        size: u64,
        writable: bool,
    ) -> Result<DeviceMapping, BackendError>;
    /// `None` when VFIO does not report the index.
    fn irq_info(&self, index: IrqIndex) -> Option<IrqInfo>;
    /// Trigger `fds[i]` on vector `i` of `index` (VFIO_IRQ_SET_ACTION_TRIGGER).
    fn enable_irq(&self, index: IrqIndex, fds: &[&EventFd]) -> Result<(), BackendError>;
    /// Remove every trigger of `index` (and, for INTx, its unmask eventfd).
    fn disable_irq(&self, index: IrqIndex) -> Result<(), BackendError>;
    /// Unmask INTx once (VFIO automasks it when it fires).
    fn unmask_intx(&self) -> Result<(), BackendError>;
    /// Signalling `fd` unmasks INTx (VFIO_IRQ_SET_ACTION_UNMASK with an eventfd).
    fn set_intx_unmask_fd(&self, fd: &EventFd) -> Result<(), BackendError>;
    /// Reset the device (VFIO_DEVICE_RESET) if it can be reset.
    fn reset(&self);
}

/// Reset the device (when it can be reset) at release, and say so when it does not answer
/// afterwards (its vendor ID reads all-ones): the next VM to open it would be refused. True
/// when it answers.
pub fn reset_and_check(backend: &dyn VfioBackend, name: &str) -> bool {
    backend.reset();
    let mut vendor = [0u8; 2];
    backend.region_read(CONFIG_REGION, 0, &mut vendor);
    let answers = vendor != [0xff, 0xff];
    if !answers {
        log::error!(
            "{name}: does not answer after its reset (vendor ID reads 0xffff); the next VM cannot use it until the host brings it back: echo 1 > /sys/bus/pci/devices/{name}/remove; echo 1 > /sys/bus/pci/rescan (or reboot the host)"
        );
    }
    answers
}

/// The real backend: an opened VFIO device (its group already in a container attached to
/// the KVM VFIO device).
pub struct VfioDeviceBackend {
    device: VfioDevice,
}

impl VfioDeviceBackend {
    pub fn new(device: VfioDevice) -> Self {
        Self { device }
    }

    pub fn device(&self) -> &VfioDevice {
        &self.device
    }

    fn region_exists(&self, index: u32, offset: u64, len: usize) -> bool {
        let size = self.device.get_region_size(index);
        offset
            .checked_add(len as u64)
            .is_some_and(|end| end <= size)
    }
}

fn describe(e: &vfio_ioctls::VfioError) -> String {
    match std::error::Error::source(e) {
        Some(source) => format!("{e}: {source}"),
        None => e.to_string(),
    }
}

impl VfioBackend for VfioDeviceBackend {
    fn region_info(&self, index: u32) -> RegionInfo {
        let flags = self.device.get_region_flags(index);
        let mut info = RegionInfo {
            size: self.device.get_region_size(index),
            read: flags & VFIO_REGION_INFO_FLAG_READ != 0,
            write: flags & VFIO_REGION_INFO_FLAG_WRITE != 0,
            mmap: flags & VFIO_REGION_INFO_FLAG_MMAP != 0,
            sparse: None,
            msix_mappable: false,
        };
        for cap in self.device.get_region_caps(index) {
            match cap {
                VfioRegionInfoCap::SparseMmap(sparse) => {
                    info.sparse = Some(
                        sparse
                            .areas
                            .iter()
                            .map(|a| SparseArea {
                                offset: a.offset,
                                size: a.size,
                            })
                            .collect(),
                    )
                }
                VfioRegionInfoCap::MsixMappable => info.msix_mappable = true,
                _ => {}
            }
        }
        info
    }

    fn region_read(&self, index: u32, offset: u64, data: &mut [u8]) {
        data.fill(0xff);
        if self.region_exists(index, offset, data.len()) {
            self.device.region_read(index, data, offset);
        } else {
            log::debug!(
                "VFIO region {index} read of {} bytes at {offset:#x} is outside the region",
                data.len()
            );
        }
    }

    fn region_write(&self, index: u32, offset: u64, data: &[u8]) {
        if self.region_exists(index, offset, data.len()) {
            self.device.region_write(index, data, offset);
        } else {
            log::debug!(
                "VFIO region {index} write of {} bytes at {offset:#x} is outside the region",
                data.len()
            );
        }
    }

    fn mmap_region(
        &self,
        index: u32,
        offset: u64,
        size: u64,
        writable: bool,
    ) -> Result<DeviceMapping, BackendError> {
        let op = || format!("mmap of VFIO region {index} at {offset:#x}+{size:#x}");
        let file_offset = self
            .device
            .get_region_offset(index)
            .checked_add(offset)
            .ok_or_else(|| BackendError::new(op(), "offset overflows"))?;
        DeviceMapping::map_fd(self.device.as_raw_fd(), file_offset, size, writable)
            .map_err(|e| BackendError::new(op(), e))
    }

    fn irq_info(&self, index: IrqIndex) -> Option<IrqInfo> {
        self.device
            .get_irq_info(index.vfio_index())
            .map(|irq| IrqInfo::from_flags(irq.count, irq.flags))
    }

    fn enable_irq(&self, index: IrqIndex, fds: &[&EventFd]) -> Result<(), BackendError> {
        self.device
            .enable_irq(index.vfio_index(), fds.to_vec())
            .map_err(|e| {
                BackendError::new(
                    format!("VFIO_DEVICE_SET_IRQS ({index:?}, {} eventfds)", fds.len()),
                    format!("{}: {}", describe(&e), std::io::Error::last_os_error()),
                )
            })
    }

    fn disable_irq(&self, index: IrqIndex) -> Result<(), BackendError> {
        self.device.disable_irq(index.vfio_index()).map_err(|e| {
            BackendError::new(
                format!("VFIO_DEVICE_SET_IRQS ({index:?} disable)"),
                describe(&e),
            )
        })
    }

    fn unmask_intx(&self) -> Result<(), BackendError> {
        self.device
            .unmask_irq(VFIO_PCI_INTX_IRQ_INDEX)
            .map_err(|e| BackendError::new("VFIO_DEVICE_SET_IRQS (INTx unmask)", describe(&e)))
    }

    fn set_intx_unmask_fd(&self, fd: &EventFd) -> Result<(), BackendError> {
        self.device
            .set_irq_resample_fd(VFIO_PCI_INTX_IRQ_INDEX, vec![fd])
            .map_err(|e| {
                BackendError::new(
                    "VFIO_DEVICE_SET_IRQS (INTx unmask eventfd)",
                    format!("{}: {}", describe(&e), std::io::Error::last_os_error()),
                )
            })
    }

    fn reset(&self) {
        // vfio-ioctls resets only when the device advertises VFIO_DEVICE_FLAGS_RESET and
        // does not report the ioctl's result.
        self.device.reset();
    }
}
