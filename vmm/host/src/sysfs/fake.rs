//! A fake host for tests: sysfs, /dev, /proc and /run under a temporary directory, and a
//! [`FakeKernel`] that does what the kernel does when `zhitong bind` writes sysfs files.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use super::super::bind::HostWriter;
use super::super::Host;
use super::{resource_flags, Sysfs};

pub struct FakeSysfs {
    /// The fake root: sys/, dev/, proc/, run/ below it.
    pub dir: PathBuf,
    /// Each device's own driver, where drivers_probe sends it without an override.
    native: RefCell<BTreeMap<String, String>>,
}

/// One BAR of a fake device: (index, size, io, 64-bit, prefetchable).
pub type FakeBar = (u8, u64, bool, bool, bool);

impl FakeSysfs {
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("zhitong-fake-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        for sub in [
            "sys/bus/pci/devices",
            "sys/bus/pci/drivers",
            "dev",
            "proc/self",
            "run",
        ] {
            fs::create_dir_all(dir.join(sub)).unwrap();
        }
        Self {
            dir,
            native: RefCell::new(BTreeMap::new()),
        }
    }

    pub fn sysfs(&self) -> Sysfs {
        Sysfs::new(self.dir.join("sys"))
    }

    /// The fake host, with 46 physical address bits.
    pub fn host(&self) -> Host {
        Host {
            phys_bits: 46,
            ..Host::under(&self.dir)
        }
    }

    /// Write `content` at `rel` under the fake root, creating directories.
    pub fn file(&self, rel: &str, content: &str) {
        let path = self.dir.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, content).unwrap();
    }

    pub fn read(&self, rel: &str) -> Option<String> {
        fs::read_to_string(self.dir.join(rel)).ok()
    }

    /// A PCI driver registered with the bus (its directory with bind/unbind).
    pub fn driver(&self, name: &str) -> PathBuf {
        let drv = self.dir.join("sys/bus/pci/drivers").join(name);
        if !drv.exists() {
            fs::create_dir_all(&drv).unwrap();
            fs::write(drv.join("bind"), "").unwrap();
            fs::write(drv.join("unbind"), "").unwrap();
        }
        drv
    }

    pub fn module(&self, name: &str) {
        fs::create_dir_all(self.dir.join("sys/module").join(name).join("parameters")).unwrap();
    }

    /// Move the device's directory below `bridge`'s, as sysfs nests devices on a bridge's
    /// secondary bus (sys/devices/pci0000:00/BRIDGE/BDF, linked from bus/pci/devices).
    pub fn below_bridge(&self, bdf: &str, bridge: &str) {
        let link = self.dir.join("sys/bus/pci/devices").join(bdf);
        let nested = self
            .dir
            .join("sys/devices/pci0000:00")
            .join(bridge)
            .join(bdf);
        fs::create_dir_all(nested.parent().unwrap()).unwrap();
        fs::rename(&link, &nested).unwrap();
        symlink(&nested, &link).unwrap();
    }

    /// Add a device with an optional driver, in `group`, with the given header type. A
    /// device on vfio-pci gets its /dev/vfio node; another driver becomes its native one.
    pub fn device(&self, bdf: &str, driver: Option<&str>, group: Option<u32>, header: u8) {
        let dev = self.dir.join("sys/bus/pci/devices").join(bdf);
        fs::create_dir_all(&dev).unwrap();
        let mut config = vec![0u8; 64];
        config[0x0e] = header;
        fs::write(dev.join("config"), config).unwrap();
        if let Some(group) = group {
            let g = self
                .dir
                .join("sys/kernel/iommu_groups")
                .join(group.to_string());
            fs::create_dir_all(g.join("devices")).unwrap();
            symlink(&g, dev.join("iommu_group")).unwrap();
            symlink(&dev, g.join("devices").join(bdf)).unwrap();
        }
        if let Some(driver) = driver {
            if driver != "vfio-pci" {
                self.native.borrow_mut().insert(bdf.into(), driver.into());
            }
            self.attach(bdf, driver);
        }
    }

    /// Vendor, device and class ids.
    pub fn ids(&self, bdf: &str, vendor: u16, device: u16, class: u32) {
        let dev = format!("sys/bus/pci/devices/{bdf}");
        self.file(&format!("{dev}/vendor"), &format!("0x{vendor:04x}\n"));
        self.file(&format!("{dev}/device"), &format!("0x{device:04x}\n"));
        self.file(&format!("{dev}/class"), &format!("0x{class:06x}\n"));
    }

    /// The `resource` file: BARs at made-up addresses, like the kernel prints them.
    pub fn bars(&self, bdf: &str, bars: &[FakeBar]) {
        let mut lines =
            vec!["0x0000000000000000 0x0000000000000000 0x0000000000000000".to_owned(); 13];
        let mut next = 0x10_0000_0000u64;
        for &(index, size, io, mem64, pf) in bars {
            let start = next.next_multiple_of(size);
            next = start + size;
            lines[usize::from(index)] = format!(
                "0x{start:016x} 0x{:016x} 0x{:016x}",
                start + size - 1,
                resource_flags(io, mem64, pf)
            );
        }
        self.file(
            &format!("sys/bus/pci/devices/{bdf}/resource"),
            &(lines.join("\n") + "\n"),
        );
    }

    /// A block device `name` below the PCI device (like an NVMe namespace).
    pub fn block(&self, bdf: &str, name: &str) {
        let dir = self
            .dir
            .join("sys/bus/pci/devices")
            .join(bdf)
            .join("nvme/nvme0")
            .join(name);
        fs::create_dir_all(&dir).unwrap();
        let class = self.dir.join("sys/class/block");
        fs::create_dir_all(&class).unwrap();
        symlink(&dir, class.join(name)).unwrap();
    }

    /// A host where everything but the devices is in order: KVM-less (no /dev/kvm), root,
    /// IOMMU with interrupt remapping, vfio modules loaded.
    pub fn ready_host(&self) {
        self.file(
            "proc/cpuinfo",
            "vendor_id\t: GenuineIntel\nflags\t\t: fpu vmx\n",
        );
        self.file(
            "proc/cmdline",
            "BOOT_IMAGE=/vmlinuz intel_iommu=on iommu=pt\n",
        );
        self.file(
            "proc/interrupts",
            "           CPU0\n  0:         45   IR-IO-APIC    2-edge      timer\n",
        );
        self.file(
            "proc/self/status",
            "Name:\tzhitong\nCapEff:\t000001ffffffffff\n",
        );
        self.file(
            "proc/self/limits",
            "Limit                     Soft Limit           Hard Limit           Units\nMax locked memory         8388608              8388608              bytes\n",
        );
        self.file("sys/class/iommu/dmar0/intel-iommu/ecap", "f020df\n");
        self.module("vfio_pci");
        self.module("vfio_iommu_type1");
        self.file(
            "sys/module/vfio_iommu_type1/parameters/allow_unsafe_interrupts",
            "N\n",
        );
        self.driver("vfio-pci");
    }

    fn dev_dir(&self, bdf: &str) -> PathBuf {
        self.dir.join("sys/bus/pci/devices").join(bdf)
    }

    fn attach(&self, bdf: &str, driver: &str) {
        let drv = self.driver(driver);
        let link = self.dev_dir(bdf).join("driver");
        let _ = fs::remove_file(&link);
        symlink(drv, link).unwrap();
        if driver == "vfio-pci" {
            if let Ok(g) = fs::read_link(self.dev_dir(bdf).join("iommu_group")) {
                let group = g.file_name().unwrap().to_string_lossy().into_owned();
                self.file(&format!("dev/vfio/{group}"), "");
            }
        }
    }

    fn detach(&self, bdf: &str) {
        let _ = fs::remove_file(self.dev_dir(bdf).join("driver"));
    }

    fn override_of(&self, bdf: &str) -> Option<String> {
        fs::read_to_string(self.dev_dir(bdf).join("driver_override"))
            .ok()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty() && s != "(null)")
    }
}

