//! The host checks behind `zhitong check` and the preflight of `zhitong run`. Each check
//! returns [`Finding`]s whose text is the only place a message is written: `check` prints
//! them, `run` stops on the first failing one with the same line.
//!
//! Every path comes from a [`Host`] (sysfs, /dev, /proc roots), so the checks run against
//! fake trees in unit tests.

mod device;
mod host;

pub use device::{
    bars, device_chain, duplicate_device, reset, vfio_group_open_failed, VIABLE_DRIVERS,
};
pub use host::{
    interrupt_remapping, iommu, iommu_fix, kvm, kvm_open_failed, memlock, vfio_modules,
};

use devices::pci::Bdf;

use crate::hugepages::HugePageSize;
use crate::vfio_backend::VfioBackend;

use super::{Finding, Host, Status};

/// Everything `zhitong check` looks at: the host (and its free huge pages of `hugepages`,
/// when the guest's RAM is to be backed by them), then each device (in the order given),
/// the VFIO backend they would be opened through (`backend`, or the one chosen for them),
/// then whether the devices' BARs fit the guest's windows with `memory` bytes of RAM.
pub fn check_all(
    host: &Host,
    devices: &[Bdf],
    memory: u64,
    hugepages: Option<HugePageSize>,
    backend: Option<VfioBackend>,
    needs_p2p: bool,
) -> Vec<Finding> {
    // The backend decides whose allow_unsafe_interrupts counts: the one the devices bound
    // to vfio-pci would get (legacy when there is none to tell).
    let bound: Vec<Bdf> = devices
        .iter()
        .copied()
        .filter(|b| host.sysfs.driver(b).as_deref() == Some("vfio-pci"))
        .collect();
    let likely = crate::vfio_backend::choose(host, backend, &bound, needs_p2p)
        .unwrap_or(backend.unwrap_or(VfioBackend::Legacy));
    let mut findings = vec![
        kvm(host),
        iommu(host),
        vfio_modules(host),
        interrupt_remapping(host, likely),
        memlock(host, memory),
    ];
    findings.extend(hugepages.map(|size| crate::hugepages::check(host, memory, size)));
    let mut seen = Vec::new();
    let mut present = Vec::new();
    let mut usable = Vec::new();
    for &bdf in devices {
        if seen.contains(&bdf) {
            continue;
        }
        seen.push(bdf);
        let chain = device_chain(host, bdf);
        if chain
            .first()
            .is_some_and(|f| f.check != "device" || !f.is_fail())
        {
            present.push(bdf);
        }
        if !chain.iter().any(Finding::is_fail) {
            usable.push(bdf);
        }
        // Two functions of one group: say what holds for the group once.
        for f in chain {
            let said = findings
                .iter()
                .any(|o| o.check == f.check && o.message == f.message);
            if !said {
                findings.push(f);
            }
        }
    }
    findings.extend(present.iter().map(|&bdf| reset(&host.sysfs, bdf)));
    findings.push(crate::vfio_backend::finding(
        host, backend, &usable, needs_p2p,
    ));
    findings.extend(bars(
        &host.sysfs,
        &present,
        &arch::pci_windows::PciWindows::for_guest(memory, host.phys_bits),
        memory,
        host.phys_bits,
    ));
    findings
}

/// Ready when nothing failed.
pub fn ready(findings: &[Finding]) -> bool {
    !findings.iter().any(|f| f.status == Status::Fail)
}

#[cfg(test)]
mod tests;
