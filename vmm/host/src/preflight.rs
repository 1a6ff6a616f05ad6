//! What `zhitong run` checks before it touches anything: the same findings as
//! `zhitong check` (see [`super::checks`]), stopping at the first failure with its line.

use std::path::PathBuf;
use std::sync::Mutex;

use arch::pci_windows::PciWindows;

use super::checks::{self, device_chain, duplicate_device};
use devices::pci::Bdf;

use crate::vfio_backend::VfioBackend;

use super::{Finding, Host, Status};

/// A failed check: its finding prints as "cause; fix".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PreflightError(pub Finding);

/// A device that passed the checks, with what opening it takes: the VM checks once, when it
/// is made, and opens from these later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedDevice {
    pub bdf: Bdf,
    /// Its IOMMU group: /dev/vfio/GROUP.
    pub group: u32,
    /// Its sysfs directory (`host.sysfs.device_dir(&bdf)`), which VFIO opens it by.
    pub sysfs_dir: PathBuf,
}

fn first_failure(findings: impl IntoIterator<Item = Finding>) -> Result<(), PreflightError> {
    // `zhitong test` makes many VMs in one process: each warning is logged once.
    static WARNED: Mutex<Vec<String>> = Mutex::new(Vec::new());
    for f in findings {
        match f.status {
            Status::Fail => return Err(PreflightError(f)),
            Status::Warn => {
                let line = f.to_string();
                let mut warned = WARNED.lock().unwrap_or_else(|e| e.into_inner());
                if !warned.contains(&line) {
                    log::warn!("{line}");
                    warned.push(line);
                }
            }
            Status::Ok => log::debug!("{f}"),
        }
    }
    Ok(())
}

/// Check every device: it exists, the host IOMMU put it in a group, it is bound to vfio-pci,
/// every other endpoint of its group is bound to a VFIO-compatible driver or to none, and its
/// /dev/vfio node opens; then choose the VFIO backend (`requested`, or the one the host and
/// devices allow; `needs_p2p`: a device has p2p=on), and check that VFIO is loaded and
/// interrupts can be remapped (or the backend allows unsafe interrupts). Every path comes
/// from `host`, as for `zhitong check`.
pub fn check_devices(
    host: &Host,
    devices: &[Bdf],
    requested: Option<VfioBackend>,
    needs_p2p: bool,
) -> Result<(Vec<CheckedDevice>, VfioBackend), PreflightError> {
    if devices.is_empty() {
        return Ok((Vec::new(), requested.unwrap_or(VfioBackend::Legacy)));
    }
    for (i, bdf) in devices.iter().enumerate() {
        if devices[..i].contains(bdf) {
            return Err(PreflightError(duplicate_device(*bdf)));
        }
    }
    let mut checked = Vec::with_capacity(devices.len());
    for &bdf in devices {
        first_failure(device_chain(host, bdf))?;
        // The chain passed, so the group is there.
        let group = host.sysfs.iommu_group(&bdf).unwrap_or_default();
        checked.push(CheckedDevice {
            bdf,
            group,
            sysfs_dir: host.sysfs.device_dir(&bdf),
        });
    }
    let backend =
        crate::vfio_backend::choose(host, requested, devices, needs_p2p).map_err(PreflightError)?;
    first_failure([
        checks::vfio_modules(host),
        checks::interrupt_remapping(host, backend),
    ])?;
    Ok((checked, backend))
}

/// The checks that need the guest's size: RLIMIT_MEMLOCK covers `memory` bytes of RAM, and
/// the devices' BARs fit `windows` (the ones the VM built).
pub fn check_guest_fits(
    host: &Host,
    devices: &[Bdf],
    memory: u64,
    windows: &PciWindows,
) -> Result<(), PreflightError> {
    // The window reaches to the top of the guest's physical address space.
    let phys_bits = windows.mmio64.map_or(host.phys_bits, |w| {
        (w.start + w.size).trailing_zeros() as u8
    });
    first_failure(
        std::iter::once(checks::memlock(host, memory)).chain(checks::bars(
            &host.sysfs,
            devices,
            windows,
            memory,
            phys_bits,
        )),
    )
}

#[cfg(test)]
mod tests;
