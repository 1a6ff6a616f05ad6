//! What the host offers: PCI devices and IOMMU groups read from sysfs (under a root that tests
//! can point at a temporary tree), the checks a passthrough needs (`zhitong check`, and the
//! preflight of `zhitong run`), and handing devices to vfio-pci and back (`zhitong bind`).

pub mod bind;
pub mod checks;
pub mod cpu;
pub mod finding;
pub mod hugepages;
pub mod inventory;
pub mod pci_class;
pub mod preflight;
pub mod remapping;
pub mod state;
pub mod sysfs;
pub mod vfio_backend;

mod serde_bdf;

use std::path::{Path, PathBuf};

pub use finding::{Finding, Status};
pub use sysfs::Sysfs;

/// Where the host's kernel interfaces are: sysfs, /dev, /proc, and /run (where `zhitong bind`
/// records what it changed). Tests point all of them into a temporary tree.
#[derive(Debug, Clone)]
pub struct Host {
    pub sysfs: Sysfs,
    pub dev: PathBuf,
    pub proc: PathBuf,
    pub run: PathBuf,
    /// The CPU's physical address bits as the guest will get them (see `cpu::host_phys_bits`).
    pub phys_bits: u8,
}

/// Environment variable that moves every root under one directory (DIR/sys, DIR/dev,
/// DIR/proc, DIR/run): for trying `devices`, `check` and `bind` on a fake tree.
pub const HOST_ROOT_ENV: &str = "ZHITONG_HOST_ROOT";

impl Default for Host {
    fn default() -> Self {
        Self::under("/")
    }
}

impl Host {
    /// The host with `root/sys`, `root/dev`, `root/proc` and `root/run`.
    pub fn under(root: impl AsRef<Path>) -> Self {
        let root = root.as_ref();
        Self {
            sysfs: Sysfs::new(root.join("sys")),
            dev: root.join("dev"),
            proc: root.join("proc"),
            run: root.join("run"),
            phys_bits: cpu::host_phys_bits(),
        }
    }

    /// The real host, or the tree named by `ZHITONG_HOST_ROOT`.
    pub fn from_env() -> Self {
        match std::env::var_os(HOST_ROOT_ENV) {
            Some(root) if !root.is_empty() => Self::under(root),
            _ => Self::default(),
        }
    }

    pub fn dev_path(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.dev.join(rel)
    }

    pub fn proc_path(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.proc.join(rel)
    }

    /// Where `zhitong bind` records the drivers it replaced (tmpfs: a reboot forgets both
    /// the bindings and the record).
    pub fn bind_state_dir(&self) -> PathBuf {
        self.run.join("zhitong/bind")
    }
}
