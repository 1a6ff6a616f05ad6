//! Which kernel interface a VM's devices are opened through: the legacy VFIO container and
//! groups (type1 IOMMU), or iommufd with each device's VFIO cdev (Linux 6.2 and later, built
//! with CONFIG_IOMMUFD and CONFIG_VFIO_DEVICE_CDEV). Left to choose, a VM uses iommufd when
//! /dev/iommu and every device's /dev/vfio/devices/vfioN exist, else the legacy interface:
//! one backend for all of a VM's devices, so that they share one IOMMU address space.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use devices::pci::Bdf;
use serde::{Deserialize, Serialize};

use crate::remapping::{remapping_on, unsafe_interrupts_allowed};
use crate::{Finding, Host};

/// In config files and JSON: "legacy", "iommufd".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VfioBackend {
    /// The VFIO container (/dev/vfio/vfio) with the type1 IOMMU, devices through their group.
    Legacy,
    /// iommufd (/dev/iommu), devices through their VFIO cdev.
    Iommufd,
}

impl VfioBackend {
    /// The kernel module whose allow_unsafe_interrupts lets this backend take devices
    /// without interrupt remapping.
    pub fn unsafe_interrupts_module(self) -> &'static str {
        match self {
            VfioBackend::Legacy => "vfio_iommu_type1",
            VfioBackend::Iommufd => "iommufd",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            VfioBackend::Legacy => "legacy",
            VfioBackend::Iommufd => "iommufd",
        }
    }
}

impl fmt::Display for VfioBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for VfioBackend {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "legacy" => Ok(VfioBackend::Legacy),
            "iommufd" => Ok(VfioBackend::Iommufd),
            _ => Err(format!("unknown VFIO backend '{s}' (legacy or iommufd)")),
        }
    }
}

/// The device's VFIO cdev, when the kernel made one (`vfio-dev/vfioN` in its sysfs
/// directory, present while it is bound to a VFIO driver) and its node is in /dev.
pub fn device_cdev(host: &Host, bdf: &Bdf) -> Option<PathBuf> {
    let dir = host.sysfs.device_dir(bdf).join("vfio-dev");
    let name = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .find(|n| n.to_string_lossy().starts_with("vfio"))?;
    let node = host.dev_path("vfio/devices").join(name);
    node.exists().then_some(node)
}

/// /dev/iommu: the kernel has iommufd (loaded).
pub fn has_iommufd(host: &Host) -> bool {
    host.dev_path("iommu").exists()
}

/// /dev/vfio/vfio and the type1 IOMMU: the legacy container works.
pub fn has_legacy(host: &Host) -> bool {
    host.dev_path("vfio/vfio").exists() && host.sysfs.module_loaded("vfio_iommu_type1")
}

/// Why iommufd cannot serve `devices` when left to choose (`None`: it can).
fn iommufd_unfit(host: &Host, devices: &[Bdf], needs_p2p: bool) -> Option<String> {
    if !has_iommufd(host) {
        return Some("no /dev/iommu".into());
    }
    if let Some(bdf) = devices.iter().find(|b| device_cdev(host, b).is_none()) {
        return Some(format!("{bdf} has no VFIO cdev"));
    }
    if needs_p2p {
        return Some("p2p=on needs it".into());
    }
    // iommufd takes devices without interrupt remapping only with its own
    // allow_unsafe_interrupts; the legacy container has one of its own.
    let interrupts_ok = remapping_on(host) != Some(false)
        || unsafe_interrupts_allowed(host, VfioBackend::Iommufd.unsafe_interrupts_module())
        || !has_legacy(host);
    (!interrupts_ok)
        .then(|| "interrupt remapping is off and iommufd's allow_unsafe_interrupts is N".into())
}

