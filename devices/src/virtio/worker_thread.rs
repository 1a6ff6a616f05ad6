//! A virtio device's worker thread: started through the VMM's [`WorkerSpawner`] with a stop
//! eventfd its body polls, stopped by signalling that eventfd and joining the thread.

use std::thread::JoinHandle;

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::services::{WorkerKind, WorkerSpawner};
use crate::virtio::VirtioError;

pub struct WorkerThread {
    name: &'static str,
    stop: EventFd,
    handle: JoinHandle<()>,
}

impl WorkerThread {
    /// Start `body` on a thread named `name`; it gets the stop eventfd to poll and returns
    /// once that is readable.
    pub fn start(
        spawner: &dyn WorkerSpawner,
        name: &'static str,
        kind: WorkerKind,
        body: impl FnOnce(EventFd) + Send + 'static,
    ) -> Result<Self, VirtioError> {
        let stop = EventFd::new(EFD_NONBLOCK).map_err(VirtioError::EventFd)?;
        let theirs = stop.try_clone().map_err(VirtioError::EventFd)?;
        let handle = spawner
            .spawn(name.into(), kind, Box::new(move || body(theirs)))
            .map_err(VirtioError::Spawn)?;
        Ok(Self { name, stop, handle })
    }

    /// Stop the thread and wait for it.
    pub fn stop(self) {
        if let Err(e) = self.stop.write(1) {
            log::error!("{}: cannot stop the worker: {e}", self.name);
            return;
        }
        if self.handle.join().is_err() {
            log::error!("{}: the worker panicked", self.name);
        }
    }
}
