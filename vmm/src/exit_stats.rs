//! Per-vCPU exit statistics, logged at debug level when the vCPU stops: how many exits of
//! each kind, how long their handlers took, and the addresses that cost the most. This is
//! where to look when a guest boots slowly.
//!
//! The guest chooses the addresses, so the per-place table is bounded: after
//! [`MAX_PLACES`] distinct places, further new ones are counted together as "other".

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Distinct (kind, address) places tracked per vCPU: a few KiB at most.
pub const MAX_PLACES: usize = 256;

#[derive(Default)]
pub struct ExitStats {
    by_place: HashMap<(&'static str, u64), (u64, Duration)>,
    /// Exits at places beyond the first `MAX_PLACES`.
    other: (u64, Duration),
    total: u64,
}

impl ExitStats {
    /// Record one exit of `kind` at `addr` (a port, or an MMIO page) that started at `start`.
    pub fn record(&mut self, kind: &'static str, addr: u64, start: Instant) {
        let full = self.by_place.len() >= MAX_PLACES;
        let entry = match self.by_place.get_mut(&(kind, addr)) {
            Some(entry) => entry,
            None if full => &mut self.other,
            None => self.by_place.entry((kind, addr)).or_default(),
        };
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
        let other = match self.other {
            (0, _) => String::new(),
            (n, t) => format!(
                "; {n} more at other places in {:.1} ms",
                t.as_secs_f64() * 1e3
            ),
        };
        log::debug!(
            "vcpu{vcpu}: {} I/O exits; costliest: {}{other}",
            self.total,
            top.join(", ")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_guest_touching_many_pages_cannot_grow_the_table() {
        let mut stats = ExitStats::default();
        let now = Instant::now();
        for page in 0..200_000u64 {
            stats.record("mmio-read", page << 12, now);
        }
        stats.record("mmio-read", 0, now);
        assert_eq!(stats.by_place.len(), MAX_PLACES);
        assert_eq!(stats.total(), 200_001);
        assert_eq!(stats.other.0, 200_000 - MAX_PLACES as u64);
        assert_eq!(stats.by_place[&("mmio-read", 0)].0, 2);
    }
}
