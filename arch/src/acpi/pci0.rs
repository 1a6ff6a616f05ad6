//! `\_SB_.PCI0`, the PCIe host bridge: what it is, the resources it decodes (_CRS), where
//! its INTx lines go (_PRT) and _OSC; plus the motherboard device reserving the ECAM.

use acpi_tables::{
    aml::{
        AddressSpace, AddressSpaceCacheable, Device, EISAName, Memory32Fixed, Name, Package,
        PackageBuilder, ResourceTemplate, IO, ONE, ZERO,
    },
    Aml,
};

use super::{dsdt::Raw, osc, pci::CONFIG_PORTS, pci_intx_gsi, PciHostConfig};
use crate::layout::FOUR_GIB;

const SLOTS: u8 = 32;
const INTX_PINS: u8 = 4;
/// _PRT address of "every function of device `slot`": device in the high word, 0xffff low.
const ALL_FUNCTIONS: u32 = 0xffff;

/// The host bridge device (to be placed in `\_SB_`).
pub(super) fn device(pci: &PciHostConfig) -> Vec<u8> {
    // A PCIe root (PNP0A08) that legacy PCI drivers also accept (PNP0A03). No _ADR: the spec
    // wants _HID or _ADR, not both. _CCA: DMA is cache-coherent.
    let hid = Name::new("_HID".into(), &EISAName::new("PNP0A08"));
    let cid = Name::new("_CID".into(), &EISAName::new("PNP0A03"));
    let uid = Name::new("_UID".into(), &ZERO);
    let seg = Name::new("_SEG".into(), &ZERO);
    let bbn = Name::new("_BBN".into(), &pci.bus_start);
    let cca = Name::new("_CCA".into(), &ONE);
    let crs = Raw(crs(pci));
    let prt = Raw(prt());
    let osc = Raw(osc::method());

    let mut bytes = Vec::new();
    Device::new(
        "PCI0".into(),
        vec![&hid, &cid, &uid, &seg, &bbn, &cca, &crs, &prt, &osc],
    )
    .to_aml_bytes(&mut bytes);
    bytes
}

/// Bus numbers, the config ports the bridge itself consumes, then the windows it forwards
/// to devices (producer descriptors): I/O, 32-bit MMIO and 64-bit MMIO.
fn crs(pci: &PciHostConfig) -> Vec<u8> {
    let config_ports = *CONFIG_PORTS.start();
    let config_len = CONFIG_PORTS.len() as u8;
    let mut resources: Vec<Box<dyn Aml>> = vec![
        Box::new(AddressSpace::new_bus_number(
            u16::from(pci.bus_start),
            u16::from(pci.bus_end),
        )),
        Box::new(IO::new(config_ports, config_ports, 1, config_len)),
    ];
    for (first, last) in pci.io_windows() {
        resources.push(Box::new(AddressSpace::new_io(first, last, None)));
    }
    // Not "prefetchable": Linux would then refuse to put non-prefetchable BARs in the
    // window, and GPUs and NVMe drives have 64-bit non-prefetchable BARs.
    let (start, size) = pci.mmio32;
    resources.push(Box::new(AddressSpace::new_memory(
        AddressSpaceCacheable::NotCacheable,
        true,
        start as u32,
        (start + size - 1) as u32,
        None,
    )));
    if let Some((start, size)) = pci.mmio64 {
        // QWordMemory: 64-bit min, max and length, so windows of tens of TiB encode as is.
        resources.push(Box::new(AddressSpace::new_memory(
            AddressSpaceCacheable::NotCacheable,
            true,
            start,
            start + (size - 1),
            None,
        )));
    }

    let refs: Vec<&dyn Aml> = resources.iter().map(|r| r.as_ref()).collect();
    let mut bytes = Vec::new();
    Name::new("_CRS".into(), &ResourceTemplate::new(refs)).to_aml_bytes(&mut bytes);
    bytes
}

/// INTA-INTD of every slot, routed straight to IOAPIC GSIs (Source = 0, Source Index = GSI)
/// as [`pci_intx_gsi`] says.
fn prt() -> Vec<u8> {
    let mut table = PackageBuilder::new();
    for slot in 0..SLOTS {
        for pin in 0..INTX_PINS {
            let address = (u32::from(slot) << 16) | ALL_FUNCTIONS;
            let gsi = pci_intx_gsi(slot, pin);
            table.add_element(&Package::new(vec![&address, &pin, &ZERO, &gsi]));
        }
    }
    let mut bytes = Vec::new();
    Name::new("_PRT".into(), &table).to_aml_bytes(&mut bytes);
    bytes
}

/// A PNP0C02 "motherboard resources" device claiming the ECAM: Linux only trusts MCFG when
/// the ECAM is reserved in e820 or by such a device.
pub(super) fn ecam_reservation(pci: &PciHostConfig) -> Vec<u8> {
    let (base, size) = (pci.ecam_base, pci.ecam_size);
    let memory: Box<dyn Aml> = if base + size <= FOUR_GIB {
        Box::new(Memory32Fixed::new(true, base as u32, size as u32))
    } else {
        Box::new(AddressSpace::new_memory(
            AddressSpaceCacheable::NotCacheable,
            true,
            base,
            base + (size - 1),
            None,
        ))
    };
    let hid = Name::new("_HID".into(), &EISAName::new("PNP0C02"));
    let uid = Name::new("_UID".into(), &ZERO);
    let crs = Name::new("_CRS".into(), &ResourceTemplate::new(vec![memory.as_ref()]));

    let mut bytes = Vec::new();
    Device::new("MBRD".into(), vec![&hid, &uid, &crs]).to_aml_bytes(&mut bytes);
    bytes
}
