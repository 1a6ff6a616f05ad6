//! PCI devices, drivers, modules and IOMMU groups as sysfs shows them. Every path is relative
//! to a root (normally `/sys`) so tests can build a fake tree.

use std::fs;
use std::path::{Path, PathBuf};

use devices::pci::Bdf;

#[derive(Debug, Clone)]
pub struct Sysfs {
    root: PathBuf,
}

impl Default for Sysfs {
    fn default() -> Self {
        Self::new("/sys")
    }
}

/// PCI header type 0 is an endpoint; bridges (1) and CardBus (2) may stay with their
/// drivers in a group handed to VFIO.
const HEADER_TYPE_ENDPOINT: u8 = 0;

/// `IORESOURCE_*` flags of the sysfs `resource` file (include/linux/ioport.h).
const IORESOURCE_IO: u64 = 0x100;
const IORESOURCE_MEM: u64 = 0x200;
const IORESOURCE_PREFETCH: u64 = 0x2000;
const IORESOURCE_MEM_64: u64 = 0x10_0000;

/// One line of a device's `resource` file that decodes something: BARs 0-5, 6 the ROM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resource {
    pub index: u8,
    pub size: u64,
    pub io: bool,
    pub mem64: bool,
    pub prefetchable: bool,
}

impl Sysfs {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn path(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.root.join(rel)
    }

    pub fn device_dir(&self, bdf: &Bdf) -> PathBuf {
        self.root.join("bus/pci/devices").join(bdf.to_string())
    }

    pub fn exists(&self, bdf: &Bdf) -> bool {
        self.device_dir(bdf).exists()
    }

    /// Every PCI device, sorted.
    pub fn devices(&self) -> Vec<Bdf> {
        sorted_entries(&self.root.join("bus/pci/devices"))
    }

    fn link_name(&self, path: PathBuf) -> Option<String> {
        let target = fs::read_link(path).ok()?;
        Some(target.file_name()?.to_string_lossy().into_owned())
    }

    /// A device attribute (`vendor`, `class`...), trimmed.
    pub fn attr(&self, bdf: &Bdf, name: &str) -> Option<String> {
        let text = fs::read_to_string(self.device_dir(bdf).join(name)).ok()?;
        Some(text.trim().to_owned())
    }

    /// A hexadecimal attribute such as `vendor` (0x10de) or `class` (0x030000).
    pub fn hex_attr(&self, bdf: &Bdf, name: &str) -> Option<u32> {
        let text = self.attr(bdf, name)?;
        u32::from_str_radix(text.trim_start_matches("0x"), 16).ok()
    }

    /// The driver bound to the device, if any.
    pub fn driver(&self, bdf: &Bdf) -> Option<String> {
        self.link_name(self.device_dir(bdf).join("driver"))
    }

    /// The device's `driver_override` (None when unset: the kernel shows "(null)").
    pub fn driver_override(&self, bdf: &Bdf) -> Option<String> {
        self.attr(bdf, "driver_override")
            .filter(|s| !s.is_empty() && s != "(null)")
    }

    /// The device's IOMMU group; None when the host has no IOMMU enabled.
    pub fn iommu_group(&self, bdf: &Bdf) -> Option<u32> {
        self.link_name(self.device_dir(bdf).join("iommu_group"))?
            .parse()
            .ok()
    }

    /// Every IOMMU group the kernel made, sorted (empty: the IOMMU is off).
    pub fn iommu_groups(&self) -> Vec<u32> {
        sorted_entries(&self.root.join("kernel/iommu_groups"))
    }

    /// Every device in IOMMU group `group`, sorted.
    pub fn group_members(&self, group: u32) -> Vec<Bdf> {
        sorted_entries(
            &self
                .root
                .join("kernel/iommu_groups")
                .join(group.to_string())
                .join("devices"),
        )
    }

    /// The bridge the device sits below (its sysfs directory's parent is a PCI device);
    /// None on a root bus.
    pub fn upstream_bridge(&self, bdf: &Bdf) -> Option<Bdf> {
        let dir = fs::canonicalize(self.device_dir(bdf)).ok()?;
        dir.parent()?.file_name()?.to_str()?.parse().ok()
    }

