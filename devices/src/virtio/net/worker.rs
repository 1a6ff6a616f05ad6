//! The device's worker thread: polls the stop eventfd, both queues' notifiers, the
//! interrupt's resample eventfd (INTx) and the tap, and runs the [`Engine`]'s rounds.
//!
//! The tap is polled for input only while receive buffers may be there: once a frame
//! waits for buffers, only the receive queue's notify brings it back; for output only
//! while a frame waits for room. A tap that reports an error or hang-up is no longer
//! polled (its frames are gone; transmit chains are still completed, counted as dropped).
//! Each round is bounded ([`super::BUDGET`] frames each way), so a stop is seen promptly.

use std::os::unix::io::AsRawFd;

use vmm_sys_util::eventfd::EventFd;

use super::engine::{Engine, RxOutcome, TxOutcome};
use crate::services::{WorkerKind, WorkerSpawner};
use crate::virtio::worker_thread::WorkerThread;
use crate::virtio::VirtioError;

/// Start the device's worker; it runs until its [`WorkerThread`] is stopped.
pub fn start(spawner: &dyn WorkerSpawner, engine: Engine) -> Result<WorkerThread, VirtioError> {
    WorkerThread::start(spawner, "virtio-net", WorkerKind::VirtioNet, move |stop| {
        Run { engine, stop }.run()
    })
}

struct Run {
    engine: Engine,
    stop: EventFd,
}

fn pollfd(fd: i32, events: libc::c_short) -> libc::pollfd {
    libc::pollfd {
        fd: if events == 0 { -1 } else { fd },
        events,
        revents: 0,
    }
}

fn ready(p: &libc::pollfd) -> bool {
    p.revents & libc::POLLIN != 0
}

impl Run {
    fn run(&mut self) {
        // Work may be waiting from before the first notify: look once.
        let mut rx_more = true;
        let mut tx_more = true;
        let mut rx_wait = false;
        let mut tx_blocked = false;
        let mut tap_gone = false;
        loop {
            let mut tap_events = 0;
            if !tap_gone && !rx_wait {
                tap_events |= libc::POLLIN;
            }
            if !tap_gone && tx_blocked {
                tap_events |= libc::POLLOUT;
            }
            let resample = self
                .engine
                .interrupt
                .resample_event()
                .map(AsRawFd::as_raw_fd);
            let mut fds = [
                pollfd(self.stop.as_raw_fd(), libc::POLLIN),
                pollfd(self.engine.rx_notifier().as_raw_fd(), libc::POLLIN),
                pollfd(self.engine.tx_notifier().as_raw_fd(), libc::POLLIN),
                pollfd(resample.unwrap_or(-1), libc::POLLIN),
                pollfd(self.engine.tap.as_raw_fd(), tap_events),
            ];
            let busy = (rx_more && !rx_wait && !tap_gone) || (tx_more && !tx_blocked);
            let timeout = if busy { 0 } else { -1 };
            // SAFETY: valid pollfds (a negative fd is ignored by poll).
            let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                log::error!("virtio-net: poll failed, the device stops: {e}");
                return;
            }
            if ready(&fds[0]) {
                return;
            }
            if ready(&fds[3]) {
                self.engine.interrupt.resample();
            }
            if ready(&fds[1]) {
                let _ = self.engine.rx_notifier().read();
                rx_wait = false;
                rx_more = true;
            }
            if ready(&fds[2]) {
                let _ = self.engine.tx_notifier().read();
                tx_more = true;
            }
            let tap = fds[4].revents;
            if tap & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0 {
                crate::limited!(
                    warn,
                    "virtio-net: tap {} reports an error or hang-up; no more frames from it",
                    self.engine.tap.name()
                );
                tap_gone = true;
                tx_blocked = false;
            }
            if tap & libc::POLLOUT != 0 {
                tx_blocked = false;
                tx_more = true;
            }
            if tap & libc::POLLIN != 0 {
                rx_more = true;
            }
            if tx_more && !tx_blocked {
                match self.engine.tx() {
                    TxOutcome::Idle => tx_more = false,
                    TxOutcome::Blocked => tx_blocked = true,
                    TxOutcome::More => {}
                }
            }
            if rx_more && !rx_wait && !tap_gone {
                match self.engine.rx() {
                    RxOutcome::Idle => rx_more = false,
                    RxOutcome::NeedBuffers => {
                        rx_wait = true;
                        rx_more = false;
                    }
                    RxOutcome::More => {}
                }
            }
        }
    }
}
