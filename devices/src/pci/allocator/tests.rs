use super::*;

const GIB: u64 = 1 << 30;
const MMIO32: Window = Window::new(0xc000_0000, 0x2000_0000);
/// `arch::layout::pci_mmio64_window(4 << 30, 46)`: from 64 GiB to 2^46.
const MMIO64_46_BITS: Window = Window::new(64 * GIB, (1 << 46) - 64 * GIB);

fn windows(mmio64: Option<Window>) -> PciWindows {
    PciWindows {
        io: Some(Window::new(0x1000, 0xf000)),
        mmio32: MMIO32,
        mmio64,
    }
}

fn bar(index: u8, kind: BarKind, size: u64) -> Bar {
    Bar {
        index,
        kind,
        prefetchable: false,
        size,
        addr: 0,
        decoding: false,
    }
}

fn inside(w: Window, addr: u64, size: u64) -> bool {
    w.contains(addr, size)
}

#[test]
fn gpu_sized_64bit_bars_fit_the_64bit_window_aligned() {
    let mut alloc = BarAllocator::new(windows(Some(MMIO64_46_BITS))).unwrap();
    let bars = [
        bar(0, BarKind::Mem32, 16 << 20),
        bar(1, BarKind::Mem64, 32 * GIB),
        bar(3, BarKind::Mem64, 128 * GIB),
        bar(5, BarKind::Io, 0x80),
        bar(ROM_BAR_INDEX, BarKind::Rom, 512 << 10),
    ];
    let got = alloc.allocate_device_bars(&bars, &[]).unwrap();
    assert_eq!(got.iter().map(|g| g.0).collect::<Vec<_>>(), [0, 1, 3, 5, 6]);
    for (&(index, addr), b) in got.iter().zip(&bars) {
        assert_eq!(index, b.index);
        assert_eq!(
            addr % b.size,
            0,
            "BAR {index} at {addr:#x} naturally aligned"
        );
    }
    let addr = |i: u8| got.iter().find(|g| g.0 == i).unwrap().1;
    assert!(inside(MMIO64_46_BITS, addr(1), 32 * GIB));
    assert!(inside(MMIO64_46_BITS, addr(3), 128 * GIB));
    // Biggest first: the 128 GiB BAR takes the first 128 GiB boundary, the 32 GiB one
    // the space below it.
    assert_eq!(addr(3), 128 * GIB);
    assert_eq!(addr(1), 64 * GIB);
    assert!(inside(MMIO32, addr(0), 16 << 20));
    assert!(inside(MMIO32, addr(6), 512 << 10));
    assert!((0x1000..0x10000).contains(&addr(5)));
}

#[test]
fn small_memory_bars_get_a_page_each() {
    let mut alloc = BarAllocator::new(windows(None)).unwrap();
    let bars = [bar(0, BarKind::Mem32, 256), bar(1, BarKind::Mem32, 256)];
    let got = alloc.allocate_device_bars(&bars, &[]).unwrap();
    assert_eq!(got, [(0, 0xc000_0000), (1, 0xc000_1000)]);
    let got = alloc
        .allocate_device_bars(&[bar(2, BarKind::Mem32, 0x2000)], &[])
        .unwrap();
    assert_eq!(got, [(2, 0xc000_2000)]);
}

#[test]
fn bars_pack_biggest_first_without_holes() {
    let mut alloc = BarAllocator::new(windows(None)).unwrap();
    let bars = [
        bar(0, BarKind::Mem32, 0x1000),
        bar(1, BarKind::Mem32, 0x4000),
        bar(2, BarKind::Mem32, 0x2000),
        bar(3, BarKind::Mem32, 0x1000),
    ];
    let got = alloc.allocate_device_bars(&bars, &[]).unwrap();
    assert_eq!(
        got,
        [
            (0, 0xc000_6000),
            (1, 0xc000_0000),
            (2, 0xc000_4000),
            (3, 0xc000_7000)
        ]
    );
}

