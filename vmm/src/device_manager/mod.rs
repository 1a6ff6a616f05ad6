//! The VM's devices in one owner: the port I/O and MMIO buses, the platform devices, the PCI
//! root complex and the passed-through devices (and, next, virtio devices). Built in order;
//! torn down in the reverse order on every path, an error half-way included, by dropping the
//! manager (the fields' declaration order below is the teardown order).
//!
//! Ownership: the manager owns every device; the buses only hold weak references, so no
//! device keeps another alive through a bus and nothing leaks when the manager goes.

mod hot_reset;
mod iommu_domain;
mod passthrough;
mod pci;
mod platform;
mod ram_dma;
mod services;
mod virtio;

use std::io::Write;
use std::sync::Arc;

use arch::pci_windows::PciWindows;
use devices::Bus;

use crate::config::DeviceConfig;
use kvm_ioctls::VmFd;

pub use passthrough::{SlotRange, VmParts};
pub use platform::PlatformDevices;
pub use virtio::OpenedVirtio;

use host::preflight::CheckedDevice;
use host::vfio_backend::VfioBackend;

use crate::error::Result;
use crate::exit::ExitChannel;
use crate::interrupts::KvmInterruptRouter;
use crate::timeline::Timeline;
use passthrough::PassedThrough;
use pci::PciDevices;
use virtio::VirtioDevices;

/// The buses vCPU exits are dispatched on.
#[derive(Clone)]
pub struct Buses {
    pub pio: Arc<Bus>,
    pub mmio: Arc<Bus>,
}

/// Fields drop in declaration order: passed-through devices are quiesced, reset and guest
/// RAM DMA-unmapped first (while the VM and its memory still exist), then the PCI root drops
/// its functions (closing the VFIO device and group files), then the platform devices.
pub struct DeviceManager {
    passthrough: Option<PassedThrough>,
    virtio: Option<VirtioDevices>,
    pci: PciDevices,
    platform: PlatformDevices,
    buses: Buses,
    /// The VM's one GSI routing table (KVM_SET_GSI_ROUTING replaces it whole): every
    /// device's MSI/MSI-X vectors are routed through it.
    router: Arc<KvmInterruptRouter>,
}

impl DeviceManager {
    /// The platform devices and an empty PCI root whose BARs go in `windows`.
    pub fn new(
        vm: &Arc<VmFd>,
        windows: PciWindows,
        exit: &Arc<ExitChannel>,
        timeline: &Arc<Timeline>,
        console_out: Box<dyn Write + Send>,
    ) -> Result<Self> {
        let buses = Buses {
            pio: Arc::new(Bus::new()),
            mmio: Arc::new(Bus::new()),
        };
        let platform = PlatformDevices::new(vm, &buses.pio, exit, timeline, console_out)?;
        let pci = PciDevices::new(&buses.pio, &buses.mmio, windows)?;
        Ok(Self {
            passthrough: None,
            virtio: None,
            pci,
            platform,
            buses,
            router: Arc::new(KvmInterruptRouter::new(vm.clone())),
        })
    }

    /// Pass `devices` through `backend` (nothing to do when empty) with their `options` (the
    /// same order): open them, place them on the PCI root and start DMA-mapping guest RAM
    /// beside the boot (its end marked on the timeline, a failure ending the VM through the
    /// exit channel). On an error, what was opened is released again.
    pub fn attach_passthrough(
        &mut self,
        vm: &VmParts,
        devices: &[CheckedDevice],
        options: &[DeviceConfig],
        backend: VfioBackend,
    ) -> Result<()> {
        if !devices.is_empty() {
            let attached =
                passthrough::attach(vm, &self.pci.root, &self.router, devices, options, backend)?;
            self.passthrough = Some(attached);
        }
        Ok(())
    }

    /// Put the `opened` virtio devices on the PCI root, in the guest slots after the
    /// passed-through functions' (`devices`, as given to `attach_passthrough`).
    pub fn attach_virtio(
        &mut self,
        vm: &VmParts,
        opened: OpenedVirtio,
        devices: &[CheckedDevice],
    ) -> Result<()> {
        if opened.is_empty() {
            return Ok(());
        }
        let bdfs: Vec<_> = devices.iter().map(|d| d.bdf).collect();
        let first_slot = 1 + pci::place(&bdfs)
            .iter()
            .map(|b| b.device)
            .max()
            .unwrap_or(0);
        let attached = virtio::attach(vm, &self.pci.root, &self.router, opened, first_slot)?;
        self.virtio = Some(attached);
        Ok(())
    }

    /// Wait until guest RAM's DMA mapping is over (nothing to wait for without passed-through
    /// devices): for a VM whose vCPUs start only then. Its error, if it failed.
    pub fn wait_for_dma_mapping(&self) -> Result<()> {
        match &self.passthrough {
            Some(p) => p.wait_for_dma_mapping(),
            None => Ok(()),
        }
    }

    /// Why guest RAM's DMA mapping failed (the VM was stopped for it), once it has.
    pub fn take_dma_error(&self) -> Option<crate::error::Error> {
        self.passthrough.as_ref()?.take_dma_error()
    }

    pub fn has_virtio(&self) -> bool {
        self.virtio.is_some()
    }

    pub fn has_passthrough(&self) -> bool {
        self.passthrough.is_some()
    }

    pub fn buses(&self) -> &Buses {
        &self.buses
    }

    pub fn platform(&self) -> &PlatformDevices {
        &self.platform
    }
}
