//! PCI configuration space: register offsets and bits, [`ConfigSpace`] (the registers of an
//! emulated function: write masks, write-1-to-clear bits, BARs, capability chains) and the
//! BAR helpers in [`bar`] that a device shadowing real hardware can use on their own.

pub mod bar;
#[cfg(test)]
mod tests;

pub use bar::{bar_register_value, merge_dword, parse_bar_register, BarHalf, BarShadow};

use super::{Bar, BarKind, ROM_BAR_INDEX};

// Type 0 header registers (byte offsets).
pub const VENDOR_ID: u16 = 0x00;
pub const DEVICE_ID: u16 = 0x02;
pub const COMMAND: u16 = 0x04;
pub const STATUS: u16 = 0x06;
pub const REVISION_ID: u16 = 0x08;
/// Programming interface, then subclass (0x0a) and base class (0x0b).
pub const CLASS_PROG_IF: u16 = 0x09;
pub const CLASS_SUBCLASS: u16 = 0x0a;
pub const CLASS_BASE: u16 = 0x0b;
pub const CACHE_LINE_SIZE: u16 = 0x0c;
pub const LATENCY_TIMER: u16 = 0x0d;
pub const HEADER_TYPE: u16 = 0x0e;
pub const BIST: u16 = 0x0f;
/// BAR 0; BAR n is at `BAR0 + 4 * n`, the last (BAR 5) at 0x24.
pub const BAR0: u16 = 0x10;
pub const BAR_COUNT: u8 = 6;
pub const SUBSYSTEM_VENDOR_ID: u16 = 0x2c;
pub const SUBSYSTEM_ID: u16 = 0x2e;
/// Expansion ROM BAR.
pub const ROM_BAR: u16 = 0x30;
pub const CAPABILITY_POINTER: u16 = 0x34;
pub const INTERRUPT_LINE: u16 = 0x3c;
/// 0 = no INTx, 1-4 = INTA-INTD.
pub const INTERRUPT_PIN: u16 = 0x3d;

/// Command register bits.
pub const COMMAND_IO: u16 = 1 << 0;
pub const COMMAND_MEMORY: u16 = 1 << 1;
pub const COMMAND_BUS_MASTER: u16 = 1 << 2;
pub const COMMAND_INTX_DISABLE: u16 = 1 << 10;

/// Status register bits.
pub const STATUS_INTERRUPT: u16 = 1 << 3;
pub const STATUS_CAPABILITIES_LIST: u16 = 1 << 4;
/// Error bits software clears by writing 1 (master data parity, signalled/received target
/// abort, received master abort, signalled system error, detected parity error).
pub const STATUS_W1C_BITS: u16 = 0xf900;

/// Header type register.
pub const HEADER_TYPE_NORMAL: u8 = 0x00;
pub const HEADER_TYPE_BRIDGE: u8 = 0x01;
pub const HEADER_TYPE_MULTIFUNCTION: u8 = 0x80;

/// BAR register bits (low dword).
pub const BAR_IO_SPACE: u32 = 1 << 0;
pub const BAR_MEM_64: u32 = 0b10 << 1;
pub const BAR_MEM_PREFETCHABLE: u32 = 1 << 3;
pub const ROM_ENABLE: u32 = 1 << 0;

/// Capability ids (legacy list).
pub const CAP_ID_PM: u8 = 0x01;
pub const CAP_ID_MSI: u8 = 0x05;
pub const CAP_ID_PCIE: u8 = 0x10;
pub const CAP_ID_MSIX: u8 = 0x11;

/// Sizes: the legacy (type 0 header + capabilities) part and the whole PCIe space.
pub const LEGACY_CONFIG_SIZE: u16 = 0x100;
pub const CONFIG_SPACE_SIZE: u16 = 0x1000;
/// Capabilities of the legacy list live above the type 0 header.
pub const CAPABILITIES_START: u16 = 0x40;
/// The first extended capability sits exactly here (PCIe spec).
pub const EXT_CAPABILITIES_START: u16 = 0x100;

