//! Queue notifications: one eventfd per queue, signalled by a KVM ioeventfd at the queue's
//! notify address while BAR 0 decodes, or by the transport when a notify write traps.

use std::sync::Arc;

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::services::IoEventRegistrar;

/// Offset of the notify area in BAR 0 and the notify_off_multiplier.
pub const NOTIFY_OFFSET: u64 = 0x3000;
pub const NOTIFY_MULTIPLIER: u32 = 4;

pub struct Notifiers {
    name: String,
    ioevents: Arc<dyn IoEventRegistrar>,
    evts: Vec<EventFd>,
    /// The BAR 0 address the ioeventfds are registered at, and which queues got one.
    registered: Option<(u64, Vec<bool>)>,
}

impl Notifiers {
    pub fn new(
        name: String,
        ioevents: Arc<dyn IoEventRegistrar>,
        queues: usize,
    ) -> std::io::Result<Self> {
        Ok(Self {
            name,
            ioevents,
            evts: (0..queues)
                .map(|_| EventFd::new(EFD_NONBLOCK))
                .collect::<std::io::Result<_>>()?,
            registered: None,
        })
    }

    pub fn get(&self, queue: usize) -> Option<&EventFd> {
        self.evts.get(queue)
    }

    fn addr(bar: u64, queue: usize) -> u64 {
        // A BAR is naturally aligned, so this stays inside it; wrapping only to never panic.
        bar.wrapping_add(NOTIFY_OFFSET)
            .wrapping_add(u64::from(NOTIFY_MULTIPLIER) * queue as u64)
    }

    /// BAR 0 decodes at `bar`: one ioeventfd per queue there (moved if it was elsewhere).
    pub fn register(&mut self, bar: u64) {
        if self.registered.as_ref().is_some_and(|(at, _)| *at == bar) {
            return;
        }
        self.unregister();
        let done = self
            .evts
            .iter()
            .enumerate()
            .map(
                |(q, evt)| match self.ioevents.register_ioevent(evt, Self::addr(bar, q)) {
                    Ok(()) => true,
                    Err(e) => {
                        // Notifies still work, trapped.
                        crate::limited!(warn, "{}: ioeventfd for queue {q}: {e}", self.name);
                        false
                    }
                },
            )
            .collect();
        self.registered = Some((bar, done));
    }

    pub fn unregister(&mut self) {
        let Some((bar, done)) = self.registered.take() else {
            return;
        };
        for (q, evt) in self.evts.iter().enumerate() {
            if done.get(q) == Some(&true) {
                if let Err(e) = self.ioevents.unregister_ioevent(evt, Self::addr(bar, q)) {
                    crate::limited!(warn, "{}: removing ioeventfd of queue {q}: {e}", self.name);
                }
            }
        }
    }

    /// A notify write that trapped, at `offset` into the notify area.
    pub fn trapped(&self, offset: u64) {
        if !offset.is_multiple_of(u64::from(NOTIFY_MULTIPLIER)) {
            return;
        }
        let q = offset / u64::from(NOTIFY_MULTIPLIER);
        if let Some(evt) = usize::try_from(q).ok().and_then(|q| self.evts.get(q)) {
            if let Err(e) = evt.write(1) {
                crate::limited!(warn, "{}: notifying queue {q}: {e}", self.name);
            }
        }
    }
}

impl Drop for Notifiers {
    fn drop(&mut self) {
        self.unregister();
    }
}
