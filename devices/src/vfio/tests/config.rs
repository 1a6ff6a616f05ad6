use super::super::mock::{Call, MockBackend, MSIX_CAP, MSI_CAP, VENDOR_CAP};
use super::*;
use crate::pci::config::{COMMAND_IO, COMMAND_MEMORY};
use crate::pci::{BarKind, PciDevice};

#[test]
fn passthrough_registers_come_from_the_device() {
    let mut r = rig();
    assert_eq!(r.read(0x00), 0x1eb8_10de);
    assert_eq!(r.read(0x08), 0x0302_00a1);
    assert_eq!(r.read(0x2c), 0x1234_10de);
    assert_eq!(r.read(VENDOR_CAP), 0xaa08_9009);
    assert_eq!(r.read(0x160), 0x0001_0018, "extended config space");
    r.backend
        .state()
        .set_config_u32(VENDOR_CAP + 4, 0x1122_3344);
    assert_eq!(r.read(VENDOR_CAP + 4), 0x1122_3344, "read live, not cached");
    r.forget_calls();
    r.write32(VENDOR_CAP + 4, 0x5566_7788);
    assert_eq!(
        r.backend.state().config_writes(),
        vec![(
            u64::from(VENDOR_CAP + 4),
            0x5566_7788u32.to_le_bytes().to_vec()
        )]
    );
}

#[test]
fn the_guest_meets_the_device_without_decoding_or_bus_mastering() {
    let backend = MockBackend::standard();
    // What a host may leave on: I/O, memory, bus master, and INTx disabled.
    backend.state().config_mut()[4..6].copy_from_slice(&0x0407u16.to_le_bytes());
    let mut r = rig_with(backend, Some(INTX_GSI)).unwrap();
    r.dev.assign_bar(0, 0xe000_0000);
    assert_eq!(r.read(0x04) & 0xffff, 0x0400, "only INTx disable is kept");
    assert_eq!(r.backend.state().config()[4..6], 0x0400u16.to_le_bytes());
    assert!(
        r.dev.bars().iter().all(|b| !b.decoding),
        "no BAR decodes before the guest enables it"
    );
    r.write16(0x04, COMMAND_MEMORY);
    assert!(r.dev.bars().iter().any(|b| b.decoding));
}

#[test]
fn the_capability_chain_is_the_devices() {
    let mut r = rig();
    assert_eq!(r.read(0x34) & 0xff, 0x40);
    assert_eq!(r.read(0x40) & 0xffff, 0x5001);
    assert_eq!(r.read(MSI_CAP) & 0xffff, 0x7005);
    assert_eq!(r.read(MSIX_CAP) & 0xffff, 0x8011);
}

#[test]
fn resizable_bar_is_unlinked_from_the_extended_chain() {
    let mut r = rig();
    assert_eq!(r.read(0x100), 0x1601_0001, "AER now points at LTR");
    assert_eq!(r.read(0x140), 0);
    assert_eq!(r.read(0x144), 0);
    r.forget_calls();
    r.write32(0x148, 0x0000_0500);
    r.write32(0x100, 0);
    assert!(r.backend.state().config_writes().is_empty());
    r.write32(0x104, 0);
    assert_eq!(
        r.backend.state().config_writes().len(),
        1,
        "AER's body passes"
    );
}

#[test]
fn bars_start_unassigned_with_the_devices_type_bits() {
    let mut r = rig();
    assert_eq!(r.read(0x10), 0x0);
    assert_eq!(r.read(0x14), 0x1);
    assert_eq!(r.read(0x18), 0xc);
    assert_eq!(r.read(0x1c), 0x0);
    assert_eq!(r.read(0x20), 0x0);
    assert_eq!(r.read(0x30), 0x0);
    let bars = r.dev.bars();
    let shape: Vec<_> = bars
        .iter()
        .map(|b| (b.index, b.kind, b.prefetchable, b.size))
        .collect();
    assert_eq!(
        shape,
        vec![
            (0, BarKind::Mem32, false, 0x4000),
            (1, BarKind::Io, false, 0x100),
            (2, BarKind::Mem64, true, 0x10_0000),
            (6, BarKind::Rom, false, 0x1_0000),
        ]
    );
}

