use super::super::backend::IrqIndex;
use super::super::mock::{Call, MSIX_CAP, MSI_CAP};
use super::*;
use crate::pci::PciDevice;

fn busy_rig() -> Rig {
    let mut r = rig();
    r.dev.assign_bar(0, 0xc000_0000);
    r.dev.assign_bar(2, 0x20_0000_0000);
    r.write16(0x04, 0x0006);
    for b in r.dev.bars().iter().filter(|b| b.decoding) {
        r.dev.bar_mapped(b).unwrap();
    }
    r.write16(MSIX_CAP + 2, 1 << 15);
    super::msix::program(&mut r, 0, false);
    super::msix::program(&mut r, 3, false);
    assert_eq!(r.mapper.ranges().len(), 4);
    assert_eq!(r.router.state().irqfds.len(), 2);
    r
}

fn resets(r: &Rig) -> usize {
    r.backend
        .state()
        .calls
        .iter()
        .filter(|c| **c == Call::Reset)
        .count()
}

#[test]
fn release_undoes_everything_once() {
    let mut r = busy_rig();
    r.forget_calls();
    r.dev.release();
    {
        let router = r.router.state();
        assert!(router.routes.is_empty());
        assert!(router.irqfds.is_empty());
        assert!(router.resample_irqfds.is_empty());
        assert!(router.allocated.is_empty());
        assert_eq!(router.released.len(), 2);
    }
    assert!(r.mapper.ranges().is_empty());
    assert_eq!(
        r.backend.state().calls,
        vec![Call::Disable(IrqIndex::Msix), Call::Reset]
    );
    assert_eq!(r.backend.state().enabled, None);

    r.forget_calls();
    r.dev.release();
    assert!(
        r.backend.state().calls.is_empty(),
        "second release is a no-op"
    );

    // A released device ignores the guest.
    r.write16(MSI_CAP + 2, 1);
    r.write16(0x04, 0);
    r.dev.bar_write(1, 0, &[1]);
    let bar0 = r.dev.bars()[0];
    r.dev.bar_mapped(&bar0).unwrap();
    assert!(r.backend.state().calls.is_empty());
    assert!(r.mapper.ranges().is_empty());
    assert!(r.router.state().allocated.is_empty());
    assert_eq!(r.read(0), 0x1eb8_10de, "config reads still answer");

    let Rig {
        dev,
        backend,
        router,
        mapper,
    } = r;
    drop(dev);
    assert!(
        backend.state().calls.is_empty(),
        "drop after release: nothing"
    );
    assert!(mapper.ranges().is_empty());
    assert!(router.state().irqfds.is_empty());
}

#[test]
fn drop_releases() {
    let r = busy_rig();
    let before = resets(&r);
    let Rig {
        dev,
        backend,
        router,
        mapper,
    } = r;
    drop(dev);
    assert!(mapper.ranges().is_empty());
    assert!(router.state().irqfds.is_empty());
    assert!(router.state().allocated.is_empty());
    let after = backend
        .state()
        .calls
        .iter()
        .filter(|c| **c == Call::Reset)
        .count();
    assert_eq!(after, before + 1);
}

#[test]
fn release_with_intx_and_msi() {
    let mut r = rig();
    r.dev.release();
    assert!(r.router.state().resample_irqfds.is_empty());
    assert_eq!(r.backend.state().enabled, None);

    let mut r = rig();
    r.write16(MSI_CAP + 2, 2 << 4 | 1);
    assert_eq!(r.router.state().irqfds.len(), 4);
    r.dev.release();
    assert!(r.router.state().irqfds.is_empty());
    assert_eq!(r.router.state().released.len(), 4);
    assert_eq!(r.backend.state().enabled, None);
}

/// A device that stops answering config reads after its reset (vendor ID all-ones) is
/// reported at release; one that answers is not.
#[test]
fn a_device_that_does_not_come_back_after_its_reset_is_reported() {
    let r = rig();
    let before = resets(&r);
    assert!(super::super::backend::reset_and_check(
        &r.backend,
        "0000:01:00.0"
    ));
    r.backend.state().config_mut()[..2].copy_from_slice(&[0xff, 0xff]);
    assert!(!super::super::backend::reset_and_check(
        &r.backend,
        "0000:01:00.0"
    ));
    assert_eq!(resets(&r), before + 2);
}
