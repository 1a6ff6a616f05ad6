//! A VM's life: check the configuration, create the KVM VM, its memory, devices and vCPUs,
//! run until the guest or the caller ends it, and tear everything down.

use std::fs::File;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Instant;

use arch::acpi::PciHostConfig;
use arch::pci_windows::{guest_phys_bits, PciWindows};

use crate::config::{host_ram_bytes, ConfigError, DmaMapStart, VmConfig};
use crate::console::Console;
use crate::control::{run_until_exit, ControlInputs};
use crate::device_manager::{DeviceManager, OpenedVirtio, SlotRange, VmParts};
use crate::error::{Error, Result};
use crate::exit::{panic_message, ExitChannel, VmExit};
use crate::handle::{VmHandle, VmShared, VmState};
use crate::seccomp::{self, ThreadKind};
use crate::timeline::{Milestone, Timeline};
use crate::vcpu::{self, RunGate, RunningVcpus, VcpuShared};
use crate::{guest_boot, kvm, memory, privileges};
use host::preflight::{check_devices, check_guest_fits, CheckedDevice};
use host::vfio_backend::VfioBackend;
use host::Host;

/// A configured VM, checked but not yet started.
pub struct Vm {
    config: VmConfig,
    /// The devices to pass through, as the preflight found them, and the VFIO backend they
    /// are opened through.
    passthrough: Vec<CheckedDevice>,
    backend: VfioBackend,
    /// The disks' images (open and locked), the taps, the vsock's socket (bound).
    virtio: OpenedVirtio,
    console: Console,
    exit: Arc<ExitChannel>,
    timeline: Arc<Timeline>,
}

impl Vm {
    /// Check everything that can be checked without KVM: sizes, counts, the kernel and
    /// initramfs files, the command line, and the passthrough preflight (the checks of
    /// `zhitong check`, on the host `ZHITONG_HOST_ROOT` names, else the real one); open the
    /// disks' images. `start`
    /// is what the boot timeline counts from.
    pub fn new(config: VmConfig, console: Console, start: Instant) -> Result<Self> {
        Self::on_host(config, &Host::from_env(), console, start)
    }

    /// [`Vm::new`] with the host's sysfs, /dev and /proc at the roots of `host`.
    pub fn on_host(
        config: VmConfig,
        host: &Host,
        console: Console,
        start: Instant,
    ) -> Result<Self> {
        config.validate(host_ram_bytes())?;
        // SAFETY: geteuid takes nothing and cannot fail.
        let euid = unsafe { libc::geteuid() };
        config.security.validate(euid).map_err(ConfigError::from)?;
        boot::check_kernel_file(&config.kernel.path)?;
        if let Some(path) = &config.kernel.initramfs {
            let unreadable = |source| boot::BootError::InitramfsUnreadable {
                path: path.clone(),
                source,
            };
            let meta = File::open(path)
                .and_then(|f| f.metadata())
                .map_err(unreadable)?;
            if !meta.is_file() {
                return Err(unreadable(std::io::Error::other("not a regular file")).into());
            }
        }
        boot::build_cmdline(&config.kernel.cmdline)?;
        let (passthrough, backend) = preflight(host, &config)?;
        let virtio = OpenedVirtio::open(&config)?;
        let seccomp = seccomp::Policy::new(config.security.seccomp)?;
        let exit = ExitChannel::with_seccomp(seccomp).map_err(Error::io("the exit event"))?;
        Ok(Self {
            config,
            passthrough,
            backend,
            virtio,
            console,
            exit: Arc::new(exit),
            timeline: Arc::new(Timeline::new(start)),
        })
    }

    pub fn timeline(&self) -> Arc<Timeline> {
        self.timeline.clone()
    }

    /// Boot the guest on a thread of its own and return a handle to it.
    pub fn start(self) -> Result<VmHandle> {
        let Vm {
            config,
            passthrough,
            backend,
            virtio,
            console,
            exit,
            timeline,
        } = self;
        if let Some(user) = config.security.user {
            privileges::forbid_new_privileges(user)?;
        }
        if let Some(limit) = config.timeout {
            start_run_timer(&exit, limit)?;
        }
        let shared = Arc::new(VmShared::new(exit, timeline));
        let vm_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("vm".into())
            .spawn(move || {
                // A panic unwinds through run_vm, whose locals release everything on the
                // way out; it is then reported as how the VM ended.
                let result = catch_unwind(AssertUnwindSafe(|| {
                    run_vm(
                        &config,
                        (&passthrough, backend),
                        virtio,
                        console,
                        &vm_shared,
                    )
                }))
                .unwrap_or_else(|panic| {
                    Ok(VmExit::Panicked {
                        thread: "vm".into(),
                        message: panic_message(panic.as_ref()),
                    })
                });
                let result = vm_shared.exit.outcome(result);
                vm_shared.timeline.mark(Milestone::Exit);
                vm_shared.set_state(VmState::Stopped);
                result
            })
            .map_err(Error::io("the VM thread"))?;
        Ok(VmHandle::new(shared, thread))
    }

    /// Boot the guest and run it to the end. Everything the VM holds is released before this
    /// returns, whatever the outcome.
    pub fn run(self) -> Result<VmExit> {
        self.start()?.wait()
    }
}

