//! What a VM is made of, one struct per concern, and the checks that need no KVM.

pub mod file;

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use arch::layout::{MAX_VCPUS, MIN_MEMORY};

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
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmConfig {
    pub kernel: KernelConfig,
    #[serde(default)]
    pub machine: MachineConfig,
    /// Host PCI devices to pass through with VFIO.
    #[serde(default, with = "file::bdfs")]
    pub devices: Vec<crate::host::Bdf>,
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
            boot_timeout: default_boot_timeout(),
            timeout: None,
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

    /// Builder: one more host PCI device to pass through.
    pub fn device(mut self, bdf: crate::host::Bdf) -> Self {
        self.devices.push(bdf);
        self
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

/// A configuration error: bad usage, reported with exit status 2.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid size '{0}': use a number with a K, M, G or T suffix, e.g. 512M or 4G")]
    BadSize(String),
    #[error("invalid duration '{0}': use seconds or a unit, e.g. 90, 90s, 5m, 500ms")]
    BadDuration(String),
    #[error("--cpus must be between 1 and {max}, got {got}")]
    BadVcpus { got: String, max: u8 },
    #[error("--memory {got} is below the minimum of {min}; ask for at least {min}")]
    MemoryTooSmall { got: String, min: String },
    #[error("--memory {got} is not a multiple of 4K; round it, e.g. to {suggest}")]
    MemoryUnaligned { got: String, suggest: String },
    #[error("--memory {got} is more than this host's {host} of RAM; ask for less")]
    MemoryTooLarge { got: String, host: String },
    #[error("config file {path}: {reason}")]
    File { path: String, reason: String },
    #[error("no kernel given; pass --kernel PATH or set kernel.path in the --config file")]
    NoKernel,
}

/// Parse a size like `512M`, `4G`, `1024K`, `2T` or a plain number of MiB (as QEMU's -m).
pub fn parse_size(text: &str) -> Result<u64, ConfigError> {
    let bad = || ConfigError::BadSize(text.to_owned());
    let t = text.trim();
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix('B'))
        .unwrap_or(t);
    let (digits, shift) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let shift = match c.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                'T' => 40,
                _ => return Err(bad()),
            };
            (&t[..i], shift)
        }
        _ => (t, 20),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let n: u64 = digits.parse().map_err(|_| bad())?;
    if n == 0 {
        return Err(bad());
    }
    n.checked_mul(1 << shift).ok_or_else(bad)
}

/// Parse a duration: seconds (`90`, `90s`), minutes (`5m`), hours (`1h`) or `500ms`.
pub fn parse_duration(text: &str) -> Result<Duration, ConfigError> {
    let bad = || ConfigError::BadDuration(text.to_owned());
    let t = text.trim();
    let (digits, unit_ms) = if let Some(d) = t.strip_suffix("ms") {
        (d, 1)
    } else if let Some(d) = t.strip_suffix('s') {
        (d, 1000)
    } else if let Some(d) = t.strip_suffix('m') {
        (d, 60_000)
    } else if let Some(d) = t.strip_suffix('h') {
        (d, 3_600_000)
    } else {
        (t, 1000)
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let n: u64 = digits.parse().map_err(|_| bad())?;
    Ok(Duration::from_millis(
        n.checked_mul(unit_ms).ok_or_else(bad)?,
    ))
}

/// A duration as the CLI writes it: `90s`, `5m`, `1h`, `500ms`.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if !ms.is_multiple_of(1000) {
        format!("{ms}ms")
    } else if ms.is_multiple_of(3_600_000) && ms > 0 {
        format!("{}h", ms / 3_600_000)
    } else if ms.is_multiple_of(60_000) && ms > 0 {
        format!("{}m", ms / 60_000)
    } else {
        format!("{}s", ms / 1000)
    }
}

