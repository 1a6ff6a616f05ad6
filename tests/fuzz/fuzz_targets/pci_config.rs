//! The PCI root complex as the guest reaches it: config mechanism #1 (0xcf8/0xcfc) on the
//! PIO bus and ECAM on the MMIO bus, wired as `vmm::device_manager::pci` does, with the
//! host bridge at 00:00.0 and a VFIO function at 00:01.0 over the in-memory mock device
//! (BARs 0-2 and a ROM, MSI, MSI-X with its table in BAR 2, INTx).
//!
//! Ops (`kind % 11`): 0 CONFIG_ADDRESS write; 1/2 CONFIG_DATA read/write; 3/4 ECAM
//! read/write (address bit 28: at 00:01.0); 5/6 read/write in BAR `addr >> 24` wherever the
//! guest put it; 7 a read anywhere on either bus; 8 size a BAR as Linux does (all-ones,
//! read, restore); 9 the device raises an interrupt; 10 the VMM's services start or stop
//! failing (no KVM slot left, no GSI left).
//!
//! The input's length picks the device's options: `len % 16` (the bytes after the last
//! whole op) bit 0 turns peer-to-peer on (the BARs' direct parts DMA-mapped at their guest
//! addresses), bit 1 adds the GPUDirect clique capability (clique `len % 16`), bit 2 puts
//! the device behind a DMA gate that failed (guest RAM never got mapped), else bit 3 behind
//! one that opened.
//!
//! Checked after every op: absent functions and refused accesses read all-ones, as do
//! unclaimed bus ranges; BAR sizing reads back the size mask, and the BAR registers hold the
//! addresses the root decodes; the host bridge's IDs never change; every KVM memory slot lies
//! inside a BAR that decodes there now (none left behind by a move or a decode toggle) and
//! slots never overlap; vector irqfds exist only while the guest has MSI or MSI-X on, INTx's
//! only while it has neither, each on an allocated, routed GSI; the IOMMU holds exactly the
//! peer-to-peer ranges the device says it mapped, inside decoding BARs while no unmap has
//! failed; the clique capability reads the same whatever the guest writes; behind a failed
//! DMA gate, bus mastering is never on in the device. At the end,
//! dropping the root releases every GSI, irqfd, slot and DMA mapping.

#![no_main]

use std::sync::{Arc, Mutex};

use arch::layout::{PCI_CONFIG_ADDRESS_PORT, PCI_ECAM_SIZE, PCI_ECAM_START};
use arch::pci_windows::PciWindows;
use devices::pci::root::{PciConfigIo, PciEcam, PciRoot, CONFIG_IO_LEN};
use devices::pci::{Bar, BarKind, Bdf, ROM_BAR_INDEX};
use devices::vfio::mock::{MockBackend, MockDma, MockMapper, MockRouter, MSIX_CAP, MSI_CAP};
use devices::vfio::{DmaGate, IrqIndex, VfioPciDevice};
use devices::{Bus, WeakBusDevice};
use libfuzzer_sys::fuzz_target;
use zhitong_fuzz::{le, ops, Op, RECORD_LEN};

const DEV: Bdf = Bdf::root_bus(1, 0);

struct Machine {
    pio: Arc<Bus>,
    mmio: Arc<Bus>,
    root: Arc<PciRoot>,
    _access: (Arc<Mutex<PciConfigIo>>, Arc<Mutex<PciEcam>>),
    backend: MockBackend,
    router: Arc<MockRouter>,
    mapper: Arc<MockMapper>,
    dev: Arc<Mutex<VfioPciDevice>>,
    /// The IOMMU, when peer-to-peer is on.
    dma: Option<Arc<MockDma>>,
    /// Whether a DMA unmap has been made to fail (mappings may then stay behind a move).
    unmap_failed: std::cell::Cell<bool>,
    /// The clique capability's offset and its two dwords, when there is one.
    clique: Option<(u16, [u32; 2])>,
    /// The host bridge's vendor and device ID: read-only.
    bridge_id: u32,
    /// The device's DMA gate failed: it must never get bus mastering.
    bus_master_refused: bool,
}