#[test]
fn io_bars_avoid_the_config_ports() {
    let mut alloc = BarAllocator::new(PciWindows {
        io: Some(Window::new(0xc00, 0x200)),
        ..windows(None)
    })
    .unwrap();
    let bars: Vec<Bar> = (0..6).map(|i| bar(i, BarKind::Io, 0x100)).collect();
    let got = alloc.allocate_device_bars(&bars[..1], &[]).unwrap();
    assert_eq!(got, [(0, 0xd00)], "0xc00-0xcff holds 0xcf8-0xcff");
    let err = alloc.allocate_device_bars(&bars[1..2], &[]).unwrap_err();
    assert!(
        matches!(err, AllocError::NoSpace { window: "I/O", .. }),
        "{err}"
    );
}

#[test]
fn mem64_falls_back_to_the_32bit_window() {
    let mut alloc = BarAllocator::new(windows(None)).unwrap();
    let got = alloc
        .allocate_device_bars(&[bar(0, BarKind::Mem64, 256 << 20)], &[])
        .unwrap();
    assert_eq!(got, [(0, 0xc000_0000)]);

    // With a small 64-bit window: the first fills it, the second goes below 4 GiB.
    let small = Window::new(64 * GIB, GIB);
    let mut alloc = BarAllocator::new(windows(Some(small))).unwrap();
    let bars = [bar(0, BarKind::Mem64, GIB), bar(2, BarKind::Mem64, 1 << 28)];
    let got = alloc.allocate_device_bars(&bars, &[]).unwrap();
    assert_eq!(got, [(0, 64 * GIB), (2, 0xc000_0000)]);
}

#[test]
fn too_big_bar_is_a_clear_error_and_takes_nothing() {
    let mut alloc = BarAllocator::new(windows(Some(Window::new(64 * GIB, 64 * GIB)))).unwrap();
    let bars = [
        bar(0, BarKind::Mem32, 1 << 20),
        bar(2, BarKind::Mem64, 128 * GIB),
    ];
    let err = alloc.allocate_device_bars(&bars, &[]).unwrap_err();
    assert_eq!(
        err,
        AllocError::NoSpace {
            bar: BarName(2),
            size: Size(128 * GIB),
            window: "64-bit MMIO",
            window_size: Size(64 * GIB),
            hint: err_hint(&err),
        }
    );
    let msg = err.to_string();
    assert!(msg.contains("BAR 2") && msg.contains("128 GiB") && msg.contains("64 GiB"));
    // All or nothing: the 1 MiB BAR allocated first was given back.
    let got = alloc
        .allocate_device_bars(&[bar(0, BarKind::Mem32, 1 << 20)], &[])
        .unwrap();
    assert_eq!(got, [(0, 0xc000_0000)]);

    let err = alloc
        .allocate_device_bars(&[bar(ROM_BAR_INDEX, BarKind::Rom, 1 << 30)], &[])
        .unwrap_err();
    assert!(err.to_string().contains("the ROM BAR (1 GiB)"), "{err}");
    assert!(err.to_string().contains("(512 MiB in all)"), "{err}");
}

fn err_hint(err: &AllocError) -> &'static str {
    match err {
        AllocError::NoSpace { hint, .. } => hint,
        _ => "",
    }
}

#[test]
fn windows_fill_up() {
    let mut alloc = BarAllocator::new(windows(Some(MMIO64_46_BITS))).unwrap();
    // 2^46 - 64 GiB holds 127 (aligned) 512 GiB BARs... then no more.
    let mut n = 0;
    while alloc
        .allocate_device_bars(&[bar(0, BarKind::Mem64, 512 * GIB)], &[])
        .is_ok_and(|g| inside(MMIO64_46_BITS, g[0].1, 512 * GIB))
    {
        n += 1;
        assert!(n < 200);
    }
    assert_eq!(n, 127);
}

