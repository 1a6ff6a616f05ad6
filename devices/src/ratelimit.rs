//! Rate-limited logging for what a guest can trigger at will (BAR writes outside the windows,
//! sleep-state writes, MSI-X misuse, a console that stopped taking output): a guest looping on
//! it must not flood the VMM's log. Each call site may log [`BURST`] messages per [`PERIOD`];
//! the first message after a quiet spell says how many were suppressed.

use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const BURST: u32 = 10;
pub const PERIOD: Duration = Duration::from_secs(10);

/// The budget of one call site (a `static` made by [`limited!`](crate::limited)).
pub struct LogLimit {
    window: Mutex<Window>,
}

struct Window {
    start: Option<Instant>,
    logged: u32,
    suppressed: u64,
}

impl LogLimit {
    pub const fn new() -> Self {
        Self {
            window: Mutex::new(Window {
                start: None,
                logged: 0,
                suppressed: 0,
            }),
        }
    }

    /// Whether a message may be logged now: `Some(n)` with the number suppressed since the
    /// last one that was, `None` when over budget.
    pub fn check(&self) -> Option<u64> {
        self.check_at(Instant::now())
    }

    fn check_at(&self, now: Instant) -> Option<u64> {
        let mut w = self.window.lock().unwrap_or_else(|e| e.into_inner());
        if w.start
            .is_none_or(|start| now.duration_since(start) >= PERIOD)
        {
            w.start = Some(now);
            w.logged = 0;
        }
        if w.logged < BURST {
            w.logged += 1;
            Some(std::mem::take(&mut w.suppressed))
        } else {
            w.suppressed += 1;
            None
        }
    }
}

impl Default for LogLimit {
    fn default() -> Self {
        Self::new()
    }
}

/// `log::$level!` for guest-triggered events, limited per call site (see the module docs):
/// `limited!(warn, "{}: BAR {} left unmapped", name, index)`.
#[macro_export]
macro_rules! limited {
    ($level:ident, $($arg:tt)+) => {{
        static LIMIT: $crate::ratelimit::LogLimit = $crate::ratelimit::LogLimit::new();
        if let Some(suppressed) = LIMIT.check() {
            if suppressed > 0 {
                log::$level!(
                    "{} ({suppressed} more like this suppressed)",
                    format_args!($($arg)+)
                );
            } else {
                log::$level!($($arg)+);
            }
        }
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_silence_then_a_count() {
        let limit = LogLimit::new();
        let t0 = Instant::now();
        for _ in 0..BURST {
            assert_eq!(limit.check_at(t0), Some(0));
        }
        for i in 0..1000 {
            assert_eq!(limit.check_at(t0 + Duration::from_millis(i)), None);
        }
        assert_eq!(limit.check_at(t0 + PERIOD), Some(1000));
        assert_eq!(limit.check_at(t0 + PERIOD), Some(0));
    }

    #[test]
    fn the_macro_logs_at_most_a_burst() {
        // Counting what reaches the logger needs a global logger; the budget is what matters:
        // a loop of a million calls returns quickly and takes no memory.
        for _ in 0..1_000_000 {
            crate::limited!(warn, "guest did {}", "something");
        }
    }
}
