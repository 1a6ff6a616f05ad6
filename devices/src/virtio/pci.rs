//! The virtio-pci function (modern only, virtio 1.x): config space with the virtio
//! capabilities and MSI-X, BAR 0 (common config, ISR, device config, notify) and BAR 2
//! (MSI-X table and PBA); it drives a [`VirtioDevice`].

use std::io;
use std::sync::Arc;

use virtio_queue::{Queue, QueueT};
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

use super::caps::{
    self, Caps, DEVICE_LEN, DEVICE_OFFSET, ISR_OFFSET, MSIX_BAR, MSIX_BAR_SIZE, REGS_BAR,
    REGS_BAR_SIZE,
};
use super::common::{Action, CommonConfig, QueueRegs, COMMON_LEN};
use super::interrupt::Interrupts;
use super::notify::{Notifiers, NOTIFY_OFFSET};
use super::{ActiveQueue, VirtioDevice, VirtioInterrupt, VirtioServices};
use crate::pci::config::{
    ConfigSpace, PciIds, COMMAND, COMMAND_INTX_DISABLE, INTERRUPT_PIN, STATUS_INTERRUPT,
};
use crate::pci::{Bar, BarKind, PciDevice, PciError};

const VIRTIO_VENDOR: u16 = 0x1af4;
const MODERN_DEVICE_BASE: u16 = 0x1040;
/// The PCI subsystem id of a non-transitional device (spec 4.1.2.1: 0x40 or higher).
const SUBSYSTEM_ID: u16 = 0x40;
/// Most MSI-X entries BAR 2 holds below the PBA.
const MAX_VECTORS: usize = (super::interrupt::PBA_OFFSET / 16) as usize;

/// (class, subclass) per virtio device type.
fn class_of(device_type: u32) -> (u8, u8) {
    match device_type {
        super::TYPE_NET => (0x02, 0x00),
        super::TYPE_BLOCK => (0x01, 0x80),
        _ => (0xff, 0x00),
    }
}

pub struct VirtioPciDevice {
    name: String,
    device: Box<dyn VirtioDevice>,
    mem: GuestMemoryMmap,
    config: ConfigSpace,
    caps: Caps,
    common: CommonConfig,
    interrupts: Arc<Interrupts>,
    notifiers: Notifiers,
    active: bool,
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

impl VirtioPciDevice {
    pub fn new(
        name: String,
        device: Box<dyn VirtioDevice>,
        mem: GuestMemoryMmap,
        services: VirtioServices,
        intx_gsi: Option<u32>,
    ) -> io::Result<Self> {
        let mut device = device;
        device.set_worker_spawner(services.spawner.clone());
        let sizes = device.queue_max_sizes().to_vec();
        if sizes.is_empty() || sizes.len() + 1 > MAX_VECTORS {
            return Err(invalid(format!(
                "{name}: {} queues (1 to {} supported)",
                sizes.len(),
                MAX_VECTORS - 1
            )));
        }
        if let Some(bad) = sizes.iter().find(|s| Queue::new(**s).is_err()) {
            return Err(invalid(format!(
                "{name}: queue size {bad} is not a power of two ≤ 32768"
            )));
        }
        let device_type = device.device_type();
        let (class, subclass) = class_of(device_type);
        let ids = PciIds {
            vendor_id: VIRTIO_VENDOR,
            device_id: MODERN_DEVICE_BASE.wrapping_add(device_type as u16),
            revision: 1,
            class,
            subclass,
            prog_if: 0,
            subsystem_vendor_id: VIRTIO_VENDOR,
            subsystem_id: SUBSYSTEM_ID,
        };
        let vectors = sizes.len() as u16 + 1;
        let mut config = ConfigSpace::new(&ids);
        let cfg_err = |e: crate::pci::config::ConfigError| invalid(format!("{name}: {e}"));
        config
            .add_bar(REGS_BAR, BarKind::Mem64, false, REGS_BAR_SIZE)
            .map_err(cfg_err)?;
        config
            .add_bar(MSIX_BAR, BarKind::Mem32, false, MSIX_BAR_SIZE)
            .map_err(cfg_err)?;
        let caps = caps::add_caps(&mut config, sizes.len(), vectors).map_err(cfg_err)?;
        if intx_gsi.is_some() {
            config.set_u8(INTERRUPT_PIN, 1);
        }
        let interrupts = Interrupts::new(
            name.clone(),
            services.router.clone(),
            vectors,
            sizes.len(),
            intx_gsi,
        )?;
        let notifiers = Notifiers::new(name.clone(), services.ioevents.clone(), sizes.len())?;
        Ok(Self {
            common: CommonConfig::new(device.features(), &sizes, vectors),
            name,
            device,
            mem,
            config,
            caps,
            interrupts: Arc::new(interrupts),
            notifiers,
            active: false,
        })
    }

