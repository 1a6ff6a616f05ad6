use super::super::mock::{Call, MockBackend, MSIX_PBA, MSIX_TABLE};
use super::*;
use crate::pci::{Bar, PciDevice};

fn bar(r: &Rig, index: u8) -> Bar {
    *r.dev.bars().iter().find(|b| b.index == index).unwrap()
}

fn mmaps(r: &Rig) -> Vec<(u32, u64, u64)> {
    r.backend
        .state()
        .calls
        .iter()
        .filter_map(|c| match c {
            Call::Mmap {
                index,
                offset,
                size,
            } => Some((*index, *offset, *size)),
            _ => None,
        })
        .collect()
}

#[test]
fn mmappable_parts_skip_sparse_holes_and_the_msix_pages() {
    let r = rig();
    assert_eq!(
        mmaps(&r),
        vec![
            (0, 0, 0x4000),
            (2, 0, 0x4_0000),
            (2, 0x8_0000, 0x2_0000),
            (2, 0xa_2000, 0x5_e000),
        ],
        "BAR 1 (I/O) and the ROM are never mmapped; the table and PBA pages trap"
    );
    assert_eq!(r.dev.direct_bars().areas(1), vec![]);
}

#[test]
fn mapped_bars_become_slots_without_the_msix_pages() {
    let mut r = rig();
    r.dev.assign_bar(0, 0xc000_0000);
    r.dev.assign_bar(2, 0x20_0000_0000);
    r.write16(0x04, 0x0002);
    r.dev.bar_mapped(&bar(&r, 0)).unwrap();
    r.dev.bar_mapped(&bar(&r, 2)).unwrap();
    let base = 0x20_0000_0000;
    assert_eq!(
        r.mapper.ranges(),
        vec![
            (0xc000_0000, 0x4000),
            (base, 0x4_0000),
            (base + 0x8_0000, 0x2_0000),
            (base + 0xa_2000, 0x5_e000),
        ]
    );
    let table_page = base + MSIX_TABLE;
    let pba_page = base + MSIX_PBA;
    for (gpa, size) in r.mapper.ranges() {
        assert!(table_page + 0x1000 <= gpa || table_page >= gpa + size);
        assert!(pba_page + 0x1000 <= gpa || pba_page >= gpa + size);
    }
    // Host addresses are the mmaps the device holds.
    assert!(r.mapper.state().slots.values().all(|s| s.2 != 0));
}

#[test]
fn unmapping_and_moving_a_bar_moves_its_slots() {
    let mut r = rig();
    r.dev.assign_bar(2, 0x20_0000_0000);
    r.write16(0x04, 0x0002);
    let old = bar(&r, 2);
    r.dev.bar_mapped(&old).unwrap();
    assert_eq!(r.mapper.ranges().len(), 3);
    r.dev.bar_unmapped(&old);
    assert!(r.mapper.ranges().is_empty());
    r.write32(0x18, 0x4000_0000);
    r.write32(0x1c, 0x30);
    let new = bar(&r, 2);
    assert_eq!(new.addr, 0x30_4000_0000);
    r.dev.bar_mapped(&new).unwrap();
    assert_eq!(r.mapper.ranges()[0], (0x30_4000_0000, 0x4_0000));
    // Mapping again without an unmap first does not leak slots.
    r.dev.bar_mapped(&new).unwrap();
    assert_eq!(r.mapper.ranges().len(), 3);
}

#[test]
fn a_failed_slot_falls_back_to_trapping() {
    let mut r = rig();
    r.dev.assign_bar(2, 0x20_0000_0000);
    r.mapper.state().fail = true;
    r.dev.bar_mapped(&bar(&r, 2)).unwrap();
    assert!(r.mapper.ranges().is_empty());
    r.backend.state().regions.get_mut(&2).unwrap().data[0x10] = 0x99;
    let mut b = [0u8; 1];
    r.dev.bar_read(2, 0x10, &mut b);
    assert_eq!(b, [0x99]);
}

