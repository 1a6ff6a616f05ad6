//! A running VM seen from the caller: its state, pause/resume, stop, and waiting for the end.

use std::fmt;
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use vmm_sys_util::eventfd::EventFd;

use crate::error::{Error, Result};
use crate::exit::{ExitChannel, VmExit};
use crate::seccomp::{self, ThreadKind};
use crate::sync::lock;
use crate::timeline::Timeline;
use crate::vcpu::VcpuSet;

/// Where a VM is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmState {
    /// Creating the VM, loading the guest, opening devices.
    Starting,
    Running,
    Paused,
    /// An exit was requested; the VM is tearing down.
    Stopping,
    /// Everything is released; `wait` returns at once.
    Stopped,
}

impl fmt::Display for VmState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            VmState::Starting => "starting",
            VmState::Running => "running",
            VmState::Paused => "paused",
            VmState::Stopping => "stopping",
            VmState::Stopped => "stopped",
        })
    }
}

/// Why a control request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    #[error("the VM is {0}; it can only be paused or resumed while it runs")]
    NotRunning(VmState),
}

/// What the VM's own thread and its handles share.
pub(crate) struct VmShared {
    pub exit: Arc<ExitChannel>,
    pub timeline: Arc<Timeline>,
    pub state: Mutex<VmState>,
    pub vcpus: OnceLock<Arc<VcpuSet>>,
    /// Presses the guest's power button (set once the platform devices exist).
    pub power_button: OnceLock<Box<dyn Fn() + Send + Sync>>,
    /// The forced stop after `VmHandle::shutdown`: one per VM, whatever the requests.
    shutdown_timer: ShutdownTimer,
}

/// When a shutdown request stops a VM whose guest did not power off, and the one thread
/// that waits for it. The thread starts with the first request and ends with the VM; each
/// later request re-arms it (the latest request's timeout counts, sooner or later than
/// before), so any number of requests cost one thread.
#[derive(Default)]
struct ShutdownTimer {
    state: Mutex<TimerState>,
    changed: Condvar,
}

#[derive(Default)]
struct TimerState {
    /// When to stop the VM, and the timeout that set it (for the reason).
    deadline: Option<(Instant, Duration)>,
    /// The thread was started (at most once per VM).
    started: bool,
    /// The VM is stopped: the thread returns.
    vm_stopped: bool,
}

impl VmShared {
    pub fn new(exit: Arc<ExitChannel>, timeline: Arc<Timeline>) -> Self {
        Self {
            exit,
            timeline,
            state: Mutex::new(VmState::Starting),
            vcpus: OnceLock::new(),
            power_button: OnceLock::new(),
            shutdown_timer: ShutdownTimer::default(),
        }
    }

    /// Wire `press_power_button` to the platform's power-button line.
    pub fn set_power_button(&self, line: &EventFd) -> Result<()> {
        let line = line.try_clone().map_err(Error::io("the power button"))?;
        let _ = self.power_button.set(Box::new(move || {
            let _ = line.write(1);
        }));
        Ok(())
    }

    /// Signal the guest's ACPI power button, if the platform has one yet.
    pub fn press_power_button(&self) {
        if let Some(button) = self.power_button.get() {
            button();
        }
    }

    pub fn set_state(&self, state: VmState) {
        *lock(&self.state) = state;
        if state == VmState::Stopped {
            let timer = &self.shutdown_timer;
            lock(&timer.state).vm_stopped = true;
            timer.changed.notify_all();
        }
    }

    /// Stop the VM `timeout` from now unless it ends first, replacing any earlier deadline;
    /// the first call starts the timer thread.
    fn arm_shutdown_timer(self: &Arc<Self>, timeout: Duration) -> std::io::Result<()> {
        let timer = &self.shutdown_timer;
        let mut state = lock(&timer.state);
        state.deadline = Some((Instant::now() + timeout, timeout));
        if state.started {
            timer.changed.notify_all();
            return Ok(());
        }
        let shared = self.clone();
        std::thread::Builder::new()
            .name("shutdown-timer".into())
            .spawn(move || shared.run_shutdown_timer())?;
        state.started = true;
        Ok(())
    }

