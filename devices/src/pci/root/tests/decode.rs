//! BAR decode tracking through the root: mapping, moving, refusing, racing, teardown.

use super::*;

/// A device at slot 1 with a 32-bit BAR 0 (4 KiB), a 64-bit BAR 2 (1 MiB) and an I/O
/// BAR 4 (256 ports), addresses assigned, decoding off.
fn machine_with_bars() -> (Machine, Arc<Mutex<TestDevice>>, Events, [Bar; 3]) {
    let m = Machine::new();
    let (dev, events) = test_device(
        1,
        &[
            (0, BarKind::Mem32, 0x1000),
            (2, BarKind::Mem64, 1 << 20),
            (4, BarKind::Io, 0x100),
        ],
    );
    m.add(1, 0, &dev);
    let bars = dev.lock().unwrap().bars();
    let decoding = |b: Bar| Bar {
        decoding: true,
        ..b
    };
    let bars = [decoding(bars[0]), decoding(bars[1]), decoding(bars[2])];
    (m, dev, events, bars)
}

#[test]
fn enabling_decode_maps_bars_and_accesses_reach_the_device() {
    let (m, _dev, events, [b0, b2, b4]) = machine_with_bars();
    assert!(!m.mmio_claimed(b0.addr));
    m.write32(1, COMMAND, u32::from(COMMAND_MEMORY));
    assert_eq!(take(&events), [Event::Mapped(b0), Event::Mapped(b2)]);
    let mut data = [0; 4];
    assert!(m.mmio.read(b0.addr + 0x10, &mut data));
    assert_eq!(data, [0x10, 0, 0, 0]);
    assert!(m.mmio.read(b2.addr + b2.size - 4, &mut data));
    assert_eq!(data, [0xfc, 2, 2, 2]);
    assert!(!m.mmio_claimed(b2.addr + b2.size));
    assert!(m.mmio.write(b0.addr + 8, &[1, 2]));
    assert_eq!(take(&events), [Event::Write(0, 8, vec![1, 2])]);
    assert!(!m.pio.read(b4.addr, &mut data[..1]));

    m.write32(1, COMMAND, u32::from(COMMAND_MEMORY | COMMAND_IO));
    assert_eq!(take(&events), [Event::Mapped(b4)]);
    assert!(m.pio.read(b4.addr + 3, &mut data[..1]));
    assert_eq!(data[0], 3);

    // The same write again changes nothing.
    m.write32(1, COMMAND, u32::from(COMMAND_MEMORY | COMMAND_IO));
    assert!(take(&events).is_empty());

    m.write32(1, COMMAND, 0);
    assert_eq!(
        take(&events),
        [
            Event::Unmapped(b0),
            Event::Unmapped(b2),
            Event::Unmapped(b4)
        ]
    );
    assert!(!m.mmio_claimed(b0.addr) && !m.mmio_claimed(b2.addr));
    assert!(!m.pio.read(b4.addr, &mut data[..1]));
}

#[test]
fn moving_a_bar_unmaps_then_maps() {
    let (m, _dev, events, [b0, ..]) = machine_with_bars();
    m.write32(1, COMMAND, u32::from(COMMAND_MEMORY));
    take(&events);
    let new_addr = 0xd000_0000;
    m.write32(1, BAR0, new_addr as u32);
    let moved = Bar {
        addr: new_addr,
        ..b0
    };
    assert_eq!(take(&events), [Event::Unmapped(b0), Event::Mapped(moved)]);
    assert!(!m.mmio_claimed(b0.addr));
    assert!(m.mmio_claimed(new_addr));
}

#[test]
fn insane_bar_addresses_stay_unmapped_without_harm() {
    let (m, _dev, events, [b0, b2, b4]) = machine_with_bars();
    let (other, other_events) = test_device(2, &[(0, BarKind::Mem32, 0x1000)]);
    m.add(2, 0, &other);
    m.write32(2, COMMAND, u32::from(COMMAND_MEMORY));
    let other_bar = other.lock().unwrap().bars()[0];
    assert_eq!(take(&other_events), [Event::Mapped(other_bar)]);

    m.write32(1, COMMAND, u32::from(COMMAND_MEMORY | COMMAND_IO));
    take(&events);
    // Onto the other device's BAR: refused by the bus; the old range is gone.
    m.write32(1, BAR0, other_bar.addr as u32);
    assert_eq!(take(&events), [Event::Unmapped(b0)]);
    assert!(m.mmio_claimed(other_bar.addr));
    let mut data = [0; 1];
    m.mmio.read(other_bar.addr + 5, &mut data);
    assert_eq!(data, [5], "still the other device's BAR");
    // Into guest RAM, onto ECAM, onto the IOAPIC: outside the windows.
    for addr in [0x10_0000, ECAM_BASE as u32, 0xfec0_0000] {
        m.write32(1, BAR0, addr);
        assert!(take(&events).is_empty(), "{addr:#x}");
    }
    let mut data = [0; 4];
    assert!(m.mmio.read(ECAM_BASE, &mut data), "ECAM still answers");
    assert_eq!(u32::from_le_bytes(data), 0x0008_1b36);
    // Back in the window: mapped again.
    m.write32(1, BAR0, b0.addr as u32);
    assert_eq!(take(&events), [Event::Mapped(b0)]);
    // A 64-bit BAR beyond the guest's physical address limit, an I/O BAR onto the config
    // ports or the serial port.
    m.write32(1, bar_offset(3), 0x4000_0000);
    assert_eq!(take(&events), [Event::Unmapped(b2)]);
    m.write32(1, bar_offset(4), 0xcf8 & !0xff);
    m.write32(1, bar_offset(4), 0x3f8 & !0xff);
    assert_eq!(take(&events), [Event::Unmapped(b4)]);
    assert_eq!(m.port_read(0xcf8, 4), [0; 4], "config ports untouched");
}

