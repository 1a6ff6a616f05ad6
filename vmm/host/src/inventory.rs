//! `zhitong devices`: every PCI device with its ids, class, driver, IOMMU group, BARs, and
//! whether it can be passed through as it is (and through which VFIO backend).

use devices::pci::Bdf;
use serde::Serialize;

use super::checks::VIABLE_DRIVERS;
use super::pci_class::{class_name, short_size};
use super::sysfs::Resource;
use super::vfio_backend::{choose, VfioBackend};
use super::{Host, Sysfs};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    pub bdf: Bdf,
    pub vendor: Option<u16>,
    pub device: Option<u16>,
    pub class: Option<u32>,
    pub driver: Option<String>,
    pub iommu_group: Option<u32>,
    /// Every device of the IOMMU group, this one included.
    pub group_members: Vec<Bdf>,
    pub bars: Vec<Resource>,
    pub endpoint: bool,
    /// None when it can be passed through now; otherwise why not, in a few words.
    pub not_ready: Option<String>,
    /// The VFIO backend a run would open it through (when it is ready), left to choose.
    pub vfio_backend: Option<VfioBackend>,
}

impl DeviceInfo {
    pub fn ids(&self) -> String {
        let hex = |v: Option<u16>| v.map_or("????".to_owned(), |v| format!("{v:04x}"));
        format!("{}:{}", hex(self.vendor), hex(self.device))
    }

    pub fn class_name(&self) -> String {
        self.class.map_or("unknown".to_owned(), class_name)
    }

    /// "16M 256M(64) 32M(64) io:128 rom:512K".
    pub fn bars_text(&self) -> String {
        let text: Vec<String> = self
            .bars
            .iter()
            .map(|b| match (b.index, b.io, b.mem64) {
                (6, _, _) => format!("rom:{}", short_size(b.size)),
                (_, true, _) => format!("io:{}", short_size(b.size)),
                (_, _, true) => format!("{}(64)", short_size(b.size)),
                _ => short_size(b.size),
            })
            .collect();
        if text.is_empty() {
            "-".to_owned()
        } else {
            text.join(" ")
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(&DeviceJson::from(self)).expect("a device is plain data")
    }
}

/// One device in `zhitong devices --json`: ids as bare hex ("10de", class "030000"), null
/// when unreadable; `ready` is `not_ready == null`.
#[derive(Serialize)]
struct DeviceJson<'a> {
    #[serde(with = "crate::serde_bdf")]
    bdf: Bdf,
    vendor: Option<String>,
    device: Option<String>,
    class: Option<String>,
    class_name: String,
    driver: Option<&'a str>,
    iommu_group: Option<u32>,
    #[serde(serialize_with = "crate::serde_bdf::list")]
    group_members: &'a [Bdf],
    bars: Vec<BarJson>,
    ready: bool,
    not_ready: Option<&'a str>,
    vfio_backend: Option<VfioBackend>,
}

#[derive(Serialize)]
struct BarJson {
    index: u8,
    /// "mem32", "mem64", "io" or "rom".
    kind: &'static str,
    prefetchable: bool,
    size: u64,
}

impl<'a> From<&'a DeviceInfo> for DeviceJson<'a> {
    fn from(d: &'a DeviceInfo) -> Self {
        let hex4 = |v: Option<u16>| v.map(|v| format!("{v:04x}"));
        DeviceJson {
            bdf: d.bdf,
            vendor: hex4(d.vendor),
            device: hex4(d.device),
            class: d.class.map(|c| format!("{c:06x}")),
            class_name: d.class_name(),
            driver: d.driver.as_deref(),
            iommu_group: d.iommu_group,
            group_members: &d.group_members,
            bars: d.bars.iter().map(BarJson::from).collect(),
            ready: d.not_ready.is_none(),
            not_ready: d.not_ready.as_deref(),
            vfio_backend: d.vfio_backend,
        }
    }
}

impl From<&Resource> for BarJson {
    fn from(b: &Resource) -> Self {
        BarJson {
            index: b.index,
            kind: match (b.index, b.io, b.mem64) {
                (6, _, _) => "rom",
                (_, true, _) => "io",
                (_, _, true) => "mem64",
                _ => "mem32",
            },
            prefetchable: b.prefetchable,
            size: b.size,
        }
    }
}

