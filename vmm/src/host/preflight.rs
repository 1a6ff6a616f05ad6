//! Checks a passthrough run makes before it touches anything, each failure one line with the
//! cause and the fix.

use super::{Bdf, Sysfs};

/// Drivers a non-passed-through member of a device's IOMMU group may have without making the
/// group unusable (what the kernel's VFIO group viability check accepts for endpoints).
const VIABLE_DRIVERS: [&str; 2] = ["vfio-pci", "pci-stub"];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PreflightError {
    #[error(
        "no PCI device {0} on this host; list them with 'lspci -D' and pass one with --device"
    )]
    NoDevice(Bdf),
    #[error("{bdf} is bound to {driver}, not vfio-pci; bind it: echo vfio-pci > /sys/bus/pci/devices/{bdf}/driver_override; echo {bdf} > /sys/bus/pci/devices/{bdf}/driver/unbind; echo {bdf} > /sys/bus/pci/drivers_probe")]
    NotVfio { bdf: Bdf, driver: String },
    #[error("{bdf} has no driver; bind it to vfio-pci: echo vfio-pci > /sys/bus/pci/devices/{bdf}/driver_override; echo {bdf} > /sys/bus/pci/drivers_probe")]
    Unbound { bdf: Bdf },
    #[error("{0} has no IOMMU group: the host IOMMU is off; boot the host with intel_iommu=on (Intel) or amd_iommu=on (AMD) and iommu=pt")]
    NoIommu(Bdf),
    #[error("IOMMU group {group} of {bdf} cannot be handed over: its member {member} is bound to {driver}; bind {member} to vfio-pci too (it stays with the host, unused) or pass it with --device {member}")]
    GroupNotViable {
        bdf: Bdf,
        group: u32,
        member: Bdf,
        driver: String,
    },
    #[error("{0} is given twice with --device; pass each device once")]
    Duplicate(Bdf),
}

/// A device that passed the checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedDevice {
    pub bdf: Bdf,
    pub group: u32,
}

/// Check every device: it exists, it is bound to vfio-pci, the host IOMMU put it in a group,
/// and every other endpoint of that group is bound to a VFIO-compatible driver or to none.
pub fn check_devices(sysfs: &Sysfs, devices: &[Bdf]) -> Result<Vec<CheckedDevice>, PreflightError> {
    for (i, bdf) in devices.iter().enumerate() {
        if devices[..i].contains(bdf) {
            return Err(PreflightError::Duplicate(*bdf));
        }
    }
    let mut checked = Vec::with_capacity(devices.len());
    for &bdf in devices {
        if !sysfs.exists(&bdf) {
            return Err(PreflightError::NoDevice(bdf));
        }
        match sysfs.driver(&bdf) {
            Some(d) if d == "vfio-pci" => {}
            Some(driver) => return Err(PreflightError::NotVfio { bdf, driver }),
            None => return Err(PreflightError::Unbound { bdf }),
        }
        let group = sysfs
            .iommu_group(&bdf)
            .ok_or(PreflightError::NoIommu(bdf))?;
        for member in sysfs.group_members(group) {
            if member == bdf || !sysfs.is_endpoint(&member) {
                continue;
            }
            if let Some(driver) = sysfs.driver(&member) {
                if !VIABLE_DRIVERS.contains(&driver.as_str()) {
                    return Err(PreflightError::GroupNotViable {
                        bdf,
                        group,
                        member,
                        driver,
                    });
                }
            }
        }
        checked.push(CheckedDevice { bdf, group });
    }
    Ok(checked)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::sysfs::fake::FakeSysfs;

    fn bdf(s: &str) -> Bdf {
        s.parse().unwrap()
    }

    #[test]
    fn bound_device_in_a_clean_group_passes() {
        let fake = FakeSysfs::new("ok");
        fake.device("0000:01:00.0", Some("vfio-pci"), Some(3), 0x80);
        fake.device("0000:01:00.1", Some("vfio-pci"), Some(3), 0);
        fake.device("0000:00:01.0", Some("pcieport"), Some(3), 1); // bridge: fine
        fake.device("0000:01:00.2", None, Some(3), 0); // unbound: fine
        let got = check_devices(&fake.sysfs(), &[bdf("01:00.0")]).unwrap();
        assert_eq!(
            got,
            vec![CheckedDevice {
                bdf: bdf("01:00.0"),
                group: 3
            }]
        );
    }

    #[test]
    fn each_failure_names_cause_and_fix() {
        let fake = FakeSysfs::new("fail");
        fake.device("0000:01:00.0", Some("nvidia"), Some(3), 0);
        fake.device("0000:02:00.0", None, Some(4), 0);
        fake.device("0000:03:00.0", Some("vfio-pci"), None, 0);
        fake.device("0000:04:00.0", Some("vfio-pci"), Some(5), 0x80);
        fake.device("0000:04:00.1", Some("snd_hda_intel"), Some(5), 0);
        let sys = fake.sysfs();
        let cases = [
            ("0000:09:00.0", "lspci"),
            ("0000:01:00.0", "bound to nvidia"),
            ("0000:02:00.0", "drivers_probe"),
            ("0000:03:00.0", "intel_iommu=on"),
            ("0000:04:00.0", "0000:04:00.1 is bound to snd_hda_intel"),
        ];
        for (dev, needle) in cases {
            let msg = check_devices(&sys, &[bdf(dev)]).unwrap_err().to_string();
            assert!(msg.contains(needle), "{dev}: {msg}");
            assert!(!msg.contains('\n'));
        }
        let msg = check_devices(&sys, &[bdf("03:00.0"), bdf("0000:03:00.0")])
            .unwrap_err()
            .to_string();
        assert!(msg.contains("twice"), "{msg}");
    }
}
