//! An address bus (port I/O or MMIO): ranges mapped to devices, looked up on each exit.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};

/// A device on a bus. `offset` is relative to the base of the range it was inserted at.
pub trait BusDevice: Send {
    fn read(&mut self, offset: u64, data: &mut [u8]);
    fn write(&mut self, offset: u64, data: &[u8]);
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum BusError {
    #[error("bus range {base:#x}+{len:#x} is empty or overlaps another device")]
    Overlap { base: u64, len: u64 },
    #[error("no device at {0:#x}")]
    NotFound(u64),
}

struct Entry {
    len: u64,
    device: Arc<Mutex<dyn BusDevice>>,
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

    pub fn insert(
        &self,
        base: u64,
        len: u64,
        device: Arc<Mutex<dyn BusDevice>>,
    ) -> Result<(), BusError> {
        let overlap = BusError::Overlap { base, len };
        let end = base.checked_add(len).ok_or(overlap.clone())?;
        if len == 0 {
            return Err(overlap);
        }
        let mut ranges = self.ranges.write().unwrap();
        if let Some((b, e)) = ranges.range(..end).next_back() {
            if b + e.len > base {
                return Err(overlap);
            }
        }
        ranges.insert(base, Entry { len, device });
        Ok(())
    }

    pub fn remove(&self, base: u64) -> Result<(), BusError> {
        self.ranges
            .write()
            .unwrap()
            .remove(&base)
            .map(|_| ())
            .ok_or(BusError::NotFound(base))
    }

    /// Take every device off the bus (at the end of a VM). Devices may hold the bus they are
    /// on (the PCI root does, to map BARs): clearing breaks that cycle, so the devices are
    /// dropped — a VFIO device closes its group — instead of leaking with the bus.
    pub fn clear(&self) {
        let ranges = std::mem::take(&mut *self.ranges.write().unwrap());
        drop(ranges); // outside the lock: a device's Drop may use the bus
    }

    fn find(&self, addr: u64) -> Option<(u64, Arc<Mutex<dyn BusDevice>>)> {
        let ranges = self.ranges.read().unwrap();
        let (base, entry) = ranges.range(..=addr).next_back()?;
        (addr - base < entry.len).then(|| (addr - base, entry.device.clone()))
    }

    /// Read from the device at `addr`. Returns false (and fills `data` with all-ones, like
    /// an unclaimed bus cycle) when no device is there.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.find(addr) {
            Some((offset, device)) => {
                device.lock().unwrap().read(offset, data);
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
                device.lock().unwrap().write(offset, data);
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

    #[test]
    fn clear_drops_the_devices() {
        struct Dev {
            _alive: Arc<()>,
        }
        impl BusDevice for Dev {
            fn read(&mut self, _: u64, _: &mut [u8]) {}
            fn write(&mut self, _: u64, _: &[u8]) {}
        }
        let alive = Arc::new(());
        let bus = Bus::new();
        bus.insert(
            0x10,
            4,
            Arc::new(Mutex::new(Dev {
                _alive: alive.clone(),
            })),
        )
        .unwrap();
        assert_eq!(Arc::strong_count(&alive), 2);
        bus.clear();
        assert_eq!(Arc::strong_count(&alive), 1);
        assert!(!bus.write(0x10, &[1]));
    }

    #[test]
    fn reads_and_writes_reach_the_device_at_its_offset() {
        let bus = Bus::new();
        let dev = Arc::new(Mutex::new(Recorder::default()));
        bus.insert(0x3f8, 8, dev.clone()).unwrap();
        let mut data = [0u8; 1];
        assert!(bus.read(0x3fa, &mut data));
        assert_eq!(data, [2]);
        assert!(bus.write(0x3ff, &[7]));
        assert_eq!(dev.lock().unwrap().last_write, Some((7, vec![7])));
    }

    #[test]
    fn unclaimed_reads_float_high() {
        let bus = Bus::new();
        bus.insert(0x10, 4, Arc::new(Mutex::new(Recorder::default())))
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
        let dev = || Arc::new(Mutex::new(Recorder::default()));
        bus.insert(0x100, 0x10, dev()).unwrap();
        assert!(bus.insert(0x10f, 1, dev()).is_err());
        assert!(bus.insert(0xf8, 0x9, dev()).is_err());
        assert!(bus.insert(0x100, 0, dev()).is_err());
        assert!(bus.insert(u64::MAX, 2, dev()).is_err());
        bus.insert(0xf0, 0x10, dev()).unwrap();
        bus.insert(0x110, 0x10, dev()).unwrap();
    }

    #[test]
    fn removed_ranges_stop_answering() {
        let bus = Bus::new();
        bus.insert(0x100, 0x10, Arc::new(Mutex::new(Recorder::default())))
            .unwrap();
        bus.remove(0x100).unwrap();
        assert!(!bus.write(0x100, &[0]));
        assert_eq!(bus.remove(0x100), Err(BusError::NotFound(0x100)));
    }
}
