//! The transport's interrupts: an MSI-X table of our own (BAR 2: table at 0, PBA at
//! [`PBA_OFFSET`]) whose vectors are [`IrqVector`]s, and the INTx fallback (ISR + a
//! level-triggered line through an irqfd with resample) while MSI-X is off.
//!
//! Shared between the vCPU threads (config and BAR accesses) and the device's worker
//! (signals), so the state sits behind one mutex; nothing under it blocks.
//!
//! A signal on a masked vector (entry mask or function mask) writes the vector's eventfd
//! all the same: its irqfd is unregistered while masked, so the count stays, the PBA reads
//! it as pending, and re-registering the irqfd on unmask makes KVM deliver it.

use std::sync::{Arc, Mutex, MutexGuard};

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::{VirtioInterrupt, NO_VECTOR};
use crate::pci::msix_entry::{MsixEntry, ENTRY_SIZE};
use crate::services::InterruptRouter;
use crate::vfio::{IrqVector, VectorName};

pub const PBA_OFFSET: u64 = 0x800;

/// ISR status bits.
pub const ISR_QUEUE: u8 = 1;
pub const ISR_CONFIG: u8 = 2;

struct State {
    entries: Vec<MsixEntry>,
    vectors: Vec<IrqVector>,
    msix_enabled: bool,
    function_masked: bool,
    config_vector: u16,
    queue_vectors: Vec<u16>,
    isr: u8,
    intx_registered: bool,
    intx_disabled: bool,
}

/// The INTx line: `trigger` asserts it, KVM signals `resample` on the guest's EOI.
struct IntxLine {
    gsi: u32,
    trigger: EventFd,
    resample: EventFd,
}

pub struct Interrupts {
    name: String,
    router: Arc<dyn InterruptRouter>,
    intx: Option<IntxLine>,
    state: Mutex<State>,
}

fn drain(evt: &EventFd) {
    // Non-blocking: EAGAIN when there was nothing to take.
    let _ = evt.read();
}

