//! An address bus (port I/O or MMIO): ranges mapped to devices, looked up on each exit.
//!
//! The bus does not own its devices: it holds weak references, and whoever created a device
//! (the VMM's device manager, the PCI root for BAR regions) keeps it alive. So devices may
//! hold the bus they sit on (the PCI root does, to map BARs) without a reference cycle, and
//! dropping the owner takes a device off the bus in effect: a dead entry answers like an
//! empty range.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock, Weak};

/// A device on a bus. `offset` is relative to the base of the range it was inserted at.
pub trait BusDevice: Send {
    fn read(&mut self, offset: u64, data: &mut [u8]);
    fn write(&mut self, offset: u64, data: &[u8]);
}

/// A device as the bus refers to it: the owner holds the `Arc`.
pub type WeakBusDevice = Weak<Mutex<dyn BusDevice>>;

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum BusError {
    #[error("bus range {base:#x}+{len:#x} is empty or overlaps another device")]
    Overlap { base: u64, len: u64 },
    #[error("no device at {0:#x}")]
    NotFound(u64),
}

struct Entry {
    len: u64,
    device: WeakBusDevice,
}

/// Ranges are kept sorted by base; a lookup finds the last range starting at or below the
/// address and checks the address is inside it.
#[derive(Default)]
pub struct Bus {
    ranges: RwLock<BTreeMap<u64, Entry>>,
}

impl Bus {
    pub fn new() -> Self {
        Self::default()
    }

    /// Put `device` at `base..base + len`. The caller keeps the device alive (pass
    /// `Arc::downgrade(&device)`); a range whose device is gone is free again.
    pub fn insert(&self, base: u64, len: u64, device: WeakBusDevice) -> Result<(), BusError> {
        let overlap = BusError::Overlap { base, len };
        let end = base.checked_add(len).ok_or(overlap.clone())?;
        if len == 0 {
            return Err(overlap);
        }
        let mut ranges = self.ranges.write().unwrap_or_else(|e| e.into_inner());
        // Ranges never overlap each other, so walking back from `end` finds every range
        // the new one would overlap; those whose device is gone are dropped.
        while let Some((&b, e)) = ranges.range(..end).next_back() {
            if b + e.len <= base {
                break;
            }
            if e.device.strong_count() > 0 {
                return Err(overlap);
            }
            ranges.remove(&b);
        }
        ranges.insert(base, Entry { len, device });
        Ok(())
    }

    pub fn remove(&self, base: u64) -> Result<(), BusError> {
        self.ranges
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&base)
            .map(|_| ())
            .ok_or(BusError::NotFound(base))
    }

    fn find(&self, addr: u64) -> Option<(u64, Arc<Mutex<dyn BusDevice>>)> {
        let ranges = self.ranges.read().unwrap_or_else(|e| e.into_inner());
        let (base, entry) = ranges.range(..=addr).next_back()?;
        if addr - base >= entry.len {
            return None;
        }
        Some((addr - base, entry.device.upgrade()?))
    }

    /// Read from the device at `addr`. Returns false (and fills `data` with all-ones, like
    /// an unclaimed bus cycle) when no device is there.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.find(addr) {
            Some((offset, device)) => {
                device
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .read(offset, data);
                true
            }
            None => {
                data.fill(0xff);
                false
            }
        }
    }

    /// Write to the device at `addr`; false when no device is there (the write is dropped).
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        match self.find(addr) {
            Some((offset, device)) => {
                device
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .write(offset, data);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Recorder {
        last_write: Option<(u64, Vec<u8>)>,
    }

    impl BusDevice for Recorder {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write(&mut self, offset: u64, data: &[u8]) {
            self.last_write = Some((offset, data.to_vec()));
        }
    }

    fn recorder() -> Arc<Mutex<Recorder>> {
        Arc::new(Mutex::new(Recorder::default()))
    }

    #[test]
    fn the_bus_does_not_keep_devices_alive() {
        let bus = Bus::new();
        let dev = recorder();
        bus.insert(0x10, 4, Arc::downgrade(&dev) as WeakBusDevice)
            .unwrap();
        assert_eq!(Arc::strong_count(&dev), 1);
        assert!(bus.write(0x10, &[1]));
        drop(dev);
        assert!(!bus.write(0x10, &[1]));
        let mut data = [0u8; 2];
        assert!(!bus.read(0x11, &mut data));
        assert_eq!(data, [0xff; 2]);
        // The dead range is free for a new device.
        let other = recorder();
        bus.insert(0x10, 4, Arc::downgrade(&other) as WeakBusDevice)
            .unwrap();
        assert!(bus.write(0x12, &[1]));
        // A dead range does not hide a live one it sits next to.
        let (live, dead) = (recorder(), recorder());
        bus.insert(0x100, 8, Arc::downgrade(&live) as WeakBusDevice)
            .unwrap();
        bus.insert(0x108, 8, Arc::downgrade(&dead) as WeakBusDevice)
            .unwrap();
        drop(dead);
        assert!(bus
            .insert(0x104, 12, Arc::downgrade(&other) as WeakBusDevice)
            .is_err());
        bus.insert(0x108, 8, Arc::downgrade(&other) as WeakBusDevice)
            .unwrap();
    }

    #[test]
    fn reads_and_writes_reach_the_device_at_its_offset() {
        let bus = Bus::new();
        let dev = recorder();
        bus.insert(0x3f8, 8, Arc::downgrade(&dev) as WeakBusDevice)
            .unwrap();
        let mut data = [0u8; 1];
        assert!(bus.read(0x3fa, &mut data));
        assert_eq!(data, [2]);
        assert!(bus.write(0x3ff, &[7]));
        assert_eq!(dev.lock().unwrap().last_write, Some((7, vec![7])));
    }

    #[test]
    fn unclaimed_reads_float_high() {
        let bus = Bus::new();
        let dev = recorder();
        bus.insert(0x10, 4, Arc::downgrade(&dev) as WeakBusDevice)
            .unwrap();
        let mut data = [0u8; 4];
        assert!(!bus.read(0x14, &mut data));
        assert_eq!(data, [0xff; 4]);
        assert!(!bus.read(0xf, &mut data));
        assert!(!bus.write(0x14, &[1]));
    }

    #[test]
    fn overlapping_ranges_are_refused() {
        let bus = Bus::new();
        let dev = recorder();
        let weak = || Arc::downgrade(&dev) as WeakBusDevice;
        bus.insert(0x100, 0x10, weak()).unwrap();
        assert!(bus.insert(0x10f, 1, weak()).is_err());
        assert!(bus.insert(0xf8, 0x9, weak()).is_err());
        assert!(bus.insert(0x100, 0, weak()).is_err());
        assert!(bus.insert(u64::MAX, 2, weak()).is_err());
        bus.insert(0xf0, 0x10, weak()).unwrap();
        bus.insert(0x110, 0x10, weak()).unwrap();
    }

    #[test]
    fn removed_ranges_stop_answering() {
        let bus = Bus::new();
        let dev = recorder();
        bus.insert(0x100, 0x10, Arc::downgrade(&dev) as WeakBusDevice)
            .unwrap();
        bus.remove(0x100).unwrap();
        assert!(!bus.write(0x100, &[0]));
        assert_eq!(bus.remove(0x100), Err(BusError::NotFound(0x100)));
    }
}
