//! The host bridge at 00:00.0: only a header, so the guest sees a root complex at the top
//! of bus 0 (what the DSDT's PCI0 describes). No BARs, no interrupts.

use super::config::{ConfigSpace, PciIds};
use super::{Bar, PciDevice};

/// Red Hat's PCIe host bridge id (the one QEMU's q35 uses), which guests know.
pub const HOST_BRIDGE_VENDOR_ID: u16 = 0x1b36;
pub const HOST_BRIDGE_DEVICE_ID: u16 = 0x0008;
/// Class 06 (bridge), subclass 00 (host bridge), prog-if 00.
const CLASS_BRIDGE: u8 = 0x06;
const SUBCLASS_HOST: u8 = 0x00;

pub struct HostBridge {
    config: ConfigSpace,
}

impl HostBridge {
    pub fn new() -> Self {
        Self {
            config: ConfigSpace::new(&PciIds {
                vendor_id: HOST_BRIDGE_VENDOR_ID,
                device_id: HOST_BRIDGE_DEVICE_ID,
                class: CLASS_BRIDGE,
                subclass: SUBCLASS_HOST,
                subsystem_vendor_id: HOST_BRIDGE_VENDOR_ID,
                subsystem_id: 0x1100,
                ..Default::default()
            }),
        }
    }
}

impl Default for HostBridge {
    fn default() -> Self {
        Self::new()
    }
}

impl PciDevice for HostBridge {
    fn config_read(&mut self, offset: u16) -> u32 {
        self.config.read(offset)
    }

    fn config_write(&mut self, offset: u16, data: &[u8]) {
        self.config.write(offset, data);
    }

    fn bars(&self) -> Vec<Bar> {
        Vec::new()
    }

    fn bar_read(&mut self, _index: u8, _offset: u64, data: &mut [u8]) {
        data.fill(0xff);
    }

    fn bar_write(&mut self, _index: u8, _offset: u64, _data: &[u8]) {}

    fn assign_bar(&mut self, _index: u8, _addr: u64) {}

    fn name(&self) -> String {
        "host bridge".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pci::config::{CLASS_PROG_IF, HEADER_TYPE, VENDOR_ID};

    #[test]
    fn identifies_as_a_host_bridge_without_bars() {
        let mut hb = HostBridge::new();
        assert_eq!(hb.config_read(VENDOR_ID), 0x0008_1b36);
        assert_eq!(hb.config_read(CLASS_PROG_IF & !3), 0x0600_0000);
        assert_eq!((hb.config_read(HEADER_TYPE & !3) >> 16) & 0xff, 0);
        for offset in (0x10..0x28).step_by(4) {
            hb.config_write(offset, &[0xff; 4]);
            assert_eq!(hb.config_read(offset), 0);
        }
        assert!(hb.bars().is_empty());
    }
}
