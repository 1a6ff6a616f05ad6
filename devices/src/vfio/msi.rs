//! MSI emulation: the capability (32- or 64-bit address, optional per-vector masking) lives
//! only in our shadow; enabling it enables VFIO MSI with 2^MME eventfds, vector `i` sending
//! the programmed data with its low bits replaced by `i`.

use crate::services::MsiMessage;

use super::backend::IrqIndex;
use super::vectors::{new_vectors, IrqCtx, IrqVector};
use crate::pci::config::merge_dword;

const CTRL_ENABLE: u16 = 1 << 0;
const CTRL_64BIT: u16 = 1 << 7;
const CTRL_PER_VECTOR_MASK: u16 = 1 << 8;

pub struct Msi {
    cap: u16,
    header: u16,
    is_64: bool,
    per_vector_mask: bool,
    /// log2 of the vectors the device (and VFIO) can do.
    mmc: u8,
    enabled: bool,
    /// log2 of the vectors the guest enabled.
    mme: u8,
    addr_lo: u32,
    addr_hi: u32,
    data: u16,
    mask: u32,
    active: Option<Vec<IrqVector>>,
    failed: bool,
}

impl Msi {
    pub fn probe(cap: u16, read: impl Fn(u16) -> u32, vfio_count: u32) -> Self {
        let first = read(cap);
        let ctrl = (first >> 16) as u16;
        let device_mmc = ((ctrl >> 1) & 7).min(5) as u8;
        // VFIO may offer fewer vectors than the capability claims.
        let vfio_mmc = vfio_count.max(1).ilog2().min(5) as u8;
        Self {
            cap,
            header: first as u16,
            is_64: ctrl & CTRL_64BIT != 0,
            per_vector_mask: ctrl & CTRL_PER_VECTOR_MASK != 0,
            mmc: device_mmc.min(vfio_mmc),
            enabled: false,
            mme: 0,
            addr_lo: 0,
            addr_hi: 0,
            data: 0,
            mask: 0,
            active: None,
            failed: false,
        }
    }

    pub fn cap_offset(&self) -> u16 {
        self.cap
    }

    fn data_off(&self) -> usize {
        if self.is_64 {
            0xc
        } else {
            0x8
        }
    }

    /// Bytes of config space the capability covers (rounded up to dwords).
    pub fn cap_len(&self) -> u16 {
        let data_end = self.data_off() + 4;
        (if self.per_vector_mask {
            data_end + 8
        } else {
            data_end
        }) as u16
    }

    fn vectors(&self) -> usize {
        1 << self.mme.min(self.mmc)
    }

    fn valid_mask_bits(&self) -> u32 {
        ((1u64 << (1 << self.mmc)) - 1) as u32
    }

    fn control(&self) -> u16 {
        let mut ctrl = u16::from(self.mmc) << 1 | u16::from(self.mme) << 4;
        if self.enabled {
            ctrl |= CTRL_ENABLE;
        }
        if self.is_64 {
            ctrl |= CTRL_64BIT;
        }
        if self.per_vector_mask {
            ctrl |= CTRL_PER_VECTOR_MASK;
        }
        ctrl
    }

    fn pending_bits(&self) -> u32 {
        let Some(active) = &self.active else {
            return 0;
        };
        active
            .iter()
            .enumerate()
            .filter(|(_, v)| v.pending())
            .fold(0, |acc, (i, _)| acc | 1 << i)
    }

    fn image(&self) -> [u8; 24] {
        let mut img = [0u8; 24];
        img[0..2].copy_from_slice(&self.header.to_le_bytes());
        img[2..4].copy_from_slice(&self.control().to_le_bytes());
        img[4..8].copy_from_slice(&self.addr_lo.to_le_bytes());
        if self.is_64 {
            img[8..12].copy_from_slice(&self.addr_hi.to_le_bytes());
        }
        let d = self.data_off();
        img[d..d + 2].copy_from_slice(&self.data.to_le_bytes());
        if self.per_vector_mask {
            img[d + 4..d + 8].copy_from_slice(&self.mask.to_le_bytes());
            img[d + 8..d + 12].copy_from_slice(&self.pending_bits().to_le_bytes());
        }
        img
    }

