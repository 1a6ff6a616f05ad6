use super::super::backend::IrqIndex;
use super::super::mock::{Call, MSIX_CAP, MSI_CAP};
use super::*;
use crate::services::MsiMessage;

const ENABLE: u16 = 1;

fn msi_fds(r: &Rig) -> Vec<i32> {
    r.backend
        .state()
        .calls
        .iter()
        .rev()
        .find_map(|c| match c {
            Call::Enable {
                index: IrqIndex::Msi,
                fds,
            } => Some(fds.clone()),
            _ => None,
        })
        .expect("MSI enabled")
}

fn gsi(r: &Rig, i: usize) -> u32 {
    r.dev.msi_state().unwrap().vector(i).unwrap().gsi().unwrap()
}

#[test]
fn the_capability_reads_as_emulated() {
    let mut r = rig();
    // 8 vectors, 64-bit, per-vector masking, disabled.
    assert_eq!(r.read(MSI_CAP), (0x0186 << 16) | 0x7005);
    r.write32(MSI_CAP + 4, 0xfee0_1003);
    assert_eq!(r.read(MSI_CAP + 4), 0xfee0_1000, "address is dword aligned");
    r.write32(MSI_CAP + 0x10, 0xffff_ffff);
    assert_eq!(r.read(MSI_CAP + 0x10), 0xff, "mask bits for 8 vectors");
    r.write32(MSI_CAP + 0x14, 0xffff_ffff);
    assert_eq!(r.read(MSI_CAP + 0x14), 0, "pending bits are read-only");
    r.write16(MSI_CAP + 2, 7 << 4);
    assert_eq!(r.read(MSI_CAP) >> 16 & 0x70, 3 << 4, "MME capped at MMC");
}

#[test]
fn enabling_four_vectors_routes_each_with_its_data() {
    let mut r = rig();
    r.write32(MSI_CAP + 4, 0xfee0_2000);
    r.write32(MSI_CAP + 8, 0x1);
    r.write16(MSI_CAP + 0xc, 0x4025);
    r.write32(MSI_CAP + 0x10, 1 << 2);
    r.forget_calls();
    r.write16(MSI_CAP + 2, 2 << 4 | ENABLE);
    let calls = r.backend.state().irq_calls();
    assert_eq!(calls[0], Call::Disable(IrqIndex::Intx));
    let fds = msi_fds(&r);
    assert_eq!(fds.len(), 4);
    let router = r.router.state();
    for i in 0..4u32 {
        let g = r.dev.msi_state().unwrap().vector(i as usize).unwrap().gsi();
        if i == 2 {
            assert!(
                g.is_none() || !router.irqfds.contains_key(&g.unwrap()),
                "masked"
            );
            continue;
        }
        let g = g.unwrap();
        assert_eq!(
            router.routes[&g],
            MsiMessage {
                addr_lo: 0xfee0_2000,
                addr_hi: 1,
                data: 0x4024 | i
            }
        );
        assert_eq!(router.irqfds[&g], fds[i as usize]);
    }
    drop(router);

    // The masked vector fires: pending; unmasking delivers it.
    r.backend.state().fire(IrqIndex::Msi, 2);
    assert_eq!(r.read(MSI_CAP + 0x14), 1 << 2);
    r.write32(MSI_CAP + 0x10, 0);
    assert_eq!(r.read(MSI_CAP + 0x14), 0);
    let g2 = gsi(&r, 2);
    assert_eq!(r.router.state().routes[&g2].data, 0x4026);

    // A new address while enabled moves every route.
    r.write32(MSI_CAP + 4, 0xfee0_4000);
    assert!(r
        .router
        .state()
        .routes
        .values()
        .all(|m| m.addr_lo == 0xfee0_4000));
}

#[test]
fn changing_the_vector_count_re_enables() {
    let mut r = rig();
    r.write16(MSI_CAP + 2, ENABLE);
    assert_eq!(msi_fds(&r).len(), 1);
    r.forget_calls();
    r.write16(MSI_CAP + 2, 3 << 4 | ENABLE);
    let calls = r.backend.state().irq_calls();
    assert_eq!(calls[0], Call::Disable(IrqIndex::Msi));
    assert_eq!(msi_fds(&r).len(), 8);
    assert_eq!(r.router.state().irqfds.len(), 8);
    assert_eq!(r.router.state().released.len(), 1);
}

#[test]
fn intx_msi_intx_and_msi_vs_msix() {
    let mut r = rig();
    r.write16(MSI_CAP + 2, ENABLE);
    assert!(r.router.state().resample_irqfds.is_empty());
    assert!(!r.dev.intx_state().unwrap().is_enabled());
    // MSI-X on top is refused by VFIO (one index at a time): logged, nothing breaks.
    r.write16(MSIX_CAP + 2, 1 << 15);
    assert!(!r.dev.msix_state().unwrap().is_active());
    r.write16(MSIX_CAP + 2, 0);
    r.forget_calls();
    r.write16(MSI_CAP + 2, 0);
    let calls = r.backend.state().irq_calls();
    assert_eq!(calls[0], Call::Disable(IrqIndex::Msi));
    assert!(matches!(
        calls[1],
        Call::Enable {
            index: IrqIndex::Intx,
            ..
        }
    ));
    assert!(r.dev.intx_state().unwrap().is_enabled());
    assert!(r.router.state().irqfds.is_empty());
    assert!(r.router.state().allocated.is_empty());
}

#[test]
fn a_32_bit_capability_without_masking() {
    let backend = super::super::mock::MockBackend::standard();
    // MMC = 2 (4 vectors), 32-bit, no per-vector mask.
    backend
        .state()
        .set_config_u32(MSI_CAP, (2 << 1) << 16 | u32::from(MSIX_CAP) << 8 | 0x05);
    let mut r = rig_with(backend, Some(INTX_GSI)).unwrap();
    r.write32(MSI_CAP + 4, 0xfee0_0000);
    r.write16(MSI_CAP + 8, 0x30);
    r.write32(MSI_CAP + 0xc, 0xffff_ffff); // past the capability: passes through
    r.write16(MSI_CAP + 2, 2 << 4 | ENABLE);
    assert_eq!(r.read(MSI_CAP + 8), 0x30);
    let routes: Vec<_> = r.router.state().routes.values().copied().collect();
    let data: Vec<_> = routes.iter().map(|m| m.data).collect();
    assert_eq!(data, vec![0x30, 0x31, 0x32, 0x33]);
    assert!(routes.iter().all(|m| m.addr_hi == 0));
}
