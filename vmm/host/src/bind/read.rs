//! Reading what [`plan()`](super::plan()) decides on: the requested device's IOMMU group
//! and, for each member, its class, drivers, the disks the host uses below it and its bind
//! record.

use std::fs::OpenOptions;

use devices::pci::Bdf;

use super::fail;
use super::plan::{Group, Member, RecordError, Request, VFIO_PCI};
use crate::state::BindState;
use crate::{Finding, Host};

/// The group of `bdf` as `request` needs it; refuses devices that are missing, bridges, or
/// without an IOMMU group.
pub fn read_group(host: &Host, bdf: Bdf, request: Request) -> Result<Group, Finding> {
    let (number, bdfs) = group_of(host, bdf, request.check())?;
    let sys = &host.sysfs;
    let state = BindState::new(host.bind_state_dir());
    let mounts = first_fields(host, "self/mounts");
    let swaps = first_fields(host, "swaps");
    let members: Vec<Member> = bdfs
        .into_iter()
        .map(|m| Member {
            bdf: m,
            class: sys.hex_attr(&m, "class"),
            endpoint: sys.is_endpoint(&m),
            driver: sys.driver(&m),
            driver_override: sys.driver_override(&m),
            disks_in_use: disks_in_use(host, &m, &mounts, &swaps),
            boot_vga: sys.is_boot_vga(&m),
            record: state.load(&m).map_err(|message| RecordError {
                message,
                path: state.path(&m),
            }),
        })
        .collect();
    let node = host.dev_path(format!("vfio/{number}"));
    // Opening the node claims the group for a moment: only unbind asks, and only when a VM
    // could hold it (a member is on vfio-pci).
    let busy = request == Request::Unbind
        && members
            .iter()
            .any(|m| m.driver.as_deref() == Some(VFIO_PCI))
        && OpenOptions::new()
            .read(true)
            .write(true)
            .open(&node)
            .is_err_and(|e| e.raw_os_error() == Some(libc::EBUSY));
    Ok(Group {
        requested: bdf,
        number,
        members,
        node,
        busy,
    })
}

/// The device's group and its members.
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
            crate::checks::iommu_fix(host),
        ));
    };
    let mut members = sys.group_members(group);
    if !members.contains(&bdf) {
        members.push(bdf);
        members.sort();
    }
    Ok((group, members))
}

/// The first two fields of each line of a /proc file: (device, mount point) of mounts,
/// (device, type) of swaps.
fn first_fields(host: &Host, file: &str) -> Vec<(String, String)> {
    std::fs::read_to_string(host.proc_path(file))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            Some((f.next()?.to_owned(), f.next()?.to_owned()))
        })
        .collect()
}

/// Disks below `bdf` that the host uses: (disk, how).
fn disks_in_use(
    host: &Host,
    bdf: &Bdf,
    mounts: &[(String, String)],
    swaps: &[(String, String)],
) -> Vec<(String, String)> {
    let sys = &host.sysfs;
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
