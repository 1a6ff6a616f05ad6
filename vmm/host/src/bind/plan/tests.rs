//! One test per rule, on groups written out by hand: no filesystem.

use super::*;

fn bdf(s: &str) -> Bdf {
    s.parse().unwrap()
}

/// An endpoint of class `class` on `driver`, no record, nothing mounted.
fn member(at: &str, class: u32, driver: Option<&str>) -> Member {
    Member {
        bdf: bdf(at),
        class: Some(class),
        endpoint: true,
        driver: driver.map(str::to_owned),
        driver_override: None,
        disks_in_use: Vec::new(),
        boot_vga: false,
        record: Ok(None),
    }
}

fn root_port() -> Member {
    Member {
        endpoint: false,
        ..member("00:01.0", 0x060400, Some("pcieport"))
    }
}

fn gpu(driver: Option<&str>) -> Member {
    member("01:00.0", 0x030000, driver)
}

fn group(members: Vec<Member>) -> Group {
    Group {
        requested: members.iter().find(|m| m.endpoint).unwrap().bdf,
        number: 12,
        members,
        node: PathBuf::from("/dev/vfio/12"),
        busy: false,
    }
}

const BIND: Request = Request::Bind { force: false };

fn record(of: &Member, driver: Option<&str>) -> BindRecord {
    BindRecord {
        bdf: of.bdf,
        driver: driver.map(str::to_owned),
        driver_override: None,
        group: 12,
        requested: of.bdf,
    }
}

fn refusal(g: &Group, request: Request) -> String {
    let f = plan(g, request).unwrap_err();
    assert!(f.is_fail() && f.device == Some(g.requested), "{f:?}");
    f.to_string()
}

#[test]
fn bind_moves_an_endpoint_recording_its_driver() {
    let p = plan(&group(vec![gpu(Some("nvidia"))]), BIND).unwrap();
    let gpu = bdf("01:00.0");
    assert_eq!(
        p.actions,
        [
            Action::LoadVfioPci,
            Action::SaveRecord(BindRecord {
                bdf: gpu,
                driver: Some("nvidia".into()),
                driver_override: None,
                group: 12,
                requested: gpu,
            }),
            Action::SetOverride(gpu, Some("vfio-pci".into())),
            Action::Detach(gpu),
            Action::Probe(gpu),
            Action::ExpectVfio {
                bdf: gpu,
                line: "0000:01:00.0 (GPU): nvidia -> vfio-pci".into()
            },
        ]
    );
    assert_eq!((p.check, p.group, p.devices), ("bind", 12, vec![gpu]));
}

#[test]
fn bind_of_a_device_without_driver_does_not_detach() {
    let p = plan(&group(vec![gpu(None)]), BIND).unwrap();
    assert!(!p.actions.iter().any(|a| matches!(a, Action::Detach(_))));
    assert!(p.actions.contains(&Action::ExpectVfio {
        bdf: bdf("01:00.0"),
        line: "0000:01:00.0 (GPU): no driver -> vfio-pci".into()
    }));
}

#[test]
fn bridge_keeps_its_driver() {
    let p = plan(&group(vec![root_port(), gpu(Some("nvidia"))]), BIND).unwrap();
    assert_eq!(
        p.actions[0],
        Action::Line(
            "0000:00:01.0 (PCI bridge): a bridge, stays with pcieport (VFIO allows that)".into()
        )
    );
    let bridge = bdf("00:01.0");
    let touched = p.actions.iter().any(|a| match a {
        Action::SetOverride(b, _) | Action::Detach(b) | Action::Probe(b) => *b == bridge,
        _ => false,
    });
    assert!(!touched, "{:?}", p.actions);
    assert_eq!(p.devices, [bdf("01:00.0")]);
}

#[test]
fn bridge_class_endpoint_without_a_driver_or_on_a_stub_stays() {
    let bare = member("00:1f.0", 0x060100, None);
    let stub = member("00:1f.1", 0x060000, Some("pci-stub"));
    let p = plan(&group(vec![bare, stub, gpu(Some("nvidia"))]), BIND).unwrap();
    assert_eq!(
        p.actions[..2],
        [
            Action::Line(
                "0000:00:1f.0 (ISA bridge): a bridge without a driver, stays (VFIO allows that)"
                    .into()
            ),
            Action::Line("0000:00:1f.1 (host bridge): a bridge on pci-stub, stays".into()),
        ]
    );
}

