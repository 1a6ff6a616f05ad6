use super::*;
use crate::sysfs::fake::{FakeKernel, FakeSysfs};

fn bdf(s: &str) -> Bdf {
    s.parse().unwrap()
}

/// A GPU on nvidia and its audio function on snd_hda_intel in group 12, behind a root port.
fn gpu_on_host_drivers(name: &str) -> FakeSysfs {
    let fake = FakeSysfs::new(name);
    fake.ready_host();
    fake.device("0000:00:01.0", Some("pcieport"), Some(12), 1);
    fake.ids("0000:00:01.0", 0x8086, 0x1901, 0x060400);
    fake.device("0000:01:00.0", Some("nvidia"), Some(12), 0x80);
    fake.ids("0000:01:00.0", 0x10de, 0x2684, 0x030000);
    fake.device("0000:01:00.1", Some("snd_hda_intel"), Some(12), 0);
    fake.ids("0000:01:00.1", 0x10de, 0x22ba, 0x040300);
    fake
}

#[test]
fn bind_moves_the_group_and_unbind_gives_it_back() {
    let fake = gpu_on_host_drivers("bind");
    let host = fake.host();
    let sys = fake.sysfs();
    let mut kernel = FakeKernel::new(&fake);
    let report = bind(&host, &mut kernel, bdf("01:00.0"), false).unwrap();
    assert_eq!(
        kernel.log(),
        [
            "bus/pci/devices/0000:01:00.0/driver_override <- vfio-pci",
            "bus/pci/devices/0000:01:00.0/driver/unbind <- 0000:01:00.0",
            "bus/pci/drivers_probe <- 0000:01:00.0",
            "bus/pci/devices/0000:01:00.1/driver_override <- vfio-pci",
            "bus/pci/devices/0000:01:00.1/driver/unbind <- 0000:01:00.1",
            "bus/pci/drivers_probe <- 0000:01:00.1",
        ]
    );
    assert!(kernel.modprobes.is_empty());
    assert_eq!(
        report.lines,
        [
            "0000:00:01.0 (PCI bridge): a bridge, stays with pcieport (VFIO allows that)",
            "0000:01:00.0 (GPU): nvidia -> vfio-pci",
            "0000:01:00.1 (HD audio): snd_hda_intel -> vfio-pci",
        ]
    );
    assert_eq!(report.devices, [bdf("01:00.0"), bdf("01:00.1")]);
    assert!(report.changed);
    assert_eq!(sys.driver(&bdf("01:00.0")).as_deref(), Some("vfio-pci"));
    assert_eq!(sys.driver(&bdf("00:01.0")).as_deref(), Some("pcieport"));
    let record = fake.read("run/zhitong/bind/0000:01:00.1.json").unwrap();
    assert!(record.contains("\"driver\":\"snd_hda_intel\""), "{record}");

    // `zhitong check` and `run` now accept the device.
    let checks = crate::checks::device_chain(&host, bdf("01:00.0"));
    assert!(checks.iter().all(|f| !f.is_fail()), "{checks:?}");

    // Again: nothing to do, and the records still name the host drivers.
    let mut again = FakeKernel::new(&fake);
    let report = bind(&host, &mut again, bdf("01:00.1"), false).unwrap();
    assert!(again.writes.is_empty() && !report.changed);
    assert!(fake
        .read("run/zhitong/bind/0000:01:00.0.json")
        .unwrap()
        .contains("nvidia"));

    let mut back = FakeKernel::new(&fake);
    let report = unbind(&host, &mut back, bdf("01:00.1")).unwrap();
    assert_eq!(
        back.log(),
        [
            "bus/pci/devices/0000:01:00.0/driver_override <- ",
            "bus/pci/devices/0000:01:00.0/driver/unbind <- 0000:01:00.0",
            "bus/pci/drivers/nvidia/bind <- 0000:01:00.0",
            "bus/pci/devices/0000:01:00.1/driver_override <- ",
            "bus/pci/devices/0000:01:00.1/driver/unbind <- 0000:01:00.1",
            "bus/pci/drivers/snd_hda_intel/bind <- 0000:01:00.1",
        ]
    );
    assert_eq!(
        report.lines,
        [
            "0000:01:00.0 (GPU): vfio-pci -> nvidia",
            "0000:01:00.1 (HD audio): vfio-pci -> snd_hda_intel",
        ]
    );
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    assert_eq!(sys.driver(&bdf("01:00.0")).as_deref(), Some("nvidia"));
    assert_eq!(sys.driver_override(&bdf("01:00.0")), None);
    assert!(fake.read("run/zhitong/bind/0000:01:00.0.json").is_none());

    // And again: nothing to do.
    let mut idle = FakeKernel::new(&fake);
    let report = unbind(&host, &mut idle, bdf("01:00.0")).unwrap();
    assert!(idle.writes.is_empty() && !report.changed);
    assert!(
        report.lines[0].contains("not on vfio-pci (nvidia), left alone"),
        "{:?}",
        report.lines
    );
}

