//! The guest's two ways into config space, as bus devices in front of a [`PciRoot`].

use std::sync::Arc;

use super::PciRoot;
use crate::pci::Bdf;
use crate::BusDevice;

/// Ports covered by [`PciConfigIo`]: CONFIG_ADDRESS (0xcf8-0xcfb) and CONFIG_DATA
/// (0xcfc-0xcff).
pub const CONFIG_IO_LEN: u64 = 8;
const DATA: u64 = 4;
const ENABLE: u32 = 1 << 31;
/// Enable, bus (23:16), device (15:11), function (10:8), register (7:2); the rest reads 0.
const ADDRESS_MASK: u32 = ENABLE | 0x00ff_fffc;

/// Config mechanism #1: insert on the PIO bus at 0xcf8 with length [`CONFIG_IO_LEN`].
pub struct PciConfigIo {
    root: Arc<PciRoot>,
    address: u32,
}

impl PciConfigIo {
    pub fn new(root: Arc<PciRoot>) -> Self {
        Self { root, address: 0 }
    }

    /// The function and offset that CONFIG_DATA + `byte` reaches, if enabled.
    fn target(&self, byte: u64, len: usize) -> Option<(Bdf, u16)> {
        let a = self.address;
        // An access must stay inside the data dword (a word at 0xcff would not).
        if a & ENABLE == 0 || byte as usize + len > 4 {
            return None;
        }
        let offset = (a & 0xfc) as u16 + byte as u16;
        let bdf = Bdf {
            domain: 0,
            bus: (a >> 16) as u8,
            device: ((a >> 11) & 0x1f) as u8,
            function: ((a >> 8) & 7) as u8,
        };
        Some((bdf, offset))
    }
}

impl BusDevice for PciConfigIo {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= DATA {
            match self.target(offset - DATA, data.len()) {
                Some((bdf, reg)) => self.root.config_read(bdf, reg, data),
                None => data.fill(0xff),
            }
        } else if offset == 0 && data.len() == 4 {
            data.copy_from_slice(&self.address.to_le_bytes());
        } else {
            // Narrow accesses to 0xcf8-0xcfb are not CONFIG_ADDRESS on real chipsets.
            data.fill(0xff);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= DATA {
            if let Some((bdf, reg)) = self.target(offset - DATA, data.len()) {
                self.root.config_write(bdf, reg, data);
            }
        } else if let (0, Ok(dword)) = (offset, <[u8; 4]>::try_from(data)) {
            self.address = u32::from_le_bytes(dword) & ADDRESS_MASK;
        }
    }
}

/// The ECAM window (PCIe memory-mapped config): insert on the MMIO bus at the ECAM base
/// with its size (1 MiB per bus). Reaches the whole 4 KiB of each function.
pub struct PciEcam {
    root: Arc<PciRoot>,
}

impl PciEcam {
    pub fn new(root: Arc<PciRoot>) -> Self {
        Self { root }
    }

    /// offset = bus << 20 | device << 15 | function << 12 | register. Accesses crossing
    /// into the next function are refused.
    fn target(offset: u64, len: usize) -> Option<(Bdf, u16)> {
        let reg = (offset & 0xfff) as u16;
        if offset >> 20 > 0xff || usize::from(reg) + len > 0x1000 {
            return None;
        }
        let bdf = Bdf {
            domain: 0,
            bus: (offset >> 20) as u8,
            device: ((offset >> 15) & 0x1f) as u8,
            function: ((offset >> 12) & 7) as u8,
        };
        Some((bdf, reg))
    }
}

impl BusDevice for PciEcam {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        match Self::target(offset, data.len()) {
            Some((bdf, reg)) => self.root.config_read(bdf, reg, data),
            None => data.fill(0xff),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let Some((bdf, reg)) = Self::target(offset, data.len()) {
            self.root.config_write(bdf, reg, data);
        }
    }
}
