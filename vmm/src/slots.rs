//! KVM memory slots for device memory (BARs mapped straight into the guest). RAM takes the
//! first slots; these come after it and are recycled when a BAR moves or goes away.

use std::sync::{Arc, Mutex};

use devices::services::{MappingId, MemoryMapper, ServiceError};
use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::VmFd;

pub struct KvmMemoryMapper {
    vm: Arc<VmFd>,
    max_slots: u32,
    state: Mutex<SlotState>,
}

struct SlotState {
    next: u32,
    free: Vec<u32>,
}

impl KvmMemoryMapper {
    /// Slots `first_free..max_slots` are ours to hand out.
    pub fn new(vm: Arc<VmFd>, first_free: u32, max_slots: u32) -> Self {
        Self {
            vm,
            max_slots,
            state: Mutex::new(SlotState {
                next: first_free,
                free: Vec::new(),
            }),
        }
    }
}

impl MemoryMapper for KvmMemoryMapper {
    unsafe fn map(
        &self,
        gpa: u64,
        size: u64,
        host_addr: *mut u8,
    ) -> Result<MappingId, ServiceError> {
        let mut state = self.state.lock().unwrap();
        let slot = match state.free.pop() {
            Some(slot) => slot,
            None if state.next < self.max_slots => {
                state.next += 1;
                state.next - 1
            }
            None => return Err(ServiceError("no free KVM memory slot".into())),
        };
        let region = kvm_userspace_memory_region {
            slot,
            flags: 0,
            guest_phys_addr: gpa,
            memory_size: size,
            userspace_addr: host_addr as u64,
        };
        // SAFETY: the caller guarantees the host range stays mapped until `unmap`.
        match unsafe { self.vm.set_user_memory_region(region) } {
            Ok(()) => Ok(MappingId(slot)),
            Err(e) => {
                state.free.push(slot);
                Err(ServiceError(format!(
                    "KVM_SET_USER_MEMORY_REGION {gpa:#x}+{size:#x}: {e}"
                )))
            }
        }
    }

    fn unmap(&self, id: MappingId) -> Result<(), ServiceError> {
        let region = kvm_userspace_memory_region {
            slot: id.0,
            ..Default::default()
        };
        // SAFETY: a zero-sized region deletes the slot; no memory is referenced.
        match unsafe { self.vm.set_user_memory_region(region) } {
            Ok(()) => {
                self.state
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .free
                    .push(id.0);
                Ok(())
            }
            // The slot is not handed out again: KVM may still map it.
            Err(e) => Err(ServiceError(format!("removing KVM slot {}: {e}", id.0))),
        }
    }
}
