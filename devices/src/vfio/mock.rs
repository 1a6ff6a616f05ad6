//! In-memory stand-ins for tests (and, with the `mock` feature, the fuzz targets): a VFIO
//! device with a realistic config space, and recording `InterruptRouter`/`MemoryMapper`s.
//!
//! The device: vendor 0x10de, capabilities PM (0x40) -> MSI (0x50; 64-bit, per-vector
//! masking, 8 vectors) -> MSI-X (0x70; 16 vectors, table in BAR 2 at 0xa0000, PBA at
//! 0xa1000) -> vendor-specific (0x80); extended AER (0x100) -> Resizable BAR (0x140) ->
//! LTR (0x160); BAR 0 32-bit memory
//! 16 KiB (mmappable), BAR 1 I/O 256 bytes, BARs 2-3 64-bit prefetchable 1 MiB with sparse
//! areas [0, 256K) and [512K, 1M) and the MSI-X-mappable cap, a 64 KiB ROM; INTA.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::io::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex, MutexGuard};

use vmm_sys_util::eventfd::EventFd;

use crate::services::{InterruptRouter, MappingId, MemoryMapper, MsiMessage, ServiceError};

use super::backend::{IrqIndex, IrqInfo, RegionInfo, SparseArea, VfioBackend};
use super::error::BackendError;
use super::mapping::DeviceMapping;

mod gpu;
pub use gpu::{NVIDIA_MIRROR, NVIDIA_MSIX_PBA, NVIDIA_MSIX_TABLE};

pub const MSI_CAP: u16 = 0x50;
pub const MSIX_CAP: u16 = 0x70;
pub const VENDOR_CAP: u16 = 0x80;
pub const PCIE_CAP: u16 = 0x90;
pub const MSIX_TABLE: u64 = 0xa_0000;
pub const MSIX_PBA: u64 = 0xa_1000;
pub const MSIX_VECTORS: usize = 16;

/// What the device saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    RegionWrite {
        index: u32,
        offset: u64,
        data: Vec<u8>,
    },
    Enable {
        index: IrqIndex,
        fds: Vec<RawFd>,
    },
    Disable(IrqIndex),
    UnmaskIntx,
    SetUnmaskFd(RawFd),
    Reset,
    Mmap {
        index: u32,
        offset: u64,
        size: u64,
    },
}

pub struct MockRegion {
    pub info: RegionInfo,
    pub data: Vec<u8>,
}

pub struct MockState {
    pub regions: BTreeMap<u32, MockRegion>,
    pub irqs: HashMap<IrqIndex, IrqInfo>,
    pub calls: Vec<Call>,
    /// Clones of the eventfds each index is triggering, to play the device firing.
    pub triggers: HashMap<IrqIndex, Vec<EventFd>>,
    /// VFIO allows one interrupt index at a time.
    pub enabled: Option<IrqIndex>,
    pub fail_mmap: bool,
}

impl MockState {
    pub fn config(&self) -> &[u8] {
        &self.regions[&7].data
    }

    pub fn config_mut(&mut self) -> &mut [u8] {
        &mut self.regions.get_mut(&7).unwrap().data
    }

    pub fn set_config_u32(&mut self, offset: u16, value: u32) {
        let o = usize::from(offset);
        self.config_mut()[o..o + 4].copy_from_slice(&value.to_le_bytes());
    }

    pub fn config_u32(&self, offset: u16) -> u32 {
        let o = usize::from(offset);
        u32::from_le_bytes(self.config()[o..o + 4].try_into().unwrap())
    }

    pub fn config_writes(&self) -> Vec<(u64, Vec<u8>)> {
        self.calls
            .iter()
            .filter_map(|c| match c {
                Call::RegionWrite {
                    index: 7,
                    offset,
                    data,
                } => Some((*offset, data.clone())),
                _ => None,
            })
            .collect()
    }