    /// The other devices on the device's bus (what a bus reset also reaches), sorted.
    pub fn bus_peers(&self, bdf: &Bdf) -> Vec<Bdf> {
        let on_bus = |d: &Bdf| (d.domain, d.bus) == (bdf.domain, bdf.bus) && d != bdf;
        self.devices().into_iter().filter(on_bus).collect()
    }

    /// Whether the device is an endpoint (header type 0), from the first bytes of its
    /// config space; unknown counts as an endpoint (the stricter answer).
    pub fn is_endpoint(&self, bdf: &Bdf) -> bool {
        fs::read(self.device_dir(bdf).join("config"))
            .ok()
            .and_then(|c| c.get(0x0e).copied())
            .is_none_or(|h| h & 0x7f == HEADER_TYPE_ENDPOINT)
    }

    /// Whether the class code says bridge (host, ISA, PCI...): the host keeps those, even
    /// the ones with an endpoint header (host and ISA bridges).
    pub fn is_bridge_class(&self, bdf: &Bdf) -> bool {
        self.hex_attr(bdf, "class")
            .is_some_and(super::pci_class::is_bridge)
    }

    /// Whether firmware used this device as the boot display (the host console is on it).
    pub fn is_boot_vga(&self, bdf: &Bdf) -> bool {
        self.attr(bdf, "boot_vga").as_deref() == Some("1")
    }

    /// The BARs (0-5) and ROM (6) the device decodes, from its `resource` file: one line
    /// per resource, "start end flags" in hex; a 64-bit BAR shows at its lower index.
    pub fn resources(&self, bdf: &Bdf) -> Vec<Resource> {
        let text = fs::read_to_string(self.device_dir(bdf).join("resource")).unwrap_or_default();
        parse_resources(&text)
    }

    /// Whether `name` is a loaded (or built-in) kernel module: /sys/module/NAME.
    pub fn module_loaded(&self, name: &str) -> bool {
        self.root.join("module").join(name).exists()
    }

    /// A module parameter, trimmed.
    pub fn module_param(&self, module: &str, param: &str) -> Option<String> {
        let path = self
            .root
            .join("module")
            .join(module)
            .join("parameters")
            .join(param);
        Some(fs::read_to_string(path).ok()?.trim().to_owned())
    }

    /// /sys/bus/pci/drivers/NAME: the driver is registered with the PCI bus.
    pub fn driver_dir(&self, driver: &str) -> PathBuf {
        self.root.join("bus/pci/drivers").join(driver)
    }

    pub fn drivers_probe(&self) -> PathBuf {
        self.root.join("bus/pci/drivers_probe")
    }

    /// Block devices (disks and partitions, by kernel name) that live below this PCI device
    /// (an NVMe namespace, a disk behind a SATA/SAS/USB controller...).
    pub fn block_devices_below(&self, bdf: &Bdf) -> Vec<String> {
        let Ok(dev) = fs::canonicalize(self.device_dir(bdf)) else {
            return Vec::new();
        };
        let mut names: Vec<String> = fs::read_dir(self.root.join("class/block"))
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| fs::canonicalize(e.path()).is_ok_and(|p| p.starts_with(&dev)))
            .filter_map(|e| e.file_name().to_str().map(str::to_owned))
            .collect();
        names.sort();
        names
    }

    /// What sits on top of a block device (device-mapper, md RAID, bcache...).
    pub fn block_holders(&self, name: &str) -> Vec<String> {
        sorted_entries(&self.root.join("class/block").join(name).join("holders"))
    }

    /// The IOMMUs the kernel registered (/sys/class/iommu): dmar0, ivhd0, ...
    pub fn iommus(&self) -> Vec<String> {
        sorted_entries(&self.root.join("class/iommu"))
    }
}

fn parse_resources(text: &str) -> Vec<Resource> {
    let hex = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok();
    text.lines()
        .take(7)
        .enumerate()
        .filter_map(|(index, line)| {
            let mut fields = line.split_whitespace().map(hex);
            let (start, end, flags) = (fields.next()??, fields.next()??, fields.next()??);
            if end < start || (start == 0 && end == 0) {
                return None;
            }
            if flags & (IORESOURCE_IO | IORESOURCE_MEM) == 0 {
                return None;
            }
            Some(Resource {
                index: index as u8,
                size: end - start + 1,
                io: flags & IORESOURCE_IO != 0,
                mem64: flags & IORESOURCE_MEM_64 != 0,
                prefetchable: flags & IORESOURCE_PREFETCH != 0,
            })
        })
        .collect()
}

