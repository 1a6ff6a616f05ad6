//! The ioctl numbers the filters allow, by value: Linux's _IOC encoding over the KVM (0xAE)
//! and VFIO (';') types with the sizes of the kernel structs they take. The tests pin them to
//! the numbers the kernel headers give.

use std::mem::size_of;

use kvm_bindings::{
    kvm_device_attr, kvm_ioeventfd, kvm_irq_routing, kvm_irqfd, kvm_userspace_memory_region,
};

const WRITE: u64 = 1;

const fn ioc(dir: u64, ty: u64, nr: u64, size: usize) -> u64 {
    (dir << 30) | ((size as u64) << 16) | (ty << 8) | nr
}

const KVM: u64 = 0xae;
const VFIO: u64 = b';' as u64;
/// VFIO numbers its ioctls from VFIO_BASE.
const VFIO_BASE: u64 = 100;

pub const KVM_RUN: u64 = ioc(0, KVM, 0x80, 0);
pub const KVM_GET_REGS: u64 = ioc(2, KVM, 0x81, size_of::<kvm_bindings::kvm_regs>());
pub const KVM_GET_SREGS: u64 = ioc(2, KVM, 0x83, size_of::<kvm_bindings::kvm_sregs>());
pub const KVM_SET_USER_MEMORY_REGION: u64 =
    ioc(WRITE, KVM, 0x46, size_of::<kvm_userspace_memory_region>());
pub const KVM_SET_GSI_ROUTING: u64 = ioc(WRITE, KVM, 0x6a, size_of::<kvm_irq_routing>());
pub const KVM_IRQFD: u64 = ioc(WRITE, KVM, 0x76, size_of::<kvm_irqfd>());
pub const KVM_IOEVENTFD: u64 = ioc(WRITE, KVM, 0x79, size_of::<kvm_ioeventfd>());
pub const KVM_SET_DEVICE_ATTR: u64 = ioc(WRITE, KVM, 0xe1, size_of::<kvm_device_attr>());

pub const VFIO_GROUP_UNSET_CONTAINER: u64 = ioc(0, VFIO, VFIO_BASE + 5, 0);
pub const VFIO_DEVICE_GET_REGION_INFO: u64 = ioc(0, VFIO, VFIO_BASE + 8, 0);
pub const VFIO_DEVICE_GET_IRQ_INFO: u64 = ioc(0, VFIO, VFIO_BASE + 9, 0);
pub const VFIO_DEVICE_SET_IRQS: u64 = ioc(0, VFIO, VFIO_BASE + 10, 0);
pub const VFIO_DEVICE_RESET: u64 = ioc(0, VFIO, VFIO_BASE + 11, 0);
pub const VFIO_IOMMU_MAP_DMA: u64 = ioc(0, VFIO, VFIO_BASE + 13, 0);
pub const VFIO_IOMMU_UNMAP_DMA: u64 = ioc(0, VFIO, VFIO_BASE + 14, 0);
pub const VFIO_DEVICE_DETACH_IOMMUFD_PT: u64 = ioc(0, VFIO, VFIO_BASE + 20, 0);

/// iommufd shares VFIO's type letter and numbers its commands from 0x80.
const IOMMUFD_CMD_BASE: u64 = 0x80;
pub const IOMMU_DESTROY: u64 = ioc(0, VFIO, IOMMUFD_CMD_BASE, 0);
pub const IOMMU_IOAS_MAP: u64 = ioc(0, VFIO, IOMMUFD_CMD_BASE + 5, 0);
pub const IOMMU_IOAS_UNMAP: u64 = ioc(0, VFIO, IOMMUFD_CMD_BASE + 6, 0);

/// A tap's offloads, set when the guest's virtio-net driver activates the device.
pub const TUNSETOFFLOAD: u64 = ioc(WRITE, b'T' as u64, 208, size_of::<libc::c_uint>());

/// std's `set_nonblocking` on a socket.
pub const FIONBIO: u64 = libc::FIONBIO;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_match_the_kernel_headers() {
        for (got, want) in [
            (KVM_RUN, 0xae80),
            (KVM_GET_REGS, 0x8090_ae81),
            (KVM_GET_SREGS, 0x8138_ae83),
            (KVM_SET_USER_MEMORY_REGION, 0x4020_ae46),
            (KVM_SET_GSI_ROUTING, 0x4008_ae6a),
            (KVM_IRQFD, 0x4020_ae76),
            (KVM_IOEVENTFD, 0x4040_ae79),
            (TUNSETOFFLOAD, 0x4004_54d0),
            (KVM_SET_DEVICE_ATTR, 0x4018_aee1),
            (VFIO_GROUP_UNSET_CONTAINER, 0x3b69),
            (VFIO_DEVICE_GET_REGION_INFO, 0x3b6c),
            (VFIO_DEVICE_GET_IRQ_INFO, 0x3b6d),
            (VFIO_DEVICE_SET_IRQS, 0x3b6e),
            (VFIO_DEVICE_RESET, 0x3b6f),
            (VFIO_IOMMU_MAP_DMA, 0x3b71),
            (VFIO_IOMMU_UNMAP_DMA, 0x3b72),
            (VFIO_DEVICE_DETACH_IOMMUFD_PT, 0x3b78),
            (IOMMU_DESTROY, 0x3b80),
            (IOMMU_IOAS_MAP, 0x3b85),
            (IOMMU_IOAS_UNMAP, 0x3b86),
            (FIONBIO, 0x5421),
        ] {
            assert_eq!(got, want, "{got:#x} != {want:#x}");
        }
    }
}
