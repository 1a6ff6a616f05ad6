//! One virtio-blk request: its descriptor chain checked, then executed on the disk.
//!
//! A chain is header (readable, ≥ 16 bytes: type, reserved, sector), data descriptors, and
//! a writable status descriptor whose last byte takes the status. Anything else — too few
//! or too many descriptors, data in the wrong direction, a length that is not a multiple
//! of 512 or over [`MAX_TRANSFER`], sectors past the end, buffers outside guest RAM —
//! completes with S_IOERR (if the status byte can be written at all). Guest RAM is reached
//! through vm-memory only; disk data goes through a bounded bounce buffer.

use std::os::unix::fs::FileExt;

use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_S_UNSUPP, VIRTIO_BLK_T_FLUSH,
    VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT,
};
use virtio_queue::{desc::split::Descriptor, DescriptorChain};
use vm_memory::{Address, Bytes, GuestMemoryBackend, GuestMemoryMmap};

use super::Disk;

pub const SECTOR_SIZE: u64 = 512;
/// Data descriptors per request (the config's seg_max).
pub const SEG_MAX: u32 = 126;
pub const SERIAL_LEN: usize = 20;
/// The most a request may move.
pub const MAX_TRANSFER: u64 = 128 << 20;
/// The bounce buffer's size.
pub const BOUNCE_LEN: usize = 64 << 10;
const HEADER_LEN: u32 = 16;

/// What to put in the used ring for a chain: the bytes written to guest memory.
pub struct Completion {
    pub head: u16,
    pub len: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    ToGuest,
    FromGuest,
}

/// Bytes in guest memory the request reads or writes (not the header or status).
struct Data<'a> {
    descs: &'a [Descriptor],
    total: u64,
}

fn data<'a>(mem: &GuestMemoryMmap, descs: &'a [Descriptor], dir: Dir) -> Option<Data<'a>> {
    let mut total: u64 = 0;
    for d in descs {
        if d.is_write_only() != (dir == Dir::ToGuest) {
            return None;
        }
        if !mem.check_range(d.addr(), d.len() as usize) {
            return None;
        }
        total = total.checked_add(u64::from(d.len()))?;
    }
    (total <= MAX_TRANSFER).then_some(Data { descs, total })
}

/// The disk byte offset of `sector` if `len` bytes from it fit in the disk.
fn disk_offset(disk: &Disk, sector: u64, len: u64) -> Option<u64> {
    if !len.is_multiple_of(SECTOR_SIZE) {
        return None;
    }
    let start = sector.checked_mul(SECTOR_SIZE)?;
    let end = start.checked_add(len)?;
    (end <= disk.capacity.checked_mul(SECTOR_SIZE)?).then_some(start)
}

fn read_in(disk: &Disk, mem: &GuestMemoryMmap, d: &Data, mut off: u64, buf: &mut [u8]) -> bool {
    for desc in d.descs {
        let mut done: u64 = 0;
        let len = u64::from(desc.len());
        while done < len {
            let n = (len - done).min(buf.len() as u64) as usize;
            let chunk = &mut buf[..n];
            let Some(addr) = desc.addr().checked_add(done) else {
                return false;
            };
            if disk.file.read_exact_at(chunk, off).is_err() || mem.write_slice(chunk, addr).is_err()
            {
                return false;
            }
            done += n as u64;
            off += n as u64;
        }
    }
    true
}

fn write_out(disk: &Disk, mem: &GuestMemoryMmap, d: &Data, mut off: u64, buf: &mut [u8]) -> bool {
    for desc in d.descs {
        let mut done: u64 = 0;
        let len = u64::from(desc.len());
        while done < len {
            let n = (len - done).min(buf.len() as u64) as usize;
            let chunk = &mut buf[..n];
            let Some(addr) = desc.addr().checked_add(done) else {
                return false;
            };
            if mem.read_slice(chunk, addr).is_err() || disk.file.write_all_at(chunk, off).is_err() {
                return false;
            }
            done += n as u64;
            off += n as u64;
        }
    }
    true
}

