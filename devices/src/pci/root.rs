//! The root complex: bus 0 with up to 32 devices of 8 functions each, reached through
//! config mechanism #1 ([`PciConfigIo`], ports 0xcf8-0xcff) and ECAM ([`PciEcam`]), and
//! the BAR decode tracking that puts BARs on the MMIO/PIO buses (see [`decode`]).
//!
//! Lock ordering (vCPU threads call in concurrently):
//! 1. the [`crate::Bus`] lock of whichever bus dispatched the access is already released
//!    when a `BusDevice` is called (`Bus::read`/`write` only hold it for the lookup);
//! 2. the `BusDevice` mutex ([`PciConfigIo`], [`PciEcam`] or a BAR adapter);
//! 3. the root's function map (`RwLock`): on accesses held only to look up and clone an
//!    entry, never while calling a device (`add_device` holds it while it assigns the new
//!    function's BARs: still 3 before 4);
//! 4. the device's own mutex;
//! 5. that function's record of mapped BARs;
//! 6. the buses' locks, taken by `Bus::insert`/`remove` and released before they return.
//!
//! Nothing takes a lock of a lower number while holding a higher one, and a device never
//! calls back into the root, so a config write that moves a BAR (bus insert/remove from
//! inside a vCPU exit) cannot deadlock with another vCPU touching that BAR (bus lookup,
//! then adapter, then device).

pub mod access;
pub mod decode;
#[cfg(test)]
mod tests;

pub use access::{PciConfigIo, PciEcam, CONFIG_IO_LEN};

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use super::address::{Bdf, MAX_DEVICES, MAX_FUNCTIONS};
use super::allocator::{AllocError, BarAllocator, PciWindows};
use super::config::{CONFIG_SPACE_SIZE, HEADER_TYPE, HEADER_TYPE_MULTIFUNCTION};
use super::host_bridge::HostBridge;
use super::PciDevice;
use crate::Bus;
use decode::{BarState, Decoder};

#[derive(Debug, thiserror::Error)]
pub enum PciRootError {
    #[error("PCI slot {0} does not exist (bus 0 has slots 0-31)")]
    NoSuchSlot(u8),
    #[error("PCI function {0} does not exist (functions are 0-7)")]
    NoSuchFunction(u8),
    #[error("PCI address {0} is already taken")]
    Occupied(Bdf),
    #[error("no free PCI slot left on bus 0 (32 slots)")]
    NoFreeSlot,
    #[error("cannot place the BARs of {device}: {source}")]
    Bars { device: String, source: AllocError },
    #[error("bad PCI windows: {0}")]
    Windows(AllocError),
}

type SharedDevice = Arc<Mutex<dyn PciDevice>>;

struct Function {
    bdf: Bdf,
    device: SharedDevice,
    /// The function's BARs this root has put on a bus, i.e. what it decodes now.
    bars: Mutex<BarState>,
}

pub struct PciRoot {
    functions: RwLock<BTreeMap<Bdf, Arc<Function>>>,
    decoder: Arc<Decoder>,
    allocator: Mutex<BarAllocator>,
}

