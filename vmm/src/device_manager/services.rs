//! The services the VM gives virtio devices beside interrupts and memory slots: KVM
//! ioeventfds for queue notifications (a guest's notify write never exits to the VMM), and
//! worker threads that run confined by their seccomp filter and end the VM as an error if
//! their body panics.

use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;

use devices::services::{IoEventRegistrar, ServiceError, WorkerKind, WorkerSpawner};
use kvm_ioctls::{IoEventAddress, NoDatamatch, VmFd};
use vmm_sys_util::eventfd::EventFd;

use crate::exit::{panic_message, ExitChannel, VmExit};
use crate::seccomp::{self, ThreadKind};
use crate::sync::lock;

/// ioeventfds on the VM's MMIO addresses.
pub struct KvmIoEvents {
    vm: Arc<VmFd>,
}

impl KvmIoEvents {
    pub fn new(vm: Arc<VmFd>) -> Self {
        Self { vm }
    }
}

impl IoEventRegistrar for KvmIoEvents {
    fn register_ioevent(&self, evt: &EventFd, addr: u64) -> Result<(), ServiceError> {
        self.vm
            .register_ioevent(evt, &IoEventAddress::Mmio(addr), NoDatamatch)
            .map_err(|e| ServiceError(format!("KVM_IOEVENTFD at {addr:#x}: {e}")))
    }

    fn unregister_ioevent(&self, evt: &EventFd, addr: u64) -> Result<(), ServiceError> {
        self.vm
            .unregister_ioevent(evt, &IoEventAddress::Mmio(addr), NoDatamatch)
            .map_err(|e| ServiceError(format!("KVM_IOEVENTFD (deassign) at {addr:#x}: {e}")))
    }
}

/// A request to the launcher: the thread's name, its kind, its body, where to answer.
type Launch = (
    String,
    WorkerKind,
    Box<dyn FnOnce() + Send>,
    mpsc::Sender<std::io::Result<JoinHandle<()>>>,
);

/// Device worker threads, started by one launcher thread of the VM's: a device asks for
/// its worker when the guest activates it, on a vCPU thread, whose seccomp filter a new
/// thread would inherit (filters stack, so the worker could never do more than a vCPU).
/// The launcher's filter allows what every worker kind does plus starting threads; each
/// worker installs its own kind's filter first. A panic in a worker's body stops the VM
/// with the thread's name and message.
pub struct ConfinedWorkers {
    launches: Mutex<mpsc::Sender<Launch>>,
}

impl ConfinedWorkers {
    /// Start the launcher (it ends when this is dropped).
    pub fn start(exit: Arc<ExitChannel>) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel::<Launch>();
        std::thread::Builder::new()
            .name("launcher".into())
            .spawn(move || {
                if seccomp::apply(ThreadKind::Launcher, exit.seccomp()).is_err() {
                    // The policy recorded the failure and ends the VM with it.
                    return;
                }
                for (name, kind, body, reply) in rx {
                    let _ = reply.send(launch(&exit, name, kind, body));
                }
            })?;
        Ok(Self {
            launches: Mutex::new(tx),
        })
    }
}

fn thread_kind(kind: WorkerKind) -> ThreadKind {
    match kind {
        WorkerKind::VirtioBlock => ThreadKind::VirtioBlock,
        WorkerKind::VirtioNet => ThreadKind::VirtioNet,
        WorkerKind::VirtioVsock => ThreadKind::VirtioVsock,
    }
}

fn launch(
    exit: &Arc<ExitChannel>,
    name: String,
    kind: WorkerKind,
    body: Box<dyn FnOnce() + Send>,
) -> std::io::Result<JoinHandle<()>> {
    let (exit, thread) = (exit.clone(), name.clone());
    std::thread::Builder::new().name(name).spawn(move || {
        if seccomp::apply(thread_kind(kind), exit.seccomp()).is_err() {
            return;
        }
        if let Err(panic) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)) {
            exit.request(VmExit::Panicked {
                thread,
                message: panic_message(panic.as_ref()),
            });
        }
    })
}

impl WorkerSpawner for ConfinedWorkers {
    fn spawn(
        &self,
        name: String,
        kind: WorkerKind,
        body: Box<dyn FnOnce() + Send>,
    ) -> std::io::Result<JoinHandle<()>> {
        let (reply, answer) = mpsc::channel();
        let gone = || std::io::Error::other("the worker launcher thread has ended");
        lock(&self.launches)
            .send((name, kind, body, reply))
            .map_err(|_| gone())?;
        answer.recv().map_err(|_| gone())?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::security::SeccompMode;

    /// A worker asked for from a vCPU thread runs under its own kind's filter, not the
    /// vCPU's: it may poll (a vCPU may not), and nothing is recorded.
    #[test]
    fn a_worker_asked_from_a_vcpu_runs_under_its_own_filter() {
        let policy = seccomp::Policy::new(SeccompMode::On).unwrap();
        let exit = Arc::new(ExitChannel::with_seccomp(policy).unwrap());
        let workers = Arc::new(ConfinedWorkers::start(exit.clone()).unwrap());
        let (w, e) = (workers.clone(), exit.clone());
        let polled = std::thread::Builder::new()
            .name("vcpu-test".into())
            .spawn(move || {
                seccomp::apply(ThreadKind::Vcpu, e.seccomp()).unwrap();
                let (tx, rx) = mpsc::channel();
                let body = Box::new(move || {
                    let mut fds: [libc::pollfd; 0] = [];
                    // SAFETY: an empty set and no timeout.
                    let n = unsafe { libc::poll(fds.as_mut_ptr(), 0, 0) };
                    tx.send(n).unwrap();
                });
                let worker = w
                    .spawn("test-worker".into(), WorkerKind::VirtioBlock, body)
                    .unwrap();
                worker.join().unwrap();
                rx.recv().unwrap()
            })
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(polled, 0);
        assert_eq!(exit.seccomp().violation(), None);
    }
}
