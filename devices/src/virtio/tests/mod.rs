//! The transport and virtio-blk driven as Linux's virtio-pci driver would: capabilities
//! found by walking config space, features negotiated, a queue laid out in guest memory by
//! hand, requests submitted and completions read from the used ring.

mod block;
mod net;
mod net_driver;
mod transport;
mod vsock;

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::mock::MockServices;
use super::{status, VirtioBlock, VirtioDevice, VirtioPciDevice};
use crate::pci::config::{CAPABILITY_POINTER, COMMAND, COMMAND_MEMORY};
use crate::pci::PciDevice;

pub const MEM_SIZE: usize = 1 << 20;
pub const DESC: u64 = 0x1000;
pub const AVAIL: u64 = 0x2000;
pub const USED: u64 = 0x3000;
pub const BUFS: u64 = 0x10000;
pub const BAR0_ADDR: u64 = 0xc000_0000;
pub const BAR2_ADDR: u64 = 0xc001_0000;
pub const QSIZE: u16 = 16;

pub const F_WRITE: u16 = 2;
const F_NEXT: u16 = 1;

/// A virtio cap as found: (bar, offset, length, config offset of the cap).
#[derive(Debug, Clone, Copy)]
pub struct Cap {
    pub bar: u8,
    pub offset: u64,
    pub len: u32,
    pub at: u16,
}

pub struct Driver {
    pub dev: VirtioPciDevice,
    pub mem: GuestMemoryMmap,
    pub svc: MockServices,
    pub file: tempfile::NamedTempFile,
    /// cfg_type -> cap.
    pub caps: BTreeMap<u8, Cap>,
    pub msix_cap: Option<u16>,
    pub notify_mult: u32,
    /// Notify by a trapped BAR write (true) or leave it to the caller (an ioeventfd).
    pub trap_notify: bool,
    next_desc: u16,
    avail_idx: u16,
}

/// A disk of `sectors` sectors filled with a recognisable byte pattern.
pub fn disk_file(sectors: u64) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    let data: Vec<u8> = (0..sectors * 512).map(|i| (i / 512) as u8 ^ 0x5a).collect();
    f.write_all(&data).unwrap();
    f
}

impl Driver {
    pub fn new(readonly: bool, serial: Option<&str>, intx: Option<u32>) -> Self {
        let file = disk_file(64);
        let blk = VirtioBlock::open(file.path(), readonly, serial.map(String::from)).unwrap();
        Self::with_device("blk0", Box::new(blk), file, intx)
    }

    /// The transport around `device` (`file`: the disk, if any), BARs mapped.
    pub fn with_device(
        name: &str,
        device: Box<dyn VirtioDevice>,
        file: tempfile::NamedTempFile,
        intx: Option<u32>,
    ) -> Self {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap();
        let svc = MockServices::new();
        let mut dev =
            VirtioPciDevice::new(name.into(), device, mem.clone(), svc.services(), intx).unwrap();
        dev.assign_bar(0, BAR0_ADDR);
        dev.assign_bar(2, BAR2_ADDR);
        dev.config_write(COMMAND, &COMMAND_MEMORY.to_le_bytes());
        for bar in dev.bars().iter().filter(|b| b.decoding) {
            dev.bar_mapped(bar).unwrap();
        }
        let mut d = Self {
            dev,
            mem,
            svc,
            file,
            caps: BTreeMap::new(),
            msix_cap: None,
            notify_mult: 0,
            trap_notify: true,
            next_desc: 0,
            avail_idx: 0,
        };
        d.find_caps();
        d
    }

    pub fn cfg8(&mut self, off: u16) -> u8 {
        (self.dev.config_read(off & !3) >> (8 * (off & 3))) as u8
    }

    pub fn cfg32(&mut self, off: u16) -> u32 {
        self.dev.config_read(off)
    }

    fn find_caps(&mut self) {
        let mut at = u16::from(self.cfg8(CAPABILITY_POINTER));
        while at != 0 {
            let id = self.cfg8(at);
            if id == 0x09 {
                let cap = Cap {
                    bar: self.cfg8(at + 4),
                    offset: u64::from(self.cfg32(at + 8)),
                    len: self.cfg32(at + 12),
                    at,
                };
                let cfg_type = self.cfg8(at + 3);
                if cfg_type == 2 {
                    self.notify_mult = self.cfg32(at + 16);
                }
                self.caps.entry(cfg_type).or_insert(cap);
            } else if id == 0x11 {
                self.msix_cap = Some(at);
            }
            at = u16::from(self.cfg8(at + 1));
        }
    }

    fn region(&self, cfg_type: u8) -> Cap {
        self.caps[&cfg_type]
    }

    pub fn read(&mut self, cfg_type: u8, off: u64, len: usize) -> u64 {
        let c = self.region(cfg_type);
        let mut b = [0u8; 8];
        self.dev.bar_read(c.bar, c.offset + off, &mut b[..len]);
        u64::from_le_bytes(b)
    }

    pub fn write(&mut self, cfg_type: u8, off: u64, len: usize, value: u64) {
        let c = self.region(cfg_type);
        self.dev
            .bar_write(c.bar, c.offset + off, &value.to_le_bytes()[..len]);
    }

    pub fn common_read(&mut self, off: u64, len: usize) -> u64 {
        self.read(1, off, len)
    }

    pub fn common_write(&mut self, off: u64, len: usize, value: u64) {
        self.write(1, off, len, value)
    }

    pub fn status(&mut self) -> u8 {
        self.common_read(0x14, 1) as u8
    }

