use std::os::unix::io::AsRawFd;

use super::super::backend::IrqIndex;
use super::super::mock::{Call, MockBackend, MSIX_CAP};
use super::*;

#[test]
fn intx_is_wired_at_start_with_a_resample_eventfd() {
    let r = rig();
    let intx = r.dev.intx_state().unwrap();
    let (trigger, resample) = intx.eventfds();
    assert_eq!(r.dev.intx_gsi(), Some(INTX_GSI));
    assert_eq!(
        r.router.state().resample_irqfds[&INTX_GSI],
        (trigger.as_raw_fd(), resample.as_raw_fd())
    );
    assert_eq!(
        r.backend.state().irq_calls(),
        vec![
            Call::Enable {
                index: IrqIndex::Intx,
                fds: vec![trigger.as_raw_fd()]
            },
            Call::SetUnmaskFd(resample.as_raw_fd()),
        ]
    );
}

#[test]
fn no_gsi_or_no_pin_means_no_intx() {
    let mut r = rig_with(MockBackend::standard(), None).unwrap();
    assert!(r.dev.intx_state().is_none());
    assert_eq!(r.read(0x3c) & 0xffff, 0x00ff, "pin hidden, line unknown");
    assert!(r.backend.state().irq_calls().is_empty());

    let backend = MockBackend::standard();
    backend.state().config_mut()[0x3d] = 0;
    let r = rig_with(backend, Some(INTX_GSI)).unwrap();
    assert!(r.dev.intx_state().is_none());
    assert!(r.router.state().resample_irqfds.is_empty());

    let backend = MockBackend::standard();
    backend.state().irqs.remove(&IrqIndex::Intx);
    let r = rig_with(backend, Some(INTX_GSI)).unwrap();
    assert!(r.dev.intx_state().is_none());
}

#[test]
fn intx_msix_intx() {
    let mut r = rig();
    r.forget_calls();
    r.write16(MSIX_CAP + 2, 1 << 15);
    super::msix::program(&mut r, 0, false);
    assert!(r.router.state().resample_irqfds.is_empty());
    assert_eq!(r.router.state().irqfds.len(), 1);
    r.write16(MSIX_CAP + 2, 0);
    assert!(r.router.state().irqfds.is_empty());
    assert!(r.router.state().resample_irqfds.contains_key(&INTX_GSI));
    let calls: Vec<_> = r
        .backend
        .state()
        .irq_calls()
        .into_iter()
        .map(|c| match c {
            Call::Enable { index, .. } => format!("enable {index:?}"),
            Call::Disable(index) => format!("disable {index:?}"),
            Call::SetUnmaskFd(_) => "unmask fd".to_string(),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(
        calls,
        vec![
            "disable Intx",
            "enable Msix",
            "disable Msix",
            "enable Intx",
            "unmask fd"
        ]
    );
}

#[test]
fn a_failing_intx_setup_fails_construction_and_cleans_up() {
    let backend = MockBackend::standard();
    backend.state().irqs.get_mut(&IrqIndex::Intx).unwrap().count = 0;
    // Pin set and VFIO count 0: not wired at all, not an error.
    assert!(rig_with(backend, Some(INTX_GSI)).is_ok());

    let backend = MockBackend::standard();
    backend.state().enabled = Some(IrqIndex::Msi); // VFIO refuses INTx
    let err = rig_with(backend.clone(), Some(INTX_GSI))
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("0000:01:00.0") && err.contains("GSI 10"),
        "{err}"
    );
    let resets = backend
        .state()
        .calls
        .iter()
        .filter(|c| **c == Call::Reset)
        .count();
    assert_eq!(resets, 2, "reset at open and on the way out");
}