#[test]
fn bind_loads_vfio_pci_when_missing() {
    let fake = FakeSysfs::new("bind-modprobe");
    fake.device("0000:02:00.0", None, Some(4), 0);
    let host = fake.host();
    let mut kernel = FakeKernel::new(&fake);
    let report = bind(&host, &mut kernel, bdf("02:00.0"), false).unwrap();
    assert_eq!(kernel.modprobes, ["vfio_iommu_type1", "vfio-pci"]);
    // No driver before: no unbind write.
    assert_eq!(
        kernel.log(),
        [
            "bus/pci/devices/0000:02:00.0/driver_override <- vfio-pci",
            "bus/pci/drivers_probe <- 0000:02:00.0",
        ]
    );
    assert_eq!(report.lines, ["0000:02:00.0: no driver -> vfio-pci"]);
    // Unbind leaves it without a driver, as it was.
    let mut back = FakeKernel::new(&fake);
    unbind(&host, &mut back, bdf("02:00.0")).unwrap();
    assert_eq!(fake.sysfs().driver(&bdf("02:00.0")), None);
    assert_eq!(
        back.log(),
        [
            "bus/pci/devices/0000:02:00.0/driver_override <- ",
            "bus/pci/devices/0000:02:00.0/driver/unbind <- 0000:02:00.0",
        ]
    );
}

#[test]
fn bind_refusals_are_one_line_and_change_nothing() {
    let fake = gpu_on_host_drivers("bind-refuse");
    // An NVMe with a mounted namespace shares group 12; an ISA bridge on lpc_ich group 20.
    fake.device("0000:01:00.2", Some("nvme"), Some(12), 0);
    fake.ids("0000:01:00.2", 0x144d, 0xa808, 0x010802);
    fake.block("0000:01:00.2", "nvme0n1p2");
    fake.file("proc/self/mounts", "/dev/nvme0n1p2 / ext4 rw 0 0\n");
    fake.device("0000:00:1f.0", Some("lpc_ich"), Some(20), 0x80);
    fake.ids("0000:00:1f.0", 0x8086, 0x7a06, 0x060100);
    fake.device("0000:00:1f.3", Some("snd_hda_intel"), Some(20), 0);
    fake.ids("0000:00:1f.3", 0x8086, 0x7ad0, 0x040300);
    fake.device("0000:05:00.0", Some("e1000e"), None, 0);
    let host = fake.host();
    let cases = [
        ("01:00.0", "carries disk nvme0n1p2, mounted at /: moving it to vfio-pci takes the disk away from the host; stop using nvme0n1p2 first"),
        ("00:1f.3", "also holds 0000:00:1f.0 (ISA bridge), bound to lpc_ich: the host needs it"),
        ("00:1f.0", "is a bridge"),
        ("05:00.0", "no IOMMU group"),
        ("09:00.0", "no PCI device 0000:09:00.0"),
    ];
    for (dev, needle) in cases {
        let mut kernel = FakeKernel::new(&fake);
        let err = bind(&host, &mut kernel, bdf(dev), false)
            .unwrap_err()
            .to_string();
        assert!(err.contains(needle), "{dev}: {err}");
        assert!(!err.contains('\n'), "{err}");
        assert!(kernel.writes.is_empty(), "{dev}: {:?}", kernel.writes);
    }
    // --force moves the disk's controller anyway, with a warning.
    let mut kernel = FakeKernel::new(&fake);
    let report = bind(&host, &mut kernel, bdf("01:00.0"), true).unwrap();
    assert_eq!(report.warnings.len(), 1, "{:?}", report.warnings);
    assert_eq!(report.devices.len(), 3);
}

