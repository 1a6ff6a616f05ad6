//! PCI devices and IOMMU groups as sysfs shows them. Every path is relative to a root
//! (normally `/sys`) so tests can build a fake tree.

use std::fs;
use std::path::{Path, PathBuf};

use super::Bdf;

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

impl Sysfs {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn device_dir(&self, bdf: &Bdf) -> PathBuf {
        self.root.join("bus/pci/devices").join(bdf.to_string())
    }

    pub fn exists(&self, bdf: &Bdf) -> bool {
        self.device_dir(bdf).exists()
    }

    fn link_name(&self, path: PathBuf) -> Option<String> {
        let target = fs::read_link(path).ok()?;
        Some(target.file_name()?.to_string_lossy().into_owned())
    }

    /// The driver bound to the device, if any.
    pub fn driver(&self, bdf: &Bdf) -> Option<String> {
        self.link_name(self.device_dir(bdf).join("driver"))
    }

    /// The device's IOMMU group; None when the host has no IOMMU enabled.
    pub fn iommu_group(&self, bdf: &Bdf) -> Option<u32> {
        self.link_name(self.device_dir(bdf).join("iommu_group"))?
            .parse()
            .ok()
    }

    /// Every device in IOMMU group `group`, sorted.
    pub fn group_members(&self, group: u32) -> Vec<Bdf> {
        let dir = self
            .root
            .join("kernel/iommu_groups")
            .join(group.to_string())
            .join("devices");
        let mut members: Vec<Bdf> = fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .collect();
        members.sort();
        members
    }

    /// Whether the device is an endpoint (header type 0), from the first bytes of its
    /// config space; unknown counts as an endpoint (the stricter answer).
    pub fn is_endpoint(&self, bdf: &Bdf) -> bool {
        fs::read(self.device_dir(bdf).join("config"))
            .ok()
            .and_then(|c| c.get(0x0e).copied())
            .is_none_or(|h| h & 0x7f == HEADER_TYPE_ENDPOINT)
    }
}

#[cfg(test)]
pub mod fake {
    //! A fake sysfs tree for tests.
    use super::*;
    use std::os::unix::fs::symlink;

    pub struct FakeSysfs {
        pub dir: PathBuf,
    }

    impl FakeSysfs {
        pub fn new(name: &str) -> Self {
            let dir =
                std::env::temp_dir().join(format!("zhitong-sysfs-{name}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(dir.join("bus/pci/devices")).unwrap();
            Self { dir }
        }

        pub fn sysfs(&self) -> Sysfs {
            Sysfs::new(&self.dir)
        }

        /// Add a device with an optional driver, in `group`, with the given header type.
        pub fn device(&self, bdf: &str, driver: Option<&str>, group: Option<u32>, header: u8) {
            let dev = self.dir.join("bus/pci/devices").join(bdf);
            fs::create_dir_all(&dev).unwrap();
            let mut config = vec![0u8; 64];
            config[0x0e] = header;
            fs::write(dev.join("config"), config).unwrap();
            if let Some(driver) = driver {
                let drv = self.dir.join("bus/pci/drivers").join(driver);
                fs::create_dir_all(&drv).unwrap();
                symlink(&drv, dev.join("driver")).unwrap();
            }
            if let Some(group) = group {
                let g = self.dir.join("kernel/iommu_groups").join(group.to_string());
                fs::create_dir_all(g.join("devices")).unwrap();
                symlink(&g, dev.join("iommu_group")).unwrap();
                symlink(&dev, g.join("devices").join(bdf)).unwrap();
            }
        }
    }

    impl Drop for FakeSysfs {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

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
    }
}
