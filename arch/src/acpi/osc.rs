//! PCI0's _OSC: which PCIe features the OS may drive natively.
//!
//! Linux asks for control through this method (PCI Firmware spec 4.5); without it, it keeps
//! its hands off PME/AER and complains. We grant PME, AER and the PCIe capability structure,
//! and withhold native hotplug (PCIe and SHPC): nothing is ever hot-plugged. Roughly:
//!
//! ```text
//! Method (_OSC, 4) {
//!     CreateDWordField (Arg3, 0, CDW1)
//!     If (Arg0 == ToUUID ("33db4d5b-1ff7-401c-9657-7441c03dd766")) {
//!         CreateDWordField (Arg3, 8, CDW3)
//!         Local0 = CDW3 & GRANTED
//!         If (Local0 != CDW3) { CDW1 |= CAPABILITIES_MASKED }
//!         CDW3 = Local0
//!         If (Arg1 != 1) { CDW1 |= UNRECOGNIZED_REVISION }
//!         Return (Arg3)
//!     }
//!     CDW1 |= UNRECOGNIZED_UUID
//!     Return (Arg3)
//! }
//! ```

use acpi_tables::{
    aml::{
        And, Arg, CreateDWordField, Equal, If, Local, Method, NotEqual, Or, Path, Return, Store,
        Uuid, ONE, ZERO,
    },
    Aml,
};

/// The PCI host bridge _OSC interface.
const PCI_HOST_BRIDGE_UUID: &str = "33DB4D5B-1FF7-401C-9657-7441C03DD766";

/// Control field (third dword) bits.
const CONTROL_PME: u32 = 1 << 2;
const CONTROL_AER: u32 = 1 << 3;
const CONTROL_PCIE_CAPABILITY: u32 = 1 << 4;
pub(super) const GRANTED: u32 = CONTROL_PME | CONTROL_AER | CONTROL_PCIE_CAPABILITY;

/// Status bits in the first dword.
const UNRECOGNIZED_UUID: u8 = 1 << 2;
const UNRECOGNIZED_REVISION: u8 = 1 << 3;
/// Set only when we cleared a bit the OS asked for: on a non-query call Linux treats it
/// as failure, and it only ever requests again what the query granted.
const CAPABILITIES_MASKED: u8 = 1 << 4;

/// AML bytes of the `_OSC` method.
pub(super) fn method() -> Vec<u8> {
    let cdw1 = Path::new("CDW1");
    let cdw3 = Path::new("CDW3");
    let return_arg3 = Return::new(&Arg(3));

    // Local0 = CDW3 & GRANTED; flag the masking if it dropped a requested bit.
    let grant = And::new(&Local(0), &cdw3, &GRANTED);
    let dropped_some = NotEqual::new(&Local(0), &cdw3);
    let set_masked = Or::new(&cdw1, &cdw1, &CAPABILITIES_MASKED);
    let report_masked = If::new(&dropped_some, vec![&set_masked]);
    let store_grant = Store::new(&cdw3, &Local(0));

    let other_revision = NotEqual::new(&Arg(1), &ONE);
    let set_bad_revision = Or::new(&cdw1, &cdw1, &UNRECOGNIZED_REVISION);
    let check_revision = If::new(&other_revision, vec![&set_bad_revision]);

    let uuid = Uuid::new(PCI_HOST_BRIDGE_UUID);
    let is_pci = Equal::new(&Arg(0), &uuid);
    let create_cdw3 = CreateDWordField::new(&cdw3, &Arg(3), &8u8);
    let pci = If::new(
        &is_pci,
        vec![
            &create_cdw3,
            &grant,
            &report_masked,
            &store_grant,
            &check_revision,
            &return_arg3,
        ],
    );

    let create_cdw1 = CreateDWordField::new(&cdw1, &Arg(3), &ZERO);
    let set_bad_uuid = Or::new(&cdw1, &cdw1, &UNRECOGNIZED_UUID);
    let osc = Method::new(
        "_OSC".into(),
        4,
        false,
        vec![&create_cdw1, &pci, &set_bad_uuid, &return_arg3],
    );

    let mut bytes = Vec::new();
    osc.to_aml_bytes(&mut bytes);
    bytes
}
