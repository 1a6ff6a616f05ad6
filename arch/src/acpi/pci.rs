//! The PCIe host bridge the tables describe, and how its INTx lines reach the IOAPIC.

use std::ops::RangeInclusive;

use super::AcpiError;
use crate::layout::{
    FOUR_GIB, IOAPIC_PINS, PCI_CONFIG_ADDRESS_PORT, PCI_ECAM_SIZE, PCI_ECAM_START, PCI_MMIO32_SIZE,
    PCI_MMIO32_START,
};
use crate::pci_windows::PciWindows;

/// ECAM gives each bus 1 MiB of config space.
const ECAM_BUS_SHIFT: u32 = 20;
/// Config mechanism #1 ports (0xcf8 address, 0xcfc-0xcff data): the bridge consumes them.
pub(super) const CONFIG_PORTS: RangeInclusive<u16> =
    PCI_CONFIG_ADDRESS_PORT..=PCI_CONFIG_ADDRESS_PORT + 7;
/// Ports below 0x1000 stay with the platform devices (COM1, i8042, ACPI PM, ...).
const DEFAULT_IO_WINDOW: RangeInclusive<u16> = 0x1000..=0xffff;

/// IOAPIC pins 0-15 carry ISA IRQs; PCI INTx uses the pins above them.
pub const PCI_INTX_GSI_BASE: u32 = 16;
pub const PCI_INTX_GSI_COUNT: u32 = IOAPIC_PINS - PCI_INTX_GSI_BASE;

/// The IOAPIC GSI that INTx `pin` (0 = INTA ... 3 = INTD, i.e. the config-space Interrupt
/// Pin register minus one) of any function in device `slot` (0-31) on the root bus drives:
///
/// `GSI = 16 + (slot + pin) % 8`
///
/// The usual swizzle, so INTA of neighbouring slots lands on different lines. The lines are
/// level-triggered, active-low and shared (what Linux assumes for _PRT entries that name a
/// GSI directly); the DSDT's _PRT is generated from this same function.
pub fn pci_intx_gsi(slot: u8, pin: u8) -> u32 {
    debug_assert!(slot < 32 && pin < 4, "slot {slot} pin {pin}");
    PCI_INTX_GSI_BASE + (u32::from(slot) + u32::from(pin)) % PCI_INTX_GSI_COUNT
}

/// The PCIe host bridge (segment 0) the DSDT's PCI0 and the MCFG describe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PciHostConfig {
    /// Guest-physical address of bus `bus_start`'s config space (1 MiB aligned).
    pub ecam_base: u64,
    /// Bytes of ECAM; at least 1 MiB per bus in `bus_start..=bus_end`.
    pub ecam_size: u64,
    pub bus_start: u8,
    pub bus_end: u8,
    /// I/O-port window for BARs. The config ports 0xcf8-0xcff are cut out of it if inside.
    pub io: RangeInclusive<u16>,
    /// 32-bit MMIO window for BARs: (start, size), ending at or below 4 GiB.
    pub mmio32: (u64, u64),
    /// 64-bit MMIO window for BARs: (start, size), e.g. `layout::pci_mmio64_window`.
    /// `None` when the guest's physical address space leaves no room for one.
    pub mmio64: Option<(u64, u64)>,
}

impl PciHostConfig {
    /// The platform's fixed layout (bus 0 of the ECAM, ports 0x1000-0xffff, the 32-bit BAR
    /// window) plus the 64-bit window, which depends on RAM size and physical bits.
    ///
    /// The bridge claims bus 0 only, the one bus zhitong emulates (no PCI-PCI bridges):
    /// Linux takes MCFG's last bus as the last bus to probe for peer host bridges and reads
    /// the vendor ID of all 32 slots of every bus up to it (pcibios_fixup_peer_bridges), so
    /// claiming the ECAM's 16 buses cost the guest ~960 config-port exits, ~85 ms of its
    /// boot in the lab.
    pub fn new(mmio64: Option<(u64, u64)>) -> Self {
        Self {
            ecam_base: PCI_ECAM_START,
            ecam_size: PCI_ECAM_SIZE,
            bus_start: 0,
            bus_end: 0,
            io: DEFAULT_IO_WINDOW,
            mmio32: (PCI_MMIO32_START, PCI_MMIO32_SIZE),
            mmio64,
        }
    }

    /// What the tables must say about `windows` (the same the BAR allocator uses).
    pub fn from_windows(windows: &PciWindows) -> Self {
        let mut cfg = Self::new(windows.mmio64.map(|w| (w.start, w.size)));
        if let Some(io) = windows.io {
            cfg.io = io.start as u16..=(io.start + io.size - 1) as u16;
        }
        cfg.mmio32 = (windows.mmio32.start, windows.mmio32.size);
        cfg
    }