#[test]
fn trapped_accesses_are_forwarded_to_the_regions() {
    let mut r = rig();
    {
        let mut s = r.backend.state();
        s.regions.get_mut(&2).unwrap().data[0x4_0010] = 0x5a;
        s.regions.get_mut(&1).unwrap().data[0x10] = 0x77;
    }
    let mut b = [0u8; 1];
    r.dev.bar_read(2, 0x4_0010, &mut b);
    assert_eq!(b, [0x5a], "a sparse hole traps and reads the region");
    r.dev.bar_read(1, 0x10, &mut b);
    assert_eq!(b, [0x77], "I/O BAR");
    r.forget_calls();
    r.dev.bar_write(1, 0x20, &[0x42]);
    r.dev.bar_write(2, 0xa_0800, &[1, 2, 3, 4]);
    assert_eq!(
        r.backend.state().calls,
        vec![
            Call::RegionWrite {
                index: 1,
                offset: 0x20,
                data: vec![0x42]
            },
            Call::RegionWrite {
                index: 2,
                offset: 0xa_0800,
                data: vec![1, 2, 3, 4]
            },
        ],
        "the rest of the table's page is the device's"
    );
}

#[test]
fn the_rom_is_readable_and_read_only() {
    let mut r = rig();
    let mut b = [0u8; 2];
    r.dev.bar_read(6, 0, &mut b);
    assert_eq!(b, [0x55, 0xaa]);
    r.forget_calls();
    r.dev.bar_write(6, 0, &[0, 0]);
    assert!(r.backend.state().calls.is_empty());
}

#[test]
fn accesses_outside_a_bar_are_ignored() {
    let mut r = rig();
    r.forget_calls();
    let mut b = [0u8; 4];
    r.dev.bar_read(0, 0x3ffe, &mut b);
    assert_eq!(b, [0xff; 4]);
    r.dev.bar_read(3, 0, &mut b);
    assert_eq!(b, [0xff; 4], "upper half of a 64-bit BAR");
    r.dev.bar_write(5, 0, &[1]);
    r.dev.bar_write(0, u64::MAX, &[1]);
    assert!(r.backend.state().calls.is_empty());
}

#[test]
fn a_failed_mmap_falls_back_to_trapping() {
    let backend = MockBackend::standard();
    backend.state().fail_mmap = true;
    let mut r = rig_with(backend, None).unwrap();
    r.dev.assign_bar(0, 0xc000_0000);
    r.write16(0x04, 0x0002);
    r.dev.bar_mapped(&bar(&r, 0)).unwrap();
    assert!(r.mapper.ranges().is_empty());
    let mut b = [0u8; 4];
    r.dev.bar_read(0, 0, &mut b);
    assert_eq!(b, [0; 4], "still reachable, through the region");
}

/// KVM refusing to remove a slot must not leave the guest mapped onto freed memory: the
/// mapping stays (and the slot is retried) instead of being munmapped under the guest.
#[test]
fn a_slot_that_cannot_be_removed_keeps_its_mapping() {
    let mut r = rig();
    r.dev.assign_bar(0, 0xc000_0000);
    r.write16(0x04, 0x0002);
    let b0 = bar(&r, 0);
    r.dev.bar_mapped(&b0).unwrap();
    assert_eq!(r.mapper.ranges(), vec![(0xc000_0000, 0x4000)]);
    let (_, _, host) = *r.mapper.state().slots.values().next().unwrap();

    r.mapper.state().fail_unmap = true;
    r.dev.bar_unmapped(&b0);
    // Moving the BAR cannot map it a second time while the old slot lives.
    let moved = Bar {
        addr: 0xc010_0000,
        ..b0
    };
    r.dev.bar_mapped(&moved).unwrap();
    assert_eq!(r.mapper.ranges(), vec![(0xc000_0000, 0x4000)]);
    r.dev.release();
    assert_eq!(r.mapper.ranges(), vec![(0xc000_0000, 0x4000)]);
    // The host range behind the live slot is still mapped: reading it does not fault.
    // SAFETY: the mapping is kept by the device (stranded) while it lives.
    let _ = unsafe { std::ptr::read_volatile(host as *const u8) };

    // Once removal works again, a released device's slots are gone for good.
    let mut r = rig();
    r.dev.assign_bar(0, 0xc000_0000);
    r.write16(0x04, 0x0002);
    r.dev.bar_mapped(&bar(&r, 0)).unwrap();
    r.dev.release();
    assert_eq!(r.mapper.ranges(), vec![]);
}

