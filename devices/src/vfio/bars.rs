//! Direct guest access to BARs: the mmappable parts of each VFIO region (its sparse-mmap
//! areas, or all of it) minus the pages holding the MSI-X table and PBA (which we emulate),
//! mmapped at start-up and mapped into the guest as KVM memory slots while the BAR decodes.
//! Whatever is not mapped traps and is forwarded to the VFIO region (`device.rs`).
//! With peer-to-peer on, the same parts are also DMA-mapped in the IOMMU at the BAR's guest
//! address while it decodes, so other passed-through devices reach them.

use std::sync::Arc;

use crate::pci::{Bar, BarKind};
use crate::services::{DmaMapper, MappingId, MemoryMapper};

use super::backend::{RegionInfo, SparseArea, VfioBackend};
use super::config::BarShadows;
use super::mapping::DeviceMapping;

/// A byte range of a BAR that must trap (relative to the BAR's start).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrapRange {
    pub bar: u8,
    pub offset: u64,
    pub len: u64,
}

/// The page-aligned ranges of a region the guest may access directly: the region's sparse
/// areas (or the whole region) with the pages touching any of `traps` cut out.
pub fn direct_areas(info: &RegionInfo, traps: &[(u64, u64)], page: u64) -> Vec<SparseArea> {
    if !info.mmap || info.size < page {
        return Vec::new();
    }
    let whole = [SparseArea {
        offset: 0,
        size: info.size,
    }];
    let candidates = info.sparse.as_deref().unwrap_or(&whole);
    let mut areas: Vec<SparseArea> = candidates
        .iter()
        .filter_map(|a| {
            let start = a.offset.checked_next_multiple_of(page)?;
            let end = a.offset.checked_add(a.size)?.min(info.size) / page * page;
            (end > start).then(|| SparseArea {
                offset: start,
                size: end - start,
            })
        })
        .collect();
    for &(offset, len) in traps {
        let hole_start = offset / page * page;
        let hole_end = offset
            .saturating_add(len)
            .checked_next_multiple_of(page)
            .unwrap_or(u64::MAX);
        areas = areas
            .into_iter()
            .flat_map(|a| {
                let end = a.offset + a.size;
                let mut pieces = Vec::with_capacity(2);
                if hole_end <= a.offset || hole_start >= end {
                    pieces.push(a);
                } else {
                    if hole_start > a.offset {
                        pieces.push(SparseArea {
                            offset: a.offset,
                            size: hole_start - a.offset,
                        });
                    }
                    if hole_end < end {
                        pieces.push(SparseArea {
                            offset: hole_end,
                            size: end - hole_end,
                        });
                    }
                }
                pieces
            })
            .collect();
    }
    areas.sort_by_key(|a| a.offset);
    areas
}

/// An error unless `range` (what: "table" or "PBA") lies inside a memory BAR.
pub fn check_inside_bar(
    name: &str,
    shadows: &BarShadows,
    what: &'static str,
    range: TrapRange,
) -> Result<(), super::error::VfioPciError> {
    let bar_size = shadows
        .get(range.bar)
        .filter(|b| b.kind() != crate::pci::BarKind::Io)
        .map_or(0, |b| b.size());
    if range.offset + range.len > bar_size {
        return Err(super::error::VfioPciError::MsixOutsideBar {
            device: name.to_string(),
            what,
            bar: range.bar,
            offset: range.offset,
            len: range.len,
            bar_size,
        });
    }
    Ok(())
}

/// One mmapped piece of a BAR and its KVM slot while the BAR decodes.
struct DirectArea {
    offset: u64,
    mapping: DeviceMapping,
    slot: Option<MappingId>,
    /// Where it is DMA-mapped (peer-to-peer on).
    iova: Option<u64>,
}

impl DirectArea {
    /// Nothing refers to the host mapping any more: it may be munmapped.
    fn idle(&self) -> bool {
        self.slot.is_none() && self.iova.is_none()
    }
}

/// The directly accessible parts of one BAR.
struct BarRegion {
    index: u8,
    areas: Vec<DirectArea>,
}

/// Every BAR's directly accessible parts.
pub struct DirectBars {
    name: String,
    memory: Arc<dyn MemoryMapper>,
    page: u64,
    bars: Vec<BarRegion>,
    /// Peer-to-peer: where the direct parts are also DMA-mapped.
    dma: Option<Arc<dyn DmaMapper>>,
    /// Mappings whose slot could not be removed at release: the guest may still reach them,
    /// so they stay mapped until the device itself goes (after the vCPUs have stopped).
    stranded: Vec<DirectArea>,
}

