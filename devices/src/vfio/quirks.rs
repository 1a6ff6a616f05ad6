//! Vendor backdoors into config space, trapped so that what goes through them meets the
//! emulated config space (BARs, MSI, MSI-X, FLR) rather than the device's own registers: a
//! write through a mirror the guest reached directly would move the real BARs or program
//! MSI behind VFIO's back. What is here and what is left out, and why: docs/quirks.md.
//!
//! - NVIDIA display functions mirror their config space in BAR 0: 4 KiB at 0x88000 (Tesla
//!   to Ada), at 0x92000 (Hopper, Blackwell), 256 bytes at 0x1800 (old chips). A candidate
//!   counts when it reads the function's IDs and class, so no chip table is needed and a
//!   page that is not a mirror is never taken over. Its page traps (a hole in the direct
//!   mapping, like the MSI-X table's); accesses inside it are config accesses. Writes to
//!   the MSI capability's ID/next bytes also reach the device: they are read-only there,
//!   and older drivers write them to acknowledge an MSI.
//! - NVIDIA's I/O BAR 5 (GeForce, Quadro) is an address/data window onto BAR 0. Its data
//!   register is redirected to our own BAR 0 handling, so the window meets the mirror and
//!   the MSI-X table emulation too; the device's window is never used for data.

use crate::pci::config::{merge_dword, REVISION_ID, VENDOR_ID};
use crate::pci::root::chunks;
use crate::pci::{BarKind, PciDevice};

use super::backend::VfioBackend;
use super::bars::TrapRange;
use super::config::BarShadows;

/// NVIDIA's PCI vendor ID (the mirrors here, the GPUDirect clique in device.rs).
pub(super) const NVIDIA: u16 = 0x10de;
const CLASS_DISPLAY: u8 = 0x03;
/// (BAR 0 offset, length) of the config mirrors NVIDIA GPUs have had.
const NVIDIA_MIRRORS: [(u64, u64); 3] = [(0x1800, 0x100), (0x8_8000, 0x1000), (0x9_2000, 0x1000)];
/// The I/O window: BAR 5, address register at 0x8, data register at 0xc.
const WINDOW_BAR: u8 = 5;
const WINDOW_ADDRESS: u64 = 0x8;
const WINDOW_DATA: u64 = 0xc;
const WINDOW_LEN: u64 = 0x10;

/// Where a trapped BAR access goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Not a quirk's: to the VFIO region as usual.
    Device,
    /// The emulated config space from `offset`; `ack`: the write goes to the device too.
    Config { offset: u16, ack: bool },
    /// Another BAR's handling (the I/O window's data register).
    Bar { index: u8, offset: u64 },
    /// Straddles a mirror's edge: reads all-ones, writes dropped.
    Drop,
}

#[derive(Debug, Clone, Copy)]
struct Mirror {
    bar: u8,
    offset: u64,
    len: u64,
}

#[derive(Debug, Default)]
pub struct Quirks {
    mirrors: Vec<Mirror>,
    /// The I/O window's address register as the guest last wrote it; `None`: no window.
    window: Option<u32>,
    msi_cap: Option<u16>,
    /// A write went to config space since the last `take_config_written`.
    config_written: bool,
}

impl Quirks {
    /// Look for the device's backdoors: `read` reads its config dwords, `backend` its BARs
    /// (before decoding is switched off), `msi_cap` is where its MSI capability is.
    pub fn probe(
        name: &str,
        backend: &dyn VfioBackend,
        shadows: &BarShadows,
        read: impl Fn(u16) -> u32,
        config_size: u64,
        msi_cap: Option<u16>,
    ) -> Self {
        let mut quirks = Self {
            msi_cap,
            ..Self::default()
        };
        let (ids, class) = (read(VENDOR_ID), read(REVISION_ID));
        if ids as u16 != NVIDIA || (class >> 24) as u8 != CLASS_DISPLAY {
            return quirks;
        }
        let mem_size = |i| {
            shadows
                .get(i)
                .filter(|b| b.kind() != BarKind::Io)
                .map_or(0, |b| b.size())
        };
        let bar0_dword = |offset: u64| {
            let mut b = [0u8; 4];
            backend.region_read(0, offset, &mut b);
            u32::from_le_bytes(b)
        };
        for (offset, len) in NVIDIA_MIRRORS {
            let len = len.min(config_size);
            if offset + len > mem_size(0)
                || bar0_dword(offset) != ids
                || bar0_dword(offset + u64::from(REVISION_ID)) != class
            {
                continue;
            }
            log::info!("{name}: config space mirror at BAR 0 {offset:#x}+{len:#x}: emulated");
            quirks.mirrors.push(Mirror {
                bar: 0,
                offset,
                len,
            });
        }
        if quirks.mirrors.is_empty() {
            log::info!("{name}: no config space mirror found in BAR 0");
        }
        let io5 = shadows.get(WINDOW_BAR);
        if io5.is_some_and(|b| b.kind() == BarKind::Io && b.size() >= WINDOW_LEN) {
            log::info!("{name}: BAR 5 window onto BAR 0: emulated");
            quirks.window = Some(0);
        }
        quirks
    }

