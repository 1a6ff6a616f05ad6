//! Buses and the platform's devices. A device never knows the VM: it sees reads and writes at
//! offsets of its own range, raises interrupts through an `EventFd`, and reports guest
//! requests (power off, reset) through a callback the VMM gives it.

pub mod acpi_pm;
pub mod bus;
pub mod guest_exit;
pub mod i8042;
pub mod marker;
pub mod pci;
pub mod ratelimit;
pub mod serial;
pub mod services;
pub mod vfio;
pub mod virtio;

pub use bus::{Bus, BusDevice, BusError, WeakBusDevice};

/// What a guest asks of the machine through a platform device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestRequest {
    Poweroff,
    Reset,
    /// End the VM with this exit status (the guest exit port).
    ExitStatus(u8),
}

/// How devices deliver a `GuestRequest` to whoever runs the VM.
pub type RequestSink = Box<dyn Fn(GuestRequest) + Send>;
