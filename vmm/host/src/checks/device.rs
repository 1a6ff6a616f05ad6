//! Per-device checks: the device exists, sits in an IOMMU group, is bound to vfio-pci, its
//! group is viable and its /dev/vfio node opens; and the BARs of all devices fit the guest.

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;

use arch::pci_windows::PciWindows;
use devices::pci::allocator::{AllocError, BarAllocator};
use devices::pci::{Bar, BarKind, ROM_BAR_INDEX};

use crate::pci_class::{approx_size, short_size};
use crate::sysfs::Resource;
use crate::vfio_backend::{device_cdev, has_iommufd};
use crate::{Finding, Host, Sysfs};
use arch::units::format_size;
use devices::pci::Bdf;

use super::iommu_fix;

/// Drivers a non-passed-through member of a device's IOMMU group may have without making the
/// group unusable (what the kernel's VFIO group viability check accepts for endpoints).
pub const VIABLE_DRIVERS: [&str; 2] = ["vfio-pci", "pci-stub"];

pub fn duplicate_device(bdf: Bdf) -> Finding {
    Finding::fail(
        "device",
        format!("{bdf} is given twice with --device"),
        "pass each device once",
    )
    .on(bdf)
}

/// The checks of one device, in order; the chain stops at the first failure (the later
/// checks depend on it). The last finding carries the device's IOMMU group when it passed.
pub fn device_chain(host: &Host, bdf: Bdf) -> Vec<Finding> {
    let sys = &host.sysfs;
    let mut out = Vec::new();
    let mut push = |f: Finding| {
        let failed = f.is_fail();
        out.push(f.on(bdf));
        !failed
    };
    if !sys.exists(&bdf) {
        push(Finding::fail(
            "device",
            format!("no PCI device {bdf} on this host"),
            "list them with 'zhitong devices' and pass one of those",
        ));
        return out;
    }
    if !sys.is_endpoint(&bdf) || sys.is_bridge_class(&bdf) {
        push(Finding::fail(
            "device",
            format!("{bdf} is a bridge, not a device that can be passed through"),
            "pass the devices behind it instead (see 'zhitong devices')",
        ));
        return out;
    }
    let Some(group) = sys.iommu_group(&bdf) else {
        push(Finding::fail(
            "iommu-group",
            format!("{bdf} has no IOMMU group: the host IOMMU is off"),
            iommu_fix(host),
        ));
        return out;
    };
    let bound = match sys.driver(&bdf) {
        Some(d) if d == "vfio-pci" => Finding::ok("driver", format!("{bdf} is bound to vfio-pci")),
        Some(d) => Finding::fail(
            "driver",
            format!("{bdf} is bound to {d}, not vfio-pci"),
            format!("hand it (and its IOMMU group) to vfio-pci: zhitong bind {bdf}"),
        ),
        None => Finding::fail(
            "driver",
            format!("{bdf} has no driver, VFIO needs it bound to vfio-pci"),
            format!("hand it (and its IOMMU group) to vfio-pci: zhitong bind {bdf}"),
        ),
    };
    if !push(bound) {
        return out;
    }
    let members = sys.group_members(group);
    let held = members.iter().find_map(|&m| {
        let driver = sys.driver(&m)?;
        (m != bdf && sys.is_endpoint(&m) && !VIABLE_DRIVERS.contains(&driver.as_str()))
            .then_some((m, driver))
    });
    let viable = match held {
        Some((member, driver)) => Finding::fail(
            "group-viable",
            format!("IOMMU group {group} of {bdf} also holds {member}, which is bound to {driver}"),
            format!("hand the whole group to vfio-pci: zhitong bind {bdf} (and pass {member} with --device too if the guest should have it)"),
        ),
        None => {
            let list: Vec<String> = members.iter().map(Bdf::to_string).collect();
            Finding::ok(
                "group-viable",
                format!("IOMMU group {group} is viable ({})", list.join(", ")),
            )
        }
    };
    if !push(viable) {
        return out;
    }
    let node = host.dev_path(format!("vfio/{group}"));
    // Opening the group node claims it (a second opener gets EBUSY); close at once.
    let opened = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(&node);
    push(match opened {
        Ok(_) => Finding::ok(
            "group-node",
            format!("{} opens (the group is free)", node.display()),
        ),
        // A kernel without VFIO groups (CONFIG_VFIO_GROUP=n) has only the device's cdev.
        Err(e)
            if e.kind() == std::io::ErrorKind::NotFound
                && has_iommufd(host)
                && device_cdev(host, &bdf).is_some() =>
        {
            Finding::ok(
                "group-node",
                format!(
                    "no {} (no VFIO groups in this kernel): {bdf} opens through its VFIO cdev",
                    node.display()
                ),
            )
        }
        Err(e) => vfio_group_open_failed(group, e.raw_os_error().unwrap_or(libc::EIO), Some(bdf)),
    });
    out
}

