use super::*;
use crate::sysfs::fake::FakeSysfs;
use crate::vfio_backend::VfioBackend;

fn bdf(s: &str) -> Bdf {
    s.parse().unwrap()
}

fn one_line(f: &Finding) {
    let text = f.to_string();
    assert!(!text.contains('\n'), "not one line: {text}");
    if f.status != Status::Ok {
        assert!(
            f.fix.as_deref().is_some_and(|x| !x.is_empty()),
            "no fix: {text}"
        );
    }
}

/// A GPU at 01:00.0 with its audio function in group 12, both on vfio-pci.
fn gpu_host(name: &str) -> FakeSysfs {
    let fake = FakeSysfs::new(name);
    fake.ready_host();
    fake.device("0000:00:01.0", Some("pcieport"), Some(12), 1);
    fake.ids("0000:00:01.0", 0x8086, 0x1901, 0x060400);
    fake.device("0000:01:00.0", Some("vfio-pci"), Some(12), 0x80);
    fake.ids("0000:01:00.0", 0x10de, 0x2684, 0x030000);
    fake.bars(
        "0000:01:00.0",
        &[
            (0, 16 << 20, false, false, false),
            (1, 32 << 30, false, true, true),
            (3, 32 << 20, false, true, true),
            (5, 128, true, false, false),
            (6, 512 << 10, false, false, false),
        ],
    );
    fake.file("sys/bus/pci/devices/0000:01:00.0/reset_method", "flr bus\n");
    fake.device("0000:01:00.1", Some("vfio-pci"), Some(12), 0);
    fake.ids("0000:01:00.1", 0x10de, 0x22ba, 0x040300);
    // The audio function: no reset method (an empty reset_method, as the kernel shows it).
    fake.file("sys/bus/pci/devices/0000:01:00.1/reset_method", "\n");
    fake.bars("0000:01:00.1", &[(0, 16 << 10, false, false, false)]);
    fake
}

#[test]
fn ready_host_with_a_bound_gpu() {
    let fake = gpu_host("ready");
    let host = fake.host();
    let findings = check_all(
        &host,
        &[bdf("01:00.0"), bdf("01:00.1")],
        4 << 30,
        None,
        None,
        false,
    );
    for f in &findings {
        one_line(f);
    }
    // No /dev/kvm in the fake tree: everything else passes.
    let failed: Vec<&str> = findings
        .iter()
        .filter(|f| f.is_fail())
        .map(|f| f.check)
        .collect();
    assert_eq!(failed, ["kvm"], "{findings:#?}");
    let checks: Vec<&str> = findings.iter().map(|f| f.check).collect();
    assert_eq!(
        checks,
        [
            "kvm",
            "iommu",
            "vfio-modules",
            "interrupt-remapping",
            "memlock",
            "driver",
            "group-viable",
            "group-node",
            "driver",
            "reset",
            "reset",
            "vfio-backend",
            "bars",
            "bars"
        ]
    );
    let gpu: Vec<&Finding> = findings
        .iter()
        .filter(|f| f.device == Some(bdf("01:00.0")))
        .collect();
    let gpu_checks: Vec<&str> = gpu.iter().map(|f| f.check).collect();
    assert_eq!(
        gpu_checks,
        ["driver", "group-viable", "group-node", "reset", "bars"]
    );
    assert!(gpu[3].message.ends_with("(flr bus)") && !gpu[3].is_fail());
    assert!(gpu[4].message.contains("32G"), "{}", gpu[4].message);
    let audio_reset = findings
        .iter()
        .find(|f| f.check == "reset" && f.device == Some(bdf("01:00.1")))
        .unwrap();
    assert_eq!(audio_reset.status, Status::Warn);
    assert!(audio_reset.message.contains("no reset method"));
    assert!(!ready(&findings));
}

/// A function without a reset of its own below a bridge: reset with its bus when every
/// device on that bus is in its group; a warning naming the one that is not.
#[test]
fn a_function_without_reset_is_reset_with_its_bus_when_the_bus_is_its_groups() {
    let fake = gpu_host("bus-reset");
    for f in ["0000:01:00.0", "0000:01:00.1"] {
        fake.below_bridge(f, "0000:00:01.0");
    }
    let host = fake.host();
    let audio = bdf("01:00.1");
    assert_eq!(host.sysfs.upstream_bridge(&audio), Some(bdf("00:01.0")));
    assert_eq!(host.sysfs.upstream_bridge(&bdf("00:01.0")), None);
    let finding = reset(&host.sysfs, audio);
    assert_eq!(finding.status, Status::Ok, "{finding:?}");
    assert!(finding
        .message
        .contains("its bus (below 0000:00:01.0) is reset"));

    fake.device("0000:01:00.2", Some("xhci_hcd"), Some(13), 0);
    fake.below_bridge("0000:01:00.2", "0000:00:01.0");
    let finding = reset(&host.sysfs, audio);
    assert_eq!(finding.status, Status::Warn, "{finding:?}");
    assert!(
        finding
            .message
            .contains("also holds 0000:01:00.2, outside its IOMMU group"),
        "{}",
        finding.message
    );
}