    pub fn irq_calls(&self) -> Vec<Call> {
        self.calls
            .iter()
            .filter(|c| {
                matches!(
                    c,
                    Call::Enable { .. } | Call::Disable(_) | Call::SetUnmaskFd(_)
                )
            })
            .cloned()
            .collect()
    }

    /// The device raises vector `vector` of `index`.
    pub fn fire(&self, index: IrqIndex, vector: usize) {
        self.triggers[&index][vector].write(1).unwrap();
    }
}

fn region(size: u64, write: bool, mmap: bool) -> MockRegion {
    MockRegion {
        info: RegionInfo {
            size,
            read: size != 0,
            write,
            mmap,
            sparse: None,
            msix_mappable: false,
        },
        data: vec![0; size as usize],
    }
}

fn standard_config() -> Vec<u8> {
    let mut c = vec![0u8; 4096];
    let mut put = |off: usize, bytes: &[u8]| c[off..off + bytes.len()].copy_from_slice(bytes);
    put(0x00, &0x10de_u16.to_le_bytes());
    put(0x02, &0x1eb8_u16.to_le_bytes());
    put(0x04, &0x0000_u16.to_le_bytes()); // command
    put(0x06, &0x0010_u16.to_le_bytes()); // status: capabilities list
    put(0x08, &0x0302_00a1_u32.to_le_bytes()); // class 3D controller, rev a1
    put(0x10, &0xfe00_0000_u32.to_le_bytes()); // BAR0 mem32 (host address)
    put(0x14, &0x0000_e001_u32.to_le_bytes()); // BAR1 I/O
    put(0x18, &0xd000_000c_u32.to_le_bytes()); // BAR2 mem64 prefetchable
    put(0x1c, &0x0000_0001_u32.to_le_bytes()); // BAR3 upper half
    put(0x2c, &0x1234_10de_u32.to_le_bytes()); // subsystem
    put(0x30, &0xfe10_0000_u32.to_le_bytes()); // ROM BAR (host address)
    put(0x34, &[0x40]);
    put(0x3c, &[0x0b, 0x01]); // host's line 11, INTA
    put(0x40, &[0x01, MSI_CAP as u8, 0x03, 0x00]); // PM
                                                   // MSI: 64-bit, per-vector masking, MMC = 3 (8 vectors).
    let msi_ctrl: u16 = 1 << 8 | 1 << 7 | 3 << 1;
    put(0x50, &[0x05, MSIX_CAP as u8]);
    put(0x52, &msi_ctrl.to_le_bytes());
    // MSI-X: 16 vectors, table and PBA in BAR 2.
    put(0x70, &[0x11, VENDOR_CAP as u8]);
    put(0x72, &(MSIX_VECTORS as u16 - 1).to_le_bytes());
    put(0x74, &(MSIX_TABLE as u32 | 2).to_le_bytes());
    put(0x78, &(MSIX_PBA as u32 | 2).to_le_bytes());
    put(
        0x80,
        &[0x09, PCIE_CAP as u8, 0x08, 0xaa, 0xbb, 0xcc, 0xdd, 0xee],
    ); // vendor-specific
       // PCI Express (v2, endpoint), last; Device Capabilities says FLR.
    put(PCIE_CAP as usize, &[0x10, 0x00, 0x02, 0x00]);
    put(PCIE_CAP as usize + 4, &(1u32 << 28).to_le_bytes());
    put(0x100, &0x1401_0001_u32.to_le_bytes()); // AER, next 0x140
    put(0x140, &0x1601_0015_u32.to_le_bytes()); // Resizable BAR, next 0x160 (hidden)
    put(0x144, &0x0000_fff0_u32.to_le_bytes());
    put(0x160, &0x0001_0018_u32.to_le_bytes()); // LTR, last
    c
}

/// The in-memory device, shared with the test that inspects it.
#[derive(Clone)]
pub struct MockBackend(pub Arc<Mutex<MockState>>);

