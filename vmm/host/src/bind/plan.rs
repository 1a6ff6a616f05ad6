//! What `zhitong bind` / `zhitong unbind` do to a group, decided without touching anything:
//! [`plan`] takes the group's members as they were read and the request, and gives the
//! actions in order or the refusal. Every rule of binding is here; `apply` only performs.

use std::path::PathBuf;

use devices::pci::Bdf;

use super::fail;
use crate::checks::VIABLE_DRIVERS;
use crate::pci_class::{class_name, is_bridge};
use crate::state::BindRecord;
use crate::Finding;

pub const VFIO_PCI: &str = "vfio-pci";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// Hand the group to vfio-pci; `force` takes controllers of disks the host uses too.
    Bind { force: bool },
    /// Give the group back to the drivers it had.
    Unbind,
}

impl Request {
    /// The check its findings carry: "bind" or "unbind".
    pub fn check(self) -> &'static str {
        match self {
            Request::Bind { .. } => "bind",
            Request::Unbind => "unbind",
        }
    }
}

/// A member's record that is there but unreadable or damaged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordError {
    /// "PATH is damaged", "cannot read PATH: ...".
    pub message: String,
    pub path: PathBuf,
}

/// One member of the group as the host shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub bdf: Bdf,
    /// The 24-bit class code (None: unreadable).
    pub class: Option<u32>,
    /// Header type 0; bridges and CardBus are not.
    pub endpoint: bool,
    pub driver: Option<String>,
    pub driver_override: Option<String>,
    /// Disks below it the host uses: (disk, "mounted at /" | "used as swap" | "held by dm-0").
    pub disks_in_use: Vec<(String, String)>,
    /// The firmware's boot display (the host console is on it).
    pub boot_vga: bool,
    /// What an earlier `zhitong bind` recorded for it.
    pub record: Result<Option<BindRecord>, RecordError>,
}

impl Member {
    /// "0000:01:00.0 (GPU)", or the bare address when the class is unreadable.
    pub fn describe(&self) -> String {
        match self.class {
            Some(class) => format!("{} ({})", self.bdf, class_name(class)),
            None => self.bdf.to_string(),
        }
    }

    /// A bridge by class (host, ISA, PCI...), even with an endpoint header.
    fn bridge_class(&self) -> bool {
        self.class.is_some_and(is_bridge)
    }

    fn on_vfio(&self) -> bool {
        self.driver.as_deref() == Some(VFIO_PCI)
    }
}

/// The IOMMU group of the requested device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub requested: Bdf,
    pub number: u32,
    /// Every member, sorted, the requested device included.
    pub members: Vec<Member>,
    /// /dev/vfio/NUMBER.
    pub node: PathBuf,
    /// Whether another process holds the node (a VM runs on the group).
    pub busy: bool,
}

/// One step, performed in order; the `Expect`/`Report` steps read the result back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// A line of the report.
    Line(String),
    /// Make sure the PCI bus knows vfio-pci (modprobe it, and the type1 backend).
    LoadVfioPci,
    /// Write the record `unbind` restores from (before the member moves).
    SaveRecord(BindRecord),
    /// Set driver_override to a driver, or clear it (None).
    SetOverride(Bdf, Option<String>),
    /// Detach the member from its driver (DEVICE/driver/unbind).
    Detach(Bdf),
    /// drivers_probe: the kernel binds the member (its override first).
    Probe(Bdf),
    /// Bind to this driver through its bind file, or drivers_probe when that fails.
    AttachTo(Bdf, String),
    /// The member must now be on vfio-pci; `line` says what moved.
    ExpectVfio { bdf: Bdf, line: String },
    /// The member should be back on `want`: the line names the driver it got, with a
    /// warning when that is another.
    ExpectRestored {
        bdf: Bdf,
        desc: String,
        want: Option<String>,
    },
    /// Say which driver the kernel chose for a member without a record.
    ReportChosen { bdf: Bdf, desc: String },
    /// Forget the member's record.
    RemoveRecord(Bdf),
}

/// What to do, once nothing refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// "bind" or "unbind": the check of every finding on the way.
    pub check: &'static str,
    pub requested: Bdf,
    pub group: u32,
    pub actions: Vec<Action>,
    /// Known before anything is done (boot display, --force over a disk).
    pub warnings: Vec<String>,
    /// Bind: the group's endpoints, all on vfio-pci once done (what to pass with --device).
    pub devices: Vec<Bdf>,
}

impl Plan {
    /// Whether performing it changes nothing on the host (only report lines).
    pub fn changes_nothing(&self) -> bool {
        self.actions.iter().all(|a| matches!(a, Action::Line(_)))
    }
}

/// The plan for `request` on `group`, or why it is refused (before anything changes).
pub fn plan(group: &Group, request: Request) -> Result<Plan, Finding> {
    let empty = Plan {
        check: request.check(),
        requested: group.requested,
        group: group.number,
        actions: Vec::new(),
        warnings: Vec::new(),
        devices: Vec::new(),
    };
    match request {
        Request::Bind { force } => plan_bind(group, force, empty),
        Request::Unbind => plan_unbind(group, empty),
    }
}

