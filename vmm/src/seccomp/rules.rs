//! The allow-lists, one per thread kind. A filter is installed at the start of its thread's
//! body, so what the thread did before (its start in glibc and std, and for the VM thread
//! everything that sets the VM up) needs no rule; how it ends (TLS destructors, freeing its
//! stacks, exit) does. docs/security.md explains each list.

use std::collections::BTreeMap;

use seccompiler::{BackendError, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompRule};

use super::ioctls::*;
use super::ThreadKind;

pub type Rules = BTreeMap<i64, Vec<SeccompRule>>;

/// What every thread needs: locks and sleeping, time, memory (never executable), close, the log's
/// and the eventfds' write(2), signal returns, thread exit, and the calls glibc makes on every
/// thread when `--user` drops privileges (setuid and friends are per thread in the kernel;
/// glibc runs them on each thread from a signal handler).
const COMMON: &[i64] = &[
    libc::SYS_futex,
    libc::SYS_clock_gettime,
    libc::SYS_clock_nanosleep,
    libc::SYS_nanosleep,
    libc::SYS_sched_yield,
    libc::SYS_gettid,
    libc::SYS_getpid,
    libc::SYS_getrandom,
    libc::SYS_write,
    libc::SYS_rt_sigreturn,
    libc::SYS_rt_sigprocmask,
    libc::SYS_restart_syscall,
    libc::SYS_sigaltstack,
    libc::SYS_munmap,
    libc::SYS_madvise,
    libc::SYS_brk,
    libc::SYS_mremap,
    libc::SYS_exit,
    // Whichever thread drops the last reference to the VM's exit channel closes its eventfds.
    libc::SYS_close,
    libc::SYS_setgroups,
    libc::SYS_setgid,
    libc::SYS_setuid,
];

/// The control loop (epoll over eventfds, the console and the boot watchdog's timerfd),
/// then the teardown of the vCPUs (kicked with a signal, joined) and of every device:
/// interrupts off, KVM slots and irqfds removed, the device reset, guest RAM unmapped from
/// the IOMMU, the group released (vfio-ioctls reads its iommu_group link) or, with iommufd,
/// the cdev detached from the IOAS and the IOAS destroyed, fds closed; the vsock's socket
/// file removed.
const VM: &[i64] = &[
    libc::SYS_epoll_create1,
    libc::SYS_epoll_ctl,
    libc::SYS_epoll_wait,
    libc::SYS_epoll_pwait,
    libc::SYS_timerfd_create,
    libc::SYS_timerfd_settime,
    libc::SYS_read,
    libc::SYS_pread64,
    libc::SYS_pwrite64,
    libc::SYS_tgkill,
    libc::SYS_readlink,
    libc::SYS_readlinkat,
    // The vsock's socket file, removed when the device goes (if it is still the one bound).
    libc::SYS_statx,
    libc::SYS_newfstatat,
    libc::SYS_unlink,
    libc::SYS_unlinkat,
];
const VM_IOCTLS: &[u64] = &[
    KVM_SET_USER_MEMORY_REGION,
    KVM_IRQFD,
    KVM_IOEVENTFD,
    KVM_SET_GSI_ROUTING,
    KVM_SET_DEVICE_ATTR,
    VFIO_DEVICE_SET_IRQS,
    VFIO_DEVICE_RESET,
    VFIO_IOMMU_UNMAP_DMA,
    VFIO_GROUP_UNSET_CONTAINER,
    VFIO_DEVICE_DETACH_IOMMUFD_PT,
    IOMMU_IOAS_UNMAP,
    IOMMU_DESTROY,
];

