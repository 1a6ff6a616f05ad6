//! Passed-through devices: checked, opened into the VM's VFIO container, placed on the PCI
//! root, guest RAM DMA-mapped; and released (interrupts off, slots unmapped, reset, DMA
//! unmapped) when the VM ends, whatever the path.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use devices::pci::root::PciRoot;
use devices::pci::Bdf;
use devices::vfio::VfioPciDevice;
use host::preflight::{check_devices, check_guest_fits};
use host::Sysfs;
use kvm_ioctls::VmFd;
use vfio_bindings::bindings::vfio::VFIO_PCI_CONFIG_REGION_INDEX;
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use crate::error::{Error, Result};
use crate::interrupts::KvmInterruptRouter;
use crate::passthrough::Passthrough;
use crate::slots::KvmMemoryMapper;

const INTERRUPT_PIN: u64 = 0x3d;

/// Everything the VM holds for passthrough. `release` (or Drop) gives it all back.
pub struct PassedThrough {
    passthrough: Passthrough,
    devices: Vec<Arc<Mutex<VfioPciDevice>>>,
    pub dma_map_time: Duration,
}

/// KVM memory slots to hand out for device memory.
pub struct SlotRange {
    pub first_free: u32,
    pub max: u32,
}

pub fn attach(
    vm: &Arc<VmFd>,
    mem: &GuestMemoryMmap,
    root: &PciRoot,
    bdfs: &[Bdf],
    slots: SlotRange,
) -> Result<Option<PassedThrough>> {
    if bdfs.is_empty() {
        return Ok(None);
    }
    let sysfs = Sysfs::default();
    let checked = check_devices(&host::Host::from_env(), bdfs)?;
    let ram: u64 = mem.iter().map(|r| r.len()).sum();
    check_guest_fits(&host::Host::from_env(), bdfs, ram, root.windows())?;
    let mut attached = PassedThrough {
        passthrough: Passthrough::new(vm)?,
        devices: Vec::new(),
        dma_map_time: Duration::ZERO,
    };
    let router = Arc::new(KvmInterruptRouter::new(vm.clone()));
    let mapper = Arc::new(KvmMemoryMapper::new(
        vm.clone(),
        slots.first_free,
        slots.max,
    ));
    for (dev, guest) in checked.iter().zip(crate::pci::place(bdfs)) {
        let vfio = attached.passthrough.open_device(&sysfs, dev)?;
        let mut pin = [0u8];
        vfio.region_read(VFIO_PCI_CONFIG_REGION_INDEX, &mut pin, INTERRUPT_PIN);
        let intx_gsi = (1..=4)
            .contains(&pin[0])
            .then(|| arch::acpi::pci_intx_gsi(guest.device, pin[0] - 1));
        let device = VfioPciDevice::from_vfio_device(
            vfio,
            dev.bdf.to_string(),
            router.clone(),
            mapper.clone(),
            intx_gsi,
        )
        .map_err(|e| Error::Vfio {
            what: dev.bdf.to_string(),
            reason: e.to_string(),
        })?;
        let device = Arc::new(Mutex::new(device));
        attached.devices.push(device.clone());
        let guest = root
            .add_device(Some(guest.device), guest.function, device)
            .map_err(|e| Error::Vfio {
                what: dev.bdf.to_string(),
                reason: e.to_string(),
            })?;
        log::info!(
            "{} is {guest} in the guest (INTx GSI {intx_gsi:?})",
            dev.bdf
        );
    }
    attached.dma_map_time = attached.passthrough.map_guest_ram(mem)?;
    log::info!(
        "guest RAM DMA-mapped for {} device(s) in {:.1} ms",
        attached.devices.len(),
        attached.dma_map_time.as_secs_f64() * 1000.0
    );
    Ok(Some(attached))
}

impl PassedThrough {
    /// Release every device, then unmap guest RAM from the IOMMU. Call after the vCPUs
    /// have stopped and before guest memory goes away.
    pub fn release(mut self, mem: &GuestMemoryMmap) {
        self.release_devices();
        self.passthrough.unmap_guest_ram(mem);
    }

    fn release_devices(&mut self) {
        for device in self.devices.drain(..) {
            device.lock().unwrap_or_else(|e| e.into_inner()).release();
        }
    }
}

impl Drop for PassedThrough {
    /// An error path that never reached `release`: devices are still quiesced and reset;
    /// closing the container drops the IOMMU mappings.
    fn drop(&mut self) {
        self.release_devices();
    }
}