/// Why /dev/vfio/GROUP did not open, and the fix; `zhitong run` says the same when its own
/// open fails.
pub fn vfio_group_open_failed(group: u32, errno: i32, bdf: Option<Bdf>) -> Finding {
    let node = format!("/dev/vfio/{group}");
    let bind = match bdf {
        Some(b) => format!("zhitong bind {b}"),
        None => "zhitong bind BDF".to_owned(),
    };
    match errno {
        libc::EBUSY => Finding::fail(
            "group-node",
            format!("{node} is busy: another process (another VM?) holds IOMMU group {group}"),
            format!("stop it first ('fuser -v {node}' names it)"),
        ),
        libc::EACCES | libc::EPERM => Finding::fail(
            "group-node",
            format!("no permission to open {node}"),
            format!("run as root, or give this user the node: chown USER {node} (a udev rule makes it stick)"),
        ),
        libc::ENOENT => Finding::fail(
            "group-node",
            format!("{node} does not exist: no device of IOMMU group {group} is bound to vfio-pci"),
            format!("load vfio-pci and bind the group: {bind}"),
        ),
        _ => Finding::fail(
            "group-node",
            format!(
                "cannot open {node}: {}",
                std::io::Error::from_raw_os_error(errno)
            ),
            format!("check that the group is bound to vfio-pci ({bind}) and not used elsewhere"),
        ),
    }
}

fn bar_name(index: u8) -> String {
    if index == ROM_BAR_INDEX {
        "the ROM BAR".to_owned()
    } else {
        format!("BAR {index}")
    }
}

/// A device's BARs as the allocator sees them.
pub fn bars_of(resources: &[Resource]) -> Vec<Bar> {
    resources
        .iter()
        .map(|r| Bar {
            index: r.index,
            kind: match (r.index, r.io, r.mem64) {
                (ROM_BAR_INDEX, _, _) => BarKind::Rom,
                (_, true, _) => BarKind::Io,
                // A 64-bit BAR 5 has no upper half: the VM places it as 32-bit, so must we.
                (5, _, true) => BarKind::Mem32,
                (_, _, true) => BarKind::Mem64,
                _ => BarKind::Mem32,
            },
            prefetchable: r.prefetchable,
            size: r.size.next_power_of_two(),
            addr: 0,
            decoding: false,
        })
        .collect()
}