#[test]
fn bar_sizing_and_moves_stay_in_the_shadow() {
    let mut r = rig();
    r.forget_calls();
    for off in [0x10, 0x14, 0x18, 0x1c, 0x20, 0x24, 0x30] {
        r.write32(off, 0xffff_ffff);
    }
    assert_eq!(r.read(0x10), 0xffff_c000);
    assert_eq!(r.read(0x14), 0xffff_ff01);
    assert_eq!(r.read(0x18), 0xfff0_000c);
    assert_eq!(r.read(0x1c), 0xffff_ffff);
    assert_eq!(r.read(0x20), 0);
    assert_eq!(r.read(0x30), 0xffff_0001);
    r.write32(0x18, 0x8000_0000);
    r.write32(0x1c, 0x10);
    r.write16(0x10, 0x0000);
    r.write16(0x12, 0xc000);
    r.write32(0x30, 0xc010_0000);
    let addrs: Vec<_> = r.dev.bars().iter().map(|b| (b.index, b.addr)).collect();
    assert_eq!(addrs[0], (0, 0xc000_0000));
    assert_eq!(addrs[2], (2, 0x10_8000_0000));
    assert_eq!(addrs[3], (6, 0xc010_0000));
    assert!(
        r.backend.state().config_writes().is_empty(),
        "BAR writes never reach the device"
    );
    assert_eq!(r.backend.state().config_u32(0x18), 0xd000_000c);
}

#[test]
fn assign_bar_sets_what_firmware_would() {
    let mut r = rig();
    r.dev.assign_bar(0, 0xc000_0000);
    r.dev.assign_bar(2, 0x20_0000_0000);
    r.dev.assign_bar(3, 0x1000); // upper half: refused
    r.dev.assign_bar(4, 0x1000); // no such BAR: refused
    assert_eq!(r.read(0x10), 0xc000_0000);
    assert_eq!(r.read(0x18), 0x0000_000c);
    assert_eq!(r.read(0x1c), 0x20);
    assert_eq!(r.read(0x20), 0);
}

#[test]
fn decoding_follows_the_command_register() {
    let mut r = rig();
    r.dev.assign_bar(0, 0xc000_0000);
    r.dev.assign_bar(1, 0x2000);
    r.dev.assign_bar(2, 0x20_0000_0000);
    r.dev.assign_bar(6, 0xc010_0000);
    let decoding = |r: &Rig| -> Vec<u8> {
        r.dev
            .bars()
            .iter()
            .filter(|b| b.decoding)
            .map(|b| b.index)
            .collect()
    };
    assert!(decoding(&r).is_empty());
    r.forget_calls();
    r.write16(0x04, COMMAND_MEMORY | 1 << 2);
    assert_eq!(decoding(&r), vec![0, 2]);
    assert_eq!(
        r.backend.state().config_writes(),
        vec![(4, vec![0x06, 0x00])],
        "the command register reaches the device"
    );
    r.dev.config_write(0x04, &[COMMAND_IO as u8]);
    assert_eq!(decoding(&r), vec![1]);
    r.write32(0x04, u32::from(COMMAND_IO | COMMAND_MEMORY));
    r.write32(0x30, 0xc010_0001);
    assert_eq!(decoding(&r), vec![0, 1, 2, 6]);
    // A write to the status half alone leaves the command bits.
    r.dev.config_write(0x06, &[0xff, 0xff]);
    assert_eq!(decoding(&r), vec![0, 1, 2, 6]);
}

#[test]
fn interrupt_line_is_virtual_and_reports_the_gsi() {
    let mut r = rig();
    assert_eq!(r.read(0x3c) & 0xffff, 0x010a, "INTA on GSI 10");
    r.forget_calls();
    r.dev.config_write(0x3c, &[0x05]);
    r.dev.config_write(0x3d, &[0x03]);
    assert_eq!(r.read(0x3c) & 0xffff, 0x0105);
    assert!(r.backend.state().config_writes().is_empty());
    assert_eq!(r.backend.state().config()[0x3c], 0x0b);
}

#[test]
fn msi_and_msix_registers_never_reach_the_device() {
    let mut r = rig();
    r.forget_calls();
    r.write32(MSI_CAP + 4, 0xfee0_0000);
    r.write32(MSI_CAP + 8, 0);
    r.write16(MSI_CAP + 0xc, 0x41);
    r.write32(MSI_CAP + 0x10, 0xff);
    r.write16(MSIX_CAP + 2, 0xc000);
    r.write32(MSIX_CAP + 4, 0x1234_5678);
    let writes = r.backend.state().config_writes();
    assert!(writes.is_empty(), "{writes:x?}");
    assert_eq!(
        r.read(MSIX_CAP + 4),
        0xa_0002,
        "table offset/BIR is read-only"
    );
    assert_eq!(r.read(MSI_CAP + 4), 0xfee0_0000);
    assert_eq!(r.read(MSI_CAP + 0xc), 0x41);
}

