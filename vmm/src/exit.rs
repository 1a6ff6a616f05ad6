//! How a VM ends, and the channel through which vCPUs, devices and the caller say so.

use std::sync::{Arc, Condvar, Mutex};

use crate::sync::lock;
use std::time::Duration;

use vmm_sys_util::eventfd::EventFd;

use crate::seccomp;

/// Why the VM stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmExit {
    /// The guest powered off (ACPI S5).
    Poweroff,
    /// The guest rebooted (ACPI reset register, i8042, or a KVM reset event). zhitong does
    /// not restart guests: a reboot ends the run like a poweroff.
    Reset,
    /// The guest chose its exit status by writing it to the guest exit port
    /// (`arch::layout::GUEST_EXIT_PORT`, 0x4f4).
    GuestStatus(u8),
    /// The VM ran longer than its `VmConfig::timeout` and was stopped.
    Timeout(Duration),
    /// The caller asked the VM to stop (`VmHandle::stop`, or a shutdown the guest ignored).
    Stopped { reason: String },
    /// The caller stopped the VM because the process got this signal
    /// (`VmHandle::stop_for_signal`; SIGINT/SIGTERM in the CLI).
    Signal { signal: i32 },
    /// The guest showed no sign of life in time.
    BootTimeout(Duration),
    /// A vCPU hit a condition the VM cannot continue from (triple fault, KVM error).
    Crashed { vcpu: u8, reason: String },
    /// A VMM thread panicked (a zhitong bug): the VM was ended and everything released.
    Panicked { thread: String, message: String },
    /// A thread of the VM made a syscall its seccomp filter forbids (or could not install
    /// its filter). Reported whenever it happened, even after another exit was requested.
    Seccomp(seccomp::Violation),
}

impl VmExit {
    /// Whether this is a normal end of the guest's life.
    pub fn is_clean(&self) -> bool {
        matches!(
            self,
            VmExit::Poweroff | VmExit::Reset | VmExit::GuestStatus(0)
        )
    }

    /// The exit status of a process whose VM ended this way (what `zhitong run` exits with):
    /// 0 for a poweroff or reboot, the guest's own status, 124 for the run timeout (like
    /// timeout(1)), 128+N for signal N (as shells report it), 1 for every other stop or
    /// failure.
    pub fn exit_status(&self) -> i32 {
        match self {
            VmExit::Poweroff | VmExit::Reset => 0,
            VmExit::GuestStatus(status) => i32::from(*status),
            VmExit::Timeout(_) => 124,
            VmExit::Signal { signal } => 128 + signal,
            VmExit::Stopped { .. }
            | VmExit::BootTimeout(_)
            | VmExit::Crashed { .. }
            | VmExit::Panicked { .. }
            | VmExit::Seccomp(_) => 1,
        }
    }
}

/// What a caught panic said, for a one-line report.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

/// First writer wins: the reason is kept and the event fd is signalled. A seccomp violation
/// (recorded in the VM's policy from a signal handler, which signals the event fd too)
/// overrides the reason.
pub struct ExitChannel {
    reason: Mutex<Option<VmExit>>,
    requested: Condvar,
    evt: EventFd,
    seccomp: Arc<seccomp::Policy>,
}

impl ExitChannel {
    /// A channel whose VM installs no seccomp filters.
    pub fn new() -> std::io::Result<Self> {
        Self::with_seccomp(seccomp::Policy::off())
    }

    /// A channel whose VM's threads install `policy`'s filters and report violations here.
    pub fn with_seccomp(policy: seccomp::Policy) -> std::io::Result<Self> {
        let evt = EventFd::new(libc::EFD_NONBLOCK)?;
        Ok(Self {
            reason: Mutex::new(None),
            requested: Condvar::new(),
            seccomp: Arc::new(policy.wake_with(evt.try_clone()?)),
            evt,
        })
    }

    /// The policy the VM's threads pass to `seccomp::apply`.
    pub fn seccomp(&self) -> &Arc<seccomp::Policy> {
        &self.seccomp
    }

    /// How the VM ended: a seccomp violation if there was one (even one made while tearing
    /// down, after `outcome` was decided), else `outcome`.
    pub fn outcome(&self, outcome: crate::Result<VmExit>) -> crate::Result<VmExit> {
        match self.seccomp.violation() {
            Some(v) => Ok(VmExit::Seccomp(v)),
            None => outcome,
        }
    }

    pub fn request(&self, exit: VmExit) {
        let mut reason = lock(&self.reason);
        if reason.is_none() {
            log::debug!("VM exit requested: {exit:?}");
            *reason = Some(exit);
            let _ = self.evt.write(1);
            self.requested.notify_all();
        }
    }

