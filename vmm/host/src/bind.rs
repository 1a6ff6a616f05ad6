//! `zhitong bind` / `zhitong unbind`: hand a device and every endpoint of its IOMMU group to
//! vfio-pci (driver_override, unbind, drivers_probe), recording each one's previous driver,
//! and give them back. Both are idempotent.
//!
//! Three steps: [`read_group`] reads the group, [`plan()`] decides (every rule, no I/O),
//! [`apply()`] performs through a [`HostWriter`] so unit tests simulate the kernel on a fake
//! tree.
//!
//! What is never moved: bridges (VFIO accepts a group whose bridges keep their driver, and a
//! bridge's driver serves the devices behind it). What is refused: a member below which a
//! disk is mounted, used as swap, or held by device-mapper/md (`--force` overrides).
//! What is warned about: a member that is the host's boot display.

mod apply;
mod plan;
mod read;
mod writer;

use devices::pci::Bdf;

pub use apply::apply;
pub use plan::{plan, Action, Group, Member, Plan, RecordError, Request};
pub use read::read_group;
pub use writer::{HostWriter, RealWriter};

use super::{Finding, Host};

/// What `bind` or `unbind` did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BindReport {
    pub group: Option<u32>,
    /// One line per group member.
    pub lines: Vec<String>,
    pub warnings: Vec<String>,
    /// The group's endpoints now on vfio-pci (bind): what to pass with --device.
    pub devices: Vec<Bdf>,
    /// Whether anything was written.
    pub changed: bool,
}

fn fail(check: &'static str, bdf: Bdf, message: String, fix: impl Into<String>) -> Finding {
    Finding::fail(check, message, fix).on(bdf)
}

/// Bind `bdf` and every endpoint of its IOMMU group to vfio-pci.
pub fn bind(
    host: &Host,
    w: &mut dyn HostWriter,
    bdf: Bdf,
    force: bool,
) -> Result<BindReport, Finding> {
    let request = Request::Bind { force };
    let group = read_group(host, bdf, request)?;
    let mut report = apply(host, w, &plan(&group, request)?)?;
    report.lines.sort();
    Ok(report)
}

/// Give `bdf`'s IOMMU group back: every member `bind` moved returns to the driver (and
/// driver_override) it had; a member on vfio-pci that `bind` did not move is handed to
/// whatever driver the kernel picks.
pub fn unbind(host: &Host, w: &mut dyn HostWriter, bdf: Bdf) -> Result<BindReport, Finding> {
    let group = read_group(host, bdf, Request::Unbind)?;
    apply(host, w, &plan(&group, Request::Unbind)?)
}

#[cfg(test)]
mod tests;
