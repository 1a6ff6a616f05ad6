//! What a VM is made of, one struct per concern, and the checks that need no KVM.

/// Serde for a type whose config-file form is its flag form: `Display` out, `FromStr` in
/// (the parse error becomes serde's, message intact).
macro_rules! serde_as_string {
    ($t:ty) => {
        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                <String as serde::Deserialize>::deserialize(d)?
                    .parse()
                    .map_err(serde::de::Error::custom)
            }
        }
    };
}

pub mod device;
pub mod disk;
pub mod file;
pub mod net;
pub mod security;
pub mod vsock;

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use arch::layout::{MAX_MEMORY, MAX_VCPUS, MIN_MEMORY};
use arch::units::{format_size, UnitError};
pub use device::{DeviceConfig, DeviceError};
use devices::pci::address::{MAX_DEVICES, MAX_FUNCTIONS};
use devices::pci::Bdf;
pub use disk::{DiskConfig, DiskError};
pub use host::hugepages::HugePageSize;
pub use host::vfio_backend::VfioBackend;
pub use net::{Mac, NetConfig, NetError};
pub use security::{SecurityConfig, SecurityError};
pub use vsock::{VsockConfig, VsockError};

/// The guest kernel and how it is started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KernelConfig {
    pub path: PathBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initramfs: Option<PathBuf>,
    /// What the user wants on the command line; the platform's own parameters are added.
    #[serde(default)]
    pub cmdline: String,
}

/// vCPUs and RAM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MachineConfig {
    #[serde(deserialize_with = "vcpus_field")]
    pub vcpus: u8,
    #[serde(rename = "memory", with = "file::size")]
    pub memory_bytes: u64,
    /// Back guest RAM with huge pages of this size, all reserved when the VM starts;
    /// `None`: 4K pages (with transparent huge pages where the host gives them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hugepages: Option<HugePageSize>,
    /// When guest RAM is DMA-mapped for passed-through devices (no effect without them).
    #[serde(default, skip_serializing_if = "DmaMapStart::is_default")]
    pub dma_map: DmaMapStart,
}

/// When guest RAM is DMA-mapped for passed-through devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DmaMapStart {
    /// While the vCPUs boot: start time does not grow with RAM; a device's bus-master
    /// enable waits for the mapping to end (that vCPU stops meanwhile).
    #[default]
    BesideBoot,
    /// Before the first vCPU runs, as other VMMs do: start time grows with RAM, no vCPU
    /// ever waits for the mapping.
    BeforeBoot,
}

impl DmaMapStart {
    fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

impl std::str::FromStr for DmaMapStart {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "beside-boot" => Ok(Self::BesideBoot),
            "before-boot" => Ok(Self::BeforeBoot),
            other => Err(format!("'{other}' (beside-boot or before-boot)")),
        }
    }
}

fn vcpus_field<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u8, D::Error> {
    let n = u32::deserialize(d)?;
    parse_vcpus(&n.to_string()).map_err(serde::de::Error::custom)
}