/// Lock a mutex even if a panicking thread poisoned it: a device that panicked once
/// should not take the VMM down on the next access.
fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl PciRoot {
    /// A root with the host bridge at 00:00.0. BARs go on `pio` (I/O BARs) and `mmio`, and
    /// only inside `windows` (see [`decode`]).
    pub fn new(pio: Arc<Bus>, mmio: Arc<Bus>, windows: PciWindows) -> Result<Self, PciRootError> {
        let root = Self {
            functions: RwLock::new(BTreeMap::new()),
            decoder: Arc::new(Decoder { pio, mmio, windows }),
            allocator: Mutex::new(BarAllocator::new(windows).map_err(PciRootError::Windows)?),
        };
        root.add_device(Some(0), 0, Arc::new(Mutex::new(HostBridge::new())))?;
        Ok(root)
    }

    pub fn windows(&self) -> &PciWindows {
        &self.decoder.windows
    }

    /// Put `device` at `slot` (`None`: the first slot with no function yet) and `function`,
    /// assigning its BARs addresses in the windows as firmware would. BARs that already
    /// decode (the device's command register enables them) are mapped right away.
    ///
    /// For a multi-function slot, add function 0 too: guests only look for the others
    /// when function 0 is there.
    pub fn add_device(
        &self,
        slot: Option<u8>,
        function: u8,
        device: SharedDevice,
    ) -> Result<Bdf, PciRootError> {
        if function >= MAX_FUNCTIONS {
            return Err(PciRootError::NoSuchFunction(function));
        }
        let mut functions = self.functions.write().unwrap_or_else(|e| e.into_inner());
        let slot = match slot {
            Some(s) if s >= MAX_DEVICES => return Err(PciRootError::NoSuchSlot(s)),
            Some(s) => s,
            None => (0..MAX_DEVICES)
                .find(|&s| functions.range(slot_keys(s)).next().is_none())
                .ok_or(PciRootError::NoFreeSlot)?,
        };
        let bdf = Bdf::root_bus(slot, function);
        if functions.contains_key(&bdf) {
            return Err(PciRootError::Occupied(bdf));
        }
        let func = Arc::new(Function {
            bdf,
            device,
            bars: Mutex::new(BarState::default()),
        });
        let mut dev = lock(&func.device);
        let bars = dev.bars();
        let addrs = lock(&self.allocator)
            .allocate_device_bars(&bars, &dev.preferred_bar_addresses())
            .map_err(|source| PciRootError::Bars {
                device: format!("{bdf} ({})", dev.name()),
                source,
            })?;
        for (index, addr) in addrs {
            dev.assign_bar(index, addr);
        }
        functions.insert(bdf, func.clone());
        drop(functions);
        self.decoder.sync_bars(&func, &mut *dev);
        Ok(bdf)
    }

    /// Every function with its address (the VMM resets and releases them at shutdown).
    pub fn devices(&self) -> Vec<(Bdf, SharedDevice)> {
        let functions = self.functions.read().unwrap_or_else(|e| e.into_inner());
        functions
            .values()
            .map(|f| (f.bdf, f.device.clone()))
            .collect()
    }

    /// A config read of `data.len()` bytes at `offset` of function `bdf`; absent
    /// functions, other buses and offsets past 4 KiB read all-ones.
    pub fn config_read(&self, bdf: Bdf, offset: u16, data: &mut [u8]) {
        for (range, off) in chunks(offset, data.len()) {
            let dword = self.read_dword(bdf, off & !3);
            let start = usize::from(off & 3);
            let bytes = dword.to_le_bytes();
            data[range.clone()].copy_from_slice(&bytes[start..start + range.len()]);
        }
    }

    /// A config write of `data` at `offset`; dropped for absent functions. Unaligned
    /// accesses reach the device as naturally aligned pieces.
    pub fn config_write(&self, bdf: Bdf, offset: u16, data: &[u8]) {
        let Some(func) = self.function(bdf) else {
            return;
        };
        for (range, off) in chunks(offset, data.len()) {
            if off >= CONFIG_SPACE_SIZE {
                break;
            }
            let mut dev = lock(&func.device);
            dev.config_write(off, &data[range]);
            self.decoder.sync_bars(&func, &mut *dev);
        }
    }

    fn function(&self, bdf: Bdf) -> Option<Arc<Function>> {
        let functions = self.functions.read().unwrap_or_else(|e| e.into_inner());
        functions.get(&bdf).cloned()
    }

    fn read_dword(&self, bdf: Bdf, offset: u16) -> u32 {
        if offset >= CONFIG_SPACE_SIZE {
            return u32::MAX;
        }
        let (func, siblings) = {
            let functions = self.functions.read().unwrap_or_else(|e| e.into_inner());
            let Some(func) = functions.get(&bdf).cloned() else {
                return u32::MAX;
            };
            (func, functions.range(slot_keys(bdf.device)).count())
        };
        let mut value = lock(&func.device).config_read(offset);
        if offset == HEADER_TYPE & !3 {
            // The topology decides "multi-function", not the device: a function passed
            // through alone must not claim absent siblings, nor hide present ones.
            let bit = u32::from(HEADER_TYPE_MULTIFUNCTION) << (8 * (HEADER_TYPE & 3));
            value &= !bit;
            if siblings > 1 {
                value |= bit;
            }
        }
        value
    }
}

/// The map keys of all functions of device `slot`.
fn slot_keys(slot: u8) -> std::ops::RangeInclusive<Bdf> {
    Bdf::root_bus(slot, 0)..=Bdf::root_bus(slot, MAX_FUNCTIONS - 1)
}

/// Split an access of `len` bytes at `offset` into naturally aligned pieces of 4, 2 or 1
/// bytes (what [`PciDevice`] accepts): (range within the data, config offset).
pub(crate) fn chunks(offset: u16, len: usize) -> impl Iterator<Item = (Range<usize>, u16)> {
    let mut pos = 0;
    std::iter::from_fn(move || {
        if pos >= len {
            return None;
        }
        let off = usize::from(offset) + pos;
        let size = [4, 2, 1]
            .into_iter()
            .find(|&s| off % s == 0 && pos + s <= len)
            .unwrap_or(1);
        let piece = (pos..pos + size, off.min(usize::from(u16::MAX)) as u16);
        pos += size;
        Some(piece)
    })
}
