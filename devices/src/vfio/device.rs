//! The VFIO PCI device: config accesses dispatched between the device (pass-through) and our
//! shadows (BARs, ROM, interrupt line, MSI, MSI-X), trapped BAR accesses between the MSI-X
//! emulation and the VFIO regions, and the interrupt mode (INTx, MSI, MSI-X) kept in step
//! with the guest.

use std::sync::Arc;

use crate::pci::{Bar, PciDevice, PciError, ROM_BAR_INDEX};
use crate::services::{DmaMapper, InterruptRouter, MemoryMapper};

use super::backend::{IrqIndex, VfioBackend, CONFIG_REGION, ROM_REGION};
use super::bars::{check_inside_bar, DirectBars};
use crate::pci::config::{
    merge_dword, BAR0, CAPABILITY_POINTER, CAP_ID_MSI, CAP_ID_MSIX, CAP_ID_PCIE, COMMAND,
    COMMAND_BUS_MASTER, COMMAND_IO, COMMAND_MEMORY, CONFIG_SPACE_SIZE, INTERRUPT_LINE,
    LEGACY_CONFIG_SIZE, ROM_BAR, STATUS_CAPABILITIES_LIST, VENDOR_ID,
};

use super::caps::{self, byte_mask};
use super::config::BarShadows;
use super::error::VfioPciError;
use super::ext_caps::ExtCaps;
use super::gpudirect::CliqueCap;
use super::intx::Intx;
use super::mapping::page_size;
use super::msi::Msi;
use super::msix::{self, Msix};
use super::quirks::{self, Quirks, Route, NVIDIA};
use super::vectors::IrqCtx;
use super::DmaGate;

/// Borrow the pieces interrupt emulation needs, leaving the emulation state free to borrow
/// mutably.
macro_rules! irq_ctx {
    ($self:ident) => {
        IrqCtx {
            backend: &*$self.backend,
            router: &*$self.router,
            name: &$self.name,
        }
    };
}

mod flr;

/// A physical PCI function passed through to the guest with VFIO.
pub struct VfioPciDevice {
    name: String,
    backend: Box<dyn VfioBackend>,
    router: Arc<dyn InterruptRouter>,
    /// Size of the VFIO config region (256, or 4096 for PCIe).
    config_size: u64,
    shadows: BarShadows,
    /// Where the host has the BARs (the guest gets the same addresses where they are free).
    host_bars: Vec<(u8, u64)>,
    /// The command register as the guest last wrote it (for BAR decoding).
    command: u16,
    /// The interrupt line register (virtual: the device's own is the host's).
    line: u8,
    /// The interrupt pin as the guest sees it (0 when INTx is not wired).
    pin: u8,
    msi: Option<Msi>,
    msix: Option<Msix>,
    /// Config offset of the PCI Express capability (its Device Control has the FLR bit).
    pcie_cap: Option<u16>,
    ext_caps: ExtCaps,
    /// NVIDIA GPUDirect clique capability, at the head of the capability list.
    clique: Option<CliqueCap>,
    intx: Option<Intx>,
    /// Vendor backdoors into config space (`quirks.rs`).
    quirks: Quirks,
    direct: DirectBars,
    released: bool,
    /// Bus mastering waits here for guest RAM's DMA mapping (when that runs beside the boot).
    dma_gate: Option<Arc<DmaGate>>,
}

