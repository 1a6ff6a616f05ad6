//! The VM's IOMMU address space and how its devices are opened into it, through either VFIO
//! backend: the legacy type1 container (devices through their groups) or iommufd (an IOAS,
//! devices through their VFIO cdev). Both sit behind vfio-ioctls' `VfioOps`; the KVM VFIO
//! device learns of every group or cdev. Guest RAM is DMA-mapped at iova = guest physical
//! (beside the boot: ram_dma.rs) and unmapped when the domain goes away.

use std::io;
use std::sync::Arc;

use devices::services::{DmaMapper, ServiceError};
use host::vfio_backend::VfioBackend;
use iommufd_ioctls::IommuFd;
use kvm_bindings::{kvm_create_device, kvm_device_type_KVM_DEV_TYPE_VFIO};
use kvm_ioctls::VmFd;
use vfio_ioctls::{VfioContainer, VfioDevice, VfioDeviceFd, VfioError, VfioIommufd, VfioOps};
use vm_memory::GuestMemoryMmap;

use super::ram_dma::{MappedRanges, RamDma, RamDmaJob};
use crate::error::{describe_vfio as describe, Error, PassthroughError, Result};
use crate::exit::ExitChannel;
use crate::sync::lock;
use crate::timeline::Timeline;
use host::checks::vfio_group_open_failed;
use host::preflight::CheckedDevice;

/// The IOMMU address space of the VM's devices and, once mapped, the guest RAM in it.
pub struct IommuDomain {
    backend: VfioBackend,
    ops: Arc<dyn VfioOps>,
    /// Guest RAM as mapped for DMA (kept so that its regions stay mapped in this process
    /// until they are unmapped on drop), and the (iova, size) ranges mapped so far.
    mapped_ram: Option<GuestMemoryMmap>,
    ram_ranges: MappedRanges,
}

impl IommuDomain {
    /// Create the KVM VFIO device and an empty address space of `backend`: a VFIO
    /// container, or an iommufd with one IOAS.
    pub fn new(vm: &VmFd, backend: VfioBackend) -> Result<Self> {
        let mut kvm_vfio = kvm_create_device {
            type_: kvm_device_type_KVM_DEV_TYPE_VFIO,
            fd: 0,
            flags: 0,
        };
        let fd = vm
            .create_device(&mut kvm_vfio)
            .map_err(Error::kvm("KVM_CREATE_DEVICE (VFIO)"))?;
        let handle = Arc::new(VfioDeviceFd::new_from_kvm(fd));
        let failed = |what: &str| {
            let what = what.to_string();
            move |e| Error::Vfio {
                what,
                source: PassthroughError::Container(e),
            }
        };
        let ops: Arc<dyn VfioOps> = match backend {
            VfioBackend::Legacy => {
                Arc::new(VfioContainer::new(Some(handle)).map_err(failed("the VFIO container"))?)
            }
            VfioBackend::Iommufd => {
                let iommufd = IommuFd::new()
                    .map_err(VfioError::NewVfioIommufd)
                    .map_err(failed("iommufd (/dev/iommu)"))?;
                Arc::new(
                    VfioIommufd::new(Arc::new(iommufd), None, Some(handle))
                        .map_err(failed("the iommufd IO address space"))?,
                )
            }
        };
        log::debug!("VFIO backend {backend}");
        Ok(Self {
            backend,
            ops,
            mapped_ram: None,
            ram_ranges: MappedRanges::default(),
        })
    }

    /// Open a checked device at its sysfs directory into this address space: its group
    /// joins the container (the first group sets the type1 IOMMU), or its cdev is bound to
    /// the iommufd and attached to the IOAS; KVM is told about the group or cdev.
    pub fn open_device(&self, dev: &CheckedDevice) -> Result<VfioDevice> {
        let attach_ioas = self.backend == VfioBackend::Iommufd;
        VfioDevice::new(&dev.sysfs_dir, self.ops.clone(), attach_ioas).map_err(|source| {
            let what = match self.backend {
                VfioBackend::Legacy => format!("{} (IOMMU group {})", dev.bdf, dev.group),
                VfioBackend::Iommufd => format!("{} (VFIO cdev, iommufd)", dev.bdf),
            };
            Error::Vfio {
                what,
                source: PassthroughError::Open {
                    hint: describe_open(&source, dev),
                    source,
                },
            }
        })
    }

    /// Start mapping all guest RAM for device DMA on a thread of its own (see ram_dma.rs),
    /// for `devices` devices. Must follow the first `open_device` (a container has no IOMMU
    /// before a group joins it).
    pub fn map_guest_ram(
        &mut self,
        mem: &GuestMemoryMmap,
        exit: &Arc<ExitChannel>,
        timeline: &Arc<Timeline>,
        devices: usize,
    ) -> Result<RamDma> {
        self.mapped_ram = Some(mem.clone());
        RamDma::start(RamDmaJob {
            ops: self.ops.clone(),
            backend: self.backend,
            mem: mem.clone(),
            mapped: self.ram_ranges.clone(),
            exit: exit.clone(),
            timeline: timeline.clone(),
            devices,
        })
    }

