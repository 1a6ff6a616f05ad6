//! Peer-to-peer: the BARs' mmappable parts DMA-mapped at their guest addresses, following
//! the guest's moves and decode changes, gone at release.

use std::sync::Arc;

use super::super::mock::{MockBackend, MockDma, MSIX_PBA, MSIX_TABLE};
use super::super::VfioPciError;
use super::*;
use crate::pci::{Bar, PciDevice};

fn bar(r: &Rig, index: u8) -> Bar {
    *r.dev.bars().iter().find(|b| b.index == index).unwrap()
}

fn p2p_rig() -> (Rig, Arc<MockDma>) {
    let mut r = rig();
    let dma = Arc::new(MockDma::default());
    r.dev.enable_p2p(dma.clone()).unwrap();
    (r, dma)
}

/// Decode on with BAR0 and BAR2 at these addresses, as the root would tell the device.
fn decode(r: &mut Rig, bar0: u64, bar2: u64) {
    r.dev.assign_bar(0, bar0);
    r.dev.assign_bar(2, bar2);
    r.write16(0x04, 0x0002);
    r.dev.bar_mapped(&bar(r, 0)).unwrap();
    r.dev.bar_mapped(&bar(r, 2)).unwrap();
}

#[test]
fn decoding_bars_are_dma_mapped_where_the_guest_has_them() {
    let (mut r, dma) = p2p_rig();
    assert!(dma.ranges().is_empty(), "nothing before the BARs decode");
    let base = 0x20_0000_0000;
    decode(&mut r, 0xc000_0000, base);
    let want = vec![
        (0xc000_0000, 0x4000),
        (base, 0x4_0000),
        (base + 0x8_0000, 0x2_0000),
        (base + 0xa_2000, 0x5_e000),
    ];
    assert_eq!(dma.ranges(), want, "the same parts as the KVM slots");
    assert_eq!(r.mapper.ranges(), want);
    assert_eq!(r.dev.p2p_ranges(), want);
    // The host side is the device's mmaps, as for the slots; the MSI-X pages are not mapped.
    let slots: Vec<usize> = r.mapper.state().slots.values().map(|s| s.2).collect();
    let hosts: Vec<usize> = dma.state().maps.values().map(|m| m.1).collect();
    assert_eq!(slots, hosts);
    for (iova, size) in dma.ranges() {
        for trap in [base + MSIX_TABLE, base + MSIX_PBA] {
            assert!(trap + 0x1000 <= iova || trap >= iova + size);
        }
    }
}

#[test]
fn mappings_follow_a_bar_move_and_decode_off() {
    let (mut r, dma) = p2p_rig();
    decode(&mut r, 0xc000_0000, 0x20_0000_0000);
    let old = bar(&r, 0);
    r.dev.bar_unmapped(&old);
    assert!(!dma.ranges().iter().any(|m| m.0 == 0xc000_0000));
    r.dev.assign_bar(0, 0xd000_0000);
    r.dev.bar_mapped(&bar(&r, 0)).unwrap();
    assert!(dma.ranges().contains(&(0xd000_0000, 0x4000)));
    assert_eq!(dma.ranges().len(), 4);

    r.dev.bar_unmapped(&bar(&r, 0));
    r.dev.bar_unmapped(&bar(&r, 2));
    assert!(dma.ranges().is_empty(), "decode off: nothing left mapped");
}

#[test]
fn release_unmaps_everything_and_keeps_what_would_not_unmap() {
    let (mut r, dma) = p2p_rig();
    decode(&mut r, 0xc000_0000, 0x20_0000_0000);
    r.dev.release();
    assert!(dma.ranges().is_empty());
    assert!(r.mapper.ranges().is_empty());

    let (mut r, dma) = p2p_rig();
    decode(&mut r, 0xc000_0000, 0x20_0000_0000);
    dma.state().fail_unmap = true;
    r.dev.release();
    assert_eq!(dma.ranges().len(), 4, "the IOMMU still maps them");
    // Their host mappings are kept (stranded) rather than munmapped under the IOMMU.
    assert!(r.dev.direct_bars().stranded_count() == 4);
}

#[test]
fn without_p2p_nothing_is_dma_mapped() {
    let mut r = rig();
    decode(&mut r, 0xc000_0000, 0x20_0000_0000);
    assert!(r.dev.p2p_ranges().is_empty());
    assert_eq!(r.mapper.ranges().len(), 4);
}

#[test]
fn a_device_without_mmappable_bars_refuses_p2p() {
    let backend = MockBackend::standard();
    backend.state().fail_mmap = true;
    let mut r = rig_with(backend, Some(INTX_GSI)).unwrap();
    let err = r.dev.enable_p2p(Arc::new(MockDma::default())).unwrap_err();
    assert!(matches!(err, VfioPciError::NoP2pBars { .. }));
    assert!(err.to_string().contains("drop the p2p option"), "{err}");
}
