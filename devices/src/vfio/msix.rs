//! MSI-X emulation: the capability's message control (enable, function mask), the vector
//! table and the PBA, which live in a BAR and always trap. The real table is the host
//! kernel's (VFIO programs it); the guest's table only decides where each vector's
//! interrupts go (a GSI route) and whether they are held back (masked).
//!
//! On enable, VFIO MSI-X is enabled with eventfds up to the highest unmasked table entry
//! (at least one) and re-enabled with more when the guest unmasks a higher entry, keeping
//! the eventfds already in use. An unmasked vector gets a GSI routed to its message and an
//! irqfd; a masked one (or all, under the function mask) has its irqfd unregistered so its
//! eventfd holds what the device sent, which the PBA then reports. Disabling frees them.

use crate::services::MsiMessage;

use super::backend::IrqIndex;
use super::bars::TrapRange;
use super::vectors::{new_vectors, IrqCtx, IrqVector};
use crate::pci::config::merge_dword;
use crate::pci::msix_entry::{MsixEntry, ENTRY_SIZE};

const CTRL_ENABLE: u16 = 1 << 15;
const CTRL_FUNCTION_MASK: u16 = 1 << 14;
const CTRL_TABLE_SIZE: u16 = 0x7ff;
/// The capability is 3 dwords: header + control, table offset/BIR, PBA offset/BIR.
pub const CAP_LEN: u16 = 12;

pub struct Msix {
    /// Config offset of the capability.
    cap: u16,
    /// Capability ID and next pointer, as the device has them.
    header: u16,
    table_reg: u32,
    pba_reg: u32,
    /// Vectors VFIO can enable (normally the table size).
    vfio_count: u32,
    entries: Vec<MsixEntry>,
    enabled: bool,
    function_masked: bool,
    /// The vectors enabled in VFIO (one per table entry VFIO can serve).
    active: Option<Vec<IrqVector>>,
    /// Enabling failed; not retried until the guest disables MSI-X.
    failed: bool,
}

impl Msix {
    /// The capability at config offset `cap`; `read` reads the device's config dwords.
    pub fn probe(cap: u16, read: impl Fn(u16) -> u32, vfio_count: u32) -> Self {
        let first = read(cap);
        let size = usize::from((first >> 16) as u16 & CTRL_TABLE_SIZE) + 1;
        let entry = MsixEntry {
            msg: MsiMessage::default(),
            masked: true,
        };
        Self {
            cap,
            header: first as u16,
            table_reg: read(cap + 4),
            pba_reg: read(cap + 8),
            vfio_count,
            entries: vec![entry; size],
            enabled: false,
            function_masked: false,
            active: None,
            failed: false,
        }
    }

    pub fn cap_offset(&self) -> u16 {
        self.cap
    }

    /// Where the table is (BAR, offset, length).
    pub fn table(&self) -> TrapRange {
        TrapRange {
            bar: (self.table_reg & 7) as u8,
            offset: u64::from(self.table_reg & !7),
            len: self.entries.len() as u64 * ENTRY_SIZE,
        }
    }

    /// Where the PBA is (BAR, offset, length).
    pub fn pba(&self) -> TrapRange {
        TrapRange {
            bar: (self.pba_reg & 7) as u8,
            offset: u64::from(self.pba_reg & !7),
            len: self.entries.len().div_ceil(64) as u64 * 8,
        }
    }

    fn control(&self) -> u16 {
        let mut ctrl = (self.entries.len() - 1) as u16;
        if self.enabled {
            ctrl |= CTRL_ENABLE;
        }
        if self.function_masked {
            ctrl |= CTRL_FUNCTION_MASK;
        }
        ctrl
    }

    /// Read the capability dword at `rel` (0, 4 or 8) from its start.
    pub fn read_cap(&self, rel: u16) -> u32 {
        match rel {
            0 => u32::from(self.header) | u32::from(self.control()) << 16,
            4 => self.table_reg,
            8 => self.pba_reg,
            _ => 0,
        }
    }