#[test]
fn boot_display_is_a_warning() {
    let fake = FakeSysfs::new("bind-vga");
    fake.ready_host();
    fake.device("0000:00:02.0", Some("i915"), Some(0), 0);
    fake.file("sys/bus/pci/devices/0000:00:02.0/boot_vga", "1\n");
    let mut kernel = FakeKernel::new(&fake);
    let report = bind(&fake.host(), &mut kernel, bdf("00:02.0"), false).unwrap();
    assert!(
        report.warnings[0].contains("boot display"),
        "{:?}",
        report.warnings
    );
}

#[test]
fn failures_while_binding() {
    let fake = gpu_on_host_drivers("bind-fail");
    let host = fake.host();
    // vfio-pci refuses the device: the line says so and how to undo.
    let mut kernel = FakeKernel::new(&fake);
    kernel.refuse = vec!["vfio-pci".into()];
    let err = bind(&host, &mut kernel, bdf("01:00.0"), false)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("0000:01:00.0 did not bind to vfio-pci (its driver is now none)"),
        "{err}"
    );
    assert!(err.contains("zhitong unbind 0000:01:00.0"), "{err}");
    // The record was written first, so unbind restores the host driver.
    let mut back = FakeKernel::new(&fake);
    let report = unbind(&host, &mut back, bdf("01:00.0")).unwrap();
    assert_eq!(
        fake.sysfs().driver(&bdf("01:00.0")).as_deref(),
        Some("nvidia")
    );
    assert!(report.lines[0].contains("-> nvidia"), "{:?}", report.lines);

    // No vfio-pci module on this kernel.
    let fake = FakeSysfs::new("bind-nomod");
    fake.device("0000:02:00.0", Some("nvme"), Some(4), 0);
    let mut kernel = FakeKernel::new(&fake);
    kernel.has_vfio_module = false;
    let err = bind(&fake.host(), &mut kernel, bdf("02:00.0"), false)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("modprobe vfio-pci failed: modprobe: FATAL"),
        "{err}"
    );
    assert!(!err.contains('\n'));
}

#[test]
fn unbind_without_a_record_lets_the_kernel_choose() {
    let fake = FakeSysfs::new("unbind-norecord");
    fake.ready_host();
    fake.device("0000:03:00.0", Some("vfio-pci"), Some(7), 0);
    fake.file(
        "sys/bus/pci/devices/0000:03:00.0/driver_override",
        "vfio-pci\n",
    );
    let mut kernel = FakeKernel::new(&fake);
    let report = unbind(&fake.host(), &mut kernel, bdf("03:00.0")).unwrap();
    assert_eq!(
        kernel.log(),
        [
            "bus/pci/devices/0000:03:00.0/driver_override <- ",
            "bus/pci/devices/0000:03:00.0/driver/unbind <- 0000:03:00.0",
            "bus/pci/drivers_probe <- 0000:03:00.0",
        ]
    );
    assert!(
        report.lines[0].contains("the kernel chose"),
        "{:?}",
        report.lines
    );
}