/// Execute the request of `descs` (header first, status last, both checked by the caller);
/// returns (status, bytes written to guest memory before the status).
fn execute(
    disk: &Disk,
    mem: &GuestMemoryMmap,
    header: &[u8; 16],
    descs: &[Descriptor],
    buf: &mut [u8],
) -> (u32, u32) {
    let kind = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let mut s = [0u8; 8];
    s.copy_from_slice(&header[8..16]);
    let sector = u64::from_le_bytes(s);
    let err = (VIRTIO_BLK_S_IOERR, 0);
    match kind {
        VIRTIO_BLK_T_IN => {
            let Some(d) = data(mem, descs, Dir::ToGuest) else {
                return err;
            };
            let Some(off) = disk_offset(disk, sector, d.total) else {
                return err;
            };
            if !read_in(disk, mem, &d, off, buf) {
                return err;
            }
            // total ≤ MAX_TRANSFER fits in u32.
            (VIRTIO_BLK_S_OK, d.total as u32)
        }
        VIRTIO_BLK_T_OUT => {
            if disk.readonly {
                return err;
            }
            let Some(d) = data(mem, descs, Dir::FromGuest) else {
                return err;
            };
            let Some(off) = disk_offset(disk, sector, d.total) else {
                return err;
            };
            if !write_out(disk, mem, &d, off, buf) {
                return err;
            }
            (VIRTIO_BLK_S_OK, 0)
        }
        VIRTIO_BLK_T_FLUSH => match disk.file.sync_data() {
            Ok(()) => (VIRTIO_BLK_S_OK, 0),
            Err(_) => err,
        },
        VIRTIO_BLK_T_GET_ID => {
            let Some(first) = descs.first() else {
                return err;
            };
            if data(mem, descs, Dir::ToGuest).is_none() {
                return err;
            }
            let n = (first.len() as usize).min(SERIAL_LEN);
            if mem.write_slice(&disk.serial[..n], first.addr()).is_err() {
                return err;
            }
            (VIRTIO_BLK_S_OK, n as u32)
        }
        _ => (VIRTIO_BLK_S_UNSUPP, 0),
    }
}

/// Serve one chain and say what goes in the used ring.
pub fn handle(disk: &Disk, chain: DescriptorChain<&GuestMemoryMmap>, buf: &mut [u8]) -> Completion {
    let head = chain.head_index();
    let mem = chain.memory();
    // Bounded: virtio-queue stops a chain after queue-size descriptors (loops included).
    let max = SEG_MAX as usize + 2;
    let mut descs = Vec::with_capacity(8);
    let mut too_long = false;
    for d in chain.clone() {
        if descs.len() == max {
            too_long = true;
            break;
        }
        descs.push(d);
    }
    // The status byte: the last byte of the last descriptor, which must be writable.
    let status_at = descs
        .last()
        .filter(|d| d.is_write_only() && d.len() >= 1)
        .and_then(|d| d.addr().checked_add(u64::from(d.len()) - 1))
        .filter(|a| mem.check_range(*a, 1));
    let Some(status_at) = status_at else {
        crate::limited!(
            debug,
            "virtio-blk: chain {head} has no status byte; dropped"
        );
        return Completion { head, len: 0 };
    };
    let mut header = [0u8; 16];
    let header_ok = !too_long
        && descs.len() >= 2
        && descs[0].len() >= HEADER_LEN
        && !descs[0].is_write_only()
        && mem.read_slice(&mut header, descs[0].addr()).is_ok();
    let (status, written) = if header_ok {
        execute(disk, mem, &header, &descs[1..descs.len() - 1], buf)
    } else {
        (VIRTIO_BLK_S_IOERR, 0)
    };
    // The status goes last: the data (and a flush) are complete by now.
    if mem.write_obj(status as u8, status_at).is_err() {
        return Completion { head, len: 0 };
    }
    Completion {
        head,
        len: written.saturating_add(1),
    }
}