fn plan_bind(g: &Group, force: bool, mut plan: Plan) -> Result<Plan, Finding> {
    let (bdf, group) = (g.requested, g.number);
    let check = plan.check;
    let refuse = |message: String, fix: String| fail(check, bdf, message, fix);
    let mut to_move = Vec::new();
    for m in &g.members {
        let say = |line: String| Action::Line(format!("{}: {line}", m.describe()));
        if !m.endpoint {
            // VFIO accepts a group whose bridges keep their driver: it serves what is behind.
            let driver = m.driver.as_deref().unwrap_or("no driver");
            plan.actions.push(say(format!(
                "a bridge, stays with {driver} (VFIO allows that)"
            )));
        } else if m.bridge_class() {
            match m.driver.as_deref() {
                None => plan.actions.push(say(
                    "a bridge without a driver, stays (VFIO allows that)".into(),
                )),
                Some(d) if VIABLE_DRIVERS.contains(&d) => {
                    plan.actions.push(say(format!("a bridge on {d}, stays")))
                }
                Some(d) => return Err(refuse(
                    format!(
                        "IOMMU group {group} of {bdf} also holds {}, bound to {d}: the host needs it, so the group cannot be handed over",
                        m.describe()
                    ),
                    "put the device in a slot whose IOMMU group holds only it (see 'zhitong devices'), or enable ACS in the firmware".into(),
                )),
            }
        } else {
            plan.devices.push(m.bdf);
            if m.on_vfio() {
                plan.actions.push(say("already on vfio-pci".into()));
            } else {
                to_move.push(m);
            }
        }
    }

    for m in &to_move {
        for (disk, how) in &m.disks_in_use {
            let msg = format!(
                "{} of IOMMU group {group} carries disk {disk}, {how}: moving it to vfio-pci takes the disk away from the host",
                m.describe()
            );
            if !force {
                return Err(refuse(
                    msg,
                    format!(
                        "stop using {disk} first (umount/swapoff), or pass --force if you mean it"
                    ),
                ));
            }
            plan.warnings.push(format!("{msg} (--force given)"));
        }
        if m.boot_vga && m.driver.is_some() {
            plan.warnings.push(format!(
                "{} is the host's boot display: the host console on it goes dark (keep a way in: another GPU, a serial console or ssh)",
                m.describe()
            ));
        }
    }

    let mut records = Vec::with_capacity(to_move.len());
    for m in &to_move {
        let known = m.record.as_ref().map_err(|e| {
            refuse(
                e.message.clone(),
                format!("remove it and bind again: rm {}", e.path.display()),
            )
        })?;
        records.push(known.is_some());
    }

    if !to_move.is_empty() {
        plan.actions.push(Action::LoadVfioPci);
    }
    for (m, known) in to_move.into_iter().zip(records) {
        // Keep the oldest record: a half-done earlier bind already holds the truth.
        if !known {
            plan.actions.push(Action::SaveRecord(BindRecord {
                bdf: m.bdf,
                driver: m.driver.clone(),
                driver_override: m.driver_override.clone(),
                group,
                requested: bdf,
            }));
        }
        plan.actions
            .push(Action::SetOverride(m.bdf, Some(VFIO_PCI.into())));
        if m.driver.is_some() {
            plan.actions.push(Action::Detach(m.bdf));
        }
        plan.actions.push(Action::Probe(m.bdf));
        plan.actions.push(Action::ExpectVfio {
            bdf: m.bdf,
            line: format!(
                "{}: {} -> vfio-pci",
                m.describe(),
                m.driver.as_deref().unwrap_or("no driver")
            ),
        });
    }
    Ok(plan)
}

fn plan_unbind(g: &Group, mut plan: Plan) -> Result<Plan, Finding> {
    let (bdf, group) = (g.requested, g.number);
    let check = plan.check;
    if g.busy && g.members.iter().any(Member::on_vfio) {
        // Unbinding from vfio-pci blocks while a VM holds the group: refuse instead.
        let node = g.node.display();
        return Err(fail(
            check,
            bdf,
            format!("IOMMU group {group} is in use: a VM (or another program) holds {node}"),
            format!("stop it first ('fuser -v {node}' names it)"),
        ));
    }
    for m in g.members.iter().filter(|m| m.endpoint) {
        let record = m.record.as_ref().map_err(|e| {
            fail(
                check,
                bdf,
                e.message.clone(),
                format!("restore {} by hand, then rm {}", m.bdf, e.path.display()),
            )
        })?;
        let desc = m.describe();
        let actions = &mut plan.actions;
        match (record, m.driver.as_deref()) {
            (Some(rec), None | Some(VFIO_PCI)) => {
                actions.push(Action::SetOverride(m.bdf, rec.driver_override.clone()));
                if m.driver.is_some() {
                    actions.push(Action::Detach(m.bdf));
                }
                if let Some(driver) = &rec.driver {
                    actions.push(Action::AttachTo(m.bdf, driver.clone()));
                }
                actions.push(Action::ExpectRestored {
                    bdf: m.bdf,
                    desc,
                    want: rec.driver.clone(),
                });
            }
            (Some(rec), Some(other)) => actions.push(Action::Line(format!(
                "{desc}: already on {other} (was on {})",
                rec.driver.as_deref().unwrap_or("no driver")
            ))),
            (None, Some(VFIO_PCI)) => {
                // Not moved by `zhitong bind`: clear our override and let the kernel choose.
                if m.driver_override.as_deref() == Some(VFIO_PCI) {
                    actions.push(Action::SetOverride(m.bdf, None));
                }
                actions.push(Action::Detach(m.bdf));
                actions.push(Action::Probe(m.bdf));
                actions.push(Action::ReportChosen { bdf: m.bdf, desc });
            }
            (None, other) => actions.push(Action::Line(format!(
                "{desc}: not on vfio-pci ({}), left alone",
                other.unwrap_or("no driver")
            ))),
        }
        if record.is_some() {
            actions.push(Action::RemoveRecord(m.bdf));
        }
    }
    Ok(plan)
}

#[cfg(test)]
mod tests;