impl MockBackend {
    pub fn standard() -> Self {
        let mut regions = BTreeMap::new();
        regions.insert(0, region(0x4000, true, true));
        regions.insert(1, region(0x100, true, false));
        let mut bar2 = region(0x10_0000, true, true);
        bar2.info.sparse = Some(vec![
            SparseArea {
                offset: 0,
                size: 0x4_0000,
            },
            SparseArea {
                offset: 0x8_0000,
                size: 0x8_0000,
            },
        ]);
        bar2.info.msix_mappable = true;
        regions.insert(2, bar2);
        regions.insert(3, region(0, false, false));
        regions.insert(4, region(0, false, false));
        regions.insert(5, region(0, false, false));
        let mut rom = region(0x1_0000, false, false);
        rom.data[..2].copy_from_slice(&[0x55, 0xaa]);
        regions.insert(6, rom);
        let mut config = region(4096, true, false);
        config.data = standard_config();
        regions.insert(7, config);

        let eventfd_flags = 1; // VFIO_IRQ_INFO_EVENTFD
        let mut irqs = HashMap::new();
        irqs.insert(
            IrqIndex::Intx,
            IrqInfo::from_flags(1, eventfd_flags | 2 | 4),
        );
        irqs.insert(IrqIndex::Msi, IrqInfo::from_flags(8, eventfd_flags | 8));
        irqs.insert(
            IrqIndex::Msix,
            IrqInfo::from_flags(MSIX_VECTORS as u32, eventfd_flags | 8),
        );
        Self(Arc::new(Mutex::new(MockState {
            regions,
            irqs,
            calls: Vec::new(),
            triggers: HashMap::new(),
            enabled: None,
            fail_mmap: false,
        })))
    }

    pub fn state(&self) -> MutexGuard<'_, MockState> {
        self.0.lock().unwrap()
    }
}

impl VfioBackend for MockBackend {
    fn region_info(&self, index: u32) -> RegionInfo {
        self.state()
            .regions
            .get(&index)
            .map(|r| r.info.clone())
            .unwrap_or_default()
    }

    fn region_read(&self, index: u32, offset: u64, data: &mut [u8]) {
        data.fill(0xff);
        let state = self.state();
        if let Some(r) = state.regions.get(&index) {
            if let Some(src) = r.data.get(offset as usize..offset as usize + data.len()) {
                data.copy_from_slice(src);
            }
        }
    }

    fn region_write(&self, index: u32, offset: u64, data: &[u8]) {
        let mut state = self.state();
        state.calls.push(Call::RegionWrite {
            index,
            offset,
            data: data.to_vec(),
        });
        if let Some(r) = state.regions.get_mut(&index) {
            if let Some(dst) = r
                .data
                .get_mut(offset as usize..offset as usize + data.len())
            {
                dst.copy_from_slice(data);
            }
        }
    }

    fn mmap_region(
        &self,
        index: u32,
        offset: u64,
        size: u64,
        _writable: bool,
    ) -> Result<DeviceMapping, BackendError> {
        let mut state = self.state();
        if state.fail_mmap {
            return Err(BackendError::new("mmap", "ENOMEM"));
        }
        state.calls.push(Call::Mmap {
            index,
            offset,
            size,
        });
        DeviceMapping::anonymous(size).map_err(|e| BackendError::new("mmap", e))
    }

    fn irq_info(&self, index: IrqIndex) -> Option<IrqInfo> {
        self.state().irqs.get(&index).copied()
    }

