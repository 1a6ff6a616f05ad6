//! The device's one worker thread: poll(2) over the stop eventfd, the three queue
//! notifiers, the interrupt's resample eventfd (INTx), the listener, every host client and
//! every host stream; then bounded work: up to [`BUDGET`] tx chains, [`BUDGET`] rx chains
//! and [`super::muxer`]'s accept budget per round, so a stop is seen promptly.
//!
//! The syscalls it makes (its seccomp filter is built from this list): `poll` (glibc's
//! poll(); `ppoll` where the libc implements it so), `read` (eventfds), `write` (eventfds,
//! the irqfd, the log), `accept4`, `socket` (AF_UNIX only), `connect`, `recvfrom` (recv,
//! MSG_PEEK for the CONNECT line), `sendto` (send, MSG_NOSIGNAL), `shutdown`, `close`;
//! besides those every thread makes (futex, memory: mmap/munmap/madvise/brk/mremap,
//! clock_gettime, exit).

use std::os::unix::io::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

use super::muxer::Muxer;
use super::packet::{self, TxError, HDR_LEN, MAX_PAYLOAD};
use crate::services::{WorkerKind, WorkerSpawner};
use crate::virtio::worker_thread::WorkerThread;
use crate::virtio::{ActiveQueue, VirtioError, VirtioInterrupt};

/// Chains served per queue before looking at the stop eventfd again.
pub const BUDGET: usize = 256;

/// Start the device's worker; it runs until its [`WorkerThread`] is stopped, and closes
/// every host stream (dropping the muxer) before it ends.
pub fn start(
    spawner: &dyn WorkerSpawner,
    muxer: Muxer,
    mem: GuestMemoryMmap,
    queues: [ActiveQueue; 2],
    event: Option<ActiveQueue>,
    interrupt: Arc<dyn VirtioInterrupt>,
) -> Result<WorkerThread, VirtioError> {
    let [rx, tx] = queues;
    WorkerThread::start(
        spawner,
        "virtio-vsock",
        WorkerKind::VirtioVsock,
        move |stop| {
            Run {
                muxer,
                mem,
                rx,
                tx,
                event,
                interrupt,
                stop,
                txbuf: Vec::with_capacity(HDR_LEN + MAX_PAYLOAD),
                rxbuf: vec![0; MAX_PAYLOAD],
            }
            .run()
        },
    )
}

struct Run {
    muxer: Muxer,
    mem: GuestMemoryMmap,
    rx: ActiveQueue,
    tx: ActiveQueue,
    event: Option<ActiveQueue>,
    interrupt: Arc<dyn VirtioInterrupt>,
    stop: EventFd,
    txbuf: Vec<u8>,
    rxbuf: Vec<u8>,
}

fn pollfd(fd: i32) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}

/// The next chain of `q`, if any (an unusable ring counts as none).
fn pop<'a>(
    q: &mut Queue,
    mem: &'a GuestMemoryMmap,
) -> Option<virtio_queue::DescriptorChain<&'a GuestMemoryMmap>> {
    match q.iter(mem) {
        Ok(mut it) => it.next(),
        Err(e) => {
            crate::limited!(warn, "virtio-vsock: an available ring is unusable: {e}");
            None
        }
    }
}

fn complete(q: &mut Queue, mem: &GuestMemoryMmap, head: u16, len: u32) -> bool {
    match q.add_used(mem, head, len) {
        Ok(()) => true,
        Err(e) => {
            crate::limited!(warn, "virtio-vsock: used ring: {e}");
            false
        }
    }
}

