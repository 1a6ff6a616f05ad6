//! Guest RAM: anonymous mappings split around the MMIO hole, one KVM memory slot each.

use arch::layout::ram_regions;
use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::VmFd;
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use crate::error::{Error, Result};
use arch::units::format_size;

/// Map `size` bytes of guest RAM (not yet touched: pages are allocated on first use),
/// asking for transparent huge pages: fewer nested-paging misses for the guest, and 512x
/// fewer pages to pin when the RAM is DMA-mapped for passthrough.
pub fn create_guest_memory(size: u64) -> Result<GuestMemoryMmap> {
    let ranges: Vec<(GuestAddress, usize)> = ram_regions(size)
        .into_iter()
        .map(|(start, len)| (GuestAddress(start), len as usize))
        .collect();
    let mem = GuestMemoryMmap::from_ranges(&ranges).map_err(|e| Error::GuestMemory {
        size: format_size(size),
        source: Box::new(e),
    })?;
    for region in mem.iter() {
        if let Ok(host) = mem.get_host_address(region.start_addr()) {
            // SAFETY: advice on a mapping we own; it changes no contents.
            let rc =
                unsafe { libc::madvise(host.cast(), region.len() as usize, libc::MADV_HUGEPAGE) };
            if rc != 0 {
                log::debug!(
                    "no transparent huge pages for guest RAM: {}",
                    std::io::Error::last_os_error()
                );
            }
        }
    }
    Ok(mem)
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
        let mem = create_guest_memory(256 << 20).unwrap();
        assert_eq!(mem.num_regions(), 1);
        assert_eq!(mem.last_addr(), GuestAddress((256 << 20) - 1));
    }
}
