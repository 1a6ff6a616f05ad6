use std::sync::{Arc, Mutex};

use super::*;
use crate::pci::allocator::Window;
use crate::pci::config::*;
use crate::pci::{Bar, BarKind, PciError, ROM_BAR_INDEX};
use crate::WeakBusDevice;

const GIB: u64 = 1 << 30;
const ECAM_BASE: u64 = 0xe000_0000;
const ECAM_SIZE: u64 = 0x1000_0000;
const MMIO32: Window = Window::new(0xc000_0000, 0x2000_0000);
const MMIO64: Window = Window::new(64 * GIB, 64 * GIB);

#[derive(Debug, Clone, PartialEq)]
enum Event {
    Mapped(Bar),
    Unmapped(Bar),
    Write(u8, u64, Vec<u8>),
}

type Events = Arc<Mutex<Vec<Event>>>;

/// An emulated function over [`ConfigSpace`] that records what the root tells it.
struct TestDevice {
    cs: ConfigSpace,
    events: Events,
    fail_map: bool,
}

impl PciDevice for TestDevice {
    fn config_read(&mut self, offset: u16) -> u32 {
        self.cs.read(offset)
    }
    fn config_write(&mut self, offset: u16, data: &[u8]) {
        assert!(
            offset.is_multiple_of(data.len() as u16),
            "unaligned {offset:#x}"
        );
        assert!(matches!(data.len(), 1 | 2 | 4));
        self.cs.write(offset, data);
    }
    fn bars(&self) -> Vec<Bar> {
        self.cs.bars()
    }
    fn bar_mapped(&mut self, bar: &Bar) -> Result<(), PciError> {
        if self.fail_map {
            return Err(PciError("no slot".into()));
        }
        self.events.lock().unwrap().push(Event::Mapped(*bar));
        Ok(())
    }
    fn bar_unmapped(&mut self, bar: &Bar) {
        self.events.lock().unwrap().push(Event::Unmapped(*bar));
    }
    fn bar_read(&mut self, index: u8, offset: u64, data: &mut [u8]) {
        data.fill(index);
        data[0] = offset as u8;
    }
    fn bar_write(&mut self, index: u8, offset: u64, data: &[u8]) {
        self.events
            .lock()
            .unwrap()
            .push(Event::Write(index, offset, data.to_vec()));
    }
    fn assign_bar(&mut self, index: u8, addr: u64) {
        self.cs.assign_bar(index, addr);
    }
    fn name(&self) -> String {
        "test".into()
    }
}

fn test_device(device_id: u16, bars: &[(u8, BarKind, u64)]) -> (Arc<Mutex<TestDevice>>, Events) {
    let mut cs = ConfigSpace::new(&PciIds {
        vendor_id: 0x1af4,
        device_id,
        class: 0x02,
        subclass: 0x80,
        revision: 1,
        ..Default::default()
    });
    for &(index, kind, size) in bars {
        cs.add_bar(index, kind, false, size).unwrap();
    }
    cs.add_extended_capability(0x0b, 1, &[0xaa, 0xbb, 0xcc, 0xdd])
        .unwrap();
    cs.set_write_mask(0x104, &[0xff; 4]);
    let events = Events::default();
    let dev = TestDevice {
        cs,
        events: events.clone(),
        fail_map: false,
    };
    (Arc::new(Mutex::new(dev)), events)
}

/// A root wired like the VMM does it: config ports on the PIO bus, ECAM on the MMIO bus.
struct Machine {
    root: Arc<PciRoot>,
    pio: Arc<Bus>,
    mmio: Arc<Bus>,
    /// The config-access devices the buses refer to (the VMM's device manager owns them).
    _access: (Arc<Mutex<PciConfigIo>>, Arc<Mutex<PciEcam>>),
}

impl Machine {
    fn new() -> Self {
        let pio = Arc::new(Bus::new());
        let mmio = Arc::new(Bus::new());
        let windows = PciWindows {
            io: Some(Window::new(0x1000, 0xf000)),
            mmio32: MMIO32,
            mmio64: Some(MMIO64),
        };
        let root = Arc::new(PciRoot::new(pio.clone(), mmio.clone(), windows).unwrap());
        let cf8 = Arc::new(Mutex::new(PciConfigIo::new(root.clone())));
        pio.insert(0xcf8, CONFIG_IO_LEN, Arc::downgrade(&cf8) as WeakBusDevice)
            .unwrap();
        let ecam = Arc::new(Mutex::new(PciEcam::new(root.clone())));
        mmio.insert(ECAM_BASE, ECAM_SIZE, Arc::downgrade(&ecam) as WeakBusDevice)
            .unwrap();
        Self {
            root,
            pio,
            mmio,
            _access: (cf8, ecam),
        }
    }