impl Machine {
    fn new(options: usize) -> Self {
        let (pio, mmio) = (Arc::new(Bus::new()), Arc::new(Bus::new()));
        let windows = PciWindows::for_guest(2 << 30, 40);
        let root = Arc::new(PciRoot::new(pio.clone(), mmio.clone(), windows).unwrap());
        let cf8 = Arc::new(Mutex::new(PciConfigIo::new(root.clone())));
        let port = u64::from(PCI_CONFIG_ADDRESS_PORT);
        pio.insert(port, CONFIG_IO_LEN, Arc::downgrade(&cf8) as WeakBusDevice)
            .unwrap();
        let ecam = Arc::new(Mutex::new(PciEcam::new(root.clone())));
        mmio.insert(
            PCI_ECAM_START,
            PCI_ECAM_SIZE,
            Arc::downgrade(&ecam) as WeakBusDevice,
        )
        .unwrap();
        let backend = MockBackend::standard();
        let router = Arc::new(MockRouter::default());
        let mapper = Arc::new(MockMapper::default());
        let mut dev = VfioPciDevice::new(
            Box::new(backend.clone()),
            "0000:01:00.0".into(),
            router.clone(),
            mapper.clone(),
            Some(arch::acpi::pci_intx_gsi(1, 0)),
        )
        .unwrap();
        let dma = (options & 1 != 0).then(|| Arc::new(MockDma::default()));
        if let Some(dma) = &dma {
            dev.enable_p2p(dma.clone()).unwrap();
        }
        if options & 2 != 0 {
            dev.add_gpudirect_clique(options as u8 & 0xf).unwrap();
        }
        let bus_master_refused = options & 4 != 0;
        if options & 12 != 0 {
            let gate = Arc::new(DmaGate::pending());
            if bus_master_refused {
                gate.fail();
            } else {
                gate.open();
            }
            dev.set_dma_gate(gate);
        }
        let dev = Arc::new(Mutex::new(dev));
        root.add_device(Some(DEV.device), DEV.function, dev.clone())
            .unwrap();
        let mut id = [0u8; 4];
        root.config_read(Bdf::root_bus(0, 0), 0, &mut id);
        let dword = |reg: u16| {
            let mut b = [0u8; 4];
            root.config_read(DEV, reg, &mut b);
            u32::from_le_bytes(b)
        };
        // The clique capability heads the list; its ID is 0x09, its length 8.
        let first = (dword(0x34) & 0xfc) as u16;
        let clique = (options & 2 != 0).then(|| {
            let cap = [dword(first), dword(first + 4)];
            assert_eq!(cap[0] & 0xff_00ff, 0x08_0009, "clique capability {cap:x?}");
            (first, cap)
        });
        Self {
            dev,
            dma,
            unmap_failed: Default::default(),
            clique,
            bridge_id: u32::from_le_bytes(id),
            bus_master_refused,
            pio,
            mmio,
            root,
            _access: (cf8, ecam),
            backend,
            router,
            mapper,
        }
    }

    fn bars(&self) -> Vec<Bar> {
        let devices = self.root.devices();
        let (_, dev) = devices.iter().find(|(bdf, _)| *bdf == DEV).unwrap();
        let bars = dev.lock().unwrap().bars();
        bars
    }

    fn device_p2p_ranges(&self) -> Vec<(u64, u64)> {
        self.dev.lock().unwrap().p2p_ranges()
    }

    fn bus(&self, io: bool) -> &Bus {
        if io {
            &self.pio
        } else {
            &self.mmio
        }
    }

    fn ecam(&self, offset: u64, data: &mut [u8], write: bool) {
        let addr = PCI_ECAM_START + offset;
        if write {
            assert!(self.mmio.write(addr, data));
        } else {
            assert!(self.mmio.read(addr, data));
        }
    }

    fn config_u32(&self, reg: u16) -> u32 {
        let mut b = [0u8; 4];
        self.root.config_read(DEV, reg, &mut b);
        u32::from_le_bytes(b)
    }

    /// Size BAR register `index` (6: the ROM) through ECAM and check the mask it reads.
    fn size_bar(&self, index: u8) {
        let at = (1 << 15) | u64::from(bar_register(index));
        let mut old = [0u8; 4];
        self.ecam(at, &mut old, false);
        self.ecam(at, &mut [0xff; 4], true);
        let mut got = [0u8; 4];
        self.ecam(at, &mut got, false);
        self.ecam(at, &mut old, true);
        let got = u32::from_le_bytes(got);
        let bars = self.bars();
        let mask = |b: &Bar| !(b.size - 1);
        let (got, want) = if let Some(b) = bars.iter().find(|b| b.index == index) {
            let bits = addr_bits(b.kind);
            (got & bits, mask(b) as u32 & bits)
        } else {
            // The upper half of a 64-bit BAR, or no BAR at all (reads 0).
            let lower = bars
                .iter()
                .find(|b| b.kind == BarKind::Mem64 && b.index + 1 == index);
            (got, lower.map_or(0, |b| (mask(b) >> 32) as u32))
        };
        assert_eq!(got, want, "sizing BAR {index}");
    }