impl Drop for FakeSysfs {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Records every write and modprobe, and does to the fake tree what the kernel would.
pub struct FakeKernel<'a> {
    pub fake: &'a FakeSysfs,
    /// (path relative to the sysfs root, value) in order.
    pub writes: Vec<(String, String)>,
    pub modprobes: Vec<String>,
    /// Whether `modprobe vfio-pci` makes the driver appear.
    pub has_vfio_module: bool,
    /// Drivers that refuse to bind (drivers_probe leaves the device unbound).
    pub refuse: Vec<String>,
}

impl<'a> FakeKernel<'a> {
    pub fn new(fake: &'a FakeSysfs) -> Self {
        Self {
            fake,
            writes: Vec::new(),
            modprobes: Vec::new(),
            has_vfio_module: true,
            refuse: Vec::new(),
        }
    }

    /// The writes as "path <- value" lines.
    pub fn log(&self) -> Vec<String> {
        self.writes
            .iter()
            .map(|(p, v)| format!("{p} <- {}", v.trim()))
            .collect()
    }

    fn bind_to(&self, bdf: &str, driver: &str) -> io::Result<()> {
        if self.refuse.iter().any(|d| d == driver) {
            return Err(io::Error::from_raw_os_error(libc::ENODEV));
        }
        self.fake.attach(bdf, driver);
        Ok(())
    }
}

