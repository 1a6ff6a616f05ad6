//! vCPUs: creation, boot state, and one thread each running KVM_RUN and dispatching exits
//! to the buses.

mod gate;
mod set;

use std::sync::{Arc, Once};
use std::time::Instant;

use kvm_bindings::{CpuId, KVM_SYSTEM_EVENT_RESET, KVM_SYSTEM_EVENT_SHUTDOWN};
use kvm_ioctls::{VcpuExit, VcpuFd, VmFd};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::signal::{register_signal_handler, SIGRTMIN};

use crate::device_manager::Buses;
use crate::error::{Error, Result};
use crate::exit::{ExitChannel, VmExit};
use crate::exit_stats::ExitStats;
use crate::timeline::{Milestone, Timeline};

/// What every vCPU thread shares.
#[derive(Clone)]
pub struct VcpuShared {
    pub buses: Buses,
    pub exit: Arc<ExitChannel>,
    pub timeline: Arc<Timeline>,
    pub gate: Arc<RunGate>,
}

pub use gate::RunGate;
pub use set::{RunningVcpus, VcpuSet};

/// Create vCPU `id` of `count` and give it its CPUID, MSRs and LAPIC set-up; the boot vCPU
/// (id 0) also gets long mode and registers pointing at `entry`.
pub fn create_vcpu(
    vm: &VmFd,
    base_cpuid: &CpuId,
    id: u8,
    count: u8,
    mem: &GuestMemoryMmap,
    entry: u64,
) -> Result<VcpuFd> {
    let vcpu = vm
        .create_vcpu(u64::from(id))
        .map_err(Error::kvm("KVM_CREATE_VCPU"))?;
    let mut cpuid = base_cpuid.clone();
    arch::cpuid::configure(&mut cpuid, id, count);
    vcpu.set_cpuid2(&cpuid)
        .map_err(Error::kvm("KVM_SET_CPUID2"))?;
    let msrs = arch::msrs::boot_msrs();
    let written = vcpu.set_msrs(&msrs).map_err(Error::kvm("KVM_SET_MSRS"))?;
    if written != msrs.as_slice().len() {
        log::warn!(
            "KVM accepted {written} of {} boot MSRs",
            msrs.as_slice().len()
        );
    }
    let mut lapic = vcpu.get_lapic().map_err(Error::kvm("KVM_GET_LAPIC"))?;
    arch::lapic::set_lint(&mut lapic);
    vcpu.set_lapic(&lapic)
        .map_err(Error::kvm("KVM_SET_LAPIC"))?;
    if id == 0 {
        let mut sregs = vcpu.get_sregs().map_err(Error::kvm("KVM_GET_SREGS"))?;
        arch::regs::setup_sregs(mem, &mut sregs)
            .map_err(|e| Error::Boot(boot::BootError::GuestMemory(e.into())))?;
        vcpu.set_sregs(&sregs)
            .map_err(Error::kvm("KVM_SET_SREGS"))?;
        vcpu.set_regs(&arch::regs::boot_regs(entry))
            .map_err(Error::kvm("KVM_SET_REGS"))?;
        vcpu.set_fpu(&arch::regs::boot_fpu())
            .map_err(Error::kvm("KVM_SET_FPU"))?;
    }
    Ok(vcpu)
}

/// Create the VM's `count` vCPUs (see [`create_vcpu`]).
pub fn create_all(
    vm: &VmFd,
    cpuid: &CpuId,
    count: u8,
    mem: &GuestMemoryMmap,
    entry: u64,
) -> Result<Vec<VcpuFd>> {
    (0..count)
        .map(|id| create_vcpu(vm, cpuid, id, count, mem, entry))
        .collect()
}

