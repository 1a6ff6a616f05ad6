use super::*;

fn ids() -> PciIds {
    PciIds {
        vendor_id: 0x1af4,
        device_id: 0x1234,
        revision: 2,
        class: 0x03,
        subclass: 0x00,
        prog_if: 0x00,
        subsystem_vendor_id: 0x1af4,
        subsystem_id: 0x1100,
    }
}

fn write32(cs: &mut ConfigSpace, offset: u16, value: u32) {
    cs.write(offset, &value.to_le_bytes());
}

/// The size the guest computes from an all-ones write, as Linux does.
fn size_by_probing(cs: &mut ConfigSpace, offset: u16, addr_mask: u32) -> u32 {
    let saved = cs.read(offset);
    write32(cs, offset, 0xffff_ffff);
    let probed = cs.read(offset);
    write32(cs, offset, saved);
    assert_eq!(cs.read(offset), saved, "restoring the BAR");
    !(probed & addr_mask) + 1
}

#[test]
fn header_holds_the_ids_and_read_only_fields_stay() {
    let mut cs = ConfigSpace::new(&ids());
    assert_eq!(cs.read(VENDOR_ID), 0x1234_1af4);
    assert_eq!(cs.read(REVISION_ID), 0x0300_0002);
    assert_eq!(cs.read(SUBSYSTEM_VENDOR_ID), 0x1100_1af4);
    write32(&mut cs, VENDOR_ID, 0);
    write32(&mut cs, REVISION_ID, 0);
    cs.write(HEADER_TYPE, &[0xff]);
    assert_eq!(cs.read(VENDOR_ID), 0x1234_1af4);
    assert_eq!(cs.read(REVISION_ID), 0x0300_0002);
    assert_eq!(cs.get_u8(HEADER_TYPE), 0);
}

#[test]
fn command_keeps_only_its_writable_bits() {
    let mut cs = ConfigSpace::new(&ids());
    cs.write(COMMAND, &0xffffu16.to_le_bytes());
    assert_eq!(
        cs.command(),
        COMMAND_IO | COMMAND_MEMORY | COMMAND_BUS_MASTER | COMMAND_INTX_DISABLE
    );
    cs.write(COMMAND, &[0]);
    assert_eq!(
        cs.command(),
        COMMAND_INTX_DISABLE,
        "byte write leaves the high byte"
    );
}

#[test]
fn status_error_bits_are_write_one_to_clear() {
    let mut cs = ConfigSpace::new(&ids());
    cs.set_u16(STATUS, 0xf900 | STATUS_INTERRUPT);
    cs.write(STATUS, &0x2000u16.to_le_bytes());
    assert_eq!(cs.get_u16(STATUS), 0xd900 | STATUS_INTERRUPT);
    // A dword write to command+status that rewrites status with 0 clears nothing.
    write32(&mut cs, COMMAND, u32::from(COMMAND_MEMORY));
    assert_eq!(cs.get_u16(STATUS), 0xd900 | STATUS_INTERRUPT);
    assert_eq!(cs.command(), COMMAND_MEMORY);
    cs.write(STATUS, &0xffffu16.to_le_bytes());
    assert_eq!(cs.get_u16(STATUS), STATUS_INTERRUPT, "non-W1C bits stay");
}

#[test]
fn io_bar_sizes_and_keeps_its_space_bit() {
    let mut cs = ConfigSpace::new(&ids());
    cs.add_bar(0, BarKind::Io, true, 0x20).unwrap();
    assert_eq!(cs.read(BAR0), 1);
    assert_eq!(size_by_probing(&mut cs, BAR0, !0x3), 0x20);
    write32(&mut cs, BAR0, 0xffff_ffff);
    assert_eq!(cs.read(BAR0), 0xffff_ffe1);
    write32(&mut cs, BAR0, 0x1234);
    assert_eq!(cs.read(BAR0), 0x1221, "bits below the size read as zero");
    let bar = cs.bars()[0];
    assert_eq!(
        (bar.kind, bar.addr, bar.prefetchable),
        (BarKind::Io, 0x1220, false)
    );
}

#[test]
fn mem32_bar_sizes_with_type_and_prefetch_bits() {
    let mut cs = ConfigSpace::new(&ids());
    cs.add_bar(1, BarKind::Mem32, true, 0x10_0000).unwrap();
    let off = bar_offset(1);
    assert_eq!(size_by_probing(&mut cs, off, !0xf), 0x10_0000);
    write32(&mut cs, off, 0xffff_ffff);
    assert_eq!(cs.read(off), 0xfff0_0008);
    write32(&mut cs, off, 0xc012_345f);
    assert_eq!(cs.read(off), 0xc010_0008);
    // Byte writes merge into the register.
    cs.write(off + 3, &[0xd0]);
    assert_eq!(cs.read(off), 0xd010_0008);
    assert_eq!(cs.bars()[0].addr, 0xd010_0000);
}

