//! x86_64 platform for zhitong: the guest memory map, vCPU state (CPUID, MSRs, registers,
//! page tables), the e820 map and the ACPI tables.

pub mod layout;