extern "C" fn kick_handler(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

/// The signal used to knock a vCPU thread out of KVM_RUN.
fn kick_signal() -> libc::c_int {
    SIGRTMIN()
}

fn install_kick_handler() -> Result<()> {
    static ONCE: Once = Once::new();
    let mut result = Ok(());
    ONCE.call_once(|| {
        result = register_signal_handler(kick_signal(), kick_handler)
            .map_err(Error::errno("the vCPU kick signal"));
    });
    result
}

/// Start a thread running vCPU `id`. It counts as running on the gate from now on.
fn spawn(mut vcpu: VcpuFd, id: u8, shared: VcpuShared) -> Result<std::thread::JoinHandle<()>> {
    install_kick_handler()?;
    shared.gate.enter();
    let gate = shared.gate.clone();
    std::thread::Builder::new()
        .name(format!("vcpu{id}"))
        .spawn(move || {
            if let Err(exit) = run_loop(&mut vcpu, id, &shared) {
                shared.exit.request(exit);
            }
            shared.gate.leave();
        })
        .map_err(|e| {
            gate.leave();
            Error::io("a vCPU thread")(e)
        })
}

/// Run until the VM stops; returns the exit this vCPU caused, if any.
fn run_loop(vcpu: &mut VcpuFd, id: u8, s: &VcpuShared) -> std::result::Result<(), VmExit> {
    if crate::seccomp::apply(crate::seccomp::ThreadKind::Vcpu, s.exit.seccomp()).is_err() {
        return Ok(()); // recorded as the VM's exit
    }
    let mut stats = ExitStats::default();
    let result = run_exits(vcpu, id, s, &mut stats);
    stats.log(id);
    result
}

fn run_exits(
    vcpu: &mut VcpuFd,
    id: u8,
    s: &VcpuShared,
    stats: &mut ExitStats,
) -> std::result::Result<(), VmExit> {
    let crashed = |reason: String| VmExit::Crashed { vcpu: id, reason };
    loop {
        if !s.gate.pass() {
            return Ok(());
        }
        crate::faults::at_vcpu_exit(id, stats.total());
        if id == 0 {
            s.timeline.mark(Milestone::FirstVcpuEntry);
        }
        match vcpu.run() {
            Ok(VcpuExit::IoIn(port, data)) => {
                let start = Instant::now();
                if !s.buses.pio.read(u64::from(port), data) {
                    log::trace!("vcpu{id}: unclaimed port read {port:#x}");
                }
                stats.record("in", u64::from(port), start);
            }
            Ok(VcpuExit::IoOut(port, data)) => {
                let start = Instant::now();
                if !s.buses.pio.write(u64::from(port), data) {
                    log::trace!("vcpu{id}: unclaimed port write {port:#x} {data:x?}");
                }
                stats.record("out", u64::from(port), start);
            }
            Ok(VcpuExit::MmioRead(addr, data)) => {
                let start = Instant::now();
                if !s.buses.mmio.read(addr, data) {
                    log::trace!("vcpu{id}: unclaimed MMIO read {addr:#x}");
                }
                stats.record("mmio-read", addr & !0xfff, start);
            }
            Ok(VcpuExit::MmioWrite(addr, data)) => {
                let start = Instant::now();
                if !s.buses.mmio.write(addr, data) {
                    log::trace!("vcpu{id}: unclaimed MMIO write {addr:#x} {data:x?}");
                }
                stats.record("mmio-write", addr & !0xfff, start);
            }
            Ok(VcpuExit::Hlt) => std::thread::sleep(std::time::Duration::from_millis(1)),
            Ok(VcpuExit::Intr) => {}
            Ok(VcpuExit::Shutdown) => {
                return Err(crashed(
                    "the guest triple-faulted (KVM_EXIT_SHUTDOWN); check that the kernel is built for x86_64 and its command line".into(),
                ))
            }
            Ok(VcpuExit::SystemEvent(kind, _)) => {
                return Err(match kind {
                    KVM_SYSTEM_EVENT_SHUTDOWN => VmExit::Poweroff,
                    KVM_SYSTEM_EVENT_RESET => VmExit::Reset,
                    other => crashed(format!("unexpected KVM system event {other}")),
                })
            }
            Ok(VcpuExit::InternalError) => {
                return Err(crashed(
                    "KVM internal error (the guest ran an instruction KVM cannot emulate)".into(),
                ))
            }
            Ok(VcpuExit::FailEntry(reason, cpu)) => {
                return Err(crashed(format!(
                    "KVM could not enter the guest (hardware reason {reason:#x} on host CPU {cpu})"
                )))
            }
            Ok(other) => return Err(crashed(format!("unexpected vCPU exit {other:?}"))),
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {}
            Err(e) => return Err(crashed(format!("KVM_RUN failed: {e}"))),
        }
    }
}