    fn enable_irq(&self, index: IrqIndex, fds: &[&EventFd]) -> Result<(), BackendError> {
        let mut state = self.state();
        let count = state.irqs.get(&index).map_or(0, |i| i.count) as usize;
        if fds.is_empty() || fds.len() > count {
            return Err(BackendError::new("SET_IRQS", "EINVAL: bad count"));
        }
        if state.enabled.is_some_and(|e| e != index) {
            return Err(BackendError::new("SET_IRQS", "EINVAL: another index is on"));
        }
        state.enabled = Some(index);
        state.calls.push(Call::Enable {
            index,
            fds: fds.iter().map(|f| f.as_raw_fd()).collect(),
        });
        let clones = fds.iter().map(|f| f.try_clone().unwrap()).collect();
        state.triggers.insert(index, clones);
        Ok(())
    }

    fn disable_irq(&self, index: IrqIndex) -> Result<(), BackendError> {
        let mut state = self.state();
        state.calls.push(Call::Disable(index));
        if state.enabled == Some(index) {
            state.enabled = None;
        }
        state.triggers.remove(&index);
        Ok(())
    }

    fn unmask_intx(&self) -> Result<(), BackendError> {
        self.state().calls.push(Call::UnmaskIntx);
        Ok(())
    }

    fn set_intx_unmask_fd(&self, fd: &EventFd) -> Result<(), BackendError> {
        let mut state = self.state();
        if state.enabled != Some(IrqIndex::Intx) {
            return Err(BackendError::new("SET_IRQS", "EINVAL: INTx is off"));
        }
        state.calls.push(Call::SetUnmaskFd(fd.as_raw_fd()));
        Ok(())
    }

    fn reset(&self) {
        self.state().calls.push(Call::Reset);
    }
}

/// Records routes and irqfds like KVM would hold them.
#[derive(Default)]
pub struct RouterState {
    next_gsi: u32,
    pub allocated: Vec<u32>,
    pub routes: BTreeMap<u32, MsiMessage>,
    /// GSI -> eventfd of plain irqfds.
    pub irqfds: BTreeMap<u32, RawFd>,
    /// GSI -> (trigger, resample) of level irqfds.
    pub resample_irqfds: BTreeMap<u32, (RawFd, RawFd)>,
    pub released: Vec<u32>,
    pub fail_allocations: bool,
}

#[derive(Default)]
pub struct MockRouter(pub Mutex<RouterState>);

impl MockRouter {
    pub fn state(&self) -> MutexGuard<'_, RouterState> {
        self.0.lock().unwrap()
    }
}

impl InterruptRouter for MockRouter {
    fn allocate_msi_gsi(&self) -> Result<u32, ServiceError> {
        let mut s = self.state();
        if s.fail_allocations {
            return Err(ServiceError("no GSI left".into()));
        }
        let gsi = 24 + s.next_gsi;
        s.next_gsi += 1;
        s.allocated.push(gsi);
        Ok(gsi)
    }

    fn set_msi_route(&self, gsi: u32, msg: MsiMessage) -> Result<(), ServiceError> {
        let mut s = self.state();
        if !s.allocated.contains(&gsi) {
            return Err(ServiceError(format!("GSI {gsi} not allocated")));
        }
        s.routes.insert(gsi, msg);
        Ok(())
    }

    fn release_msi_gsi(&self, gsi: u32) {
        let mut s = self.state();
        s.allocated.retain(|g| *g != gsi);
        s.routes.remove(&gsi);
        s.released.push(gsi);
    }

    fn register_irqfd(&self, evt: &EventFd, gsi: u32) -> Result<(), ServiceError> {
        let mut s = self.state();
        if s.irqfds.insert(gsi, evt.as_raw_fd()).is_some() {
            return Err(ServiceError(format!("GSI {gsi} already has an irqfd")));
        }
        Ok(())
    }

    fn register_irqfd_with_resample(
        &self,
        evt: &EventFd,
        resample: &EventFd,
        gsi: u32,
    ) -> Result<(), ServiceError> {
        let mut s = self.state();
        let fds = (evt.as_raw_fd(), resample.as_raw_fd());
        if s.resample_irqfds.insert(gsi, fds).is_some() {
            return Err(ServiceError(format!("GSI {gsi} already has an irqfd")));
        }
        Ok(())
    }

