//! virtio-blk requests end to end, and opening disks.

use std::path::Path;

use vm_memory::{Bytes, GuestAddress};

use super::{Driver, BUFS, F_WRITE};
use crate::virtio::{BlockError, VirtioBlock};

const IN: u32 = 0;
const OUT: u32 = 1;
const FLUSH: u32 = 4;
const GET_ID: u32 = 8;
const S_OK: u8 = 0;
const S_IOERR: u8 = 1;
const S_UNSUPP: u8 = 2;
const DATA: u64 = BUFS + 0x1000;

#[test]
fn write_lands_in_the_file_and_reads_back() {
    let mut d = Driver::new(false, None, None);
    d.start();
    let pattern: Vec<u8> = (0..1024u32).map(|i| (i * 7) as u8).collect();
    d.mem.write_slice(&pattern, GuestAddress(DATA)).unwrap();
    // Two data descriptors of one sector each.
    let (s, len) = d.request(OUT, 3, &[(DATA, 512, 0), (DATA + 512, 512, 0)]);
    assert_eq!((s, len), (S_OK, 1));
    assert_eq!(&d.file_bytes()[3 * 512..5 * 512], &pattern[..]);

    let back = DATA + 0x4000;
    let (s, len) = d.request(IN, 3, &[(back, 1024, F_WRITE)]);
    assert_eq!((s, len), (S_OK, 1025));
    let mut got = vec![0u8; 1024];
    d.mem.read_slice(&mut got, GuestAddress(back)).unwrap();
    assert_eq!(got, pattern);
    // An untouched sector reads what the file had.
    let (s, _) = d.request(IN, 10, &[(back, 512, F_WRITE)]);
    assert_eq!(s, S_OK);
    d.mem
        .read_slice(&mut got[..512], GuestAddress(back))
        .unwrap();
    assert!(got[..512].iter().all(|&b| b == 10 ^ 0x5a));
}

#[test]
fn get_id_returns_the_serial() {
    let mut d = Driver::new(false, Some("serial-123"), None);
    d.start();
    let (s, len) = d.request(GET_ID, 0, &[(DATA, 20, F_WRITE)]);
    assert_eq!((s, len), (S_OK, 21));
    let mut id = [0u8; 20];
    d.mem.read_slice(&mut id, GuestAddress(DATA)).unwrap();
    assert_eq!(&id[..10], b"serial-123");
    assert!(id[10..].iter().all(|&b| b == 0));
}

#[test]
fn flush_and_unsupported_requests() {
    let mut d = Driver::new(false, None, None);
    d.start();
    assert_eq!(d.request(FLUSH, 0, &[]), (S_OK, 1));
    assert_eq!(d.request(11, 0, &[]).0, S_UNSUPP); // DISCARD: not offered
}

#[test]
fn readonly_refuses_writes_and_keeps_the_file() {
    let mut d = Driver::new(true, None, None);
    assert_ne!(d.device_features() & (1 << 5), 0, "VIRTIO_BLK_F_RO");
    d.start();
    let before = d.file_bytes();
    d.mem.write_slice(&[0xee; 512], GuestAddress(DATA)).unwrap();
    assert_eq!(d.request(OUT, 0, &[(DATA, 512, 0)]), (S_IOERR, 1));
    assert_eq!(d.file_bytes(), before);
    assert_eq!(d.request(IN, 0, &[(DATA, 512, F_WRITE)]).0, S_OK);
}

