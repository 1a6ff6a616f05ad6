//! Per-vCPU exit statistics, logged at debug level when the vCPU stops: how many exits of
//! each kind, how long their handlers took, and the addresses that cost the most. This is
//! where to look when a guest boots slowly.

use std::collections::HashMap;
use std::time::{Duration, Instant};

#[derive(Default)]
pub struct ExitStats {
    by_place: HashMap<(&'static str, u64), (u64, Duration)>,
    total: u64,
}

impl ExitStats {
    /// Record one exit of `kind` at `addr` (a port, or an MMIO page) that started at `start`.
    pub fn record(&mut self, kind: &'static str, addr: u64, start: Instant) {
        let entry = self.by_place.entry((kind, addr)).or_default();
        entry.0 += 1;
        entry.1 += start.elapsed();
        self.total += 1;
    }

    /// Exits recorded so far.
    pub fn total(&self) -> u64 {
        self.total
    }

    pub fn log(&self, vcpu: u8) {
        if !log::log_enabled!(log::Level::Debug) {
            return;
        }
        let mut places: Vec<_> = self.by_place.iter().collect();
        places.sort_by_key(|(_, (_, time))| std::cmp::Reverse(*time));
        let top: Vec<String> = places
            .iter()
            .take(8)
            .map(|((kind, addr), (n, t))| {
                format!("{kind} {addr:#x}: {n} in {:.1} ms", t.as_secs_f64() * 1e3)
            })
            .collect();
        log::debug!(
            "vcpu{vcpu}: {} I/O exits; costliest: {}",
            self.total,
            top.join(", ")
        );
    }
}
