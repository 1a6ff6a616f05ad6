//! The virtio-pci transport: identity, capabilities, negotiation, MSI-X, INTx, ioeventfds.

use std::os::unix::io::RawFd;
use std::time::{Duration, Instant};

use super::{Driver, BAR0_ADDR};
use crate::pci::config::{BAR0, INTERRUPT_LINE, INTERRUPT_PIN};
use crate::pci::PciDevice;
use crate::virtio::{status, NO_VECTOR, VIRTIO_F_VERSION_1};

const FLUSH: u32 = 4;

#[test]
fn identity_and_capabilities() {
    let mut d = Driver::new(false, None, Some(5));
    assert_eq!(d.cfg32(0), 0x1042_1af4);
    assert_eq!(d.cfg32(8), 0x0180_0001, "class 01/80, revision 1");
    assert_eq!(d.cfg32(0x2c), 0x0040_1af4);
    assert_eq!(d.cfg8(INTERRUPT_PIN), 1);
    d.dev.config_write(INTERRUPT_LINE, &[9]);
    assert_eq!(d.cfg8(INTERRUPT_LINE), 9);
    let want = [
        (1, 0, 0x0),
        (2, 0, 0x3000),
        (3, 0, 0x1000),
        (4, 0, 0x2000),
        (5, 0, 0),
    ];
    for (t, bar, off) in want {
        let c = d.caps[&t];
        assert_eq!((c.bar, c.offset), (bar, off), "cap type {t}");
    }
    assert!(d.caps[&1].len >= 0x38);
    assert_eq!(d.notify_mult, 4);
    let msix = d.msix_cap.unwrap();
    assert_eq!(
        d.cfg32(msix) >> 16 & 0x7ff,
        1,
        "table size 2 (queue + config)"
    );
    assert_eq!(d.cfg32(msix + 4), 2, "table in BAR 2 at 0");
    assert_eq!(d.cfg32(msix + 8), 0x802, "PBA in BAR 2 at 0x800");
    let bars = d.dev.bars();
    assert_eq!(bars[0].size, 0x4000);
    assert_eq!(bars[1].index, 2);
    // No INTx without a GSI.
    let mut d = Driver::new(false, None, None);
    assert_eq!(d.cfg8(INTERRUPT_PIN), 0);
}

#[test]
fn feature_negotiation_and_status_rules() {
    let mut d = Driver::new(false, None, None);
    let offered = d.device_features();
    assert_ne!(offered & VIRTIO_F_VERSION_1, 0);
    assert_ne!(offered & (1 << 9), 0, "FLUSH");
    // Only offered bits stick.
    d.negotiate(u64::MAX);
    d.common_write(0x08, 4, 0);
    assert_eq!(d.common_read(0x0c, 4), offered & 0xffff_ffff);
    // Without VERSION_1, FEATURES_OK does not stick.
    let s = d.negotiate(offered & !VIRTIO_F_VERSION_1);
    assert_eq!(s & status::FEATURES_OK, 0);
    // DRIVER_OK without FEATURES_OK: NEEDS_RESET, not active.
    d.set_status(s | status::DRIVER_OK);
    assert_eq!(
        d.status() & (status::DRIVER_OK | status::DEVICE_NEEDS_RESET),
        0x40
    );
    assert!(!d.dev.is_active());
    // A reset clears it; status cannot lose bits otherwise.
    let s = d.negotiate(offered);
    assert_ne!(s & status::FEATURES_OK, 0);
    d.set_status(status::ACKNOWLEDGE);
    assert_eq!(d.status(), s);
    // Features are frozen after FEATURES_OK.
    d.common_write(0x08, 4, 1);
    d.common_write(0x0c, 4, 0);
    assert_eq!(d.common_read(0x0c, 4), offered >> 32);
}

