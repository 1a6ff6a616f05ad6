//! The virtio-pci transport over virtio-blk (`devices::virtio`) as a guest drives it: a
//! `VirtioPciDevice` over a `VirtioBlock` on a 64 KiB temporary disk, 64 KiB of guest RAM,
//! the recording services (MSI-X routes and irqfds, ioeventfds, worker threads).
//!
//! Ops (`kind % 7`): 0/1 config write/read at `addr % 256` (naturally aligned); 2/3 BAR
//! write/read (`addr` bit 16: BAR 2, else BAR 0; offset `addr % 0x4000`, any width);
//! 4 guest RAM write of `width` bytes at `addr % RAM` (descriptors, rings, headers);
//! 5 a queue notify as KVM's ioeventfd would deliver it (the eventfd, no exit);
//! 6 wait (up to 2 ms) for the worker to complete something.
//! After a config write the BARs are re-synced as the root does (unmapped where they stopped
//! decoding or moved, mapped where they decode now).
//!
//! Checked: nothing panics (here or in the worker), the ioeventfds are always exactly at the
//! notify addresses of a decoding BAR 0, irqfds only on allocated, routed GSIs; dropping the
//! device joins the worker and leaves no ioeventfd, irqfd or GSI behind.

#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use devices::pci::{Bar, PciDevice};
use devices::virtio::mock::MockServices;
use devices::virtio::{VirtioBlock, VirtioPciDevice};
use libfuzzer_sys::fuzz_target;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use zhitong_fuzz::ops;

const RAM: usize = 0x1_0000;
const USED_IDX: u64 = 0x3002;

fn disk() -> &'static PathBuf {
    static DISK: OnceLock<PathBuf> = OnceLock::new();
    DISK.get_or_init(|| {
        // tmpfs when there is one: FLUSH (fdatasync) is then free.
        let shm = std::path::Path::new("/dev/shm");
        let dir = if shm.is_dir() { shm.into() } else { std::env::temp_dir() };
        let p = dir.join(format!("zhitong-fuzz-blk-{}.img", std::process::id()));
        std::fs::write(&p, vec![0x5a; 64 << 10]).unwrap();
        p
    })
}

fn sync_bars(dev: &mut VirtioPciDevice, mapped: &mut Vec<Bar>) {
    let now: Vec<Bar> = dev.bars().into_iter().filter(|b| b.decoding).collect();
    for old in mapped.iter() {
        if !now.iter().any(|b| b.index == old.index && b.addr == old.addr) {
            dev.bar_unmapped(old);
        }
    }
    for bar in &now {
        if !mapped.iter().any(|b| b.index == bar.index && b.addr == bar.addr) {
            dev.bar_mapped(bar).unwrap();
        }
    }
    *mapped = now;
}

fn check(svc: &MockServices, mapped: &[Bar]) {
    let io: Vec<u64> = svc.ioevents.state().keys().copied().collect();
    match mapped.iter().find(|b| b.index == 0) {
        Some(b) => assert_eq!(io, [b.addr + 0x3000]),
        None => assert!(io.is_empty(), "ioeventfds {io:x?} with BAR 0 off"),
    }
    let r = svc.router.state();
    for gsi in r.irqfds.keys() {
        assert!(r.allocated.contains(gsi) && r.routes.contains_key(gsi));
    }
}

fuzz_target!(|data: &[u8]| {
    // Read-only disks for inputs of odd length: the OUT path then refuses.
    let readonly = data.len() % 2 == 1;
    let Ok(blk) = VirtioBlock::open(disk(), readonly, Some("fuzz".into())) else {
        return; // another thread of this process holds it writable
    };
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), RAM)]).unwrap();
    let svc = MockServices::new();
    let intx = (data.len() % 4 >= 2).then_some(5);
    let mut dev =
        VirtioPciDevice::new("fuzz".into(), Box::new(blk), mem.clone(), svc.services(), intx)
            .unwrap();
    dev.assign_bar(0, 0xc000_0000);
    dev.assign_bar(2, 0xc001_0000);
    let mut mapped = Vec::new();
    for op in ops(data) {
        match op.kind % 7 {
            0 => {
                let w = op.pio_width();
                let off = (op.addr as u16 % 256) & !(w as u16 - 1);
                dev.config_write(off, &op.data(w));
                sync_bars(&mut dev, &mut mapped);
            }
            1 => {
                let _ = dev.config_read((op.addr as u16 % 256) & !3);
            }
            2 | 3 => {
                let bar = if op.addr & (1 << 16) != 0 { 2 } else { 0 };
                let off = u64::from(op.addr % 0x4000);
                if op.kind % 7 == 2 {
                    dev.bar_write(bar, off, &op.data(op.width));
                } else {
                    let mut buf = vec![0u8; op.width];
                    dev.bar_read(bar, off, &mut buf);
                }
            }
            4 => {
                let addr = u64::from(op.addr) % RAM as u64;
                let n = op.width.min(RAM - addr as usize);
                mem.write_slice(&op.data(op.width)[..n], GuestAddress(addr))
                    .unwrap();
            }
            5 => {
                let fd = svc.ioevents.state().values().next().copied();
                match fd {
                    Some(fd) => {
                        let one = 1u64;
                        // SAFETY: an 8-byte write from a u64 to the eventfd the device
                        // registered (still open: the device owns it).
                        unsafe { libc::write(fd, (&one as *const u64).cast(), 8) };
                    }
                    None => dev.bar_write(0, 0x3000, &[0, 0]),
                }
            }
            _ => {
                let before: u16 = mem.read_obj(GuestAddress(USED_IDX)).unwrap();
                let deadline = Instant::now() + Duration::from_millis(2);
                while mem.read_obj::<u16>(GuestAddress(USED_IDX)).unwrap() == before
                    && Instant::now() < deadline
                {
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
        }
        check(&svc, &mapped);
    }
    drop(dev);
    assert_eq!(svc.spawner.live(), 0, "worker joined");
    assert!(svc.ioevents.state().is_empty());
    let r = svc.router.state();
    assert!(r.irqfds.is_empty() && r.resample_irqfds.is_empty() && r.allocated.is_empty());
});