/// Offset of BAR register `index` (0-5, or [`ROM_BAR_INDEX`] for the ROM BAR).
pub fn bar_offset(index: u8) -> u16 {
    if index == ROM_BAR_INDEX {
        ROM_BAR
    } else {
        BAR0 + 4 * u16::from(index)
    }
}

/// The BAR register at dword-aligned `offset`: (BAR index, or ROM index, for the slot).
fn bar_slot(offset: u16) -> Option<u8> {
    match offset & !3 {
        ROM_BAR => Some(ROM_BAR_INDEX),
        o @ BAR0..=0x24 => Some(((o - BAR0) / 4) as u8),
        _ => None,
    }
}

/// What identifies a function in its header.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PciIds {
    pub vendor_id: u16,
    pub device_id: u16,
    pub revision: u8,
    pub class: u8,
    pub subclass: u8,
    pub prog_if: u8,
    pub subsystem_vendor_id: u16,
    pub subsystem_id: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    InvalidBar(#[from] bar::InvalidBar),
    #[error("BAR {index} cannot be a {kind:?} BAR (taken, out of range or no room for 64 bits)")]
    BarSlot { index: u8, kind: BarKind },
    #[error("no room for a {len}-byte capability in config space")]
    NoCapabilitySpace { len: usize },
}

/// The 4 KiB config space of an emulated type 0 function.
///
/// Plain registers are bytes with a per-byte write mask (bits the guest may change) and a
/// write-1-to-clear mask; BAR registers are kept as [`BarShadow`]s. The device sets up
/// read-only contents with the `set_*` methods, which bypass the masks.
pub struct ConfigSpace {
    regs: Box<[u8; 4096]>,
    write_mask: Box<[u8; 4096]>,
    w1c_mask: Box<[u8; 4096]>,
    /// Indexed by BAR index (6 = ROM). A 64-bit BAR occupies its index; index + 1 is None.
    bars: [Option<BarShadow>; 7],
    last_cap: Option<u16>,
    next_cap: u16,
    last_ext_cap: Option<u16>,
    next_ext_cap: u16,
}

impl ConfigSpace {
    /// A type 0 header with `ids`; command bits I/O, memory, bus master and INTx disable,
    /// cache line size, latency timer and interrupt line are writable, the status error
    /// bits are write-1-to-clear, everything else reads as set here or zero.
    pub fn new(ids: &PciIds) -> Self {
        let mut cs = Self {
            regs: Box::new([0; 4096]),
            write_mask: Box::new([0; 4096]),
            w1c_mask: Box::new([0; 4096]),
            bars: [None; 7],
            last_cap: None,
            next_cap: CAPABILITIES_START,
            last_ext_cap: None,
            next_ext_cap: EXT_CAPABILITIES_START,
        };
        cs.set_u16(VENDOR_ID, ids.vendor_id);
        cs.set_u16(DEVICE_ID, ids.device_id);
        cs.set_u8(REVISION_ID, ids.revision);
        cs.set_u8(CLASS_PROG_IF, ids.prog_if);
        cs.set_u8(CLASS_SUBCLASS, ids.subclass);
        cs.set_u8(CLASS_BASE, ids.class);
        cs.set_u8(HEADER_TYPE, HEADER_TYPE_NORMAL);
        cs.set_u16(SUBSYSTEM_VENDOR_ID, ids.subsystem_vendor_id);
        cs.set_u16(SUBSYSTEM_ID, ids.subsystem_id);
        let command = COMMAND_IO | COMMAND_MEMORY | COMMAND_BUS_MASTER | COMMAND_INTX_DISABLE;
        cs.set_write_mask(COMMAND, &command.to_le_bytes());
        cs.set_w1c_mask(STATUS, &STATUS_W1C_BITS.to_le_bytes());
        cs.set_write_mask(CACHE_LINE_SIZE, &[0xff, 0xff]);
        cs.set_write_mask(INTERRUPT_LINE, &[0xff]);
        cs
    }