#[test]
fn mem64_bar_takes_two_slots_and_sizes_per_half() {
    let mut cs = ConfigSpace::new(&ids());
    let size = 32u64 << 30;
    cs.add_bar(2, BarKind::Mem64, true, size).unwrap();
    assert!(cs.add_bar(3, BarKind::Mem32, false, 0x1000).is_err());
    let (lo, hi) = (bar_offset(2), bar_offset(3));
    assert_eq!(cs.read(lo), 0xc, "64-bit, prefetchable");
    write32(&mut cs, lo, 0xffff_ffff);
    write32(&mut cs, hi, 0xffff_ffff);
    assert_eq!(
        cs.read(lo),
        0xc,
        "no address bits below 4 GiB for a 32 GiB BAR"
    );
    assert_eq!(cs.read(hi), 0xffff_fff8);
    let probed = u64::from(cs.read(lo) & !0xf) | (u64::from(cs.read(hi)) << 32);
    assert_eq!(!probed + 1, size);
    write32(&mut cs, lo, 0);
    write32(&mut cs, hi, 0x10);
    let bars = cs.bars();
    assert_eq!(bars.len(), 1, "reported once, at its lower index");
    assert_eq!((bars[0].index, bars[0].addr), (2, 0x10_0000_0000));

    // A small 64-bit BAR has address bits in both halves.
    let mut cs = ConfigSpace::new(&ids());
    cs.add_bar(0, BarKind::Mem64, false, 0x4000).unwrap();
    write32(&mut cs, BAR0, 0xffff_ffff);
    assert_eq!(cs.read(BAR0), 0xffff_c004);
    write32(&mut cs, BAR0 + 4, 0xffff_ffff);
    assert_eq!(cs.read(BAR0 + 4), 0xffff_ffff);
}

#[test]
fn rom_bar_sizes_and_has_its_own_enable() {
    let mut cs = ConfigSpace::new(&ids());
    cs.add_bar(ROM_BAR_INDEX, BarKind::Rom, false, 0x2_0000)
        .unwrap();
    write32(&mut cs, ROM_BAR, 0xffff_f800);
    assert_eq!(cs.read(ROM_BAR), 0xfffe_0000, "enable stays off");
    write32(&mut cs, ROM_BAR, 0xffff_ffff);
    assert_eq!(cs.read(ROM_BAR), 0xfffe_0001, "bits 10:1 read-only zero");
    write32(&mut cs, ROM_BAR, 0xc004_0001);
    cs.write(COMMAND, &[COMMAND_MEMORY as u8]);
    let rom = cs.bars()[0];
    assert_eq!(
        (rom.index, rom.kind, rom.addr),
        (6, BarKind::Rom, 0xc004_0000)
    );
    assert!(rom.decoding);
    write32(&mut cs, ROM_BAR, 0xc004_0000);
    assert!(!cs.bars()[0].decoding, "ROM enable bit off");
}

#[test]
fn decoding_follows_command_bits_and_address() {
    let mut cs = ConfigSpace::new(&ids());
    cs.add_bar(0, BarKind::Io, false, 0x10).unwrap();
    cs.add_bar(1, BarKind::Mem32, false, 0x1000).unwrap();
    cs.assign_bar(0, 0x1000);
    cs.assign_bar(1, 0xc000_0000);
    let decoding = |cs: &ConfigSpace| cs.bars().iter().map(|b| b.decoding).collect::<Vec<_>>();
    assert_eq!(decoding(&cs), [false, false]);
    cs.write(COMMAND, &[COMMAND_MEMORY as u8]);
    assert_eq!(decoding(&cs), [false, true]);
    cs.write(COMMAND, &[(COMMAND_MEMORY | COMMAND_IO) as u8]);
    assert_eq!(decoding(&cs), [true, true]);
    write32(&mut cs, bar_offset(1), 0);
    assert_eq!(decoding(&cs), [true, false], "address 0 is unassigned");
}

#[test]
fn absent_bars_read_zero_and_ignore_writes() {
    let mut cs = ConfigSpace::new(&ids());
    for index in 0..BAR_COUNT {
        write32(&mut cs, bar_offset(index), 0xffff_ffff);
        assert_eq!(cs.read(bar_offset(index)), 0);
    }
    write32(&mut cs, ROM_BAR, 0xffff_ffff);
    assert_eq!(cs.read(ROM_BAR), 0);
    assert!(cs.bars().is_empty());
}

