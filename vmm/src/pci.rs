//! The guest's PCI topology: the root complex (host bridge at 00:00.0) reached through
//! 0xCF8/0xCFC and ECAM, its BAR windows (the same the ACPI DSDT declares), and the
//! passed-through functions placed in guest slots.

use std::sync::{Arc, Mutex};

use arch::acpi::PciHostConfig;
use arch::layout::{
    pci_mmio64_window, PCI_CONFIG_ADDRESS_PORT, PCI_ECAM_SIZE, PCI_ECAM_START, PCI_MMIO32_SIZE,
    PCI_MMIO32_START,
};
use devices::pci::allocator::{PciWindows, Window};
use devices::pci::root::{PciConfigIo, PciEcam, PciRoot};
use devices::Bus;
use kvm_bindings::CpuId;

use crate::error::{Error, Result};
use crate::host::Bdf;

/// I/O ports the host bridge forwards to I/O BARs (everything above the legacy range).
const PCI_IO_START: u64 = 0x1000;
const PCI_IO_END: u64 = 0x1_0000;
/// Guest-physical address bits we never exceed: 4-level EPT/NPT cover 48 bits.
const MAX_GUEST_PHYS_BITS: u8 = 48;

/// The guest's physical address width: what its CPUID (KVM's supported leaf 0x80000008)
/// announces, capped at what 4-level nested paging maps.
pub fn guest_phys_bits(cpuid: &CpuId) -> u8 {
    phys_bits_from_leaf(
        cpuid
            .as_slice()
            .iter()
            .find(|e| e.function == 0x8000_0008)
            .map(|e| e.eax),
    )
}

/// The guest physical address width for EAX of CPUID leaf 0x80000008 (None: no such leaf):
/// its low byte, 36 when absent or implausible, capped at what 4-level nested paging maps.
/// `zhitong run` feeds KVM's leaf, `zhitong check` the host's, so both size the same windows.
pub fn phys_bits_from_leaf(eax: Option<u32>) -> u8 {
    eax.map(|eax| (eax & 0xff) as u8)
        .filter(|&bits| bits >= 32)
        .unwrap_or(36)
        .min(MAX_GUEST_PHYS_BITS)
}

/// BAR windows for a guest with `ram_size` of RAM and `phys_bits` of address space.
pub fn windows(ram_size: u64, phys_bits: u8) -> PciWindows {
    PciWindows {
        io: Some(Window::new(PCI_IO_START, PCI_IO_END - PCI_IO_START)),
        mmio32: Window::new(PCI_MMIO32_START, PCI_MMIO32_SIZE),
        mmio64: pci_mmio64_window(ram_size, phys_bits)
            .map(|(start, size)| Window::new(start, size)),
    }
}

/// What the ACPI tables must say about the same windows.
pub fn acpi_host_config(windows: &PciWindows) -> PciHostConfig {
    let mut cfg = PciHostConfig::new(windows.mmio64.map(|w| (w.start, w.size)));
    if let Some(io) = windows.io {
        cfg.io = io.start as u16..=(io.start + io.size - 1) as u16;
    }
    cfg.mmio32 = (windows.mmio32.start, windows.mmio32.size);
    cfg
}

/// Create the root complex and put its config-access devices on the buses.
pub fn create_root(pio: &Arc<Bus>, mmio: &Arc<Bus>, windows: PciWindows) -> Result<Arc<PciRoot>> {
    let fail = |what: &'static str| {
        move |e: String| Error::Io {
            what,
            source: std::io::Error::other(e),
        }
    };
    let root = Arc::new(
        PciRoot::new(pio.clone(), mmio.clone(), windows)
            .map_err(|e| fail("the PCI root complex")(e.to_string()))?,
    );
    pio.insert(
        u64::from(PCI_CONFIG_ADDRESS_PORT),
        8,
        Arc::new(Mutex::new(PciConfigIo::new(root.clone()))),
    )
    .map_err(|e| fail("PCI config ports")(e.to_string()))?;
    mmio.insert(
        PCI_ECAM_START,
        PCI_ECAM_SIZE,
        Arc::new(Mutex::new(PciEcam::new(root.clone()))),
    )
    .map_err(|e| fail("the PCI ECAM window")(e.to_string()))?;
    Ok(root)
}

/// Guest (slot, function) for each passed-through host function. Functions of one host
/// slot share a guest slot (drivers expect a GPU's audio function next to it) and keep their
/// function numbers when function 0 is among them; otherwise they are renumbered from 0,
/// because a guest only scans a slot whose function 0 exists. Slot 0 is the host bridge.
pub fn place(devices: &[Bdf]) -> Vec<(u8, u8)> {
    let mut host_slots: Vec<(u16, u8, u8)> = Vec::new();
    for d in devices {
        let key = (d.domain, d.bus, d.device);
        if !host_slots.contains(&key) {
            host_slots.push(key);
        }
    }
    devices
        .iter()
        .map(|d| {
            let key = (d.domain, d.bus, d.device);
            let slot = 1 + host_slots.iter().position(|k| *k == key).unwrap() as u8;
            let mut siblings: Vec<u8> = devices
                .iter()
                .filter(|o| (o.domain, o.bus, o.device) == key)
                .map(|o| o.function)
                .collect();
            siblings.sort_unstable();
            let function = if siblings.contains(&0) {
                d.function
            } else {
                siblings.iter().position(|f| *f == d.function).unwrap() as u8
            };
            (slot, function)
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
        assert_eq!(got, vec![(1, 0), (2, 0), (1, 1)]);
    }

    #[test]
    fn functions_without_function_0_are_renumbered() {
        let got = place(&bdfs(&["03:00.3", "03:00.1"]));
        assert_eq!(got, vec![(1, 1), (1, 0)]);
        assert_eq!(place(&bdfs(&["03:00.2"])), vec![(1, 0)]);
    }

    #[test]
    fn windows_match_the_acpi_config() {
        let w = windows(4 << 30, 46);
        let acpi = acpi_host_config(&w);
        assert_eq!(acpi.mmio32, (PCI_MMIO32_START, PCI_MMIO32_SIZE));
        assert_eq!(acpi.mmio64, w.mmio64.map(|m| (m.start, m.size)));
        assert_eq!(*acpi.io.start(), 0x1000);
        assert_eq!(*acpi.io.end(), 0xffff);
    }

    #[test]
    fn phys_bits_are_capped_and_defaulted() {
        let entry = |eax| kvm_bindings::kvm_cpuid_entry2 {
            function: 0x8000_0008,
            eax,
            ..Default::default()
        };
        let cpuid = |eax| CpuId::from_entries(&[entry(eax)]).unwrap();
        assert_eq!(guest_phys_bits(&cpuid(0x3028)), 40);
        assert_eq!(guest_phys_bits(&cpuid(0x34)), 48);
        assert_eq!(guest_phys_bits(&CpuId::new(0).unwrap()), 36);
    }
}