#[test]
fn queue_registers() {
    let mut d = Driver::new(false, None, None);
    assert_eq!(d.common_read(0x12, 2), 1, "num_queues");
    d.common_write(0x16, 2, 7);
    assert_eq!(d.common_read(0x18, 2), 0, "no queue 7");
    d.common_write(0x18, 2, 8);
    d.common_write(0x16, 2, 0);
    assert_eq!(d.common_read(0x18, 2), 256);
    d.common_write(0x1a, 2, 5); // only vectors 0 and 1 exist
    assert_eq!(d.common_read(0x1a, 2), u64::from(NO_VECTOR));
    d.common_write(0x10, 2, 1);
    assert_eq!(d.common_read(0x10, 2), 1);
    d.common_write(0x20, 8, 0x1234_5670);
    assert_eq!(d.common_read(0x20, 8), 0x1234_5670);
    d.common_write(0x24, 4, 1);
    assert_eq!(d.common_read(0x20, 8), 0x1_1234_5670);
    assert_eq!(d.common_read(0x1e, 2), 0, "notify_off");
    // Garbage widths and offsets are ignored, reads past the structure are 0.
    d.common_write(0x19, 1, 0xff);
    d.common_write(0x3f, 8, u64::MAX);
    assert_eq!(d.common_read(0x3c, 4), 0);
    assert_eq!(d.common_read(0x18, 2), 256);
}

#[test]
fn unusable_rings_need_a_reset() {
    let mut d = Driver::new(false, None, None);
    let f = d.device_features();
    let s = d.negotiate(f);
    d.setup_queue(0);
    d.common_write(0x20, 8, 1 << 40); // descriptors outside guest RAM
    d.set_status(s | status::DRIVER_OK);
    assert_eq!(
        d.status() & (status::DRIVER_OK | status::DEVICE_NEEDS_RESET),
        0x40
    );
    assert_eq!(d.svc.spawner.live(), 0);
}

#[test]
fn pci_cfg_window_reaches_bar0() {
    let mut d = Driver::new(false, None, None);
    let at = d.caps[&5].at;
    d.dev.config_write(at + 4, &[0]);
    d.dev.config_write(at + 8, &0x12u32.to_le_bytes());
    d.dev.config_write(at + 12, &2u32.to_le_bytes());
    assert_eq!(
        d.cfg32(at + 16) & 0xffff,
        1,
        "num_queues through the window"
    );
    d.dev.config_write(at + 8, &0x14u32.to_le_bytes());
    d.dev.config_write(at + 12, &1u32.to_le_bytes());
    d.dev.config_write(at + 16, &[status::ACKNOWLEDGE]);
    assert_eq!(d.status(), status::ACKNOWLEDGE);
    // A bad window (length 3, or past the BAR) does nothing.
    d.dev.config_write(at + 12, &3u32.to_le_bytes());
    d.dev.config_write(at + 16, &[0]);
    assert_eq!(d.status(), status::ACKNOWLEDGE);
    d.dev.config_write(at + 8, &0x4000u32.to_le_bytes());
    d.dev.config_write(at + 12, &4u32.to_le_bytes());
    let _ = d.cfg32(at + 16);
}

fn irqfd_fds(d: &Driver) -> Vec<RawFd> {
    d.svc.router.state().irqfds.values().copied().collect()
}

fn pba(d: &mut Driver) -> u64 {
    let mut b = [0u8; 8];
    d.dev.bar_read(2, 0x800, &mut b);
    u64::from_le_bytes(b)
}

#[test]
fn msix_masked_vector_is_pending_until_unmasked() {
    let mut d = Driver::new(false, None, None);
    let cap = d.msix_cap.unwrap();
    d.dev.config_write(cap + 2, &0x8000u16.to_le_bytes());
    // Entry 1 (the queue's): a message, still masked.
    for (off, v) in [(16u64, 0xfee0_0000u32), (20, 0), (24, 0x41)] {
        d.dev.bar_write(2, off, &v.to_le_bytes());
    }
    let mut e = [0u8; 16];
    d.dev.bar_read(2, 16, &mut e);
    assert_eq!(&e[8..16], &[0x41, 0, 0, 0, 1, 0, 0, 0]);
    d.start();
    assert_eq!(d.request(FLUSH, 0, &[]).0, 0);
    assert_eq!(pba(&mut d), 0b10);
    assert!(irqfd_fds(&d).is_empty());
    // Unmask: the irqfd goes in (KVM then delivers what the eventfd holds).
    d.dev.bar_write(2, 28, &0u32.to_le_bytes());
    assert_eq!(pba(&mut d), 0);
    assert_eq!(irqfd_fds(&d).len(), 1);
    let gsi = *d.svc.router.state().irqfds.keys().next().unwrap();
    assert_eq!(d.svc.router.state().routes[&gsi].data, 0x41);
    // The function mask holds it back again.
    d.dev.config_write(cap + 2, &0xc000u16.to_le_bytes());
    assert!(irqfd_fds(&d).is_empty());
    d.dev.config_write(cap + 2, &0x8000u16.to_le_bytes());
    assert_eq!(irqfd_fds(&d).len(), 1);
    // Disabling MSI-X gives the GSI back.
    d.dev.config_write(cap + 2, &0u16.to_le_bytes());
    assert!(d.svc.router.state().allocated.is_empty());
    // Misaligned or out-of-table accesses are ignored.
    d.dev.bar_write(2, 18, &1u32.to_le_bytes());
    d.dev.bar_write(2, 0x7fc, &1u32.to_le_bytes());
    d.dev.bar_write(2, u64::MAX - 2, &1u32.to_le_bytes());
}

