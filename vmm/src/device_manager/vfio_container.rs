//! VFIO plumbing the VM owns: the KVM VFIO device, the type1 container every passed-through
//! device's group joins, and the DMA mapping of all guest RAM (iova = guest physical),
//! undone when the container goes away.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use devices::services::{DmaMapper, ServiceError};
use kvm_bindings::{kvm_create_device, kvm_device_type_KVM_DEV_TYPE_VFIO};
use kvm_ioctls::VmFd;
use vfio_ioctls::{VfioContainer, VfioDevice, VfioDeviceFd, VfioError, VfioOps};
use vm_memory::GuestMemoryMmap;

use crate::error::{describe_vfio as describe, Error, PassthroughError, Result};
use host::checks::vfio_group_open_failed;
use host::preflight::CheckedDevice;

/// The container and, once mapped, the guest RAM it maps for DMA.
pub struct VfioContainerState {
    container: Arc<VfioContainer>,
    /// Guest RAM as mapped for DMA; kept (its regions stay mapped in this process) until it is
    /// unmapped on drop.
    mapped_ram: Option<GuestMemoryMmap>,
}

impl VfioContainerState {
    /// Create the KVM VFIO device and an (empty) VFIO container bound to it.
    pub fn new(vm: &VmFd) -> Result<Self> {
        let mut kvm_vfio = kvm_create_device {
            type_: kvm_device_type_KVM_DEV_TYPE_VFIO,
            fd: 0,
            flags: 0,
        };
        let fd = vm
            .create_device(&mut kvm_vfio)
            .map_err(Error::kvm("KVM_CREATE_DEVICE (VFIO)"))?;
        let handle = Arc::new(VfioDeviceFd::new_from_kvm(fd));
        let container = VfioContainer::new(Some(handle)).map_err(|e| Error::Vfio {
            what: "the VFIO container".into(),
            source: PassthroughError::Container(e),
        })?;
        Ok(Self {
            container: Arc::new(container),
            mapped_ram: None,
        })
    }

    /// Open a checked device at its sysfs directory: its group joins the container (the
    /// first group sets the type1 IOMMU) and KVM is told about the group.
    pub fn open_device(&self, dev: &CheckedDevice) -> Result<VfioDevice> {
        let ops: Arc<dyn VfioOps> = self.container.clone();
        VfioDevice::new(&dev.sysfs_dir, ops, false).map_err(|source| Error::Vfio {
            what: format!("{} (IOMMU group {})", dev.bdf, dev.group),
            source: PassthroughError::Open {
                hint: describe_open(&source, dev),
                source,
            },
        })
    }

    /// Map all guest RAM for device DMA. Must follow the first `open_device` (the container
    /// has no IOMMU before a group joins it). Returns how long the pinning took.
    pub fn map_guest_ram(&mut self, mem: &GuestMemoryMmap) -> Result<Duration> {
        let start = Instant::now();
        // SAFETY: `mapped_ram` keeps every region of `mem` mapped in this process until
        // `Drop` unmaps it from the IOMMU.
        unsafe { self.container.vfio_map_guest_memory(mem) }.map_err(|e| Error::Vfio {
            what: "guest RAM DMA mapping".into(),
            source: PassthroughError::DmaMap(e),
        })?;
        self.mapped_ram = Some(mem.clone());
        Ok(start.elapsed())
    }
}

impl VfioContainerState {
    /// The container's IOMMU mappings for devices' BARs (peer-to-peer).
    pub fn dma_mapper(&self) -> Arc<dyn DmaMapper> {
        Arc::new(ContainerDma(self.container.clone()))
    }
}

/// DMA mappings in the container beside guest RAM: iova = guest physical.
struct ContainerDma(Arc<VfioContainer>);

impl DmaMapper for ContainerDma {
    unsafe fn map(
        &self,
        iova: u64,
        size: u64,
        host_addr: *mut u8,
    ) -> std::result::Result<(), ServiceError> {
        let size = usize::try_from(size).map_err(|_| ServiceError("size too large".into()))?;
        // SAFETY: the caller keeps `host_addr..+size` mapped until `unmap` succeeds.
        unsafe { self.0.vfio_dma_map(iova, size, host_addr) }
            .map_err(|e| ServiceError(format!("VFIO_IOMMU_MAP_DMA: {}", describe(&e))))
    }

    fn unmap(&self, iova: u64, size: u64) -> std::result::Result<(), ServiceError> {
        let size = usize::try_from(size).map_err(|_| ServiceError("size too large".into()))?;
        self.0
            .vfio_dma_unmap(iova, size)
            .map_err(|e| ServiceError(format!("VFIO_IOMMU_UNMAP_DMA: {}", describe(&e))))
    }
}

impl Drop for VfioContainerState {
    /// Unmap guest RAM from the IOMMU; the devices release their own state before this.
    fn drop(&mut self) {
        if let Some(mem) = self.mapped_ram.take() {
            if let Err(e) = self.container.vfio_unmap_guest_memory(&mem) {
                log::warn!("unmapping guest RAM from the IOMMU: {}", describe(&e));
            }
        }
    }
}

fn io_source(e: &VfioError) -> Option<&io::Error> {
    match e {
        VfioError::OpenContainer(io) | VfioError::OpenGroup(io, _) => Some(io),
        _ => None,
    }
}

/// Opening a device's group: the usual failures get their fix, worded as `zhitong check`
/// words them.
fn describe_open(e: &VfioError, dev: &CheckedDevice) -> String {
    match io_source(e).and_then(io::Error::raw_os_error) {
        Some(errno @ (libc::EBUSY | libc::EACCES | libc::EPERM | libc::ENOENT)) => {
            vfio_group_open_failed(dev.group, errno, Some(dev.bdf)).to_string()
        }
        _ => match e {
            VfioError::GroupViable => format!(
                "IOMMU group {} is not viable: another device of the group is bound to a host driver; hand the whole group to vfio-pci: zhitong bind {}",
                dev.group, dev.bdf
            ),
            _ => describe(e),
        },
    }
}
