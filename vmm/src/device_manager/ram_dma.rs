//! Guest RAM DMA-mapped beside the boot. Pinning RAM for the IOMMU costs time in proportion
//! to its size (seconds per GiB where pages are faulted in on the way); the guest needs none
//! of it until a passed-through device masters the bus. So a thread of its own maps RAM,
//! a chunk at a time, while the vCPUs run, and each device's bus-master enable waits at the
//! [`DmaGate`] until the mapping is complete (devices::vfio::dma_gate). A failure ends the
//! VM with the mapping's error; a VM that stops first makes the thread give up after the
//! chunk in hand.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use devices::vfio::DmaGate;
use host::vfio_backend::VfioBackend;
use vfio_ioctls::{VfioError, VfioOps};
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion, MemoryRegionAddress};

use crate::error::{Error, PassthroughError, Result};
use crate::exit::{panic_message, ExitChannel, VmExit};
use crate::seccomp::{self, ThreadKind};
use crate::sync::lock;
use crate::timeline::{Milestone, Timeline};

/// The largest single mapping: the thread looks up between chunks whether the VM still
/// wants the rest (1 GiB keeps huge pages of either size whole).
const CHUNK: u64 = 1 << 30;

/// The (iova, size) ranges mapped so far: the domain unmaps these at its end.
pub type MappedRanges = Arc<Mutex<Vec<(u64, usize)>>>;

/// What the mapping thread maps, and where it reports.
pub struct RamDmaJob {
    pub ops: Arc<dyn VfioOps>,
    pub backend: VfioBackend,
    pub mem: GuestMemoryMmap,
    pub mapped: MappedRanges,
    pub exit: Arc<ExitChannel>,
    pub timeline: Arc<Timeline>,
    /// How many devices wait for it (for the log line).
    pub devices: usize,
}

/// The mapping under way (or done): its gate, and its error once it failed.
pub struct RamDma {
    gate: Arc<DmaGate>,
    give_up: Arc<AtomicBool>,
    error: Arc<Mutex<Option<Error>>>,
    thread: Option<JoinHandle<()>>,
}

impl RamDma {
    /// Start mapping `job.mem` on a thread named "dma-map".
    pub fn start(job: RamDmaJob) -> Result<Self> {
        let gate = Arc::new(DmaGate::pending());
        let give_up = Arc::new(AtomicBool::new(false));
        let error = Arc::new(Mutex::new(None));
        let (g, stop, err) = (gate.clone(), give_up.clone(), error.clone());
        let thread = std::thread::Builder::new()
            .name("dma-map".into())
            .spawn(move || run(job, &g, &stop, &err))
            .map_err(Error::io("the DMA-mapping thread"))?;
        Ok(Self {
            gate,
            give_up,
            error,
            thread: Some(thread),
        })
    }

    /// The gate passed-through devices' bus mastering waits at.
    pub fn gate(&self) -> Arc<DmaGate> {
        self.gate.clone()
    }

    /// Why the mapping failed, once (None while it runs, after it succeeded, or when it
    /// gave up because the VM stopped).
    pub fn take_error(&self) -> Option<Error> {
        lock(&self.error).take()
    }

    /// Give up what is left to map (after the chunk in hand) and wait for the thread.
    pub fn finish(&mut self) {
        self.give_up.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            // The thread catches its own panics; a join error cannot carry one.
            let _ = thread.join();
        }
        // Whatever happened, nobody waits any more.
        self.gate.fail();
    }
}

impl Drop for RamDma {
    fn drop(&mut self) {
        self.finish();
    }
}

/// The thread's body: confine it, map, open or fail the gate, report.
fn run(job: RamDmaJob, gate: &DmaGate, give_up: &AtomicBool, error: &Mutex<Option<Error>>) {
    if seccomp::apply(ThreadKind::DmaMap, job.exit.seccomp()).is_err() {
        // The policy recorded the failure and ends the VM with it.
        gate.fail();
        return;
    }
    let start = Instant::now();
    let stopping = || give_up.load(Ordering::Relaxed) || job.exit.reason().is_some();
    let outcome = catch_unwind(AssertUnwindSafe(|| map_all(&job, &stopping)));
    match outcome {
        Ok(Ok(true)) => {
            job.timeline.mark(Milestone::DmaMapped);
            log::info!(
                "guest RAM DMA-mapped ({} backend) for {} device(s) in {:.1} ms",
                job.backend,
                job.devices,
                start.elapsed().as_secs_f64() * 1000.0
            );
            gate.open();
        }
        Ok(Ok(false)) => {
            log::debug!("guest RAM DMA mapping given up: the VM is stopping");
            gate.fail();
        }
        Ok(Err(e)) => {
            *lock(error) = Some(e);
            gate.fail();
            job.exit.request(VmExit::Stopped {
                reason: "a failed DMA mapping of guest RAM".into(),
            });
        }
        Err(panic) => {
            gate.fail();
            job.exit.request(VmExit::Panicked {
                thread: "dma-map".into(),
                message: panic_message(panic.as_ref()),
            });
        }
    }
}

/// Map every region, CHUNK at a time; false when `stopping` said to give up.
fn map_all(job: &RamDmaJob, stopping: &dyn Fn() -> bool) -> Result<bool> {
    let failed = |e| Error::Vfio {
        what: "guest RAM DMA mapping".into(),
        source: PassthroughError::DmaMap(e),
    };
    crate::faults::before_dma_map().map_err(Error::io("guest RAM DMA mapping"))?;
    for region in job.mem.iter() {
        let host = region
            .get_host_address(MemoryRegionAddress(0))
            .map_err(|_| failed(VfioError::GetHostAddress))?;
        let (iova, len) = (region.start_addr().0, region.len());
        let mut offset = 0;
        while offset < len {
            if stopping() {
                return Ok(false);
            }
            let size = (len - offset).min(CHUNK) as usize;
            // SAFETY: the domain keeps guest memory mapped in this process until its Drop
            // has unmapped every range recorded in `mapped` from the IOMMU.
            unsafe {
                job.ops
                    .vfio_dma_map(iova + offset, size, host.add(offset as usize))
            }
            .map_err(failed)?;
            lock(&job.mapped).push((iova + offset, size));
            offset += size as u64;
        }
    }
    Ok(true)
}
