//! DSDT: `\_S5_` (soft-off), COM1, the power button, and with PCI the host bridge and the ECAM reservation.

use acpi_tables::{
    aml::{Device, EISAName, Interrupt, Name, Package, ResourceTemplate, Scope, IO, ZERO},
    sdt::Sdt,
    Aml, AmlSink,
};

use super::{pci0, power_button, PciHostConfig, OEM_ID, OEM_REVISION, OEM_TABLE_ID};
use crate::layout::{ACPI_S5_SLEEP_TYPE, COM1_IRQ, COM1_PORT};

/// Revision 2: AML integers are 64-bit.
const DSDT_REVISION: u8 = 2;
const HEADER_LEN: u32 = 36;

/// Already-encoded AML, to nest pieces built by separate functions.
pub(super) struct Raw(pub(super) Vec<u8>);

impl Aml for Raw {
    fn to_aml_bytes(&self, sink: &mut dyn AmlSink) {
        sink.vec(&self.0);
    }
}

pub(super) fn build(pci: Option<&PciHostConfig>) -> Vec<u8> {
    let mut aml = Vec::new();
    s5().to_aml_bytes(&mut aml);

    let mut system_bus = com1();
    system_bus.extend(power_button::devices());
    if let Some(pci) = pci {
        system_bus.extend(pci0::device(pci));
        system_bus.extend(pci0::ecam_reservation(pci));
    }
    aml.extend(Scope::raw("\\_SB_".into(), system_bus));

    let mut dsdt = Sdt::new(
        *b"DSDT",
        HEADER_LEN,
        DSDT_REVISION,
        OEM_ID,
        OEM_TABLE_ID,
        OEM_REVISION,
    );
    dsdt.append_slice(&aml);
    dsdt.as_slice().to_vec()
}

/// `Name (\_S5_, Package { SLP_TYPa, SLP_TYPb, 0, 0 })`: Linux's poweroff writes
/// `(SLP_TYPa << 2) | SLP_EN` to the FADT's sleep control register.
fn s5() -> Name {
    let package = Package::new(vec![&ACPI_S5_SLEEP_TYPE, &ACPI_S5_SLEEP_TYPE, &ZERO, &ZERO]);
    Name::new("_S5_".into(), &package)
}

/// The 16550 at 0x3f8, IRQ 4. In hardware-reduced mode Linux maps no ISA IRQs by itself, so
/// this device is what gives the 8250 driver a working interrupt.
fn com1() -> Vec<u8> {
    let hid = Name::new("_HID".into(), &EISAName::new("PNP0501"));
    let uid = Name::new("_UID".into(), &ZERO);
    let io = IO::new(COM1_PORT, COM1_PORT, 1, 8);
    // Consumer, edge-triggered, active-high, exclusive: an ISA interrupt.
    let irq = Interrupt::new(true, true, false, false, COM1_IRQ);
    let crs = Name::new("_CRS".into(), &ResourceTemplate::new(vec![&io, &irq]));

    let mut bytes = Vec::new();
    Device::new("COM1".into(), vec![&hid, &uid, &crs]).to_aml_bytes(&mut bytes);
    bytes
}
