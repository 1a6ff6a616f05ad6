//! The legacy platform devices on the port I/O bus: COM1, the i8042 reset line, the ACPI
//! power-management registers, the guest marker port and the guest exit port; and the ACPI power button's line.

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
use devices::{Bus, GuestRequest, RequestSink};
use kvm_ioctls::VmFd;
use vmm_sys_util::eventfd::EventFd;

use crate::error::{Error, Result};
use crate::exit::{ExitChannel, VmExit};
use crate::timeline::{Milestone, Timeline};

/// Handles the VMM keeps on the platform devices.
pub struct Platform {
    pub serial: Arc<Mutex<SerialDevice>>,
    pub serial_signals: Arc<SerialSignals>,
    /// Set when the guest first writes to COM1 or the marker port: it is alive.
    pub guest_alive: Arc<AtomicBool>,
    /// Signalling it presses the ACPI power button (an irqfd on the GED's GSI).
    pub power_button: EventFd,
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

/// Create the devices, put them on `pio`, and wire COM1's interrupt to its IOAPIC pin.
pub fn attach(
    vm: &VmFd,
    pio: &Bus,
    exit: &Arc<ExitChannel>,
    timeline: &Arc<Timeline>,
    console_out: Box<dyn Write + Send>,
) -> Result<Platform> {
    let guest_alive = Arc::new(AtomicBool::new(false));
    let insert = |base: u16, len: u64, dev| {
        pio.insert(u64::from(base), len, dev)
            .map_err(|e| Error::io("the port I/O bus")(std::io::Error::other(e)))
    };

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
    insert(COM1_PORT, 8, serial.clone())?;

    insert(
        I8042_DATA_PORT,
        5,
        Arc::new(Mutex::new(I8042::new(request_sink(exit)))),
    )?;
    insert(
        ACPI_SLEEP_CONTROL_PORT,
        ACPI_PM_LEN,
        Arc::new(Mutex::new(AcpiPm::new(
            ACPI_S5_SLEEP_TYPE,
            ACPI_RESET_VALUE,
            request_sink(exit),
        ))),
    )?;

    let (timeline, alive) = (timeline.clone(), guest_alive.clone());
    let marker = GuestMarker::new(Box::new(move |value| {
        alive.store(true, Ordering::Relaxed);
        timeline.mark(Milestone::GuestMarker);
        log::debug!("guest marker {value:#x}");
    }));
    insert(GUEST_MARKER_PORT, 1, Arc::new(Mutex::new(marker)))?;
    insert(
        GUEST_EXIT_PORT,
        1,
        Arc::new(Mutex::new(GuestExit::new(request_sink(exit)))),
    )?;

    let power_button = EventFd::new(libc::EFD_NONBLOCK).map_err(Error::io("the power button"))?;
    vm.register_irqfd(&power_button, POWER_BUTTON_GSI)
        .map_err(Error::kvm("KVM_IRQFD (power button)"))?;

    Ok(Platform {
        serial,
        serial_signals,
        guest_alive,
        power_button,
    })
}
