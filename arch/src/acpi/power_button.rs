//! The ACPI power button of a hardware-reduced platform: a Generic Event Device (ACPI0013)
//! whose interrupt runs `_EVT`, which notifies the power button device (PNP0C0C). Linux's
//! button driver turns the notification into a KEY_POWER input event that the guest's
//! acpid/logind acts on: how a VMM asks a guest to shut down cleanly.

use acpi_tables::{
    aml::{
        Arg, Device, EISAName, Equal, If, Interrupt, Method, Name, Notify, Path, ResourceTemplate,
        ZERO,
    },
    Aml,
};

use crate::layout::POWER_BUTTON_GSI;

/// Notify value for "power button pressed".
const BUTTON_PRESSED: u8 = 0x80;

/// AML for `PWRB` and `GED0`, to go inside `\_SB_`.
pub(super) fn devices() -> Vec<u8> {
    let mut bytes = Vec::new();

    let hid = Name::new("_HID".into(), &EISAName::new("PNP0C0C"));
    let uid = Name::new("_UID".into(), &ZERO);
    Device::new("PWRB".into(), vec![&hid, &uid]).to_aml_bytes(&mut bytes);

    let hid = Name::new("_HID".into(), &"ACPI0013");
    // Consumer, edge-triggered, active-high, exclusive: the VMM pulses it through an irqfd.
    let irq = Interrupt::new(true, true, false, false, POWER_BUTTON_GSI);
    let crs = Name::new("_CRS".into(), &ResourceTemplate::new(vec![&irq]));
    let button = Path::new("\\_SB_.PWRB");
    let notify = Notify::new(&button, &BUTTON_PRESSED);
    let is_button = Equal::new(&Arg(0), &POWER_BUTTON_GSI);
    let on_button = If::new(&is_button, vec![&notify]);
    let evt = Method::new("_EVT".into(), 1, true, vec![&on_button]);
    Device::new("GED0".into(), vec![&hid, &uid, &crs, &evt]).to_aml_bytes(&mut bytes);
    bytes
}