impl DirectBars {
    /// mmap the direct parts of every memory BAR. A failing mmap is not fatal: that part of
    /// the BAR just traps (slowly, but correctly).
    pub fn new(
        name: &str,
        backend: &dyn VfioBackend,
        shadows: &BarShadows,
        traps: &[TrapRange],
        memory: Arc<dyn MemoryMapper>,
        page: u64,
    ) -> Self {
        let mut bars = Vec::new();
        for index in 0..6u8 {
            let Some(bar) = shadows.get(index) else {
                continue;
            };
            if bar.kind() == BarKind::Io {
                continue;
            }
            let info = backend.region_info(u32::from(index));
            let holes: Vec<(u64, u64)> = traps
                .iter()
                .filter(|t| t.bar == index)
                .map(|t| (t.offset, t.len))
                .collect();
            let mut areas = Vec::new();
            for area in direct_areas(&info, &holes, page) {
                match backend.mmap_region(u32::from(index), area.offset, area.size, info.write) {
                    Ok(mapping) => areas.push(DirectArea {
                        offset: area.offset,
                        mapping,
                        slot: None,
                        iova: None,
                    }),
                    Err(e) => crate::limited!(
                        warn,
                        "{name}: BAR {index} {:#x}+{:#x} will trap (slow): {e}",
                        area.offset,
                        area.size
                    ),
                }
            }
            if !areas.is_empty() {
                bars.push(BarRegion { index, areas });
            }
        }
        Self {
            name: name.to_string(),
            memory,
            page,
            bars,
            dma: None,
            stranded: Vec::new(),
        }
    }

    /// DMA-map the direct parts at their guest addresses from now on (peer-to-peer). False
    /// when there is nothing to map: no BAR part could be mmapped.
    pub fn enable_p2p(&mut self, dma: Arc<dyn DmaMapper>) -> bool {
        self.dma = Some(dma);
        !self.bars.is_empty()
    }

    /// The direct parts' guest ranges DMA-mapped now, (iova, size) sorted.
    pub fn p2p_ranges(&self) -> Vec<(u64, u64)> {
        let mut v: Vec<(u64, u64)> = self
            .bars
            .iter()
            .flat_map(|r| &r.areas)
            .filter_map(|a| Some((a.iova?, a.mapping.len())))
            .collect();
        v.sort_unstable();
        v
    }

    /// `bar` decodes at `bar.addr`: put its direct parts into the guest there. A part that
    /// cannot become a slot (none left, say) traps instead: slower, still correct.
    pub fn map(&mut self, bar: &Bar) {
        if !self.unmap(bar.index) {
            return; // still live at the old address: mapping it twice would alias it
        }
        let Some(region) = self.bars.iter_mut().find(|r| r.index == bar.index) else {
            return;
        };
        if !bar.addr.is_multiple_of(self.page) {
            crate::limited!(
                warn,
                "{}: BAR {} at {:#x} is not page-aligned; all of it traps (slow)",
                self.name,
                bar.index,
                bar.addr
            );
            return;
        }
        for area in &mut region.areas {
            let gpa = bar.addr + area.offset;
            let len = area.mapping.len();
            // SAFETY: the mapping lives in `area` until `unmap` removes the slot: `unmap` runs
            // before any mapping is dropped (in `release`, before `bars` goes).
            match unsafe { self.memory.map(gpa, len, area.mapping.as_ptr()) } {
                Ok(id) => area.slot = Some(id),
                Err(e) => crate::limited!(warn,
                    "{}: BAR {}: no direct mapping of {len:#x} bytes at guest {gpa:#x}, it traps (slow): {e}",
                    self.name,
                    bar.index,
                ),
            }
            let Some(dma) = &self.dma else {
                continue;
            };
            // SAFETY: as above: `unmap` removes the DMA mapping before the mapping goes.
            match unsafe { dma.map(gpa, len, area.mapping.as_ptr()) } {
                Ok(()) => {
                    area.iova = Some(gpa);
                    log::debug!(
                        "{}: BAR {} {:#x}+{len:#x} DMA-mapped at {gpa:#x} (peer-to-peer)",
                        self.name,
                        bar.index,
                        area.offset
                    );
                }
                Err(e) => crate::limited!(warn,
                    "{}: BAR {}: {len:#x} bytes at {gpa:#x} not DMA-mapped; other devices cannot reach them: {e}",
                    self.name,
                    bar.index,
                ),
            }
        }
    }