/// The `resource` flags for a BAR, for fake trees.
pub fn resource_flags(io: bool, mem64: bool, prefetchable: bool) -> u64 {
    let mut flags = if io { IORESOURCE_IO } else { IORESOURCE_MEM };
    if mem64 {
        flags |= IORESOURCE_MEM_64;
    }
    if prefetchable {
        flags |= IORESOURCE_PREFETCH;
    }
    flags
}

/// The entries of `dir` whose names parse as `T` (BDFs, group numbers, names), sorted; empty when
/// the directory is missing.
fn sorted_entries<T: std::str::FromStr + Ord>(dir: &Path) -> Vec<T> {
    let mut items: Vec<T> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    items.sort();
    items
}

#[cfg(test)]
pub mod fake;

#[cfg(test)]
mod tests {
    use super::fake::FakeSysfs;
    use super::*;

    #[test]
    fn reads_driver_group_and_members() {
        let fake = FakeSysfs::new("read");
        fake.device("0000:01:00.0", Some("vfio-pci"), Some(12), 0x80);
        fake.device("0000:01:00.1", Some("snd_hda_intel"), Some(12), 0);
        fake.device("0000:00:1f.0", None, None, 0);
        let sys = fake.sysfs();
        let gpu: Bdf = "0000:01:00.0".parse().unwrap();
        let lpc: Bdf = "0000:00:1f.0".parse().unwrap();
        assert!(sys.exists(&gpu));
        assert_eq!(sys.driver(&gpu).as_deref(), Some("vfio-pci"));
        assert_eq!(sys.iommu_group(&gpu), Some(12));
        assert_eq!(sys.iommu_group(&lpc), None);
        assert_eq!(sys.driver(&lpc), None);
        let members: Vec<String> = sys
            .group_members(12)
            .iter()
            .map(|b| b.to_string())
            .collect();
        assert_eq!(members, ["0000:01:00.0", "0000:01:00.1"]);
        assert!(sys.is_endpoint(&gpu)); // 0x80 is the multi-function bit of an endpoint
        assert_eq!(sys.devices().len(), 3);
        assert_eq!(sys.iommu_groups(), vec![12]);
    }

    #[test]
    fn resource_file_gives_bar_sizes() {
        // A GPU as the kernel shows it: BAR0 16M, BAR1/2 256M 64-bit prefetchable,
        // BAR3/4 32M 64-bit prefetchable, BAR5 I/O 128, ROM 512K, then bridge-window lines.
        let text = "\
0x00000000f6000000 0x00000000f6ffffff 0x0000000000040200
0x000000e000000000 0x000000e00fffffff 0x000000000014220c
0x0000000000000000 0x0000000000000000 0x0000000000000000
0x000000e010000000 0x000000e011ffffff 0x000000000014220c
0x0000000000000000 0x0000000000000000 0x0000000000000000
0x000000000000e000 0x000000000000e07f 0x0000000000040101
0x00000000f7000000 0x00000000f707ffff 0x0000000000046200
0x0000000000000000 0x0000000000000000 0x0000000000000000
";
        let got = parse_resources(text);
        let sizes: Vec<(u8, u64, bool, bool)> = got
            .iter()
            .map(|r| (r.index, r.size, r.mem64, r.io))
            .collect();
        assert_eq!(
            sizes,
            vec![
                (0, 16 << 20, false, false),
                (1, 256 << 20, true, false),
                (3, 32 << 20, true, false),
                (5, 128, false, true),
                (6, 512 << 10, false, false),
            ]
        );
        assert!(got[1].prefetchable && !got[0].prefetchable);
    }

    #[test]
    fn unset_driver_override_is_none() {
        let fake = FakeSysfs::new("override");
        fake.device("0000:01:00.0", None, Some(1), 0);
        let bdf: Bdf = "01:00.0".parse().unwrap();
        fake.file(
            "sys/bus/pci/devices/0000:01:00.0/driver_override",
            "(null)\n",
        );
        assert_eq!(fake.sysfs().driver_override(&bdf), None);
        fake.file(
            "sys/bus/pci/devices/0000:01:00.0/driver_override",
            "vfio-pci\n",
        );
        assert_eq!(
            fake.sysfs().driver_override(&bdf).as_deref(),
            Some("vfio-pci")
        );
    }
}