    pub fn read_cap(&self, rel: u16) -> u32 {
        let rel = usize::from(rel);
        match self.image().get(rel..rel + 4) {
            Some(b) if rel < usize::from(self.cap_len()) => {
                u32::from_le_bytes([b[0], b[1], b[2], b[3]])
            }
            _ => 0,
        }
    }

    /// A guest write into the capability: updates the shadow; [`Msi::apply`] acts on it.
    pub fn write_cap(&mut self, rel: u16, shift: u16, data: &[u8]) {
        let value = merge_dword(self.read_cap(rel), usize::from(shift), data);
        let d = self.data_off() as u16;
        match rel {
            0 => {
                let ctrl = (value >> 16) as u16;
                self.enabled = ctrl & CTRL_ENABLE != 0;
                self.mme = (((ctrl >> 4) & 7) as u8).min(self.mmc);
            }
            4 => self.addr_lo = value & !3,
            8 if self.is_64 => self.addr_hi = value,
            r if r == d => self.data = value as u16,
            r if r == d + 4 && self.per_vector_mask => self.mask = value & self.valid_mask_bits(),
            _ => {}
        }
    }

    pub fn wants_enabled(&self) -> bool {
        self.enabled
    }

    fn message(&self, i: usize) -> MsiMessage {
        let n = self.vectors() as u32;
        MsiMessage {
            addr_lo: self.addr_lo,
            addr_hi: if self.is_64 { self.addr_hi } else { 0 },
            data: (u32::from(self.data) & !(n - 1)) | i as u32,
        }
    }

    /// Bring VFIO and the vectors in line with the guest's settings.
    pub fn apply(&mut self, ctx: &IrqCtx) {
        if !self.enabled {
            self.teardown(ctx);
            self.failed = false;
            return;
        }
        let count = self.vectors();
        if self.active.as_ref().is_some_and(|v| v.len() != count) {
            self.teardown(ctx);
        }
        if self.active.is_none() {
            if self.failed {
                return;
            }
            self.failed = true;
            let vectors = match new_vectors(count) {
                Ok(v) => v,
                Err(e) => {
                    crate::limited!(error, "{}: MSI: cannot create eventfds: {e}", ctx.name);
                    return;
                }
            };
            let fds: Vec<_> = vectors.iter().map(IrqVector::eventfd).collect();
            if let Err(e) = ctx.backend.enable_irq(IrqIndex::Msi, &fds) {
                crate::limited!(
                    error,
                    "{}: enabling MSI ({count} vectors) failed; its interrupts are lost: {e}",
                    ctx.name
                );
                return;
            }
            self.failed = false;
            self.active = Some(vectors);
        }
        let messages: Vec<_> = (0..count)
            .map(|i| {
                let masked = self.per_vector_mask && self.mask & (1 << i) != 0;
                (!masked).then(|| self.message(i))
            })
            .collect();
        if let Some(vectors) = self.active.as_mut() {
            for (i, (vector, want)) in vectors.iter_mut().zip(messages).enumerate() {
                vector.sync(ctx.router, want, ctx.vector_name("MSI", i));
            }
        }
    }

    pub fn teardown(&mut self, ctx: &IrqCtx) {
        if let Some(mut vectors) = self.active.take() {
            if let Err(e) = ctx.backend.disable_irq(IrqIndex::Msi) {
                crate::limited!(warn, "{}: disabling MSI: {e}", ctx.name);
            }
            for (i, v) in vectors.iter_mut().enumerate() {
                v.teardown(ctx.router, ctx.vector_name("MSI", i));
            }
        }
    }

    #[cfg(test)]
    pub fn vector(&self, i: usize) -> Option<&IrqVector> {
        self.active.as_ref()?.get(i)
    }
}