    /// The timer thread: wait for the deadline, which requests may move, or for the VM to
    /// stop by itself.
    fn run_shutdown_timer(&self) {
        if seccomp::apply(ThreadKind::Timer, self.exit.seccomp()).is_err() {
            return; // the violation is recorded: the VM ends with it
        }
        let timer = &self.shutdown_timer;
        let mut state = lock(&timer.state);
        while !state.vm_stopped {
            let Some((at, timeout)) = state.deadline else {
                return;
            };
            let now = Instant::now();
            if now >= at {
                drop(state);
                self.exit.request(VmExit::Stopped {
                    reason: format!(
                        "shutdown: the guest did not power off within {}s",
                        timeout.as_secs()
                    ),
                });
                return;
            }
            state = timer
                .changed
                .wait_timeout(state, at - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    pub fn state(&self) -> VmState {
        let state = *lock(&self.state);
        self.state_locked(state)
    }
}

/// A started VM. Dropping the handle without `wait` stops the VM and waits for it.
///
/// Every method takes `&self` and the handle is `Send + Sync`, so threads can share it (an
/// `Arc<VmHandle>` or a scoped thread): one waits while another (a signal thread, an API
/// server) stops or controls the VM.
pub struct VmHandle {
    shared: Arc<VmShared>,
    /// Taken by the first `wait`.
    thread: Mutex<Option<JoinHandle<Result<VmExit>>>>,
}

impl VmHandle {
    pub(crate) fn new(shared: Arc<VmShared>, thread: JoinHandle<Result<VmExit>>) -> Self {
        Self {
            shared,
            thread: Mutex::new(Some(thread)),
        }
    }

    pub fn state(&self) -> VmState {
        self.shared.state()
    }

    pub fn timeline(&self) -> Arc<Timeline> {
        self.shared.timeline.clone()
    }

    /// Park every vCPU (the guest's time stops; devices keep their state). Returns once no
    /// vCPU is in the guest.
    pub fn pause(&self) -> std::result::Result<(), ControlError> {
        let mut state = lock(&self.shared.state);
        let vcpus = match (*state, self.shared.vcpus.get()) {
            (VmState::Running, Some(v)) if self.shared.exit.reason().is_none() => v,
            (VmState::Paused, _) => return Ok(()),
            _ => return Err(ControlError::NotRunning(self.shared.state_locked(*state))),
        };
        vcpus.pause();
        *state = VmState::Paused;
        Ok(())
    }

    pub fn resume(&self) -> std::result::Result<(), ControlError> {
        let mut state = lock(&self.shared.state);
        let vcpus = match (*state, self.shared.vcpus.get()) {
            (VmState::Paused, Some(v)) if self.shared.exit.reason().is_none() => v,
            (VmState::Running, _) => return Ok(()),
            _ => return Err(ControlError::NotRunning(self.shared.state_locked(*state))),
        };
        vcpus.resume();
        *state = VmState::Running;
        Ok(())
    }

    /// Ask the guest to power off (the ACPI power button), and stop the VM if it has not
    /// ended `timeout` later. Returns at once; `wait` reports how it ended (`Poweroff` when
    /// the guest cooperated, `Stopped` when it had to be forced). Calling it again presses
    /// the button again and re-arms the one timer: the stop comes `timeout` after the latest
    /// call, whether that is sooner or later than before.
    pub fn shutdown(&self, timeout: Duration) -> std::result::Result<(), ControlError> {
        match self.state() {
            VmState::Stopping | VmState::Stopped => {
                return Err(ControlError::NotRunning(self.state()))
            }
            VmState::Paused => self.resume()?,
            VmState::Starting | VmState::Running => {}
        }
        self.shared.press_power_button();
        self.shared
            .arm_shutdown_timer(timeout)
            .map_err(|_| ControlError::NotRunning(self.state()))
    }

    /// End the VM now as a guest reboot would (a reset button): `wait` reports
    /// `VmExit::Reset`. zhitong does not restart guests; the caller starts a new VM.
    pub fn reset(&self) {
        self.shared.exit.request(VmExit::Reset);
    }

    /// End the VM now (no guest cooperation); `wait` reports `VmExit::Stopped`.
    pub fn stop(&self, reason: impl Into<String>) {
        self.shared.exit.request(VmExit::Stopped {
            reason: reason.into(),
        });
    }

    /// End the VM now because the process got `signal` (e.g. `libc::SIGTERM`); `wait`
    /// reports `VmExit::Signal`, whose `exit_status` is 128 + `signal`.
    pub fn stop_for_signal(&self, signal: i32) {
        self.shared.exit.request(VmExit::Signal { signal });
    }

    /// Install `kind`'s seccomp filter on the calling thread, a thread of the caller's own
    /// that serves this VM (an API server, a signal thread); a syscall it forbids ends this
    /// VM. Nothing happens when the VM's `security.seccomp` is off.
    pub fn confine(&self, kind: ThreadKind) -> std::result::Result<(), seccomp::SeccompError> {
        seccomp::apply(kind, self.shared.exit.seccomp())
    }

    /// Wait for the VM to end and everything it held to be released. Only the first call
    /// gets the outcome; later calls return an error at once.
    pub fn wait(&self) -> Result<VmExit> {
        // Taken out of the lock so a second caller is not blocked behind the join.
        let thread = lock(&self.thread).take();
        match thread {
            Some(thread) => thread.join().unwrap_or_else(|_| {
                Err(Error::Io {
                    what: "the VM thread",
                    source: std::io::Error::other("it panicked"),
                })
            }),
            None => Err(Error::Io {
                what: "the VM thread",
                source: std::io::Error::other("already joined"),
            }),
        }
    }
}

impl VmShared {
    /// `state()` for a caller already holding the state lock.
    fn state_locked(&self, state: VmState) -> VmState {
        match state {
            VmState::Running | VmState::Paused if self.exit.reason().is_some() => VmState::Stopping,
            other => other,
        }
    }
}

impl Drop for VmHandle {
    fn drop(&mut self) {
        if self
            .thread
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
        {
            self.stop("the VM handle was dropped");
            let _ = self.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handle_for(thread: impl FnOnce(&VmShared) -> Result<VmExit> + Send + 'static) -> VmHandle {
        let exit = Arc::new(ExitChannel::new().unwrap());
        let timeline = Arc::new(Timeline::new(std::time::Instant::now()));
        let shared = Arc::new(VmShared::new(exit, timeline));
        let vm = shared.clone();
        let thread = std::thread::spawn(move || {
            let result = thread(&vm);
            vm.set_state(VmState::Stopped);
            result
        });
        VmHandle::new(shared, thread)
    }

    /// A VM thread that runs until an exit is requested and reports it.
    fn until_exit(shared: &VmShared) -> Result<VmExit> {
        shared.set_state(VmState::Running);
        while !shared.exit.wait_timeout(Duration::from_secs(5)) {}
        Ok(shared.exit.reason().unwrap())
    }

    #[test]
    fn the_handle_can_be_shared_between_threads() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<VmHandle>();
    }

    #[test]
    fn another_thread_stops_the_vm_for_a_signal() {
        let handle = Arc::new(handle_for(until_exit));
        let signals = handle.clone();
        let t = std::thread::spawn(move || signals.stop_for_signal(libc::SIGTERM));
        let exit = handle.wait().unwrap();
        t.join().unwrap();
        assert_eq!(
            exit,
            VmExit::Signal {
                signal: libc::SIGTERM
            }
        );
        assert_eq!(exit.exit_status(), 143);
        assert_eq!(handle.state(), VmState::Stopped);
        assert!(
            handle.wait().is_err(),
            "only the first wait gets the outcome"
        );
    }

    #[test]
    fn stop_and_reset_are_reported_by_wait() {
        let handle = handle_for(until_exit);
        handle.stop("api");
        assert_eq!(
            handle.wait().unwrap(),
            VmExit::Stopped {
                reason: "api".into()
            }
        );
        let handle = handle_for(until_exit);
        handle.reset();
        assert_eq!(handle.wait().unwrap(), VmExit::Reset);
    }

    #[test]
    fn dropping_the_handle_stops_the_vm() {
        let (tx, rx) = std::sync::mpsc::channel();
        let handle = handle_for(move |shared| {
            let exit = until_exit(shared);
            tx.send(exit.as_ref().ok().cloned()).unwrap();
            exit
        });
        drop(handle);
        assert_eq!(
            rx.recv().unwrap(),
            Some(VmExit::Stopped {
                reason: "the VM handle was dropped".into()
            })
        );
    }

    /// Threads of this process named like the shutdown timer.
    fn shutdown_timer_threads() -> usize {
        std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
            .filter(|name| name.trim_end() == "shutdown-timer")
            .count()
    }

    #[test]
    fn shutdown_requests_share_one_timer_and_the_latest_counts() {
        let handle = handle_for(until_exit);
        handle.shutdown(Duration::from_secs(1)).unwrap();
        for _ in 0..50 {
            handle.shutdown(Duration::from_secs(600)).unwrap();
        }
        // A thread takes its name once it runs: give it (or them) time to.
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(shutdown_timer_threads(), 1);
        // Re-armed later: the first request's 1 s has passed and the VM still runs.
        std::thread::sleep(Duration::from_millis(1300));
        assert_eq!(handle.state(), VmState::Running);
        // Re-armed sooner: the sleeping timer is woken for the new deadline.
        let asked = Instant::now();
        handle.shutdown(Duration::from_secs(1)).unwrap();
        let exit = handle.wait().unwrap();
        let took = asked.elapsed();
        assert!(
            took >= Duration::from_secs(1) && took < Duration::from_secs(2),
            "{took:?}"
        );
        assert_eq!(
            exit,
            VmExit::Stopped {
                reason: "shutdown: the guest did not power off within 1s".into()
            }
        );
        // The timer went with the VM, and a stopped VM refuses to shut down.
        assert!(handle.shutdown(Duration::from_secs(1)).is_err());
        let gone = Instant::now();
        while shutdown_timer_threads() > 0 {
            assert!(
                gone.elapsed() < Duration::from_secs(1),
                "the timer outlived the VM"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
