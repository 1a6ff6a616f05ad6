//! What the host offers: PCI devices and IOMMU groups read from sysfs (under a root that tests
//! can point at a temporary tree), and the preflight checks a passthrough run needs.

pub mod bdf;
pub mod preflight;
pub mod sysfs;

pub use bdf::Bdf;
pub use sysfs::Sysfs;