    /// Whether the device is active (DRIVER_OK accepted).
    pub fn is_active(&self) -> bool {
        self.active
    }

    fn reset_device(&mut self) {
        if std::mem::take(&mut self.active) {
            self.device.reset();
        }
        self.common.reset();
        self.interrupts.reset();
    }

    /// A queue from the driver's registers, if virtio-queue takes it as valid.
    fn build_queue(&self, regs: &QueueRegs) -> Option<Queue> {
        let mut q = Queue::new(regs.max_size).ok()?;
        q.try_set_size(regs.size).ok()?;
        q.try_set_desc_table_address(GuestAddress(regs.desc)).ok()?;
        q.try_set_avail_ring_address(GuestAddress(regs.driver))
            .ok()?;
        q.try_set_used_ring_address(GuestAddress(regs.device))
            .ok()?;
        q.set_ready(true);
        // Check the rings ourselves first: is_valid logs every failure, unthrottled.
        let size = usize::from(regs.size);
        let rings = [
            (regs.desc, 16 * size),
            (regs.driver, 6 + 2 * size),
            (regs.device, 6 + 8 * size),
        ];
        let mapped = rings
            .iter()
            .all(|&(addr, len)| self.mem.check_range(GuestAddress(addr), len));
        (mapped && q.is_valid(&self.mem)).then_some(q)
    }

    fn activate(&mut self) {
        let mut queues = Vec::new();
        let mut result = Ok(());
        for (i, regs) in self.common.queues.iter().enumerate() {
            if !regs.enabled {
                continue;
            }
            let index = i as u16;
            let Some(queue) = self.build_queue(regs) else {
                result = Err(super::VirtioError::InvalidQueue(index));
                break;
            };
            let notifier = match self.notifiers.get(i).map(|e| e.try_clone()) {
                Some(Ok(evt)) => evt,
                Some(Err(e)) => {
                    result = Err(super::VirtioError::EventFd(e));
                    break;
                }
                None => continue,
            };
            queues.push(ActiveQueue {
                queue,
                notifier,
                index,
            });
        }
        let interrupt: Arc<dyn VirtioInterrupt> = self.interrupts.clone();
        let result = result.and_then(|()| {
            self.device.ack_features(self.common.driver_features());
            self.device.activate(self.mem.clone(), queues, interrupt)
        });
        match result {
            Ok(()) => self.active = true,
            Err(e) => {
                crate::limited!(warn, "{}: the driver's setup is unusable: {e}", self.name);
                self.common.clear_driver_ok();
                self.common.set_needs_reset();
                self.interrupts.signal_config();
            }
        }
    }

    fn act(&mut self, action: Action) {
        match action {
            Action::None => {}
            Action::Reset => self.reset_device(),
            Action::Activate => self.activate(),
            Action::Vectors => {
                let queues: Vec<u16> = self.common.queues.iter().map(|q| q.msix_vector).collect();
                self.interrupts
                    .set_vectors(self.common.msix_config, &queues);
            }
            Action::NeedsReset => self.interrupts.signal_config(),
        }
    }

    /// A BAR 0 access `offset..offset+len` inside `start..start+size`: the offset into it.
    fn within(offset: u64, len: usize, start: u64, size: u64) -> Option<u64> {
        let rel = offset.checked_sub(start)?;
        (rel.checked_add(len as u64)? <= size).then_some(rel)
    }