/// A byte count as the largest unit that divides it, e.g. 512M, 4G, 12345K.
pub fn format_size(bytes: u64) -> String {
    for (shift, unit) in [(40, "T"), (30, "G"), (20, "M"), (10, "K")] {
        if bytes >= 1 << shift && bytes.is_multiple_of(1 << shift) {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    format!("{bytes}B")
}

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

impl MachineConfig {
    /// Check RAM against the platform minimum, page alignment and the host's RAM
    /// (`host_ram` bytes; None when unknown).
    pub fn validate(&self, host_ram: Option<u64>) -> Result<(), ConfigError> {
        let got = format_size(self.memory_bytes);
        if self.memory_bytes < MIN_MEMORY {
            return Err(ConfigError::MemoryTooSmall {
                got,
                min: format_size(MIN_MEMORY),
            });
        }
        if !self.memory_bytes.is_multiple_of(4096) {
            return Err(ConfigError::MemoryUnaligned {
                got,
                suggest: format_size(self.memory_bytes.next_multiple_of(1 << 20)),
            });
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
    fn sizes_with_suffixes() {
        assert_eq!(parse_size("512M").unwrap(), 512 << 20);
        assert_eq!(parse_size("4G").unwrap(), 4 << 30);
        assert_eq!(parse_size("4g").unwrap(), 4 << 30);
        assert_eq!(parse_size("1024K").unwrap(), 1 << 20);
        assert_eq!(parse_size("2T").unwrap(), 2 << 40);
        assert_eq!(parse_size("4GiB").unwrap(), 4 << 30);
        assert_eq!(parse_size("4GB").unwrap(), 4 << 30);
        assert_eq!(parse_size("256").unwrap(), 256 << 20);
    }

    #[test]
    fn malformed_sizes() {
        for bad in [
            "",
            "M",
            "12X",
            "-1G",
            "1.5G",
            "0",
            "0M",
            "G4",
            "99999999999T",
            " 4 G",
        ] {
            assert!(parse_size(bad).is_err(), "{bad:?} should be rejected");
        }
        let msg = parse_size("lots").unwrap_err().to_string();
        assert!(msg.contains("'lots'") && msg.contains("512M"), "{msg}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        for bad in ["", "s", "1.5s", "-1", "10x", "ms"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn durations_format_back() {
        for text in ["90s", "5m", "1h", "500ms", "0s", "1500ms"] {
            assert_eq!(format_duration(parse_duration(text).unwrap()), text);
        }
    }

    #[test]
    fn sizes_format_back() {
        assert_eq!(format_size(512 << 20), "512M");
        assert_eq!(format_size(4 << 30), "4G");
        assert_eq!(format_size(1536 << 20), "1536M");
        assert_eq!(format_size(4097), "4097B");
    }

    #[test]
    fn vcpu_limits() {
        assert_eq!(parse_vcpus("1").unwrap(), 1);
        assert_eq!(parse_vcpus("254").unwrap(), 254);
        for bad in ["0", "255", "1000", "-1", "two", ""] {
            assert!(parse_vcpus(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn builder_sets_every_field() {
        let cfg = VmConfig::new("/k")
            .initramfs("/i")
            .cmdline("quiet")
            .vcpus(4)
            .memory(2 << 30)
            .device("01:00.0".parse().unwrap())
            .boot_timeout(None)
            .timeout(Some(Duration::from_secs(5)));
        assert_eq!(
            cfg.kernel.initramfs.as_deref(),
            Some(std::path::Path::new("/i"))
        );
        assert_eq!(cfg.kernel.cmdline, "quiet");
        assert_eq!((cfg.machine.vcpus, cfg.machine.memory_bytes), (4, 2 << 30));
        assert_eq!(cfg.devices.len(), 1);
        assert_eq!(cfg.boot_timeout, None);
        assert_eq!(cfg.timeout, Some(Duration::from_secs(5)));
    }

    #[test]
    fn memory_limits() {
        let m = |bytes| MachineConfig {
            vcpus: 1,
            memory_bytes: bytes,
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
            "--memory 8G is more than this host's 4G of RAM; ask for less"
        );
    }

    #[test]
    fn meminfo_parsing() {
        let text = "MemTotal:        3996412 kB\nMemFree:  1 kB\n";
        assert_eq!(meminfo_total(text), Some(3996412 * 1024));
        assert_eq!(meminfo_total("nothing"), None);
    }
}