#[test]
fn bad_requests_get_ioerr() {
    let mut d = Driver::new(false, None, None);
    d.start();
    let before = d.file_bytes();
    // 64 sectors: the last one is 63.
    assert_eq!(d.request(IN, 63, &[(DATA, 1024, F_WRITE)]).0, S_IOERR);
    assert_eq!(
        d.request(IN, u64::MAX / 4, &[(DATA, 512, F_WRITE)]).0,
        S_IOERR
    );
    assert_eq!(d.request(IN, 64, &[(DATA, 512, F_WRITE)]).0, S_IOERR);
    assert_eq!(d.request(IN, 63, &[(DATA, 512, F_WRITE)]).0, S_OK);
    // Not a multiple of 512; data in the wrong direction; outside guest RAM.
    assert_eq!(d.request(OUT, 0, &[(DATA, 100, 0)]).0, S_IOERR);
    assert_eq!(d.request(OUT, 0, &[(DATA, 512, F_WRITE)]).0, S_IOERR);
    assert_eq!(d.request(IN, 0, &[(DATA, 512, 0)]).0, S_IOERR);
    assert_eq!(d.request(OUT, 0, &[(1 << 40, 512, 0)]).0, S_IOERR);
    assert_eq!(d.file_bytes(), before);

    // A header the device could write to, or too short.
    let status_at = BUFS + 0x100;
    d.header(BUFS, IN, 0);
    let n = 8;
    d.submit(&[(BUFS, 16, F_WRITE), (status_at, 1, F_WRITE)]);
    d.wait_used(n);
    let s: u8 = d.mem.read_obj(GuestAddress(status_at)).unwrap();
    assert_eq!(s, S_IOERR);
    d.submit(&[(BUFS, 8, 0), (status_at, 1, F_WRITE)]);
    d.wait_used(n + 1);
    // No writable status byte at all: completed with nothing written.
    d.submit(&[(BUFS, 16, 0), (status_at, 1, 0)]);
    assert_eq!(d.wait_used(n + 2).1, 0);
    // The device still works.
    assert_eq!(d.request(FLUSH, 0, &[]).0, S_OK);
}

#[test]
fn reset_stops_the_worker() {
    let mut d = Driver::new(false, None, None);
    d.start();
    assert_eq!(d.svc.spawner.live(), 1);
    d.set_status(0);
    // reset() joined the thread before the write returned.
    assert_eq!(d.svc.spawner.live(), 0);
    assert_eq!(d.status(), 0);
    assert!(!d.dev.is_active());
    assert_eq!(d.common_read(0x1c, 2), 0, "queue disabled");
    // And it comes back.
    d = restart(d);
    assert_eq!(d.svc.spawner.live(), 1);
    drop(d);
}

fn restart(mut d: Driver) -> Driver {
    d.mem
        .write_obj(0u16, GuestAddress(super::AVAIL + 2))
        .unwrap();
    d.mem
        .write_obj(0u16, GuestAddress(super::USED + 2))
        .unwrap();
    d.start();
    d
}

#[test]
fn dropping_the_device_joins_the_worker() {
    let d = Driver::new(false, None, None);
    let mut d = d;
    d.start();
    let spawner = d.svc.spawner.clone();
    assert_eq!(spawner.live(), 1);
    drop(d);
    assert_eq!(spawner.live(), 0);
}

fn open_err(path: &Path, readonly: bool) -> BlockError {
    match VirtioBlock::open(path, readonly, None) {
        Err(e) => e,
        Ok(_) => panic!("{} opened", path.display()),
    }
}

#[test]
fn open_errors_name_the_cause_and_path() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.img");
    let e = open_err(&missing, false);
    assert!(matches!(e, BlockError::NotFound(_)), "{e}");
    assert!(e.to_string().contains("nope.img"));
    assert!(!e.to_string().contains("--"));
    assert!(matches!(
        open_err(dir.path(), true),
        BlockError::IsDirectory(_)
    ));

    let f = super::disk_file(4);
    let long = "x".repeat(21);
    let e = VirtioBlock::open(f.path(), false, Some(long))
        .err()
        .unwrap();
    assert!(
        matches!(e, BlockError::SerialTooLong { len: 21, .. }),
        "{e}"
    );

    // A writable open holds the lock against any other open.
    let held = VirtioBlock::open(f.path(), false, None).unwrap();
    assert!(matches!(open_err(f.path(), false), BlockError::Locked(_)));
    assert!(matches!(open_err(f.path(), true), BlockError::Locked(_)));
    drop(held);
    // Read-only opens share.
    let a = VirtioBlock::open(f.path(), true, None).unwrap();
    let _b = VirtioBlock::open(f.path(), true, None).unwrap();
    assert!(matches!(open_err(f.path(), false), BlockError::Locked(_)));
    assert_eq!(a.capacity(), 4);
}

