//! Recording stand-ins for the virtio services (tests and, with the `mock` feature, the
//! fuzz targets): ioeventfds kept in a map, workers on plain threads. Interrupts use
//! [`crate::vfio::mock::MockRouter`].

use std::collections::BTreeMap;
use std::os::unix::io::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use vmm_sys_util::eventfd::EventFd;

use super::VirtioServices;
use crate::services::{IoEventRegistrar, ServiceError, WorkerKind, WorkerSpawner};
use crate::vfio::mock::MockRouter;

/// Guest address -> eventfd, as KVM would hold them.
#[derive(Default)]
pub struct MockIoEvents(pub Mutex<BTreeMap<u64, RawFd>>);

impl MockIoEvents {
    pub fn state(&self) -> MutexGuard<'_, BTreeMap<u64, RawFd>> {
        self.0.lock().unwrap()
    }
}

impl IoEventRegistrar for MockIoEvents {
    fn register_ioevent(&self, evt: &EventFd, addr: u64) -> Result<(), ServiceError> {
        let mut s = self.state();
        if s.contains_key(&addr) {
            return Err(ServiceError(format!("{addr:#x} already has an ioeventfd")));
        }
        s.insert(addr, evt.as_raw_fd());
        Ok(())
    }

    fn unregister_ioevent(&self, evt: &EventFd, addr: u64) -> Result<(), ServiceError> {
        let mut s = self.state();
        if s.get(&addr) != Some(&evt.as_raw_fd()) {
            return Err(ServiceError(format!("no ioeventfd at {addr:#x}")));
        }
        s.remove(&addr);
        Ok(())
    }
}

/// Runs workers on std threads and counts the live ones.
#[derive(Default)]
pub struct ThreadSpawner {
    pub live: Arc<AtomicUsize>,
    pub spawned: AtomicUsize,
    /// The kind of every worker spawned, in order.
    pub kinds: Mutex<Vec<WorkerKind>>,
    /// Their thread ids (as /proc/self/task names them), in order.
    pub tids: Arc<Mutex<Vec<i32>>>,
}

impl ThreadSpawner {
    pub fn live(&self) -> usize {
        self.live.load(Ordering::SeqCst)
    }
}

impl WorkerSpawner for ThreadSpawner {
    fn spawn(
        &self,
        name: String,
        kind: WorkerKind,
        body: Box<dyn FnOnce() + Send>,
    ) -> std::io::Result<std::thread::JoinHandle<()>> {
        self.kinds.lock().unwrap().push(kind);
        let live = self.live.clone();
        live.fetch_add(1, Ordering::SeqCst);
        self.spawned.fetch_add(1, Ordering::SeqCst);
        let tids = self.tids.clone();
        std::thread::Builder::new().name(name).spawn(move || {
            // SAFETY: gettid has no preconditions.
            tids.lock().unwrap().push(unsafe { libc::gettid() });
            body();
            live.fetch_sub(1, Ordering::SeqCst);
        })
    }
}

/// The three recording services, and the [`VirtioServices`] made of them.
pub struct MockServices {
    pub router: Arc<MockRouter>,
    pub ioevents: Arc<MockIoEvents>,
    pub spawner: Arc<ThreadSpawner>,
}

impl MockServices {
    pub fn new() -> Self {
        Self {
            router: Arc::default(),
            ioevents: Arc::default(),
            spawner: Arc::default(),
        }
    }

    pub fn services(&self) -> VirtioServices {
        VirtioServices {
            router: self.router.clone(),
            ioevents: self.ioevents.clone(),
            spawner: self.spawner.clone(),
        }
    }
}

impl Default for MockServices {
    fn default() -> Self {
        Self::new()
    }
}
