//! BAR addresses before boot, as firmware would assign them: the I/O, 32-bit and 64-bit
//! windows of the host bridge, each BAR naturally aligned, biggest first so that the
//! power-of-two sizes pack without holes. A BAR with a preferred address (a passed-through
//! function's host address) gets it when it is free in the window the BAR belongs in: some
//! devices check the addresses their driver hands them against their own BARs (QEMU's QXL
//! refuses a memory slot outside them), and the guest then sees what the host sees.

use std::fmt;

use vm_allocator::{AddressAllocator, AllocPolicy, RangeInclusive};

pub use arch::pci_windows::{PciWindows, Window};

use super::{Bar, BarKind, ROM_BAR_INDEX};
use crate::pci::config::bar_offset;

/// Memory BARs get at least a page so each can become its own KVM memory slot.
pub const MIN_MEM_BAR_ALLOCATION: u64 = 4096;
/// Config mechanism #1 ports, never handed to a BAR even when inside the I/O window.
const CONFIG_IO_PORTS: (u64, u64) = (0xcf8, 8);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    #[error(
        "{bar} ({size}) does not fit in the free space of the {window} BAR window \
         ({window_size} in all){hint}"
    )]
    NoSpace {
        bar: BarName,
        size: Size,
        window: &'static str,
        window_size: Size,
        hint: &'static str,
    },
    #[error("the {window} BAR window {start:#x}+{size:#x} is empty or wraps around")]
    BadWindow {
        window: &'static str,
        start: u64,
        size: u64,
    },
    #[error("{0} has an invalid size (not a power of two)")]
    BadBar(BarName),
}

/// "BAR 2" or "the ROM BAR", for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BarName(pub u8);

impl fmt::Display for BarName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == ROM_BAR_INDEX {
            write!(f, "the ROM BAR")
        } else {
            write!(
                f,
                "BAR {} (config offset {:#x})",
                self.0,
                bar_offset(self.0)
            )
        }
    }
}