/// KVM_RUN and the device emulation behind its exits: VFIO region reads and writes
/// (pread/pwrite on the device fd), the console's output, interrupt eventfds, and what a
/// guest moving BARs or programming MSI/MSI-X makes the VMM do (KVM slots, GSI routes,
/// irqfds, VFIO_DEVICE_SET_IRQS with new eventfds, and for a peer-to-peer device the BAR's
/// IOMMU mappings; a virtio device's queue ioeventfds, its worker asked of the launcher and
/// joined at reset, a tap's offloads as the guest's driver negotiated them). Its own registers may be read (for reporting a crash); nothing else of
/// KVM's.
const VCPU: &[i64] = &[
    libc::SYS_read,
    // Whether a masked vector's eventfd holds an interrupt (a zero-timeout poll).
    libc::SYS_poll,
    libc::SYS_pread64,
    libc::SYS_pwrite64,
    libc::SYS_eventfd2,
    libc::SYS_dup,
    libc::SYS_fcntl,
];
const VCPU_IOCTLS: &[u64] = &[
    KVM_RUN,
    KVM_GET_REGS,
    KVM_GET_SREGS,
    KVM_SET_USER_MEMORY_REGION,
    KVM_IRQFD,
    KVM_IOEVENTFD,
    KVM_SET_GSI_ROUTING,
    TUNSETOFFLOAD,
    VFIO_DEVICE_SET_IRQS,
    VFIO_DEVICE_GET_IRQ_INFO,
    VFIO_DEVICE_GET_REGION_INFO,
    VFIO_DEVICE_RESET,
    VFIO_IOMMU_MAP_DMA,
    VFIO_IOMMU_UNMAP_DMA,
    IOMMU_IOAS_MAP,
    IOMMU_IOAS_UNMAP,
];

/// One connection at a time on the bound socket (poll, accept, timeouts, read, write,
/// shutdown), pausing (kicking vCPUs) and the shutdown timer: starting that thread, whose
/// start-up runs under this filter until it installs its own.
const API: &[i64] = &[
    libc::SYS_poll,
    libc::SYS_accept4,
    libc::SYS_read,
    libc::SYS_recvfrom,
    libc::SYS_sendto,
    libc::SYS_setsockopt,
    libc::SYS_shutdown,
    libc::SYS_tgkill,
    libc::SYS_clone3,
    libc::SYS_clone,
    libc::SYS_set_robust_list,
    libc::SYS_rseq,
    libc::SYS_sched_getaffinity,
];

/// sigwait; the stop it requests is a write to the exit eventfd.
const SIGNALS: &[i64] = &[libc::SYS_rt_sigtimedwait];

/// Timers wait on a condition variable (futex) and request an exit (write): COMMON only.
const TIMER: &[i64] = &[];

/// Guest RAM into the IOMMU, a chunk at a time (the kernel pins the pages), then the log
/// line and the exit request (write): the map ioctls only.
const DMA_MAP: &[i64] = &[];
const DMA_MAP_IOCTLS: &[u64] = &[VFIO_IOMMU_MAP_DMA, IOMMU_IOAS_MAP];

/// Waits on its queue's notifier, stop and resample eventfds (poll), reads and writes the
/// image at the requests' offsets, flushes it; signals the interrupt eventfd (write).
const VIRTIO_BLOCK: &[i64] = &[
    libc::SYS_poll,
    libc::SYS_ppoll,
    libc::SYS_read,
    libc::SYS_pread64,
    libc::SYS_pwrite64,
    libc::SYS_preadv,
    libc::SYS_pwritev,
    libc::SYS_fdatasync,
    libc::SYS_fsync,
];

/// Waits on its tap, its queues' notifiers, stop and resample eventfds (poll); frames are
/// read from and written to the tap (one read or write each); signals interrupt eventfds.
const VIRTIO_NET: &[i64] = &[libc::SYS_poll, libc::SYS_ppoll, libc::SYS_read];
/// The vsock worker (devices::virtio::vsock, worker.rs lists these): poll, eventfd reads,
/// accepting host clients, connecting to `<socket>_<port>` (AF_UNIX only), send/recv,
/// shutdown.
const VIRTIO_VSOCK: &[i64] = &[
    libc::SYS_poll,
    libc::SYS_ppoll,
    libc::SYS_read,
    libc::SYS_accept4,
    libc::SYS_connect,
    libc::SYS_recvfrom,
    libc::SYS_sendto,
    libc::SYS_shutdown,
];