    pub(super) fn validate(&self) -> Result<(), AcpiError> {
        if self.bus_start > self.bus_end {
            return Err(AcpiError::BusRange {
                start: self.bus_start,
                end: self.bus_end,
            });
        }
        let buses = u64::from(self.bus_end - self.bus_start) + 1;
        let ecam_ok = self.ecam_base & ((1 << ECAM_BUS_SHIFT) - 1) == 0
            && self.ecam_base >= u64::from(self.bus_start) << ECAM_BUS_SHIFT
            && self.ecam_size >= buses << ECAM_BUS_SHIFT
            && self.ecam_base.checked_add(self.ecam_size).is_some();
        if !ecam_ok {
            return Err(AcpiError::Ecam {
                base: self.ecam_base,
                size: self.ecam_size,
                start: self.bus_start,
                end: self.bus_end,
            });
        }
        if self.io_windows().is_empty() {
            return Err(AcpiError::IoWindow {
                start: *self.io.start(),
                end: *self.io.end(),
            });
        }
        let (start, size) = self.mmio32;
        if size == 0 || !matches!(start.checked_add(size), Some(end) if end <= FOUR_GIB) {
            return Err(AcpiError::Mmio32Window { start, size });
        }
        if let Some((start, size)) = self.mmio64 {
            if size == 0 || start.checked_add(size - 1).is_none() {
                return Err(AcpiError::Mmio64Window { start, size });
            }
        }
        Ok(())
    }

    /// MCFG's base address is that of bus 0, even when the bridge starts at a later bus.
    pub(super) fn mcfg_base(&self) -> u64 {
        self.ecam_base - (u64::from(self.bus_start) << ECAM_BUS_SHIFT)
    }

    /// The I/O window as inclusive (first, last) ranges, minus the config ports.
    pub(super) fn io_windows(&self) -> Vec<(u16, u16)> {
        let (first, last) = (*self.io.start(), *self.io.end());
        let (cfg_first, cfg_last) = (*CONFIG_PORTS.start(), *CONFIG_PORTS.end());
        if first > last {
            return Vec::new();
        }
        if last < cfg_first || first > cfg_last {
            return vec![(first, last)];
        }
        let mut windows = Vec::new();
        if first < cfg_first {
            windows.push((first, cfg_first - 1));
        }
        if last > cfg_last {
            windows.push((cfg_last + 1, last));
        }
        windows
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::pci_mmio64_window;

    fn default_config() -> PciHostConfig {
        PciHostConfig::new(pci_mmio64_window(4 << 30, 46))
    }

    #[test]
    fn intx_gsis_stay_on_the_pci_pins_and_swizzle() {
        for slot in 0..32 {
            for pin in 0..4 {
                let gsi = pci_intx_gsi(slot, pin);
                assert!((PCI_INTX_GSI_BASE..IOAPIC_PINS).contains(&gsi));
            }
        }
        assert_eq!(pci_intx_gsi(0, 0), 16);
        assert_eq!(pci_intx_gsi(1, 0), 17);
        assert_eq!(pci_intx_gsi(1, 3), 20);
        assert_eq!(pci_intx_gsi(7, 1), 16);
        assert_eq!(pci_intx_gsi(31, 3), 18);
    }

    #[test]
    fn default_config_is_valid_and_claims_the_root_bus_only() {
        let cfg = default_config();
        cfg.validate().unwrap();
        assert_eq!((cfg.bus_start, cfg.bus_end), (0, 0));
        assert!(cfg.ecam_size >= 1 << ECAM_BUS_SHIFT);
        assert_eq!(cfg.mcfg_base(), PCI_ECAM_START);
        assert_eq!(cfg.io_windows(), vec![(0x1000, 0xffff)]);
    }

    #[test]
    fn config_ports_are_cut_out_of_the_io_window() {
        let mut cfg = default_config();
        cfg.io = 0xc00..=0xdff;
        assert_eq!(cfg.io_windows(), vec![(0xc00, 0xcf7), (0xd00, 0xdff)]);
        cfg.io = 0xcf8..=0xfff;
        assert_eq!(cfg.io_windows(), vec![(0xd00, 0xfff)]);
        cfg.io = 0..=0xffff;
        assert_eq!(cfg.io_windows(), vec![(0, 0xcf7), (0xd00, 0xffff)]);
        cfg.io = 0xcf8..=0xcff;
        assert!(matches!(cfg.validate(), Err(AcpiError::IoWindow { .. })));
    }

    #[test]
    fn bad_windows_are_rejected() {
        let mut cfg = default_config();
        cfg.bus_start = 3;
        cfg.bus_end = 2;
        assert!(matches!(cfg.validate(), Err(AcpiError::BusRange { .. })));

        let mut cfg = default_config();
        cfg.bus_end = 15;
        cfg.ecam_size = 1 << 20; // one bus, but 16 declared
        assert!(matches!(cfg.validate(), Err(AcpiError::Ecam { .. })));

        let mut cfg = default_config();
        cfg.mmio32 = (0xf000_0000, 0x2000_0000);
        assert!(matches!(
            cfg.validate(),
            Err(AcpiError::Mmio32Window { .. })
        ));

        let mut cfg = default_config();
        cfg.mmio64 = Some((1 << 40, 0));
        assert!(matches!(
            cfg.validate(),
            Err(AcpiError::Mmio64Window { .. })
        ));
        cfg.mmio64 = Some((u64::MAX - 10, 100));
        assert!(matches!(
            cfg.validate(),
            Err(AcpiError::Mmio64Window { .. })
        ));
    }

    #[test]
    fn later_start_bus_shifts_the_mcfg_base_down() {
        let mut cfg = default_config();
        cfg.bus_start = 4;
        cfg.bus_end = 15;
        cfg.ecam_base = PCI_ECAM_START + (4 << 20);
        cfg.ecam_size = 12 << 20;
        cfg.validate().unwrap();
        assert_eq!(cfg.mcfg_base(), PCI_ECAM_START);
    }
}
