//! A VM's life: check the configuration, create the KVM VM, its memory, devices and vCPUs,
//! run until the guest or the caller ends it, and tear everything down.

use std::fs::File;
use std::sync::Arc;
use std::time::Instant;

use arch::acpi::PciHostConfig;
use arch::pci_windows::{guest_phys_bits, PciWindows};
use devices::Bus;
use kvm_bindings::{kvm_pit_config, KVM_MAX_CPUID_ENTRIES, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::{Cap, Kvm, VmFd};

use crate::config::{host_ram_bytes, VmConfig};
use crate::console::Console;
use crate::control::{run_until_exit, ControlInputs};
use crate::error::{Error, Result};
use crate::exit::{ExitChannel, VmExit};
use crate::handle::{VmHandle, VmShared, VmState};
use crate::timeline::{Milestone, Timeline};
use crate::vcpu::{self, RunGate, VcpuSet, VcpuShared};
use crate::vfio_devices::{self, SlotRange};
use crate::{guest_boot, memory, pci, platform};

/// KVM needs three pages for the TSS on Intel; they sit in the MMIO hole, above the LAPIC.
const KVM_TSS_ADDRESS: usize = 0xfffb_d000;

/// Lets another thread end a running VM.
#[derive(Clone)]
pub struct Stopper(Arc<ExitChannel>);

impl Stopper {
    pub fn stop(&self, reason: impl Into<String>) {
        self.0.request(VmExit::Stopped {
            reason: reason.into(),
        });
    }
}

/// A configured VM, checked but not yet started.
pub struct Vm {
    config: VmConfig,
    console: Console,
    exit: Arc<ExitChannel>,
    timeline: Arc<Timeline>,
}

impl Vm {
    /// Check everything that can be checked without KVM: sizes, counts, the kernel and
    /// initramfs files, the command line. `start` is what the boot timeline counts from.
    pub fn new(config: VmConfig, console: Console, start: Instant) -> Result<Self> {
        config.machine.validate(host_ram_bytes())?;
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
        host::preflight::check_devices(&host::Host::from_env(), &config.devices)?;
        Ok(Self {
            config,
            console,
            exit: Arc::new(ExitChannel::new().map_err(Error::io("the exit event"))?),
            timeline: Arc::new(Timeline::new(start)),
        })
    }

    pub fn stopper(&self) -> Stopper {
        Stopper(self.exit.clone())
    }

    pub fn timeline(&self) -> Arc<Timeline> {
        self.timeline.clone()
    }

    /// Boot the guest on a thread of its own and return a handle to it.
    pub fn start(self) -> Result<VmHandle> {
        let Vm {
            config,
            console,
            exit,
            timeline,
        } = self;
        if let Some(limit) = config.timeout {
            start_run_timer(&exit, limit)?;
        }
        let shared = Arc::new(VmShared::new(exit, timeline));
        let vm_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("vm".into())
            .spawn(move || {
                let result = run_vm(&config, console, &vm_shared);
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

/// `VmConfig::timeout`: a thread that ends the VM with `VmExit::Timeout` when it is still
/// running `limit` after `start`, and goes away as soon as the VM ends by itself. The stop is
/// the normal teardown path, so every device is released as after a poweroff.
fn start_run_timer(exit: &Arc<ExitChannel>, limit: std::time::Duration) -> Result<()> {
    let exit = exit.clone();
    std::thread::Builder::new()
        .name("run-timer".into())
        .spawn(move || {
            if !exit.wait_timeout(limit) {
                exit.request(VmExit::Timeout(limit));
            }
        })
        .map(|_| ())
        .map_err(Error::io("the run timer"))
}

fn run_vm(config: &VmConfig, console: Console, shared: &VmShared) -> Result<VmExit> {
    let (exit, timeline) = (&shared.exit, &shared.timeline);
    let machine = config.machine;
    let kvm = open_kvm(machine.vcpus)?;
    let vm = Arc::new(create_vm(&kvm)?);
    timeline.mark(Milestone::VmCreated);

    let mem = memory::create_guest_memory(machine.memory_bytes)?;
    let ram_slots = memory::register_with_kvm(&vm, &mem)?;
    timeline.mark(Milestone::MemoryReady);

    let cpuid = kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(Error::kvm("KVM_GET_SUPPORTED_CPUID"))?;
    let windows = PciWindows::for_guest(machine.memory_bytes, guest_phys_bits(&cpuid));
    let entry = guest_boot::load(&mem, config, &PciHostConfig::from_windows(&windows))?;
    timeline.mark(Milestone::KernelLoaded);

    let pio = Arc::new(Bus::new());
    let mmio = Arc::new(Bus::new());
    let platform = platform::attach(&vm, &pio, exit, timeline, console.output)?;
    let button = platform
        .power_button
        .try_clone()
        .map_err(Error::io("the power button"))?;
    let _ = shared.power_button.set(Box::new(move || {
        let _ = button.write(1);
    }));
    let pci_root = pci::create_root(&pio, &mmio, windows)?;
    let passed_through = vfio_devices::attach(
        &vm,
        &mem,
        &pci_root,
        &config.devices,
        SlotRange {
            first_free: ram_slots,
            max: kvm.get_nr_memslots() as u32,
        },
    )?;
    if passed_through.is_some() {
        timeline.mark(Milestone::DevicesReady);
    }
    let control_inputs = ControlInputs {
        console_in: console.input,
        serial: platform.serial.clone(),
        input_drained: platform
            .serial_signals
            .input_drained
            .try_clone()
            .map_err(Error::io("the COM1 input"))?,
        boot_timeout: config.boot_timeout,
        guest_alive: platform.guest_alive.clone(),
    };

    let vcpus = (0..machine.vcpus)
        .map(|id| vcpu::create_vcpu(&vm, &cpuid, id, machine.vcpus, &mem, entry))
        .collect::<Result<Vec<_>>>()?;

    let vcpu_shared = VcpuShared {
        pio,
        mmio,
        exit: exit.clone(),
        timeline: timeline.clone(),
        gate: Arc::new(RunGate::default()),
    };
    let outcome = VcpuSet::start(vcpus, &vcpu_shared).and_then(|set| {
        let _ = shared.vcpus.set(set.clone());
        shared.set_state(VmState::Running);
        let outcome = run_until_exit(exit, control_inputs);
        shared.set_state(VmState::Stopping);
        set.stop();
        outcome
    });
    if let Some(devices) = passed_through {
        devices.release(&mem);
    }
    // The PCI root and the buses hold each other (the root maps BARs on them, they route
    // config cycles to it): empty the buses so everything on them, VFIO devices and their
    // group files included, is closed now and not leaked. The next VM in this process (zhitong
    // test, a control plane) can then open the same devices.
    vcpu_shared.pio.clear();
    vcpu_shared.mmio.clear();
    drop(pci_root);
    outcome
}

/// Open /dev/kvm and check it can run this VM.
fn open_kvm(vcpus: u8) -> Result<Kvm> {
    let kvm = Kvm::new().map_err(Error::KvmOpen)?;
    for (cap, name) in [
        (Cap::Irqchip, "an in-kernel irqchip (KVM_CAP_IRQCHIP)"),
        (Cap::UserMemory, "user memory regions (KVM_CAP_USER_MEMORY)"),
        (Cap::Irqfd, "irqfd (KVM_CAP_IRQFD)"),
        (Cap::Pit2, "the in-kernel PIT (KVM_CAP_PIT2)"),
    ] {
        if !kvm.check_extension(cap) {
            return Err(Error::KvmCapability(name));
        }
    }
    let max = kvm.get_max_vcpus();
    if usize::from(vcpus) > max {
        return Err(Error::TooManyVcpus { got: vcpus, max });
    }
    Ok(kvm)
}

fn create_vm(kvm: &Kvm) -> Result<VmFd> {
    let vm = kvm.create_vm().map_err(Error::kvm("KVM_CREATE_VM"))?;
    vm.set_tss_address(KVM_TSS_ADDRESS)
        .map_err(Error::kvm("KVM_SET_TSS_ADDR"))?;
    vm.create_irq_chip()
        .map_err(Error::kvm("KVM_CREATE_IRQCHIP"))?;
    let pit = kvm_pit_config {
        flags: KVM_PIT_SPEAKER_DUMMY,
        ..Default::default()
    };
    vm.create_pit2(pit).map_err(Error::kvm("KVM_CREATE_PIT2"))?;
    Ok(vm)
}
