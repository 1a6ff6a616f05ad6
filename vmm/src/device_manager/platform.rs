//! The legacy platform devices on the port I/O bus: COM1, the i8042 reset line, the ACPI
//! power-management registers, the guest marker port and the guest exit port; and the ACPI
//! power button's line. This module owns them; the bus only refers to them.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use arch::layout::{
    ACPI_RESET_VALUE, ACPI_S5_SLEEP_TYPE, ACPI_SLEEP_CONTROL_PORT, COM1_IRQ, COM1_PORT,
    GUEST_EXIT_PORT, GUEST_MARKER_PORT, I8042_DATA_PORT, POWER_BUTTON_GSI,
};
use devices::acpi_pm::{AcpiPm, ACPI_PM_LEN};
use devices::guest_exit::GuestExit;
use devices::i8042::I8042;
use devices::marker::GuestMarker;
use devices::serial::{SerialDevice, SerialSignals, Unbuffered};
use devices::{Bus, BusDevice, GuestRequest, RequestSink, WeakBusDevice};
use kvm_ioctls::VmFd;
use vmm_sys_util::eventfd::EventFd;

use crate::error::{Error, Result};
use crate::exit::{ExitChannel, VmExit};
use crate::timeline::{Milestone, Timeline};

type Owned = Arc<Mutex<dyn BusDevice>>;

/// The platform devices and the handles the VMM keeps on them.
pub struct PlatformDevices {
    pub serial: Arc<Mutex<SerialDevice>>,
    pub serial_signals: Arc<SerialSignals>,
    /// Set when the guest first writes to COM1 or the marker port: it is alive.
    pub guest_alive: Arc<AtomicBool>,
    /// Signalling it presses the ACPI power button (an irqfd on the GED's GSI).
    pub power_button: EventFd,
    /// i8042, ACPI PM, marker and exit port: nothing outside uses them, the bus needs them
    /// alive.
    _others: Vec<Owned>,
}

fn request_sink(exit: &Arc<ExitChannel>) -> RequestSink {
    let exit = exit.clone();
    Box::new(move |request| {
        exit.request(match request {
            GuestRequest::Poweroff => VmExit::Poweroff,
            GuestRequest::Reset => VmExit::Reset,
            GuestRequest::ExitStatus(status) => VmExit::GuestStatus(status),
        })
    })
}

fn insert(pio: &Bus, base: u16, len: u64, device: WeakBusDevice) -> Result<()> {
    pio.insert(u64::from(base), len, device)
        .map_err(|e| Error::io("the port I/O bus")(std::io::Error::other(e)))
}

impl PlatformDevices {
    /// Create the devices, put them on `pio`, and wire COM1's interrupt and the power
    /// button to their IOAPIC pins.
    pub fn new(
        vm: &VmFd,
        pio: &Bus,
        exit: &Arc<ExitChannel>,
        timeline: &Arc<Timeline>,
        console_out: Box<dyn Write + Send>,
    ) -> Result<Self> {
        let guest_alive = Arc::new(AtomicBool::new(false));

        let irq = EventFd::new(libc::EFD_NONBLOCK).map_err(Error::io("the COM1 interrupt"))?;
        vm.register_irqfd(&irq, COM1_IRQ)
            .map_err(Error::kvm("KVM_IRQFD (COM1)"))?;
        let serial_signals = Arc::new(SerialSignals {
            input_drained: EventFd::new(libc::EFD_NONBLOCK).map_err(Error::io("the COM1 input"))?,
            touched: guest_alive.clone(),
        });
        let serial = Arc::new(Mutex::new(SerialDevice::new(
            irq,
            serial_signals.clone(),
            Box::new(Unbuffered(console_out)),
        )));
        insert(pio, COM1_PORT, 8, Arc::downgrade(&serial) as WeakBusDevice)?;

        let (marker_timeline, alive) = (timeline.clone(), guest_alive.clone());
        let marker = GuestMarker::new(Box::new(move |value| {
            alive.store(true, Ordering::Relaxed);
            marker_timeline.mark(Milestone::GuestMarker);
            log::debug!("guest marker {value:#x}");
        }));
        let others: [(u16, u64, Owned); 4] = [
            (
                I8042_DATA_PORT,
                5,
                Arc::new(Mutex::new(I8042::new(request_sink(exit)))),
            ),
            (
                ACPI_SLEEP_CONTROL_PORT,
                ACPI_PM_LEN,
                Arc::new(Mutex::new(AcpiPm::new(
                    ACPI_S5_SLEEP_TYPE,
                    ACPI_RESET_VALUE,
                    request_sink(exit),
                ))),
            ),
            (GUEST_MARKER_PORT, 1, Arc::new(Mutex::new(marker))),
            (
                GUEST_EXIT_PORT,
                1,
                Arc::new(Mutex::new(GuestExit::new(request_sink(exit)))),
            ),
        ];
        let mut owned = Vec::with_capacity(others.len());
        for (base, len, device) in others {
            insert(pio, base, len, Arc::downgrade(&device))?;
            owned.push(device);
        }

        let power_button =
            EventFd::new(libc::EFD_NONBLOCK).map_err(Error::io("the power button"))?;
        vm.register_irqfd(&power_button, POWER_BUTTON_GSI)
            .map_err(Error::kvm("KVM_IRQFD (power button)"))?;

        Ok(Self {
            serial,
            serial_signals,
            guest_alive,
            power_button,
            _others: owned,
        })
    }
}