#[test]
fn malformed_config_writes_are_ignored() {
    let mut r = rig();
    r.forget_calls();
    r.dev.config_write(0x41, &[1, 2]);
    r.dev.config_write(0x42, &[1, 2, 3, 4]);
    r.dev.config_write(0x40, &[1, 2, 3]);
    r.dev.config_write(0x40, &[]);
    r.dev.config_write(0x1000, &[1]);
    assert!(r.backend.state().calls.is_empty());
}

#[test]
fn extended_space_beyond_the_region_reads_zero() {
    let backend = MockBackend::standard();
    backend.state().regions.get_mut(&7).unwrap().info.size = 256;
    let mut r = rig_with(backend, Some(INTX_GSI)).unwrap();
    assert_eq!(r.read(0x100), 0);
    r.forget_calls();
    r.write32(0x100, 1);
    assert!(r.backend.state().calls.is_empty());
}

#[test]
fn construction_resets_the_device_and_checks_it() {
    let r = rig();
    assert_eq!(r.backend.state().calls[0], Call::Reset);

    let dead = MockBackend::standard();
    dead.state().set_config_u32(0, 0xffff_ffff);
    let err = rig_with(dead, None).err().unwrap().to_string();
    assert!(err.starts_with("0000:01:00.0: "), "{err}");
    assert!(err.contains("does not respond"), "{err}");

    let bad_msix = MockBackend::standard();
    bad_msix.state().set_config_u32(MSIX_CAP + 8, 0x10_0000 | 2);
    let err = rig_with(bad_msix, None).err().unwrap().to_string();
    assert!(
        err.contains("MSI-X PBA") && err.contains("outside the BAR"),
        "{err}"
    );

    let no_config = MockBackend::standard();
    no_config.state().regions.remove(&7);
    let err = rig_with(no_config, None).err().unwrap().to_string();
    assert!(err.contains("no PCI config region"), "{err}");
}

#[test]
fn the_host_addresses_of_the_bars_are_offered_as_preferences() {
    let r = rig();
    // The mock's registers: BAR0 mem32 at 0xfe000000, BAR1 I/O at 0xe000, BAR2/3 mem64 at
    // 0x1_d000_0000, the ROM at 0xfe100000.
    assert_eq!(
        r.dev.preferred_bar_addresses(),
        vec![
            (0, 0xfe00_0000),
            (1, 0xe000),
            (2, 0x1_d000_0000),
            (6, 0xfe10_0000)
        ]
    );
}

/// The guest's capability list from 0x34: (offset, id).
fn guest_caps(r: &mut Rig) -> Vec<(u16, u8)> {
    let mut list = Vec::new();
    let mut ptr = (r.read(0x34) & 0xfc) as u16;
    while ptr >= 0x40 && list.len() < 48 {
        let header = r.read(ptr);
        list.push((ptr, header as u8));
        ptr = ((header >> 8) & 0xfc) as u16;
    }
    list
}

#[test]
fn a_gpudirect_clique_heads_the_capability_list() {
    let mut r = rig();
    let before = guest_caps(&mut r);
    r.dev.add_gpudirect_clique(9).unwrap();
    let after = guest_caps(&mut r);
    assert_eq!(
        after[0],
        (0xd4, 0x09),
        "the vendor capability at 0xd4 first"
    );
    assert_eq!(after[1..], before[..], "then the device's own list");
    assert_eq!(r.read(0xd4), u32::from_le_bytes([0x09, 0x40, 8, b'P']));
    assert_eq!(r.read(0xd8), u32::from_le_bytes([b'2', b'P', 9 << 3, 0]));
    assert_ne!(r.read(0x04) & 1 << 20, 0, "status says there is a list");
    // Read-only: the guest cannot change it, and the device never sees the writes.
    r.forget_calls();
    r.write32(0xd8, 0);
    assert_eq!(r.read(0xd8) >> 16 & 0xff, 9 << 3);
    assert!(r.backend.state().config_writes().is_empty());
}

#[test]
fn a_clique_on_another_vendor_is_refused() {
    let backend = MockBackend::standard();
    backend.state().config_mut()[0..2].copy_from_slice(&0x1002u16.to_le_bytes());
    let mut r = rig_with(backend, Some(INTX_GSI)).unwrap();
    let err = r.dev.add_gpudirect_clique(1).unwrap_err();
    assert!(
        err.to_string()
            .contains("vendor is 1002; drop the clique option"),
        "{err}"
    );
    assert_eq!(r.read(0x34) & 0xff, 0x40, "the list is the device's");
}