impl VfioPciDevice {
    /// Take over an opened VFIO device: reset it, read its capabilities and BARs, mmap what
    /// can be accessed directly, and wire INTx to `intx_gsi` (a level-triggered IOAPIC pin)
    /// when the device has an interrupt pin.
    pub fn new(
        backend: Box<dyn VfioBackend>,
        name: String,
        interrupts: Arc<dyn InterruptRouter>,
        memory: Arc<dyn MemoryMapper>,
        intx_gsi: Option<u32>,
    ) -> Result<Self, VfioPciError> {
        backend.reset();
        let config_size = backend.region_info(CONFIG_REGION).size;
        if config_size < u64::from(LEGACY_CONFIG_SIZE) {
            return Err(VfioPciError::NoConfigRegion { device: name });
        }
        let read = |offset: u16| {
            let mut b = [0u8; 4];
            backend.region_read(CONFIG_REGION, u64::from(offset), &mut b);
            u32::from_le_bytes(b)
        };
        if read(VENDOR_ID) as u16 == 0xffff {
            return Err(VfioPciError::NotResponding { device: name });
        }
        let vfio_count = |index| backend.irq_info(index).map_or(0, |i| i.count);
        let caps = caps::capabilities(read);
        let find = |id| caps.iter().find(|c| c.id == id).map(|c| c.offset);
        let msi = find(CAP_ID_MSI).map(|cap| Msi::probe(cap, read, vfio_count(IrqIndex::Msi)));
        let msix = find(CAP_ID_MSIX).map(|cap| Msix::probe(cap, read, vfio_count(IrqIndex::Msix)));
        let pcie_cap = find(CAP_ID_PCIE);
        let ext_caps = ExtCaps::probe(&name, read, config_size);

        let shadows = BarShadows::probe(
            &name,
            |i| read(BAR0 + 4 * u16::from(i)),
            |i| backend.region_info(u32::from(i)).size,
        );
        let host_bars = shadows.host_addresses(|i| read(crate::pci::config::bar_offset(i)));
        let mut traps = Vec::new();
        if let Some(msix) = &msix {
            for (what, range) in [("table", msix.table()), ("PBA", msix.pba())] {
                check_inside_bar(&name, &shadows, what, range)?;
                traps.push(range);
            }
        }
        let msi_cap = msi.as_ref().map(Msi::cap_offset);
        let quirks = Quirks::probe(&name, &*backend, &shadows, read, config_size, msi_cap);
        traps.extend(quirks.traps());
        let direct = DirectBars::new(&name, &*backend, &shadows, &traps, memory, page_size());

        // The guest meets the device as after a reset, whatever the host left on (the
        // reset above may not exist for it): no decoding, no bus mastering. Linux takes a VGA
        // device that decodes at boot for one whose firmware copied its ROM to 0xc0000
        // (there is no firmware here), and a device must not DMA before its driver says so.
        let command = read(COMMAND) as u16 & !(COMMAND_IO | COMMAND_MEMORY | COMMAND_BUS_MASTER);
        backend.region_write(CONFIG_REGION, u64::from(COMMAND), &command.to_le_bytes());
        let device_pin = (read(INTERRUPT_LINE) >> 8) as u8;
        let intx = match intx_gsi {
            Some(gsi) if device_pin != 0 && vfio_count(IrqIndex::Intx) >= 1 => {
                Some(Intx::new(gsi).map_err(|source| VfioPciError::EventFd {
                    device: name.clone(),
                    source,
                })?)
            }
            _ => None,
        };
        let mut dev = Self {
            line: intx.as_ref().map_or(0xff, |i| i.gsi().min(0xff) as u8),
            pin: if intx.is_some() { device_pin } else { 0 },
            name,
            backend,
            router: interrupts,
            config_size,
            shadows,
            host_bars,
            command,
            msi,
            msix,
            pcie_cap,
            ext_caps,
            clique: None,
            intx,
            quirks,
            direct,
            released: false,
            dma_gate: None,
        };
        let ctx = irq_ctx!(dev);
        if let Some(intx) = dev.intx.as_mut() {
            if let Err(cause) = intx.enable(&ctx) {
                return Err(VfioPciError::Intx {
                    device: dev.name.clone(),
                    gsi: intx.gsi(),
                    cause,
                });
            }
        }
        dev.log_summary();
        Ok(dev)
    }

    fn log_summary(&self) {
        let bars: Vec<String> = self
            .shadows
            .bars(0)
            .iter()
            .map(|b| format!("{}:{:?}/{:#x}", b.index, b.kind, b.size))
            .collect();
        log::info!(
            "{}: BARs [{}], MSI {}, MSI-X {}, INTx {}",
            self.name,
            bars.join(" "),
            if self.msi.is_some() { "yes" } else { "no" },
            self.msix.as_ref().map_or("no".to_string(), |m| {
                let t = m.table();
                format!(
                    "{} vectors (table BAR {} {:#x})",
                    t.len / 16,
                    t.bar,
                    t.offset
                )
            }),
            self.intx_gsi()
                .map_or("off".to_string(), |g| format!("on GSI {g}")),
        );
    }