#[test]
fn a_read_only_file_opened_writable_says_readonly() {
    // Root ignores file modes; sysfs still refuses it writes to a 0444 attribute.
    let ro = if unsafe { libc::geteuid() } == 0 {
        let p = Path::new("/sys/kernel/notes");
        if !p.exists() {
            return;
        }
        p.to_path_buf()
    } else {
        let f = super::disk_file(1);
        let (_, p) = f.keep().unwrap();
        let mut perm = std::fs::metadata(&p).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o444);
        std::fs::set_permissions(&p, perm).unwrap();
        p
    };
    let e = open_err(&ro, false);
    assert!(matches!(e, BlockError::ReadOnly(_)), "{e}");
    assert!(e.to_string().contains("readonly=on"));
}

#[test]
fn odd_sizes_round_down() {
    let mut f = super::disk_file(2);
    std::io::Write::write_all(&mut f, &[1; 100]).unwrap();
    assert_eq!(
        VirtioBlock::open(f.path(), true, None).unwrap().capacity(),
        2
    );
}

/// A block device as the image (a loop device over a temporary file): its size comes from
/// the device, requests reach the file behind it. Root with losetup only; skipped otherwise.
#[test]
fn a_block_device_serves_as_the_image() {
    use std::process::Command;
    // SAFETY: geteuid takes nothing and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("a_block_device_serves_as_the_image: needs root (losetup); skipped");
        return;
    }
    let file = super::disk_file(64);
    let attach = Command::new("losetup")
        .args(["-f", "--show"])
        .arg(file.path())
        .output();
    let loop_dev = match attach {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).trim().to_string(),
        _ => {
            eprintln!("a_block_device_serves_as_the_image: no loop device; skipped");
            return;
        }
    };
    let detach = || {
        let _ = Command::new("losetup").args(["-d", &loop_dev]).status();
    };
    let blk = VirtioBlock::open(Path::new(&loop_dev), false, None);
    let blk = match blk {
        Ok(b) => b,
        Err(e) => {
            detach();
            panic!("{loop_dev}: {e}");
        }
    };
    assert_eq!(blk.capacity(), 64, "{loop_dev}'s size in sectors");
    let mut d = Driver::with_device("blk-loop", Box::new(blk), file, None);
    d.start();
    let pattern = vec![0xa5u8; 512];
    d.mem.write_slice(&pattern, GuestAddress(DATA)).unwrap();
    let wrote = d.request(OUT, 5, &[(DATA, 512, 0)]);
    let flushed = d.request(FLUSH, 0, &[]);
    let back = DATA + 0x4000;
    let read = d.request(IN, 5, &[(back, 512, F_WRITE)]);
    let mut got = vec![0u8; 512];
    d.mem.read_slice(&mut got, GuestAddress(back)).unwrap();
    let beyond = d.request(IN, 64, &[(back, 512, F_WRITE)]).0;
    // The loop device writes through the file's page cache: the file shows it now.
    let file_bytes = d.file_bytes();
    drop(d);
    detach();
    assert_eq!((wrote.0, flushed.0, read.0), (S_OK, S_OK, S_OK));
    assert_eq!(got, pattern);
    assert_eq!(beyond, S_IOERR, "past the device's end");
    assert_eq!(
        &file_bytes[5 * 512..6 * 512],
        &pattern[..],
        "the write reached the file"
    );
}
