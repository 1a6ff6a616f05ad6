//! ACPI tables for the guest, as plain bytes the VMM copies into guest memory.
//!
//! RSDP → XSDT → { FADT → DSDT, MADT, MCFG (with PCI) }, all placed in the BIOS area at
//! [`ACPI_AREA_START`], where Linux finds the RSDP by scanning 16-byte boundaries.
//!
//! The platform is hardware-reduced ACPI: no PM1/GPE blocks and no SCI. Poweroff and reset go
//! through the one-byte sleep control and reset registers the `devices` crate emulates.

mod dsdt;
mod fadt;
mod madt;
mod mcfg;
mod osc;
mod pci;
mod pci0;
mod power_button;
mod root;
#[cfg(test)]
mod tests;

pub use pci::{pci_intx_gsi, PciHostConfig, PCI_INTX_GSI_BASE, PCI_INTX_GSI_COUNT};

use crate::layout::{ACPI_AREA_SIZE, ACPI_AREA_START, MAX_VCPUS};

/// OEM identity stamped into every table header.
pub const OEM_ID: [u8; 6] = *b"ZHITNG";
pub const OEM_TABLE_ID: [u8; 8] = *b"ZHITONG ";
pub const OEM_REVISION: u32 = 1;

/// What the tables describe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcpiConfig {
    /// vCPUs, with APIC IDs (and ACPI processor UIDs) 0..vcpus.
    pub vcpus: u8,
    /// The PCIe host bridge; `None` leaves out PCI0 and MCFG.
    pub pci: Option<PciHostConfig>,
}

/// The tables, ready to be written into guest memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcpiTables {
    /// Guest-physical address of the RSDP (16-byte aligned, inside the BIOS area); also what
    /// the zero page's `acpi_rsdp_addr` may carry.
    pub rsdp_addr: u64,
    /// (guest-physical address, bytes) of each table, in ascending address order, all inside
    /// `ACPI_AREA_START..ACPI_AREA_START + ACPI_AREA_SIZE`.
    pub blobs: Vec<(u64, Vec<u8>)>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AcpiError {
    #[error("cannot describe {0} vCPUs: use between 1 and {max}", max = MAX_VCPUS)]
    VcpuCount(u8),
    #[error("PCI bus range {start}..={end} is empty: bus_start must not exceed bus_end")]
    BusRange { start: u8, end: u8 },
    #[error(
        "PCI ECAM at {base:#x} (size {size:#x}) must be 1 MiB aligned, start at least \
         bus_start MiB above 0 and cover buses {start}..={end} at 1 MiB each"
    )]
    Ecam {
        base: u64,
        size: u64,
        start: u8,
        end: u8,
    },
    #[error(
        "PCI I/O window {start:#x}..={end:#x} is empty once the config ports 0xcf8-0xcff are \
         taken out: give a non-empty range outside them"
    )]
    IoWindow { start: u16, end: u16 },
    #[error(
        "PCI 32-bit MMIO window at {start:#x} (size {size:#x}) must be non-empty and end at \
         or below 4 GiB"
    )]
    Mmio32Window { start: u64, size: u64 },
    #[error(
        "PCI 64-bit MMIO window at {start:#x} (size {size:#x}) must be non-empty and end \
         inside the 64-bit address space"
    )]
    Mmio64Window { start: u64, size: u64 },
    #[error(
        "ACPI tables do not fit the {size:#x}-byte BIOS area at {start:#x}: use fewer vCPUs",
        size = ACPI_AREA_SIZE,
        start = ACPI_AREA_START
    )]
    TooLarge,
}

/// Builds every table and lays them out in the BIOS area.
pub fn build(cfg: &AcpiConfig) -> Result<AcpiTables, AcpiError> {
    if cfg.vcpus == 0 || cfg.vcpus > MAX_VCPUS {
        return Err(AcpiError::VcpuCount(cfg.vcpus));
    }
    if let Some(pci) = &cfg.pci {
        pci.validate()?;
    }

    // Tables that others point at go first, so every pointer is known when it is written;
    // the RSDP comes last.
    let mut area = Area::default();
    let dsdt = area.place(dsdt::build(cfg.pci.as_ref()))?;
    let mut xsdt_entries = vec![
        area.place(fadt::build(dsdt))?,
        area.place(madt::build(cfg.vcpus))?,
    ];
    if let Some(pci) = &cfg.pci {
        xsdt_entries.push(area.place(mcfg::build(pci))?);
    }
    let xsdt = area.place(root::xsdt(&xsdt_entries))?;
    let rsdp_addr = area.place(root::rsdp(xsdt))?;
    Ok(AcpiTables {
        rsdp_addr,
        blobs: area.blobs,
    })
}

/// Hands out consecutive, 16-byte aligned addresses in the BIOS area (the RSDP needs 16,
/// the other tables are happy with it).
struct Area {
    next: u64,
    blobs: Vec<(u64, Vec<u8>)>,
}

impl Default for Area {
    fn default() -> Self {
        Self {
            next: ACPI_AREA_START,
            blobs: Vec::new(),
        }
    }
}

impl Area {
    fn place(&mut self, bytes: Vec<u8>) -> Result<u64, AcpiError> {
        let addr = self.next;
        let end = addr + bytes.len() as u64;
        if end > ACPI_AREA_START + ACPI_AREA_SIZE {
            return Err(AcpiError::TooLarge);
        }
        self.next = end.next_multiple_of(16);
        self.blobs.push((addr, bytes));
        Ok(addr)
    }
}