    /// The BAR ranges that must trap for the mirrors.
    pub fn traps(&self) -> Vec<TrapRange> {
        self.mirrors
            .iter()
            .map(|m| TrapRange {
                bar: m.bar,
                offset: m.offset,
                len: m.len,
            })
            .collect()
    }

    /// Where an access of `len` bytes at `offset` of BAR `index` goes (`write`: its data).
    /// `offset + len` is inside the BAR (the caller checked).
    pub fn route(&mut self, index: u8, offset: u64, len: usize, write: Option<&[u8]>) -> Route {
        let end = offset + len as u64;
        if index == WINDOW_BAR {
            if let Some(address) = self.window.as_mut() {
                return window(address, offset, end, write);
            }
        }
        let Some(m) = self
            .mirrors
            .iter()
            .find(|m| m.bar == index && offset < m.offset + m.len && end > m.offset)
        else {
            return Route::Device;
        };
        if offset < m.offset || end > m.offset + m.len {
            crate::limited!(
                debug,
                "BAR {index} access at {offset:#x}+{len} straddles a config mirror; dropped"
            );
            return Route::Drop;
        }
        let rel = (offset - m.offset) as u16;
        let ack = write.is_some()
            && self
                .msi_cap
                .is_some_and(|cap| rel >= cap && u64::from(rel) + len as u64 <= u64::from(cap) + 2);
        self.config_written |= write.is_some();
        Route::Config { offset: rel, ack }
    }

    /// Whether a write went to config space since last asked.
    pub fn take_config_written(&mut self) -> bool {
        std::mem::take(&mut self.config_written)
    }
}

/// The I/O window: the address register is tracked, the data register is BAR 0 there.
fn window(address: &mut u32, offset: u64, end: u64, write: Option<&[u8]>) -> Route {
    let data = WINDOW_DATA..WINDOW_DATA + 4;
    if offset < data.end && end > data.start {
        if offset < data.start || end > data.end {
            return Route::Drop;
        }
        return Route::Bar {
            index: 0,
            offset: u64::from(*address) + (offset - WINDOW_DATA),
        };
    }
    if let Some(bytes) = write {
        if offset >= WINDOW_ADDRESS && end <= WINDOW_ADDRESS + 4 {
            *address = merge_dword(*address, (offset - WINDOW_ADDRESS) as usize, bytes);
        }
    }
    Route::Device
}

/// Carry out a read that `route` sent elsewhere.
pub fn read_through(dev: &mut dyn PciDevice, route: Route, data: &mut [u8]) {
    match route {
        Route::Config { offset, .. } => {
            let mut dword: Option<(u16, [u8; 4])> = None;
            for (i, byte) in data.iter_mut().enumerate() {
                let at = offset + i as u16;
                let bytes = match dword {
                    Some((d, b)) if d == at & !3 => b,
                    _ => {
                        let b = dev.config_read(at & !3).to_le_bytes();
                        dword = Some((at & !3, b));
                        b
                    }
                };
                *byte = bytes[usize::from(at & 3)];
            }
        }
        Route::Bar { index, offset } => dev.bar_read(index, offset, data),
        Route::Device | Route::Drop => data.fill(0xff),
    }
}

/// Carry out a write that `route` sent elsewhere: config writes in naturally aligned
/// pieces, as the root would make them.
pub fn write_through(dev: &mut dyn PciDevice, route: Route, data: &[u8]) {
    match route {
        Route::Config { offset, .. } => {
            for (range, at) in chunks(offset, data.len()) {
                dev.config_write(at, &data[range]);
            }
        }
        Route::Bar { index, offset } => dev.bar_write(index, offset, data),
        Route::Device | Route::Drop => {}
    }
}
