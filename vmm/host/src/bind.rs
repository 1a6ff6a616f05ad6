//! `zhitong bind` / `zhitong unbind`: hand a device and every endpoint of its IOMMU group to
//! vfio-pci (driver_override, unbind, drivers_probe), recording each one's previous driver,
//! and give them back. Both are idempotent. Writes go through a [`HostWriter`] so unit tests
//! simulate the kernel on a fake tree.
//!
//! What is never moved: bridges (VFIO accepts a group whose bridges keep their driver, and a
//! bridge's driver serves the devices behind it). What is refused: a member below which a
//! disk is mounted, used as swap, or held by device-mapper/md (`--force` overrides).
//! What is warned about: a member that is the host's boot display.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::Path;
use std::process::Command;

use super::checks::VIABLE_DRIVERS;
use super::pci_class::class_name;
use super::state::{BindRecord, BindState};
use devices::pci::Bdf;

use super::{Finding, Host, Sysfs};

const VFIO_PCI: &str = "vfio-pci";

/// The side effects of binding: sysfs writes and loading a module.
pub trait HostWriter {
    /// Write `value` to the sysfs attribute at `path` (one write).
    fn write(&mut self, path: &Path, value: &str) -> io::Result<()>;
    /// `modprobe MODULE`.
    fn modprobe(&mut self, module: &str) -> io::Result<()>;
}

/// The real host.
pub struct RealWriter;

impl HostWriter for RealWriter {
    fn write(&mut self, path: &Path, value: &str) -> io::Result<()> {
        // sysfs takes the whole value in a single write().
        OpenOptions::new()
            .write(true)
            .open(path)?
            .write_all(value.as_bytes())
    }

    fn modprobe(&mut self, module: &str) -> io::Result<()> {
        let out = Command::new("modprobe").arg(module).output()?;
        if out.status.success() {
            return Ok(());
        }
        let err = String::from_utf8_lossy(&out.stderr);
        Err(io::Error::other(
            err.lines()
                .next()
                .unwrap_or("modprobe failed")
                .trim()
                .to_owned(),
        ))
    }
}

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

fn describe(sys: &Sysfs, bdf: &Bdf) -> String {
    match sys.hex_attr(bdf, "class") {
        Some(class) => format!("{bdf} ({})", class_name(class)),
        None => bdf.to_string(),
    }
}

/// The device's group and its members; refuses devices that are missing, bridges, or
/// without an IOMMU group.
fn group_of(host: &Host, bdf: Bdf, check: &'static str) -> Result<(u32, Vec<Bdf>), Finding> {
    let sys = &host.sysfs;
    if !sys.exists(&bdf) {
        return Err(fail(
            check,
            bdf,
            format!("no PCI device {bdf} on this host"),
            "list them with 'zhitong devices'",
        ));
    }
    if !sys.is_endpoint(&bdf) || sys.is_bridge_class(&bdf) {
        return Err(fail(
            check,
            bdf,
            format!("{bdf} is a bridge: bridges stay with the host"),
            "bind the devices behind it instead (see 'zhitong devices')",
        ));
    }
    let Some(group) = sys.iommu_group(&bdf) else {
        return Err(fail(
            check,
            bdf,
            format!("{bdf} has no IOMMU group: the host IOMMU is off, so vfio-pci cannot take it"),
            super::checks::iommu_fix(host),
        ));
    };
    let mut members = sys.group_members(group);
    if !members.contains(&bdf) {
        members.push(bdf);
        members.sort();
    }
    Ok((group, members))
}

/// Disks below `bdf` that the host uses: (disk, how).
fn disks_in_use(host: &Host, bdf: &Bdf) -> Vec<(String, String)> {
    let sys = &host.sysfs;
    let first_fields = |file: &str| -> Vec<(String, String)> {
        std::fs::read_to_string(host.proc_path(file))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                Some((f.next()?.to_owned(), f.next()?.to_owned()))
            })
            .collect()
    };
    let mounts = first_fields("self/mounts");
    let swaps = first_fields("swaps");
    let mut used = Vec::new();
    for name in sys.block_devices_below(bdf) {
        let dev = format!("/dev/{name}");
        if let Some((_, at)) = mounts.iter().find(|(d, _)| *d == dev) {
            used.push((name.clone(), format!("mounted at {at}")));
        } else if swaps.iter().any(|(d, _)| *d == dev) {
            used.push((name.clone(), "used as swap".to_owned()));
        } else {
            let holders = sys.block_holders(&name);
            if !holders.is_empty() {
                used.push((name.clone(), format!("held by {}", holders.join(", "))));
            }
        }
    }
    used
}

