//! A running VM seen from the caller: its state, pause/resume, stop, and waiting for the end.

use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use vmm_sys_util::eventfd::EventFd;

use crate::error::{Error, Result};
use crate::exit::{ExitChannel, VmExit};
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
}

impl VmShared {
    pub fn new(exit: Arc<ExitChannel>, timeline: Arc<Timeline>) -> Self {
        Self {
            exit,
            timeline,
            state: Mutex::new(VmState::Starting),
            vcpus: OnceLock::new(),
            power_button: OnceLock::new(),
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
        *self.state.lock().unwrap() = state;
    }

    pub fn state(&self) -> VmState {
        let state = *self.state.lock().unwrap();
        self.state_locked(state)
    }
}

/// A started VM. Dropping the handle without `wait` stops the VM and waits for it.
pub struct VmHandle {
    shared: Arc<VmShared>,
    thread: Option<JoinHandle<Result<VmExit>>>,
}

impl VmHandle {
    pub(crate) fn new(shared: Arc<VmShared>, thread: JoinHandle<Result<VmExit>>) -> Self {
        Self {
            shared,
            thread: Some(thread),
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
        let mut state = self.shared.state.lock().unwrap();
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
        let mut state = self.shared.state.lock().unwrap();
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
    /// the guest cooperated, `Stopped` when it had to be forced).
    pub fn shutdown(&self, timeout: Duration) -> std::result::Result<(), ControlError> {
        match self.state() {
            VmState::Stopping | VmState::Stopped => {
                return Err(ControlError::NotRunning(self.state()))
            }
            VmState::Paused => self.resume()?,
            VmState::Starting | VmState::Running => {}
        }
        self.shared.press_power_button();
        let exit = self.shared.exit.clone();
        std::thread::Builder::new()
            .name("shutdown-timer".into())
            .spawn(move || {
                if !exit.wait_timeout(timeout) {
                    exit.request(VmExit::Stopped {
                        reason: format!(
                            "shutdown: the guest did not power off within {}s",
                            timeout.as_secs()
                        ),
                    });
                }
            })
            .map(|_| ())
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

    /// Wait for the VM to end and everything it held to be released.
    pub fn wait(mut self) -> Result<VmExit> {
        self.join()
    }

    fn join(&mut self) -> Result<VmExit> {
        match self.thread.take() {
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
        if self.thread.is_some() {
            self.stop("the VM handle was dropped");
            let _ = self.join();
        }
    }
}
