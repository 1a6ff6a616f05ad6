//! zhitong's VMM as a library: build a [`VmConfig`], create a [`Vm`] with a [`Console`], and
//! [`Vm::start`] it; the [`VmHandle`] controls it and waits until the guest powers off,
//! reboots, crashes, or a caller stops it ([`VmHandle::stop`], [`VmHandle::stop_for_signal`]).
//!
//! ```no_run
//! use std::time::{Duration, Instant};
//! use vmm::{Console, Vm, VmConfig, VmExit};
//!
//! # fn main() -> vmm::Result<()> {
//! let mut config = VmConfig::new("/boot/vmlinuz");
//! config.kernel.initramfs = Some("/boot/initrd.img".into());
//! config.kernel.cmdline = "quiet".into();
//! config.machine.vcpus = 2;
//! config.machine.memory_bytes = 1 << 30;
//!
//! // Checks everything that needs no KVM (files, sizes, devices); the console goes to any sink.
//! let vm = Vm::new(config, Console::stdout(), Instant::now())?;
//! let handle = vm.start()?; // the VM runs on a thread of its own
//! println!("{}", handle.state()); // starting, running, paused, stopping, stopped
//!
//! // The ACPI power button now; a forced stop if the guest is still up 30 s later.
//! handle.shutdown(Duration::from_secs(30)).ok();
//! let timeline = handle.timeline();
//! match handle.wait()? {
//!     VmExit::Poweroff => println!("powered off; {}", timeline.to_json()),
//!     other => println!("ended: {other:?}"),
//! }
//! # Ok(())
//! # }
//! ```
//!
//! [`api`] serves the same controls over HTTP on a Unix socket (`zhitong run --api-socket`),
//! and `examples/control_plane.rs` runs two VMs side by side.

pub mod api;
pub mod config;
mod console;
mod control;
mod device_manager;
pub mod error;
pub mod exit;
mod exit_stats;
pub mod faults;
mod guest_boot;
mod handle;
mod interrupts;
mod kvm;
pub mod matrix;
mod memory;
mod privileges;
pub mod seccomp;
mod slots;
mod sync;
pub mod timeline;
mod vcpu;
mod vm;

pub use config::{DmaMapStart, KernelConfig, MachineConfig, VmConfig};
pub use console::{Console, Timestamped};
pub use devices::pci::Bdf;
pub use error::{Error, Result};
pub use exit::VmExit;
pub use handle::{ControlError, VmHandle, VmState};
pub use timeline::{Milestone, Timeline};
pub use vm::Vm;
