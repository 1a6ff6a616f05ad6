//! The address ranges the guest's PCI host bridge forwards to BARs: the I/O window, the
//! 32-bit window in the MMIO hole and the 64-bit window above RAM, sized by the guest's
//! physical address width. The BAR allocator, the ACPI tables, the host doctor and the VM
//! all take them from here, so they agree.

/// Re-exported where the windows are sized by it; the memory map's limit comes from it too.
pub use crate::layout::MAX_GUEST_PHYS_BITS;
use crate::layout::{pci_mmio64_window, PCI_MMIO32_SIZE, PCI_MMIO32_START};

/// I/O ports for I/O BARs (everything above the legacy range).
pub const PCI_IO_START: u64 = 0x1000;
pub const PCI_IO_END: u64 = 0x1_0000;

/// A range of addresses: `size` bytes from `start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start: u64,
    pub size: u64,
}

impl Window {
    pub const fn new(start: u64, size: u64) -> Self {
        Self { start, size }
    }

    /// Whether `base..base + len` lies entirely inside the window.
    pub fn contains(&self, base: u64, len: u64) -> bool {
        // In u128 so that a range ending exactly at 2^64 needs no special case.
        let end = u128::from(base) + u128::from(len);
        base >= self.start && end <= u128::from(self.start) + u128::from(self.size)
    }
}

/// The address ranges the host bridge forwards to devices (what the DSDT's _CRS lists).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PciWindows {
    /// I/O ports for I/O BARs, e.g. 0x1000..=0xffff; `None`: no I/O BARs.
    pub io: Option<Window>,
    /// Below 4 GiB: 32-bit BARs, the ROM, and 64-bit BARs when the 64-bit window is
    /// absent or full.
    pub mmio32: Window,
    /// Above RAM up to the guest's physical address limit: 64-bit BARs.
    pub mmio64: Option<Window>,
}

impl PciWindows {
    /// The windows of a guest with `ram_size` of RAM and `phys_bits` of address space.
    pub fn for_guest(ram_size: u64, phys_bits: u8) -> Self {
        Self {
            io: Some(Window::new(PCI_IO_START, PCI_IO_END - PCI_IO_START)),
            mmio32: Window::new(PCI_MMIO32_START, PCI_MMIO32_SIZE),
            mmio64: pci_mmio64_window(ram_size, phys_bits)
                .map(|(start, size)| Window::new(start, size)),
        }
    }
}

/// The guest physical address width for EAX of CPUID leaf 0x80000008 (None: no such leaf):
/// its low byte, 36 when absent or implausible, capped at what 4-level nested paging maps.
/// `zhitong run` feeds KVM's leaf, `zhitong check` the host's, so both size the same windows.
pub fn phys_bits_from_leaf(eax: Option<u32>) -> u8 {
    eax.map(|eax| (eax & 0xff) as u8)
        .filter(|&bits| bits >= 32)
        .unwrap_or(36)
        .min(MAX_GUEST_PHYS_BITS)
}

/// The guest's physical address width from the CPUID entries it will get (KVM's supported
/// leaf 0x80000008).
pub fn guest_phys_bits(cpuid: &kvm_bindings::CpuId) -> u8 {
    phys_bits_from_leaf(
        cpuid
            .as_slice()
            .iter()
            .find(|e| e.function == 0x8000_0008)
            .map(|e| e.eax),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvm_bindings::CpuId;

    #[test]
    fn windows_follow_ram_and_phys_bits() {
        let w = PciWindows::for_guest(4 << 30, 46);
        assert_eq!(w.io, Some(Window::new(0x1000, 0xf000)));
        assert_eq!(w.mmio32, Window::new(PCI_MMIO32_START, PCI_MMIO32_SIZE));
        let m64 = w.mmio64.unwrap();
        assert_eq!(m64.start + m64.size, 1 << 46);
        assert_eq!(PciWindows::for_guest(4 << 30, 36).mmio64, None);
    }

    #[test]
    fn window_contains_its_edges_only() {
        let w = Window::new(0x1000, 0x1000);
        assert!(w.contains(0x1000, 0x1000));
        assert!(!w.contains(0xfff, 2));
        assert!(!w.contains(0x1fff, 2));
        assert!(Window::new(0, u64::MAX).contains(u64::MAX - 1, 1));
    }

    #[test]
    fn phys_bits_are_capped_and_defaulted() {
        let entry = |eax| kvm_bindings::kvm_cpuid_entry2 {
            function: 0x8000_0008,
            eax,
            ..Default::default()
        };
        let cpuid = |eax| CpuId::from_entries(&[entry(eax)]).unwrap();
        assert_eq!(guest_phys_bits(&cpuid(0x3028)), 40);
        assert_eq!(guest_phys_bits(&cpuid(0x34)), 48);
        assert_eq!(guest_phys_bits(&CpuId::new(0).unwrap()), 36);
        assert_eq!(phys_bits_from_leaf(Some(0x10)), 36);
        assert_eq!(phys_bits_from_leaf(None), 36);
    }
}