    /// A guest write to the capability: only message control's enable and function-mask
    /// bits are writable. Updates the shadow; [`Msix::apply`] acts on it.
    pub fn write_cap(&mut self, rel: u16, shift: u16, data: &[u8]) {
        if rel != 0 {
            return;
        }
        let value = merge_dword(self.read_cap(0), usize::from(shift), data);
        let ctrl = (value >> 16) as u16;
        self.enabled = ctrl & CTRL_ENABLE != 0;
        self.function_masked = ctrl & CTRL_FUNCTION_MASK != 0;
    }

    /// Whether the guest has MSI-X enabled.
    pub fn wants_enabled(&self) -> bool {
        self.enabled
    }

    /// Whether VFIO MSI-X is enabled.
    #[cfg(test)]
    pub fn is_active(&self) -> bool {
        self.active.is_some()
    }

    /// Bring VFIO and the vectors in line with the guest's settings.
    pub fn apply(&mut self, ctx: &IrqCtx) {
        if !self.enabled {
            self.teardown(ctx);
            self.failed = false;
            return;
        }
        let needed = self.vectors_needed();
        let have = self.active.as_ref().map_or(0, Vec::len);
        if have < needed {
            if self.failed {
                return;
            }
            self.failed = true;
            match self.grow(ctx, needed) {
                Ok(vectors) => {
                    self.failed = false;
                    self.active = Some(vectors);
                }
                Err(e) => {
                    crate::limited!(
                        error,
                        "{}: enabling MSI-X ({needed} vectors) failed; its interrupts are lost: {e}",
                        ctx.name
                    );
                    return;
                }
            }
        }
        for i in 0..self.entries.len() {
            self.sync(ctx, i);
        }
    }

    /// Host vectors the guest uses: up to its highest unmasked table entry (at least one, as
    /// VFIO cannot enable MSI-X with none). A guest that unmasks 2 of 2048 entries costs 2
    /// eventfds and host vectors, not 2048.
    fn vectors_needed(&self) -> usize {
        let usable = self.entries.len().min(self.vfio_count as usize);
        self.entries[..usable]
            .iter()
            .rposition(|e| !e.masked)
            .map_or(1, |i| i + 1)
            .min(usable)
    }

    /// (Re-)enable VFIO MSI-X with `needed` vectors, keeping the eventfds (and so the irqfds)
    /// of those already in use. VFIO cannot grow an enabled set in place on every kernel, so
    /// a larger set means disable, then enable with all of them.
    fn grow(&mut self, ctx: &IrqCtx, needed: usize) -> Result<Vec<IrqVector>, String> {
        let mut vectors = self.active.take().unwrap_or_default();
        if !vectors.is_empty() {
            ctx.backend
                .disable_irq(IrqIndex::Msix)
                .map_err(|e| e.to_string())?;
        }
        let added = new_vectors(needed - vectors.len());
        let result = added.map_err(|e| format!("cannot create eventfds: {e}"));
        let enabled = result.and_then(|added| {
            vectors.extend(added);
            let fds: Vec<_> = vectors.iter().map(IrqVector::eventfd).collect();
            ctx.backend
                .enable_irq(IrqIndex::Msix, &fds)
                .map_err(|e| e.to_string())
        });
        match enabled {
            Ok(()) => Ok(vectors),
            Err(e) => {
                for (i, v) in vectors.iter_mut().enumerate() {
                    v.teardown(ctx.router, ctx.vector_name("MSI-X", i));
                }
                Err(e)
            }
        }
    }

    fn sync(&mut self, ctx: &IrqCtx, i: usize) {
        let entry = self.entries[i];
        let unmasked = self.enabled && !self.function_masked && !entry.masked;
        if let Some(vector) = self.active.as_mut().and_then(|v| v.get_mut(i)) {
            let what = ctx.vector_name("MSI-X", i);
            vector.sync(ctx.router, unmasked.then_some(entry.msg), what);
        }
    }

    /// Disable VFIO MSI-X and free every vector's GSI and irqfd.
    pub fn teardown(&mut self, ctx: &IrqCtx) {
        if let Some(mut vectors) = self.active.take() {
            if let Err(e) = ctx.backend.disable_irq(IrqIndex::Msix) {
                crate::limited!(warn, "{}: disabling MSI-X: {e}", ctx.name);
            }
            for (i, v) in vectors.iter_mut().enumerate() {
                v.teardown(ctx.router, ctx.vector_name("MSI-X", i));
            }
        }
    }

