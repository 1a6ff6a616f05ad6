//! Placing the initramfs: as high as the kernel allows below the MMIO hole, page aligned.

use std::fs::File;
use std::path::Path;

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::BootError;

const PAGE_SIZE: u64 = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InitramfsPlacement {
    pub addr: u64,
    pub size: u64,
}

/// Where an initramfs of `size` bytes goes: the highest page-aligned address such that it
/// ends at or below `limit` (the lower of RAM's end below 4 GiB and the kernel's
/// initrd_addr_max + 1) and starts after `kernel_end`.
pub fn place(size: u64, kernel_end: u64, limit: u64) -> Option<InitramfsPlacement> {
    let addr = limit.checked_sub(size)? & !(PAGE_SIZE - 1);
    (addr >= kernel_end.next_multiple_of(PAGE_SIZE)).then_some(InitramfsPlacement { addr, size })
}

/// Read the initramfs at `path` into guest memory.
pub fn load_initramfs(
    mem: &GuestMemoryMmap,
    path: &Path,
    kernel_end: u64,
    limit: u64,
) -> Result<InitramfsPlacement, BootError> {
    let unreadable = |source| BootError::InitramfsUnreadable {
        path: path.to_owned(),
        source,
    };
    let mut file = File::open(path).map_err(unreadable)?;
    let meta = file.metadata().map_err(unreadable)?;
    if meta.is_dir() {
        return Err(unreadable(std::io::Error::other("it is a directory")));
    }
    let size = meta.len();
    let placement = place(size, kernel_end, limit).ok_or(BootError::InitramfsTooLarge {
        path: path.to_owned(),
        size,
        limit,
    })?;
    mem.read_exact_volatile_from(GuestAddress(placement.addr), &mut file, size as usize)
        .map_err(|e| BootError::GuestMemory(e.into()))?;
    Ok(placement)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn goes_as_high_as_possible_and_page_aligned() {
        let p = place(10_000, 0x200_0000, 0x2000_0000).unwrap();
        assert_eq!(p.addr % PAGE_SIZE, 0);
        assert!(p.addr + p.size <= 0x2000_0000);
        assert!(0x2000_0000 - (p.addr + p.size) < PAGE_SIZE);
    }

    #[test]
    fn refuses_to_overlap_the_kernel() {
        assert!(place(0x100_0000, 0x1f0_0000, 0x200_0000).is_none());
        assert!(place(0x300_0000, 0, 0x200_0000).is_none());
    }
}
