//! The SIGSYS handler: a forbidden syscall (SECCOMP_RET_TRAP) is recorded in the policy of
//! the VM the thread belongs to, and fails with EPERM instead of running.
//!
//! Only async-signal-safe work happens in the handler: it reads a thread-local that needs no
//! initialisation, stores one atomic and writes an eventfd (`Policy::record`).

use std::cell::{Cell, RefCell};
use std::ptr;
use std::sync::{Arc, Once};

use super::Policy;

/// `si_code` of a SIGSYS raised by seccomp.
const SYS_SECCOMP: libc::c_int = 1;
/// Offset of `si_syscall` in x86_64's siginfo_t: signo, errno, code and padding (16 bytes),
/// then the SIGSYS member of the union: `void *_call_addr; int _syscall; unsigned _arch`.
const SI_SYSCALL_OFFSET: usize = 24;

thread_local! {
    /// The policy this thread reports to and its index there. Plain data with a const
    /// initialiser: reading it in a signal handler allocates nothing and runs no code.
    static ARMED: Cell<(*const Policy, u32)> = const { Cell::new((ptr::null(), 0)) };
    /// Keeps that policy alive while the thread runs; clears `ARMED` first when the thread
    /// ends.
    static KEEP: RefCell<Option<Keep>> = const { RefCell::new(None) };
}

struct Keep(#[allow(dead_code)] Arc<Policy>);

impl Drop for Keep {
    fn drop(&mut self) {
        ARMED.with(|a| a.set((ptr::null(), 0)));
    }
}

/// Violations on the calling thread go to `policy` from now on.
pub fn arm(policy: &Arc<Policy>, index: u32) {
    KEEP.with(|k| {
        ARMED.with(|a| a.set((Arc::as_ptr(policy), index)));
        *k.borrow_mut() = Some(Keep(policy.clone()));
    });
}

/// Install the process-wide SIGSYS handler (once).
pub fn install_handler() -> std::io::Result<()> {
    static ONCE: Once = Once::new();
    let mut result = Ok(());
    ONCE.call_once(|| {
        result = vmm_sys_util::signal::register_signal_handler(libc::SIGSYS, on_sigsys)
            .map_err(|e| std::io::Error::from_raw_os_error(e.errno()));
    });
    result
}

extern "C" fn on_sigsys(_: libc::c_int, info: *mut libc::siginfo_t, context: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo and ucontext to an SA_SIGINFO handler; for a
    // seccomp SIGSYS the syscall number is at SI_SYSCALL_OFFSET. Setting RAX is how the
    // trapped syscall returns: it did not run, so it fails with EPERM.
    let nr = unsafe {
        if (*info).si_code != SYS_SECCOMP {
            return;
        }
        let nr = ptr::read(
            info.cast::<u8>()
                .add(SI_SYSCALL_OFFSET)
                .cast::<libc::c_int>(),
        );
        let context = context.cast::<libc::ucontext_t>();
        (*context).uc_mcontext.gregs[libc::REG_RAX as usize] = -i64::from(libc::EPERM);
        nr
    };
    let (policy, index) = ARMED.with(Cell::get);
    // SAFETY: ARMED is only set while KEEP holds the policy alive.
    if let Some(policy) = unsafe { policy.as_ref() } {
        policy.record(index, nr as u32, false);
    }
}