    /// Undo everything the device set up: disable its interrupts in VFIO, remove irqfds and
    /// GSI routes, remove its memory slots, munmap its BARs, and reset it. Idempotent; also
    /// runs on drop. The device stays answering config reads but ignores writes afterwards.
    pub fn release(&mut self) {
        if std::mem::replace(&mut self.released, true) {
            return;
        }
        let ctx = irq_ctx!(self);
        if let Some(msix) = self.msix.as_mut() {
            msix.teardown(&ctx);
        }
        if let Some(msi) = self.msi.as_mut() {
            msi.teardown(&ctx);
        }
        if let Some(intx) = self.intx.as_mut() {
            intx.disable(&ctx);
        }
        self.direct.release();
        super::backend::reset_and_check(&*self.backend, &self.name);
    }

    /// Peer-to-peer: from now on the BARs' mmappable parts are DMA-mapped at their guest
    /// addresses while they decode (following moves), so other devices in the container reach
    /// them. Call before the device joins the PCI root (which maps its BARs).
    pub fn enable_p2p(&mut self, dma: Arc<dyn DmaMapper>) -> Result<(), VfioPciError> {
        if self.direct.enable_p2p(dma) {
            Ok(())
        } else {
            Err(VfioPciError::NoP2pBars {
                device: self.name.clone(),
            })
        }
    }

    /// Give the guest NVIDIA's GPUDirect clique capability with `clique` (0-15), so that
    /// NVIDIA's driver allows P2P between the GPUs of one clique. Call before the guest runs.
    pub fn add_gpudirect_clique(&mut self, clique: u8) -> Result<(), VfioPciError> {
        let vendor = self.device_read(VENDOR_ID) as u16;
        if vendor != NVIDIA {
            return Err(VfioPciError::CliqueNotNvidia {
                device: self.name.clone(),
                vendor,
            });
        }
        let read = |offset: u16| self.device_read(offset);
        let caps = caps::capabilities(read);
        let first = caps.first().map_or(0, |c| c.offset as u8);
        let cap = CliqueCap::place(&caps, read, first, clique & 0xf).ok_or_else(|| {
            VfioPciError::NoRoomForClique {
                device: self.name.clone(),
            }
        })?;
        log::info!(
            "{}: GPUDirect clique {clique} capability at config {:#x}",
            self.name,
            cap.offset()
        );
        self.clique = Some(cap);
        Ok(())
    }

    /// From now on the guest's enabling of bus mastering waits for `gate` to open.
    pub fn set_dma_gate(&mut self, gate: Arc<DmaGate>) {
        self.dma_gate = Some(gate);
    }

    /// The guest ranges DMA-mapped for peer-to-peer now, (iova, size).
    pub fn p2p_ranges(&self) -> Vec<(u64, u64)> {
        self.direct.p2p_ranges()
    }

    /// The GSI INTx is wired to, if any.
    pub fn intx_gsi(&self) -> Option<u32> {
        self.intx.as_ref().map(Intx::gsi)
    }

    fn device_read(&self, offset: u16) -> u32 {
        let mut b = [0u8; 4];
        self.backend
            .region_read(CONFIG_REGION, u64::from(offset), &mut b);
        u32::from_le_bytes(b)
    }

    fn in_cap(offset: u16, cap: u16, len: u16) -> Option<u16> {
        (offset >= cap && offset < cap + len).then(|| offset - cap)
    }

    fn msi_rel(&self, offset: u16) -> Option<u16> {
        let msi = self.msi.as_ref()?;
        Self::in_cap(offset, msi.cap_offset(), msi.cap_len())
    }

    fn msix_rel(&self, offset: u16) -> Option<u16> {
        let msix = self.msix.as_ref()?;
        Self::in_cap(offset, msix.cap_offset(), msix::CAP_LEN)
    }