/// The host checks, once per VM: the free huge pages the RAM asks for; every device is
/// usable and its BARs fit the guest
/// (windows sized as `zhitong check` sizes them, from the host's physical address bits).
fn preflight(host: &Host, config: &VmConfig) -> Result<(Vec<CheckedDevice>, VfioBackend)> {
    if let Some(page) = config.machine.hugepages {
        let found = host::hugepages::check(host, config.machine.memory_bytes, page);
        if found.is_fail() {
            return Err(host::preflight::PreflightError(found).into());
        }
    }
    if config.devices.is_empty() {
        return Ok((
            Vec::new(),
            config.vfio_backend.unwrap_or(VfioBackend::Legacy),
        ));
    }
    let bdfs = config.device_bdfs();
    let needs_p2p = config.devices.iter().any(|d| d.p2p);
    let (checked, backend) = check_devices(host, &bdfs, config.vfio_backend, needs_p2p)?;
    let memory = config.machine.memory_bytes;
    let windows = PciWindows::for_guest(memory, host.phys_bits);
    check_guest_fits(host, &bdfs, memory, &windows)?;
    Ok((checked, backend))
}

/// `VmConfig::timeout`: a thread that ends the VM with `VmExit::Timeout` when it is still
/// running `limit` after `start`, and goes away as soon as the VM ends by itself. The stop is
/// the normal teardown path, so every device is released as after a poweroff.
fn start_run_timer(exit: &Arc<ExitChannel>, limit: std::time::Duration) -> Result<()> {
    let exit = exit.clone();
    std::thread::Builder::new()
        .name("run-timer".into())
        .spawn(move || {
            if seccomp::apply(ThreadKind::Timer, exit.seccomp()).is_err() {
                return;
            }
            if !exit.wait_timeout(limit) {
                exit.request(VmExit::Timeout(limit));
            }
        })
        .map(|_| ())
        .map_err(Error::io("the run timer"))
}

/// A VM's life as its steps. Each step's result is a local that owns what it made, and
/// locals drop in reverse order: whichever step fails (or when the guest ends), the vCPUs
/// stop first, then the devices are torn down in order, then guest memory and the VM go.
fn run_vm(
    config: &VmConfig,
    (passthrough, backend): (&[CheckedDevice], VfioBackend),
    virtio: OpenedVirtio,
    console: Console,
    shared: &VmShared,
) -> Result<VmExit> {
    let (exit, timeline) = (&shared.exit, &shared.timeline);
    let machine = config.machine;

    let kvm = kvm::open(machine.vcpus)?;
    let vm = Arc::new(kvm::create_vm(&kvm)?);
    timeline.mark(Milestone::VmCreated);

    let mem = memory::create_guest_memory(machine.memory_bytes, machine.hugepages)?;
    let ram_slots = memory::register_with_kvm(&vm, &mem)?;
    timeline.mark(Milestone::MemoryReady);

    let cpuid = kvm::supported_cpuid(&kvm)?;
    let windows = PciWindows::for_guest(machine.memory_bytes, guest_phys_bits(&cpuid));
    let entry = guest_boot::load(&mem, config, &PciHostConfig::from_windows(&windows))?;
    timeline.mark(Milestone::KernelLoaded);

    let mut devices = DeviceManager::new(&vm, windows, exit, timeline, console.output)?;
    shared.set_power_button(&devices.platform().power_button)?;
    let slots = SlotRange {
        first_free: ram_slots,
        max: kvm.get_nr_memslots() as u32,
    };
    let parts = VmParts {
        vm: &vm,
        mem: &mem,
        slots,
        exit,
        timeline,
    };
    devices.attach_passthrough(&parts, passthrough, &config.devices, backend)?;
    devices.attach_virtio(&parts, virtio, passthrough)?;
    if devices.has_passthrough() || devices.has_virtio() {
        timeline.mark(Milestone::DevicesReady);
    }
    if machine.dma_map == DmaMapStart::BeforeBoot {
        devices.wait_for_dma_mapping()?;
    }
    if crate::faults::fail_after_devices() {
        let injected = std::io::Error::other("injected fault: fail-after-devices");
        return Err(Error::io("the vCPUs")(injected));
    }
    let control = ControlInputs::new(console.input, devices.platform(), config.boot_timeout)?;
    // Everything that needs root is open; the guest runs as the unprivileged user.
    if let Some(user) = config.security.user {
        let pinned = if devices.has_passthrough() {
            machine.memory_bytes
        } else {
            0
        };
        privileges::drop_to(user, pinned)?;
    }

    let vcpus = vcpu::create_all(&vm, &cpuid, machine.vcpus, &mem, entry)?;
    let running = RunningVcpus::start(
        vcpus,
        &VcpuShared {
            buses: devices.buses().clone(),
            exit: exit.clone(),
            timeline: timeline.clone(),
            gate: Arc::new(RunGate::default()),
        },
    )?;
    let _ = shared.vcpus.set(running.set());
    shared.set_state(VmState::Running);

    // The control loop and the teardown run confined; setting up needed no filter.
    seccomp::apply(ThreadKind::Vm, exit.seccomp())?;
    let outcome = run_until_exit(exit, control);
    // Stop the vCPUs before taking the state lock: a pause holding it while it waits for a
    // vCPU to park gives up once the vCPUs stop.
    drop(running);
    shared.set_state(VmState::Stopping);
    // A failed DMA mapping stopped the VM: the failure is the outcome, as when it was made
    // before the start.
    if let Some(e) = devices.take_dma_error() {
        return Err(e);
    }
    outcome
}