#[test]
fn kvm_missing_or_not_kvm() {
    let fake = FakeSysfs::new("kvm");
    fake.file("proc/cpuinfo", "vendor_id\t: AuthenticAMD\n");
    let f = kvm(&fake.host());
    assert!(f.is_fail());
    assert!(f.to_string().contains("kvm_amd"), "{f}");
    one_line(&f);
    fake.file("dev/kvm", "");
    let f = kvm(&fake.host());
    assert!(f.to_string().contains("not a usable KVM device"), "{f}");
    let f = kvm_open_failed(
        std::path::Path::new("/dev/kvm"),
        libc::EACCES,
        crate::cpu::Vendor::Intel,
    );
    assert!(f.to_string().contains("no permission"), "{f}");
}

#[test]
fn iommu_off_hints_follow_vendor_and_cmdline() {
    let fake = FakeSysfs::new("iommu");
    fake.file(
        "proc/cpuinfo",
        "vendor_id\t: GenuineIntel\nflags\t\t: fpu vmx\n",
    );
    fake.file("proc/cmdline", "root=/dev/sda1 quiet\n");
    let host = fake.host();
    let f = iommu(&host);
    assert!(f.is_fail());
    assert!(f.to_string().contains("intel_iommu=on iommu=pt"), "{f}");
    one_line(&f);

    fake.file("proc/cmdline", "root=/dev/sda1 intel_iommu=on\n");
    assert!(iommu(&host)
        .to_string()
        .contains("enable VT-d in the firmware"));
    fake.file("proc/cmdline", "root=/dev/sda1 intel_iommu=off\n");
    assert!(iommu(&host).to_string().contains("remove intel_iommu=off"));

    fake.file(
        "proc/cpuinfo",
        "vendor_id\t: AuthenticAMD\nflags\t\t: fpu svm\n",
    );
    fake.file("proc/cmdline", "quiet\n");
    assert!(iommu(&host).to_string().contains("amd_iommu=on"));
    fake.file(
        "proc/cpuinfo",
        "vendor_id\t: AuthenticAMD\nflags\t\t: fpu svm hypervisor\n",
    );
    assert!(iommu(&host)
        .to_string()
        .contains("virtual machine without a virtual IOMMU"));

    fake.device("0000:00:02.0", None, Some(0), 0);
    let f = iommu(&host);
    assert_eq!(f.status, Status::Ok, "{f}");
}

#[test]
fn vfio_modules_each_missing() {
    let fake = FakeSysfs::new("modules");
    let host = fake.host();
    assert!(vfio_modules(&host)
        .to_string()
        .contains("modprobe vfio-pci vfio_iommu_type1"));
    fake.module("vfio_iommu_type1");
    assert!(vfio_modules(&host)
        .to_string()
        .contains("zhitong bind loads it"));
    fake.module("vfio_pci");
    assert_eq!(vfio_modules(&host).status, Status::Ok);
}

#[test]
fn iommufd_stands_in_for_type1() {
    let fake = FakeSysfs::new("modules-iommufd");
    let host = fake.host();
    fake.module("vfio_pci");
    assert!(vfio_modules(&host).is_fail());
    fake.file("dev/iommu", "");
    let f = vfio_modules(&host);
    assert_eq!(f.status, Status::Ok, "{f}");
    assert!(f.message.contains("only the iommufd backend works"), "{f}");
}

