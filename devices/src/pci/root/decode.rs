//! BAR decode tracking: after each config write (and each BAR write that changed config
//! space, through a mirror of it in a BAR) the root compares what a function's BARs say
//! ([`PciDevice::bars`]) with what it has on the buses, and moves bus ranges to match.
//!
//! The guest may write anything to a BAR (sizing writes all-ones, a 64-bit BAR is written
//! one half at a time, and decoding is not always off meanwhile), so a decoding BAR is
//! only put on a bus when it is sane:
//! - I/O BARs lie entirely inside the I/O window;
//! - 32-bit memory BARs and the ROM lie inside the 32-bit window; 64-bit memory BARs
//!   inside the 32-bit or the 64-bit window (which ends at the guest's physical address
//!   limit). The windows hold no RAM, ECAM, IOAPIC or LAPIC, so a BAR can never shadow
//!   them;
//! - the range does not overlap anything already on the bus (another BAR, the config
//!   ports...): `Bus::insert` refuses that.
//!
//! Anything else is left off with a warning; the guest keeps running and the BAR is put on
//! the bus as soon as a later write makes it sane.

use std::sync::{Arc, Mutex, Weak};

use super::{lock, Function, SharedDevice};
use crate::pci::allocator::{BarName, PciWindows, Size, Window};
use crate::pci::{Bar, BarKind, PciDevice};
use crate::{Bus, BusDevice, WeakBusDevice};

/// What sits on the bus for a mapped BAR: forwards accesses, with offsets relative to the
/// BAR's base, to the device. Accesses the device maps directly (KVM slots) never get here.
struct BarRegion {
    device: SharedDevice,
    index: u8,
    /// To re-sync after a BAR write that changed config space (a config mirror in a BAR).
    func: Weak<Function>,
    decoder: Arc<Decoder>,
}

impl BusDevice for BarRegion {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        lock(&self.device).bar_read(self.index, offset, data);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let mut dev = lock(&self.device);
        dev.bar_write(self.index, offset, data);
        if dev.take_config_changed() {
            if let Some(func) = self.func.upgrade() {
                self.decoder.sync_bars(&func, &mut *dev);
            }
        }
    }
}

/// What BAR decoding needs of the root: the buses BARs go on and the windows they must lie
/// in. Shared with the BAR regions.
pub(super) struct Decoder {
    pub pio: Arc<Bus>,
    pub mmio: Arc<Bus>,
    pub windows: PciWindows,
}

/// A BAR the root put on a bus. The root owns the region; the bus only refers to it.
struct MappedBar {
    bar: Bar,
    _region: Arc<Mutex<BarRegion>>,
}

/// What the root did with a function's decoding BARs.
#[derive(Default)]
pub(super) struct BarState {
    /// On a bus (and `bar_mapped` called).
    mapped: Vec<MappedBar>,
    /// Decoding but refused; kept to warn once per state, not on every config write.
    refused: Vec<Bar>,
}

impl Decoder {
    /// Bring the buses in line with `dev`'s BARs. `dev` is `func`'s device, locked by the
    /// caller; BARs that stop decoding or move are unmapped before any is mapped, so two
    /// BARs may swap addresses in one step. Refused BARs are retried on every call.
    pub(super) fn sync_bars(self: &Arc<Self>, func: &Arc<Function>, dev: &mut dyn PciDevice) {
        let wanted: Vec<Bar> = dev.bars().into_iter().filter(|b| b.decoding).collect();
        let mut state = lock(&func.bars);
        let (keep, gone): (Vec<MappedBar>, Vec<MappedBar>) = state
            .mapped
            .drain(..)
            .partition(|m| wanted.contains(&m.bar));
        for MappedBar { bar: old, .. } in gone {
            if let Err(e) = self.bus_for(&old).remove(old.addr) {
                crate::limited!(warn, "{}: removing BAR {}: {e}", func.bdf, old.index);
            }
            dev.bar_unmapped(&old);
        }
        state.mapped = keep;
        let mut refused = Vec::new();
        for bar in wanted {
            if state.mapped.iter().any(|m| m.bar == bar) {
                continue;
            }
            match self.map_bar(func, dev, &bar) {
                Ok(region) => state.mapped.push(MappedBar {
                    bar,
                    _region: region,
                }),
                Err(why) => {
                    if !state.refused.contains(&bar) {
                        crate::limited!(warn, "{} left unmapped: {why}", describe(func, dev, &bar));
                    }
                    refused.push(bar);
                }
            }
        }
        state.mapped.sort_by_key(|m| m.bar.index);
        state.refused = refused;
    }

    /// Put `bar` on its bus and tell the device, or say why not. Returns the region the
    /// bus refers to, for the caller to keep alive while the BAR stays mapped.
    fn map_bar(
        self: &Arc<Self>,
        func: &Arc<Function>,
        dev: &mut dyn PciDevice,
        bar: &Bar,
    ) -> Result<Arc<Mutex<BarRegion>>, String> {
        if !self.placement_ok(bar) {
            return Err("outside the PCI windows".into());
        }
        let region = Arc::new(Mutex::new(BarRegion {
            device: func.device.clone(),
            index: bar.index,
            func: Arc::downgrade(func),
            decoder: self.clone(),
        }));
        let bus = self.bus_for(bar);
        bus.insert(bar.addr, bar.size, Arc::downgrade(&region) as WeakBusDevice)
            .map_err(|e| e.to_string())?;
        match dev.bar_mapped(bar) {
            Ok(()) => Ok(region),
            Err(e) => {
                let _ = bus.remove(bar.addr);
                Err(format!("the device failed to map it: {e}"))
            }
        }
    }

    fn bus_for(&self, bar: &Bar) -> &Bus {
        if bar.is_io() {
            &self.pio
        } else {
            &self.mmio
        }
    }

    /// The sanity rule of this module's documentation (bus overlaps aside).
    fn placement_ok(&self, bar: &Bar) -> bool {
        if !bar.size.is_power_of_two() || !bar.addr.is_multiple_of(bar.size) {
            return false;
        }
        let w = &self.windows;
        let inside =
            |window: Option<Window>| window.is_some_and(|w| w.contains(bar.addr, bar.size));
        match bar.kind {
            BarKind::Io => inside(w.io),
            BarKind::Mem32 | BarKind::Rom => inside(Some(w.mmio32)),
            BarKind::Mem64 => inside(Some(w.mmio32)) || inside(w.mmio64),
        }
    }
}

/// "0000:00:03.0 (name): BAR 2 (config offset 0x18) at 0x... (16 GiB)", for warnings.
fn describe(func: &Function, dev: &dyn PciDevice, bar: &Bar) -> String {
    format!(
        "{} ({}): {} at {:#x} ({})",
        func.bdf,
        dev.name(),
        BarName(bar.index),
        bar.addr,
        Size(bar.size)
    )
}