    fn add(&self, slot: u8, function: u8, dev: &Arc<Mutex<TestDevice>>) -> Bdf {
        self.root
            .add_device(Some(slot), function, dev.clone())
            .unwrap()
    }

    fn ecam_addr(device: u8, function: u8, reg: u16) -> u64 {
        ECAM_BASE | u64::from(device) << 15 | u64::from(function) << 12 | u64::from(reg)
    }

    fn ecam_read(&self, device: u8, function: u8, reg: u16, len: usize) -> Vec<u8> {
        let mut data = vec![0; len];
        assert!(self
            .mmio
            .read(Self::ecam_addr(device, function, reg), &mut data));
        data
    }

    fn read32(&self, device: u8, reg: u16) -> u32 {
        u32::from_le_bytes(self.ecam_read(device, 0, reg, 4).try_into().unwrap())
    }

    fn write32(&self, device: u8, reg: u16, value: u32) {
        self.ecam_write(device, 0, reg, &value.to_le_bytes());
    }

    fn ecam_write(&self, device: u8, function: u8, reg: u16, data: &[u8]) {
        assert!(self
            .mmio
            .write(Self::ecam_addr(device, function, reg), data));
    }

    fn set_address(&self, value: u32) {
        assert!(self.pio.write(0xcf8, &value.to_le_bytes()));
    }

    fn port_read(&self, port: u64, len: usize) -> Vec<u8> {
        let mut data = vec![0; len];
        self.pio.read(port, &mut data);
        data
    }

    fn mmio_claimed(&self, addr: u64) -> bool {
        self.mmio.read(addr, &mut [0u8; 4])
    }
}

fn cf8(device: u8, function: u8, reg: u8) -> u32 {
    0x8000_0000 | u32::from(device) << 11 | u32::from(function) << 8 | u32::from(reg)
}

fn take(events: &Events) -> Vec<Event> {
    std::mem::take(&mut *events.lock().unwrap())
}

#[test]
fn host_bridge_sits_at_00_00_0() {
    let m = Machine::new();
    assert_eq!(m.read32(0, 0), 0x0008_1b36);
    assert_eq!(m.read32(0, 8) >> 8, 0x06_00_00);
    let devices = m.root.devices();
    assert_eq!(devices.len(), 1);
    assert_eq!(devices[0].0.to_string(), "0000:00:00.0");
}

#[test]
fn cf8_reads_dwords_words_and_bytes_at_every_offset() {
    let m = Machine::new();
    let (dev, _) = test_device(0x5678, &[]);
    m.add(3, 0, &dev);
    m.set_address(cf8(3, 0, 0));
    let ids = [0xf4, 0x1a, 0x78, 0x56];
    assert_eq!(m.port_read(0xcfc, 4), ids);
    for byte in 0..4 {
        assert_eq!(m.port_read(0xcfc + byte, 1), [ids[byte as usize]]);
    }
    for byte in 0..3 {
        let b = byte as usize;
        assert_eq!(
            m.port_read(0xcfc + byte, 2),
            ids[b..b + 2],
            "word at +{byte}"
        );
    }
    // A word at 0xcff would leave the data port: nothing answers it.
    assert_eq!(m.port_read(0xcff, 2), [0xff, 0xff]);
    // Register bits 7:2 pick the dword.
    m.set_address(cf8(3, 0, 0x08));
    assert_eq!(m.port_read(0xcfc, 4), [1, 0, 0x80, 0x02]);
}

