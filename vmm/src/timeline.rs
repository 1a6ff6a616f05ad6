//! The boot timeline: milliseconds from process start to each milestone.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde::ser::{Serialize, SerializeMap, Serializer};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Milestone {
    VmCreated,
    MemoryReady,
    KernelLoaded,
    /// Passed-through devices opened and placed (only with --device); guest RAM's DMA
    /// mapping starts then, beside the boot.
    DevicesReady,
    FirstVcpuEntry,
    /// Guest RAM DMA-mapped for the devices (only with --device): bus mastering may start.
    DmaMapped,
    GuestMarker,
    Exit,
}

impl Milestone {
    pub const ALL: [Milestone; 8] = [
        Milestone::VmCreated,
        Milestone::MemoryReady,
        Milestone::KernelLoaded,
        Milestone::DevicesReady,
        Milestone::FirstVcpuEntry,
        Milestone::DmaMapped,
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
            Milestone::DmaMapped => "dma_mapped_ms",
            Milestone::GuestMarker => "guest_marker_ms",
            Milestone::Exit => "exit_ms",
        }
    }
}

/// Each milestone is recorded once (the first time); later marks are ignored.
#[derive(Debug)]
pub struct Timeline {
    start: Instant,
    marks: [OnceLock<Duration>; 8],
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
    /// milestones that were never reached: `{"vm_created_ms":106.1,...,"exit_ms":null}`.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a map of numbers and nulls always serializes")
    }
}

/// The `to_json` object: a map so the keys keep the boot order.
impl Serialize for Timeline {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(Milestone::ALL.len()))?;
        for m in Milestone::ALL {
            map.serialize_entry(m.key(), &self.get(m).map(tenths_of_ms))?;
        }
        map.end()
    }
}

/// Milliseconds rounded to 0.1 exactly as `{:.1}` rounds them (ties included), so the JSON
/// reads as it always has: the shortest form of the parsed value is those same digits.
fn tenths_of_ms(d: Duration) -> f64 {
    let text = format!("{:.1}", d.as_secs_f64() * 1000.0);
    text.parse().expect("{:.1} of a finite number parses")
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
    fn json_renders_tenths_of_ms_and_nulls() {
        let t = Timeline::new(Instant::now());
        let set = |m: Milestone, d: Duration| t.marks[m as usize].set(d).unwrap();
        set(Milestone::VmCreated, Duration::from_micros(106_149));
        set(Milestone::MemoryReady, Duration::from_millis(211));
        set(Milestone::KernelLoaded, Duration::from_nanos(50));
        set(Milestone::FirstVcpuEntry, Duration::from_micros(1_650_250));
        set(Milestone::Exit, Duration::from_secs(3 * 3600));
        assert_eq!(
            t.to_json(),
            "{\"vm_created_ms\":106.1,\"memory_ready_ms\":211.0,\"kernel_loaded_ms\":0.0,\
             \"devices_ready_ms\":null,\"first_vcpu_entry_ms\":1650.2,\
             \"dma_mapped_ms\":null,\"guest_marker_ms\":null,\"exit_ms\":10800000.0}"
        );
    }

    /// The rounding is `{:.1}`'s, for every value the old `format!` rendering produced.
    #[test]
    fn json_numbers_are_the_old_format_digits() {
        for us in (0..2_000_000u64).step_by(7).chain([u64::from(u32::MAX)]) {
            let ms = Duration::from_micros(us).as_secs_f64() * 1000.0;
            let old = format!("{ms:.1}");
            let new = serde_json::to_string(&tenths_of_ms(Duration::from_micros(us))).unwrap();
            assert_eq!(new, old, "{us} us");
        }
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
