//! Opening the device: CIDs, socket paths, the socket file's life; identity and config.

use std::os::unix::net::{UnixListener, UnixStream};

use super::{assert_closed, client, host_connect, Guest, CID};
use crate::pci::PciDevice;
use crate::virtio::{VirtioDevice, VirtioVsock, VsockError, VIRTIO_F_VERSION_1};

#[test]
fn reserved_and_oversized_cids_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("v.sock");
    for cid in [0, 1, 2, u64::from(u32::MAX)] {
        let e = VirtioVsock::open(cid, &p).err().unwrap();
        assert!(matches!(e, VsockError::ReservedCid(c) if c == cid), "{e}");
        assert!(e.to_string().contains("from 3 to 4294967294"));
    }
    let e = VirtioVsock::open(1 << 32, &p).err().unwrap();
    assert!(matches!(e, VsockError::CidTooLarge(_)), "{e}");
    assert!(!p.exists(), "nothing bound");
    assert!(VirtioVsock::open(3, &p).is_ok());
}

#[test]
fn socket_paths_in_use_stale_or_not_sockets() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("v.sock");
    let v = VirtioVsock::open(CID, &p).unwrap();
    let e = VirtioVsock::open(4, &p).err().unwrap();
    assert!(matches!(e, VsockError::InUse(_)), "{e}");
    assert!(e.to_string().contains(&*p.to_string_lossy()));
    drop(v);
    assert!(!p.exists(), "removed on drop");

    // A socket file nobody listens on (a listener dropped without unlinking).
    drop(UnixListener::bind(&p).unwrap());
    assert!(p.exists());
    let v = VirtioVsock::open(CID, &p).unwrap();
    assert!(UnixStream::connect(&p).is_ok(), "bound again");
    drop(v);

    let f = dir.path().join("file");
    std::fs::write(&f, b"keep me").unwrap();
    let e = VirtioVsock::open(CID, &f).err().unwrap();
    assert!(matches!(e, VsockError::NotASocket(_)), "{e}");
    assert_eq!(std::fs::read(&f).unwrap(), b"keep me");

    let e = VirtioVsock::open(CID, &dir.path().join("no/such/dir/v.sock"))
        .err()
        .unwrap();
    assert!(matches!(e, VsockError::NoDirectory(_)), "{e}");
    let long = dir.path().join("x".repeat(100));
    let e = VirtioVsock::open(CID, &long).err().unwrap();
    assert!(matches!(e, VsockError::PathTooLong { .. }), "{e}");
}

#[test]
fn a_replaced_socket_file_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("v.sock");
    let v = VirtioVsock::open(CID, &p).unwrap();
    std::fs::remove_file(&p).unwrap();
    let other = UnixListener::bind(&p).unwrap();
    drop(v);
    assert!(p.exists(), "another's socket stays");
    drop(other);
}

#[test]
fn identity_features_and_config() {
    let mut g = Guest::inactive();
    assert_eq!(g.dev.config_read(0), 0x1053_1af4, "virtio 1.x device 19");
    g.common_write(0x00, 4, 0);
    assert_eq!(g.common_read(0x04, 4), 0);
    g.common_write(0x00, 4, 1);
    assert_eq!(g.common_read(0x04, 4) << 32, VIRTIO_F_VERSION_1);
    assert_eq!(g.common_read(0x12, 2), 3, "three queues");
    let mut cfg = [0u8; 8];
    g.dev.bar_read(0, 0x2000, &mut cfg);
    assert_eq!(u64::from_le_bytes(cfg), CID);
    let v = VirtioVsock::open(7, &g.dir.path().join("w.sock")).unwrap();
    let mut hi = [0xffu8; 4];
    v.read_config(4, &mut hi);
    assert_eq!(hi, [0; 4]);
    v.read_config(8, &mut hi);
    assert_eq!(hi, [0; 4], "past the end reads 0");
}

#[test]
fn reset_joins_the_worker_and_closes_host_streams() {
    let mut g = Guest::new();
    assert_eq!(g.svc.spawner.live(), 1);
    let (mut s, _) = host_connect(&mut g, 5000);
    g.common_write(0x14, 1, 0);
    assert_eq!(g.svc.spawner.live(), 0, "joined by the reset");
    assert_closed(&mut s);
    // The listener stays bound: a client queues until the driver is back.
    let mut c = client(&g);
    g.activate();
    assert_eq!(g.svc.spawner.live(), 1);
    use std::io::Write;
    c.write_all(b"CONNECT 7\n").unwrap();
    let (h, _) = g.recv();
    assert_eq!(
        (h.op, h.dst_port),
        (crate::virtio::vsock::packet::OP_REQUEST, 7)
    );
    let sock = g.sock.clone();
    drop(g);
    assert!(!sock.exists());
    assert_closed(&mut c);
}