    /// The part of a BAR access `offset..offset+len` that hits the table or the PBA:
    /// `Some((is_table, offset into it))`.
    fn locate(&self, bar: u8, offset: u64, len: usize) -> Option<(bool, u64)> {
        for (is_table, range) in [(true, self.table()), (false, self.pba())] {
            if range.bar == bar && offset >= range.offset && offset < range.offset + range.len {
                let rel = offset - range.offset;
                return Some((is_table, rel)).filter(|_| rel + len as u64 <= range.len);
            }
        }
        None
    }

    fn in_range(&self, bar: u8, offset: u64) -> bool {
        [self.table(), self.pba()]
            .iter()
            .any(|r| r.bar == bar && offset >= r.offset && offset < r.offset + r.len)
    }

    /// A trapped BAR read: true when it was the table's or the PBA's.
    pub fn bar_read(&self, name: &str, bar: u8, offset: u64, data: &mut [u8]) -> bool {
        if !self.in_range(bar, offset) {
            return false;
        }
        data.fill(0);
        match self.locate(bar, offset, data.len()) {
            Some((true, rel)) => {
                let (index, byte) = ((rel / ENTRY_SIZE) as usize, (rel % ENTRY_SIZE) as usize);
                match self.entries[index].bytes().get(byte..byte + data.len()) {
                    Some(src) => data.copy_from_slice(src),
                    None => log::debug!(
                        "{name}: MSI-X table read of {} bytes at {rel:#x} crosses an entry",
                        data.len()
                    ),
                }
            }
            Some((false, rel)) => {
                for (i, b) in data.iter_mut().enumerate() {
                    *b = self.pending_byte(rel as usize + i);
                }
            }
            None => log::debug!(
                "{name}: MSI-X read of {} bytes at BAR {bar} {offset:#x} runs past the table/PBA",
                data.len()
            ),
        }
        true
    }

    fn pending_byte(&self, byte: usize) -> u8 {
        let Some(active) = &self.active else {
            return 0;
        };
        (0..8)
            .filter(|bit| active.get(byte * 8 + bit).is_some_and(IrqVector::pending))
            .fold(0, |acc, bit| acc | 1 << bit)
    }

    /// A trapped BAR write: true when it was the table's or the PBA's (the PBA is read-only).
    pub fn bar_write(&mut self, ctx: &IrqCtx, bar: u8, offset: u64, data: &[u8]) -> bool {
        if !self.in_range(bar, offset) {
            return false;
        }
        let Some((true, rel)) = self.locate(bar, offset, data.len()) else {
            log::debug!(
                "{}: MSI-X write of {} bytes at BAR {bar} {offset:#x} ignored (PBA or out of range)",
                ctx.name,
                data.len()
            );
            return true;
        };
        let (index, byte) = ((rel / ENTRY_SIZE) as usize, (rel % ENTRY_SIZE) as usize);
        if !matches!(data.len(), 4 | 8) || byte % data.len() != 0 {
            log::debug!(
                "{}: MSI-X table write of {} bytes at {rel:#x} is not an aligned dword/qword; ignored",
                ctx.name,
                data.len()
            );
            return true;
        }
        let mut bytes = self.entries[index].bytes();
        bytes[byte..byte + data.len()].copy_from_slice(data);
        let entry = MsixEntry::from_bytes(&bytes);
        if entry != self.entries[index] {
            self.entries[index] = entry;
            let have = self.active.as_ref().map_or(0, Vec::len);
            if self.enabled && !entry.masked && index >= have {
                self.apply(ctx); // the first use of this entry: VFIO needs more vectors
            } else {
                self.sync(ctx, index);
            }
        }
        true
    }

    /// The vector behind table entry `i` (tests look at its GSI and eventfd).
    #[cfg(test)]
    pub fn vector(&self, i: usize) -> Option<&IrqVector> {
        self.active.as_ref()?.get(i)
    }
}
