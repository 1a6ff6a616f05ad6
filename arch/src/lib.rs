//! x86_64 platform for zhitong: the guest memory map, vCPU state (CPUID, MSRs, registers,
//! page tables, LAPIC), the e820 map and the ACPI tables.

pub mod acpi;
pub mod cpuid;
pub mod e820;
pub mod lapic;
pub mod layout;
pub mod msrs;
pub mod regs;