    /// Wait up to `timeout` for an exit to be requested; true if one was.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        let reason = lock(&self.reason);
        let (reason, _) = self
            .requested
            .wait_timeout_while(reason, timeout, |r| r.is_none())
            .unwrap_or_else(|e| e.into_inner());
        reason.is_some()
    }

    pub fn reason(&self) -> Option<VmExit> {
        if let Some(v) = self.seccomp.violation() {
            // Make it the recorded reason too, so that waiters (timers) wake.
            self.request(VmExit::Seccomp(v.clone()));
            return Some(VmExit::Seccomp(v));
        }
        lock(&self.reason).clone()
    }

    pub fn event_fd(&self) -> &EventFd {
        &self.evt
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_reason_wins() {
        let ch = ExitChannel::new().unwrap();
        assert_eq!(ch.reason(), None);
        ch.request(VmExit::Poweroff);
        ch.request(VmExit::Crashed {
            vcpu: 0,
            reason: "late".into(),
        });
        assert_eq!(ch.reason(), Some(VmExit::Poweroff));
        assert_eq!(ch.event_fd().read().unwrap(), 1);
    }

    #[test]
    fn wait_timeout_sees_a_request_from_another_thread() {
        let ch = std::sync::Arc::new(ExitChannel::new().unwrap());
        assert!(!ch.wait_timeout(Duration::from_millis(5)));
        let other = ch.clone();
        let t = std::thread::spawn(move || other.request(VmExit::Reset));
        assert!(ch.wait_timeout(Duration::from_secs(5)));
        t.join().unwrap();
    }

    /// A violation on one of the VM's threads wakes the loop and becomes the exit, even
    /// over a reason requested before it.
    #[test]
    fn a_seccomp_violation_overrides_the_reason() {
        let policy = seccomp::Policy::new(seccomp::SeccompMode::On).unwrap();
        let ch = std::sync::Arc::new(ExitChannel::with_seccomp(policy).unwrap());
        ch.request(VmExit::Poweroff);
        let _ = ch.event_fd().read();
        let thread = ch.clone();
        std::thread::Builder::new()
            .name("vcpu7".into())
            .spawn(move || {
                seccomp::apply(seccomp::ThreadKind::Vcpu, thread.seccomp()).unwrap();
                // SAFETY: socket(2) takes no pointers; the vCPU filter refuses it.
                assert_eq!(
                    unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) },
                    -1
                );
            })
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(ch.event_fd().read().unwrap(), 1, "the loop is woken");
        let Some(VmExit::Seccomp(v)) = ch.reason() else {
            panic!("{:?}", ch.reason())
        };
        assert_eq!(v.thread, "vcpu7");
        assert_eq!(
            ch.outcome(Ok(VmExit::Poweroff)).unwrap(),
            VmExit::Seccomp(v.clone())
        );
        assert_eq!(VmExit::Seccomp(v).exit_status(), 1);
    }

    #[test]
    fn panics_are_failures_with_their_message() {
        let caught = std::panic::catch_unwind(|| panic!("boom {}", 7)).unwrap_err();
        assert_eq!(panic_message(caught.as_ref()), "boom 7");
        let caught = std::panic::catch_unwind(|| panic!("static")).unwrap_err();
        assert_eq!(panic_message(caught.as_ref()), "static");
        let exit = VmExit::Panicked {
            thread: "vcpu0".into(),
            message: "boom".into(),
        };
        assert_eq!(exit.exit_status(), 1);
        assert!(!exit.is_clean());
    }

    #[test]
    fn a_poisoned_channel_still_works() {
        let ch = std::sync::Arc::new(ExitChannel::new().unwrap());
        let other = ch.clone();
        let _ = std::thread::spawn(move || {
            let _guard = other.reason.lock().unwrap();
            panic!("poison it");
        })
        .join();
        assert!(ch.reason.is_poisoned());
        ch.request(VmExit::Poweroff);
        assert_eq!(ch.reason(), Some(VmExit::Poweroff));
        assert!(ch.wait_timeout(Duration::ZERO));
    }

    #[test]
    fn clean_exits() {
        assert!(VmExit::Poweroff.is_clean());
        assert!(VmExit::Reset.is_clean());
        assert!(VmExit::GuestStatus(0).is_clean());
        assert!(!VmExit::GuestStatus(3).is_clean());
        assert!(!VmExit::BootTimeout(Duration::from_secs(1)).is_clean());
        assert!(!VmExit::Signal {
            signal: libc::SIGTERM
        }
        .is_clean());
    }

    #[test]
    fn exit_statuses() {
        let secs = Duration::from_secs;
        for (exit, status) in [
            (VmExit::Poweroff, 0),
            (VmExit::Reset, 0),
            (VmExit::GuestStatus(0), 0),
            (VmExit::GuestStatus(3), 3),
            (VmExit::GuestStatus(255), 255),
            (VmExit::Timeout(secs(20)), 124),
            (
                VmExit::Stopped {
                    reason: "shutdown: the guest did not power off within 30s".into(),
                },
                1,
            ),
            (
                VmExit::Signal {
                    signal: libc::SIGINT,
                },
                130,
            ),
            (
                VmExit::Signal {
                    signal: libc::SIGTERM,
                },
                143,
            ),
            (VmExit::BootTimeout(secs(60)), 1),
            (
                VmExit::Crashed {
                    vcpu: 1,
                    reason: "triple fault".into(),
                },
                1,
            ),
        ] {
            assert_eq!(exit.exit_status(), status, "{exit:?}");
        }
    }
}