    /// After a change to MSI or MSI-X: one interrupt mode at a time in VFIO, so disable
    /// before enabling, and INTx whenever neither MSI nor MSI-X is on.
    fn update_irq_mode(&mut self) {
        let ctx = irq_ctx!(self);
        let msi_on = self.msi.as_ref().is_some_and(Msi::wants_enabled);
        let msix_on = self.msix.as_ref().is_some_and(Msix::wants_enabled);
        if msi_on || msix_on {
            if let Some(intx) = self.intx.as_mut() {
                intx.disable(&ctx);
            }
        }
        if let Some(msi) = self.msi.as_mut().filter(|_| !msi_on) {
            msi.apply(&ctx);
        }
        if let Some(msix) = self.msix.as_mut().filter(|_| !msix_on) {
            msix.apply(&ctx);
        }
        if let Some(msi) = self.msi.as_mut().filter(|_| msi_on) {
            msi.apply(&ctx);
        }
        if let Some(msix) = self.msix.as_mut().filter(|_| msix_on) {
            msix.apply(&ctx);
        }
        if !msi_on && !msix_on {
            if let Some(intx) = self.intx.as_mut() {
                if let Err(e) = intx.enable(&ctx) {
                    crate::limited!(error, "{}: re-enabling INTx failed: {e}", self.name);
                }
            }
        }
    }

    /// Whether a trapped access to BAR `index` at `offset` fits the BAR.
    fn bar_access_ok(&self, index: u8, offset: u64, len: usize) -> bool {
        let ok = self.shadows.get(index).is_some_and(|bar| {
            offset
                .checked_add(len as u64)
                .is_some_and(|end| end <= bar.size())
        });
        if !ok {
            log::debug!(
                "{}: BAR {index} access of {len} bytes at {offset:#x} is outside the BAR; ignored",
                self.name
            );
        }
        ok && (1..=8).contains(&len)
    }

    #[cfg(test)]
    pub(crate) fn msix_state(&self) -> Option<&Msix> {
        self.msix.as_ref()
    }

    #[cfg(test)]
    pub(crate) fn msi_state(&self) -> Option<&Msi> {
        self.msi.as_ref()
    }

    #[cfg(test)]
    pub(crate) fn intx_state(&self) -> Option<&Intx> {
        self.intx.as_ref()
    }

    #[cfg(test)]
    pub(crate) fn direct_bars(&self) -> &DirectBars {
        &self.direct
    }
}

fn is_bar_register(offset: u16) -> bool {
    (BAR0..BAR0 + 24).contains(&offset) || offset == ROM_BAR
}

impl PciDevice for VfioPciDevice {
    fn config_read(&mut self, offset: u16) -> u32 {
        let offset = offset & !3;
        if u64::from(offset) >= self.config_size {
            return 0;
        }
        if let Some(rel) = self.msi_rel(offset) {
            return self.msi.as_ref().map_or(0, |m| m.read_cap(rel));
        }
        if let Some(rel) = self.msix_rel(offset) {
            return self.msix.as_ref().map_or(0, |m| m.read_cap(rel));
        }
        if let Some(value) = self.ext_caps.read(offset) {
            return value;
        }
        if let Some(cap) = &self.clique {
            if let Some(value) = cap.read(offset) {
                return value;
            }
            match offset {
                // The list starts at the clique capability, which the status register says
                // there is.
                CAPABILITY_POINTER => {
                    return self.device_read(offset) & !0xff | u32::from(cap.offset());
                }
                COMMAND => {
                    return self.device_read(offset) | u32::from(STATUS_CAPABILITIES_LIST) << 16
                }
                _ => {}
            }
        }
        match offset {
            o if is_bar_register(o) => self.shadows.read(o),
            INTERRUPT_LINE => {
                let device = self.device_read(offset) & 0xffff_0000;
                device | u32::from(self.pin) << 8 | u32::from(self.line)
            }
            _ => self.device_read(offset),
        }
    }