/// Starting a thread (the clone, its stack, what glibc and std do in the new thread before
/// it installs its own filter: robust list, rseq, its name, then the filter), and, because
/// filters stack, everything a worker it starts may do.
const LAUNCHER: &[i64] = &[
    libc::SYS_clone3,
    libc::SYS_clone,
    libc::SYS_set_robust_list,
    libc::SYS_rseq,
    libc::SYS_sched_getaffinity,
];

/// The worker kinds a launcher starts.
const WORKERS: &[&[i64]] = &[VIRTIO_BLOCK, VIRTIO_NET, VIRTIO_VSOCK];

/// The rules of `kind`'s filter.
pub fn allowed(kind: ThreadKind) -> Result<Rules, BackendError> {
    let (plain, ioctls): (&[i64], &[u64]) = match kind {
        ThreadKind::Vm => (VM, VM_IOCTLS),
        ThreadKind::Vcpu => (VCPU, VCPU_IOCTLS),
        ThreadKind::Api => (API, &[FIONBIO]),
        ThreadKind::Signals => (SIGNALS, &[]),
        ThreadKind::Timer => (TIMER, &[]),
        ThreadKind::DmaMap => (DMA_MAP, DMA_MAP_IOCTLS),
        ThreadKind::Launcher => (LAUNCHER, &[]),
        ThreadKind::VirtioBlock => (VIRTIO_BLOCK, &[]),
        ThreadKind::VirtioNet => (VIRTIO_NET, &[]),
        ThreadKind::VirtioVsock => (VIRTIO_VSOCK, &[]),
    };
    let mut rules: Rules = COMMON.iter().chain(plain).map(|&nr| (nr, vec![])).collect();
    // std's debug builds check that a file descriptor is open before closing it (F_GETFD).
    rules
        .entry(libc::SYS_fcntl)
        .or_insert(vec![arg_is(1, libc::F_GETFD as u64)?]);
    rules.insert(libc::SYS_mmap, vec![not_executable(2)?]);
    rules.insert(libc::SYS_mprotect, vec![not_executable(2)?]);
    if !ioctls.is_empty() {
        let one_of = ioctls
            .iter()
            .map(|&nr| arg_is(1, nr))
            .collect::<Result<_, _>>()?;
        rules.insert(libc::SYS_ioctl, one_of);
    }
    if kind == ThreadKind::Launcher {
        for &nr in WORKERS.iter().copied().flatten() {
            rules.insert(nr, vec![]);
        }
    }
    if matches!(kind, ThreadKind::VirtioVsock | ThreadKind::Launcher) {
        // The vsock worker's sockets are Unix stream sockets only.
        rules.insert(libc::SYS_socket, vec![arg_is(0, libc::AF_UNIX as u64)?]);
    }
    if matches!(kind, ThreadKind::Api | ThreadKind::Launcher) {
        // A thread it starts names itself, then installs its own filter.
        rules.insert(
            libc::SYS_prctl,
            vec![
                arg_is(0, libc::PR_SET_NAME as u64)?,
                arg_is(0, libc::PR_SET_NO_NEW_PRIVS as u64)?,
            ],
        );
        rules.insert(
            libc::SYS_seccomp,
            vec![arg_is(0, u64::from(libc::SECCOMP_SET_MODE_FILTER))?],
        );
    }
    Ok(rules)
}

/// Argument `index` (its low 32 bits, as the kernel's int and ioctl numbers are) is `value`.
fn arg_is(index: u8, value: u64) -> Result<SeccompRule, BackendError> {
    let cond = SeccompCondition::new(index, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, value)?;
    SeccompRule::new(vec![cond])
}

/// mmap/mprotect whose protection (argument `index`) lacks PROT_EXEC: no new code at run time.
fn not_executable(index: u8) -> Result<SeccompRule, BackendError> {
    let exec = libc::PROT_EXEC as u64;
    let cond = SeccompCondition::new(
        index,
        SeccompCmpArgLen::Dword,
        SeccompCmpOp::MaskedEq(exec),
        0,
    )?;
    SeccompRule::new(vec![cond])
}
