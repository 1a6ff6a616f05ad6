//! The queue's worker thread: waits on the queue's notifier, a stop eventfd and (INTx) the
//! interrupt's resample eventfd; serves at most [`BUDGET`] chains per round, so a stop is
//! seen promptly even when the driver keeps the queue full.

use std::os::unix::io::AsRawFd;
use std::sync::Arc;

use virtio_queue::{QueueOwnedT, QueueT};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

use super::request::{self, BOUNCE_LEN};
use super::Disk;
use crate::services::{WorkerKind, WorkerSpawner};
use crate::virtio::worker_thread::WorkerThread;
use crate::virtio::{ActiveQueue, VirtioError, VirtioInterrupt};

/// Chains served before looking at the stop eventfd again.
pub const BUDGET: usize = 256;

/// Start the queue's worker; it runs until its [`WorkerThread`] is stopped.
pub fn start(
    spawner: &dyn WorkerSpawner,
    disk: Arc<Disk>,
    mem: GuestMemoryMmap,
    queue: ActiveQueue,
    interrupt: Arc<dyn VirtioInterrupt>,
) -> Result<WorkerThread, VirtioError> {
    WorkerThread::start(
        spawner,
        "virtio-blk",
        WorkerKind::VirtioBlock,
        move |stop| {
            Run {
                disk,
                mem,
                queue,
                interrupt,
                stop,
                buf: vec![0; BOUNCE_LEN],
            }
            .run()
        },
    )
}

struct Run {
    disk: Arc<Disk>,
    mem: GuestMemoryMmap,
    queue: ActiveQueue,
    interrupt: Arc<dyn VirtioInterrupt>,
    stop: EventFd,
    buf: Vec<u8>,
}

fn pollfd(fd: i32) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}

fn ready(p: &libc::pollfd) -> bool {
    p.revents & libc::POLLIN != 0
}

impl Run {
    fn run(&mut self) {
        // There may be requests from before a notify was seen (or none will come).
        let mut more = true;
        loop {
            let resample = self.interrupt.resample_event().map(AsRawFd::as_raw_fd);
            let mut fds = [
                pollfd(self.stop.as_raw_fd()),
                pollfd(self.queue.notifier.as_raw_fd()),
                pollfd(resample.unwrap_or(-1)),
            ];
            let timeout = if more { 0 } else { -1 };
            // SAFETY: three valid pollfds (a negative fd is ignored by poll).
            let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                log::error!("virtio-blk: poll failed, the queue stops: {e}");
                return;
            }
            if ready(&fds[0]) {
                return;
            }
            if ready(&fds[2]) {
                self.interrupt.resample();
            }
            if ready(&fds[1]) {
                let _ = self.queue.notifier.read();
                more = true;
            }
            if more {
                more = self.serve();
            }
        }
    }

    /// Serve up to [`BUDGET`] chains; true when some may be left.
    fn serve(&mut self) -> bool {
        let mem = &self.mem;
        let q = &mut self.queue.queue;
        let mut used = false;
        let mut left = false;
        for i in 0..=BUDGET {
            let chain = match q.iter(mem) {
                Ok(mut it) => it.next(),
                Err(e) => {
                    crate::limited!(warn, "virtio-blk: the available ring is unusable: {e}");
                    None
                }
            };
            let Some(chain) = chain else {
                break;
            };
            if i == BUDGET {
                // One too many: put it back for the next round.
                q.set_next_avail(q.next_avail().wrapping_sub(1));
                left = true;
                break;
            }
            let done = request::handle(&self.disk, chain, &mut self.buf);
            if done.head >= q.size() {
                crate::limited!(warn, "virtio-blk: head index {} out of range", done.head);
                continue;
            }
            match q.add_used(mem, done.head, done.len) {
                Ok(()) => used = true,
                Err(e) => crate::limited!(warn, "virtio-blk: used ring: {e}"),
            }
        }
        if used && q.needs_notification(mem).unwrap_or(true) {
            self.interrupt.signal_queue(self.queue.index);
        }
        left
    }
}