#[test]
fn host_or_isa_bridge_with_a_driver_refuses() {
    for (class, name) in [(0x060100, "ISA bridge"), (0x060000, "host bridge")] {
        let lpc = member("00:1f.0", class, Some("lpc_ich"));
        let audio = member("00:1f.3", 0x040300, Some("snd_hda_intel"));
        let g = Group {
            requested: audio.bdf,
            ..group(vec![lpc, audio])
        };
        assert_eq!(
            refusal(&g, BIND),
            format!("IOMMU group 12 of 0000:00:1f.3 also holds 0000:00:1f.0 ({name}), bound to lpc_ich: the host needs it, so the group cannot be handed over; put the device in a slot whose IOMMU group holds only it (see 'zhitong devices'), or enable ACS in the firmware")
        );
    }
}

#[test]
fn mounted_disk_refuses_unless_forced() {
    let nvme = Member {
        disks_in_use: vec![("nvme0n1p2".into(), "mounted at /".into())],
        ..member("02:00.0", 0x010802, Some("nvme"))
    };
    let g = group(vec![nvme]);
    assert_eq!(
        refusal(&g, BIND),
        "0000:02:00.0 (NVMe) of IOMMU group 12 carries disk nvme0n1p2, mounted at /: moving it to vfio-pci takes the disk away from the host; stop using nvme0n1p2 first (umount/swapoff), or pass --force if you mean it"
    );
    let p = plan(&g, Request::Bind { force: true }).unwrap();
    assert_eq!(
        p.warnings,
        ["0000:02:00.0 (NVMe) of IOMMU group 12 carries disk nvme0n1p2, mounted at /: moving it to vfio-pci takes the disk away from the host (--force given)"]
    );
    assert!(p.actions.contains(&Action::Probe(bdf("02:00.0"))));
}

#[test]
fn boot_display_with_a_driver_warns() {
    let vga = Member {
        boot_vga: true,
        ..gpu(Some("i915"))
    };
    let p = plan(&group(vec![vga.clone()]), BIND).unwrap();
    assert_eq!(p.warnings.len(), 1);
    assert!(p.warnings[0].starts_with("0000:01:00.0 (GPU) is the host's boot display"));
    // Without a driver the console is not on it.
    let idle = Member {
        driver: None,
        ..vga
    };
    assert!(plan(&group(vec![idle]), BIND).unwrap().warnings.is_empty());
}

#[test]
fn already_on_vfio_pci_is_nothing_to_do() {
    let audio = member("01:00.1", 0x040300, Some("vfio-pci"));
    let g = group(vec![root_port(), gpu(Some("vfio-pci")), audio]);
    let p = plan(&g, BIND).unwrap();
    assert!(p.changes_nothing(), "{:?}", p.actions);
    assert!(p.actions.contains(&Action::Line(
        "0000:01:00.0 (GPU): already on vfio-pci".into()
    )));
    assert_eq!(p.devices, [bdf("01:00.0"), bdf("01:00.1")]);
}

#[test]
fn bind_keeps_the_oldest_record() {
    let mut half_done = gpu(None);
    half_done.record = Ok(Some(record(&half_done, Some("nvidia"))));
    let p = plan(&group(vec![half_done]), BIND).unwrap();
    assert!(!p.actions.iter().any(|a| matches!(a, Action::SaveRecord(_))));
    assert!(p.actions.contains(&Action::Probe(bdf("01:00.0"))));
}

#[test]
fn damaged_record_refuses_before_anything() {
    let damaged = Err(RecordError {
        message: "/run/zhitong/bind/0000:01:00.0.json is damaged".into(),
        path: "/run/zhitong/bind/0000:01:00.0.json".into(),
    });
    let m = Member {
        record: damaged,
        ..gpu(Some("nvidia"))
    };
    assert_eq!(
        refusal(&group(vec![m.clone()]), BIND),
        "/run/zhitong/bind/0000:01:00.0.json is damaged; remove it and bind again: rm /run/zhitong/bind/0000:01:00.0.json"
    );
    let on_vfio = Member {
        driver: Some("vfio-pci".into()),
        ..m
    };
    assert_eq!(
        refusal(&group(vec![on_vfio]), Request::Unbind),
        "/run/zhitong/bind/0000:01:00.0.json is damaged; restore 0000:01:00.0 by hand, then rm /run/zhitong/bind/0000:01:00.0.json"
    );
}