mod gpus {
    use std::sync::{Arc, Mutex};

    use super::super::super::mock::{MockBackend, NVIDIA_MIRROR};
    use super::*;
    use crate::pci::allocator::{BarAllocator, PciWindows};
    use crate::pci::root::PciRoot;
    use crate::pci::BarKind;
    use crate::Bus;

    const GIB: u64 = 1 << 30;
    const TIB: u64 = 1 << 40;

    /// Eight GPUs with a 256 GiB BAR each: where the VM puts them (the root, host addresses
    /// preferred) and where `zhitong check` packs them (the same allocator on the same
    /// windows, nothing preferred) agree, fitting from 42 physical address bits.
    #[test]
    fn eight_gpus_with_256_gib_bars_fit_where_check_says() {
        for bits in [41u8, 42, 46] {
            let windows = PciWindows::for_guest(16 * GIB, bits);
            let root = PciRoot::new(Arc::new(Bus::new()), Arc::new(Bus::new()), windows).unwrap();
            let mut check = BarAllocator::new(windows).unwrap();
            let (mut placed, mut checked) = (Vec::new(), 0);
            for i in 0..8 {
                let backend = MockBackend::nvidia_gpu(256 * GIB);
                // A host that put each GPU's 64-bit BARs together above 32 TiB.
                backend.set_host_bar(1, 32 * TIB + i * 512 * GIB);
                backend.set_host_bar(3, 32 * TIB + i * 512 * GIB + 256 * GIB);
                let dev = rig_with(backend, None).unwrap().dev;
                checked += usize::from(check.allocate_device_bars(&dev.bars(), &[]).is_ok());
                let dev = Arc::new(Mutex::new(dev));
                if root.add_device(None, 0, dev.clone()).is_ok() {
                    placed.push(bar(&dev.lock().unwrap(), 1));
                }
            }
            assert_eq!(
                placed.len(),
                checked,
                "{bits} bits: check and placement agree"
            );
            assert_eq!(placed.len() == 8, bits >= 42, "{bits} bits");
            let window = windows.mmio64.unwrap();
            for (i, b) in placed.iter().enumerate() {
                assert!(b.prefetchable && b.kind == BarKind::Mem64);
                assert!(window.contains(b.addr, b.size) && b.addr % b.size == 0);
                if bits == 46 {
                    assert_eq!(
                        b.addr,
                        32 * TIB + i as u64 * 512 * GIB,
                        "the host's address"
                    );
                }
            }
        }
    }

    fn bar(dev: &VfioPciDevice, index: u8) -> Bar {
        *dev.bars().iter().find(|b| b.index == index).unwrap()
    }

    /// A BAR moved through the config mirror moves on the bus too, as after a config write.
    #[test]
    fn a_bar_moved_through_the_mirror_moves_on_the_bus() {
        let mmio = Arc::new(Bus::new());
        let windows = PciWindows::for_guest(16 * GIB, 46);
        let root = PciRoot::new(Arc::new(Bus::new()), mmio.clone(), windows).unwrap();
        let dev = rig_with(MockBackend::nvidia_gpu(256 << 20), None)
            .unwrap()
            .dev;
        let dev = Arc::new(Mutex::new(dev));
        let bdf = root.add_device(None, 0, dev.clone()).unwrap();
        root.config_write(bdf, 0x04, &[0x02, 0x00]);
        let (bar0, old) = {
            let d = dev.lock().unwrap();
            (bar(&d, 0).addr, bar(&d, 1).addr)
        };
        let new = windows.mmio64.unwrap().start + 4 * GIB;
        let mut b = [0u8; 4];
        assert!(mmio.read(old, &mut b) && !mmio.read(new, &mut b));
        let mirror = bar0 + NVIDIA_MIRROR;
        assert!(mmio.write(mirror + 0x14, &(new as u32 | 0xc).to_le_bytes()));
        assert!(mmio.write(mirror + 0x18, &((new >> 32) as u32).to_le_bytes()));
        assert_eq!(bar(&dev.lock().unwrap(), 1).addr, new);
        assert!(!mmio.read(old, &mut b), "gone from the old address");
        assert!(mmio.read(new, &mut b), "on the bus at the new one");
    }
}