#[test]
fn sizing_with_decode_on_maps_only_sane_states() {
    let (m, _dev, events, [b0, ..]) = machine_with_bars();
    m.write32(1, COMMAND, u32::from(COMMAND_MEMORY));
    take(&events);
    m.write32(1, BAR0, 0xffff_ffff);
    assert_eq!(m.read32(1, BAR0), 0xffff_f000);
    assert_eq!(take(&events), [Event::Unmapped(b0)]);
    m.write32(1, BAR0, b0.addr as u32);
    assert_eq!(take(&events), [Event::Mapped(b0)]);
}

#[test]
fn a_64bit_bar_moves_one_half_at_a_time() {
    let (m, _dev, events, [_, b2, _]) = machine_with_bars();
    m.write32(1, COMMAND, u32::from(COMMAND_MEMORY));
    take(&events);
    // Move BAR 2 from wherever it is to 64 GiB + 16 MiB: low half first...
    let target = MMIO64.start + (16 << 20);
    m.write32(1, bar_offset(2), target as u32 | 0x4);
    let mut got = take(&events);
    assert_eq!(got.remove(0), Event::Unmapped(b2));
    // ...the transient address (new low, old high) may or may not be sane; then the high.
    m.write32(1, bar_offset(3), (target >> 32) as u32);
    got.extend(take(&events));
    let moved = Bar { addr: target, ..b2 };
    assert_eq!(got.last(), Some(&Event::Mapped(moved)));
    assert!(m.mmio_claimed(target));
    assert!(!m.mmio_claimed(b2.addr));
    assert_eq!(m.read32(1, bar_offset(2)), target as u32 | 0x4);
    assert_eq!(m.read32(1, bar_offset(3)), (target >> 32) as u32);
}

#[test]
fn a_device_that_cannot_map_leaves_the_bar_off() {
    let (m, dev, events, [b0, ..]) = machine_with_bars();
    dev.lock().unwrap().fail_map = true;
    m.write32(1, COMMAND, u32::from(COMMAND_MEMORY));
    assert!(take(&events).is_empty());
    assert!(!m.mmio_claimed(b0.addr));
    dev.lock().unwrap().fail_map = false;
    m.write32(1, BAR0, b0.addr as u32); // any config write retries
    assert!(take(&events).contains(&Event::Mapped(b0)));
    assert!(m.mmio_claimed(b0.addr));
}

#[test]
fn bar_moves_race_with_bar_accesses_without_deadlock() {
    let (m, _dev, _events, [b0, ..]) = machine_with_bars();
    let m = Arc::new(m);
    m.write32(1, COMMAND, u32::from(COMMAND_MEMORY));
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let m = m.clone();
            std::thread::spawn(move || {
                for _ in 0..2000 {
                    let mut data = [0; 4];
                    m.mmio.read(b0.addr, &mut data);
                    m.mmio.read(0xd000_0000, &mut data);
                    m.read32(1, BAR0);
                }
            })
        })
        .collect();
    for i in 0..2000u32 {
        let addr = if i % 2 == 0 {
            0xd000_0000
        } else {
            b0.addr as u32
        };
        m.write32(1, BAR0, addr);
    }
    for r in readers {
        r.join().unwrap();
    }
    // The last write put it back where it was.
    assert!(m.mmio_claimed(b0.addr));
    assert!(!m.mmio_claimed(0xd000_0000));
}

/// The root owns its functions and the regions of their mapped BARs; the buses only refer
/// to them. Dropping the root (and the config-access devices) frees every device even while
/// its BARs decode, with the buses still alive: no cycle keeps a device (a VFIO group) open.
#[test]
fn dropping_the_root_frees_devices_with_mapped_bars() {
    let (m, dev, _events, [b0, _, b4]) = machine_with_bars();
    m.write32(1, COMMAND, u32::from(COMMAND_MEMORY | COMMAND_IO));
    assert!(m.mmio_claimed(b0.addr));
    let (pio, mmio) = (m.pio.clone(), m.mmio.clone());
    let weak = Arc::downgrade(&dev);
    drop(dev);
    assert!(weak.upgrade().is_some(), "the root holds the device");
    drop(m);
    assert!(weak.upgrade().is_none(), "the device outlived its root");
    assert!(!mmio.read(b0.addr, &mut [0; 4]));
    assert!(!pio.read(b4.addr, &mut [0; 1]));
    assert!(!mmio.read(ECAM_BASE, &mut [0; 4]));
}