    /// Give the function BAR `index` (0-5; [`ROM_BAR_INDEX`] with [`BarKind::Rom`]).
    /// A 64-bit BAR also takes `index + 1`.
    pub fn add_bar(
        &mut self,
        index: u8,
        kind: BarKind,
        prefetchable: bool,
        size: u64,
    ) -> Result<(), ConfigError> {
        let slot_err = ConfigError::BarSlot { index, kind };
        let fits = match kind {
            BarKind::Rom => index == ROM_BAR_INDEX,
            BarKind::Mem64 => index + 1 < BAR_COUNT && !self.slot_taken(index + 1),
            BarKind::Io | BarKind::Mem32 => index < BAR_COUNT,
        };
        if !fits || self.slot_taken(index) {
            return Err(slot_err);
        }
        self.bars[usize::from(index)] = Some(BarShadow::new(kind, prefetchable, size)?);
        Ok(())
    }

    fn slot_taken(&self, index: u8) -> bool {
        self.shadow_for_slot(index).is_some()
    }

    /// The shadow answering register slot `index`, and which half of it the slot is.
    fn shadow_for_slot(&self, index: u8) -> Option<(u8, BarHalf)> {
        if self.bars.get(usize::from(index))?.is_some() {
            return Some((index, BarHalf::Lower));
        }
        if index == ROM_BAR_INDEX {
            return None;
        }
        let below = index.checked_sub(1)?;
        match self.bars[usize::from(below)] {
            Some(b) if b.kind() == BarKind::Mem64 => Some((below, BarHalf::Upper)),
            _ => None,
        }
    }

    /// BAR `index` (its lower index for a 64-bit BAR).
    pub fn bar(&self, index: u8) -> Option<&BarShadow> {
        self.bars.get(usize::from(index))?.as_ref()
    }

    /// Program BAR `index` as firmware would (no-op if there is no such BAR).
    pub fn assign_bar(&mut self, index: u8, addr: u64) {
        if let Some(Some(bar)) = self.bars.get_mut(usize::from(index)) {
            bar.set_addr(addr);
        }
    }

    /// The BARs with `decoding` computed from the command register.
    pub fn bars(&self) -> Vec<Bar> {
        let command = self.command();
        (0..=ROM_BAR_INDEX)
            .filter_map(|i| Some(self.bar(i)?.to_bar(i, command)))
            .collect()
    }

    pub fn command(&self) -> u16 {
        self.get_u16(COMMAND)
    }

    /// A guest read of the dword at `offset` (rounded down to 4; beyond 4 KiB reads 0).
    pub fn read(&self, offset: u16) -> u32 {
        let offset = offset & !3;
        if let Some(slot) = bar_slot(offset) {
            return match self.shadow_for_slot(slot) {
                Some((index, half)) => self.bars[usize::from(index)].unwrap().read(half),
                None => 0,
            };
        }
        self.get_u32(offset)
    }

    /// A guest write of `data` at `offset`, honouring write masks, write-1-to-clear bits
    /// and BAR semantics. Bytes beyond 4 KiB are dropped.
    pub fn write(&mut self, offset: u16, data: &[u8]) {
        let start = usize::from(offset);
        for (i, &byte) in data.iter().enumerate() {
            let off = start + i;
            if off >= self.regs.len() || bar_slot(off as u16).is_some() {
                continue;
            }
            let (mask, w1c) = (self.write_mask[off], self.w1c_mask[off]);
            let value = (self.regs[off] & !mask) | (byte & mask);
            self.regs[off] = value & !(byte & w1c);
        }
        // BAR registers take whole dwords: merge the written bytes into what the guest
        // would read, then hand the dword to the shadow.
        let end = start + data.len();
        let mut reg = start & !3;
        while reg < end {
            if let Some((index, half)) = bar_slot(reg as u16).and_then(|s| self.shadow_for_slot(s))
            {
                let from = start.max(reg);
                let to = end.min(reg + 4);
                let value = merge_dword(
                    self.read(reg as u16),
                    from - reg,
                    &data[from - start..to - start],
                );
                if let Some(bar) = self.bars[usize::from(index)].as_mut() {
                    bar.write(half, value);
                }
            }
            reg += 4;
        }
    }

    /// Device-side accessors for plain registers (no masks; BAR slots read as stored here,
    /// i.e. zero — use [`ConfigSpace::read`] for the guest's view).
    pub fn get_u8(&self, offset: u16) -> u8 {
        self.get_bytes::<1>(offset)[0]
    }