/// Bind `bdf` and every endpoint of its IOMMU group to vfio-pci.
pub fn bind(
    host: &Host,
    w: &mut dyn HostWriter,
    bdf: Bdf,
    force: bool,
) -> Result<BindReport, Finding> {
    const CHECK: &str = "bind";
    let sys = &host.sysfs;
    let (group, members) = group_of(host, bdf, CHECK)?;
    let mut report = BindReport {
        group: Some(group),
        ..Default::default()
    };
    let mut to_move = Vec::new();
    let mut endpoints = Vec::new();
    for &m in &members {
        let driver = sys.driver(&m);
        if !sys.is_endpoint(&m) {
            report.lines.push(format!(
                "{}: a bridge, stays with {} (VFIO allows that)",
                describe(sys, &m),
                driver.as_deref().unwrap_or("no driver")
            ));
        } else if sys.is_bridge_class(&m) {
            match driver.as_deref() {
                None => report.lines.push(format!(
                    "{}: a bridge without a driver, stays (VFIO allows that)",
                    describe(sys, &m)
                )),
                Some(d) if VIABLE_DRIVERS.contains(&d) => report
                    .lines
                    .push(format!("{}: a bridge on {d}, stays", describe(sys, &m))),
                Some(d) => {
                    return Err(fail(
                        CHECK,
                        bdf,
                        format!(
                            "IOMMU group {group} of {bdf} also holds {}, bound to {d}: the host needs it, so the group cannot be handed over",
                            describe(sys, &m)
                        ),
                        "put the device in a slot whose IOMMU group holds only it (see 'zhitong devices'), or enable ACS in the firmware",
                    ))
                }
            }
        } else {
            endpoints.push(m);
            if driver.as_deref() == Some(VFIO_PCI) {
                report
                    .lines
                    .push(format!("{}: already on vfio-pci", describe(sys, &m)));
            } else {
                to_move.push(m);
            }
        }
    }

    // Refuse before changing anything.
    for m in &to_move {
        for (disk, how) in disks_in_use(host, m) {
            let msg = format!(
                "{} of IOMMU group {group} carries disk {disk}, {how}: moving it to vfio-pci takes the disk away from the host",
                describe(sys, m)
            );
            if force {
                report.warnings.push(format!("{msg} (--force given)"));
            } else {
                return Err(fail(
                    CHECK,
                    bdf,
                    msg,
                    format!(
                        "stop using {disk} first (umount/swapoff), or pass --force if you mean it"
                    ),
                ));
            }
        }
        if sys.is_boot_vga(m) && sys.driver(m).is_some() {
            report.warnings.push(format!(
                "{} is the host's boot display: the host console on it goes dark (keep a way in: another GPU, a serial console or ssh)",
                describe(sys, m)
            ));
        }
    }

    if !to_move.is_empty() {
        ensure_vfio_pci(host, w, bdf)?;
        let mut writes = Writes {
            w,
            check: CHECK,
            bdf,
            changed: false,
        };
        let state = BindState::new(host.bind_state_dir());
        for &m in &to_move {
            let before = sys.driver(&m);
            // Keep the oldest record: a half-done earlier bind already holds the truth.
            let known = state.load(&m).map_err(|e| {
                fail(
                    CHECK,
                    bdf,
                    e,
                    format!("remove it and bind again: rm {}", state.path(&m).display()),
                )
            })?;
            if known.is_none() {
                let record = BindRecord {
                    bdf: m,
                    driver: before.clone(),
                    driver_override: sys.driver_override(&m),
                    group,
                    requested: bdf,
                };
                state.save(&record).map_err(|e| {
                    fail(
                        CHECK,
                        bdf,
                        format!(
                            "cannot record {m}'s driver in {}: {e}",
                            state.path(&m).display()
                        ),
                        "run it as root",
                    )
                })?;
            }
            report.changed = true;
            writes.write(&sys.device_dir(&m).join("driver_override"), VFIO_PCI)?;
            if before.is_some() {
                writes.write(&sys.device_dir(&m).join("driver/unbind"), &m.to_string())?;
            }
            writes.write(&sys.drivers_probe(), &m.to_string())?;
            let now = sys.driver(&m);
            if now.as_deref() != Some(VFIO_PCI) {
                return Err(fail(
                    CHECK,
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
            report.lines.push(format!(
                "{}: {} -> vfio-pci",
                describe(sys, &m),
                before.as_deref().unwrap_or("no driver")
            ));
        }
    }
    report.lines.sort();
    report.devices = endpoints;
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

/// Give `bdf`'s IOMMU group back: every member `bind` moved returns to the driver (and
/// driver_override) it had; a member on vfio-pci that `bind` did not move is handed to
/// whatever driver the kernel picks.
pub fn unbind(host: &Host, w: &mut dyn HostWriter, bdf: Bdf) -> Result<BindReport, Finding> {
    const CHECK: &str = "unbind";
    let sys = &host.sysfs;
    let (group, members) = group_of(host, bdf, CHECK)?;
    let mut report = BindReport {
        group: Some(group),
        ..Default::default()
    };
    let state = BindState::new(host.bind_state_dir());
    let mut writes = Writes {
        w,
        check: CHECK,
        bdf,
        changed: false,
    };
    let on_vfio = |m: &Bdf| sys.driver(m).as_deref() == Some(VFIO_PCI);
    if members.iter().any(on_vfio) {
        // Unbinding from vfio-pci blocks while a VM holds the group: refuse instead.
        let node = host.dev_path(format!("vfio/{group}"));
        let open = OpenOptions::new().read(true).write(true).open(&node);
        if open.is_err_and(|e| e.raw_os_error() == Some(libc::EBUSY)) {
            return Err(fail(
                CHECK,
                bdf,
                format!(
                    "IOMMU group {group} is in use: a VM (or another program) holds {}",
                    node.display()
                ),
                format!("stop it first ('fuser -v {}' names it)", node.display()),
            ));
        }
    }
    for &m in &members {
        if !sys.is_endpoint(&m) {
            continue;
        }
        let record = state.load(&m).map_err(|e| {
            fail(
                CHECK,
                bdf,
                e,
                format!("restore {m} by hand, then rm {}", state.path(&m).display()),
            )
        })?;
        let current = sys.driver(&m);
        match (&record, current.as_deref()) {
            (Some(rec), None | Some(VFIO_PCI)) => {
                let old_override = rec.driver_override.clone().unwrap_or_else(|| "\n".into());
                writes.write(&sys.device_dir(&m).join("driver_override"), &old_override)?;
                if current.is_some() {
                    writes.write(&sys.device_dir(&m).join("driver/unbind"), &m.to_string())?;
                }
                if let Some(driver) = &rec.driver {
                    let bind = sys.driver_dir(driver).join("bind");
                    if !bind.exists() || writes.try_write(&bind, &m.to_string()).is_err() {
                        writes.write(&sys.drivers_probe(), &m.to_string())?;
                    }
                }
                let now = sys.driver(&m);
                let want = rec.driver.as_deref().unwrap_or("no driver");
                let got = now.as_deref().unwrap_or("no driver");
                if now == rec.driver {
                    report
                        .lines
                        .push(format!("{}: vfio-pci -> {want}", describe(sys, &m)));
                } else {
                    report
                        .lines
                        .push(format!("{}: vfio-pci -> {got}", describe(sys, &m)));
                    report.warnings.push(format!(
                        "{m} was on {want} before 'zhitong bind' but is now on {got}; load that driver (modprobe {want}) and run: echo {m} > /sys/bus/pci/drivers_probe"
                    ));
                }
            }
            (Some(rec), Some(other)) => report.lines.push(format!(
                "{}: already on {other} (was on {})",
                describe(sys, &m),
                rec.driver.as_deref().unwrap_or("no driver")
            )),
            (None, Some(VFIO_PCI)) => {
                if sys.driver_override(&m).as_deref() == Some(VFIO_PCI) {
                    writes.write(&sys.device_dir(&m).join("driver_override"), "\n")?;
                }
                writes.write(&sys.device_dir(&m).join("driver/unbind"), &m.to_string())?;
                writes.write(&sys.drivers_probe(), &m.to_string())?;
                let got = sys.driver(&m);
                report.lines.push(format!(
                    "{}: vfio-pci -> {} (no record of an earlier driver: the kernel chose)",
                    describe(sys, &m),
                    got.as_deref().unwrap_or("no driver")
                ));
            }
            (None, other) => report.lines.push(format!(
                "{}: not on vfio-pci ({}), left alone",
                describe(sys, &m),
                other.unwrap_or("no driver")
            )),
        }
        if record.is_some() {
            state.remove(&m).map_err(|e| {
                fail(
                    CHECK,
                    bdf,
                    format!("cannot remove {}: {e}", state.path(&m).display()),
                    "run it as root",
                )
            })?;
        }
    }
    report.changed = writes.changed;
    Ok(report)
}

#[cfg(test)]
mod tests;
