//! BAR register semantics, independent of where the registers live: [`BarShadow`] is one
//! BAR (or the expansion ROM BAR) as the guest sees it, used by [`super::ConfigSpace`] for
//! emulated functions and usable as is by a device that shadows the BARs of real hardware.
//!
//! Sizing needs no special mode: the address bits below the BAR's size are hardwired to
//! zero, so after the guest writes all-ones it reads back `!(size - 1)` plus the read-only
//! type bits, exactly like hardware.

use super::{
    BAR_IO_SPACE, BAR_MEM_64, BAR_MEM_PREFETCHABLE, COMMAND_IO, COMMAND_MEMORY, ROM_ENABLE,
};
use crate::pci::{Bar, BarKind};

/// Address bits of the low register: I/O BARs use bits 31:2, memory BARs 31:4, the ROM
/// BAR 31:11.
const IO_ADDR_MASK: u32 = !0x3;
const MEM_ADDR_MASK: u32 = !0xf;
const ROM_ADDR_MASK: u32 = !0x7ff;

/// Smallest sizes the PCI spec allows (and the granularity of the address bits).
pub const MIN_IO_BAR_SIZE: u64 = 4;
pub const MIN_MEM_BAR_SIZE: u64 = 16;
pub const MIN_ROM_BAR_SIZE: u64 = 2048;

/// Which dword of a BAR a register access is for. Only 64-bit BARs have an upper half.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BarHalf {
    Lower,
    Upper,
}

/// A BAR kind/size combination that cannot exist.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind:?} BAR of {size:#x} bytes")]
pub struct InvalidBar {
    pub kind: BarKind,
    pub size: u64,
}

/// The kind and prefetchable bit encoded in the low dword of a (non-ROM) BAR register, as
/// read from real hardware. Reserved memory type 0b01 (below 1 MiB) is treated as 32-bit.
pub fn parse_bar_register(value: u32) -> (BarKind, bool) {
    if value & BAR_IO_SPACE != 0 {
        (BarKind::Io, false)
    } else if value & 0x6 == BAR_MEM_64 {
        (BarKind::Mem64, value & BAR_MEM_PREFETCHABLE != 0)
    } else {
        (BarKind::Mem32, value & BAR_MEM_PREFETCHABLE != 0)
    }
}

/// The value the guest reads from one half of a BAR register of `kind`/`size` holding
/// `addr` (`rom_enable` only matters for the ROM). Address bits below `size` read as zero,
/// which is what makes all-ones writes return the size mask.
pub fn bar_register_value(
    kind: BarKind,
    prefetchable: bool,
    size: u64,
    addr: u64,
    rom_enable: bool,
    half: BarHalf,
) -> u32 {
    let addr = addr & !(size.max(1) - 1);
    match (kind, half) {
        (BarKind::Mem64, BarHalf::Upper) => (addr >> 32) as u32,
        (_, BarHalf::Upper) => 0,
        (BarKind::Io, BarHalf::Lower) => (addr as u32 & IO_ADDR_MASK) | BAR_IO_SPACE,
        (BarKind::Mem32 | BarKind::Mem64, BarHalf::Lower) => {
            let mut value = addr as u32 & MEM_ADDR_MASK;
            if kind == BarKind::Mem64 {
                value |= BAR_MEM_64;
            }
            if prefetchable {
                value |= BAR_MEM_PREFETCHABLE;
            }
            value
        }
        (BarKind::Rom, BarHalf::Lower) => {
            (addr as u32 & ROM_ADDR_MASK) | if rom_enable { ROM_ENABLE } else { 0 }
        }
    }
}

/// One BAR of a function: its fixed kind and size, and the address the guest programmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BarShadow {
    kind: BarKind,
    prefetchable: bool,
    size: u64,
    addr: u64,
    rom_enable: bool,
}