#[test]
fn interrupt_remapping_signals() {
    let fake = FakeSysfs::new("ir");
    fake.ready_host();
    let host = fake.host();
    assert_eq!(
        interrupt_remapping(&host, VfioBackend::Legacy).status,
        Status::Ok
    );

    // Remapping off: the hint depends on why.
    fake.file("proc/interrupts", "  0:   45   IO-APIC   2-edge   timer\n");
    fake.device("0000:00:02.0", None, Some(0), 0);
    let f = interrupt_remapping(&host, VfioBackend::Legacy);
    assert!(
        f.is_fail() && f.to_string().contains("allow_unsafe_interrupts"),
        "{f}"
    );
    one_line(&f);
    fake.file("proc/cmdline", "intel_iommu=on intremap=off\n");
    assert!(interrupt_remapping(&host, VfioBackend::Legacy)
        .to_string()
        .contains("remove intremap=off"));
    fake.file("proc/cmdline", "intel_iommu=on\n");
    fake.file("sys/class/iommu/dmar0/intel-iommu/ecap", "f020d7\n"); // bit 3 clear
    assert!(interrupt_remapping(&host, VfioBackend::Legacy)
        .to_string()
        .contains("cannot remap interrupts"));

    // Allowed unsafe: a warning, not a failure.
    fake.file(
        "sys/module/vfio_iommu_type1/parameters/allow_unsafe_interrupts",
        "Y\n",
    );
    let f = interrupt_remapping(&host, VfioBackend::Legacy);
    assert_eq!(f.status, Status::Warn, "{f}");
    one_line(&f);

    // Unreadable /proc/interrupts and nothing allowed: cannot tell.
    fake.file(
        "sys/module/vfio_iommu_type1/parameters/allow_unsafe_interrupts",
        "N\n",
    );
    std::fs::remove_file(fake.dir.join("proc/interrupts")).unwrap();
    assert_eq!(
        interrupt_remapping(&host, VfioBackend::Legacy).status,
        Status::Warn
    );
}

#[test]
fn memlock_against_guest_ram() {
    let fake = FakeSysfs::new("memlock");
    fake.ready_host();
    let host = fake.host();
    assert_eq!(memlock(&host, 64 << 30).status, Status::Ok); // CAP_IPC_LOCK
    fake.file("proc/self/status", "CapEff:\t0000000000000000\n");
    let f = memlock(&host, 4 << 30);
    assert!(f.is_fail());
    assert!(
        f.to_string()
            .contains("RLIMIT_MEMLOCK is 8M, less than the 4G"),
        "{f}"
    );
    one_line(&f);
    assert_eq!(memlock(&host, 8 << 20).status, Status::Ok);
    fake.file(
        "proc/self/limits",
        "Max locked memory         unlimited            unlimited            bytes\n",
    );
    assert_eq!(memlock(&host, 1 << 40).status, Status::Ok);
}

#[test]
fn device_chain_failures_name_cause_and_fix() {
    let fake = FakeSysfs::new("chain");
    fake.ready_host();
    fake.device("0000:01:00.0", Some("nvidia"), Some(3), 0x80);
    fake.device("0000:02:00.0", None, Some(4), 0);
    fake.device("0000:03:00.0", Some("vfio-pci"), None, 0);
    fake.device("0000:04:00.0", Some("vfio-pci"), Some(5), 0x80);
    fake.device("0000:04:00.1", Some("snd_hda_intel"), Some(5), 0);
    fake.device("0000:00:01.0", Some("pcieport"), Some(6), 1);
    fake.device("0000:06:00.0", Some("vfio-pci"), Some(7), 0);
    std::fs::remove_file(fake.dir.join("dev/vfio/7")).unwrap();
    let host = fake.host();
    let cases = [
        ("0000:09:00.0", "device", "zhitong devices"),
        ("0000:01:00.0", "driver", "bound to nvidia, not vfio-pci; hand it (and its IOMMU group) to vfio-pci: zhitong bind 0000:01:00.0"),
        ("0000:02:00.0", "driver", "zhitong bind 0000:02:00.0"),
        ("0000:03:00.0", "iommu-group", "intel_iommu=on"),
        ("0000:04:00.0", "group-viable", "0000:04:00.1, which is bound to snd_hda_intel; hand the whole group to vfio-pci: zhitong bind 0000:04:00.0"),
        ("0000:00:01.0", "device", "is a bridge"),
        ("0000:06:00.0", "group-node", "/dev/vfio/7 does not exist"),
    ];
    for (dev, check, needle) in cases {
        let chain = device_chain(&host, bdf(dev));
        let last = chain.last().unwrap();
        assert!(last.is_fail(), "{dev}: {chain:?}");
        assert_eq!(last.check, check, "{dev}");
        assert!(last.to_string().contains(needle), "{dev}: {last}");
        assert_eq!(last.device, Some(bdf(dev)));
        one_line(last);
    }
}