/// The backend `devices` (all bound to vfio-pci) are opened through: `requested`, or
/// automatically (iommufd unless something it cannot do is asked for). `needs_p2p`: a
/// device has p2p=on, which only the legacy backend can map. A requested backend the host
/// cannot give is a failing finding with the fix.
pub fn choose(
    host: &Host,
    requested: Option<VfioBackend>,
    devices: &[Bdf],
    needs_p2p: bool,
) -> Result<VfioBackend, Finding> {
    let without_cdev = devices.iter().find(|b| device_cdev(host, b).is_none());
    match requested {
        None if iommufd_unfit(host, devices, needs_p2p).is_none() => Ok(VfioBackend::Iommufd),
        None => Ok(VfioBackend::Legacy),
        Some(VfioBackend::Iommufd) if !has_iommufd(host) => Err(Finding::fail(
            "vfio-backend",
            "the iommufd backend was asked for, but the host has no iommufd (/dev/iommu is missing)",
            "modprobe iommufd (Linux 6.2 or later, built with CONFIG_IOMMUFD), or use the legacy backend (--vfio-backend legacy)",
        )),
        Some(VfioBackend::Iommufd) if without_cdev.is_some() => {
            let bdf = *without_cdev.unwrap_or(&devices[0]);
            Err(Finding::fail(
                "vfio-backend",
                format!("the iommufd backend was asked for, but {bdf} has no VFIO cdev (no /dev/vfio/devices/vfioN): the kernel was built without CONFIG_VFIO_DEVICE_CDEV"),
                "use the legacy backend (--vfio-backend legacy), or a kernel with CONFIG_VFIO_DEVICE_CDEV=y",
            )
            .on(bdf))
        }
        Some(VfioBackend::Iommufd) if needs_p2p => Err(Finding::fail(
            "vfio-backend",
            "peer-to-peer (p2p=on) was asked for with the iommufd backend, which cannot DMA-map device memory: iommufd takes BARs only as VFIO dma-bufs, which zhitong does not use yet",
            "use the legacy backend (--vfio-backend legacy, or leave the choice to zhitong), or drop p2p=on",
        )),
        Some(VfioBackend::Iommufd) => Ok(VfioBackend::Iommufd),
        Some(VfioBackend::Legacy) if !host.dev_path("vfio/vfio").exists() => Err(Finding::fail(
            "vfio-backend",
            "the legacy backend was asked for, but /dev/vfio/vfio is missing: the kernel was built without CONFIG_VFIO_CONTAINER",
            "use the iommufd backend (--vfio-backend iommufd, or leave it to zhitong)",
        )),
        Some(VfioBackend::Legacy) if !host.sysfs.module_loaded("vfio_iommu_type1") => Err(Finding::fail(
            "vfio-backend",
            "the legacy backend was asked for, but vfio_iommu_type1 (its IOMMU driver) is not loaded",
            "modprobe vfio_iommu_type1",
        )),
        Some(VfioBackend::Legacy) => Ok(VfioBackend::Legacy),
    }
}

