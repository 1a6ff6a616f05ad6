//! Pausing vCPUs: a gate every vCPU thread passes before each KVM_RUN. While the gate is
//! closed, threads park on it; `close` returns once every running thread is parked, so the
//! caller knows no vCPU is in the guest.

use std::sync::{Condvar, Mutex};
use std::time::Duration;

use crate::sync::lock;

#[derive(Default)]
struct GateState {
    closed: bool,
    parked: usize,
    /// Threads that passed `enter` and have not `leave`d (exited their loop).
    running: usize,
    stopping: bool,
}

#[derive(Default)]
pub struct RunGate {
    state: Mutex<GateState>,
    changed: Condvar,
}

impl RunGate {
    /// A vCPU thread starts using the gate.
    pub fn enter(&self) {
        lock(&self.state).running += 1;
        self.changed.notify_all();
    }

    /// A vCPU thread is done with the gate (its loop ended).
    pub fn leave(&self) {
        lock(&self.state).running -= 1;
        self.changed.notify_all();
    }

    /// Called by a vCPU thread before each KVM_RUN: parks while the gate is closed.
    /// Returns false when the VM is stopping.
    pub fn pass(&self) -> bool {
        let mut state = lock(&self.state);
        if state.closed && !state.stopping {
            state.parked += 1;
            self.changed.notify_all();
            while state.closed && !state.stopping {
                state = self.changed.wait(state).unwrap_or_else(|e| e.into_inner());
            }
            state.parked -= 1;
        }
        !state.stopping
    }

    /// Close the gate and wait until every running vCPU is parked, calling `kick` (which
    /// knocks vCPUs out of KVM_RUN) while waiting.
    pub fn close(&self, mut kick: impl FnMut()) {
        let mut state = lock(&self.state);
        state.closed = true;
        while state.parked < state.running && !state.stopping {
            drop(state);
            kick();
            state = lock(&self.state);
            state = self
                .changed
                .wait_timeout(state, Duration::from_millis(1))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    pub fn open(&self) {
        lock(&self.state).closed = false;
        self.changed.notify_all();
    }

    /// Release every parked thread for good: the VM is stopping.
    pub fn stop(&self) {
        lock(&self.state).stopping = true;
        self.changed.notify_all();
    }

    #[cfg(test)]
    pub fn is_stopping(&self) -> bool {
        lock(&self.state).stopping
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// Threads that loop through the gate counting their "runs".
    fn spawn_vcpus(
        gate: &Arc<RunGate>,
        runs: &Arc<AtomicUsize>,
        n: usize,
    ) -> Vec<std::thread::JoinHandle<()>> {
        (0..n)
            .map(|_| {
                let (gate, runs) = (gate.clone(), runs.clone());
                gate.enter();
                std::thread::spawn(move || {
                    while gate.pass() {
                        runs.fetch_add(1, Ordering::Relaxed);
                        std::thread::sleep(Duration::from_micros(100));
                    }
                    gate.leave();
                })
            })
            .collect()
    }

    #[test]
    fn closed_gate_parks_every_vcpu_until_opened() {
        let gate = Arc::new(RunGate::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let threads = spawn_vcpus(&gate, &runs, 3);
        std::thread::sleep(Duration::from_millis(5));
        gate.close(|| {});
        let frozen = runs.load(Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(10));
        assert_eq!(
            runs.load(Ordering::Relaxed),
            frozen,
            "a vCPU ran while paused"
        );
        gate.open();
        std::thread::sleep(Duration::from_millis(10));
        assert!(runs.load(Ordering::Relaxed) > frozen);
        gate.stop();
        threads.into_iter().for_each(|t| t.join().unwrap());
    }

    #[test]
    fn stop_releases_parked_vcpus() {
        let gate = Arc::new(RunGate::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let threads = spawn_vcpus(&gate, &runs, 2);
        gate.close(|| {});
        gate.stop();
        threads.into_iter().for_each(|t| t.join().unwrap());
        assert!(gate.is_stopping());
    }
}