#[test]
fn bad_bars_are_refused() {
    let mut cs = ConfigSpace::new(&ids());
    assert!(cs.add_bar(5, BarKind::Mem64, false, 0x1000).is_err());
    assert!(cs.add_bar(6, BarKind::Mem32, false, 0x1000).is_err());
    assert!(cs.add_bar(0, BarKind::Rom, false, 0x1000).is_err());
    assert!(cs.add_bar(0, BarKind::Mem32, false, 0x3000).is_err());
    assert!(cs.add_bar(0, BarKind::Mem32, false, 1 << 32).is_err());
    cs.add_bar(0, BarKind::Mem32, false, 1).unwrap();
    assert_eq!(cs.bar(0).unwrap().size(), 16, "rounded up to the minimum");
    assert!(cs.add_bar(0, BarKind::Io, false, 4).is_err(), "taken");
}

#[test]
fn capabilities_form_a_chain() {
    let mut cs = ConfigSpace::new(&ids());
    assert_eq!(cs.get_u16(STATUS) & STATUS_CAPABILITIES_LIST, 0);
    let pm = cs
        .add_capability(CAP_ID_PM, &[0x03, 0x00, 0, 0, 0, 0])
        .unwrap();
    let msi = cs.add_capability(CAP_ID_MSI, &[0; 22]).unwrap();
    assert_eq!(pm, CAPABILITIES_START);
    assert_eq!(msi, 0x48);
    assert_ne!(cs.get_u16(STATUS) & STATUS_CAPABILITIES_LIST, 0);
    assert_eq!(cs.get_u8(CAPABILITY_POINTER), pm as u8);
    assert_eq!(cs.read(pm) & 0xffff, u32::from(CAP_ID_PM) | (0x48 << 8));
    assert_eq!(cs.read(msi) & 0xffff, u32::from(CAP_ID_MSI));
    // Read-only until opened.
    cs.write(msi + 2, &[0xff]);
    assert_eq!(cs.get_u8(msi + 2), 0);
    cs.set_write_mask(msi + 2, &[0x01]);
    cs.write(msi + 2, &[0xff]);
    assert_eq!(cs.get_u8(msi + 2), 1);
    assert!(cs.add_capability(CAP_ID_PCIE, &[0; 200]).is_err());
}

#[test]
fn extended_capabilities_start_at_0x100_and_chain() {
    let mut cs = ConfigSpace::new(&ids());
    assert_eq!(cs.read(EXT_CAPABILITIES_START), 0);
    let first = cs.add_extended_capability(0x0b, 1, &[1, 2, 3, 4]).unwrap();
    let second = cs.add_extended_capability(0x15, 1, &[]).unwrap();
    assert_eq!((first, second), (0x100, 0x108));
    assert_eq!(cs.read(first), 0x1081_000b);
    assert_eq!(cs.read(first + 4), 0x0403_0201);
    assert_eq!(cs.read(second), 0x0001_0015);
    assert_eq!(cs.read(0xffc), 0);
    assert!(cs.add_extended_capability(1, 1, &[0; 4000]).is_err());
}

#[test]
fn bar_shadow_alone_serves_a_passed_through_bar() {
    let (kind, pref) = parse_bar_register(0x0000_000c);
    assert_eq!((kind, pref), (BarKind::Mem64, true));
    assert_eq!(parse_bar_register(0x0000_0001).0, BarKind::Io);
    assert_eq!(parse_bar_register(0xfe00_0000), (BarKind::Mem32, false));
    let mut bar = BarShadow::new(kind, pref, 256 << 20).unwrap();
    bar.write(BarHalf::Lower, 0xffff_ffff);
    bar.write(BarHalf::Upper, 0xffff_ffff);
    assert_eq!(bar.read(BarHalf::Lower), 0xf000_000c);
    assert_eq!(bar.read(BarHalf::Upper), 0xffff_ffff);
    bar.set_addr(0x40_1000_0000);
    assert_eq!(bar.read(BarHalf::Lower), 0x1000_000c);
    assert_eq!(bar.read(BarHalf::Upper), 0x40);
    assert!(!bar.decoding(COMMAND_IO));
    assert!(bar.decoding(COMMAND_MEMORY));
    assert_eq!(merge_dword(0x1122_3344, 2, &[0xaa, 0xbb]), 0xbbaa_3344);
    assert_eq!(merge_dword(0x1122_3344, 3, &[0xaa, 0xbb]), 0xaa22_3344);
    let io = BarShadow::new(BarKind::Io, false, 0x100).unwrap();
    assert_eq!(io.read(BarHalf::Upper), 0);
}