impl BarShadow {
    /// `size` must be a power of two that the kind can express (I/O and 32-bit memory and
    /// ROM BARs at most 2 GiB); sizes below the spec's minimum (4 bytes I/O, 16 bytes
    /// memory, 2 KiB ROM) are rounded up to it. `prefetchable` is ignored for I/O.
    pub fn new(kind: BarKind, prefetchable: bool, size: u64) -> Result<Self, InvalidBar> {
        let (min, max) = match kind {
            BarKind::Io => (MIN_IO_BAR_SIZE, 1 << 31),
            BarKind::Mem32 => (MIN_MEM_BAR_SIZE, 1 << 31),
            BarKind::Rom => (MIN_ROM_BAR_SIZE, 1 << 31),
            BarKind::Mem64 => (MIN_MEM_BAR_SIZE, 1 << 63),
        };
        if !size.is_power_of_two() || size > max {
            return Err(InvalidBar { kind, size });
        }
        Ok(Self {
            kind,
            prefetchable: prefetchable && kind != BarKind::Io,
            size: size.max(min),
            addr: 0,
            rom_enable: false,
        })
    }

    pub fn kind(&self) -> BarKind {
        self.kind
    }

    pub fn prefetchable(&self) -> bool {
        self.prefetchable
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// The programmed address (size-aligned; may be a transient value during sizing).
    pub fn addr(&self) -> u64 {
        self.addr
    }

    /// Set the address as firmware would (low bits below the size are dropped).
    pub fn set_addr(&mut self, addr: u64) {
        self.addr = addr & self.addr_mask();
    }

    /// Back to the reset state: no address, the ROM disabled.
    pub fn reset(&mut self) {
        self.addr = 0;
        self.rom_enable = false;
    }

    /// The ROM BAR's own enable bit (always false for other kinds).
    pub fn rom_enabled(&self) -> bool {
        self.rom_enable
    }

    /// What the guest reads from `half` of the register.
    pub fn read(&self, half: BarHalf) -> u32 {
        bar_register_value(
            self.kind,
            self.prefetchable,
            self.size,
            self.addr,
            self.rom_enable,
            half,
        )
    }

    /// A guest write of a whole dword to `half` (merge partial writes first, e.g. with
    /// [`merge_dword`]). Read-only bits are kept; writes to the upper half of a BAR that
    /// has none are ignored.
    pub fn write(&mut self, half: BarHalf, value: u32) {
        let addr = match (self.kind, half) {
            (BarKind::Mem64, BarHalf::Upper) => {
                (self.addr & 0xffff_ffff) | (u64::from(value) << 32)
            }
            (_, BarHalf::Upper) => return,
            (BarKind::Mem64, BarHalf::Lower) => (self.addr & !0xffff_ffff) | u64::from(value),
            (_, BarHalf::Lower) => u64::from(value),
        };
        if self.kind == BarKind::Rom {
            self.rom_enable = value & ROM_ENABLE != 0;
        }
        self.set_addr(addr);
    }

    /// Whether the BAR decodes under `command`: its enable bit (memory or I/O, plus the
    /// ROM's own) is set and it has a non-zero address.
    pub fn decoding(&self, command: u16) -> bool {
        let enabled = match self.kind {
            BarKind::Io => command & COMMAND_IO != 0,
            BarKind::Mem32 | BarKind::Mem64 => command & COMMAND_MEMORY != 0,
            BarKind::Rom => command & COMMAND_MEMORY != 0 && self.rom_enable,
        };
        enabled && self.addr != 0
    }

    /// The BAR description the root complex works with.
    pub fn to_bar(&self, index: u8, command: u16) -> Bar {
        Bar {
            index,
            kind: self.kind,
            prefetchable: self.prefetchable,
            size: self.size,
            addr: self.addr,
            decoding: self.decoding(command),
        }
    }

    fn addr_mask(&self) -> u64 {
        let low = match self.kind {
            BarKind::Io => IO_ADDR_MASK,
            BarKind::Mem32 | BarKind::Mem64 => MEM_ADDR_MASK,
            BarKind::Rom => ROM_ADDR_MASK,
        };
        let width = if self.kind == BarKind::Mem64 {
            u64::MAX
        } else {
            0xffff_ffff
        };
        !(self.size - 1) & width & (u64::from(low) | !0xffff_ffff)
    }
}

/// `old` with the bytes of `data` written at byte `offset` within the dword (bytes beyond
/// the dword are ignored): how a 1- or 2-byte config write changes a 32-bit register.
pub fn merge_dword(old: u32, offset: usize, data: &[u8]) -> u32 {
    let mut bytes = old.to_le_bytes();
    for (i, &b) in data.iter().enumerate() {
        if let Some(slot) = bytes.get_mut(offset + i) {
            *slot = b;
        }
    }
    u32::from_le_bytes(bytes)
}
