//! The boot timeline: milliseconds from process start to each milestone.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Milestone {
    VmCreated,
    MemoryReady,
    KernelLoaded,
    /// Passed-through devices opened and guest RAM DMA-mapped (only with --device).
    DevicesReady,
    FirstVcpuEntry,
    GuestMarker,
    Exit,
}

impl Milestone {
    pub const ALL: [Milestone; 7] = [
        Milestone::VmCreated,
        Milestone::MemoryReady,
        Milestone::KernelLoaded,
        Milestone::DevicesReady,
        Milestone::FirstVcpuEntry,
        Milestone::GuestMarker,
        Milestone::Exit,
    ];

    pub fn key(self) -> &'static str {
        match self {
            Milestone::VmCreated => "vm_created_ms",
            Milestone::MemoryReady => "memory_ready_ms",
            Milestone::KernelLoaded => "kernel_loaded_ms",
            Milestone::DevicesReady => "devices_ready_ms",
            Milestone::FirstVcpuEntry => "first_vcpu_entry_ms",
            Milestone::GuestMarker => "guest_marker_ms",
            Milestone::Exit => "exit_ms",
        }
    }
}

/// Each milestone is recorded once (the first time); later marks are ignored.
#[derive(Debug)]
pub struct Timeline {
    start: Instant,
    marks: [OnceLock<Duration>; 7],
}

impl Timeline {
    /// `start` is the process start (or whatever the caller counts from).
    pub fn new(start: Instant) -> Self {
        Self {
            start,
            marks: Default::default(),
        }
    }

    pub fn mark(&self, m: Milestone) {
        let _ = self.marks[m as usize].set(self.start.elapsed());
    }

    pub fn get(&self, m: Milestone) -> Option<Duration> {
        self.marks[m as usize].get().copied()
    }

    /// One JSON object, milestones in order, milliseconds with 0.1 ms resolution, null for
    /// milestones that were never reached.
    pub fn to_json(&self) -> String {
        let fields: Vec<String> = Milestone::ALL
            .iter()
            .map(|&m| match self.get(m) {
                Some(d) => format!("\"{}\":{:.1}", m.key(), d.as_secs_f64() * 1000.0),
                None => format!("\"{}\":null", m.key()),
            })
            .collect();
        format!("{{{}}}", fields.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_has_every_milestone_in_order() {
        let t = Timeline::new(Instant::now());
        t.mark(Milestone::VmCreated);
        t.mark(Milestone::Exit);
        let json = t.to_json();
        assert!(json.starts_with("{\"vm_created_ms\":"), "{json}");
        assert!(json.contains("\"guest_marker_ms\":null"), "{json}");
        let positions: Vec<usize> = Milestone::ALL
            .iter()
            .map(|m| json.find(m.key()).unwrap())
            .collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn first_mark_wins() {
        let t = Timeline::new(Instant::now() - Duration::from_millis(5));
        t.mark(Milestone::GuestMarker);
        let first = t.get(Milestone::GuestMarker).unwrap();
        std::thread::sleep(Duration::from_millis(2));
        t.mark(Milestone::GuestMarker);
        assert_eq!(t.get(Milestone::GuestMarker), Some(first));
        assert!(first >= Duration::from_millis(5));
    }
}