    fn unregister_irqfd(&self, evt: &EventFd, gsi: u32) -> Result<(), ServiceError> {
        let mut s = self.state();
        let fd = evt.as_raw_fd();
        if s.irqfds.get(&gsi) == Some(&fd) {
            s.irqfds.remove(&gsi);
        } else if s.resample_irqfds.get(&gsi).is_some_and(|r| r.0 == fd) {
            s.resample_irqfds.remove(&gsi);
        } else {
            return Err(ServiceError(format!("no irqfd {fd} on GSI {gsi}")));
        }
        Ok(())
    }
}

/// Records memory slots.
#[derive(Default)]
pub struct MapperState {
    next: u32,
    /// id -> (gpa, size, host address).
    pub slots: BTreeMap<u32, (u64, u64, usize)>,
    pub fail: bool,
    /// Make `unmap` fail (the slot stays).
    pub fail_unmap: bool,
}

#[derive(Default)]
pub struct MockMapper(pub Mutex<MapperState>);

impl MockMapper {
    pub fn state(&self) -> MutexGuard<'_, MapperState> {
        self.0.lock().unwrap()
    }

    /// (gpa, size) of every slot, sorted.
    pub fn ranges(&self) -> Vec<(u64, u64)> {
        let mut v: Vec<_> = self.state().slots.values().map(|s| (s.0, s.1)).collect();
        v.sort();
        v
    }
}

impl MemoryMapper for MockMapper {
    unsafe fn map(
        &self,
        gpa: u64,
        size: u64,
        host_addr: *mut u8,
    ) -> Result<MappingId, ServiceError> {
        let mut s = self.state();
        if s.fail {
            return Err(ServiceError("no free slot".into()));
        }
        s.next += 1;
        let id = s.next;
        s.slots.insert(id, (gpa, size, host_addr as usize));
        Ok(MappingId(id))
    }

    fn unmap(&self, id: MappingId) -> Result<(), ServiceError> {
        let mut s = self.state();
        if s.fail_unmap {
            return Err(ServiceError("slot removal failed".into()));
        }
        s.slots.remove(&id.0);
        Ok(())
    }
}

/// Records IOMMU mappings: iova -> (size, host address).
#[derive(Default)]
pub struct MockDma(pub Mutex<DmaState>);

#[derive(Default)]
pub struct DmaState {
    pub maps: BTreeMap<u64, (u64, usize)>,
    /// Make `unmap` fail (the mapping stays).
    pub fail_unmap: bool,
}

impl MockDma {
    pub fn state(&self) -> MutexGuard<'_, DmaState> {
        self.0.lock().unwrap()
    }

    /// (iova, size) of every mapping, sorted.
    pub fn ranges(&self) -> Vec<(u64, u64)> {
        self.state().maps.iter().map(|(i, m)| (*i, m.0)).collect()
    }
}

impl crate::services::DmaMapper for MockDma {
    unsafe fn map(&self, iova: u64, size: u64, host_addr: *mut u8) -> Result<(), ServiceError> {
        let mut s = self.state();
        let overlaps = s
            .maps
            .iter()
            .any(|(i, m)| *i < iova + size && iova < i + m.0);
        if overlaps {
            return Err(ServiceError(format!(
                "{iova:#x}+{size:#x} overlaps a mapping"
            )));
        }
        s.maps.insert(iova, (size, host_addr as usize));
        Ok(())
    }

    fn unmap(&self, iova: u64, size: u64) -> Result<(), ServiceError> {
        let mut s = self.state();
        if s.fail_unmap {
            return Err(ServiceError("EBUSY".into()));
        }
        match s.maps.get(&iova) {
            Some(m) if m.0 == size => {
                s.maps.remove(&iova);
                Ok(())
            }
            _ => Err(ServiceError(format!("no mapping {iova:#x}+{size:#x}"))),
        }
    }
}
