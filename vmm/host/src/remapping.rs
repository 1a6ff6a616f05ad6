//! Interrupt remapping as the host has it: whether the kernel remaps interrupts, and
//! whether a VFIO backend takes devices without it (its allow_unsafe_interrupts). Facts the
//! checks and the choice of backend both read.

use crate::Host;

/// Interrupt remapping in use: the kernel's IRQ domains are then named IR-IO-APIC,
/// IR-PCI-MSI... in /proc/interrupts. `None` when that cannot be read.
pub fn remapping_on(host: &Host) -> Option<bool> {
    let interrupts = std::fs::read_to_string(host.proc_path("interrupts")).ok()?;
    Some(interrupts.split_whitespace().any(|w| w.starts_with("IR-")))
}

/// Kernel module `module` (vfio_iommu_type1, iommufd) takes devices without interrupt
/// remapping: its allow_unsafe_interrupts is set.
pub fn unsafe_interrupts_allowed(host: &Host, module: &str) -> bool {
    host.sysfs
        .module_param(module, "allow_unsafe_interrupts")
        .is_some_and(|v| matches!(v.as_str(), "Y" | "y" | "1"))
}