/// One device as the host shows it.
pub fn device_info(host: &Host, bdf: Bdf) -> DeviceInfo {
    let sys = &host.sysfs;
    let id = |name| sys.hex_attr(&bdf, name).and_then(|v| u16::try_from(v).ok());
    let iommu_group = sys.iommu_group(&bdf);
    let group_members = iommu_group
        .map(|g| sys.group_members(g))
        .unwrap_or_default();
    let driver = sys.driver(&bdf);
    let endpoint = sys.is_endpoint(&bdf);
    let not_ready = readiness(
        sys,
        bdf,
        endpoint,
        iommu_group,
        driver.as_deref(),
        &group_members,
    );
    DeviceInfo {
        bdf,
        vendor: id("vendor"),
        device: id("device"),
        class: sys.hex_attr(&bdf, "class"),
        driver,
        iommu_group,
        group_members,
        bars: sys.resources(&bdf),
        endpoint,
        vfio_backend: not_ready
            .is_none()
            .then(|| choose(host, None, &[bdf], false).ok())
            .flatten(),
        not_ready,
    }
}

fn readiness(
    sys: &Sysfs,
    bdf: Bdf,
    endpoint: bool,
    group: Option<u32>,
    driver: Option<&str>,
    members: &[Bdf],
) -> Option<String> {
    if !endpoint || sys.is_bridge_class(&bdf) {
        return Some("a bridge, stays with the host".into());
    }
    if group.is_none() {
        return Some("no IOMMU group: the IOMMU is off".into());
    }
    match driver {
        Some("vfio-pci") => {}
        Some(d) => return Some(format!("bound to {d}: zhitong bind {bdf}")),
        None => return Some(format!("no driver: zhitong bind {bdf}")),
    }
    members.iter().find_map(|&m| {
        let d = sys.driver(&m)?;
        (m != bdf && sys.is_endpoint(&m) && !VIABLE_DRIVERS.contains(&d.as_str()))
            .then(|| format!("group member {m} is on {d}: zhitong bind {bdf}"))
    })
}

/// Every PCI device of the host, sorted by address.
pub fn inventory(host: &Host) -> Vec<DeviceInfo> {
    host.sysfs
        .devices()
        .into_iter()
        .map(|b| device_info(host, b))
        .collect()
}

