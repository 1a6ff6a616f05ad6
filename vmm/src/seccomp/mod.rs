//! seccomp: each kind of thread zhitong runs gets a filter allowing only the syscalls (and
//! the ioctl numbers) that thread needs, installed by one call at the start of its body:
//!
//! ```ignore
//! seccomp::apply(ThreadKind::Vcpu, exit.seccomp())?;
//! ```
//!
//! A thread's filter applies to that thread (and threads it starts) only: no TSYNC, because
//! each kind needs a different list. A forbidden syscall traps (SIGSYS): the handler records
//! the syscall and the thread in the VM's [`Policy`], makes the call fail with EPERM and wakes
//! the control loop, which ends the VM; the VM's exit is then [`Violation`]. `Log` mode
//! allows everything but has the kernel log what the filters would have refused.
//! docs/security.md has the policy and why.

mod ioctls;
mod names;
mod rules;
mod trap;

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use seccompiler::{BpfProgram, SeccompAction, SeccompFilter};
use serde::{Deserialize, Serialize};
use vmm_sys_util::eventfd::EventFd;

pub use names::syscall_name;

/// Whether the filters are installed (`zhitong run --seccomp on|off|log`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SeccompMode {
    /// Forbidden syscalls end the VM.
    #[default]
    On,
    /// No filters.
    Off,
    /// Forbidden syscalls are allowed and logged by the kernel (SECCOMP_RET_LOG: the audit
    /// log, or the kernel log without auditd), to find what a filter lacks.
    Log,
}

impl FromStr for SeccompMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "on" => Ok(Self::On),
            "off" => Ok(Self::Off),
            "log" => Ok(Self::Log),
            _ => Err(format!("seccomp mode {s:?}: use on, off or log")),
        }
    }
}

impl fmt::Display for SeccompMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::On => "on",
            Self::Off => "off",
            Self::Log => "log",
        })
    }
}

/// The kinds of threads, one filter each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ThreadKind {
    /// The VM's own thread: the control loop, then the teardown of every device.
    Vm,
    /// A vCPU: KVM_RUN and the emulation of the devices its exits reach.
    Vcpu,
    /// The CLI's API server (`--api-socket`).
    Api,
    /// The CLI's signal thread (sigwait for SIGINT/SIGTERM).
    Signals,
    /// A thread that waits for a deadline and then requests an exit (run and shutdown timers).
    Timer,
    /// The thread that DMA-maps guest RAM beside the boot.
    DmaMap,
    /// Starts device workers (asked from vCPU threads, whose filter a thread started there
    /// would inherit).
    Launcher,
    /// A virtio block device's worker: the queue's requests on the image file.
    VirtioBlock,
    /// A virtio network device's worker: frames between its queues and its tap.
    VirtioNet,
    /// A virtio vsock device's worker: the queues and the host's Unix sockets.
    VirtioVsock,
}

impl ThreadKind {
    pub const ALL: [ThreadKind; 10] = [
        ThreadKind::Vm,
        ThreadKind::Vcpu,
        ThreadKind::Api,
        ThreadKind::Signals,
        ThreadKind::Timer,
        ThreadKind::DmaMap,
        ThreadKind::Launcher,
        ThreadKind::VirtioBlock,
        ThreadKind::VirtioNet,
        ThreadKind::VirtioVsock,
    ];
}

/// What went wrong, and on which thread (the thread's name: "vcpu0", "vm", "api"...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub thread: String,
    pub cause: Cause,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// The thread made this syscall, which its filter forbids.
    Syscall(i64),
    /// The thread's filter could not be installed (errno).
    Install(i32),
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.cause {
            Cause::Syscall(nr) => write!(
                f,
                "the {} thread made a syscall its seccomp filter forbids: {} ({nr}); the VM was stopped and its devices released: this is a bug in zhitong's filter or a sign the thread was subverted; report it (--seccomp log lets such calls through and has the kernel log them)",
                self.thread,
                syscall_name(nr).unwrap_or("unknown"),
            ),
            Cause::Install(errno) => write!(
                f,
                "cannot install the seccomp filter of the {} thread: {}; run on a kernel with seccomp filters, or with --seccomp off",
                self.thread,
                std::io::Error::from_raw_os_error(errno)
            ),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("cannot build the seccomp filter of the {kind:?} threads: {source}")]
    Build {
        kind: ThreadKind,
        #[source]
        source: seccompiler::Error,
    },
    #[error("this kernel has no seccomp filters ({0}); run on one built with CONFIG_SECCOMP_FILTER, or with --seccomp off")]
    Unsupported(std::io::Error),
    #[error("cannot install the SIGSYS handler that reports seccomp violations: {0}")]
    Handler(std::io::Error),
    #[error("{0}")]
    Install(Violation),
}

/// No violation recorded yet (`Policy::state`).
const CLEAR: u64 = u64::MAX;
/// In `Policy::state`: the low 32 bits are an errno, not a syscall number.
const INSTALL_FAILED: u64 = 1 << 62;

/// One VM's seccomp policy: its mode, the compiled filters, the names of the threads that
/// installed one, and the first violation. Violations are recorded from a signal handler,
/// so that is one atomic word (thread index << 32 | syscall) plus an eventfd write.
pub struct Policy {
    mode: SeccompMode,
    filters: Vec<(ThreadKind, BpfProgram)>,
    threads: Mutex<Vec<String>>,
    state: AtomicU64,
    /// Written when a violation is recorded (a duplicate of the VM's exit eventfd).
    wake: Option<EventFd>,
}