/// Whether every BAR of `devices` (from sysfs `resource`) gets an address in the guest's
/// `windows`, allocated exactly as `zhitong run` does; one finding per device.
pub fn bars(
    sysfs: &Sysfs,
    devices: &[Bdf],
    windows: &PciWindows,
    memory: u64,
    phys_bits: u8,
) -> Vec<Finding> {
    let mut alloc = match BarAllocator::new(*windows) {
        Ok(a) => a,
        Err(e) => {
            return vec![Finding::fail(
                "bars",
                format!("the guest's BAR windows are unusable: {e}"),
                "report this as a zhitong bug",
            )]
        }
    };
    let window64 = match windows.mmio64 {
        Some(w) => format!(
            "the 64-bit window is {} ({phys_bits} physical address bits, {} of RAM)",
            approx_size(w.size),
            format_size(memory)
        ),
        None => format!(
            "no 64-bit window ({phys_bits} physical address bits leave none above {} of RAM)",
            format_size(memory)
        ),
    };
    devices
        .iter()
        .map(|&bdf| {
            let bars = bars_of(&sysfs.resources(&bdf));
            // Packed, as the VM falls back to when host addresses do not fit: what fits
            // here fits there.
            let finding = match alloc.allocate_device_bars(&bars, &[]) {
                Ok(_) => {
                    let big: Vec<String> = bars
                        .iter()
                        .filter(|b| b.kind == BarKind::Mem64)
                        .map(|b| short_size(b.size))
                        .collect();
                    let what = if big.is_empty() {
                        "no 64-bit BARs".to_owned()
                    } else {
                        format!("64-bit BARs {}", big.join(", "))
                    };
                    Finding::ok(
                        "bars",
                        format!("the BARs of {bdf} fit the guest: {what}; {window64}"),
                    )
                }
                Err(AllocError::NoSpace { bar, size, window, .. }) => Finding::fail(
                    "bars",
                    format!(
                        "{} of {bdf} ({size}) does not fit the guest's {} BAR window: {window64}",
                        bar_name(bar.0),
                        if window == "64-bit MMIO" { "64-bit or 32-bit" } else { window }
                    ),
                    if window == "64-bit MMIO" {
                        "run on a host CPU with more physical address bits, pass fewer devices, or shrink the BAR (Resizable BAR off in the host firmware)"
                    } else {
                        "pass fewer devices"
                    },
                ),
                Err(e) => Finding::fail(
                    "bars",
                    format!("{bdf}: {e}"),
                    "check the device's BARs with 'lspci -vv -s BDF'",
                ),
            };
            finding.on(bdf)
        })
        .collect()
}

/// How the device can be reset between VMs: the kernel's `reset_method` (5.15+: "flr pm
/// bus", empty when there is none), else whether it has a `reset` attribute at all. A
/// device with none of its own can still be reset with its bus when it sits below a bridge
/// and every device on that bus is in its IOMMU group (zhitong asks VFIO for that reset at
/// open; the kernel does it when the last user closes). A device with no reset at all
/// starts the next VM as this one left it (firmware state, a hung engine): worth a
/// warning, not a refusal (many such devices still work).
pub fn reset(sys: &Sysfs, bdf: Bdf) -> Finding {
    let methods = sys.attr(&bdf, "reset_method");
    let has_reset = sys.device_dir(&bdf).join("reset").exists();
    match methods.as_deref() {
        Some(m) if !m.is_empty() => {
            Finding::ok("reset", format!("{bdf} can be reset between VMs ({m})"))
        }
        None if has_reset => Finding::ok("reset", format!("{bdf} can be reset between VMs")),
        _ => bus_reset(sys, bdf),
    }
    .on(bdf)
}

/// A device without a reset of its own: its bus's reset, if that is the VM's to make.
fn bus_reset(sys: &Sysfs, bdf: Bdf) -> Finding {
    let none = |why: String| {
        Finding::warn(
            "reset",
            format!("{bdf} has no reset method (no FLR, PM or bus reset){why}: the next VM meets it as this one left it"),
            "prefer a device with FLR for VMs that follow each other; if it misbehaves in the next VM, reset it on the host (remove it and rescan the bus: echo 1 > /sys/bus/pci/devices/BDF/remove; echo 1 > /sys/bus/pci/rescan) or reboot",
        )
    };
    let Some(bridge) = sys.upstream_bridge(&bdf) else {
        return none(String::new());
    };
    let group = sys.iommu_group(&bdf);
    let outside: Vec<String> = sys
        .bus_peers(&bdf)
        .into_iter()
        .filter(|peer| group.is_none() || sys.iommu_group(peer) != group)
        .map(|peer| peer.to_string())
        .collect();
    if outside.is_empty() {
        return Finding::ok(
            "reset",
            format!("{bdf} has no reset of its own; its bus (below {bridge}) is reset at open and release, every device on it being in its IOMMU group"),
        );
    }
    none(format!(
        ", and its bus (below {bridge}) also holds {}, outside its IOMMU group",
        outside.join(", ")
    ))
}