/// What `zhitong check` says about the backend of `devices` (those bound to vfio-pci): the
/// one they would use and why, or why the requested one cannot be had.
pub fn finding(
    host: &Host,
    requested: Option<VfioBackend>,
    devices: &[Bdf],
    needs_p2p: bool,
) -> Finding {
    let backend = match choose(host, requested, devices, needs_p2p) {
        Ok(b) => b,
        Err(f) => return f,
    };
    if devices.is_empty() {
        let have: Vec<&str> = [(has_legacy(host), "legacy"), (has_iommufd(host), "iommufd")]
            .iter()
            .filter_map(|&(yes, name)| yes.then_some(name))
            .collect();
        let have = if have.is_empty() {
            "none".into()
        } else {
            have.join(", ")
        };
        return Finding::ok(
            "vfio-backend",
            format!("VFIO backends on this host: {have}"),
        );
    }
    let how = match (backend, requested) {
        (b, Some(_)) => format!("{b} (as asked)"),
        (VfioBackend::Iommufd, None) => {
            "iommufd (/dev/iommu and each device's VFIO cdev are there)".to_string()
        }
        (VfioBackend::Legacy, None) => {
            let why = iommufd_unfit(host, devices, needs_p2p).unwrap_or_default();
            format!("legacy (VFIO container, type1 IOMMU; not iommufd: {why})")
        }
    };
    let nodes: Vec<String> = devices
        .iter()
        .map(|b| match (backend, device_cdev(host, b)) {
            (VfioBackend::Iommufd, Some(node)) => format!("{b}: {}", node.display()),
            _ => match host.sysfs.iommu_group(b) {
                Some(g) => format!("{b}: /dev/vfio/{g}"),
                None => b.to_string(),
            },
        })
        .collect();
    let list = if nodes.is_empty() {
        String::new()
    } else {
        format!(": {}", nodes.join(", "))
    };
    Finding::ok("vfio-backend", format!("VFIO backend {how}{list}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sysfs::fake::FakeSysfs as FakeHost;

    const GPU: &str = "0000:01:00.0";

    fn host_with_gpu(name: &str) -> FakeHost {
        let fake = FakeHost::new(name);
        fake.ready_host();
        fake.device(GPU, Some("vfio-pci"), Some(7), 0);
        fake.file("dev/vfio/vfio", "");
        fake
    }

    fn with_iommufd(fake: &FakeHost) {
        fake.file("dev/iommu", "");
        fake.file(&format!("sys/bus/pci/devices/{GPU}/vfio-dev/vfio0/dev"), "");
        fake.file("dev/vfio/devices/vfio0", "");
    }

    fn gpu() -> Bdf {
        GPU.parse().unwrap()
    }

    #[test]
    fn names_parse_and_print_back() {
        for b in [VfioBackend::Legacy, VfioBackend::Iommufd] {
            assert_eq!(b.as_str().parse::<VfioBackend>(), Ok(b));
        }
        let e = "type1".parse::<VfioBackend>().unwrap_err();
        assert_eq!(e, "unknown VFIO backend 'type1' (legacy or iommufd)");
    }

    #[test]
    fn iommufd_is_chosen_when_the_host_and_every_device_have_it() {
        let fake = host_with_gpu("backend-auto");
        let host = fake.host();
        assert_eq!(
            choose(&host, None, &[gpu()], false),
            Ok(VfioBackend::Legacy)
        );
        with_iommufd(&fake);
        assert_eq!(
            device_cdev(&host, &gpu()),
            Some(host.dev_path("vfio/devices/vfio0"))
        );
        assert_eq!(
            choose(&host, None, &[gpu()], false),
            Ok(VfioBackend::Iommufd)
        );
        let f = finding(&host, None, &[gpu()], false);
        assert!(
            f.message.contains("iommufd") && f.message.ends_with("vfio0"),
            "{f}"
        );
        // A second device without a cdev puts the whole VM on the legacy backend.
        fake.device("0000:02:00.0", Some("vfio-pci"), Some(8), 0);
        let both = [gpu(), "0000:02:00.0".parse().unwrap()];
        assert_eq!(choose(&host, None, &both, false), Ok(VfioBackend::Legacy));
        let f = finding(&host, None, &both, false);
        assert!(f.message.contains("0000:02:00.0 has no VFIO cdev"), "{f}");
        assert!(f.message.contains("/dev/vfio/8"), "{f}");
    }

    #[test]
    fn a_requested_backend_the_host_lacks_fails_with_the_fix() {
        let fake = host_with_gpu("backend-requested");
        let host = fake.host();
        let e = choose(&host, Some(VfioBackend::Iommufd), &[gpu()], false).unwrap_err();
        assert!(
            e.is_fail() && e.message.contains("/dev/iommu is missing"),
            "{e}"
        );
        assert!(e.fix.as_deref().unwrap().contains("--vfio-backend legacy"));
        fake.file("dev/iommu", "");
        let e = choose(&host, Some(VfioBackend::Iommufd), &[gpu()], false).unwrap_err();
        assert!(e.message.contains("0000:01:00.0 has no VFIO cdev"), "{e}");
        assert_eq!(e.device, Some(gpu()));
        with_iommufd(&fake);
        assert_eq!(
            choose(&host, Some(VfioBackend::Iommufd), &[gpu()], false),
            Ok(VfioBackend::Iommufd)
        );
        // Legacy stays usable beside iommufd, and can be forced.
        assert_eq!(
            choose(&host, Some(VfioBackend::Legacy), &[gpu()], false),
            Ok(VfioBackend::Legacy)
        );
        std::fs::remove_file(host.dev_path("vfio/vfio")).unwrap();
        let e = choose(&host, Some(VfioBackend::Legacy), &[gpu()], false).unwrap_err();
        assert!(e.message.contains("CONFIG_VFIO_CONTAINER"), "{e}");
        assert_eq!(
            finding(&host, Some(VfioBackend::Legacy), &[gpu()], false).check,
            "vfio-backend"
        );
    }

    #[test]
    fn without_devices_the_host_s_backends_are_listed() {
        let fake = host_with_gpu("backend-host");
        let host = fake.host();
        let f = finding(&host, None, &[], false);
        assert_eq!(f.message, "VFIO backends on this host: legacy");
        with_iommufd(&fake);
        let f = finding(&host, None, &[], false);
        assert_eq!(f.message, "VFIO backends on this host: legacy, iommufd");
    }

    #[test]
    fn forcing_legacy_needs_type1() {
        let fake = host_with_gpu("backend-type1");
        let host = fake.host();
        std::fs::remove_dir_all(fake.sysfs().path("module/vfio_iommu_type1")).unwrap();
        let e = choose(&host, Some(VfioBackend::Legacy), &[gpu()], false).unwrap_err();
        assert_eq!(e.fix.as_deref(), Some("modprobe vfio_iommu_type1"));
    }
}
