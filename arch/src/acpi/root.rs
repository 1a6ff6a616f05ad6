//! RSDP (ACPI 2.0+, pointing at the XSDT) and the XSDT listing the other tables.

use acpi_tables::{rsdp::Rsdp, xsdt::XSDT, Aml};

use super::{OEM_ID, OEM_REVISION, OEM_TABLE_ID};

/// XSDT with one 64-bit pointer per table (the DSDT is reached through the FADT instead).
pub(super) fn xsdt(tables: &[u64]) -> Vec<u8> {
    let mut xsdt = XSDT::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    for &addr in tables {
        xsdt.add_entry(addr);
    }
    let mut bytes = Vec::new();
    xsdt.to_aml_bytes(&mut bytes);
    bytes
}

/// Revision-2 RSDP: Linux follows its XSDT address (the 32-bit RSDT address stays 0).
pub(super) fn rsdp(xsdt_addr: u64) -> Vec<u8> {
    let mut bytes = Vec::new();
    Rsdp::new(OEM_ID, xsdt_addr).to_aml_bytes(&mut bytes);
    bytes
}