/// The human listing: a table, then the IOMMU groups that hold more than one device.
pub fn render_table(devices: &[DeviceInfo]) -> String {
    let rows: Vec<[String; 7]> = devices
        .iter()
        .map(|d| {
            [
                d.bdf.to_string(),
                d.ids(),
                d.class_name(),
                d.driver.clone().unwrap_or_else(|| "-".into()),
                d.iommu_group.map_or("-".into(), |g| g.to_string()),
                d.bars_text(),
                match (&d.not_ready, d.vfio_backend) {
                    (None, Some(backend)) => format!("ready ({backend})"),
                    (None, None) => "ready".to_owned(),
                    (Some(why), _) => format!("no: {why}"),
                },
            ]
        })
        .collect();
    let header = [
        "BDF",
        "ID",
        "CLASS",
        "DRIVER",
        "GROUP",
        "BARS",
        "PASSTHROUGH",
    ]
    .map(String::from);
    let mut widths = [0usize; 7];
    for row in std::iter::once(&header).chain(&rows) {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .enumerate()
            .map(|(i, (c, w))| {
                if i == 6 {
                    c.clone()
                } else {
                    format!("{c:<w$}")
                }
            })
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    let mut shared: Vec<(u32, &[Bdf])> = devices
        .iter()
        .filter(|d| d.group_members.len() > 1)
        .filter_map(|d| Some((d.iommu_group?, d.group_members.as_slice())))
        .collect();
    shared.sort_by_key(|(g, _)| *g);
    shared.dedup_by_key(|(g, _)| *g);
    if devices.is_empty() {
        out.push_str("no PCI devices under /sys/bus/pci/devices\n");
    } else if devices.iter().all(|d| d.iommu_group.is_none()) {
        out.push_str(
            "no IOMMU groups: the host IOMMU is off ('zhitong check' says how to turn it on)\n",
        );
    }
    for (group, members) in shared {
        let list: Vec<String> = members.iter().map(Bdf::to_string).collect();
        out.push_str(&format!(
            "IOMMU group {group} holds {}: zhitong bind moves its devices to vfio-pci together (bridges stay)\n",
            list.join(" ")
        ));
    }
    out
}

/// `zhitong devices --json`: an array of [`DeviceInfo::to_json`] objects.
pub fn render_json(devices: &[DeviceInfo]) -> String {
    let list: Vec<DeviceJson> = devices.iter().map(DeviceJson::from).collect();
    serde_json::to_string(&list).expect("devices are plain data")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sysfs::fake::FakeSysfs;

    #[test]
    fn table_and_json() {
        let fake = FakeSysfs::new("inventory");
        fake.device("0000:00:00.0", None, Some(0), 0);
        fake.ids("0000:00:00.0", 0x8086, 0x4660, 0x060000);
        fake.device("0000:00:01.0", Some("pcieport"), Some(1), 1);
        fake.ids("0000:00:01.0", 0x8086, 0x460d, 0x060400);
        fake.device("0000:01:00.0", Some("vfio-pci"), Some(1), 0x80);
        fake.ids("0000:01:00.0", 0x10de, 0x2684, 0x030000);
        fake.bars(
            "0000:01:00.0",
            &[
                (0, 16 << 20, false, false, false),
                (1, 32 << 30, false, true, true),
                (5, 128, true, false, false),
                (6, 512 << 10, false, false, false),
            ],
        );
        fake.device("0000:01:00.1", Some("snd_hda_intel"), Some(1), 0);
        fake.ids("0000:01:00.1", 0x10de, 0x22ba, 0x040300);
        fake.device("0000:02:00.0", Some("nvme"), Some(2), 0);
        fake.ids("0000:02:00.0", 0x144d, 0xa808, 0x010802);
        fake.device("0000:03:00.0", None, Some(3), 0);
        fake.ids("0000:03:00.0", 0x8086, 0x15f3, 0x020000);
        let devices = inventory(&fake.host());
        let table = render_table(&devices);
        let lines: Vec<&str> = table.lines().collect();
        assert!(
            lines[0].starts_with("BDF           ID         CLASS"),
            "{table}"
        );
        let row = |bdf: &str| *lines.iter().find(|l| l.starts_with(bdf)).unwrap();
        assert!(
            row("0000:00:00.0").ends_with("no: a bridge, stays with the host"),
            "{table}"
        );
        assert!(
            row("0000:01:00.0").contains("16M 32G(64) io:128 rom:512K"),
            "{table}"
        );
        assert!(
            row("0000:01:00.0").ends_with(
                "no: group member 0000:01:00.1 is on snd_hda_intel: zhitong bind 0000:01:00.0"
            ),
            "{table}"
        );
        assert!(
            row("0000:02:00.0").ends_with("no: bound to nvme: zhitong bind 0000:02:00.0"),
            "{table}"
        );
        assert!(
            row("0000:03:00.0").ends_with("no: no driver: zhitong bind 0000:03:00.0"),
            "{table}"
        );
        assert!(
            table.contains("IOMMU group 1 holds 0000:00:01.0 0000:01:00.0 0000:01:00.1: zhitong bind moves its devices to vfio-pci together (bridges stay)"),
            "{table}"
        );

        let json = render_json(&devices);
        assert!(json.starts_with("[{\"bdf\":\"0000:00:00.0\""), "{json}");
        assert!(json.contains(
            "\"bdf\":\"0000:01:00.0\",\"vendor\":\"10de\",\"device\":\"2684\",\"class\":\"030000\",\"class_name\":\"GPU\",\"driver\":\"vfio-pci\",\"iommu_group\":1,\"group_members\":[\"0000:00:01.0\",\"0000:01:00.0\",\"0000:01:00.1\"]"
        ), "{json}");
        assert!(
            json.contains(
                "{\"index\":1,\"kind\":\"mem64\",\"prefetchable\":true,\"size\":34359738368}"
            ),
            "{json}"
        );

        // Once the audio function is on vfio-pci too, the GPU is ready.
        std::fs::remove_file(fake.dir.join("sys/bus/pci/devices/0000:01:00.1/driver")).unwrap();
        let gpu = device_info(&fake.host(), "01:00.0".parse().unwrap());
        assert_eq!(gpu.not_ready, None);
        assert_eq!(gpu.vfio_backend, Some(VfioBackend::Legacy));
        let table = render_table(std::slice::from_ref(&gpu));
        assert!(
            table.lines().nth(1).unwrap().ends_with("ready (legacy)"),
            "{table}"
        );
        // With iommufd and the device's cdev, a run would take iommufd.
        fake.file("dev/iommu", "");
        fake.file("sys/bus/pci/devices/0000:01:00.0/vfio-dev/vfio0/dev", "");
        fake.file("dev/vfio/devices/vfio0", "");
        let gpu = device_info(&fake.host(), "01:00.0".parse().unwrap());
        assert_eq!(gpu.vfio_backend, Some(VfioBackend::Iommufd));
        assert!(render_table(&[gpu]).contains("ready (iommufd)"));
    }

    #[test]
    fn one_entry_json_is_pinned() {
        let fake = FakeSysfs::new("inventory-json");
        fake.device("0000:01:00.0", Some("vfio-pci"), Some(1), 0x80);
        fake.ids("0000:01:00.0", 0x10de, 0x2684, 0x030000);
        fake.bars(
            "0000:01:00.0",
            &[
                (0, 16 << 20, false, false, false),
                (1, 32 << 30, false, true, true),
                (5, 128, true, false, false),
                (6, 512 << 10, false, false, false),
            ],
        );
        fake.device("0000:01:00.1", Some("vfio-pci"), Some(1), 0);
        let gpu = device_info(&fake.host(), "01:00.0".parse().unwrap());
        assert_eq!(
            gpu.to_json(),
            concat!(
                r#"{"bdf":"0000:01:00.0","vendor":"10de","device":"2684","class":"030000","#,
                r#""class_name":"GPU","driver":"vfio-pci","iommu_group":1,"#,
                r#""group_members":["0000:01:00.0","0000:01:00.1"],"bars":["#,
                r#"{"index":0,"kind":"mem32","prefetchable":false,"size":16777216},"#,
                r#"{"index":1,"kind":"mem64","prefetchable":true,"size":34359738368},"#,
                r#"{"index":5,"kind":"io","prefetchable":false,"size":128},"#,
                r#"{"index":6,"kind":"rom","prefetchable":false,"size":524288}],"#,
                r#""ready":true,"not_ready":null,"vfio_backend":"legacy"}"#
            )
        );
        // Nothing readable: nulls, an empty group, no BARs.
        fake.device("0000:05:00.0", None, None, 0);
        let bare = device_info(&fake.host(), "05:00.0".parse().unwrap());
        assert_eq!(
            bare.to_json(),
            concat!(
                r#"{"bdf":"0000:05:00.0","vendor":null,"device":null,"class":null,"#,
                r#""class_name":"unknown","driver":null,"iommu_group":null,"group_members":[],"#,
                r#""bars":[],"ready":false,"not_ready":"no IOMMU group: the IOMMU is off","vfio_backend":null}"#
            )
        );
        assert_eq!(
            render_json(&[bare.clone(), bare.clone()]),
            format!("[{},{}]", bare.to_json(), bare.to_json())
        );
    }

    #[test]
    fn without_iommu() {
        let fake = FakeSysfs::new("inventory-off");
        fake.device("0000:00:03.0", Some("virtio-pci"), None, 0);
        let table = render_table(&inventory(&fake.host()));
        assert!(
            table.contains("no: no IOMMU group: the IOMMU is off"),
            "{table}"
        );
        assert!(table.contains(
            "no IOMMU groups: the host IOMMU is off ('zhitong check' says how to turn it on)"
        ));
    }
}
