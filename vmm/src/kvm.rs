//! Opening KVM and creating the VM: the capabilities zhitong needs, the in-kernel irqchip
//! and PIT, and the CPUID KVM supports.

use kvm_bindings::{kvm_pit_config, CpuId, KVM_MAX_CPUID_ENTRIES, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::{Cap, Kvm, VmFd};

use crate::error::{Error, Result};

/// KVM needs three pages for the TSS on Intel; they sit in the MMIO hole, above the LAPIC.
const KVM_TSS_ADDRESS: usize = 0xfffb_d000;
const KVM_PATH: &str = "/dev/kvm";

/// Open /dev/kvm and check it can run a VM of `vcpus`.
pub fn open(vcpus: u8) -> Result<Kvm> {
    let kvm = Kvm::new().map_err(|source| Error::KvmOpen {
        hint: host::checks::kvm_open_failed(
            std::path::Path::new(KVM_PATH),
            source.errno(),
            host::cpu::Vendor::from_cpuinfo(std::path::Path::new("/proc")),
        )
        .to_string(),
        source,
    })?;
    for (cap, name) in [
        (Cap::Irqchip, "an in-kernel irqchip (KVM_CAP_IRQCHIP)"),
        (Cap::UserMemory, "user memory regions (KVM_CAP_USER_MEMORY)"),
        (Cap::Irqfd, "irqfd (KVM_CAP_IRQFD)"),
        (Cap::Pit2, "the in-kernel PIT (KVM_CAP_PIT2)"),
    ] {
        if !kvm.check_extension(cap) {
            return Err(Error::KvmCapability(name));
        }
    }
    let max = kvm.get_max_vcpus();
    if usize::from(vcpus) > max {
        return Err(Error::TooManyVcpus { got: vcpus, max });
    }
    Ok(kvm)
}

/// A VM with the in-kernel IOAPIC/LAPIC and PIT.
pub fn create_vm(kvm: &Kvm) -> Result<VmFd> {
    let vm = kvm.create_vm().map_err(Error::kvm("KVM_CREATE_VM"))?;
    vm.set_tss_address(KVM_TSS_ADDRESS)
        .map_err(Error::kvm("KVM_SET_TSS_ADDR"))?;
    vm.create_irq_chip()
        .map_err(Error::kvm("KVM_CREATE_IRQCHIP"))?;
    let pit = kvm_pit_config {
        flags: KVM_PIT_SPEAKER_DUMMY,
        ..Default::default()
    };
    vm.create_pit2(pit).map_err(Error::kvm("KVM_CREATE_PIT2"))?;
    Ok(vm)
}

/// The CPUID entries KVM can give a guest (each vCPU's are derived from these), with what
/// KVM emulates but reports only as a capability.
pub fn supported_cpuid(kvm: &Kvm) -> Result<CpuId> {
    let mut cpuid = kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(Error::kvm("KVM_GET_SUPPORTED_CPUID"))?;
    arch::cpuid::add_kvm_emulated(&mut cpuid, kvm.check_extension(Cap::TscDeadlineTimer));
    Ok(cpuid)
}
