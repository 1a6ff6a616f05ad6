//! Performing a [`Plan`]: each action becomes sysfs writes through a [`HostWriter`] (or a
//! record written or removed), and the steps that check a result read sysfs back.

use std::io;
use std::path::Path;

use devices::pci::Bdf;

use super::plan::{Action, Plan, VFIO_PCI};
use super::{fail, BindReport, HostWriter};
use crate::state::BindState;
use crate::{Finding, Host};

/// Writes for one command: turns failures into findings and notes that something changed.
struct Writes<'a> {
    w: &'a mut dyn HostWriter,
    check: &'static str,
    bdf: Bdf,
    changed: bool,
}

impl Writes<'_> {
    fn write(&mut self, path: &Path, value: &str) -> Result<(), Finding> {
        self.try_write(path, value)
            .map_err(|e| write_failed(self.check, self.bdf, path, value, &e))
    }

    fn try_write(&mut self, path: &Path, value: &str) -> io::Result<()> {
        self.changed = true;
        self.w.write(path, value)
    }
}

fn write_failed(check: &'static str, bdf: Bdf, path: &Path, value: &str, e: &io::Error) -> Finding {
    let fix = match e.raw_os_error() {
        Some(libc::EACCES) | Some(libc::EPERM) => "run it as root",
        _ => "see 'dmesg | tail' for what the kernel said",
    };
    fail(
        check,
        bdf,
        format!(
            "writing '{}' to {} failed: {e}",
            value.trim(),
            path.display()
        ),
        fix,
    )
}

/// Perform `plan` on `host`; stops at the first failure with its finding.
pub fn apply(host: &Host, w: &mut dyn HostWriter, plan: &Plan) -> Result<BindReport, Finding> {
    let sys = &host.sysfs;
    let state = BindState::new(host.bind_state_dir());
    let (check, bdf) = (plan.check, plan.requested);
    let mut writes = Writes {
        w,
        check,
        bdf,
        changed: false,
    };
    let mut report = BindReport {
        group: Some(plan.group),
        warnings: plan.warnings.clone(),
        devices: plan.devices.clone(),
        ..Default::default()
    };
    let driver_of = |m: &Bdf| sys.driver(m);
    for action in &plan.actions {
        match action {
            Action::Line(line) => report.lines.push(line.clone()),
            Action::LoadVfioPci => ensure_vfio_pci(host, writes.w, bdf)?,
            Action::SaveRecord(record) => state.save(record).map_err(|e| {
                fail(
                    check,
                    bdf,
                    format!(
                        "cannot record {}'s driver in {}: {e}",
                        record.bdf,
                        state.path(&record.bdf).display()
                    ),
                    "run it as root",
                )
            })?,
            Action::SetOverride(m, driver) => writes.write(
                &sys.device_dir(m).join("driver_override"),
                // A lone newline clears the override.
                driver.as_deref().unwrap_or("\n"),
            )?,
            Action::Detach(m) => {
                writes.write(&sys.device_dir(m).join("driver/unbind"), &m.to_string())?
            }
            Action::Probe(m) => writes.write(&sys.drivers_probe(), &m.to_string())?,
            Action::AttachTo(m, driver) => {
                let bind = sys.driver_dir(driver).join("bind");
                if !bind.exists() || writes.try_write(&bind, &m.to_string()).is_err() {
                    writes.write(&sys.drivers_probe(), &m.to_string())?;
                }
            }
            Action::ExpectVfio { bdf: m, line } => {
                let now = driver_of(m);
                if now.as_deref() != Some(VFIO_PCI) {
                    return Err(fail(
                        check,
                        bdf,
                        format!(
                            "{m} did not bind to vfio-pci (its driver is now {})",
                            now.as_deref().unwrap_or("none")
                        ),
                        format!(
                            "see 'dmesg | tail' for why; 'zhitong unbind {bdf}' gives the group back"
                        ),
                    ));
                }
                report.lines.push(line.clone());
            }
            Action::ExpectRestored { bdf: m, desc, want } => {
                let now = driver_of(m);
                let wanted = want.as_deref().unwrap_or("no driver");
                let got = now.as_deref().unwrap_or("no driver");
                if now == *want {
                    report.lines.push(format!("{desc}: vfio-pci -> {wanted}"));
                } else {
                    report.lines.push(format!("{desc}: vfio-pci -> {got}"));
                    report.warnings.push(format!(
                        "{m} was on {wanted} before 'zhitong bind' but is now on {got}; load that driver (modprobe {wanted}) and run: echo {m} > /sys/bus/pci/drivers_probe"
                    ));
                }
            }
            Action::ReportChosen { bdf: m, desc } => report.lines.push(format!(
                "{desc}: vfio-pci -> {} (no record of an earlier driver: the kernel chose)",
                driver_of(m).as_deref().unwrap_or("no driver")
            )),
            Action::RemoveRecord(m) => state.remove(m).map_err(|e| {
                fail(
                    check,
                    bdf,
                    format!("cannot remove {}: {e}", state.path(m).display()),
                    "run it as root",
                )
            })?,
        }
    }
    report.changed = writes.changed;
    Ok(report)
}

/// Load vfio-pci (and the type1 backend) when the PCI bus does not know the driver yet.
fn ensure_vfio_pci(host: &Host, w: &mut dyn HostWriter, bdf: Bdf) -> Result<(), Finding> {
    let sys = &host.sysfs;
    if !sys.module_loaded("vfio_iommu_type1") {
        // Best effort: `zhitong check` reports it if it is still missing.
        let _ = w.modprobe("vfio_iommu_type1");
    }
    if sys.driver_dir(VFIO_PCI).exists() {
        return Ok(());
    }
    let outcome = w.modprobe("vfio-pci");
    if sys.driver_dir(VFIO_PCI).exists() {
        return Ok(());
    }
    let why = match outcome {
        Err(e) => format!("modprobe vfio-pci failed: {e}"),
        Ok(()) => format!(
            "modprobe vfio-pci ran but {} did not appear",
            sys.driver_dir(VFIO_PCI).display()
        ),
    };
    Err(fail(
        "bind",
        bdf,
        why,
        "install this kernel's modules (vfio-pci, CONFIG_VFIO_PCI) and run it as root",
    ))
}