    /// The address space's mappings for devices' BARs (peer-to-peer).
    pub fn dma_mapper(&self) -> Arc<dyn DmaMapper> {
        Arc::new(DomainDma {
            ops: self.ops.clone(),
            backend: self.backend,
        })
    }
}

/// DMA mappings beside guest RAM: iova = guest physical.
struct DomainDma {
    ops: Arc<dyn VfioOps>,
    backend: VfioBackend,
}

impl DomainDma {
    fn names(&self) -> (&'static str, &'static str) {
        match self.backend {
            VfioBackend::Legacy => ("VFIO_IOMMU_MAP_DMA", "VFIO_IOMMU_UNMAP_DMA"),
            VfioBackend::Iommufd => ("IOMMU_IOAS_MAP", "IOMMU_IOAS_UNMAP"),
        }
    }
}

impl DmaMapper for DomainDma {
    unsafe fn map(
        &self,
        iova: u64,
        size: u64,
        host_addr: *mut u8,
    ) -> std::result::Result<(), ServiceError> {
        let size = usize::try_from(size).map_err(|_| ServiceError("size too large".into()))?;
        // SAFETY: the caller keeps `host_addr..+size` mapped until `unmap` succeeds.
        unsafe { self.ops.vfio_dma_map(iova, size, host_addr) }
            .map_err(|e| ServiceError(format!("{}: {}", self.names().0, describe(&e))))
    }

    fn unmap(&self, iova: u64, size: u64) -> std::result::Result<(), ServiceError> {
        let size = usize::try_from(size).map_err(|_| ServiceError("size too large".into()))?;
        self.ops
            .vfio_dma_unmap(iova, size)
            .map_err(|e| ServiceError(format!("{}: {}", self.names().1, describe(&e))))
    }
}

impl Drop for IommuDomain {
    /// Unmap guest RAM (what of it was mapped) from the IOMMU; the devices release their
    /// own state before this.
    fn drop(&mut self) {
        let ranges = std::mem::take(&mut *lock(&self.ram_ranges));
        for (iova, size) in ranges {
            if let Err(e) = self.ops.vfio_dma_unmap(iova, size) {
                log::warn!(
                    "unmapping guest RAM at {iova:#x} from the IOMMU: {}",
                    describe(&e)
                );
            }
        }
        self.mapped_ram = None;
    }
}

fn io_source(e: &VfioError) -> Option<&io::Error> {
    match e {
        VfioError::OpenContainer(io) | VfioError::OpenGroup(io, _) => Some(io),
        _ => None,
    }
}

/// Opening a device (its group, or its cdev): the usual failures get their fix, worded as
/// `zhitong check` words them.
fn describe_open(e: &VfioError, dev: &CheckedDevice) -> String {
    if let VfioError::OpenDeviceCdev(io) = e {
        let fix = match io.raw_os_error() {
            Some(libc::EACCES | libc::EPERM) => {
                "run zhitong as root (it drops to --user after opening)"
            }
            Some(libc::EBUSY) => "another process holds it: stop it first",
            _ => "check that it is bound to vfio-pci ('zhitong check --device ...')",
        };
        return format!("{}: its VFIO cdev does not open: {io}; {fix}", dev.bdf);
    }
    match io_source(e).and_then(io::Error::raw_os_error) {
        Some(errno @ (libc::EBUSY | libc::EACCES | libc::EPERM | libc::ENOENT)) => {
            vfio_group_open_failed(dev.group, errno, Some(dev.bdf)).to_string()
        }
        _ => match e {
            VfioError::VfioDeviceBindIommufd(errno) if errno.errno() == libc::EPERM => format!(
                "iommufd refuses {} without interrupt remapping; turn remapping on, or (trusted guests only) echo Y > /sys/module/iommufd/parameters/allow_unsafe_interrupts",
                dev.bdf
            ),
            VfioError::VfioDeviceBindIommufd(errno) if errno.errno() == libc::EBUSY => format!(
                "{} is in use: another VM holds it, or another device of its IOMMU group {} is bound to a host driver; stop that VM, or hand the whole group to vfio-pci: zhitong bind {}",
                dev.bdf, dev.group, dev.bdf
            ),
            VfioError::InvalidVfioDev => format!(
                "{} has no VFIO cdev (sysfs vfio-dev): the kernel was built without CONFIG_VFIO_DEVICE_CDEV; use the legacy backend (--vfio-backend legacy)",
                dev.bdf
            ),
            VfioError::GroupViable => format!(
                "IOMMU group {} is not viable: another device of the group is bound to a host driver; hand the whole group to vfio-pci: zhitong bind {}",
                dev.group, dev.bdf
            ),
            _ => describe(e),
        },
    }
}