#[test]
fn group_node_errors() {
    let busy = vfio_group_open_failed(12, libc::EBUSY, None);
    assert!(busy.to_string().contains("/dev/vfio/12 is busy"), "{busy}");
    assert!(busy.to_string().contains("fuser"));
    let perm = vfio_group_open_failed(12, libc::EACCES, None);
    assert!(perm.to_string().contains("no permission"));
    for f in [
        busy,
        perm,
        vfio_group_open_failed(3, libc::EIO, Some(bdf("01:00.0"))),
    ] {
        one_line(&f);
    }
}

#[test]
fn big_bars_need_physical_address_bits() {
    let fake = gpu_host("bars");
    let gpu = [bdf("01:00.0")];
    let mut host = fake.host();
    let f = &check_all(&host, &gpu, 4 << 30, None, None, false)
        .into_iter()
        .filter(|f| f.check == "bars")
        .collect::<Vec<_>>()[0];
    assert_eq!(f.status, Status::Ok, "{f}");
    // 39 bits: a 512G address space, the window from 64G holds the 32G BAR.
    host.phys_bits = 39;
    let f = &bars(
        &host.sysfs,
        &gpu,
        &arch::pci_windows::PciWindows::for_guest(4 << 30, 39),
        4 << 30,
        39,
    )[0];
    assert_eq!(f.status, Status::Ok, "{f}");
    // 36 bits: no 64-bit window at all, and 32G is too big for the 32-bit one.
    let f = &bars(
        &host.sysfs,
        &gpu,
        &arch::pci_windows::PciWindows::for_guest(4 << 30, 36),
        4 << 30,
        36,
    )[0];
    assert!(f.is_fail(), "{f}");
    assert!(
        f.to_string()
            .contains("BAR 1 of 0000:01:00.0 (32 GiB) does not fit"),
        "{f}"
    );
    assert!(f.to_string().contains("36 physical address bits"), "{f}");
    one_line(f);
}

#[test]
fn duplicates_are_checked_once() {
    let fake = gpu_host("dups");
    let findings = check_all(
        &fake.host(),
        &[bdf("01:00.0"), bdf("0000:01:00.0")],
        1 << 30,
        None,
        None,
        false,
    );
    assert_eq!(findings.iter().filter(|f| f.check == "bars").count(), 1);
}

#[test]
fn a_kernel_without_vfio_groups_opens_devices_through_their_cdev() {
    let fake = gpu_host("no-groups");
    let host = fake.host();
    std::fs::remove_file(host.dev_path("vfio/12")).unwrap();
    let node = |findings: Vec<Finding>| findings.into_iter().find(|f| f.check == "group-node");
    let f = node(device_chain(&host, bdf("01:00.0"))).unwrap();
    assert!(f.is_fail(), "{f}");
    fake.file("dev/iommu", "");
    fake.file("sys/bus/pci/devices/0000:01:00.0/vfio-dev/vfio3/dev", "");
    fake.file("dev/vfio/devices/vfio3", "");
    let f = node(device_chain(&host, bdf("01:00.0"))).unwrap();
    assert!(
        !f.is_fail() && f.message.contains("opens through its VFIO cdev"),
        "{f}"
    );
    let findings = check_all(&host, &[bdf("01:00.0")], 4 << 30, None, None, false);
    let backend = findings.iter().find(|f| f.check == "vfio-backend").unwrap();
    assert!(
        backend.message.contains("/dev/vfio/devices/vfio3"),
        "{backend}"
    );
}

/// A BAR 5 that claims to be 64-bit is placed as 32-bit by the VM (it has no upper half):
/// the check must size the 32-bit window with it too.
#[test]
fn a_64_bit_bar_5_counts_as_32_bit() {
    use crate::sysfs::Resource;
    use device::bars_of;
    use devices::pci::BarKind;
    let r = |index, mem64| Resource {
        index,
        size: 1 << 20,
        io: false,
        mem64,
        prefetchable: false,
    };
    let bars = bars_of(&[r(0, true), r(5, true), r(5, false)]);
    let kinds: Vec<BarKind> = bars.iter().map(|b| b.kind).collect();
    assert_eq!(kinds, [BarKind::Mem64, BarKind::Mem32, BarKind::Mem32]);
}

#[test]
fn huge_pages_are_checked_when_asked_for() {
    use crate::hugepages::HugePageSize;
    let fake = gpu_host("hugepages-check");
    let host = fake.host();
    let has = |hp| {
        check_all(&host, &[], 4 << 30, hp, None, false)
            .iter()
            .any(|f| f.check == "hugepages")
    };
    assert!(!has(None));
    assert!(has(Some(HugePageSize::Size2M)));
}
