//! Where anonymous guest RAM lands in the VMM's address space: at a 2 MiB boundary, so
//! that transparent huge pages back it and KVM can map them into the guest as 2 MiB pages
//! (a guest-physical 2 MiB page can be mapped large only if its host address is 2 MiB
//! aligned too). Kernels before 6.7 place a large anonymous mmap at any 4 KiB boundary, so
//! without this the guest ran on 4 KiB nested pages even with THP: in the lab its kernel
//! booted ~1.6x slower than under a VMM whose RAM happened to be aligned.
//!
//! vm-memory maps (and unmaps) the region itself at an address the kernel picks, so the
//! address is steered instead of forced: the kernel places a new mapping at the top of the
//! highest free gap that fits, so a hole is prepared whose top is an aligned address plus
//! the region's length, with a cap above it, and the region is mapped into it. If another
//! thread maps meanwhile, or a higher gap fits, the region lands elsewhere: it is then
//! mapped again (a few tries), and used unaligned if none works.

use std::io;
use std::ptr::null_mut;

use vm_memory::mmap::{MmapRegion, MmapRegionBuilder};

/// The boundary guest RAM is placed at: the x86 PMD (huge page) size.
pub const RAM_ALIGN: usize = 2 << 20;
const TRIES: usize = 3;

/// An anonymous, private, not-yet-populated read-write mapping of `len` bytes, at a
/// multiple of [`RAM_ALIGN`] when the address space allows.
pub fn anonymous_aligned(len: usize) -> io::Result<MmapRegion> {
    let mut last = None;
    for _ in 0..TRIES {
        let region = map_below_cap(len)?;
        if is_aligned(region.as_ptr() as usize) {
            return Ok(region);
        }
        last = Some(region);
    }
    let region = match last {
        Some(r) => r,
        None => map(len)?,
    };
    log::debug!(
        "guest RAM at {:p} is not {} MiB aligned: 4 KiB nested pages for it",
        region.as_ptr(),
        RAM_ALIGN >> 20
    );
    Ok(region)
}

fn is_aligned(addr: usize) -> bool {
    addr.is_multiple_of(RAM_ALIGN)
}

fn map(len: usize) -> io::Result<MmapRegion> {
    MmapRegionBuilder::new(len)
        .with_mmap_prot(libc::PROT_READ | libc::PROT_WRITE)
        .with_mmap_flags(libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE)
        .build()
        .map_err(|e| io::Error::other(e.to_string()))
}

/// Reserve `len` + RAM_ALIGN, free all of it below `aligned + len` (the cap above stays
/// reserved while the region is mapped), map the region, free the cap.
fn map_below_cap(len: usize) -> io::Result<MmapRegion> {
    let span = len
        .checked_add(RAM_ALIGN)
        .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOMEM))?;
    // SAFETY: a new PROT_NONE anonymous mapping at an address the kernel picks; it touches
    // no existing memory.
    let base = unsafe {
        libc::mmap(
            null_mut(),
            span,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if base == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    let base = base as usize;
    let aligned = base.next_multiple_of(RAM_ALIGN);
    let cap = aligned + len;
    // SAFETY: both ranges lie inside the reservation made above, which nothing else uses.
    unsafe {
        libc::munmap(base as *mut libc::c_void, cap - base);
    }
    let region = map(len);
    // SAFETY: as above: the rest of our own reservation.
    unsafe {
        libc::munmap(cap as *mut libc::c_void, base + span - cap);
    }
    region
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ram_is_placed_at_a_huge_page_boundary() {
        for len in [4 << 20, 64 << 20, (256 << 20) + 4096] {
            let r = anonymous_aligned(len).unwrap();
            assert!(is_aligned(r.as_ptr() as usize), "{len}: {:p}", r.as_ptr());
            assert_eq!(r.size(), len);
            // Readable and writable, and zero until written.
            // SAFETY: inside the mapping just made.
            unsafe {
                assert_eq!(*r.as_ptr().add(len - 1), 0);
                *r.as_ptr().add(len - 1) = 7;
                assert_eq!(*r.as_ptr().add(len - 1), 7);
            }
        }
    }

    #[test]
    fn the_cap_and_the_slack_are_given_back() {
        // Map and drop many regions: a leaked reservation would be left in the maps each time.
        let maps = || {
            std::fs::read_to_string("/proc/self/maps")
                .unwrap()
                .lines()
                .count()
        };
        let before = maps();
        for _ in 0..50 {
            drop(anonymous_aligned(32 << 20).unwrap());
        }
        assert!(maps() <= before + 5, "{before} -> {}", maps());
    }
}
