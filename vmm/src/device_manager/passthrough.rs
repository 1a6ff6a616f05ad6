//! Passed-through devices: opened into the VM's IOMMU domain, placed on the PCI root,
//! guest RAM DMA-mapped; and released (interrupts off, slots unmapped, reset, DMA unmapped)
//! when this is dropped, whatever the path.

use std::sync::{Arc, Mutex};

use devices::pci::root::PciRoot;
use devices::vfio::VfioPciDevice;
use kvm_ioctls::VmFd;
use vfio_bindings::bindings::vfio::VFIO_PCI_CONFIG_REGION_INDEX;
use vm_memory::GuestMemoryMmap;

use super::hot_reset;
use super::iommu_domain::IommuDomain;
use super::pci::place;
use super::ram_dma::RamDma;
use crate::config::DeviceConfig;
use crate::error::{Error, PassthroughError, Result};
use crate::exit::ExitChannel;
use crate::interrupts::KvmInterruptRouter;
use crate::slots::KvmMemoryMapper;
use crate::sync::lock;
use crate::timeline::Timeline;
use host::preflight::CheckedDevice;
use host::vfio_backend::VfioBackend;

const INTERRUPT_PIN: u64 = 0x3d;

/// KVM memory slots to hand out for device memory.
#[derive(Clone, Copy)]
pub struct SlotRange {
    pub first_free: u32,
    pub max: u32,
}

/// What of the VM passthrough works with: the VM, its RAM, the memory slots left for BARs,
/// and where the background DMA mapping reports (its end, a failure).
pub struct VmParts<'a> {
    pub vm: &'a Arc<VmFd>,
    pub mem: &'a GuestMemoryMmap,
    pub slots: SlotRange,
    pub exit: &'a Arc<ExitChannel>,
    pub timeline: &'a Arc<Timeline>,
}

/// Everything the VM holds for passthrough. Dropping it releases each device (the PCI root
/// still holds them until it goes) and then unmaps guest RAM from the IOMMU.
pub struct PassedThrough {
    devices: Vec<Arc<Mutex<VfioPciDevice>>>,
    /// Guest RAM's DMA mapping, under way beside the boot once `attach` returns.
    ram: Option<RamDma>,
    domain: IommuDomain,
}

/// Open every device through `backend` (its vectors routed by `router`), set it up as `options` (in the same order) say, put
/// it on `root` at its guest address, and start DMA-mapping guest RAM beside the boot
/// (reporting to `exit` and `timeline`). On an error half-way, what was opened is released
/// before the error is returned.
pub fn attach(
    vm: &VmParts,
    root: &PciRoot,
    router: &Arc<KvmInterruptRouter>,
    devices: &[CheckedDevice],
    options: &[DeviceConfig],
    backend: VfioBackend,
) -> Result<PassedThrough> {
    let VmParts {
        vm,
        mem,
        slots,
        exit,
        timeline,
    } = *vm;
    let mut attached = PassedThrough {
        devices: Vec::new(),
        ram: None,
        domain: IommuDomain::new(vm, backend)?,
    };
    let mapper = Arc::new(KvmMemoryMapper::new(
        vm.clone(),
        slots.first_free,
        slots.max,
    ));
    let dma = attached.domain.dma_mapper();
    let bdfs: Vec<_> = devices.iter().map(|d| d.bdf).collect();
    // All open before any reset: a slot/bus reset needs every device it reaches to be ours.
    let opened = devices
        .iter()
        .map(|dev| attached.domain.open_device(dev))
        .collect::<Result<Vec<_>>>()?;
    let pairs: Vec<_> = devices.iter().zip(&opened).collect();
    hot_reset::reset_where_needed(&pairs);
    let each = devices.iter().zip(opened).zip(options).zip(place(&bdfs));
    for (((dev, vfio), opts), guest) in each {
        let host_bdf = dev.bdf;
        let failed = |source: PassthroughError| Error::Vfio {
            what: host_bdf.to_string(),
            source,
        };
        let mut pin = [0u8];
        vfio.region_read(VFIO_PCI_CONFIG_REGION_INDEX, &mut pin, INTERRUPT_PIN);
        let intx_gsi = (1..=4)
            .contains(&pin[0])
            .then(|| arch::acpi::pci_intx_gsi(guest.device, pin[0] - 1));
        let device = VfioPciDevice::from_vfio_device(
            vfio,
            host_bdf.to_string(),
            router.clone(),
            mapper.clone(),
            intx_gsi,
        )
        .map_err(|e| failed(e.into()))?;
        let mut device = device;
        if opts.p2p {
            device
                .enable_p2p(dma.clone())
                .map_err(|e| failed(e.into()))?;
        }
        if let Some(clique) = opts.clique {
            device
                .add_gpudirect_clique(clique)
                .map_err(|e| failed(e.into()))?;
        }
        let device = Arc::new(Mutex::new(device));
        attached.devices.push(device.clone());
        let at = root
            .add_device(Some(guest.device), guest.function, device)
            .map_err(|e| failed(e.into()))?;
        log::info!("{host_bdf} is {at} in the guest (INTx GSI {intx_gsi:?})");
        if opts.p2p {
            let ranges = attached.devices.last().map_or_else(Vec::new, |d| {
                d.lock().unwrap_or_else(|e| e.into_inner()).p2p_ranges()
            });
            log::info!(
                "{host_bdf}: peer-to-peer DMA mappings {}",
                describe_ranges(&ranges)
            );
        }
    }
    let ram = attached
        .domain
        .map_guest_ram(mem, exit, timeline, attached.devices.len())?;
    for device in &attached.devices {
        lock(device).set_dma_gate(ram.gate());
    }
    attached.ram = Some(ram);
    Ok(attached)
}

/// "0xc0000000+0x4000, 0x1000000000+0x40000" ("none" when empty).
fn describe_ranges(ranges: &[(u64, u64)]) -> String {
    if ranges.is_empty() {
        return "none (no BAR decodes yet)".into();
    }
    let list: Vec<String> = ranges
        .iter()
        .map(|(a, l)| format!("{a:#x}+{l:#x}"))
        .collect();
    list.join(", ")
}

impl PassedThrough {
    /// Why guest RAM's DMA mapping failed, once it has.
    pub fn take_dma_error(&self) -> Option<Error> {
        self.ram.as_ref()?.take_error()
    }

    /// Wait for guest RAM's DMA mapping to be over; its error if it failed. A mapping given
    /// up because the VM is stopping is no error here: the exit channel has the reason.
    pub fn wait_for_dma_mapping(&self) -> Result<()> {
        match &self.ram {
            Some(ram) if !ram.gate().wait() => ram.take_error().map_or(Ok(()), Err),
            _ => Ok(()),
        }
    }
}

impl Drop for PassedThrough {
    /// Quiesce and reset every device (interrupts off, BAR slots unmapped) while guest RAM
    /// is still DMA-mapped; the domain then unmaps it (its own Drop, after this).
    fn drop(&mut self) {
        // A vCPU may wait for the mapping at a device's gate: settle it before locking them.
        if let Some(ram) = self.ram.as_mut() {
            ram.finish();
        }
        for device in self.devices.drain(..) {
            device.lock().unwrap_or_else(|e| e.into_inner()).release();
        }
    }
}