    fn check(&self) {
        let mut id = [0u8; 4];
        self.root.config_read(Bdf::root_bus(0, 0), 0, &mut id);
        assert_eq!(
            u32::from_le_bytes(id),
            self.bridge_id,
            "the host bridge's IDs"
        );
        // The BAR registers say where the BARs are, as `bars()` does.
        for b in self.bars() {
            let (reg, bits) = (bar_register(b.index), addr_bits(b.kind));
            assert_eq!(self.config_u32(reg) & bits, b.addr as u32 & bits, "{b:x?}");
            if b.kind == BarKind::Mem64 {
                assert_eq!(self.config_u32(reg + 4), (b.addr >> 32) as u32, "{b:x?}");
            }
        }
        let bars: Vec<Bar> = self.bars().into_iter().filter(|b| b.decoding).collect();
        let slots = self.mapper.ranges();
        for (i, &(gpa, size)) in slots.iter().enumerate() {
            assert!(
                bars.iter()
                    .any(|b| !b.is_io() && gpa >= b.addr && gpa + size <= b.addr + b.size),
                "slot {gpa:#x}+{size:#x} outside every decoding BAR {bars:x?}"
            );
            if let Some(&(next, _)) = slots.get(i + 1) {
                assert!(gpa + size <= next, "slots overlap: {slots:x?}");
            }
        }
        if let Some(dma) = &self.dma {
            let ranges = dma.ranges();
            assert_eq!(ranges, self.device_p2p_ranges(), "IOMMU vs the device");
            for &(iova, size) in ranges.iter().filter(|_| !self.unmap_failed.get()) {
                assert!(
                    bars.iter()
                        .any(|b| !b.is_io() && iova >= b.addr && iova + size <= b.addr + b.size),
                    "DMA mapping {iova:#x}+{size:#x} outside every decoding BAR {bars:x?}"
                );
            }
        }
        if self.bus_master_refused {
            let command = self.backend.state().config_u32(4);
            assert_eq!(command & 4, 0, "bus mastering on behind a failed DMA gate");
        }
        if let Some((at, cap)) = self.clique {
            let now = [self.config_u32(at), self.config_u32(at + 4)];
            assert_eq!(now, cap, "the clique capability changed");
        }
        let msi_on = self.config_u32(MSI_CAP) & (1 << 16) != 0;
        let msix_on = self.config_u32(MSIX_CAP) & (1 << 31) != 0;
        let router = self.router.state();
        if !msi_on && !msix_on {
            assert!(
                router.irqfds.is_empty(),
                "vector irqfds with MSI and MSI-X off"
            );
        }
        assert_eq!(
            router.resample_irqfds.len(),
            usize::from(!msi_on && !msix_on),
            "INTx irqfd (MSI {msi_on}, MSI-X {msix_on})"
        );
        for gsi in router.irqfds.keys() {
            assert!(router.allocated.contains(gsi) && router.routes.contains_key(gsi));
        }
        let enabled = self.backend.state().enabled;
        match enabled {
            Some(IrqIndex::Msi) => assert!(msi_on),
            Some(IrqIndex::Msix) => assert!(msix_on),
            Some(IrqIndex::Intx) => assert!(!msi_on && !msix_on),
            _ => {}
        }
    }

    /// The device signals vector `vector` of whatever VFIO has enabled.
    fn fire(&self, vector: usize) {
        let state = self.backend.state();
        if let Some(evt) = state
            .enabled
            .and_then(|index| state.triggers.get(&index))
            .and_then(|fds| fds.get(vector % fds.len().max(1)))
        {
            evt.write(1).unwrap();
        }
    }
}

/// The config offset of BAR `index` (6: the ROM BAR).
fn bar_register(index: u8) -> u16 {
    if index == ROM_BAR_INDEX {
        0x30
    } else {
        0x10 + 4 * u16::from(index)
    }
}

/// The address bits of a BAR register's low dword.
fn addr_bits(kind: BarKind) -> u32 {
    match kind {
        BarKind::Io => !0x3,
        BarKind::Mem32 | BarKind::Mem64 => !0xf,
        BarKind::Rom => !0x7ff,
    }
}

