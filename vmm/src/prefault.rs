//! Guest RAM faulted in, in parallel, before it is pinned for DMA. VFIO pins RAM on one
//! thread, page by page, and for untouched RAM most of that time is the kernel allocating
//! and zeroing each page; populating first, on one thread per core, leaves the pinning only
//! the lookups. Only worth it when the RAM is pinned anyway (a passed-through device):
//! without one, RAM is faulted in as the guest touches it.

use std::time::{Duration, Instant};

use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

/// Threads at most: the kernel's page allocator stops scaling well beyond a few.
const MAX_THREADS: usize = 8;
/// Pieces are cut at this alignment (the largest huge page), so that no two threads fault
/// in the same huge page.
const ALIGN: u64 = 1 << 30;
const PAGE: usize = 4096;

/// One piece of RAM for one thread: host address and length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Piece {
    host: usize,
    len: usize,
}

/// Fault in all of `mem`, on as many threads as the host has cores (at most 8). Returns
/// how long it took. Failures are not errors: the pinning faults in what is left.
pub fn prefault(mem: &GuestMemoryMmap) -> Duration {
    let start = Instant::now();
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(MAX_THREADS);
    let regions: Vec<(usize, u64)> = mem
        .iter()
        .filter_map(|r| {
            let host = mem.get_host_address(r.start_addr()).ok()?;
            Some((host as usize, r.len()))
        })
        .collect();
    let pieces = split(&regions, threads);
    std::thread::scope(|s| {
        for chunk in pieces.chunks(pieces.len().div_ceil(threads).max(1)) {
            s.spawn(move || chunk.iter().for_each(|p| populate(*p)));
        }
    });
    start.elapsed()
}

/// Cut `regions` (host address, length) into pieces at `ALIGN` boundaries, then hand them
/// out so that each of `threads` gets about the same number of bytes (whole pieces).
fn split(regions: &[(usize, u64)], threads: usize) -> Vec<Piece> {
    let total: u64 = regions.iter().map(|r| r.1).sum();
    let share = total
        .div_ceil(threads.max(1) as u64)
        .next_multiple_of(ALIGN);
    let mut pieces = Vec::new();
    for &(host, len) in regions {
        let mut off = 0;
        while off < len {
            let end = len.min(off + share);
            pieces.push(Piece {
                host: host + off as usize,
                len: (end - off) as usize,
            });
            off = end;
        }
    }
    pieces
}

/// Fault in one piece: MADV_POPULATE_WRITE (Linux 5.14+), else a write per page.
fn populate(p: Piece) {
    // SAFETY: advice on guest RAM this process mapped; it changes no contents (the pages
    // read as zero either way).
    let rc = unsafe {
        libc::madvise(
            p.host as *mut libc::c_void,
            p.len,
            libc::MADV_POPULATE_WRITE,
        )
    };
    if rc == 0 {
        return;
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() != Some(libc::EINVAL) {
        log::debug!("prefault of {:#x} bytes: {err}", p.len);
        return;
    }
    for off in (0..p.len).step_by(PAGE) {
        let at = (p.host + off) as *mut u8;
        // SAFETY: inside the mapping; the guest has not run yet, so nothing else writes
        // it, and a zero over a fresh page changes nothing.
        unsafe { at.write_volatile(at.read_volatile()) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::Bytes;

    const GIB: u64 = 1 << 30;

    #[test]
    fn pieces_cover_every_region_once_in_even_aligned_shares() {
        let regions = [(0x7f00_0000_0000, 3 * GIB), (0x7f10_0000_0000, 13 * GIB)];
        let pieces = split(&regions, 4);
        let covered: u64 = pieces.iter().map(|p| p.len as u64).sum();
        assert_eq!(covered, 16 * GIB);
        // Shares of 4G: the 3G region whole, the 13G one in 4+4+4+1.
        let lens: Vec<u64> = pieces.iter().map(|p| p.len as u64 / GIB).collect();
        assert_eq!(lens, [3, 4, 4, 4, 1]);
        assert_eq!(pieces[2].host, 0x7f10_0000_0000 + 4 * GIB as usize);
        // Small RAM on many threads: one piece.
        assert_eq!(split(&[(0x1000_0000, 512 << 20)], 8).len(), 1);
        assert!(split(&[], 8).is_empty());
    }

    #[test]
    fn prefaulted_ram_is_resident_and_still_zero() {
        let mem = crate::memory::create_guest_memory(64 << 20, None).unwrap();
        prefault(&mem);
        let host = mem.get_host_address(vm_memory::GuestAddress(0)).unwrap();
        let mut resident = vec![0u8; (64 << 20) / PAGE];
        // SAFETY: mincore on our own mapping into a vector of one byte per page.
        let rc = unsafe { libc::mincore(host.cast(), 64 << 20, resident.as_mut_ptr()) };
        assert_eq!(rc, 0);
        assert!(
            resident.iter().all(|b| b & 1 == 1),
            "pages not resident after prefault"
        );
        let mut buf = [0xaau8; 4096];
        mem.read_slice(&mut buf, vm_memory::GuestAddress(32 << 20))
            .unwrap();
        assert!(buf.iter().all(|&b| b == 0));
    }
}
