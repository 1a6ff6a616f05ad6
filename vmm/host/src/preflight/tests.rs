use super::*;
use crate::sysfs::fake::FakeSysfs;
use crate::vfio_backend::VfioBackend;

fn bdf(s: &str) -> Bdf {
    s.parse().unwrap()
}

#[test]
fn bound_device_in_a_clean_group_passes() {
    let fake = FakeSysfs::new("pre-ok");
    fake.ready_host();
    fake.device("0000:01:00.0", Some("vfio-pci"), Some(3), 0x80);
    fake.device("0000:01:00.1", Some("vfio-pci"), Some(3), 0);
    fake.device("0000:00:01.0", Some("pcieport"), Some(3), 1); // bridge: fine
    fake.device("0000:01:00.2", None, Some(3), 0); // unbound: fine
    let host = fake.host();
    let (got, backend) = check_devices(&host, &[bdf("01:00.0")], None, false).unwrap();
    assert_eq!(backend, VfioBackend::Legacy);
    assert_eq!(
        got,
        vec![CheckedDevice {
            bdf: bdf("01:00.0"),
            group: 3,
            sysfs_dir: fake.dir.join("sys/bus/pci/devices/0000:01:00.0"),
        }]
    );
    assert_eq!(got[0].sysfs_dir, host.sysfs.device_dir(&got[0].bdf));
    assert_eq!(
        check_devices(&host, &[], None, false),
        Ok((Vec::new(), VfioBackend::Legacy))
    );
}

#[test]
fn each_failure_is_the_check_finding() {
    let fake = FakeSysfs::new("pre-fail");
    fake.ready_host();
    fake.device("0000:01:00.0", Some("nvidia"), Some(3), 0);
    fake.device("0000:02:00.0", None, Some(4), 0);
    fake.device("0000:03:00.0", Some("vfio-pci"), None, 0);
    fake.device("0000:04:00.0", Some("vfio-pci"), Some(5), 0x80);
    fake.device("0000:04:00.1", Some("snd_hda_intel"), Some(5), 0);
    let host = fake.host();
    for dev in [
        "0000:09:00.0",
        "0000:01:00.0",
        "0000:02:00.0",
        "0000:03:00.0",
        "0000:04:00.0",
    ] {
        let err = check_devices(&host, &[bdf(dev)], None, false).unwrap_err();
        // The same finding `zhitong check` reports for the device, word for word.
        let from_check = checks::device_chain(&host, bdf(dev)).pop().unwrap();
        assert_eq!(err.0, from_check, "{dev}");
        let msg = err.to_string();
        assert!(!msg.contains('\n') && msg.contains("; "), "{msg}");
    }
    let msg = check_devices(&host, &[bdf("03:00.0"), bdf("0000:03:00.0")], None, false)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("twice"), "{msg}");
}

#[test]
fn run_needs_the_backend_and_remapping() {
    let fake = FakeSysfs::new("pre-host");
    fake.ready_host();
    fake.device("0000:01:00.0", Some("vfio-pci"), Some(3), 0);
    let host = fake.host();
    std::fs::remove_dir_all(fake.dir.join("sys/module/vfio_iommu_type1")).unwrap();
    let err = check_devices(&host, &[bdf("01:00.0")], None, false).unwrap_err();
    assert_eq!(err.0.check, "vfio-modules");
    assert!(err.to_string().contains("modprobe vfio_iommu_type1"));
    fake.module("vfio_iommu_type1");
    fake.file("proc/interrupts", "  0:   45   IO-APIC   2-edge   timer\n");
    let err = check_devices(&host, &[bdf("01:00.0")], None, false).unwrap_err();
    assert_eq!(err.0.check, "interrupt-remapping");
    fake.file(
        "sys/module/vfio_iommu_type1/parameters/allow_unsafe_interrupts",
        "Y\n",
    );
    assert!(check_devices(&host, &[bdf("01:00.0")], None, false).is_ok());
}

#[test]
fn guest_must_fit_memlock_and_windows() {
    let fake = FakeSysfs::new("pre-fit");
    fake.ready_host();
    fake.device("0000:01:00.0", Some("vfio-pci"), Some(3), 0);
    fake.bars("0000:01:00.0", &[(0, 16 << 30, false, true, true)]);
    let host = fake.host();
    let devs = [bdf("01:00.0")];
    let wide = arch::pci_windows::PciWindows::for_guest(2 << 30, 46);
    assert_eq!(check_guest_fits(&host, &devs, 2 << 30, &wide), Ok(()));
    let narrow = arch::pci_windows::PciWindows::for_guest(2 << 30, 36);
    let err = check_guest_fits(&host, &devs, 2 << 30, &narrow).unwrap_err();
    assert_eq!(err.0.check, "bars");
    fake.file("proc/self/status", "CapEff:\t0000000000000000\n");
    let err = check_guest_fits(&host, &devs, 2 << 30, &wide).unwrap_err();
    assert_eq!(err.0.check, "memlock");
    assert!(err.to_string().contains("ulimit -l"), "{err}");
}

/// iommufd takes devices without interrupt remapping only with its own
/// allow_unsafe_interrupts: left to choose, zhitong then takes the legacy container (when
/// type1 allows them); asked for iommufd, the finding names iommufd's parameter.
#[test]
fn without_remapping_each_backend_needs_its_own_unsafe_interrupts() {
    let fake = FakeSysfs::new("pre-unsafe");
    fake.ready_host();
    fake.device("0000:01:00.0", Some("vfio-pci"), Some(3), 0);
    fake.file("dev/vfio/vfio", "");
    fake.file("dev/iommu", "");
    fake.file("sys/bus/pci/devices/0000:01:00.0/vfio-dev/vfio0/dev", "");
    fake.file("dev/vfio/devices/vfio0", "");
    let host = fake.host();
    let gpu = [bdf("01:00.0")];
    assert_eq!(
        check_devices(&host, &gpu, None, false).unwrap().1,
        VfioBackend::Iommufd
    );
    fake.file("proc/interrupts", "  0:   45   IO-APIC   2-edge   timer\n");
    fake.file(
        "sys/module/vfio_iommu_type1/parameters/allow_unsafe_interrupts",
        "Y\n",
    );
    assert_eq!(
        check_devices(&host, &gpu, None, false).unwrap().1,
        VfioBackend::Legacy
    );
    let err = check_devices(&host, &gpu, Some(VfioBackend::Iommufd), false).unwrap_err();
    assert_eq!(err.0.check, "interrupt-remapping");
    assert!(
        err.to_string()
            .contains("/sys/module/iommufd/parameters/allow_unsafe_interrupts"),
        "{err}"
    );
    fake.file(
        "sys/module/iommufd/parameters/allow_unsafe_interrupts",
        "Y\n",
    );
    assert_eq!(
        check_devices(&host, &gpu, None, false).unwrap().1,
        VfioBackend::Iommufd
    );
    // Peer-to-peer: only the legacy backend maps BARs.
    assert_eq!(
        check_devices(&host, &gpu, None, true).unwrap().1,
        VfioBackend::Legacy
    );
    let err = check_devices(&host, &gpu, Some(VfioBackend::Iommufd), true).unwrap_err();
    assert_eq!(err.0.check, "vfio-backend");
    assert!(err.to_string().contains("--vfio-backend legacy"), "{err}");
}