#[test]
fn cf8_writes_at_every_width_and_offset() {
    let m = Machine::new();
    let (dev, _) = test_device(0x5678, &[]);
    m.add(3, 0, &dev);
    let cs = |r: u16| dev.lock().unwrap().cs.get_u8(r);

    m.set_address(cf8(3, 0, 0x0c));
    assert!(m.pio.write(0xcfc, &[0x10])); // cache line size
    assert!(m.pio.write(0xcfd, &[0x20])); // latency timer
    assert_eq!((cs(0x0c), cs(0x0d)), (0x10, 0x20));
    assert!(m.pio.write(0xcfd, &[0x21, 0xff])); // latency + read-only header type
    assert_eq!((cs(0x0d), cs(0x0e)), (0x21, 0x00));
    assert!(m.pio.write(0xcfc, &0xffff_ffffu32.to_le_bytes()));
    assert_eq!((cs(0x0c), cs(0x0d), cs(0x0e), cs(0x0f)), (0xff, 0xff, 0, 0));

    m.set_address(cf8(3, 0, 0x04));
    assert!(m.pio.write(0xcfc, &0x0406u16.to_le_bytes()));
    assert_eq!(
        dev.lock().unwrap().cs.command(),
        COMMAND_MEMORY | COMMAND_BUS_MASTER | COMMAND_INTX_DISABLE
    );
    m.set_address(cf8(3, 0, 0x3c));
    assert!(m.pio.write(0xcfe, &[0x33])); // interrupt pin: read-only
    assert!(m.pio.write(0xcfc, &[0x0b]));
    assert_eq!(m.port_read(0xcfc, 4), [0x0b, 0, 0, 0]);
}

#[test]
fn config_address_register_and_enable_bit() {
    let m = Machine::new();
    let (dev, _) = test_device(0x5678, &[]);
    m.add(3, 0, &dev);
    m.set_address(0xff03_1a3f);
    assert_eq!(m.port_read(0xcf8, 4), 0x8003_1a3cu32.to_le_bytes());
    assert_eq!(
        m.port_read(0xcf9, 1),
        [0xff],
        "narrow accesses are not CONFIG_ADDRESS"
    );
    assert!(m.pio.write(0xcf8, &[0]));
    assert_eq!(m.port_read(0xcf8, 4), 0x8003_1a3cu32.to_le_bytes());

    // Enable bit clear: all-ones, writes dropped.
    m.set_address(cf8(3, 0, 0x0c) & !ENABLE_BIT);
    assert_eq!(m.port_read(0xcfc, 4), [0xff; 4]);
    assert!(m.pio.write(0xcfc, &[0x10]));
    assert_eq!(dev.lock().unwrap().cs.get_u8(0x0c), 0);
    m.set_address(cf8(3, 0, 0x0c));
    assert_eq!(m.port_read(0xcfc, 1), [0]);
}

const ENABLE_BIT: u32 = 1 << 31;

#[test]
fn absent_functions_and_other_buses_read_all_ones() {
    let m = Machine::new();
    let (dev, _) = test_device(0x5678, &[]);
    m.add(3, 0, &dev);
    m.set_address(cf8(4, 0, 0));
    assert_eq!(m.port_read(0xcfc, 4), [0xff; 4]);
    m.set_address(cf8(3, 1, 0));
    assert_eq!(m.port_read(0xcfc, 2), [0xff; 2]);
    m.set_address(cf8(3, 0, 0) | 1 << 16); // bus 1
    assert_eq!(m.port_read(0xcfc, 4), [0xff; 4]);
    assert!(m.pio.write(0xcfc, &[0; 4]));
    assert_eq!(m.ecam_read(31, 7, 0, 4), [0xff; 4]);
    let mut data = [0; 4];
    assert!(m.mmio.read(ECAM_BASE + (1 << 20) + (3 << 15), &mut data));
    assert_eq!(data, [0xff; 4], "device 3 on bus 1");
    m.ecam_write(9, 0, 0x04, &[0xff; 4]); // dropped, nothing to check but no panic
}

#[test]
fn ecam_reaches_the_whole_4k_including_extended_space() {
    let m = Machine::new();
    let (dev, _) = test_device(0x5678, &[]);
    m.add(5, 0, &dev);
    assert_eq!(m.read32(5, 0), 0x5678_1af4);
    assert_eq!(m.ecam_read(5, 0, 2, 2), [0x78, 0x56]);
    assert_eq!(m.ecam_read(5, 0, 1, 1), [0x1a]);
    assert_eq!(m.read32(5, 0x100), 0x0001_000b);
    assert_eq!(m.ecam_read(5, 0, 0x105, 2), [0xbb, 0xcc]);
    m.ecam_write(5, 0, 0x106, &[0x12, 0x34]);
    assert_eq!(m.read32(5, 0x104), 0x3412_bbaa);
    assert_eq!(m.read32(5, 0xffc), 0);
    // Unaligned and 8-byte accesses are split into aligned pieces.
    m.ecam_write(5, 0, 0x105, &[1, 2]);
    assert_eq!(m.read32(5, 0x104), 0x3402_01aa);
    assert_eq!(
        m.ecam_read(5, 0, 0x100, 8),
        [0x0b, 0, 1, 0, 0xaa, 1, 2, 0x34]
    );
    // Crossing into the next function: refused.
    assert_eq!(m.ecam_read(5, 0, 0xffe, 4), [0xff; 4]);
}

