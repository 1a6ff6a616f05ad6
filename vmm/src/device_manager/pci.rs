//! The guest's PCI topology: the root complex (host bridge at 00:00.0) reached through
//! 0xCF8/0xCFC and ECAM, its BAR windows (the same the ACPI DSDT declares), and where the
//! passed-through functions go in it.

use std::sync::{Arc, Mutex};

use arch::layout::{PCI_CONFIG_ADDRESS_PORT, PCI_ECAM_SIZE, PCI_ECAM_START};
use arch::pci_windows::PciWindows;
use devices::pci::root::{PciConfigIo, PciEcam, PciRoot, CONFIG_IO_LEN};
use devices::pci::Bdf;
use devices::{Bus, WeakBusDevice};

use crate::error::{Error, Result};

/// The root complex and its two config-access devices. The buses refer to the access
/// devices, which hold the root; the root holds the buses (to map BARs) and owns its
/// functions, so dropping this frees every PCI device.
pub struct PciDevices {
    pub root: Arc<PciRoot>,
    _access: (Arc<Mutex<PciConfigIo>>, Arc<Mutex<PciEcam>>),
}

impl PciDevices {
    /// Create the root complex with BARs in `windows` and put its config access on the
    /// buses.
    pub fn new(pio: &Arc<Bus>, mmio: &Arc<Bus>, windows: PciWindows) -> Result<Self> {
        let root = Arc::new(PciRoot::new(pio.clone(), mmio.clone(), windows).map_err(
            |source| Error::Pci {
                what: "the PCI root complex",
                source,
            },
        )?);
        let config_io = Arc::new(Mutex::new(PciConfigIo::new(root.clone())));
        pio.insert(
            u64::from(PCI_CONFIG_ADDRESS_PORT),
            CONFIG_IO_LEN,
            Arc::downgrade(&config_io) as WeakBusDevice,
        )
        .map_err(|e| Error::io("PCI config ports")(std::io::Error::other(e)))?;
        let ecam = Arc::new(Mutex::new(PciEcam::new(root.clone())));
        mmio.insert(
            PCI_ECAM_START,
            PCI_ECAM_SIZE,
            Arc::downgrade(&ecam) as WeakBusDevice,
        )
        .map_err(|e| Error::io("the PCI ECAM window")(std::io::Error::other(e)))?;
        Ok(Self {
            root,
            _access: (config_io, ecam),
        })
    }
}

/// The guest address of each passed-through host function. Functions of one host slot
/// share a guest slot (drivers expect a GPU's audio function next to it) and keep their
/// function numbers when function 0 is among them; otherwise they are renumbered from 0,
/// because a guest only scans a slot whose function 0 exists. Slot 0 is the host bridge.
/// `VmConfig::validate` keeps `devices` within bus 0's 31 free slots.
pub fn place(devices: &[Bdf]) -> Vec<Bdf> {
    let mut host_slots: Vec<Bdf> = Vec::new();
    for d in devices {
        if !host_slots.iter().any(|s| s.same_slot(d)) {
            host_slots.push(*d);
        }
    }
    devices
        .iter()
        .map(|d| {
            let slot = 1 + host_slots.iter().take_while(|s| !s.same_slot(d)).count() as u8;
            let mut siblings: Vec<u8> = devices
                .iter()
                .filter(|o| o.same_slot(d))
                .map(|o| o.function)
                .collect();
            siblings.sort_unstable();
            let function = if siblings.contains(&0) {
                d.function
            } else {
                siblings.iter().take_while(|f| **f != d.function).count() as u8
            };
            Bdf::root_bus(slot, function)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bdfs(list: &[&str]) -> Vec<Bdf> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn functions_of_a_host_slot_share_a_guest_slot() {
        let got = place(&bdfs(&["01:00.0", "02:00.0", "01:00.1"]));
        assert_eq!(got, bdfs(&["00:01.0", "00:02.0", "00:01.1"]));
    }

    #[test]
    fn functions_without_function_0_are_renumbered() {
        let got = place(&bdfs(&["03:00.3", "03:00.1"]));
        assert_eq!(got, bdfs(&["00:01.1", "00:01.0"]));
        assert_eq!(place(&bdfs(&["03:00.2"])), bdfs(&["00:01.0"]));
    }

    #[test]
    fn slots_of_other_domains_are_apart() {
        let got = place(&bdfs(&["0001:01:00.0", "0000:01:00.0"]));
        assert_eq!(got, bdfs(&["00:01.0", "00:02.0"]));
    }
}
