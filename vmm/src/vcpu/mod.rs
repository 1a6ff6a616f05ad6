//! vCPUs: creation, boot state, and one thread each running KVM_RUN and dispatching exits
//! to the buses.

mod gate;
mod set;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Once};
use std::time::Instant;

use devices::Bus;
use kvm_bindings::{kvm_run, CpuId, KVM_SYSTEM_EVENT_RESET, KVM_SYSTEM_EVENT_SHUTDOWN};
use kvm_ioctls::{VcpuExit, VcpuFd, VmFd};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::signal::{register_signal_handler, SIGRTMIN};

use crate::device_manager::Buses;
use crate::error::{Error, Result};
use crate::exit::{panic_message, ExitChannel, VmExit};
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
            // A panic (a zhitong bug) ends the VM like any fatal exit: the thread still
            // leaves the gate, so pauses and the teardown never wait for it.
            let outcome = catch_unwind(AssertUnwindSafe(|| run_loop(&mut vcpu, id, &shared)));
            match outcome {
                Ok(Ok(())) => {}
                Ok(Err(exit)) => shared.exit.request(exit),
                Err(panic) => shared.exit.request(VmExit::Panicked {
                    thread: format!("vcpu{id}"),
                    message: panic_message(panic.as_ref()),
                }),
            }
            shared.gate.leave();
        })
        .map_err(|e| {
            gate.leave();
            Error::io("a vCPU thread")(e)
        })
}

/// The size of one access of the port I/O exit in `run` (1, 2 or 4).
///
/// # Safety
/// `run` must point at a live kvm_run whose last exit was KVM_EXIT_IO.
unsafe fn port_access_size(run: *const kvm_run) -> usize {
    // SAFETY: the caller's contract; a plain field read of the io member of the exit union.
    let size = unsafe { std::ptr::addr_of!((*run).__bindgen_anon_1.io.size).read() };
    usize::from(size).max(1)
}

/// A port read of `data.len() / size` accesses of `size` bytes (`rep ins` is several): each
/// goes to the device on its own, as on hardware. False when no device claimed them.
fn port_in(bus: &Bus, port: u16, data: &mut [u8], size: usize) -> bool {
    let mut claimed = true;
    for chunk in data.chunks_mut(size) {
        claimed &= bus.read(u64::from(port), chunk);
    }
    claimed
}

/// A port write of `data.len() / size` accesses (`rep outs`), each on its own.
fn port_out(bus: &Bus, port: u16, data: &[u8], size: usize) -> bool {
    let mut claimed = true;
    for chunk in data.chunks(size) {
        claimed &= bus.write(u64::from(port), chunk);
    }
    claimed
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
    // For the size of one port access: kvm-ioctls hands over size x count bytes.
    let run: *const kvm_run = vcpu.get_kvm_run();
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
                // SAFETY: `run` is this vCPU's kvm_run mapping, alive as long as `vcpu`.
                let size = unsafe { port_access_size(run) };
                if !port_in(&s.buses.pio, port, data, size) {
                    log::trace!("vcpu{id}: unclaimed port read {port:#x}");
                }
                stats.record("in", u64::from(port), start);
            }
            Ok(VcpuExit::IoOut(port, data)) => {
                let start = Instant::now();
                // SAFETY: as for IoIn.
                let size = unsafe { port_access_size(run) };
                if !port_out(&s.buses.pio, port, data, size) {
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

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use devices::{BusDevice, WeakBusDevice};

    use super::*;

    /// Records each access it gets; reads return a running counter.
    #[derive(Default)]
    struct Port {
        accesses: Vec<(bool, Vec<u8>)>,
        next: u8,
    }

    impl BusDevice for Port {
        fn read(&mut self, _: u64, data: &mut [u8]) {
            self.next += 1;
            data.fill(self.next);
            self.accesses.push((false, data.to_vec()));
        }
        fn write(&mut self, _: u64, data: &[u8]) {
            self.accesses.push((true, data.to_vec()));
        }
    }

    #[test]
    fn string_port_io_is_one_access_per_element() {
        let bus = Bus::new();
        let port = Arc::new(Mutex::new(Port::default()));
        bus.insert(0x60, 1, Arc::downgrade(&port) as WeakBusDevice)
            .unwrap();
        // rep outsw of 3 words, then rep insb of 4 bytes.
        assert!(port_out(&bus, 0x60, &[1, 2, 3, 4, 5, 6], 2));
        let mut data = [0u8; 4];
        assert!(port_in(&bus, 0x60, &mut data, 1));
        assert_eq!(data, [1, 2, 3, 4]);
        let accesses = port.lock().unwrap().accesses.clone();
        assert_eq!(accesses.len(), 7);
        assert_eq!(accesses[0], (true, vec![1, 2]));
        assert_eq!(accesses[2], (true, vec![5, 6]));
        assert!(accesses[3..].iter().all(|(w, d)| !w && d.len() == 1));
        // A single dword stays one access.
        assert!(port_out(&bus, 0x60, &[9; 4], 4));
        assert_eq!(port.lock().unwrap().accesses.len(), 8);
        assert!(!port_out(&bus, 0x70, &[0; 2], 1));
    }
}