#[test]
fn unbind_restores_the_recorded_driver_and_override() {
    let mut m = gpu(Some("vfio-pci"));
    let mut rec = record(&m, Some("nvidia"));
    rec.driver_override = Some("nvidia".into());
    m.record = Ok(Some(rec));
    let p = plan(&group(vec![root_port(), m]), Request::Unbind).unwrap();
    let gpu = bdf("01:00.0");
    // The bridge is not an endpoint: unbind says nothing about it.
    assert_eq!(
        p.actions,
        [
            Action::SetOverride(gpu, Some("nvidia".into())),
            Action::Detach(gpu),
            Action::AttachTo(gpu, "nvidia".into()),
            Action::ExpectRestored {
                bdf: gpu,
                desc: "0000:01:00.0 (GPU)".into(),
                want: Some("nvidia".into()),
            },
            Action::RemoveRecord(gpu),
        ]
    );
    assert_eq!(p.check, "unbind");
}

#[test]
fn unbind_of_a_device_that_had_no_driver_leaves_it_without() {
    let mut m = gpu(None);
    m.record = Ok(Some(record(&m, None)));
    let gpu = bdf("01:00.0");
    let p = plan(&group(vec![m]), Request::Unbind).unwrap();
    assert_eq!(
        p.actions,
        [
            Action::SetOverride(gpu, None),
            Action::ExpectRestored {
                bdf: gpu,
                desc: "0000:01:00.0 (GPU)".into(),
                want: None,
            },
            Action::RemoveRecord(gpu),
        ]
    );
}

#[test]
fn unbind_while_the_group_is_busy_refuses() {
    let mut g = group(vec![gpu(Some("vfio-pci"))]);
    g.busy = true;
    assert_eq!(
        refusal(&g, Request::Unbind),
        "IOMMU group 12 is in use: a VM (or another program) holds /dev/vfio/12; stop it first ('fuser -v /dev/vfio/12' names it)"
    );
    // Bind does not care, and a group off vfio-pci has nothing a VM could hold.
    assert!(plan(&g, BIND).is_ok());
    g.members[0].driver = Some("nvidia".into());
    assert!(plan(&g, Request::Unbind).unwrap().changes_nothing());
}

#[test]
fn unbind_without_a_record_lets_the_kernel_choose() {
    let mut m = gpu(Some("vfio-pci"));
    m.driver_override = Some("vfio-pci".into());
    let gpu = bdf("01:00.0");
    let p = plan(&group(vec![m.clone()]), Request::Unbind).unwrap();
    assert_eq!(
        p.actions,
        [
            Action::SetOverride(gpu, None),
            Action::Detach(gpu),
            Action::Probe(gpu),
            Action::ReportChosen {
                bdf: gpu,
                desc: "0000:01:00.0 (GPU)".into()
            },
        ]
    );
    // An override someone else set stays.
    m.driver_override = Some("other".into());
    let p = plan(&group(vec![m]), Request::Unbind).unwrap();
    assert_eq!(p.actions[0], Action::Detach(gpu));
}

#[test]
fn unbind_leaves_members_off_vfio_pci_alone() {
    let mut back = gpu(Some("nvidia"));
    back.record = Ok(Some(record(&back, Some("nouveau"))));
    let nvme = member("02:00.0", 0x010802, Some("nvme"));
    let p = plan(&group(vec![back, nvme]), Request::Unbind).unwrap();
    assert_eq!(
        p.actions,
        [
            Action::Line("0000:01:00.0 (GPU): already on nvidia (was on nouveau)".into()),
            Action::RemoveRecord(bdf("01:00.0")),
            Action::Line("0000:02:00.0 (NVMe): not on vfio-pci (nvme), left alone".into()),
        ]
    );
    let bare = member("03:00.0", 0x020000, None);
    let p = plan(&group(vec![bare]), Request::Unbind).unwrap();
    assert!(p.changes_nothing());
    assert_eq!(
        p.actions,
        [Action::Line(
            "0000:03:00.0 (Ethernet): not on vfio-pci (no driver), left alone".into()
        )]
    );
}
