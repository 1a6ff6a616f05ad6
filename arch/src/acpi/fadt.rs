//! FADT for a hardware-reduced ACPI platform.
//!
//! With HW_REDUCED_ACPI set, Linux (ACPICA) ignores the PM1/PM2/PM timer/GPE blocks and the
//! SCI, and sleeps through the sleep control/status registers instead: poweroff writes
//! `(SLP_TYP << 2) | SLP_EN` to sleep control. Reboot tries the reset register first.

use acpi_tables::{
    fadt::{FADTBuilder, Flags, PmProfile},
    gas::{AccessSize, AddressSpace, GAS},
    Aml,
};

use super::{OEM_ID, OEM_REVISION, OEM_TABLE_ID};
use crate::layout::{
    ACPI_RESET_PORT, ACPI_RESET_VALUE, ACPI_SLEEP_CONTROL_PORT, ACPI_SLEEP_STATUS_PORT,
};

// IA-PC boot architecture flags (FADT offset 109). Left clear:
// - LEGACY_DEVICES: only gates PnP BIOS probing.
// - 8042: our i8042 only implements the reset command, so Linux's i8042 driver must not
//   probe it. Linux's reboot fallback writes 0xfe to port 0x64 directly, flag or not.
// - MSI_NOT_SUPPORTED: MSI/MSI-X are how passed-through devices interrupt.
/// No legacy VGA: a passed-through GPU's VGA ranges are not forwarded.
const IAPC_VGA_NOT_PRESENT: u16 = 1 << 2;
/// The guest cannot manage link power of host links: keep Linux's ASPM code off.
const IAPC_PCIE_ASPM_CONTROLS: u16 = 1 << 4;
/// No CMOS RTC is emulated; wall-clock time comes from kvmclock.
const IAPC_CMOS_RTC_NOT_PRESENT: u16 = 1 << 5;
const IAPC_BOOT_ARCH: u16 =
    IAPC_VGA_NOT_PRESENT | IAPC_PCIE_ASPM_CONTROLS | IAPC_CMOS_RTC_NOT_PRESENT;

/// Identifies the hypervisor in the FADT's last field.
const HYPERVISOR_VENDOR_ID: [u8; 8] = *b"ZHITONG ";

/// A one-byte System I/O register.
fn io_byte(port: u16) -> GAS {
    GAS::new(
        AddressSpace::SystemIo,
        8,
        0,
        AccessSize::ByteAccess,
        port.into(),
    )
}

pub(super) fn build(dsdt_addr: u64) -> Vec<u8> {
    // The crate writes FADT revision 6.5 (the ACPI 6.x layout with sleep registers).
    let mut fadt = FADTBuilder::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION)
        .dsdt_64(dsdt_addr)
        .preferred_pm_profile(PmProfile::EnterpriseServer)
        .flag(Flags::Wbinvd)
        .flag(Flags::HwReducedAcpi)
        .flag(Flags::ResetRegSup)
        // Set = "no fixed-feature button": stops Linux adding LNXPWRBN/LNXSLPBN devices.
        .flag(Flags::PwrButton)
        .flag(Flags::SlpButton);
    fadt.iapc_boot_arch = IAPC_BOOT_ARCH.into();
    fadt.reset_reg = io_byte(ACPI_RESET_PORT);
    fadt.reset_value = ACPI_RESET_VALUE;
    fadt.sleep_control_reg = io_byte(ACPI_SLEEP_CONTROL_PORT);
    fadt.sleep_status_reg = io_byte(ACPI_SLEEP_STATUS_PORT);
    fadt.hypervisor_vendor_identity = u64::from_le_bytes(HYPERVISOR_VENDOR_ID).into();

    let mut bytes = Vec::new();
    fadt.finalize().to_aml_bytes(&mut bytes);
    bytes
}
