//! INTx: a level-triggered IOAPIC pin (the GSI the VMM gave) fed by an irqfd with a resample
//! eventfd. VFIO signals the trigger eventfd and automasks the line; when the guest EOIs the
//! pin KVM signals the resample eventfd, which VFIO takes as its unmask eventfd, so the line
//! re-asserts if the device still wants service.

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::backend::IrqIndex;
use super::vectors::IrqCtx;

pub struct Intx {
    gsi: u32,
    trigger: EventFd,
    resample: EventFd,
    enabled: bool,
}

impl Intx {
    pub fn new(gsi: u32) -> std::io::Result<Self> {
        Ok(Self {
            gsi,
            trigger: EventFd::new(EFD_NONBLOCK)?,
            resample: EventFd::new(EFD_NONBLOCK)?,
            enabled: false,
        })
    }

    pub fn gsi(&self) -> u32 {
        self.gsi
    }

    #[cfg(test)]
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// Wire the pin: irqfd with resample first, then VFIO's trigger and unmask eventfds.
    pub fn enable(&mut self, ctx: &IrqCtx) -> Result<(), String> {
        if self.enabled {
            return Ok(());
        }
        ctx.router
            .register_irqfd_with_resample(&self.trigger, &self.resample, self.gsi)
            .map_err(|e| format!("registering the irqfd: {e}"))?;
        let vfio = ctx
            .backend
            .enable_irq(IrqIndex::Intx, &[&self.trigger])
            .and_then(|()| {
                ctx.backend
                    .set_intx_unmask_fd(&self.resample)
                    .inspect_err(|_| {
                        let _ = ctx.backend.disable_irq(IrqIndex::Intx);
                    })
            });
        if let Err(e) = vfio {
            if let Err(e) = ctx.router.unregister_irqfd(&self.trigger, self.gsi) {
                crate::limited!(warn, "{}: INTx: unregistering irqfd: {e}", ctx.name);
            }
            return Err(e.to_string());
        }
        self.enabled = true;
        Ok(())
    }

    /// Unwire the pin (VFIO first, so nothing signals an eventfd KVM no longer watches;
    /// removing the irqfd also deasserts the line).
    pub fn disable(&mut self, ctx: &IrqCtx) {
        if !std::mem::take(&mut self.enabled) {
            return;
        }
        if let Err(e) = ctx.backend.disable_irq(IrqIndex::Intx) {
            crate::limited!(warn, "{}: disabling INTx: {e}", ctx.name);
        }
        if let Err(e) = ctx.router.unregister_irqfd(&self.trigger, self.gsi) {
            crate::limited!(
                warn,
                "{}: INTx: unregistering irqfd of GSI {}: {e}",
                ctx.name,
                self.gsi
            );
        }
    }

    #[cfg(test)]
    pub fn eventfds(&self) -> (&EventFd, &EventFd) {
        (&self.trigger, &self.resample)
    }
}