#[test]
fn bad_windows_and_bars_are_rejected() {
    assert!(BarAllocator::new(PciWindows {
        mmio32: Window::new(0xc000_0000, 0),
        ..windows(None)
    })
    .is_err());
    let mut alloc = BarAllocator::new(windows(None)).unwrap();
    assert!(matches!(
        alloc.allocate_device_bars(&[bar(0, BarKind::Mem32, 0x3000)], &[]),
        Err(AllocError::BadBar(_))
    ));
    assert_eq!(
        alloc.allocate_device_bars(&[bar(0, BarKind::Mem32, 0)], &[]),
        Ok(vec![])
    );
}

#[test]
fn window_contains_checks_both_ends() {
    let w = Window::new(0x1000, 0x1000);
    assert!(w.contains(0x1000, 0x1000));
    assert!(!w.contains(0xfff, 2));
    assert!(!w.contains(0x1fff, 2));
    assert!(!w.contains(u64::MAX, 2));
    let top = Window::new(1 << 63, 1 << 63);
    assert!(top.contains(u64::MAX - 0xfff, 0x1000));
    assert_eq!(Size(0xf000).to_string(), "60 KiB");
    assert_eq!(Size(0x80).to_string(), "128 bytes");
}

#[test]
fn preferred_addresses_are_taken_when_free_in_the_right_window() {
    let mut alloc = BarAllocator::new(windows(Some(MMIO64_46_BITS))).unwrap();
    let bars = [
        bar(0, BarKind::Mem32, 64 << 20),
        bar(1, BarKind::Mem32, 64 << 20),
        bar(2, BarKind::Mem64, GIB),
        bar(3, BarKind::Io, 0x20),
        bar(ROM_BAR_INDEX, BarKind::Rom, 128 << 10),
    ];
    // As a host might have them: BAR0/1 high in the hole, BAR2 in the 64-bit window, the
    // I/O BAR at 0xc040; the ROM somewhere RAM is in the guest (so it cannot have it).
    let host = [
        (0, 0xd400_0000),
        (1, 0xd800_0000),
        (2, 80 * GIB),
        (3, 0xc040),
        (ROM_BAR_INDEX, 0x8000_0000),
    ];
    let got = alloc.allocate_device_bars(&bars, &host).unwrap();
    assert_eq!(
        got[..4],
        host[..4],
        "the host's addresses where the windows have them"
    );
    let rom = got[4].1;
    assert!(inside(MMIO32, rom, 128 << 10) && rom.is_multiple_of(128 << 10));

    // A second device wanting the same addresses gets others.
    let again = alloc.allocate_device_bars(&bars[..1], &host[..1]).unwrap();
    assert_ne!(again[0].1, 0xd400_0000);
    assert!(inside(MMIO32, again[0].1, 64 << 20));
}

#[test]
fn unusable_preferences_are_ignored() {
    let mut alloc = BarAllocator::new(windows(Some(MMIO64_46_BITS))).unwrap();
    let bars = [bar(0, BarKind::Mem32, 1 << 20), bar(1, BarKind::Io, 0x100)];
    // Misaligned, and outside every window.
    let got = alloc
        .allocate_device_bars(&bars, &[(0, 0xc008_0000), (1, 0x20)])
        .unwrap();
    assert_eq!(got, vec![(0, 0xc000_0000), (1, 0x1000)]);
}

#[test]
fn preferences_that_leave_no_room_fall_back_to_packing() {
    // Two small BARs wanted in both halves of the 512 MiB window leave no aligned room for
    // a 256 MiB BAR; packed, all three fit.
    let mut alloc = BarAllocator::new(windows(None)).unwrap();
    let bars = [
        bar(0, BarKind::Mem32, 0x1000),
        bar(1, BarKind::Mem32, 0x1000),
        bar(2, BarKind::Mem32, 256 << 20),
    ];
    let got = alloc
        .allocate_device_bars(&bars, &[(0, 0xc000_0000), (1, 0xd000_0000)])
        .unwrap();
    assert_eq!(
        got,
        vec![(0, 0xd000_0000), (1, 0xd000_1000), (2, 0xc000_0000)]
    );
}