/// Whether an access of `len` bytes at ECAM `offset` reaches a function.
fn ecam_reaches(offset: u64, len: usize) -> bool {
    // Bus 0: 00:00.0 (the host bridge) and 00:01.0.
    let present = matches!(offset >> 12, 0 | 8);
    present && (offset & 0xfff) as usize + len <= 0x1000
}

fn run(m: &Machine, op: Op) {
    let width = op.width;
    let mut buf = op.data(width);
    match op.kind % 11 {
        0 => assert!(m.pio.write(0xcf8, &op.addr.to_le_bytes())),
        1 | 2 => {
            let width = op.pio_width();
            let byte = u64::from(op.addr & 3);
            let mut buf = op.data(width);
            if op.kind % 11 == 2 {
                assert!(m.pio.write(0xcfc + byte, &buf));
                return;
            }
            assert!(m.pio.read(0xcfc + byte, &mut buf));
            // CONFIG_ADDRESS as it is now (a BAR write may have reached it too).
            let mut a = [0u8; 4];
            assert!(m.pio.read(0xcf8, &mut a));
            let a = u32::from_le_bytes(a);
            let (bus, device, function) = ((a >> 16) & 0xff, (a >> 11) & 0x1f, (a >> 8) & 7);
            let present = bus == 0 && function == 0 && device <= 1;
            if a & (1 << 31) == 0 || byte as usize + width > 4 || !present {
                assert!(buf.iter().all(|&b| b == 0xff), "CF8 {a:#x}: {buf:?}");
            }
        }
        3 | 4 => {
            let offset = if op.addr & (1 << 28) != 0 {
                (1 << 15) | u64::from(op.addr & 0xfff)
            } else {
                u64::from(op.addr) % PCI_ECAM_SIZE
            };
            let write = op.kind % 11 == 4;
            m.ecam(offset, &mut buf, write);
            if !write && !ecam_reaches(offset, width) {
                assert!(buf.iter().all(|&b| b == 0xff), "ECAM {offset:#x}: {buf:?}");
            }
        }
        5 | 6 => {
            let index = (op.addr >> 24) as u8 % 7;
            let Some(bar) = m.bars().into_iter().find(|b| b.index == index) else {
                return;
            };
            let addr = bar.addr + u64::from(op.addr & 0xff_ffff) % bar.size;
            let bus = m.bus(bar.is_io());
            let width = if bar.is_io() { op.pio_width() } else { width };
            let buf = &mut buf[..width];
            if op.kind % 11 == 6 {
                bus.write(addr, buf);
            } else if !bus.read(addr, buf) {
                assert!(buf.iter().all(|&b| b == 0xff));
            }
        }
        7 => {
            let io = op.value & 1 != 0;
            let addr = if io {
                u64::from(op.addr as u16)
            } else {
                u64::from(op.addr) | (op.value & 0xff00) << 24
            };
            let width = if io { op.pio_width() } else { width };
            let buf = &mut buf[..width];
            if !m.bus(io).read(addr, buf) {
                assert!(
                    buf.iter().all(|&b| b == 0xff),
                    "unclaimed {addr:#x}: {buf:?}"
                );
            }
        }
        8 => m.size_bar((op.addr % 7) as u8),
        9 => m.fire(le(&buf) as usize),
        _ => {
            m.mapper.state().fail = op.value & 1 != 0;
            m.router.state().fail_allocations = op.value & 2 != 0;
            if let Some(dma) = &m.dma {
                let fail = op.value & 4 != 0;
                dma.state().fail_unmap = fail;
                m.unmap_failed.set(m.unmap_failed.get() | fail);
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let m = Machine::new(data.len() % RECORD_LEN);
    for op in ops(data) {
        run(&m, op);
        m.check();
    }
    let (router, mapper, backend) = (m.router.clone(), m.mapper.clone(), m.backend.clone());
    let dma = m.dma.clone();
    if let Some(dma) = &dma {
        dma.state().fail_unmap = false;
    }
    drop(m);
    if let Some(dma) = dma {
        assert!(
            dma.ranges().is_empty(),
            "DMA mappings left: {:x?}",
            dma.ranges()
        );
    }
    let router = router.state();
    assert!(router.allocated.is_empty() && router.routes.is_empty());
    assert!(router.irqfds.is_empty() && router.resample_irqfds.is_empty());
    assert!(mapper.state().slots.is_empty());
    assert_eq!(backend.state().enabled, None);
});
