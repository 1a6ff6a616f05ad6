//! SIGINT/SIGTERM: blocked in every thread and received by one thread with sigwait, which
//! asks the VM to stop; the VMM then tears down normally.

use std::io;

const STOP_SIGNALS: [(libc::c_int, &str); 2] =
    [(libc::SIGINT, "SIGINT"), (libc::SIGTERM, "SIGTERM")];

pub struct BlockedSignals(libc::sigset_t);

/// Block the stop signals in the calling thread (and every thread it creates afterwards).
pub fn block_stop_signals() -> io::Result<BlockedSignals> {
    // SAFETY: sigset_t is plain data initialised by sigemptyset before use.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for (sig, _) in STOP_SIGNALS {
            libc::sigaddset(&mut set, sig);
        }
        let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        Ok(BlockedSignals(set))
    }
}

/// Wait for a stop signal on a thread of its own and call `stop` with its number; that
/// thread first calls `confine` (which installs its seccomp filter).
pub fn forward_to(
    signals: BlockedSignals,
    confine: impl FnOnce() + Send + 'static,
    stop: impl Fn(libc::c_int) + Send + 'static,
) {
    let set = signals.0;
    let spawned = std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            confine();
            loop {
                let mut sig: libc::c_int = 0;
                // SAFETY: `set` is a valid signal set and `sig` a valid out pointer.
                if unsafe { libc::sigwait(&set, &mut sig) } == 0
                    && STOP_SIGNALS.iter().any(|(s, _)| *s == sig)
                {
                    stop(sig);
                }
            }
        });
    if let Err(e) = spawned {
        log::warn!("no signal thread ({e}); SIGINT/SIGTERM will not stop the guest");
    }
}

/// The signal's name as the stderr lines print it ("SIGTERM").
pub fn name(signal: libc::c_int) -> String {
    STOP_SIGNALS
        .iter()
        .find(|(s, _)| *s == signal)
        .map_or_else(|| format!("signal {signal}"), |(_, name)| name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(name(libc::SIGINT), "SIGINT");
        assert_eq!(name(libc::SIGTERM), "SIGTERM");
        assert_eq!(name(libc::SIGUSR1), format!("signal {}", libc::SIGUSR1));
    }
}