fn readable(fd: RawFd) -> bool {
    let mut v = 0u64;
    // SAFETY: reading 8 bytes into a u64 from a non-blocking eventfd.
    unsafe { libc::read(fd, (&mut v as *mut u64).cast(), 8) == 8 }
}

fn signal(fd: RawFd) {
    let v = 1u64;
    // SAFETY: writing 8 bytes from a u64 to an eventfd.
    unsafe { libc::write(fd, (&v as *const u64).cast(), 8) };
}

#[test]
fn intx_sets_isr_and_reasserts_on_resample() {
    let mut d = Driver::new(false, None, Some(5));
    // Wired when the device is built (the worker that asserts it may not register irqfds).
    assert!(d.svc.router.state().resample_irqfds.contains_key(&5));
    d.start();
    assert_eq!(d.request(FLUSH, 0, &[]).0, 0);
    let (trigger, resample) = d.svc.router.state().resample_irqfds[&5];
    assert!(readable(trigger), "asserted");
    assert_ne!(d.cfg32(4) & (1 << 19), 0, "status: interrupt");
    // The guest EOIs without reading the ISR: the line comes back.
    signal(resample);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !readable(trigger) {
        assert!(Instant::now() < deadline, "not re-asserted");
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(d.read(3, 0, 1), 1, "ISR: queue");
    assert_eq!(d.read(3, 0, 1), 0, "read clears");
    assert_eq!(d.cfg32(4) & (1 << 19), 0);
    signal(resample);
    std::thread::sleep(Duration::from_millis(20));
    assert!(!readable(trigger), "nothing pending, no re-assert");
    let router = d.svc.router.clone();
    drop(d);
    assert!(router.state().resample_irqfds.is_empty(), "unwired on drop");
}

#[test]
fn ioeventfds_follow_bar0() {
    let mut d = Driver::new(false, None, None);
    let at = |d: &Driver| d.svc.ioevents.state().keys().copied().collect::<Vec<_>>();
    assert_eq!(at(&d), [BAR0_ADDR + 0x3000]);
    // The root moves BAR 0: unmapped at the old address, mapped at the new one.
    let old = d.dev.bars()[0];
    d.dev.bar_unmapped(&old);
    assert!(at(&d).is_empty());
    let new = 0x1_0000_0000u64;
    d.dev.config_write(BAR0, &(new as u32 | 4).to_le_bytes());
    d.dev
        .config_write(BAR0 + 4, &((new >> 32) as u32).to_le_bytes());
    let bar = d.dev.bars()[0];
    assert_eq!(bar.addr, new);
    d.dev.bar_mapped(&bar).unwrap();
    assert_eq!(at(&d), [new + 0x3000]);
    // Mapped again elsewhere without an unmap in between: moved, not doubled.
    let mut moved = bar;
    moved.addr = 0x2_0000_0000;
    d.dev.bar_mapped(&moved).unwrap();
    assert_eq!(at(&d), [moved.addr + 0x3000]);
    // The ioeventfd is queue 0's notifier: signalling it, as KVM does on the guest's
    // write, gets the request served.
    d.start();
    // The worker's first look at the ring (it serves what was there at start) is over.
    std::thread::sleep(Duration::from_millis(20));
    d.trap_notify = false;
    d.header(super::BUFS, FLUSH, 0);
    d.submit(&[
        (super::BUFS, 16, 0),
        (super::BUFS + 0x100, 1, super::F_WRITE),
    ]);
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(d.used_idx(), 0, "no notify, no service");
    signal(d.svc.ioevents.state()[&(moved.addr + 0x3000)]);
    d.wait_used(0);
    // Dropping the device takes them out.
    drop(d.dev);
    assert!(d.svc.ioevents.state().is_empty());
}