impl Interrupts {
    /// `vectors` MSI-X table entries, all masked; INTx on `intx_gsi` if given.
    pub fn new(
        name: String,
        router: Arc<dyn InterruptRouter>,
        vectors: u16,
        queues: usize,
        intx_gsi: Option<u32>,
    ) -> std::io::Result<Self> {
        let intx = match intx_gsi {
            Some(gsi) => Some(IntxLine {
                gsi,
                trigger: EventFd::new(EFD_NONBLOCK)?,
                resample: EventFd::new(EFD_NONBLOCK)?,
            }),
            None => None,
        };
        let count = usize::from(vectors);
        let state = State {
            entries: vec![
                MsixEntry {
                    masked: true,
                    ..MsixEntry::default()
                };
                count
            ],
            vectors: (0..count)
                .map(|_| IrqVector::new())
                .collect::<std::io::Result<_>>()?,
            msix_enabled: false,
            function_masked: false,
            config_vector: NO_VECTOR,
            queue_vectors: vec![NO_VECTOR; queues],
            isr: 0,
            intx_registered: false,
            intx_disabled: false,
        };
        // The line is wired now, on the thread that builds the device: the worker that
        // asserts it later may not register irqfds (its seccomp filter has no ioctl).
        let mut state = state;
        if let Some(intx) = &intx {
            router
                .register_irqfd_with_resample(&intx.trigger, &intx.resample, intx.gsi)
                .map_err(|e| {
                    std::io::Error::other(format!("{name}: INTx on GSI {}: {e}", intx.gsi))
                })?;
            state.intx_registered = true;
        }
        Ok(Self {
            name,
            router,
            intx,
            state: Mutex::new(state),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn what(&self, index: usize) -> VectorName<'_> {
        VectorName {
            device: &self.name,
            kind: "MSI-X",
            index,
        }
    }

    fn sync(&self, s: &mut State, i: usize) {
        let Some(entry) = s.entries.get(i).copied() else {
            return;
        };
        let deliver = s.msix_enabled && !s.function_masked && !entry.masked;
        if let Some(v) = s.vectors.get_mut(i) {
            v.sync(&*self.router, deliver.then_some(entry.msg), self.what(i));
        }
    }

    /// The MSI-X capability's enable and function-mask bits as the guest left them.
    pub fn set_msix_control(&self, enabled: bool, function_masked: bool) {
        let mut s = self.lock();
        if (s.msix_enabled, s.function_masked) == (enabled, function_masked) {
            return;
        }
        s.msix_enabled = enabled;
        s.function_masked = function_masked;
        if !enabled {
            for i in 0..s.vectors.len() {
                s.vectors[i].teardown(&*self.router, self.what(i));
                drain(s.vectors[i].eventfd());
            }
            return;
        }
        for i in 0..s.entries.len() {
            self.sync(&mut s, i);
        }
    }

    /// The PCI command register's INTx disable bit.
    pub fn set_intx_disabled(&self, disabled: bool) {
        self.lock().intx_disabled = disabled;
    }

    /// The vectors the driver assigned (msix_config, queue_msix_vector per queue).
    pub fn set_vectors(&self, config: u16, queues: &[u16]) {
        let mut s = self.lock();
        s.config_vector = config;
        for (dst, src) in s.queue_vectors.iter_mut().zip(queues) {
            *dst = *src;
        }
    }

    /// Whether the INTx status would show an interrupt (ISR non-zero).
    pub fn isr_pending(&self) -> bool {
        self.intx.is_some() && self.lock().isr != 0
    }

    /// A driver read of the ISR: returns and clears it.
    pub fn read_isr(&self) -> u8 {
        std::mem::take(&mut self.lock().isr)
    }

    /// The virtio device was reset: no vector assigned, nothing pending.
    pub fn reset(&self) {
        let mut s = self.lock();
        s.config_vector = NO_VECTOR;
        s.queue_vectors.fill(NO_VECTOR);
        s.isr = 0;
        for v in &s.vectors {
            if v.pending() {
                drain(v.eventfd());
            }
        }
        if let Some(intx) = &self.intx {
            drain(&intx.resample);
        }
    }

    fn signal_vector(&self, s: &State, vector: u16) {
        if let Some(v) = s.vectors.get(usize::from(vector)) {
            if let Err(e) = v.eventfd().write(1) {
                crate::limited!(warn, "{}: signalling MSI-X vector {vector}: {e}", self.name);
            }
        }
    }

    fn assert_intx(&self, s: &mut State, bit: u8) {
        s.isr |= bit;
        let Some(intx) = &self.intx else {
            return;
        };
        if s.intx_disabled || !s.intx_registered {
            return;
        }
        if let Err(e) = intx.trigger.write(1) {
            crate::limited!(warn, "{}: asserting INTx: {e}", self.name);
        }
    }

    fn locate(offset: u64, len: usize, size: u64) -> Option<(usize, usize)> {
        let end = offset.checked_add(len as u64)?;
        if end > size || offset / ENTRY_SIZE != (end - 1) / ENTRY_SIZE {
            return None;
        }
        Some((
            (offset / ENTRY_SIZE) as usize,
            (offset % ENTRY_SIZE) as usize,
        ))
    }

    /// A read of BAR 2 (table, then PBA); anything else reads 0.
    pub fn bar_read(&self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        let s = self.lock();
        let table_len = s.entries.len() as u64 * ENTRY_SIZE;
        if offset < PBA_OFFSET {
            if let Some((i, byte)) = Self::locate(offset, data.len(), table_len) {
                let bytes = s.entries[i].bytes();
                data.copy_from_slice(&bytes[byte..byte + data.len()]);
            }
            return;
        }
        let Some(rel) = offset.checked_sub(PBA_OFFSET) else {
            return;
        };
        let pba_len = s.entries.len().div_ceil(64) as u64 * 8;
        if rel.saturating_add(data.len() as u64) > pba_len {
            return;
        }
        for (i, b) in data.iter_mut().enumerate() {
            let first = (rel as usize + i) * 8;
            for bit in 0..8 {
                if s.vectors.get(first + bit).is_some_and(IrqVector::pending) {
                    *b |= 1 << bit;
                }
            }
        }
    }

    /// A write to BAR 2: aligned dwords/qwords of table entries; the PBA is read-only.
    pub fn bar_write(&self, offset: u64, data: &[u8]) {
        let mut s = self.lock();
        let table_len = s.entries.len() as u64 * ENTRY_SIZE;
        let aligned = matches!(data.len(), 4 | 8) && offset.is_multiple_of(data.len() as u64);
        let Some((i, byte)) = Self::locate(offset, data.len(), table_len).filter(|_| aligned)
        else {
            crate::limited!(
                debug,
                "{}: MSI-X write of {} bytes at {offset:#x} ignored",
                self.name,
                data.len()
            );
            return;
        };
        let mut bytes = s.entries[i].bytes();
        bytes[byte..byte + data.len()].copy_from_slice(data);
        let entry = MsixEntry::from_bytes(&bytes);
        if entry != s.entries[i] {
            s.entries[i] = entry;
            self.sync(&mut s, i);
        }
    }

    /// Unregister everything (the device goes away).
    pub fn teardown(&self) {
        let mut s = self.lock();
        for i in 0..s.vectors.len() {
            s.vectors[i].teardown(&*self.router, self.what(i));
        }
        if let Some(intx) = &self.intx {
            if std::mem::take(&mut s.intx_registered) {
                if let Err(e) = self.router.unregister_irqfd(&intx.trigger, intx.gsi) {
                    crate::limited!(warn, "{}: INTx: unregistering irqfd: {e}", self.name);
                }
            }
        }
    }
}

impl Drop for Interrupts {
    /// What `new` wired is unwired even when the device was never completed (teardown is
    /// idempotent: the device's own drop may have run it).
    fn drop(&mut self) {
        self.teardown();
    }
}

impl VirtioInterrupt for Interrupts {
    fn signal_queue(&self, vector: u16) {
        let mut s = self.lock();
        if s.msix_enabled {
            if let Some(&v) = s.queue_vectors.get(usize::from(vector)) {
                self.signal_vector(&s, v);
            }
        } else {
            self.assert_intx(&mut s, ISR_QUEUE);
        }
    }

    fn signal_config(&self) {
        let mut s = self.lock();
        if s.msix_enabled {
            let v = s.config_vector;
            self.signal_vector(&s, v);
        } else {
            self.assert_intx(&mut s, ISR_CONFIG);
        }
    }

    fn resample_event(&self) -> Option<&EventFd> {
        self.intx.as_ref().map(|i| &i.resample)
    }

    fn resample(&self) {
        let Some(intx) = &self.intx else {
            return;
        };
        drain(&intx.resample);
        let mut s = self.lock();
        if s.isr != 0 && !s.msix_enabled {
            let isr = s.isr;
            self.assert_intx(&mut s, isr);
        }
    }
}
