//! Config mirrors in BARs (`quirks.rs`) against GPU-shaped mock devices.

use super::super::backend::IrqIndex;
use super::super::mock::{Call, MockBackend, MSI_CAP, NVIDIA_MIRROR, NVIDIA_MSIX_TABLE};
use super::*;
use crate::pci::{Bar, BarKind};

const GIB: u64 = 1 << 30;
const BAR0_GPA: u64 = 0xc000_0000;

fn nvidia() -> Rig {
    rig_with(MockBackend::nvidia_gpu(256 << 20), Some(INTX_GSI)).unwrap()
}

fn bar(r: &Rig, index: u8) -> Bar {
    *r.dev.bars().iter().find(|b| b.index == index).unwrap()
}

fn mirror_read(r: &mut Rig, config_offset: u64, len: usize) -> Vec<u8> {
    let mut data = vec![0; len];
    r.dev.bar_read(0, NVIDIA_MIRROR + config_offset, &mut data);
    data
}

fn mirror_write(r: &mut Rig, config_offset: u64, data: &[u8]) {
    r.dev.bar_write(0, NVIDIA_MIRROR + config_offset, data);
}

fn u32_of(b: &[u8]) -> u32 {
    u32::from_le_bytes(b.try_into().unwrap())
}

/// (gpa, size) slots cover `gpa`?
fn direct(r: &Rig, gpa: u64) -> bool {
    r.mapper
        .ranges()
        .iter()
        .any(|&(start, len)| gpa >= start && gpa < start + len)
}

#[test]
fn the_mirror_page_traps_and_the_rest_of_bar0_is_direct() {
    let mut r = nvidia();
    r.dev.assign_bar(0, BAR0_GPA);
    r.write16(0x04, 0x0002);
    r.dev.bar_mapped(&bar(&r, 0)).unwrap();
    for off in [NVIDIA_MIRROR, NVIDIA_MIRROR + 0xffc, NVIDIA_MSIX_TABLE] {
        assert!(!direct(&r, BAR0_GPA + off), "{off:#x} traps");
    }
    for off in [0, NVIDIA_MIRROR - 4, NVIDIA_MIRROR + 0x1000, 0xff_f000] {
        assert!(direct(&r, BAR0_GPA + off), "{off:#x} is a KVM slot");
    }
    // A trapped access next to the mirror still reaches the device.
    r.backend.state().regions.get_mut(&0).unwrap().data[0x8_9000] = 0x5a;
    let mut b = [0u8; 1];
    r.dev.bar_read(0, 0x8_9000, &mut b);
    assert_eq!(b, [0x5a]);
}

#[test]
fn reads_through_the_mirror_return_the_guests_config() {
    let backend = MockBackend::nvidia_gpu(256 << 20);
    backend.set_host_bar(1, 0x38_0000_0000);
    let mut r = rig_with(backend, Some(INTX_GSI)).unwrap();
    assert!(r
        .dev
        .preferred_bar_addresses()
        .contains(&(1, 0x38_0000_0000)));
    r.dev.assign_bar(1, 0x40_0000_0000);
    assert_eq!(u32_of(&mirror_read(&mut r, 0, 4)), 0x2204_10de);
    assert_eq!(u32_of(&mirror_read(&mut r, 0x14, 4)), r.read(0x14));
    assert_eq!(
        u32_of(&mirror_read(&mut r, 0x18, 4)),
        0x40,
        "the guest's BAR 1, not the host's 0x38"
    );
    assert_eq!(
        mirror_read(&mut r, 0x15, 2),
        r.read(0x14).to_le_bytes()[1..3]
    );
    let msi = mirror_read(&mut r, u64::from(MSI_CAP), 8);
    assert_eq!(
        u32_of(&msi[..4]),
        r.read(MSI_CAP),
        "the emulated MSI capability"
    );
    assert_eq!(u32_of(&msi[4..]), r.read(MSI_CAP + 4));
}