    /// Remove BAR `index`'s slots (the guest then traps on all of it). A slot whose removal
    /// fails is kept, with its mapping, and retried next time; returns false if any is left.
    pub fn unmap(&mut self, index: u8) -> bool {
        let (memory, name) = (&self.memory, &self.name);
        let mut all_gone = true;
        for region in self.bars.iter_mut().filter(|r| r.index == index) {
            for area in &mut region.areas {
                if let (Some(iova), Some(dma)) = (area.iova, &self.dma) {
                    match dma.unmap(iova, area.mapping.len()) {
                        Ok(()) => area.iova = None,
                        Err(e) => {
                            all_gone = false;
                            crate::limited!(warn, "{name}: BAR {index}: DMA unmap at {iova:#x}: {e}; its mapping is kept");
                        }
                    }
                }
                if let Some(id) = area.slot {
                    match memory.unmap(id) {
                        Ok(()) => area.slot = None,
                        Err(e) => {
                            all_gone = false;
                            crate::limited!(warn, "{name}: BAR {index}: {e}; its mapping is kept");
                        }
                    }
                }
            }
        }
        all_gone
    }

    /// Remove every slot and munmap everything whose slot is gone.
    pub fn release(&mut self) {
        for index in 0..6 {
            self.unmap(index);
        }
        for region in self.bars.drain(..) {
            let live = region.areas.into_iter().filter(|a| !a.idle());
            self.stranded.extend(live);
        }
    }

    /// How many host mappings are kept because the guest or the IOMMU may still reach them.
    #[cfg(test)]
    pub fn stranded_count(&self) -> usize {
        self.stranded.len()
    }

    /// The direct ranges of BAR `index` (offset, size), mapped or not.
    #[cfg(test)]
    pub fn areas(&self, index: u8) -> Vec<(u64, u64)> {
        self.bars
            .iter()
            .filter(|r| r.index == index)
            .flat_map(|r| r.areas.iter().map(|a| (a.offset, a.mapping.len())))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: u64 = 0x1000;

    fn info(size: u64, sparse: Option<Vec<(u64, u64)>>) -> RegionInfo {
        RegionInfo {
            size,
            read: true,
            write: true,
            mmap: true,
            sparse: sparse.map(|v| {
                v.into_iter()
                    .map(|(offset, size)| SparseArea { offset, size })
                    .collect()
            }),
            msix_mappable: false,
        }
    }

    fn pairs(v: Vec<SparseArea>) -> Vec<(u64, u64)> {
        v.into_iter().map(|a| (a.offset, a.size)).collect()
    }

    #[test]
    fn whole_region_minus_the_msix_pages() {
        let areas = direct_areas(&info(0x10000, None), &[(0x2000, 0x100), (0x2800, 8)], PAGE);
        assert_eq!(pairs(areas), vec![(0, 0x2000), (0x3000, 0xd000)]);
        let areas = direct_areas(&info(0x10000, None), &[(0x2f00, 0x200)], PAGE);
        assert_eq!(pairs(areas), vec![(0, 0x2000), (0x4000, 0xc000)]);
    }

    #[test]
    fn sparse_areas_are_honoured_and_aligned() {
        let sparse = Some(vec![(0, 0x4000), (0x8000, 0x8000), (0x4100, 0x10)]);
        let areas = direct_areas(&info(0x10000, sparse), &[(0xa000, 0x100)], PAGE);
        assert_eq!(
            pairs(areas),
            vec![(0, 0x4000), (0x8000, 0x2000), (0xb000, 0x5000)]
        );
    }

    #[test]
    fn small_or_unmappable_regions_have_no_direct_areas() {
        assert!(direct_areas(&info(0x800, None), &[], PAGE).is_empty());
        let mut i = info(0x10000, None);
        i.mmap = false;
        assert!(direct_areas(&i, &[], PAGE).is_empty());
        assert!(direct_areas(&info(0x1000, None), &[(0, 0x10)], PAGE).is_empty());
    }
}