    pub fn get_u16(&self, offset: u16) -> u16 {
        u16::from_le_bytes(self.get_bytes(offset))
    }

    pub fn get_u32(&self, offset: u16) -> u32 {
        u32::from_le_bytes(self.get_bytes(offset))
    }

    fn get_bytes<const N: usize>(&self, offset: u16) -> [u8; N] {
        let mut out = [0; N];
        let start = usize::from(offset);
        if let Some(src) = self.regs.get(start..start + N) {
            out.copy_from_slice(src);
        }
        out
    }

    pub fn set_u8(&mut self, offset: u16, value: u8) {
        self.set_bytes(offset, &[value]);
    }

    pub fn set_u16(&mut self, offset: u16, value: u16) {
        self.set_bytes(offset, &value.to_le_bytes());
    }

    pub fn set_u32(&mut self, offset: u16, value: u32) {
        self.set_bytes(offset, &value.to_le_bytes());
    }

    /// Store `bytes` at `offset` as is (device-side; out-of-range bytes are dropped).
    pub fn set_bytes(&mut self, offset: u16, bytes: &[u8]) {
        copy_clamped(&mut self.regs[..], offset, bytes);
    }

    /// Bits the guest may change, byte by byte from `offset`.
    pub fn set_write_mask(&mut self, offset: u16, mask: &[u8]) {
        copy_clamped(&mut self.write_mask[..], offset, mask);
    }

    /// Bits a guest write of 1 clears, byte by byte from `offset`.
    pub fn set_w1c_mask(&mut self, offset: u16, mask: &[u8]) {
        copy_clamped(&mut self.w1c_mask[..], offset, mask);
    }

    /// Append a capability `id` whose bytes after the 2-byte header (id, next pointer) are
    /// `body` to the legacy list; returns its offset. The body is read-only until the
    /// caller opens fields with [`ConfigSpace::set_write_mask`].
    pub fn add_capability(&mut self, id: u8, body: &[u8]) -> Result<u16, ConfigError> {
        let len = 2 + body.len();
        let offset = self.next_cap;
        let end = usize::from(offset) + len;
        if end > usize::from(LEGACY_CONFIG_SIZE) {
            return Err(ConfigError::NoCapabilitySpace { len });
        }
        self.set_bytes(offset, &[id, 0]);
        self.set_bytes(offset + 2, body);
        match self.last_cap {
            Some(last) => self.set_u8(last + 1, offset as u8),
            None => self.set_u8(CAPABILITY_POINTER, offset as u8),
        }
        let status = self.get_u16(STATUS) | STATUS_CAPABILITIES_LIST;
        self.set_u16(STATUS, status);
        self.last_cap = Some(offset);
        self.next_cap = end.next_multiple_of(4) as u16;
        Ok(offset)
    }

    /// Append an extended capability (`id`, `version`, then `body` after the 4-byte
    /// header) from 0x100 up; returns its offset.
    pub fn add_extended_capability(
        &mut self,
        id: u16,
        version: u8,
        body: &[u8],
    ) -> Result<u16, ConfigError> {
        let len = 4 + body.len();
        let offset = self.next_ext_cap;
        let end = usize::from(offset) + len;
        if end > usize::from(CONFIG_SPACE_SIZE) {
            return Err(ConfigError::NoCapabilitySpace { len });
        }
        self.set_u32(offset, u32::from(id) | (u32::from(version & 0xf) << 16));
        self.set_bytes(offset + 4, body);
        if let Some(last) = self.last_ext_cap {
            let header = self.get_u32(last) & 0x000f_ffff;
            self.set_u32(last, header | (u32::from(offset) << 20));
        }
        self.last_ext_cap = Some(offset);
        self.next_ext_cap = end.next_multiple_of(4) as u16;
        Ok(offset)
    }
}

fn copy_clamped(dst: &mut [u8], offset: u16, src: &[u8]) {
    let start = usize::from(offset).min(dst.len());
    let n = src.len().min(dst.len() - start);
    dst[start..start + n].copy_from_slice(&src[..n]);
}
