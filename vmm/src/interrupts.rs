//! GSI routing for KVM's in-kernel irqchip: the IOAPIC pins keep their identity routes and
//! MSI vectors get GSIs above them. KVM_SET_GSI_ROUTING replaces the whole table, so the
//! table is kept here and re-sent on every change.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use arch::layout::IOAPIC_PINS;
use devices::services::{InterruptRouter, MsiMessage, ServiceError};
use kvm_bindings::{
    kvm_irq_routing_entry, KvmIrqRouting, KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER,
    KVM_IRQCHIP_PIC_SLAVE, KVM_IRQ_ROUTING_IRQCHIP, KVM_IRQ_ROUTING_MSI,
};
use kvm_ioctls::VmFd;
use vmm_sys_util::eventfd::EventFd;

/// KVM's limit on routing entries (KVM_MAX_IRQ_ROUTES).
const MAX_ROUTES: usize = 4096;
/// Legacy PIC inputs that keep their routes next to the IOAPIC's.
const PIC_PINS: u32 = 16;

pub struct KvmInterruptRouter {
    vm: Arc<VmFd>,
    msi: Mutex<MsiRoutes>,
}

#[derive(Default)]
struct MsiRoutes {
    /// Allocated GSI -> its message (None until the device sets one).
    routes: BTreeMap<u32, Option<MsiMessage>>,
}

impl MsiRoutes {
    fn allocate(&mut self) -> Option<u32> {
        let fixed = IOAPIC_PINS as usize + PIC_PINS as usize;
        let gsi = (IOAPIC_PINS..).find(|g| !self.routes.contains_key(g))?;
        if self.routes.len() + fixed >= MAX_ROUTES {
            return None;
        }
        self.routes.insert(gsi, None);
        Some(gsi)
    }

    fn table(&self) -> Vec<kvm_irq_routing_entry> {
        let mut entries = Vec::new();
        for pin in 0..IOAPIC_PINS {
            entries.push(irqchip_route(pin, KVM_IRQCHIP_IOAPIC, pin));
            if pin < PIC_PINS {
                let (chip, chip_pin) = if pin < 8 {
                    (KVM_IRQCHIP_PIC_MASTER, pin)
                } else {
                    (KVM_IRQCHIP_PIC_SLAVE, pin - 8)
                };
                entries.push(irqchip_route(pin, chip, chip_pin));
            }
        }
        for (&gsi, msg) in &self.routes {
            if let Some(msg) = msg {
                entries.push(msi_route(gsi, msg));
            }
        }
        entries
    }
}

fn irqchip_route(gsi: u32, irqchip: u32, pin: u32) -> kvm_irq_routing_entry {
    let mut e = kvm_irq_routing_entry {
        gsi,
        type_: KVM_IRQ_ROUTING_IRQCHIP,
        ..Default::default()
    };
    e.u.irqchip.irqchip = irqchip;
    e.u.irqchip.pin = pin;
    e
}

fn msi_route(gsi: u32, msg: &MsiMessage) -> kvm_irq_routing_entry {
    let mut e = kvm_irq_routing_entry {
        gsi,
        type_: KVM_IRQ_ROUTING_MSI,
        ..Default::default()
    };
    e.u.msi.address_lo = msg.addr_lo;
    e.u.msi.address_hi = msg.addr_hi;
    e.u.msi.data = msg.data;
    e
}

impl KvmInterruptRouter {
    pub fn new(vm: Arc<VmFd>) -> Self {
        Self {
            vm,
            msi: Mutex::new(MsiRoutes::default()),
        }
    }

    fn commit(&self, routes: &MsiRoutes) -> Result<(), ServiceError> {
        let entries = routes.table();
        let table = KvmIrqRouting::from_entries(&entries)
            .map_err(|e| ServiceError(format!("GSI routing table: {e:?}")))?;
        self.vm
            .set_gsi_routing(&table)
            .map_err(|e| ServiceError(format!("KVM_SET_GSI_ROUTING: {e}")))
    }
}

impl InterruptRouter for KvmInterruptRouter {
    fn allocate_msi_gsi(&self) -> Result<u32, ServiceError> {
        self.msi
            .lock()
            .unwrap()
            .allocate()
            .ok_or_else(|| ServiceError("no free GSI for another MSI vector".into()))
    }

    fn set_msi_route(&self, gsi: u32, msg: MsiMessage) -> Result<(), ServiceError> {
        let mut routes = self.msi.lock().unwrap();
        match routes.routes.get_mut(&gsi) {
            Some(slot) => *slot = Some(msg),
            None => return Err(ServiceError(format!("GSI {gsi} was not allocated"))),
        }
        self.commit(&routes)
    }

    fn release_msi_gsi(&self, gsi: u32) {
        let mut routes = self.msi.lock().unwrap();
        if routes.routes.remove(&gsi).is_some() {
            if let Err(e) = self.commit(&routes) {
                devices::limited!(warn, "releasing GSI {gsi}: {e}");
            }
        }
    }

    fn register_irqfd(&self, evt: &EventFd, gsi: u32) -> Result<(), ServiceError> {
        self.vm
            .register_irqfd(evt, gsi)
            .map_err(|e| ServiceError(format!("KVM_IRQFD for GSI {gsi}: {e}")))
    }

    fn register_irqfd_with_resample(
        &self,
        evt: &EventFd,
        resample: &EventFd,
        gsi: u32,
    ) -> Result<(), ServiceError> {
        self.vm
            .register_irqfd_with_resample(evt, resample, gsi)
            .map_err(|e| ServiceError(format!("KVM_IRQFD (resample) for GSI {gsi}: {e}")))
    }

    fn unregister_irqfd(&self, evt: &EventFd, gsi: u32) -> Result<(), ServiceError> {
        self.vm
            .unregister_irqfd(evt, gsi)
            .map_err(|e| ServiceError(format!("KVM_IRQFD deassign for GSI {gsi}: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msi_gsis_start_above_the_ioapic_and_are_reused() {
        let mut r = MsiRoutes::default();
        assert_eq!(r.allocate(), Some(24));
        assert_eq!(r.allocate(), Some(25));
        r.routes.remove(&24);
        assert_eq!(r.allocate(), Some(24));
    }

    #[test]
    fn table_has_irqchip_routes_and_only_programmed_msi() {
        let mut r = MsiRoutes::default();
        let a = r.allocate().unwrap();
        let b = r.allocate().unwrap();
        r.routes.insert(
            b,
            Some(MsiMessage {
                addr_lo: 0xfee0_0000,
                addr_hi: 0,
                data: 0x41,
            }),
        );
        let table = r.table();
        let ioapic = table
            .iter()
            .filter(|e| e.type_ == KVM_IRQ_ROUTING_IRQCHIP)
            .count();
        assert_eq!(ioapic as u32, IOAPIC_PINS + PIC_PINS);
        let msi: Vec<_> = table
            .iter()
            .filter(|e| e.type_ == KVM_IRQ_ROUTING_MSI)
            .collect();
        assert_eq!(msi.len(), 1);
        assert_eq!(msi[0].gsi, b);
        assert_ne!(msi[0].gsi, a);
        // SAFETY: the entry was built as an MSI route.
        assert_eq!(unsafe { msi[0].u.msi.data }, 0x41);
    }
}
