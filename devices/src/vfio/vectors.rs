//! One MSI or MSI-X vector's plumbing: the eventfd VFIO signals, the GSI whose route carries
//! the guest's message, and the irqfd binding the two while the vector is unmasked.
//!
//! Masking unregisters the irqfd: the eventfd then keeps counting what the device sends, the
//! vector reads as pending (the PBA or MSI pending bits), and re-registering on unmask makes
//! KVM deliver the interrupt that was held back (KVM checks an eventfd's count when an irqfd
//! is registered).

use std::io;
use std::os::unix::io::AsRawFd;

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::services::{InterruptRouter, MsiMessage};

/// Names a vector in messages ("dev: MSI-X vector 3") without building a string on the
/// vCPU's path: it is formatted only when a message is written.
#[derive(Clone, Copy)]
pub struct VectorName<'a> {
    pub device: &'a str,
    pub kind: &'static str,
    pub index: usize,
}

impl std::fmt::Display for VectorName<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {} vector {}", self.device, self.kind, self.index)
    }
}

pub struct IrqVector {
    evt: EventFd,
    gsi: Option<u32>,
    /// The message `gsi` routes to.
    routed: Option<MsiMessage>,
    registered: bool,
}

impl IrqVector {
    pub fn new() -> io::Result<Self> {
        Ok(Self {
            evt: EventFd::new(EFD_NONBLOCK)?,
            gsi: None,
            routed: None,
            registered: false,
        })
    }

    pub fn eventfd(&self) -> &EventFd {
        &self.evt
    }

    #[cfg(test)]
    pub fn gsi(&self) -> Option<u32> {
        self.gsi
    }

    /// Deliver to `msg` (`Some`: the vector is enabled and unmasked) or hold back (`None`).
    pub fn sync(
        &mut self,
        router: &dyn InterruptRouter,
        want: Option<MsiMessage>,
        what: VectorName,
    ) {
        let Some(msg) = want else {
            if self.registered {
                self.registered = false;
                if let Some(gsi) = self.gsi {
                    if let Err(e) = router.unregister_irqfd(&self.evt, gsi) {
                        crate::limited!(warn, "{what}: unregistering irqfd of GSI {gsi}: {e}");
                    }
                }
            }
            return;
        };
        let gsi = match self.gsi {
            Some(gsi) => gsi,
            None => match router.allocate_msi_gsi() {
                Ok(gsi) => *self.gsi.insert(gsi),
                Err(e) => {
                    crate::limited!(warn, "{what}: no GSI for the vector, it stays silent: {e}");
                    return;
                }
            },
        };
        if self.routed != Some(msg) {
            self.routed = None;
            if let Err(e) = router.set_msi_route(gsi, msg) {
                crate::limited!(warn, "{what}: routing GSI {gsi} to {msg:x?}: {e}");
                return;
            }
            self.routed = Some(msg);
        }
        if !self.registered {
            match router.register_irqfd(&self.evt, gsi) {
                Ok(()) => self.registered = true,
                Err(e) => crate::limited!(warn, "{what}: registering irqfd for GSI {gsi}: {e}"),
            }
        }
    }

    /// Whether the device signalled while the vector was held back (only then does nobody
    /// consume the eventfd).
    pub fn pending(&self) -> bool {
        if self.registered {
            return false;
        }
        let mut pfd = libc::pollfd {
            fd: self.evt.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, no timeout.
        let ready = unsafe { libc::poll(&mut pfd, 1, 0) };
        ready > 0 && pfd.revents & libc::POLLIN != 0
    }

    /// Unregister the irqfd and give the GSI back.
    pub fn teardown(&mut self, router: &dyn InterruptRouter, what: VectorName) {
        self.sync(router, None, what);
        if let Some(gsi) = self.gsi.take() {
            router.release_msi_gsi(gsi);
        }
        self.routed = None;
    }
}

/// A set of vectors enabled together in VFIO (MSI or MSI-X).
pub fn new_vectors(count: usize) -> io::Result<Vec<IrqVector>> {
    (0..count).map(|_| IrqVector::new()).collect()
}

/// What interrupt emulation needs to act: the VFIO device, KVM's interrupt routing, and the
/// device's name for messages.
pub struct IrqCtx<'a> {
    pub backend: &'a dyn super::VfioBackend,
    pub router: &'a dyn InterruptRouter,
    pub name: &'a str,
}

impl IrqCtx<'_> {
    pub fn vector_name(&self, kind: &'static str, index: usize) -> VectorName<'_> {
        VectorName {
            device: self.name,
            kind,
            index,
        }
    }
}
