//! MCFG: where the PCIe ECAM lives, so Linux reaches extended config space (and, through
//! that, negotiates native PCIe control in PCI0's _OSC).

use acpi_tables::{mcfg::MCFG, Aml};

use super::{PciHostConfig, OEM_ID, OEM_REVISION, OEM_TABLE_ID};

/// The only PCI segment group.
const SEGMENT: u16 = 0;

pub(super) fn build(pci: &PciHostConfig) -> Vec<u8> {
    let mut mcfg = MCFG::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    mcfg.add_ecam(pci.mcfg_base(), SEGMENT, pci.bus_start, pci.bus_end);
    let mut bytes = Vec::new();
    mcfg.to_aml_bytes(&mut bytes);
    bytes
}
