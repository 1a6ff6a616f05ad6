//! Model-specific registers a vCPU starts with.

use kvm_bindings::{kvm_msr_entry, Msrs};

const MSR_IA32_SYSENTER_CS: u32 = 0x174;
const MSR_IA32_SYSENTER_ESP: u32 = 0x175;
const MSR_IA32_SYSENTER_EIP: u32 = 0x176;
const MSR_STAR: u32 = 0xc000_0081;
const MSR_LSTAR: u32 = 0xc000_0082;
const MSR_CSTAR: u32 = 0xc000_0083;
const MSR_SYSCALL_MASK: u32 = 0xc000_0084;
const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;
const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
const MSR_IA32_MISC_ENABLE_FAST_STRING: u64 = 0x1;
const MSR_MTRR_DEF_TYPE: u32 = 0x2ff;
/// MTRRs enabled, default memory type write-back: without it the guest runs uncached.
const MTRR_ENABLE_WRITEBACK: u64 = (1 << 11) | 0x6;

/// The boot MSRs: syscall state cleared, fast strings on, MTRRs enabled with WB default.
pub fn boot_msrs() -> Msrs {
    let entry = |index, data| kvm_msr_entry {
        index,
        data,
        ..Default::default()
    };
    Msrs::from_entries(&[
        entry(MSR_IA32_SYSENTER_CS, 0),
        entry(MSR_IA32_SYSENTER_ESP, 0),
        entry(MSR_IA32_SYSENTER_EIP, 0),
        entry(MSR_STAR, 0),
        entry(MSR_CSTAR, 0),
        entry(MSR_KERNEL_GS_BASE, 0),
        entry(MSR_SYSCALL_MASK, 0),
        entry(MSR_LSTAR, 0),
        entry(MSR_IA32_MISC_ENABLE, MSR_IA32_MISC_ENABLE_FAST_STRING),
        entry(MSR_MTRR_DEF_TYPE, MTRR_ENABLE_WRITEBACK),
    ])
    .expect("fewer MSRs than KVM_MAX_MSR_ENTRIES")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mtrrs_are_enabled_write_back() {
        let msrs = boot_msrs();
        let def = msrs
            .as_slice()
            .iter()
            .find(|m| m.index == MSR_MTRR_DEF_TYPE)
            .unwrap();
        assert_eq!(def.data & 0xff, 6);
        assert_ne!(def.data & (1 << 11), 0);
    }
}
