//! A guest-initiated Function Level Reset: VFIO resets the device; the shadows are ours.

use super::*;

impl VfioPciDevice {
    /// Whether a config write sets Initiate Function Level Reset (PCIe Device Control bit
    /// 15, byte 9 of the capability). VFIO performs the reset (and restores the host's view
    /// of the device); the guest's view is ours to reset.
    pub(super) fn starts_flr(&self, offset: u16, data: &[u8]) -> bool {
        let Some(cap) = self.pcie_cap else {
            return false;
        };
        let flr_byte = cap + 9;
        (offset..offset + data.len() as u16).contains(&flr_byte)
            && data[usize::from(flr_byte - offset)] & 0x80 != 0
    }

    /// The guest reset the function: what a reset clears, cleared in the shadows too: BARs
    /// unassigned, decoding and bus mastering off (on the device too: VFIO's restore turned
    /// them back on), MSI and MSI-X off with fresh tables, INTx back.
    pub(super) fn after_guest_reset(&mut self) {
        crate::limited!(
            info,
            "{}: the guest reset the device (FLR): BARs, command and MSI/MSI-X shadows reset",
            self.name
        );
        let ctx = irq_ctx!(self);
        if let Some(msix) = self.msix.as_mut() {
            msix.teardown(&ctx);
        }
        if let Some(msi) = self.msi.as_mut() {
            msi.teardown(&ctx);
        }
        let count = |i| self.backend.irq_info(i).map_or(0, |info| info.count);
        let read = |offset: u16| self.device_read(offset);
        let msi = self
            .msi
            .as_ref()
            .map(|m| Msi::probe(m.cap_offset(), read, count(IrqIndex::Msi)));
        let msix = self
            .msix
            .as_ref()
            .map(|m| Msix::probe(m.cap_offset(), read, count(IrqIndex::Msix)));
        self.msi = msi;
        self.msix = msix;
        self.shadows.reset();
        self.command = 0;
        self.backend
            .region_write(CONFIG_REGION, u64::from(COMMAND), &0u16.to_le_bytes());
        self.update_irq_mode();
    }
}