impl Default for MachineConfig {
    fn default() -> Self {
        Self {
            vcpus: 1,
            memory_bytes: 512 << 20,
            hugepages: None,
            dma_map: DmaMapStart::BesideBoot,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmConfig {
    pub kernel: KernelConfig,
    #[serde(default)]
    pub machine: MachineConfig,
    /// Host PCI devices to pass through with VFIO, each with its options.
    #[serde(default)]
    pub devices: Vec<DeviceConfig>,
    /// virtio block devices (raw images or block devices), /dev/vda first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disks: Vec<DiskConfig>,
    /// virtio network interfaces, each on a tap (eth0 first).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nets: Vec<NetConfig>,
    /// The guest's vsock device, its host side a Unix socket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vsock: Option<VsockConfig>,
    /// Fail the run when the guest has not touched the serial port or the marker port within
    /// this time: a kernel that never boots. `None` waits forever.
    #[serde(default = "default_boot_timeout", with = "file::duration")]
    pub boot_timeout: Option<Duration>,
    /// Stop the VM when it is still running this long after `Vm::start` (`VmExit::Timeout`;
    /// `zhitong run --timeout` exits 124, like timeout(1)). `None` (the default) lets it run.
    #[serde(
        default,
        with = "file::duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<Duration>,
    /// The kernel interface the devices are opened through; `None` (the default) takes
    /// iommufd when the host and every device have it, else the legacy VFIO container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vfio_backend: Option<VfioBackend>,
    /// seccomp and the user to run the guest as (`zhitong run --seccomp`, `--user`).
    #[serde(default, skip_serializing_if = "SecurityConfig::is_default")]
    pub security: SecurityConfig,
}

/// How long a guest may stay silent at boot before the run fails.
pub const DEFAULT_BOOT_TIMEOUT: Duration = Duration::from_secs(60);

fn default_boot_timeout() -> Option<Duration> {
    Some(DEFAULT_BOOT_TIMEOUT)
}

impl VmConfig {
    /// A configuration with defaults for everything but the kernel.
    pub fn new(kernel: impl Into<PathBuf>) -> Self {
        Self {
            kernel: KernelConfig {
                path: kernel.into(),
                initramfs: None,
                cmdline: String::new(),
            },
            machine: MachineConfig::default(),
            devices: Vec::new(),
            disks: Vec::new(),
            nets: Vec::new(),
            vsock: None,
            boot_timeout: default_boot_timeout(),
            timeout: None,
            vfio_backend: None,
            security: SecurityConfig::default(),
        }
    }

    /// Builder: the initramfs.
    pub fn initramfs(mut self, path: impl Into<PathBuf>) -> Self {
        self.kernel.initramfs = Some(path.into());
        self
    }

    /// Builder: what the user wants on the kernel command line.
    pub fn cmdline(mut self, cmdline: impl Into<String>) -> Self {
        self.kernel.cmdline = cmdline.into();
        self
    }

    /// Builder: the number of vCPUs (checked by `Vm::new`).
    pub fn vcpus(mut self, vcpus: u8) -> Self {
        self.machine.vcpus = vcpus;
        self
    }

    /// Builder: guest RAM in bytes (checked by `Vm::new`).
    pub fn memory(mut self, bytes: u64) -> Self {
        self.machine.memory_bytes = bytes;
        self
    }

    /// Builder: the VFIO backend (`None`: chosen per host).
    pub fn vfio_backend(mut self, backend: Option<VfioBackend>) -> Self {
        self.vfio_backend = backend;
        self
    }

    /// Builder: one more host PCI device to pass through (a [`Bdf`] for no options).
    pub fn device(mut self, device: impl Into<DeviceConfig>) -> Self {
        self.devices.push(device.into());
        self
    }

    /// Builder: one more virtio disk.
    pub fn disk(mut self, disk: DiskConfig) -> Self {
        self.disks.push(disk);
        self
    }

    /// Builder: one more virtio network interface.
    pub fn net(mut self, net: NetConfig) -> Self {
        self.nets.push(net);
        self
    }

    /// The host addresses of the devices, in order.
    pub fn device_bdfs(&self) -> Vec<Bdf> {
        self.devices.iter().map(|d| d.bdf).collect()
    }

    /// Builder: the run time limit (`None` lets the guest run until it ends).
    pub fn timeout(mut self, limit: Option<Duration>) -> Self {
        self.timeout = limit;
        self
    }

    /// Builder: the boot timeout (`None` waits forever).
    pub fn boot_timeout(mut self, limit: Option<Duration>) -> Self {
        self.boot_timeout = limit;
        self
    }
}

/// A configuration error: bad usage, reported with exit status 2. The messages name the
/// setting as the config file spells it (`machine.vcpus`); the CLI words them in its flags.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    Unit(#[from] UnitError),
    #[error("machine.vcpus must be between 1 and {max}, got {got}")]
    BadVcpus { got: String, max: u8 },
    #[error("machine.memory {got} is below the minimum of {min}; ask for at least {min}")]
    MemoryTooSmall { got: String, min: String },
    #[error("machine.memory {got} is not a multiple of 4K; round it, e.g. to {suggest}")]
    MemoryUnaligned { got: String, suggest: String },
    #[error("machine.memory {got} is more than this host's {host} of RAM; ask for less")]
    MemoryTooLarge { got: String, host: String },
    #[error("machine.memory {got} is not a multiple of its {page} huge pages; round it, e.g. to {suggest}")]
    MemoryNotHugePages {
        got: String,
        page: HugePageSize,
        suggest: String,
    },
    #[error("machine.memory {got} is more than the platform's maximum of {max} (what 48-bit guest physical addresses hold, less the 1G MMIO hole); ask for at most {max}")]
    MemoryAboveMax { got: String, max: String },
    #[error("devices lists {functions} functions in {slots} host slots, more than the guest's PCI bus 0 holds ({GUEST_PCI_SLOTS} slots, one per host slot, of {MAX_FUNCTIONS} functions); pass fewer devices")]
    TooManyDevices { functions: usize, slots: usize },
    #[error("{slots} host slots of devices and {virtio} virtio devices (disks, nets, vsock) are more than the guest's PCI bus 0 holds ({GUEST_PCI_SLOTS} slots, one per virtio device); pass fewer")]
    TooManyVirtio { slots: usize, virtio: usize },
    /// The file could not be read (`reason`: the I/O error, or why it is not read at all).
    #[error("config file {path}: {reason}; check its path")]
    FileUnreadable { path: String, reason: String },
    /// The file was read but is not a valid configuration.
    #[error("config file {path}: {reason}")]
    File { path: String, reason: String },
    #[error("no kernel given; set kernel.path")]
    NoKernel,
    #[error(transparent)]
    Security(#[from] SecurityError),
    #[error(transparent)]
    Device(#[from] DeviceError),
    #[error(transparent)]
    Disk(#[from] DiskError),
    #[error(transparent)]
    Net(#[from] NetError),
    #[error(transparent)]
    Vsock(#[from] VsockError),
}

/// Guest PCI slots for passed-through devices: bus 0 only (no bridges), slot 0 is the host
/// bridge. Each host slot takes one (`device_manager::pci::place`).
pub const GUEST_PCI_SLOTS: usize = MAX_DEVICES as usize - 1;

/// Parse a vCPU count within the platform's limits.
pub fn parse_vcpus(text: &str) -> Result<u8, ConfigError> {
    let bad = || ConfigError::BadVcpus {
        got: text.to_owned(),
        max: MAX_VCPUS,
    };
    let n: u32 = text.trim().parse().map_err(|_| bad())?;
    match u8::try_from(n) {
        Ok(n) if (1..=MAX_VCPUS).contains(&n) => Ok(n),
        _ => Err(bad()),
    }
}

impl VmConfig {
    /// The checks that need neither KVM nor the host's devices: the machine (with the host's
    /// RAM, `host_ram` bytes, None when unknown) and the number of devices.
    pub fn validate(&self, host_ram: Option<u64>) -> Result<(), ConfigError> {
        self.machine.validate(host_ram)?;
        for d in &self.devices {
            d.validate()?;
        }
        for d in &self.disks {
            d.validate()?;
        }
        for n in &self.nets {
            n.validate()?;
        }
        if let Some(v) = &self.vsock {
            v.validate()?;
        }
        let slots = validate_devices(&self.device_bdfs())?;
        let virtio = self.disks.len() + self.nets.len() + usize::from(self.vsock.is_some());
        if slots + virtio > GUEST_PCI_SLOTS {
            return Err(ConfigError::TooManyVirtio { slots, virtio });
        }
        Ok(())
    }
}

/// Check that `devices` fit the guest's PCI bus: at most [`GUEST_PCI_SLOTS`] host slots and
/// as many functions as those slots hold (a longer list repeats a device, which the
/// preflight refuses, but the placement arithmetic must not see it first). Returns the
/// number of guest slots they take.
pub fn validate_devices(devices: &[Bdf]) -> Result<usize, ConfigError> {
    let mut slots: Vec<Bdf> = devices.iter().map(|d| d.with_function(0)).collect();
    slots.sort_unstable();
    slots.dedup();
    if slots.len() > GUEST_PCI_SLOTS || devices.len() > GUEST_PCI_SLOTS * MAX_FUNCTIONS as usize {
        return Err(ConfigError::TooManyDevices {
            functions: devices.len(),
            slots: slots.len(),
        });
    }
    Ok(slots.len())
}

impl MachineConfig {
    /// Check RAM against the platform minimum and maximum, page alignment and the host's RAM
    /// (`host_ram` bytes; None when unknown).
    pub fn validate(&self, host_ram: Option<u64>) -> Result<(), ConfigError> {
        let got = format_size(self.memory_bytes);
        if self.memory_bytes < MIN_MEMORY {
            return Err(ConfigError::MemoryTooSmall {
                got,
                min: format_size(MIN_MEMORY),
            });
        }
        // Before the alignment check, whose suggestion would overflow near u64::MAX.
        if self.memory_bytes > MAX_MEMORY {
            return Err(ConfigError::MemoryAboveMax {
                got,
                max: format_size(MAX_MEMORY),
            });
        }
        if !self.memory_bytes.is_multiple_of(4096) {
            return Err(ConfigError::MemoryUnaligned {
                got,
                suggest: format_size(self.memory_bytes.next_multiple_of(1 << 20)),
            });
        }
        if let Some(page) = self.hugepages {
            if !self.memory_bytes.is_multiple_of(page.bytes()) {
                return Err(ConfigError::MemoryNotHugePages {
                    got,
                    page,
                    suggest: format_size(self.memory_bytes.next_multiple_of(page.bytes())),
                });
            }
        }
        if let Some(host) = host_ram {
            if self.memory_bytes > host {
                return Err(ConfigError::MemoryTooLarge {
                    got,
                    host: format_size(host & !((1 << 20) - 1)),
                });
            }
        }
        if self.vcpus == 0 || self.vcpus > MAX_VCPUS {
            return Err(ConfigError::BadVcpus {
                got: self.vcpus.to_string(),
                max: MAX_VCPUS,
            });
        }
        Ok(())
    }
}

/// The host's RAM from /proc/meminfo (MemTotal), if it can be read.
pub fn host_ram_bytes() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    meminfo_total(&meminfo)
}

fn meminfo_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vcpu_limits() {
        assert_eq!(parse_vcpus("1").unwrap(), 1);
        assert_eq!(parse_vcpus("254").unwrap(), 254);
        for bad in ["0", "255", "1000", "-1", "two", ""] {
            assert!(parse_vcpus(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            parse_vcpus("0").unwrap_err().to_string(),
            "machine.vcpus must be between 1 and 254, got 0"
        );
    }

    #[test]
    fn builder_sets_every_field() {
        let cfg = VmConfig::new("/k")
            .initramfs("/i")
            .cmdline("quiet")
            .vcpus(4)
            .memory(2 << 30)
            .device("01:00.0".parse::<Bdf>().unwrap())
            .device("02:00.0,p2p=on".parse::<DeviceConfig>().unwrap())
            .boot_timeout(None)
            .timeout(Some(Duration::from_secs(5)));
        assert_eq!(
            cfg.kernel.initramfs.as_deref(),
            Some(std::path::Path::new("/i"))
        );
        assert_eq!(cfg.kernel.cmdline, "quiet");
        assert_eq!((cfg.machine.vcpus, cfg.machine.memory_bytes), (4, 2 << 30));
        let devices: Vec<String> = cfg.devices.iter().map(|d| d.to_string()).collect();
        assert_eq!(devices, ["0000:01:00.0", "0000:02:00.0,p2p=on"]);
        assert_eq!(cfg.boot_timeout, None);
        assert_eq!(cfg.timeout, Some(Duration::from_secs(5)));
    }

    #[test]
    fn dma_map_start_is_beside_the_boot_unless_asked() {
        let cfg = file::parse("[kernel]\npath = \"/k\"\n", true).unwrap();
        assert_eq!(cfg.machine.dma_map, DmaMapStart::BesideBoot);
        let json = serde_json::to_string(&cfg).unwrap();
        assert!(
            !json.contains("dma_map"),
            "the default is not written: {json}"
        );
        let cfg = file::parse(
            "[kernel]\npath = \"/k\"\n[machine]\ndma_map = \"before-boot\"\n",
            true,
        )
        .unwrap();
        assert_eq!(cfg.machine.dma_map, DmaMapStart::BeforeBoot);
        let json = serde_json::to_string(&cfg).unwrap();
        assert!(json.contains(r#""dma_map":"before-boot""#), "{json}");
        let err = file::parse(
            "[kernel]\npath = \"/k\"\n[machine]\ndma_map = \"soon\"\n",
            true,
        )
        .unwrap_err();
        assert!(err.to_string().contains("soon"), "{err}");
        assert_eq!("before-boot".parse(), Ok(DmaMapStart::BeforeBoot));
        assert_eq!("beside-boot".parse(), Ok(DmaMapStart::BesideBoot));
        assert!("early"
            .parse::<DmaMapStart>()
            .unwrap_err()
            .contains("before-boot"));
    }

    #[test]
    fn huge_pages_need_a_multiple_of_their_size() {
        let m = |bytes, page| MachineConfig {
            vcpus: 1,
            memory_bytes: bytes,
            hugepages: Some(page),
            ..Default::default()
        };
        assert!(m(2 << 30, HugePageSize::Size1G).validate(None).is_ok());
        assert!(m(514 << 20, HugePageSize::Size2M).validate(None).is_ok());
        let err = m(1536 << 20, HugePageSize::Size1G)
            .validate(None)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "machine.memory 1536M is not a multiple of its 1G huge pages; round it, e.g. to 2G"
        );
        let cfg = file::parse(
            "[kernel]\npath = \"/k\"\n[machine]\nmemory = \"4G\"\nhugepages = \"1G\"\n",
            true,
        )
        .unwrap();
        assert_eq!(cfg.machine.hugepages, Some(HugePageSize::Size1G));
        let json = serde_json::to_string(&cfg).unwrap();
        assert!(json.contains(r#""hugepages":"1G""#), "{json}");
        assert_eq!(file::parse(&json, false).unwrap(), cfg);
        let err = file::parse(
            "[kernel]\npath = \"/k\"\n[machine]\nhugepages = \"4M\"\n",
            true,
        )
        .unwrap_err();
        assert!(err.contains("4M") && !err.contains('\n'), "{err}");
    }

    #[test]
    fn memory_limits() {
        let m = |bytes| MachineConfig {
            vcpus: 1,
            memory_bytes: bytes,
            hugepages: None,
            ..Default::default()
        };
        assert!(m(512 << 20).validate(Some(1 << 30)).is_ok());
        assert!(matches!(
            m(32 << 20).validate(None),
            Err(ConfigError::MemoryTooSmall { .. })
        ));
        assert!(matches!(
            m((64 << 20) + 1).validate(None),
            Err(ConfigError::MemoryUnaligned { .. })
        ));
        let err = m(8 << 30).validate(Some(4 << 30)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "machine.memory 8G is more than this host's 4G of RAM; ask for less"
        );
    }

    #[test]
    fn memory_above_the_platform_maximum_is_refused_without_overflow() {
        let m = |bytes| MachineConfig {
            vcpus: 1,
            memory_bytes: bytes,
            hugepages: None,
            ..Default::default()
        };
        assert!(m(MAX_MEMORY).validate(None).is_ok());
        for bytes in [MAX_MEMORY + 4096, u64::MAX, 16_777_215 << 40] {
            let err = m(bytes).validate(None).unwrap_err();
            assert!(matches!(err, ConfigError::MemoryAboveMax { .. }), "{err}");
        }
        // A config file's plain byte count, as the issue reported it.
        let cfg = file::parse(
            "[kernel]\npath = \"/k\"\n[machine]\nmemory = 18446744073709551615\n",
            true,
        )
        .unwrap();
        assert_eq!(
            cfg.validate(None).unwrap_err().to_string(),
            "machine.memory 18446744073709551615B is more than the platform's maximum of 262143G \
             (what 48-bit guest physical addresses hold, less the 1G MMIO hole); ask for at most 262143G"
        );
    }

    #[test]
    fn devices_must_fit_the_guest_bus() {
        let bdf = |bus: u8, device: u8, function: u8| Bdf {
            domain: 0,
            bus,
            device,
            function,
        };
        // 31 host slots of 8 functions: the most that fits.
        let full: Vec<Bdf> = (0..31)
            .flat_map(|slot| (0..8).map(move |f| bdf(1, slot, f)))
            .collect();
        assert_eq!(full.len(), 248);
        assert!(validate_devices(&full).is_ok());
        // One slot more.
        let mut over = full.clone();
        over.push(bdf(9, 0, 0));
        let err = validate_devices(&over).unwrap_err();
        assert_eq!(
            err,
            ConfigError::TooManyDevices {
                functions: 249,
                slots: 32
            }
        );
        assert_eq!(
            err.to_string(),
            "devices lists 249 functions in 32 host slots, more than the guest's PCI bus 0 holds \
             (31 slots, one per host slot, of 8 functions); pass fewer devices"
        );
        // 255 entries, as a config file's list or 255 --device flags give them, even of few slots.
        let repeated = vec![bdf(1, 0, 0); 255];
        assert!(validate_devices(&repeated).is_err());
        let many: Vec<Bdf> = (0..=254).map(|i| bdf(i, 0, 0)).collect();
        let mut cfg = VmConfig::new("/k");
        cfg.devices = many.into_iter().map(DeviceConfig::from).collect();
        assert!(matches!(
            cfg.validate(None),
            Err(ConfigError::TooManyDevices {
                functions: 255,
                slots: 255
            })
        ));
    }

    #[test]
    fn disks_take_guest_slots_beside_the_devices() {
        let mut cfg = VmConfig::new("/k");
        cfg.devices = (0..30u8)
            .map(|bus| {
                DeviceConfig::from(Bdf {
                    domain: 0,
                    bus,
                    device: 0,
                    function: 0,
                })
            })
            .collect();
        cfg = cfg.disk(DiskConfig::new("/a"));
        assert!(cfg.validate(None).is_ok());
        cfg = cfg.disk(DiskConfig::new("/b"));
        let err = cfg.validate(None).unwrap_err();
        assert_eq!(
            err,
            ConfigError::TooManyVirtio {
                slots: 30,
                virtio: 2
            }
        );
        assert_eq!(
            err.to_string(),
            "30 host slots of devices and 2 virtio devices (disks, nets, vsock) are more than the guest's PCI bus 0 holds (31 slots, one per virtio device); pass fewer"
        );
        cfg.disks.pop();
        assert!(cfg
            .clone()
            .net(NetConfig::new("zt0"))
            .validate(None)
            .is_err());
        let bad_net = VmConfig::new("/k").net(NetConfig::new("a/b"));
        assert!(matches!(
            bad_net.validate(None),
            Err(ConfigError::Net(NetError::BadTapName(_)))
        ));
        // A disk built in code is checked too.
        let mut cfg = VmConfig::new("/k").disk(DiskConfig::new(""));
        assert_eq!(
            cfg.validate(None).unwrap_err(),
            ConfigError::Disk(DiskError::NoPath)
        );
        cfg.disks[0] = DiskConfig {
            serial: Some("x".repeat(21)),
            ..DiskConfig::new("/a")
        };
        assert!(matches!(
            cfg.validate(None),
            Err(ConfigError::Disk(DiskError::SerialTooLong(_)))
        ));
        // In a config file: a list of the string form.
        let cfg = file::parse(
            "disks = [\"path=/img/root.ext4\", \"path=/img/b,readonly=on\"]\n[kernel]\npath = \"/k\"\n",
            true,
        )
        .unwrap();
        assert_eq!(cfg.disks.len(), 2);
        assert!(cfg.disks[1].readonly);
        let json = serde_json::to_string(&cfg).unwrap();
        assert!(
            json.contains(r#""disks":["path=/img/root.ext4","path=/img/b,readonly=on"]"#),
            "{json}"
        );
        assert!(!serde_json::to_string(&VmConfig::new("/k"))
            .unwrap()
            .contains("disks"));
        let cfg = file::parse(
            "nets = [\"tap=zt0\", \"tap=zt1,mac=52:54:00:00:00:01\"]\n[kernel]\npath = \"/k\"\n",
            true,
        )
        .unwrap();
        assert_eq!(
            cfg.nets[1].mac.map(|m| m.to_string()).as_deref(),
            Some("52:54:00:00:00:01")
        );
        assert_eq!(
            file::parse(&serde_json::to_string(&cfg).unwrap(), false).unwrap(),
            cfg
        );
    }

    #[test]
    fn meminfo_parsing() {
        let text = "MemTotal:        3996412 kB\nMemFree:  1 kB\n";
        assert_eq!(meminfo_total(text), Some(3996412 * 1024));
        assert_eq!(meminfo_total("nothing"), None);
    }
}