impl HostWriter for FakeKernel<'_> {
    fn write(&mut self, path: &Path, value: &str) -> io::Result<()> {
        let rel = path
            .strip_prefix(self.fake.dir.join("sys"))
            .map_err(|_| {
                io::Error::other(format!("write outside the fake sysfs: {}", path.display()))
            })?
            .to_string_lossy()
            .into_owned();
        self.writes.push((rel.clone(), value.to_owned()));
        let bdf = value.trim();
        let parts: Vec<&str> = rel.split('/').collect();
        match parts.as_slice() {
            ["bus", "pci", "devices", dev, "driver_override"] => {
                let v = value.trim();
                let v = if v.is_empty() { "(null)" } else { v };
                fs::write(
                    self.fake.dev_dir(dev).join("driver_override"),
                    format!("{v}\n"),
                )
            }
            ["bus", "pci", "devices", dev, "driver", "unbind"] => {
                if *dev != bdf || !self.fake.dev_dir(dev).join("driver").exists() {
                    return Err(io::Error::from_raw_os_error(libc::ENODEV));
                }
                self.fake.detach(bdf);
                Ok(())
            }
            ["bus", "pci", "drivers", _, "unbind"] => {
                self.fake.detach(bdf);
                Ok(())
            }
            ["bus", "pci", "drivers", driver, "bind"] => {
                if self.fake.override_of(bdf).is_some_and(|o| o != *driver) {
                    return Err(io::Error::from_raw_os_error(libc::ENODEV));
                }
                self.bind_to(bdf, driver)
            }
            ["bus", "pci", "drivers_probe"] => {
                if self.fake.dev_dir(bdf).join("driver").exists() {
                    return Ok(());
                }
                let target = self
                    .fake
                    .override_of(bdf)
                    .or_else(|| self.fake.native.borrow().get(bdf).cloned());
                if let Some(driver) = target {
                    if self
                        .fake
                        .dir
                        .join("sys/bus/pci/drivers")
                        .join(&driver)
                        .exists()
                    {
                        let _ = self.bind_to(bdf, &driver);
                    }
                }
                Ok(())
            }
            _ => Err(io::Error::other(format!("the fake kernel has no {rel}"))),
        }
    }

    fn modprobe(&mut self, module: &str) -> io::Result<()> {
        self.modprobes.push(module.to_owned());
        match module {
            "vfio-pci" if self.has_vfio_module => {
                self.fake.module("vfio_pci");
                self.fake.driver("vfio-pci");
                Ok(())
            }
            "vfio_iommu_type1" if self.has_vfio_module => {
                self.fake.module("vfio_iommu_type1");
                Ok(())
            }
            _ => Err(io::Error::other(format!(
                "modprobe: FATAL: Module {module} not found"
            ))),
        }
    }
}