#[test]
fn multifunction_bit_follows_the_topology() {
    let m = Machine::new();
    let header = |m: &Machine, f: u8| m.ecam_read(7, f, HEADER_TYPE, 1)[0];
    let (f0, _) = test_device(0x1000, &[]);
    // The device claims siblings that are not there (a function of a multi-function host
    // device passed through alone): the root hides the bit.
    f0.lock()
        .unwrap()
        .cs
        .set_u8(HEADER_TYPE, HEADER_TYPE_MULTIFUNCTION);
    m.add(7, 0, &f0);
    assert_eq!(header(&m, 0), 0);
    assert_eq!(m.read32(7, 0x0c) >> 16 & 0xff, 0);

    let (f2, _) = test_device(0x1002, &[]);
    m.add(7, 2, &f2);
    assert_eq!(header(&m, 0), HEADER_TYPE_MULTIFUNCTION);
    assert_eq!(header(&m, 2), HEADER_TYPE_MULTIFUNCTION);
    m.set_address(cf8(7, 0, 0x0c));
    assert_eq!(m.port_read(0xcfe, 1), [HEADER_TYPE_MULTIFUNCTION]);
    assert_eq!(m.ecam_read(7, 1, 0, 4), [0xff; 4]);

    // Alone in a slot and not claiming: stays clear.
    let (single, _) = test_device(0x1003, &[]);
    m.add(8, 0, &single);
    assert_eq!(m.ecam_read(8, 0, HEADER_TYPE, 1), [0]);
}

#[test]
fn add_device_picks_slots_and_reports_errors() {
    let m = Machine::new();
    let dev = || test_device(1, &[]).0;
    let bdf = m.root.add_device(None, 0, dev()).unwrap();
    assert_eq!((bdf.device, bdf.function), (1, 0));
    m.root.add_device(Some(2), 3, dev()).unwrap();
    let bdf = m.root.add_device(None, 0, dev()).unwrap();
    assert_eq!(bdf.device, 3, "slot 2 has a function");
    assert!(matches!(
        m.root.add_device(Some(2), 3, dev()),
        Err(PciRootError::Occupied(_))
    ));
    assert!(matches!(
        m.root.add_device(Some(32), 0, dev()),
        Err(PciRootError::NoSuchSlot(32))
    ));
    assert!(matches!(
        m.root.add_device(Some(4), 8, dev()),
        Err(PciRootError::NoSuchFunction(8))
    ));
    for slot in 4..32 {
        m.root.add_device(Some(slot), 0, dev()).unwrap();
    }
    assert!(matches!(
        m.root.add_device(None, 0, dev()),
        Err(PciRootError::NoFreeSlot)
    ));
}

#[test]
fn add_device_assigns_bars_in_the_windows() {
    let m = Machine::new();
    let (dev, events) = test_device(
        1,
        &[
            (0, BarKind::Mem32, 0x1000),
            (2, BarKind::Mem64, 32 * GIB),
            (4, BarKind::Io, 0x100),
            (ROM_BAR_INDEX, BarKind::Rom, 0x1_0000),
        ],
    );
    m.add(1, 0, &dev);
    let bars = dev.lock().unwrap().bars();
    assert_eq!(bars.len(), 4);
    for bar in &bars {
        assert_ne!(bar.addr, 0);
        assert_eq!(bar.addr % bar.size, 0);
        assert!(!bar.decoding, "the guest enables decoding, not the root");
    }
    assert!(MMIO64.contains(bars[1].addr, bars[1].size));
    assert!(take(&events).is_empty());

    let (huge, _) = test_device(2, &[(0, BarKind::Mem64, 128 * GIB)]);
    let err = m.root.add_device(None, 0, huge).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("0000:00:02.0 (test)") && msg.contains("BAR 0"),
        "{msg}"
    );
    assert!(msg.contains("128 GiB") && msg.contains("64 GiB"), "{msg}");
}

mod decode;
