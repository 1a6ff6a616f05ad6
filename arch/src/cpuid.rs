//! CPUID for a vCPU: the host's KVM-supported leaves with a topology of one socket holding
//! `vcpu_count` single-threaded cores, this vCPU's APIC ID, and the hypervisor bit.

use kvm_bindings::{kvm_cpuid_entry2, CpuId};

const HYPERVISOR_BIT: u32 = 1 << 31; // leaf 1, ECX
const HTT_BIT: u32 = 1 << 28; // leaf 1, EDX: more than one logical processor per package
const TSC_DEADLINE_BIT: u32 = 1 << 24; // leaf 1, ECX
const X2APIC_LEVEL_SMT: u32 = 1;
const X2APIC_LEVEL_CORE: u32 = 2;

/// Bits needed to number `count` things (ceil(log2(count))).
fn id_bits(count: u32) -> u32 {
    if count <= 1 {
        0
    } else {
        32 - (count - 1).leading_zeros()
    }
}

/// Add what KVM emulates but reports by capability rather than in KVM_GET_SUPPORTED_CPUID.
/// The TSC-deadline LAPIC timer (KVM_CAP_TSC_DEADLINE_TIMER): without it Linux runs the
/// LAPIC timer in one-shot mode, calibrated against the PIT at boot, and every timer arm
/// is an APIC register write; with it the timer is one MSR write and needs no calibration.
pub fn add_kvm_emulated(cpuid: &mut CpuId, tsc_deadline: bool) {
    for entry in cpuid.as_mut_slice() {
        if entry.function == 0x1 && tsc_deadline {
            entry.ecx |= TSC_DEADLINE_BIT;
        }
    }
}

/// Adjust `cpuid` (as returned by KVM_GET_SUPPORTED_CPUID) for vCPU `vcpu_id` of `vcpu_count`.
pub fn configure(cpuid: &mut CpuId, vcpu_id: u8, vcpu_count: u8) {
    for entry in cpuid.as_mut_slice() {
        configure_entry(entry, u32::from(vcpu_id), u32::from(vcpu_count));
    }
}

fn configure_entry(entry: &mut kvm_cpuid_entry2, apic_id: u32, count: u32) {
    match entry.function {
        0x1 => {
            // EBX[31:24] initial APIC ID, EBX[23:16] logical processors per package,
            // EBX[15:8] CLFLUSH line size in qwords.
            entry.ebx = (apic_id << 24) | (count.min(255) << 16) | (8 << 8);
            entry.ecx |= HYPERVISOR_BIT;
            if count > 1 {
                entry.edx |= HTT_BIT;
            } else {
                entry.edx &= !HTT_BIT;
            }
        }
        0x4 => {
            // Deterministic cache parameters: EAX[31:26] cores per package - 1,
            // EAX[25:14] logical processors sharing this cache - 1 (one: no SMT).
            entry.eax &= 0x3fff;
            entry.eax |= (count - 1).min(63) << 26;
        }
        0x6 => {
            // No thermal/power management features are emulated.
            entry.ecx &= !1; // APERF/MPERF
        }
        0xb | 0x1f => configure_x2apic_topology(entry, apic_id, count),
        0x8000_0008 => {
            // AMD: ECX[7:0] number of threads in the package - 1,
            // ECX[15:12] APIC ID bits for them.
            entry.ecx = (entry.ecx & !0xf0ff) | ((id_bits(count) & 0xf) << 12) | (count - 1);
        }
        0x8000_001e => {
            // AMD extended APIC ID: this vCPU is core `apic_id` with one thread, node 0.
            entry.eax = apic_id;
            entry.ebx = apic_id & 0xff;
            entry.ecx = 0;
        }
        _ => {}
    }
}

