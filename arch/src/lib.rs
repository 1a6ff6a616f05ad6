//! x86_64 platform for zhitong: the guest memory map, vCPU state (CPUID, MSRs, registers,
//! page tables, LAPIC), the e820 map, the PCI BAR windows and the ACPI tables; and the
//! size/duration units every crate of the workspace writes and parses.

pub mod acpi;
pub mod cpuid;
pub mod e820;
pub mod lapic;
pub mod layout;
pub mod msrs;
pub mod pci_windows;
pub mod regs;
pub mod units;