    fn config_write(&mut self, offset: u16, data: &[u8]) {
        let len = data.len() as u16;
        if !matches!(len, 1 | 2 | 4) || !offset.is_multiple_of(len) || offset >= CONFIG_SPACE_SIZE {
            log::debug!(
                "{}: config write of {len} bytes at {offset:#x} is not naturally aligned; ignored",
                self.name
            );
            return;
        }
        if self.released || u64::from(offset) >= self.config_size {
            return;
        }
        let (dword, shift) = (offset & !3, offset & 3);
        if let Some(rel) = self.msi_rel(dword) {
            if let Some(msi) = self.msi.as_mut() {
                msi.write_cap(rel, shift, data);
            }
            self.update_irq_mode();
            return;
        }
        if let Some(rel) = self.msix_rel(dword) {
            if let Some(msix) = self.msix.as_mut() {
                msix.write_cap(rel, shift, data);
            }
            self.update_irq_mode();
            return;
        }
        if self.clique.is_some_and(|c| c.contains(dword)) || self.ext_caps.blocks_write(dword) {
            log::debug!(
                "{}: config write at {offset:#x} (hidden) dropped",
                self.name
            );
            return;
        }
        match dword {
            o if is_bar_register(o) => self.shadows.write(o, shift, data),
            INTERRUPT_LINE => {
                // Only the line is writable; pin, min-grant and max-latency are read-only.
                if shift == 0 {
                    self.line = data[0];
                }
            }
            _ => {
                let mut bytes = [0u8; 4];
                bytes[..data.len()].copy_from_slice(data);
                let data = &mut bytes[..data.len()];
                if let Some(gate) = &self.dma_gate {
                    super::dma_gate::hold_bus_master(gate, &self.name, self.command, offset, data);
                }
                if dword == COMMAND && byte_mask(shift, data.len()) & 0xffff != 0 {
                    self.command =
                        merge_dword(u32::from(self.command), usize::from(shift), data) as u16;
                }
                self.backend
                    .region_write(CONFIG_REGION, u64::from(offset), data);
                if self.starts_flr(offset, data) {
                    self.after_guest_reset();
                }
            }
        }
    }

    fn bars(&self) -> Vec<Bar> {
        self.shadows.bars(self.command)
    }

    fn bar_mapped(&mut self, bar: &Bar) -> Result<(), PciError> {
        if !self.released {
            self.direct.map(bar);
        }
        Ok(())
    }

    fn bar_unmapped(&mut self, bar: &Bar) {
        let _ = self.direct.unmap(bar.index);
    }

    fn bar_read(&mut self, index: u8, offset: u64, data: &mut [u8]) {
        if !self.bar_access_ok(index, offset, data.len()) {
            data.fill(0xff);
            return;
        }
        let route = self.quirks.route(index, offset, data.len(), None);
        if route != Route::Device {
            return quirks::read_through(self, route, data);
        }
        if let Some(msix) = &self.msix {
            if msix.bar_read(&self.name, index, offset, data) {
                return;
            }
        }
        let region = if index == ROM_BAR_INDEX {
            ROM_REGION
        } else {
            u32::from(index)
        };
        self.backend.region_read(region, offset, data);
    }

    fn bar_write(&mut self, index: u8, offset: u64, data: &[u8]) {
        if self.released || !self.bar_access_ok(index, offset, data.len()) {
            return;
        }
        let route = self.quirks.route(index, offset, data.len(), Some(data));
        if let Route::Config { ack: true, .. } = route {
            self.backend.region_write(u32::from(index), offset, data);
        }
        if route != Route::Device {
            return quirks::write_through(self, route, data);
        }
        let ctx = irq_ctx!(self);
        if let Some(msix) = self.msix.as_mut() {
            if msix.bar_write(&ctx, index, offset, data) {
                return;
            }
        }
        if index == ROM_BAR_INDEX {
            log::debug!("{}: write to the expansion ROM ignored", self.name);
            return;
        }
        self.backend.region_write(u32::from(index), offset, data);
    }

    fn assign_bar(&mut self, index: u8, addr: u64) {
        if !self.shadows.assign(index, addr) {
            crate::limited!(
                warn,
                "{}: cannot assign {addr:#x} to BAR {index} (no such BAR, or misaligned)",
                self.name
            );
        }
    }

    fn take_config_changed(&mut self) -> bool {
        self.quirks.take_config_written()
    }

    fn preferred_bar_addresses(&self) -> Vec<(u8, u64)> {
        self.host_bars.clone()
    }

    fn name(&self) -> String {
        self.name.clone()
    }
}

impl Drop for VfioPciDevice {
    fn drop(&mut self) {
        self.release();
    }
}
