//! The parts of virtio-net that need no queue: MACs, feature and offload mapping, open
//! errors, and (as root with /dev/net/tun) a real tap.

use std::io;

use super::tap::{attach_error, name_problem, open_error};
use super::*;

#[test]
fn stable_mac_is_deterministic_local_unicast_and_per_seed() {
    let a = stable_mac(b"vm-1/tap0");
    assert_eq!(a, stable_mac(b"vm-1/tap0"));
    let mut seen = std::collections::BTreeSet::new();
    for seed in [
        "",
        "a",
        "b",
        "vm-1/tap0",
        "vm-1/tap1",
        "vm-2/tap0",
        "x".repeat(300).as_str(),
    ] {
        let m = stable_mac(seed.as_bytes());
        assert_eq!(m[0] & 0x02, 0x02, "{seed:?}: locally administered");
        assert_eq!(m[0] & 0x01, 0, "{seed:?}: unicast");
        assert!(seen.insert(m), "{seed:?}: {m:02x?} repeats");
    }
    // Pinned: the VMM's MACs must not change between versions.
    assert_eq!(stable_mac(b""), [0xea, 0xf2, 0x9c, 0xe4, 0x84, 0x07]);
}

fn errno(n: i32) -> io::Error {
    io::Error::from_raw_os_error(n)
}

#[test]
fn open_errors_map_to_their_cause() {
    for n in [libc::ENOENT, libc::ENODEV, libc::ENXIO] {
        let e = open_error("tap0", errno(n));
        assert!(matches!(e, NetError::TunMissing { .. }), "{e}");
        assert!(e.to_string().contains("modprobe tun"));
    }
    let e = open_error("tap0", errno(libc::EACCES));
    assert!(matches!(e, NetError::PermissionDenied { .. }), "{e}");
    for n in [libc::EPERM, libc::EACCES] {
        let e = attach_error("tap0", errno(n));
        let msg = e.to_string();
        assert!(matches!(e, NetError::PermissionDenied { .. }), "{msg}");
        assert!(msg.contains("CAP_NET_ADMIN"), "{msg}");
        assert!(msg.contains("ip tuntap add tap0 mode tap user "), "{msg}");
    }
    let e = attach_error("tap0", errno(libc::EBUSY));
    assert!(matches!(e, NetError::Busy { .. }), "{e}");
    let e = attach_error("tap0", errno(libc::EINVAL));
    assert!(matches!(e, NetError::NotATap { .. }), "{e}");
    let e = attach_error("tap0", errno(libc::ENOMEM));
    assert!(matches!(e, NetError::Io { .. }), "{e}");
    for e in [
        attach_error("tap0", errno(libc::EBUSY)),
        attach_error("tap0", errno(libc::EINVAL)),
        open_error("tap0", errno(libc::ENOENT)),
        attach_error("tap0", errno(libc::EIO)),
    ] {
        let msg = e.to_string();
        assert!(msg.starts_with("tap tap0"), "{msg}");
        assert!(!msg.contains("--"), "no command-line words: {msg}");
    }
}

#[test]
fn bad_names_are_refused_before_any_syscall() {
    for name in [
        "",
        "0123456789abcdef",
        "a/b",
        "a b",
        "tab\t",
        "x:1",
        "tap%d",
        ".",
        "..",
        "a\0",
    ] {
        assert!(name_problem(name).is_some(), "{name:?}");
        let e = VirtioNet::open(name, [2, 0, 0, 0, 0, 1]).err().unwrap();
        assert!(matches!(e, NetError::InvalidName { .. }), "{name:?}: {e}");
    }
    for name in ["tap0", "0123456789abcde", "zt-vm.1_x"] {
        assert_eq!(name_problem(name), None, "{name:?}");
    }
}

#[test]
fn offers_and_offloads_follow_the_tap_and_the_driver() {
    use virtio_bindings::virtio_net::*;
    let all = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN | TUN_F_UFO;
    let f = offered_features(all);
    assert_eq!(offload_flags(f), all);
    // A tap without offloads: the host-side ones stay, nothing for the guest.
    let f0 = offered_features(0);
    let guest = bit(VIRTIO_NET_F_GUEST_CSUM)
        | bit(VIRTIO_NET_F_GUEST_TSO4)
        | bit(VIRTIO_NET_F_GUEST_TSO6)
        | bit(VIRTIO_NET_F_GUEST_ECN)
        | bit(VIRTIO_NET_F_GUEST_UFO);
    assert_eq!(f0 & guest, 0);
    assert_ne!(f0 & bit(VIRTIO_NET_F_HOST_TSO4), 0);
    assert_ne!(f0 & bit(VIRTIO_NET_F_MRG_RXBUF), 0);
    // Only checksums taken: no TSO offered.
    assert_eq!(
        offered_features(TUN_F_CSUM) & guest,
        bit(VIRTIO_NET_F_GUEST_CSUM)
    );
    // A driver that takes TSO without CSUM (against the spec) gets no offload; ECN alone
    // means nothing.
    assert_eq!(offload_flags(bit(VIRTIO_NET_F_GUEST_TSO4)), 0);
    assert_eq!(
        offload_flags(bit(VIRTIO_NET_F_GUEST_CSUM) | bit(VIRTIO_NET_F_GUEST_ECN)),
        TUN_F_CSUM
    );
    assert_eq!(offload_flags(0), 0);
}

#[test]
fn a_real_tap_opens_and_probes_its_offloads() {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root || !std::path::Path::new("/dev/net/tun").exists() {
        eprintln!("skipped: needs root and /dev/net/tun");
        return;
    }
    let name = format!("zt-t{}", std::process::id() % 100_000);
    let net = match VirtioNet::open(&name, stable_mac(name.as_bytes())) {
        Ok(n) => n,
        Err(e @ (NetError::PermissionDenied { .. } | NetError::TunMissing { .. })) => {
            eprintln!("skipped: {e}");
            return;
        }
        Err(e) => panic!("{e}"),
    };
    assert_eq!(net.tap_name(), name);
    let off = net.tap_offloads();
    eprintln!("tap {name}: offloads {off:#x}");
    assert_ne!(
        off & TUN_F_CSUM,
        0,
        "every tap with a vnet header takes CSUM"
    );
    assert_ne!(off & TUN_F_TSO4, 0);
    let f = net.features();
    assert_ne!(
        f & bit(virtio_bindings::virtio_net::VIRTIO_NET_F_GUEST_CSUM),
        0
    );
    assert_eq!(offered_features(off), f);
    // The offloads the driver takes can be set on it.
    net.tap.set_offload(offload_flags(f)).unwrap();
    net.tap.set_offload(0).unwrap();
    // Held by this process (not multi-queue): a second open is busy.
    let e = VirtioNet::open(&name, [2, 0, 0, 0, 0, 1]).err().unwrap();
    assert!(matches!(e, NetError::Busy { .. }), "{e}");
    // Nothing waits to be read on a fresh tap, and it does not block.
    let mut buf = vec![0u8; MAX_FRAME_LEN];
    assert!(matches!(net.tap.recv(&mut buf), Ok(None) | Ok(Some(_))));
}