#[test]
fn a_bar_write_through_the_mirror_moves_the_guest_bar_only() {
    let mut r = nvidia();
    r.dev.assign_bar(1, 0x40_0000_0000);
    r.forget_calls();
    mirror_write(&mut r, 0x14, &0x8000_000cu32.to_le_bytes());
    mirror_write(&mut r, 0x18, &0x50u32.to_le_bytes());
    assert_eq!(bar(&r, 1).addr, 0x50_8000_0000, "as a config write would");
    assert!(r.dev.take_config_changed(), "the root re-syncs decoding");
    assert!(!r.dev.take_config_changed());
    assert!(
        r.backend.state().calls.is_empty(),
        "neither the device's BAR nor its BAR 0 was written"
    );
    // Sizing through the mirror works as through config space.
    mirror_write(&mut r, 0x14, &[0xff; 4]);
    mirror_write(&mut r, 0x18, &[0xff; 4]);
    assert_eq!(u32_of(&mirror_read(&mut r, 0x14, 4)), 0xf000_000c);
}

#[test]
fn msi_through_the_mirror_is_emulated_and_the_ack_reaches_the_device() {
    let mut r = nvidia();
    mirror_write(
        &mut r,
        u64::from(MSI_CAP) + 4,
        &0xfee0_2000u32.to_le_bytes(),
    );
    mirror_write(&mut r, u64::from(MSI_CAP) + 0xc, &0x4025u16.to_le_bytes());
    r.forget_calls();
    mirror_write(&mut r, u64::from(MSI_CAP) + 2, &1u16.to_le_bytes());
    assert!(r.dev.msi_state().unwrap().wants_enabled());
    let calls = r.backend.state().calls.clone();
    assert!(calls.iter().any(|c| matches!(
        c,
        Call::Enable {
            index: IrqIndex::Msi,
            ..
        }
    )));
    assert!(
        !calls.iter().any(|c| matches!(c, Call::RegionWrite { .. })),
        "the control bits never reach the device: {calls:?}"
    );
    // The acknowledge: a write to the read-only ID byte goes to the device's BAR 0.
    r.forget_calls();
    mirror_write(&mut r, u64::from(MSI_CAP), &[0xff]);
    assert_eq!(
        r.backend.state().calls,
        vec![Call::RegionWrite {
            index: 0,
            offset: NVIDIA_MIRROR + u64::from(MSI_CAP),
            data: vec![0xff]
        }]
    );
    assert_eq!(r.read(MSI_CAP) & 0xff, 0x05, "the ID stays");
}

#[test]
fn other_registers_through_the_mirror_pass_through_config_emulation() {
    let mut r = nvidia();
    r.dev.assign_bar(0, BAR0_GPA);
    r.forget_calls();
    // The MSI re-arm of newer drivers: config 0x704 (the mock's LTR area is elsewhere).
    mirror_write(&mut r, 0x704, &0u32.to_le_bytes());
    mirror_write(&mut r, 0x04, &0x0006u16.to_le_bytes());
    assert_eq!(
        r.backend.state().config_writes(),
        vec![(0x704, vec![0; 4]), (0x04, vec![0x06, 0x00])]
    );
    assert!(
        bar(&r, 0).decoding,
        "memory decoding as the guest's command says"
    );
    // 8-byte and unaligned accesses become naturally aligned config accesses.
    r.forget_calls();
    mirror_write(&mut r, 0x701, &[1, 2, 3]);
    assert_eq!(
        r.backend.state().config_writes(),
        vec![(0x701, vec![1]), (0x702, vec![2, 3])]
    );
}

#[test]
fn accesses_straddling_the_mirror_are_dropped() {
    let mut r = nvidia();
    r.forget_calls();
    let mut b = [0u8; 8];
    r.dev.bar_read(0, NVIDIA_MIRROR - 4, &mut b);
    assert_eq!(b, [0xff; 8]);
    r.dev.bar_write(0, NVIDIA_MIRROR + 0xffc, &[0; 8]);
    assert!(r.backend.state().calls.is_empty());
}