    fn regs_read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        let len = data.len();
        if let Some(rel) = Self::within(offset, len, 0, COMMON_LEN) {
            self.common.read(rel, data);
        } else if let Some(rel) = Self::within(offset, len, ISR_OFFSET, 4) {
            if let (0, Some(b)) = (rel, data.first_mut()) {
                *b = self.interrupts.read_isr();
            }
        } else if let Some(rel) = Self::within(offset, len, DEVICE_OFFSET, DEVICE_LEN) {
            self.device.read_config(rel, data);
        }
    }

    fn regs_write(&mut self, offset: u64, data: &[u8]) {
        let len = data.len();
        if let Some(rel) = Self::within(offset, len, 0, COMMON_LEN) {
            let action = self.common.write(rel, data);
            self.act(action);
        } else if let Some(rel) = Self::within(offset, len, DEVICE_OFFSET, DEVICE_LEN) {
            self.device.write_config(rel, data);
        } else if let Some(rel) = Self::within(offset, len, NOTIFY_OFFSET, 0x1000) {
            self.notifiers.trapped(rel);
        }
    }

    /// The PCI_CFG window: the BAR access its registers describe.
    fn window_read(&mut self) -> u32 {
        let cap = self.caps.pci_cfg;
        let Some((bar, offset, len)) = caps::window_access(&self.config, cap) else {
            return self.config.get_u32(caps::window_data(cap));
        };
        let mut buf = [0u8; 4];
        self.bar_read(bar, offset, &mut buf[..len]);
        u32::from_le_bytes(buf)
    }

    fn window_write(&mut self) {
        let cap = self.caps.pci_cfg;
        if let Some((bar, offset, len)) = caps::window_access(&self.config, cap) {
            let data = self.config.get_u32(caps::window_data(cap)).to_le_bytes();
            self.bar_write(bar, offset, &data[..len]);
        }
    }
}

impl PciDevice for VirtioPciDevice {
    fn config_read(&mut self, offset: u16) -> u32 {
        let offset = offset & !3;
        if offset == caps::window_data(self.caps.pci_cfg) {
            return self.window_read();
        }
        let value = self.config.read(offset);
        if offset == COMMAND && self.interrupts.isr_pending() {
            // The status register (upper half) shows a pending INTx.
            return value | u32::from(STATUS_INTERRUPT) << 16;
        }
        value
    }

    fn config_write(&mut self, offset: u16, data: &[u8]) {
        let data = &data[..data.len().min(4)];
        self.config.write(offset, data);
        let msix = self.caps.msix;
        if caps::overlaps(offset, data.len(), msix + 2, 2) {
            let (enabled, masked) = caps::msix_control(&self.config, msix);
            self.interrupts.set_msix_control(enabled, masked);
        }
        if caps::overlaps(offset, data.len(), COMMAND, 2) {
            let disabled = self.config.command() & COMMAND_INTX_DISABLE != 0;
            self.interrupts.set_intx_disabled(disabled);
        }
        let window = caps::window_data(self.caps.pci_cfg);
        if caps::overlaps(offset, data.len(), window, 4) {
            self.window_write();
        }
    }

    fn bars(&self) -> Vec<Bar> {
        self.config.bars()
    }

    fn bar_mapped(&mut self, bar: &Bar) -> Result<(), PciError> {
        if bar.index == REGS_BAR {
            self.notifiers.register(bar.addr);
        }
        Ok(())
    }

    fn bar_unmapped(&mut self, bar: &Bar) {
        if bar.index == REGS_BAR {
            self.notifiers.unregister();
        }
    }

    fn bar_read(&mut self, index: u8, offset: u64, data: &mut [u8]) {
        match index {
            REGS_BAR => self.regs_read(offset, data),
            MSIX_BAR => self.interrupts.bar_read(offset, data),
            _ => data.fill(0),
        }
    }

    fn bar_write(&mut self, index: u8, offset: u64, data: &[u8]) {
        match index {
            REGS_BAR => self.regs_write(offset, data),
            MSIX_BAR => self.interrupts.bar_write(offset, data),
            _ => {}
        }
    }

    fn assign_bar(&mut self, index: u8, addr: u64) {
        self.config.assign_bar(index, addr);
    }

    fn name(&self) -> String {
        self.name.clone()
    }
}

impl Drop for VirtioPciDevice {
    fn drop(&mut self) {
        self.device.reset();
        self.notifiers.unregister();
        self.interrupts.teardown();
    }
}
