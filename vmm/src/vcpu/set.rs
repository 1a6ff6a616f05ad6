//! The VM's vCPU threads as one unit: start them, pause and resume them, stop them.

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use kvm_ioctls::VcpuFd;
use vmm_sys_util::signal::Killable;

use super::{kick_signal, spawn, RunGate, VcpuShared};
use crate::error::Result;
use crate::sync::lock;

pub struct VcpuSet {
    threads: Mutex<Vec<JoinHandle<()>>>,
    gate: Arc<RunGate>,
}

impl VcpuSet {
    /// Start a thread per vCPU (ids in order). If one cannot start, those already running
    /// are stopped before the error is returned.
    pub fn start(vcpus: Vec<VcpuFd>, shared: &VcpuShared) -> Result<Arc<VcpuSet>> {
        let set = Arc::new(VcpuSet {
            threads: Mutex::new(Vec::with_capacity(vcpus.len())),
            gate: shared.gate.clone(),
        });
        for (id, fd) in (0u8..).zip(vcpus) {
            match spawn(fd, id, shared.clone()) {
                Ok(thread) => lock(&set.threads).push(thread),
                Err(e) => {
                    set.stop();
                    return Err(e);
                }
            }
        }
        Ok(set)
    }

    /// Knock every vCPU thread out of KVM_RUN once.
    fn kick(&self) {
        for thread in lock(&self.threads).iter() {
            if !thread.is_finished() {
                let _ = thread.kill(kick_signal());
            }
        }
    }

    /// Park every vCPU; returns when none is in the guest.
    pub fn pause(&self) {
        self.gate.close(|| self.kick());
    }

    pub fn resume(&self) {
        self.gate.open();
    }

    /// Stop every vCPU thread and wait for them. A signal landing just before KVM_RUN is
    /// lost, so kick until each thread is gone.
    pub fn stop(&self) {
        self.gate.stop();
        let threads: Vec<_> = lock(&self.threads).drain(..).collect();
        for thread in threads {
            while !thread.is_finished() {
                let _ = thread.kill(kick_signal());
                std::thread::sleep(Duration::from_micros(500));
            }
            let _ = thread.join();
        }
    }
}

/// The started vCPUs of a VM: dropping this stops and joins every thread, so no vCPU runs
/// once the devices it dispatches to are being torn down, whichever way `run_vm` returns.
pub struct RunningVcpus(Arc<VcpuSet>);

impl RunningVcpus {
    pub fn start(vcpus: Vec<VcpuFd>, shared: &VcpuShared) -> Result<Self> {
        VcpuSet::start(vcpus, shared).map(Self)
    }

    /// The set, for pausing and resuming from a handle.
    pub fn set(&self) -> Arc<VcpuSet> {
        self.0.clone()
    }
}

impl Drop for RunningVcpus {
    fn drop(&mut self) {
        self.0.stop();
    }
}
