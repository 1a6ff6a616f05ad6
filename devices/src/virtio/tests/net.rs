//! virtio-net through the transport (the driver side is `net_driver.rs`).

use std::time::Duration;

use vm_memory::{Bytes, GuestAddress};

use super::net_driver::{cpu_ticks, frame, Net, Ring, MAC, MRG_RXBUF};
use super::F_WRITE;
use crate::services::WorkerKind;
use crate::virtio::net::MAX_FRAME_LEN;

const TX_BUF: u64 = 0x80000;
const RX_BUF: u64 = 0x10000;

#[test]
fn a_guest_frame_reaches_the_tap_with_its_header() {
    let mut n = Net::start(0);
    let f = frame(7, 60);
    n.d.mem.write_slice(&f, GuestAddress(TX_BUF)).unwrap();
    // The header in a descriptor of its own, the frame split over two more.
    let head = n.submit(
        1,
        &[(TX_BUF, 12, 0), (TX_BUF + 12, 20, 0), (TX_BUF + 32, 40, 0)],
    );
    assert_eq!(n.wait_used(1, 0), (u32::from(head), 0));
    assert_eq!(n.recv_peer(Duration::from_secs(5)).unwrap(), f);
    // One descriptor with everything.
    n.submit(1, &[(TX_BUF, f.len() as u32, 0)]);
    n.wait_used(1, 1);
    assert_eq!(n.recv_peer(Duration::from_secs(5)).unwrap(), f);
    let s = n.stats.get();
    assert_eq!((s.tx_frames, s.tx_bytes, s.tx_dropped), (2, 2 * 72, 0));
}

#[test]
fn a_tap_frame_lands_in_a_receive_buffer() {
    let mut n = Net::start(0);
    let head = n.submit(0, &[(RX_BUF, 2048, F_WRITE)]);
    let f = frame(3, 100);
    n.send_peer(&f);
    assert_eq!(n.wait_used(0, 0), (u32::from(head), f.len() as u32));
    let got = n.read(RX_BUF, f.len());
    assert_eq!(&got[..10], &f[..10], "header as the tap gave it");
    assert_eq!(u16::from_le_bytes([got[10], got[11]]), 1, "num_buffers");
    assert_eq!(&got[12..], &f[12..]);
    let s = n.stats.get();
    assert_eq!((s.rx_frames, s.rx_bytes, s.rx_dropped), (1, 112, 0));
}

#[test]
fn a_frame_spans_three_small_buffers_with_num_buffers_3() {
    let mut n = Net::start(0);
    let heads: Vec<u16> = (0..4)
        .map(|i| n.post(0, &[(RX_BUF + 0x1000 * i, 512, F_WRITE)]))
        .collect();
    n.notify(0);
    let f = frame(9, 1200); // 1212 bytes: 512 + 512 + 188
    n.send_peer(&f);
    let lens: Vec<(u32, u32)> = (0..3).map(|i| n.wait_used(0, i)).collect();
    assert_eq!(
        lens,
        vec![
            (u32::from(heads[0]), 512),
            (u32::from(heads[1]), 512),
            (u32::from(heads[2]), 188)
        ]
    );
    let mut got = n.read(RX_BUF, 512);
    got.extend(n.read(RX_BUF + 0x1000, 512));
    got.extend(n.read(RX_BUF + 0x2000, 188));
    assert_eq!(u16::from_le_bytes([got[10], got[11]]), 3, "num_buffers");
    assert_eq!(&got[12..], &f[12..]);
    // The fourth buffer is still there for the next frame.
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(n.used_idx(0), 3);
    let g = frame(10, 50);
    n.send_peer(&g);
    assert_eq!(n.wait_used(0, 3), (u32::from(heads[3]), g.len() as u32));
}