#[test]
fn the_bar5_window_reaches_bar0_through_the_same_emulation() {
    let mut r = nvidia();
    r.dev.assign_bar(1, 0x40_0000_0000);
    let window_to = |r: &mut Rig, addr: u64| r.dev.bar_write(5, 8, &(addr as u32).to_le_bytes());
    window_to(&mut r, NVIDIA_MIRROR + 0x18);
    let mut b = [0u8; 4];
    r.dev.bar_read(5, 0xc, &mut b);
    assert_eq!(u32_of(&b), 0x40, "the guest's BAR 1 through the window");
    r.forget_calls();
    r.dev.bar_write(5, 0xc, &0x60u32.to_le_bytes());
    assert_eq!(bar(&r, 1).addr, 0x60_0000_0000);
    assert!(r.dev.take_config_changed());
    assert!(r.backend.state().config_writes().is_empty());
    // Elsewhere in BAR 0 the window reads the device's registers.
    r.backend.state().regions.get_mut(&0).unwrap().data[0x100..0x104]
        .copy_from_slice(&[1, 2, 3, 4]);
    window_to(&mut r, 0x100);
    r.dev.bar_read(5, 0xc, &mut b);
    assert_eq!(b, [1, 2, 3, 4]);
    // Past BAR 0: nothing.
    window_to(&mut r, 0x1000_0000);
    r.dev.bar_read(5, 0xc, &mut b);
    assert_eq!(b, [0xff; 4]);
}

#[test]
fn no_mirror_is_assumed_where_bar0_does_not_show_one() {
    let backend = MockBackend::nvidia_gpu(256 << 20);
    backend.state().regions.get_mut(&0).unwrap().data[NVIDIA_MIRROR as usize] ^= 1;
    let mut r = rig_with(backend, Some(INTX_GSI)).unwrap();
    let areas = r.dev.direct_bars().areas(0);
    assert!(areas
        .iter()
        .any(|&(o, s)| o <= NVIDIA_MIRROR && NVIDIA_MIRROR < o + s));
    r.forget_calls();
    mirror_write(&mut r, 0x14, &[0; 4]);
    assert_eq!(r.backend.state().calls.len(), 1, "a plain BAR 0 write");
}

#[test]
fn amd_doorbells_and_registers_stay_direct() {
    let r = rig_with(MockBackend::amd_gpu(16 * GIB), Some(INTX_GSI)).unwrap();
    assert_eq!(
        r.dev.direct_bars().areas(2),
        vec![(0, 2 << 20)],
        "no trap at 0x4000"
    );
    assert_eq!(
        r.dev.direct_bars().areas(5),
        vec![(0, 0x4_2000), (0x4_4000, 0xb_c000)],
        "only the MSI-X pages trap"
    );
}

#[test]
fn big_prefetchable_64bit_bars_keep_their_type_in_the_guests_view() {
    for backend in [
        MockBackend::nvidia_gpu(256 * GIB),
        MockBackend::amd_gpu(256 * GIB),
    ] {
        let index = if backend.state().config_u32(0) as u16 == 0x10de {
            1
        } else {
            0
        };
        let mut r = rig_with(backend, None).unwrap();
        let b = bar(&r, index);
        assert_eq!(
            (b.kind, b.prefetchable, b.size),
            (BarKind::Mem64, true, 256 * GIB)
        );
        let reg = 0x10 + 4 * u16::from(index);
        assert_eq!(r.read(reg) & 0xf, 0xc, "64-bit, prefetchable");
        r.write32(reg, u32::MAX);
        r.write32(reg + 4, u32::MAX);
        assert_eq!(
            (r.read(reg), r.read(reg + 4)),
            (0xc, 0xffff_ffc0),
            "256 GiB"
        );
        r.dev.assign_bar(index, 0x400_0000_0000);
        assert_eq!((r.read(reg), r.read(reg + 4)), (0xc, 0x400));
    }
}
