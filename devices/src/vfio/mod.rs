//! A physical PCI function passed through to the guest with VFIO.
//!
//! The VMM opens the device (container/group or iommufd, attached to the KVM VFIO device,
//! guest RAM DMA-mapped) and hands it over wrapped in a [`VfioBackend`]; [`VfioPciDevice`]
//! then implements [`crate::pci::PciDevice`]:
//! - config space passes through to the device except what is virtualised: BARs and the ROM
//!   BAR (`config.rs`), the interrupt line, and the MSI and MSI-X capabilities (`msi.rs`,
//!   `msix.rs`), which drive VFIO_DEVICE_SET_IRQS, GSI routes and irqfds (`vectors.rs`);
//! - a few extended capabilities the guest must not use (Resizable BAR, SR-IOV, ARI) are
//!   unlinked from the chain (`ext_caps.rs`);
//! - BARs are mmapped where VFIO allows (sparse areas honoured, MSI-X table and PBA pages
//!   cut out) and become KVM memory slots while they decode (`bars.rs`); the rest traps;
//! - INTx is an irqfd with resample on a level-triggered IOAPIC pin (`intx.rs`), switched
//!   off while MSI or MSI-X is on;
//! - config-space mirrors in BARs (NVIDIA's BAR 0 mirror and BAR 5 window) trap and go
//!   through the emulated config space (`quirks.rs`);
//! - peer-to-peer (on request): the mmapped BAR parts are DMA-mapped at their guest
//!   addresses too (`bars.rs`), and an NVIDIA GPU may get the GPUDirect clique
//!   capability (`gpudirect.rs`);
//! - bus mastering waits for guest RAM's DMA mapping when that runs beside the boot
//!   (`dma_gate.rs`).
//!
//! Everything that touches VFIO goes through [`VfioBackend`], so the emulation is tested
//! against an in-memory device (`mock.rs`).

mod backend;
mod bars;
mod caps;
mod config;
mod device;
mod dma_gate;
mod error;
mod ext_caps;
mod gpudirect;
mod intx;
mod mapping;
mod msi;
mod msix;
mod quirks;
mod vectors;

#[cfg(any(test, feature = "mock"))]
pub mod mock;
#[cfg(test)]
mod tests;

pub use backend::{
    IrqIndex, IrqInfo, RegionInfo, SparseArea, VfioBackend, VfioDeviceBackend, CONFIG_REGION,
    ROM_REGION,
};
pub use device::VfioPciDevice;
pub use dma_gate::DmaGate;
pub use error::{BackendError, VfioPciError};
pub use mapping::DeviceMapping;
/// One MSI/MSI-X vector's eventfd, GSI route and irqfd, for the virtio transport.
pub(crate) use vectors::{IrqVector, VectorName};

/// The MSI-X table/PBA emulation without a device around it, for the fuzz targets.
#[cfg(feature = "mock")]
pub mod msix_parts {
    pub use super::bars::TrapRange;
    pub use super::msix::{Msix, CAP_LEN};
    pub use super::vectors::IrqCtx;
}

impl VfioPciDevice {
    /// [`VfioPciDevice::new`] over an opened `vfio_ioctls::VfioDevice`.
    pub fn from_vfio_device(
        device: vfio_ioctls::VfioDevice,
        name: String,
        interrupts: std::sync::Arc<dyn crate::services::InterruptRouter>,
        memory: std::sync::Arc<dyn crate::services::MemoryMapper>,
        intx_gsi: Option<u32>,
    ) -> Result<Self, VfioPciError> {
        Self::new(
            Box::new(VfioDeviceBackend::new(device)),
            name,
            interrupts,
            memory,
            intx_gsi,
        )
    }
}