/// A byte count printed with the largest binary unit that divides it ("256 MiB", "60 KiB",
/// "32 bytes").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(pub u64);

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [&str; 7] = ["bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
        let (mut value, mut unit) = (self.0, 0);
        while unit + 1 < UNITS.len() && value >= 1024 && value % 1024 == 0 {
            value /= 1024;
            unit += 1;
        }
        write!(f, "{value} {}", UNITS[unit])
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pool {
    Io,
    Mmio32,
    Mmio64,
}

/// Hands out BAR addresses from the windows. Allocations are never given back: devices
/// are added once, before boot.
pub struct BarAllocator {
    windows: PciWindows,
    io: Option<AddressAllocator>,
    mmio32: AddressAllocator,
    mmio64: Option<AddressAllocator>,
}

impl BarAllocator {
    pub fn new(windows: PciWindows) -> Result<Self, AllocError> {
        let make = |window: &'static str, w: Window| {
            AddressAllocator::new(w.start, w.size).map_err(|_| AllocError::BadWindow {
                window,
                start: w.start,
                size: w.size,
            })
        };
        let mut io = windows.io.map(|w| make("I/O", w)).transpose()?;
        if let Some(io) = io.as_mut() {
            // Keep the config ports out; fails harmlessly when they are outside the window.
            let (base, len) = CONFIG_IO_PORTS;
            let _ = io.allocate(len, len, AllocPolicy::ExactMatch(base));
        }
        Ok(Self {
            windows,
            io,
            mmio32: make("32-bit MMIO", windows.mmio32)?,
            mmio64: windows.mmio64.map(|w| make("64-bit MMIO", w)).transpose()?,
        })
    }

    pub fn windows(&self) -> &PciWindows {
        &self.windows
    }

    /// Addresses for all of one device's `bars` (size 0 entries are skipped), as
    /// (BAR index, address) in index order; `preferred` (BAR index, address) are taken
    /// where free. All or nothing: on error the space taken for this device is given back,
    /// and a device whose preferred addresses leave no room for the rest is placed as if it
    /// had none.
    pub fn allocate_device_bars(
        &mut self,
        bars: &[Bar],
        preferred: &[(u8, u64)],
    ) -> Result<Vec<(u8, u64)>, AllocError> {
        match self.allocate_all(bars, preferred) {
            Err(_) if !preferred.is_empty() => self.allocate_all(bars, &[]),
            result => result,
        }
    }

    fn allocate_all(
        &mut self,
        bars: &[Bar],
        preferred: &[(u8, u64)],
    ) -> Result<Vec<(u8, u64)>, AllocError> {
        let mut order: Vec<&Bar> = bars.iter().filter(|b| b.size != 0).collect();
        // Preferred addresses first, then biggest first (then by index, for a stable
        // layout): aligned power-of-two blocks placed in decreasing size leave no gaps.
        let wish = |b: &Bar| preferred.iter().find(|p| p.0 == b.index).map(|p| p.1);
        order.sort_by_key(|b| (wish(b).is_none(), std::cmp::Reverse(b.size), b.index));
        let mut taken: Vec<(Pool, RangeInclusive)> = Vec::new();
        let mut result = Vec::new();
        for bar in order {
            let placed = wish(bar)
                .and_then(|addr| self.allocate_at(bar, addr))
                .map_or_else(|| self.allocate(bar), Ok);
            match placed {
                Ok((pool, range)) => {
                    taken.push((pool, range));
                    result.push((bar.index, range.start()));
                }
                Err(e) => {
                    for (pool, range) in taken {
                        let _ = self.pool(pool).map(|a| a.free(&range));
                    }
                    return Err(e);
                }
            }
        }
        result.sort_unstable();
        Ok(result)
    }

    fn pool(&mut self, pool: Pool) -> Option<&mut AddressAllocator> {
        match pool {
            Pool::Io => self.io.as_mut(),
            Pool::Mmio32 => Some(&mut self.mmio32),
            Pool::Mmio64 => self.mmio64.as_mut(),
        }
    }

    /// The pools `bar` may come from, in order of preference, and the space it takes.
    fn pools_for(bar: &Bar) -> (&'static [Pool], u64) {
        match bar.kind {
            BarKind::Io => (&[Pool::Io], bar.size),
            BarKind::Mem32 | BarKind::Rom => {
                (&[Pool::Mmio32], bar.size.max(MIN_MEM_BAR_ALLOCATION))
            }
            BarKind::Mem64 => (
                &[Pool::Mmio64, Pool::Mmio32],
                bar.size.max(MIN_MEM_BAR_ALLOCATION),
            ),
        }
    }

    /// `bar` at exactly `addr`, if that is aligned, inside one of its windows and free.
    fn allocate_at(&mut self, bar: &Bar, addr: u64) -> Option<(Pool, RangeInclusive)> {
        let (pools, size) = Self::pools_for(bar);
        if !bar.size.is_power_of_two() || addr == 0 || !addr.is_multiple_of(size) {
            return None;
        }
        pools.iter().find_map(|&pool| {
            let range = self
                .pool(pool)?
                .allocate(size, size, AllocPolicy::ExactMatch(addr))
                .ok()?;
            Some((pool, range))
        })
    }

    fn allocate(&mut self, bar: &Bar) -> Result<(Pool, RangeInclusive), AllocError> {
        if !bar.size.is_power_of_two() {
            return Err(AllocError::BadBar(BarName(bar.index)));
        }
        let (pools, size) = Self::pools_for(bar);
        for &pool in pools {
            let Some(allocator) = self.pool(pool) else {
                continue;
            };
            // Natural alignment: the BAR register cannot express anything else.
            if let Ok(range) = allocator.allocate(size, size, AllocPolicy::FirstMatch) {
                return Ok((pool, range));
            }
        }
        Err(self.no_space(bar, pools[0]))
    }

    fn no_space(&self, bar: &Bar, pool: Pool) -> AllocError {
        let (window, w, hint) = match pool {
            Pool::Io => ("I/O", self.windows.io, "; pass through fewer devices"),
            Pool::Mmio32 => (
                "32-bit MMIO",
                Some(self.windows.mmio32),
                "; pass through fewer devices",
            ),
            Pool::Mmio64 => (
                "64-bit MMIO",
                self.windows.mmio64,
                " nor in the 32-bit window; raise the guest's physical address bits \
                 or pass through fewer devices",
            ),
        };
        AllocError::NoSpace {
            bar: BarName(bar.index),
            size: Size(bar.size),
            window,
            window_size: Size(w.map_or(0, |w| w.size)),
            hint,
        }
    }
}

#[cfg(test)]
mod tests;
