//! Guest RAM: mappings split around the MMIO hole, one KVM memory slot each; anonymous
//! (with transparent huge pages) or, when asked, in a hugetlb memfd whose pages are all
//! reserved when it is mapped.

use std::ffi::CStr;
use std::fs::File;
use std::os::fd::FromRawFd;

use arch::layout::ram_regions;
use host::hugepages::HugePageSize;
use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::VmFd;
use vm_memory::mmap::MmapRegionBuilder;
use vm_memory::{
    FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion,
    GuestRegionMmap,
};

mod placement;

use crate::error::{Error, Result};
use arch::units::format_size;

/// Map `size` bytes of guest RAM, backed by `hugepages` when given (see
/// [`create_hugetlb_memory`]), else anonymous memory (see [`create_anonymous_memory`]).
pub fn create_guest_memory(size: u64, hugepages: Option<HugePageSize>) -> Result<GuestMemoryMmap> {
    match hugepages {
        Some(page) => create_hugetlb_memory(size, page),
        None => create_anonymous_memory(size),
    }
}

/// Guest RAM in one memfd of `page`-sized huge pages (a file other processes could share
/// later), mapped shared without MAP_NORESERVE: the kernel reserves every huge page at
/// mmap time, so a host short of them fails here with ENOMEM instead of the guest dying of
/// SIGBUS on a page it touches later.
fn create_hugetlb_memory(size: u64, page: HugePageSize) -> Result<GuestMemoryMmap> {
    let failed = |e: std::io::Error| Error::GuestMemory {
        size: format!("{} in {page} huge pages", format_size(size)),
        source: Box::new(e),
    };
    const NAME: &CStr = c"zhitong-guest-ram";
    let flags = libc::MFD_CLOEXEC | libc::MFD_HUGETLB | (page.shift() << libc::MFD_HUGE_SHIFT);
    // SAFETY: a NUL-terminated name and flags; the fd is checked.
    let fd = unsafe { libc::memfd_create(NAME.as_ptr(), flags) };
    if fd < 0 {
        return Err(failed(std::io::Error::last_os_error()));
    }
    // SAFETY: `fd` is a new descriptor that nothing else owns.
    let file = std::sync::Arc::new(unsafe { File::from_raw_fd(fd) });
    file.set_len(size).map_err(failed)?;
    let mut regions = Vec::new();
    let mut offset = 0;
    for (start, len) in ram_regions(size) {
        let mapping = MmapRegionBuilder::new(len as usize)
            .with_file_offset(FileOffset::from_arc(file.clone(), offset))
            .with_mmap_prot(libc::PROT_READ | libc::PROT_WRITE)
            .with_mmap_flags(libc::MAP_SHARED)
            .build()
            .map_err(|e| match e {
                vm_memory::mmap::MmapRegionError::Mmap(io) => failed(io),
                e => failed(std::io::Error::other(e.to_string())),
            })?;
        let region = GuestRegionMmap::new(mapping, GuestAddress(start))
            .ok_or_else(|| failed(std::io::Error::other("region overflows")))?;
        regions.push(region);
        offset += len;
    }
    GuestMemoryMmap::from_regions(regions).map_err(|e| Error::GuestMemory {
        size: format_size(size),
        source: Box::new(e),
    })
}

/// Map `size` bytes of guest RAM (not yet touched: pages are allocated on first use) at
/// huge-page boundaries (see [`placement`]), asking for transparent huge pages: fewer
/// nested-paging misses for the guest, and 512x fewer pages to pin when the RAM is
/// DMA-mapped for passthrough.
fn create_anonymous_memory(size: u64) -> Result<GuestMemoryMmap> {
    let failed = |e: std::io::Error| Error::GuestMemory {
        size: format_size(size),
        source: Box::new(e),
    };
    let mut regions = Vec::new();
    for (start, len) in ram_regions(size) {
        let mapping = placement::anonymous_aligned(len as usize).map_err(failed)?;
        // SAFETY: advice on the mapping just made; it changes no contents.
        let rc =
            unsafe { libc::madvise(mapping.as_ptr().cast(), len as usize, libc::MADV_HUGEPAGE) };
        if rc != 0 {
            log::debug!(
                "no transparent huge pages for guest RAM: {}",
                std::io::Error::last_os_error()
            );
        }
        let region = GuestRegionMmap::new(mapping, GuestAddress(start))
            .ok_or_else(|| failed(std::io::Error::other("region overflows")))?;
        regions.push(region);
    }
    GuestMemoryMmap::from_regions(regions).map_err(|e| Error::GuestMemory {
        size: format_size(size),
        source: Box::new(e),
    })
}

/// Give KVM every RAM region as a memory slot (slots 0..n). Returns the next free slot.
pub fn register_with_kvm(vm: &VmFd, mem: &GuestMemoryMmap) -> Result<u32> {
    let mut slot = 0;
    for region in mem.iter() {
        let host = mem
            .get_host_address(region.start_addr())
            .map_err(|e| Error::GuestMemory {
                size: format_size(region.len()),
                source: Box::new(e),
            })?;
        let desc = kvm_userspace_memory_region {
            slot,
            flags: 0,
            guest_phys_addr: region.start_addr().0,
            memory_size: region.len(),
            userspace_addr: host as u64,
        };
        // SAFETY: the region is a live mapping owned by `mem`, which outlives the VM's use of
        // it: the VM (and its vCPUs) is torn down before the guest memory is dropped.
        unsafe { vm.set_user_memory_region(desc) }
            .map_err(Error::kvm("KVM_SET_USER_MEMORY_REGION"))?;
        slot += 1;
    }
    Ok(slot)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_is_split_like_the_layout() {
        let mem = create_guest_memory(256 << 20, None).unwrap();
        assert_eq!(mem.num_regions(), 1);
        assert_eq!(mem.last_addr(), GuestAddress((256 << 20) - 1));
    }

    /// Without free huge pages (this machine reserves none), the mapping fails at once with
    /// a message naming the size, not later with SIGBUS.
    #[test]
    fn huge_pages_the_host_lacks_fail_up_front() {
        let free =
            std::fs::read_to_string("/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages")
                .ok()
                .and_then(|t| t.trim().parse::<u64>().ok());
        if free.unwrap_or(0) >= 128 {
            let mem = create_guest_memory(256 << 20, Some(HugePageSize::Size2M)).unwrap();
            assert_eq!(mem.num_regions(), 1);
            return;
        }
        let err = create_guest_memory(256 << 20, Some(HugePageSize::Size2M)).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("256M in 2M huge pages"), "{msg}");
    }
}
