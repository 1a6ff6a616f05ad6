//! PCI: the device trait every PCI function implements, BAR descriptions, and (in the
//! submodules) config-space helpers, the host bridge, the root complex reached through
//! 0xCF8/0xCFC and ECAM, and BAR allocation.
//!
//! Who does what:
//! - a [`PciDevice`] owns its config space (shadowing what it must) and answers guest
//!   accesses to its BARs that trap (are not directly mapped);
//! - the root complex routes config accesses, and after every config write compares the
//!   device's [`PciDevice::bars`] with what is currently decoded: a BAR that starts decoding
//!   (or moves) is put on the MMIO/PIO bus at its new address and the device is told
//!   ([`PciDevice::bar_mapped`]) so it can map its direct-access parts (VFIO: KVM memory
//!   slots); a BAR that stops decoding is taken off the bus and [`PciDevice::bar_unmapped`].
//!
//! A device never knows the VM: it reaches KVM only through the traits in
//! [`crate::services`].

use std::fmt;

pub use address::{BadBdf, Bdf};

pub mod address;
pub mod allocator;
pub mod config;
pub mod host_bridge;
pub mod msix_entry;
pub mod root;

/// What a BAR decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BarKind {
    Io,
    Mem32,
    Mem64,
    /// The expansion ROM BAR (config offset 0x30), always 32-bit memory.
    Rom,
}

/// Index of the expansion ROM in [`PciDevice::bars`] (BARs 0-5 are the standard ones).
pub const ROM_BAR_INDEX: u8 = 6;

/// One BAR as the guest currently sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bar {
    /// 0-5, or [`ROM_BAR_INDEX`]. A 64-bit BAR is reported once, at its lower index.
    pub index: u8,
    pub kind: BarKind,
    pub prefetchable: bool,
    /// Size in bytes, a power of two.
    pub size: u64,
    /// The address programmed by the guest (or the VMM at start-up); 0 = unassigned.
    pub addr: u64,
    /// Whether the BAR decodes right now: its command-register enable bit (I/O or memory;
    /// for the ROM also its own enable bit) is set and the address is assigned.
    pub decoding: bool,
}

impl Bar {
    pub fn is_io(&self) -> bool {
        self.kind == BarKind::Io
    }
}

/// A device-side failure the root reports (the guest keeps running; the BAR stays off).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PciError(pub String);

impl fmt::Display for PciError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PciError {}

/// A PCI function on the root bus.
///
/// The root ([`root::PciRoot`]) calls every method from vCPU threads with the device's
/// mutex held, and calls `bars`/`bar_mapped`/`bar_unmapped` right after each
/// `config_write`, and after a `bar_write` that `take_config_changed` reports (see [`root`]
/// for the lock order). A device must never call back into
/// the root (config accesses, `add_device`) from these methods.
pub trait PciDevice: Send {
    /// Read the dword at `offset` (4-byte aligned, below 4096).
    fn config_read(&mut self, offset: u16) -> u32;

    /// Write 1, 2 or 4 bytes at `offset` (naturally aligned, below 4096).
    fn config_write(&mut self, offset: u16, data: &[u8]);

    /// The device's BARs (ROM included when present) as currently programmed.
    fn bars(&self) -> Vec<Bar>;

    /// `bar` now decodes at `bar.addr`: map whatever the device serves without exits.
    fn bar_mapped(&mut self, bar: &Bar) -> Result<(), PciError> {
        let _ = bar;
        Ok(())
    }

    /// `bar` (as it was when mapped) no longer decodes at `bar.addr`.
    fn bar_unmapped(&mut self, bar: &Bar) {
        let _ = bar;
    }

    /// A guest read of BAR `index` at `offset` that trapped.
    fn bar_read(&mut self, index: u8, offset: u64, data: &mut [u8]);

    /// A guest write to BAR `index` at `offset` that trapped.
    fn bar_write(&mut self, index: u8, offset: u64, data: &[u8]);

    /// Whether a trapped BAR access changed config space since last asked (a device whose
    /// BAR mirrors its config space): the root then re-syncs BAR decoding as after a
    /// `config_write`.
    fn take_config_changed(&mut self) -> bool {
        false
    }

    /// Set BAR `index` to `addr` as firmware would at start-up (before the guest runs).
    /// The root calls this once per BAR after allocating addresses.
    fn assign_bar(&mut self, index: u8, addr: u64);

    /// Where the device would have its BARs, (index, address), if free: a passed-through
    /// function's host addresses. None by default.
    fn preferred_bar_addresses(&self) -> Vec<(u8, u64)> {
        Vec::new()
    }

    /// A short name for messages (e.g. the host BDF of a passed-through device).
    fn name(&self) -> String;
}