#[test]
fn without_buffers_a_frame_waits_for_the_guest() {
    let mut n = Net::start(0);
    let f = frame(5, 300);
    n.send_peer(&f);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(n.used_idx(0), 0);
    // Too few buffers for it: it still waits (and nothing is completed).
    n.submit(0, &[(RX_BUF, 200, F_WRITE)]);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(n.used_idx(0), 0);
    n.submit(0, &[(RX_BUF + 0x1000, 200, F_WRITE)]);
    assert_eq!(n.wait_used(0, 0).1, 200);
    assert_eq!(n.wait_used(0, 1).1, 112);
    let mut got = n.read(RX_BUF, 200);
    got.extend(n.read(RX_BUF + 0x1000, 112));
    assert_eq!(&got[12..], &f[12..]);
    assert_eq!(u16::from_le_bytes([got[10], got[11]]), 2);
}

#[test]
fn a_frame_waiting_for_buffers_does_not_spin_the_worker() {
    let mut n = Net::start(0);
    n.send_peer(&frame(6, 100));
    std::thread::sleep(Duration::from_millis(20));
    let tid = *n.d.svc.spawner.tids.lock().unwrap().last().unwrap();
    let before = cpu_ticks(tid);
    std::thread::sleep(Duration::from_millis(500));
    let spent = cpu_ticks(tid) - before;
    // A spinning poll would take the whole 50 ticks.
    assert!(
        spent <= 5,
        "the worker used {spent} ticks while the frame waited"
    );
    n.submit(0, &[(RX_BUF, 2048, F_WRITE)]);
    assert_eq!(n.wait_used(0, 0).1, 112);
}

#[test]
fn bad_transmit_chains_are_completed_empty() {
    let mut n = Net::start(0);
    let f = frame(1, 60);
    n.d.mem.write_slice(&f, GuestAddress(TX_BUF)).unwrap();
    // A device-writable descriptor; shorter than the header; over the size limit; outside RAM.
    n.submit(1, &[(TX_BUF, 12, 0), (TX_BUF + 12, 60, F_WRITE)]);
    n.submit(1, &[(TX_BUF, 8, 0)]);
    let big = MAX_FRAME_LEN as u32 - 12 + 1;
    n.submit(1, &[(TX_BUF, 12, 0), (0x10000, big, 0)]);
    n.submit(1, &[(1 << 40, 72, 0)]);
    for i in 0..4 {
        assert_eq!(n.wait_used(1, i).1, 0);
    }
    assert_eq!(n.recv_peer(Duration::from_millis(50)), None);
    let s = n.stats.get();
    assert_eq!((s.tx_frames, s.tx_dropped, s.bad_chains), (0, 4, 4));
    // The largest allowed frame goes through; the device still works.
    n.submit(1, &[(TX_BUF, 12, 0), (0x10000, big - 1, 0)]);
    n.wait_used(1, 4);
    assert_eq!(
        n.recv_peer(Duration::from_secs(5)).unwrap().len(),
        MAX_FRAME_LEN
    );
}

#[test]
fn bad_receive_chains_are_completed_empty_after_the_frame() {
    let mut n = Net::start(0);
    // Read-only (first: completed at once); then a good one, a read-only one, a good one.
    n.post(0, &[(RX_BUF, 512, 0)]);
    n.post(0, &[(RX_BUF + 0x1000, 100, F_WRITE)]);
    n.post(0, &[(RX_BUF + 0x2000, 100, 0)]);
    n.post(0, &[(RX_BUF + 0x3000, 100, F_WRITE)]);
    n.notify(0);
    let f = frame(2, 150); // 162 bytes: 100 + 62
    n.send_peer(&f);
    let used: Vec<(u32, u32)> = (0..4).map(|i| n.wait_used(0, i)).collect();
    assert_eq!(used, vec![(0, 0), (1, 100), (3, 62), (2, 0)]);
    let s = n.stats.get();
    assert_eq!((s.rx_frames, s.rx_dropped, s.bad_chains), (1, 0, 2));
}