    pub fn set_status(&mut self, s: u8) {
        self.common_write(0x14, 1, s.into());
    }

    pub fn device_features(&mut self) -> u64 {
        self.common_write(0x00, 4, 0);
        let lo = self.common_read(0x04, 4);
        self.common_write(0x00, 4, 1);
        let hi = self.common_read(0x04, 4);
        lo | hi << 32
    }

    /// ACKNOWLEDGE, DRIVER, accept `features`, FEATURES_OK; returns the status read back.
    pub fn negotiate(&mut self, features: u64) -> u8 {
        self.set_status(0);
        self.set_status(status::ACKNOWLEDGE);
        self.set_status(status::ACKNOWLEDGE | status::DRIVER);
        for (sel, half) in [(0, features as u32), (1, (features >> 32) as u32)] {
            self.common_write(0x08, 4, sel);
            self.common_write(0x0c, 4, half.into());
        }
        self.set_status(status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK);
        self.status()
    }

    /// Queue 0 at DESC/AVAIL/USED with QSIZE entries and MSI-X vector `vector`.
    pub fn setup_queue(&mut self, vector: u16) {
        self.common_write(0x16, 2, 0);
        assert_eq!(self.common_read(0x18, 2), 256, "max size");
        self.common_write(0x18, 2, QSIZE.into());
        self.common_write(0x1a, 2, vector.into());
        for (off, addr) in [(0x20, DESC), (0x28, AVAIL), (0x30, USED)] {
            self.common_write(off, 4, addr & 0xffff_ffff);
            self.common_write(off + 4, 4, addr >> 32);
        }
        self.common_write(0x1c, 2, 1);
    }

    /// Negotiate everything offered, set up queue 0, DRIVER_OK.
    pub fn start(&mut self) {
        let f = self.device_features();
        let s = self.negotiate(f);
        assert_ne!(s & status::FEATURES_OK, 0);
        self.setup_queue(1);
        self.set_status(s | status::DRIVER_OK);
        assert_ne!(self.status() & status::DRIVER_OK, 0, "activated");
    }

    /// Put a chain of (addr, len, flags) on the avail ring and notify; returns its head.
    pub fn submit(&mut self, descs: &[(u64, u32, u16)]) -> u16 {
        let head = self.next_desc;
        for (i, &(addr, len, flags)) in descs.iter().enumerate() {
            let idx = (self.next_desc + i as u16) % QSIZE;
            let last = i + 1 == descs.len();
            let next = (idx + 1) % QSIZE;
            let flags = if last { flags } else { flags | F_NEXT };
            let at = GuestAddress(DESC + 16 * u64::from(idx));
            let mut raw = [0u8; 16];
            raw[0..8].copy_from_slice(&addr.to_le_bytes());
            raw[8..12].copy_from_slice(&len.to_le_bytes());
            raw[12..14].copy_from_slice(&flags.to_le_bytes());
            raw[14..16].copy_from_slice(&next.to_le_bytes());
            self.mem.write_slice(&raw, at).unwrap();
        }
        self.next_desc = (self.next_desc + descs.len() as u16) % QSIZE;
        let slot = AVAIL + 4 + 2 * u64::from(self.avail_idx % QSIZE);
        self.mem.write_obj(head, GuestAddress(slot)).unwrap();
        self.avail_idx = self.avail_idx.wrapping_add(1);
        self.mem
            .write_obj(self.avail_idx, GuestAddress(AVAIL + 2))
            .unwrap();
        if self.trap_notify {
            self.write(2, 0, 2, 0); // notify queue 0
        }
        head
    }

    pub fn used_idx(&self) -> u16 {
        self.mem.read_obj(GuestAddress(USED + 2)).unwrap()
    }

    /// Wait for used entry `n` (0-based); returns (id, len).
    pub fn wait_used(&self, n: u16) -> (u32, u32) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.used_idx() <= n {
            assert!(Instant::now() < deadline, "used entry {n} never came");
            std::thread::sleep(Duration::from_millis(1));
        }
        let at = USED + 4 + 8 * u64::from(n % QSIZE);
        let id: u32 = self.mem.read_obj(GuestAddress(at)).unwrap();
        let len: u32 = self.mem.read_obj(GuestAddress(at + 4)).unwrap();
        (id, len)
    }

    /// A request header at `addr`.
    pub fn header(&self, addr: u64, kind: u32, sector: u64) {
        let mut h = [0u8; 16];
        h[0..4].copy_from_slice(&kind.to_le_bytes());
        h[8..16].copy_from_slice(&sector.to_le_bytes());
        self.mem.write_slice(&h, GuestAddress(addr)).unwrap();
    }

    /// Submit a request (header at BUFS, `data` descriptors, status at BUFS + 0x100) and
    /// wait for it; returns (status byte, used len).
    pub fn request(&mut self, kind: u32, sector: u64, data: &[(u64, u32, u16)]) -> (u8, u32) {
        self.header(BUFS, kind, sector);
        let status_at = BUFS + 0x100;
        self.mem.write_obj(0xffu8, GuestAddress(status_at)).unwrap();
        let mut chain = vec![(BUFS, 16, 0)];
        chain.extend_from_slice(data);
        chain.push((status_at, 1, F_WRITE));
        let n = self.avail_idx;
        let head = self.submit(&chain);
        let (id, len) = self.wait_used(n);
        assert_eq!(id, u32::from(head));
        (self.mem.read_obj(GuestAddress(status_at)).unwrap(), len)
    }

    pub fn file_bytes(&self) -> Vec<u8> {
        std::fs::read(self.file.path()).unwrap()
    }
}