fn configure_x2apic_topology(entry: &mut kvm_cpuid_entry2, apic_id: u32, count: u32) {
    // Sub-leaf 0 is the SMT level (one thread per core), sub-leaf 1 the core level.
    match entry.index {
        0 => {
            entry.eax = 0; // no bits: one thread per core
            entry.ebx = 1;
            entry.ecx = (X2APIC_LEVEL_SMT << 8) | entry.index;
        }
        1 => {
            entry.eax = id_bits(count);
            entry.ebx = count;
            entry.ecx = (X2APIC_LEVEL_CORE << 8) | entry.index;
        }
        _ => {
            entry.eax = 0;
            entry.ebx = 0;
            entry.ecx = entry.index; // level type 0: invalid, ends the enumeration
        }
    }
    entry.edx = apic_id;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(function: u32, index: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            ..Default::default()
        }
    }

    fn find(cpuid: &CpuId, function: u32, index: u32) -> kvm_cpuid_entry2 {
        *cpuid
            .as_slice()
            .iter()
            .find(|e| e.function == function && e.index == index)
            .unwrap()
    }

    fn sample() -> CpuId {
        CpuId::from_entries(&[
            leaf(0x1, 0),
            leaf(0x4, 0),
            leaf(0xb, 0),
            leaf(0xb, 1),
            leaf(0xb, 2),
            leaf(0x8000_0008, 0),
            leaf(0x8000_001e, 0),
        ])
        .unwrap()
    }

    #[test]
    fn tsc_deadline_is_added_only_when_kvm_emulates_it() {
        let mut cpuid = sample();
        add_kvm_emulated(&mut cpuid, false);
        assert_eq!(find(&cpuid, 1, 0).ecx & TSC_DEADLINE_BIT, 0);
        add_kvm_emulated(&mut cpuid, true);
        assert_ne!(find(&cpuid, 1, 0).ecx & TSC_DEADLINE_BIT, 0);
        // The per-vCPU pass keeps it.
        configure(&mut cpuid, 0, 1);
        assert_ne!(find(&cpuid, 1, 0).ecx & TSC_DEADLINE_BIT, 0);
        assert_eq!(find(&cpuid, 4, 0), leaf(0x4, 0));
    }

    #[test]
    fn id_bits_rounds_up() {
        assert_eq!(id_bits(1), 0);
        assert_eq!(id_bits(2), 1);
        assert_eq!(id_bits(3), 2);
        assert_eq!(id_bits(4), 2);
        assert_eq!(id_bits(5), 3);
    }

    #[test]
    fn apic_id_and_count_in_leaf_1() {
        let mut cpuid = sample();
        configure(&mut cpuid, 3, 4);
        let l1 = find(&cpuid, 1, 0);
        assert_eq!(l1.ebx >> 24, 3);
        assert_eq!((l1.ebx >> 16) & 0xff, 4);
        assert_ne!(l1.ecx & HYPERVISOR_BIT, 0);
        assert_ne!(l1.edx & HTT_BIT, 0);
    }

    #[test]
    fn single_vcpu_has_no_htt() {
        let mut cpuid = sample();
        configure(&mut cpuid, 0, 1);
        assert_eq!(find(&cpuid, 1, 0).edx & HTT_BIT, 0);
        assert_eq!(find(&cpuid, 4, 0).eax >> 26, 0);
    }

    #[test]
    fn x2apic_topology_is_one_socket_of_cores() {
        let mut cpuid = sample();
        configure(&mut cpuid, 5, 6);
        let smt = find(&cpuid, 0xb, 0);
        let core = find(&cpuid, 0xb, 1);
        let end = find(&cpuid, 0xb, 2);
        assert_eq!((smt.eax, smt.ebx, (smt.ecx >> 8) & 0xff), (0, 1, 1));
        assert_eq!((core.eax, core.ebx, (core.ecx >> 8) & 0xff), (3, 6, 2));
        assert_eq!((end.ecx >> 8) & 0xff, 0);
        assert!([smt.edx, core.edx, end.edx].iter().all(|&id| id == 5));
    }

    #[test]
    fn amd_leaves_count_threads() {
        let mut cpuid = sample();
        configure(&mut cpuid, 1, 2);
        let l = find(&cpuid, 0x8000_0008, 0);
        assert_eq!(l.ecx & 0xff, 1);
        assert_eq!((l.ecx >> 12) & 0xf, 1);
        assert_eq!(find(&cpuid, 0x8000_001e, 0).eax, 1);
    }
}