/// glibc's malloc gives threads arenas of their own, and the first time it shrinks one it
/// reads /proc/sys/vm/overcommit_memory: an openat no filter allows, on whichever thread
/// frees the memory (seen on a virtio worker's launcher at teardown). With one arena,
/// trimming is the main heap's brk, which every filter allows. Set before the VM's threads
/// start; threads that already have an arena keep it (the CLI starts none before).
fn one_malloc_arena() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt takes two integers; M_ARENA_MAX only caps arenas made from now on.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

impl Policy {
    /// Compile every kind's filter for `mode` and get the process ready to report violations.
    pub fn new(mode: SeccompMode) -> Result<Self, SeccompError> {
        let filters = match mode {
            SeccompMode::Off => Vec::new(),
            SeccompMode::On | SeccompMode::Log => {
                check_kernel_support()?;
                one_malloc_arena();
                if mode == SeccompMode::On {
                    trap::install_handler().map_err(SeccompError::Handler)?;
                }
                let action = match mode {
                    SeccompMode::Log => SeccompAction::Log,
                    _ => SeccompAction::Trap,
                };
                ThreadKind::ALL
                    .into_iter()
                    .map(|kind| Ok((kind, compile(kind, action.clone())?)))
                    .collect::<Result<_, SeccompError>>()?
            }
        };
        Ok(Self {
            mode,
            filters,
            threads: Mutex::new(Vec::new()),
            state: AtomicU64::new(CLEAR),
            wake: None,
        })
    }

    /// A policy that installs nothing.
    pub fn off() -> Self {
        Self::new(SeccompMode::Off).expect("an empty policy needs nothing")
    }

    pub fn mode(&self) -> SeccompMode {
        self.mode
    }

    /// Violations write `wake` (the VM's exit eventfd), so the control loop sees them.
    pub fn wake_with(mut self, wake: EventFd) -> Self {
        self.wake = Some(wake);
        self
    }

    /// The first violation, if a thread of this VM made one.
    pub fn violation(&self) -> Option<Violation> {
        let state = self.state.load(Ordering::SeqCst);
        if state == CLEAR {
            return None;
        }
        let index = ((state & !INSTALL_FAILED) >> 32) as usize;
        let low = (state & 0xffff_ffff) as u32;
        let thread = self.threads.lock().unwrap().get(index).cloned();
        Some(Violation {
            thread: thread.unwrap_or_else(|| "unnamed".into()),
            cause: if state & INSTALL_FAILED != 0 {
                Cause::Install(low as i32)
            } else {
                Cause::Syscall(i64::from(low))
            },
        })
    }

    /// Record a violation (the first one wins) and wake the control loop. Async-signal-safe:
    /// one atomic and one write(2).
    fn record(&self, thread: u32, low: u32, install: bool) {
        let flag = if install { INSTALL_FAILED } else { 0 };
        let state = flag | (u64::from(thread) << 32) | u64::from(low);
        let _ = self
            .state
            .compare_exchange(CLEAR, state, Ordering::SeqCst, Ordering::SeqCst);
        if let Some(wake) = &self.wake {
            let one = 1u64.to_ne_bytes();
            // SAFETY: writes 8 bytes from a live buffer to an fd this policy owns.
            unsafe {
                libc::write(
                    std::os::fd::AsRawFd::as_raw_fd(wake),
                    one.as_ptr().cast(),
                    8,
                )
            };
        }
    }

    /// Remember the calling thread's name; its index is what a violation records.
    fn register_thread(&self, kind: ThreadKind) -> u32 {
        let name = std::thread::current()
            .name()
            .map_or_else(|| format!("{kind:?}").to_lowercase(), str::to_owned);
        let mut threads = self.threads.lock().unwrap();
        threads.push(name);
        (threads.len() - 1) as u32
    }
}

/// Install `kind`'s filter on the calling thread (nothing when the policy is off). A thread
/// whose filter cannot be installed records that as the VM's violation, so the VM ends even
/// if the caller only returns.
pub fn apply(kind: ThreadKind, policy: &Arc<Policy>) -> Result<(), SeccompError> {
    let Some((_, program)) = policy.filters.iter().find(|(k, _)| *k == kind) else {
        return Ok(());
    };
    let index = policy.register_thread(kind);
    trap::arm(policy, index);
    seccompiler::apply_filter(program).map_err(|e| {
        let errno = match &e {
            seccompiler::Error::Prctl(io) | seccompiler::Error::Seccomp(io) => {
                io.raw_os_error().unwrap_or(libc::EINVAL)
            }
            _ => libc::EINVAL,
        };
        policy.record(index, errno as u32, true);
        SeccompError::Install(policy.violation().expect("just recorded"))
    })
}

/// The BPF program of `kind`'s allow-list; anything else gets `mismatch`.
fn compile(kind: ThreadKind, mismatch: SeccompAction) -> Result<BpfProgram, SeccompError> {
    let build = |source| SeccompError::Build { kind, source };
    let filter = SeccompFilter::new(
        rules::allowed(kind).map_err(|e| build(e.into()))?,
        mismatch,
        SeccompAction::Allow,
        seccompiler::TargetArch::x86_64,
    )
    .map_err(|e| build(e.into()))?;
    filter
        .try_into()
        .map_err(|e: seccompiler::BackendError| build(e.into()))
}

/// Filter mode needs CONFIG_SECCOMP_FILTER; PR_GET_SECCOMP fails without CONFIG_SECCOMP.
fn check_kernel_support() -> Result<(), SeccompError> {
    // SAFETY: PR_GET_SECCOMP takes no pointers.
    if unsafe { libc::prctl(libc::PR_GET_SECCOMP) } < 0 {
        return Err(SeccompError::Unsupported(std::io::Error::last_os_error()));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
