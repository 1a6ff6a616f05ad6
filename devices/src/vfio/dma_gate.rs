//! Guest RAM's IOMMU mapping may still be under way when the guest starts (the VMM maps it
//! beside the boot). No passed-through device may DMA before it is done, and a device can
//! DMA only once its driver enables bus mastering (the VMM clears it at open): so the
//! guest's write enabling bus mastering waits at this gate until the mapping is complete.
//! If the mapping failed (or was given up because the VM is stopping) the write goes on
//! without bus mastering, and the VM ends with the mapping's error.

use std::sync::{Condvar, Mutex};
use std::time::Instant;

use crate::pci::config::COMMAND_BUS_MASTER;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Mapping,
    Mapped,
    Failed,
}

/// Open once guest RAM is DMA-mapped; failed if it never will be.
#[derive(Debug)]
pub struct DmaGate {
    state: Mutex<State>,
    changed: Condvar,
}

impl DmaGate {
    /// A gate that waits for `open` or `fail`.
    pub fn pending() -> Self {
        Self {
            state: Mutex::new(State::Mapping),
            changed: Condvar::new(),
        }
    }

    /// Guest RAM is mapped: let every waiter through, now and later.
    pub fn open(&self) {
        self.set(State::Mapped);
    }

    /// Guest RAM will not be (fully) mapped: waiters go on without bus mastering.
    pub fn fail(&self) {
        self.set(State::Failed);
    }

    fn set(&self, to: State) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if *state == State::Mapping {
            *state = to;
            self.changed.notify_all();
        }
    }

    /// Whether the mapping is over (done or failed): no wait left.
    pub fn settled(&self) -> bool {
        *self.state.lock().unwrap_or_else(|e| e.into_inner()) != State::Mapping
    }

    /// Wait until the mapping is over; true when guest RAM is mapped.
    pub fn wait(&self) -> bool {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let state = self
            .changed
            .wait_while(state, |s| *s == State::Mapping)
            .unwrap_or_else(|e| e.into_inner());
        *state == State::Mapped
    }
}

/// A guest write of `data` at config `offset` that turns bus mastering on (`command` is the
/// command register as the guest last wrote it) waits at `gate`; if the mapping failed,
/// the bus-master bit is taken out of `data` before it is forwarded. A wait is logged.
pub fn hold_bus_master(gate: &DmaGate, name: &str, command: u16, offset: u16, data: &mut [u8]) {
    // Bus mastering is bit 2 of the command register's low byte, config byte 4.
    const COMMAND_LOW: u16 = 4;
    let byte = COMMAND_LOW
        .checked_sub(offset)
        .and_then(|at| data.get_mut(usize::from(at)));
    let Some(byte) = byte else {
        return;
    };
    if *byte & COMMAND_BUS_MASTER as u8 == 0 || command & COMMAND_BUS_MASTER != 0 {
        return;
    }
    let (start, pending) = (Instant::now(), !gate.settled());
    if gate.wait() {
        if pending {
            log::info!(
                "{name}: bus mastering waited {} ms for guest RAM's DMA mapping",
                start.elapsed().as_millis()
            );
        }
    } else {
        *byte &= !(COMMAND_BUS_MASTER as u8);
        crate::limited!(
            warn,
            "{name}: bus mastering refused: guest RAM is not DMA-mapped"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::thread;
    use std::time::Duration;

    const BME: u8 = COMMAND_BUS_MASTER as u8;

    /// Runs hold_bus_master on a thread; returns the data it forwards and how long it took.
    fn write_while(
        gate: &Arc<DmaGate>,
        command: u16,
        offset: u16,
        data: &[u8],
    ) -> thread::JoinHandle<(Vec<u8>, Duration)> {
        let (gate, mut data) = (gate.clone(), data.to_vec());
        thread::spawn(move || {
            let start = Instant::now();
            hold_bus_master(&gate, "dev", command, offset, &mut data);
            (data, start.elapsed())
        })
    }

    #[test]
    fn enabling_bus_mastering_waits_for_the_mapping() {
        let gate = Arc::new(DmaGate::pending());
        let opened = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (g, o) = (gate.clone(), opened.clone());
        let held = thread::spawn(move || {
            let mut data = [0x06, 0x00];
            hold_bus_master(&g, "dev", 0x0002, 4, &mut data);
            (data, o.load(std::sync::atomic::Ordering::SeqCst))
        });
        thread::sleep(Duration::from_millis(100));
        assert!(
            !held.is_finished(),
            "the write went through before the mapping"
        );
        opened.store(true, std::sync::atomic::Ordering::SeqCst);
        gate.open();
        let (data, after_open) = held.join().unwrap();
        assert_eq!(data, [0x06, 0x00]);
        assert!(after_open, "the write went through before the gate opened");
    }

    #[test]
    fn a_failed_mapping_forwards_the_write_without_bus_mastering() {
        let gate = Arc::new(DmaGate::pending());
        let held = write_while(&gate, 0, 4, &[0x07, 0x00, 0x10, 0x00]);
        thread::sleep(Duration::from_millis(50));
        gate.fail();
        let (data, _) = held.join().unwrap();
        assert_eq!(data, [0x03, 0x00, 0x10, 0x00]);
        // Later: still refused, at once; opening a failed gate changes nothing.
        gate.open();
        let (data, _) = write_while(&gate, 0, 4, &[BME]).join().unwrap();
        assert_eq!(data, [0]);
    }

    #[test]
    fn writes_that_do_not_enable_bus_mastering_never_wait() {
        let gate = Arc::new(DmaGate::pending());
        for (command, offset, data) in [
            (0u16, 4u16, vec![0x03u8, 0x00]), // memory and I/O only
            (0x0004, 4, vec![0x07, 0x00]),    // bus mastering already on
            (0, 5, vec![BME]),                // the command register's upper byte
            (0, 6, vec![BME, BME]),           // the status register
            (0, 0, vec![BME, 0, 0, 0]),       // the vendor ID dword
            (0, 8, vec![BME; 4]),
        ] {
            let (out, _) = write_while(&gate, command, offset, &data).join().unwrap();
            assert_eq!(out, data, "{command:#x} {offset} {data:?}");
        }
        // The dword at 4 (command in its low bytes) enables it: held.
        let held = write_while(&gate, 0, 4, &[BME, 0, 0, 0]);
        thread::sleep(Duration::from_millis(50));
        assert!(!held.is_finished());
        gate.open();
        assert_eq!(held.join().unwrap().0, [BME, 0, 0, 0]);
    }
}
