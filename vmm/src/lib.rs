//! zhitong's VMM as a library: build a [`VmConfig`], create a [`Vm`] with a [`Console`], and
//! [`Vm::run`] it until the guest powers off, reboots, crashes, or a [`Stopper`] ends it.

pub mod api;
pub mod config;
mod console;
mod control;
pub mod error;
pub mod exit;
mod exit_stats;
mod guest_boot;
mod handle;
pub mod host;
mod interrupts;
mod memory;
mod passthrough;
mod pci;
mod platform;
mod slots;
pub mod timeline;
mod vcpu;
mod vfio_devices;
mod vm;

pub use config::{KernelConfig, MachineConfig, VmConfig};
pub use console::Console;
pub use error::{Error, Result};
pub use exit::VmExit;
pub use handle::{ControlError, VmHandle, VmState};
pub use timeline::{Milestone, Timeline};
pub use vm::{Stopper, Vm};