#[test]
fn without_mergeable_buffers_a_frame_needs_one_chain() {
    let mut n = Net::start(MRG_RXBUF);
    n.submit(0, &[(RX_BUF, 100, F_WRITE)]);
    // Too big for the posted buffer: dropped, the buffer kept.
    n.send_peer(&frame(1, 200));
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(n.used_idx(0), 0);
    let f = frame(2, 80);
    n.send_peer(&f);
    assert_eq!(n.wait_used(0, 0).1, 92);
    let got = n.read(RX_BUF, 92);
    assert_eq!(u16::from_le_bytes([got[10], got[11]]), 1);
    let s = n.stats.get();
    assert_eq!(
        (s.rx_frames, s.rx_dropped),
        (1, 1),
        "the big frame is counted"
    );
    assert_eq!(&got[12..], &f[12..]);
}

#[test]
fn a_full_tap_keeps_transmit_chains_for_later() {
    let mut n = Net::start(0);
    let count = 14u16;
    let len = 20_000;
    for i in 0..count {
        let f = frame(i as u8, len);
        let at = TX_BUF + 0x5000 * u64::from(i);
        n.d.mem.write_slice(&f, GuestAddress(at)).unwrap();
        n.post(1, &[(at, f.len() as u32, 0)]);
    }
    n.notify(1);
    // The socket holds fewer than all of them until the peer reads.
    std::thread::sleep(Duration::from_millis(100));
    assert!(n.used_idx(1) < count, "the peer's queue never filled");
    for i in 0..count {
        let got = n.recv_peer(Duration::from_secs(5)).expect("frame");
        assert_eq!(got, frame(i as u8, len), "frame {i} in order");
    }
    n.wait_used(1, count - 1);
    let s = n.stats.get();
    assert_eq!((s.tx_frames, s.tx_dropped), (u64::from(count), 0));
}

#[test]
fn config_and_features() {
    let mut n = Net::start(0);
    let f = n.d.device_features();
    for bit in [0, 1, 5, 7, 8, 11, 12, 13, 15, 16, 32] {
        assert_ne!(f & (1 << bit), 0, "feature bit {bit}");
    }
    // No control queue, no multiqueue, no event index.
    for bit in [17, 22, 29] {
        assert_eq!(f & (1 << bit), 0, "feature bit {bit}");
    }
    let mac: Vec<u8> = (0..6).map(|i| n.d.read(4, i, 1) as u8).collect();
    assert_eq!(mac, MAC);
    assert_eq!(n.d.read(4, 6, 2), 1, "link up");
    assert_eq!(n.d.common_read(0x12, 2), 2, "two queues");
}

#[test]
fn reset_joins_the_worker_and_the_tap_stays_open() {
    let mut n = Net::start(0);
    assert_eq!(n.d.svc.spawner.live(), 1);
    assert_eq!(
        *n.d.svc.spawner.kinds.lock().unwrap(),
        vec![WorkerKind::VirtioNet]
    );
    n.d.set_status(0);
    assert_eq!(
        n.d.svc.spawner.live(),
        0,
        "joined before the write returned"
    );
    assert!(!n.d.dev.is_active());
    // A driver reload: fresh rings, and frames flow again over the same tap.
    n.d.mem
        .write_slice(&[0u8; 0x6000], GuestAddress(0x1000))
        .unwrap();
    n.rx = Ring::new(0, 0x1000);
    n.tx = Ring::new(1, 0x4000);
    n.activate(0);
    assert_eq!(n.d.svc.spawner.live(), 1);
    let f = frame(4, 64);
    n.d.mem.write_slice(&f, GuestAddress(TX_BUF)).unwrap();
    n.submit(1, &[(TX_BUF, f.len() as u32, 0)]);
    assert_eq!(n.recv_peer(Duration::from_secs(5)).unwrap(), f);
    let spawner = n.d.svc.spawner.clone();
    drop(n);
    assert_eq!(spawner.live(), 0, "dropping the device joins the worker");
}
