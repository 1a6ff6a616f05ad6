//! What the host CPU tells without KVM: its vendor (for IOMMU hints) and its physical address
//! bits (for the guest's 64-bit BAR window).

use std::path::Path;

/// The guest physical address width `zhitong run` would use on this host: the host's CPUID
/// leaf 0x80000008, through the same cap as the VM's own (`arch::pci_windows::phys_bits_from_leaf`).
pub fn host_phys_bits() -> u8 {
    arch::pci_windows::phys_bits_from_leaf(host_leaf_80000008())
}

#[cfg(target_arch = "x86_64")]
fn host_leaf_80000008() -> Option<u32> {
    use std::arch::x86_64::__cpuid;
    // CPUID is always available on x86_64; leaf 0x80000000 gives the highest extended leaf.
    let max = __cpuid(0x8000_0000).eax;
    (max >= 0x8000_0008).then(|| __cpuid(0x8000_0008).eax)
}

#[cfg(not(target_arch = "x86_64"))]
fn host_leaf_80000008() -> Option<u32> {
    None
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vendor {
    Intel,
    Amd,
    Other,
}

impl Vendor {
    /// From `vendor_id` in /proc/cpuinfo (under the given proc root).
    pub fn from_cpuinfo(proc_root: &Path) -> Vendor {
        let text = std::fs::read_to_string(proc_root.join("cpuinfo")).unwrap_or_default();
        let id = text
            .lines()
            .find(|l| l.starts_with("vendor_id"))
            .and_then(|l| l.split(':').nth(1))
            .map(str::trim)
            .unwrap_or("");
        match id {
            "GenuineIntel" => Vendor::Intel,
            "AuthenticAMD" | "HygonGenuine" => Vendor::Amd,
            _ => Vendor::Other,
        }
    }

    /// The kernel parameter that turns the IOMMU on, and what firmware calls it.
    pub fn iommu_param(self) -> (&'static str, &'static str) {
        match self {
            Vendor::Intel => ("intel_iommu=on", "VT-d"),
            Vendor::Amd => ("amd_iommu=on", "AMD-Vi (IOMMU)"),
            Vendor::Other => ("intel_iommu=on (Intel) or amd_iommu=on (AMD)", "the IOMMU"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phys_bits_are_plausible() {
        let bits = host_phys_bits();
        assert!((32..=48).contains(&bits), "{bits}");
    }

    #[test]
    fn vendor_from_cpuinfo() {
        let dir = std::env::temp_dir().join(format!("zhitong-cpuinfo-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("cpuinfo"),
            "processor\t: 0\nvendor_id\t: AuthenticAMD\n",
        )
        .unwrap();
        assert_eq!(Vendor::from_cpuinfo(&dir), Vendor::Amd);
        std::fs::write(dir.join("cpuinfo"), "vendor_id\t: GenuineIntel\n").unwrap();
        assert_eq!(Vendor::from_cpuinfo(&dir), Vendor::Intel);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(Vendor::from_cpuinfo(&dir), Vendor::Other);
    }
}