impl Run {
    fn run(&mut self) {
        let mut fds = Vec::new();
        let mut slots = Vec::new();
        // Chains may be waiting from before the worker started.
        let mut more = true;
        loop {
            let now = Instant::now();
            let wait = self.muxer.expire(now);
            let resample = self.interrupt.resample_event().map(AsRawFd::as_raw_fd);
            fds.clear();
            slots.clear();
            fds.push(pollfd(self.stop.as_raw_fd()));
            fds.push(pollfd(self.rx.notifier.as_raw_fd()));
            fds.push(pollfd(self.tx.notifier.as_raw_fd()));
            let ev = self.event.as_ref().map(|q| q.notifier.as_raw_fd());
            fds.push(pollfd(ev.unwrap_or(-1)));
            fds.push(pollfd(resample.unwrap_or(-1)));
            const FIXED: usize = 5;
            self.muxer.poll_set(now, &mut fds, &mut slots);
            let timeout = if more {
                0
            } else {
                // Rounded up, so that the deadline has passed when poll returns.
                wait.map_or(-1, |d| {
                    d.saturating_add(Duration::from_micros(999))
                        .as_millis()
                        .min(60_000) as i32
                })
            };
            // SAFETY: `fds` is a valid array of pollfds of its length (negative fds are
            // ignored by poll).
            let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                log::error!("virtio-vsock: poll failed, the device stops: {e}");
                return;
            }
            if fds[0].revents != 0 {
                return;
            }
            if fds[4].revents != 0 {
                self.interrupt.resample();
            }
            more = false;
            if fds[1].revents != 0 {
                let _ = self.rx.notifier.read();
            }
            if fds[2].revents != 0 {
                let _ = self.tx.notifier.read();
                more = true;
            }
            if fds[3].revents != 0 {
                if let Some(q) = &self.event {
                    // Nothing is sent on the event queue; its buffers stay for later.
                    let _ = q.notifier.read();
                }
            }
            let now = Instant::now();
            for (p, slot) in fds[FIXED..].iter().zip(&slots) {
                if p.revents != 0 {
                    self.muxer.on_poll(*slot, p.revents, now);
                }
            }
            // A tx notify, or tx chains left over from a full round: serve tx first, as it
            // can free host buffers and bring credit.
            let tx_left = more && self.serve_tx();
            let rx_left = self.serve_rx();
            more = tx_left || rx_left;
        }
    }

    /// Up to [`BUDGET`] tx chains; true when some may be left.
    fn serve_tx(&mut self) -> bool {
        let mem = &self.mem;
        let q = &mut self.tx.queue;
        let mut used = false;
        let mut left = false;
        for i in 0..=BUDGET {
            let Some(chain) = pop(q, mem) else {
                break;
            };
            if i == BUDGET {
                q.set_next_avail(q.next_avail().wrapping_sub(1));
                left = true;
                break;
            }
            let head = chain.head_index();
            match packet::read_tx(chain, &mut self.txbuf) {
                Ok(hdr) => self.muxer.on_guest_packet(&hdr, &self.txbuf[HDR_LEN..]),
                Err(TxError::BadPayload(hdr)) => self.muxer.bad_packet(&hdr),
                Err(TxError::NoHeader) => {
                    crate::limited!(debug, "virtio-vsock: a tx chain without a header; dropped");
                }
            }
            used |= complete(q, mem, head, 0);
        }
        if used && q.needs_notification(mem).unwrap_or(true) {
            self.interrupt.signal_queue(self.tx.index);
        }
        left
    }

    /// Fill up to [`BUDGET`] rx chains with what the muxer has; true when more may fit.
    fn serve_rx(&mut self) -> bool {
        let mem = &self.mem;
        let q = &mut self.rx.queue;
        let mut used = false;
        let mut left = false;
        for i in 0..=BUDGET {
            if !self.muxer.has_output() {
                break;
            }
            let Some(chain) = pop(q, mem) else {
                break;
            };
            if i == BUDGET {
                q.set_next_avail(q.next_avail().wrapping_sub(1));
                left = true;
                break;
            }
            let head = chain.head_index();
            let Some(cap) = packet::rx_capacity(&chain) else {
                crate::limited!(debug, "virtio-vsock: an unusable rx buffer; returned empty");
                used |= complete(q, mem, head, 0);
                continue;
            };
            let room = (cap - HDR_LEN).min(MAX_PAYLOAD);
            let Some(hdr) = self.muxer.next_packet(room, &mut self.rxbuf) else {
                // Nothing fits (or nothing was left after all): keep the buffer.
                q.set_next_avail(q.next_avail().wrapping_sub(1));
                break;
            };
            let payload = &self.rxbuf[..hdr.len as usize];
            match packet::write_rx(chain, &hdr, payload) {
                Some(len) => used |= complete(q, mem, head, len),
                None => {
                    crate::limited!(
                        warn,
                        "virtio-vsock: an rx buffer could not be written; a packet was lost"
                    );
                    used |= complete(q, mem, head, 0);
                }
            }
        }
        if used && q.needs_notification(mem).unwrap_or(true) {
            self.interrupt.signal_queue(self.rx.index);
        }
        left
    }
}
