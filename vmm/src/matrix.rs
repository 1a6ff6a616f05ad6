//! `zhitong test` matrix files: a list of cases, each a VM configuration (the same fields as
//! a `--config` file) plus a name, the exit status it should end with, and a time limit.
//!
//! ```toml
//! devices = ["0000:01:00.0"]      # every case gets these unless it names its own
//! timeout = "10m"                 # the default time limit of a case (none if absent)
//! vfio_backend = "iommufd"        # every case's unless it names its own (default: chosen)
//!
//! [[case]]
//! name = "boots"
//! expect = 0                      # default 0: a poweroff, or the guest exit port's byte
//! timeout = "60s"
//! boot_timeout = "30s"
//! kernel = { path = "vmlinuz", initramfs = "boots.img", cmdline = "quiet" }
//! machine = { vcpus = 2, memory = "1G" }
//! disks = ["path=root.ext4", "path=data.raw,readonly=on"]
//! nets = ["tap=zt0"]
//! ```
//!
//! Relative kernel, initramfs and disk paths are taken from the matrix file's directory. This is
//! the pure parser (the fuzz targets call it); `zhitong test` reads the file and runs the
//! cases.

use std::path::Path;
use std::time::Duration;

use crate::config::{file, KernelConfig, MachineConfig, VfioBackend, DEFAULT_BOOT_TIMEOUT};
use crate::config::{DeviceConfig, DiskConfig, NetConfig, VsockConfig};
use crate::VmConfig;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MatrixFile {
    #[serde(default)]
    devices: Vec<DeviceConfig>,
    #[serde(default, with = "file::duration")]
    timeout: Option<Duration>,
    #[serde(default)]
    vfio_backend: Option<VfioBackend>,
    #[serde(default)]
    case: Vec<CaseFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseFile {
    name: String,
    #[serde(default)]
    expect: u8,
    #[serde(default, with = "file::duration")]
    timeout: Option<Duration>,
    kernel: KernelConfig,
    #[serde(default)]
    machine: MachineConfig,
    #[serde(default)]
    devices: Vec<DeviceConfig>,
    #[serde(default)]
    disks: Vec<DiskConfig>,
    #[serde(default)]
    nets: Vec<NetConfig>,
    #[serde(default)]
    vsock: Option<VsockConfig>,
    #[serde(default = "default_boot_timeout", with = "file::duration")]
    boot_timeout: Option<Duration>,
    #[serde(default)]
    vfio_backend: Option<VfioBackend>,
}

fn default_boot_timeout() -> Option<Duration> {
    Some(DEFAULT_BOOT_TIMEOUT)
}

/// One case, ready to run.
#[derive(Debug, Clone, PartialEq)]
pub struct MatrixCase {
    pub name: String,
    /// The exit status that counts as a pass.
    pub expect: u8,
    /// The VM; its `timeout` is the case's time limit.
    pub config: VmConfig,
}

/// Parse matrix text; relative paths are resolved against `dir`.
pub fn parse(text: &str, dir: &Path) -> Result<Vec<MatrixCase>, String> {
    let file: MatrixFile = toml::from_str(text).map_err(|e| {
        let line = e
            .span()
            .map(|s| format!("line {}: ", text[..s.start].matches('\n').count() + 1))
            .unwrap_or_default();
        format!("{line}{}", e.message().trim().replace('\n', " "))
    })?;
    if file.case.is_empty() {
        return Err("no cases; add at least one [[case]] with a name and a kernel".into());
    }
    let mut cases: Vec<MatrixCase> = Vec::new();
    for (i, c) in file.case.into_iter().enumerate() {
        let ok_name = !c.name.is_empty()
            && c.name
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || "-_.+@:".contains(ch))
            && !c.name.starts_with('.');
        if !ok_name {
            return Err(format!(
                "case {} has the name {:?}; use letters, digits and - _ . + @ : (it names the case's log file)",
                i + 1,
                c.name
            ));
        }
        if cases.iter().any(|k| k.name == c.name) {
            return Err(format!(
                "two cases are named {:?}; give each case its own name",
                c.name
            ));
        }
        let mut kernel = c.kernel;
        kernel.path = dir.join(&kernel.path);
        kernel.initramfs = kernel.initramfs.map(|p| dir.join(p));
        cases.push(MatrixCase {
            name: c.name,
            expect: c.expect,
            config: VmConfig {
                kernel,
                machine: c.machine,
                devices: if c.devices.is_empty() {
                    file.devices.clone()
                } else {
                    c.devices
                },
                disks: c
                    .disks
                    .into_iter()
                    .map(|d| DiskConfig {
                        path: dir.join(&d.path),
                        ..d
                    })
                    .collect(),
                nets: c.nets,
                vsock: c.vsock,
                boot_timeout: c.boot_timeout,
                timeout: c.timeout.or(file.timeout),
                vfio_backend: c.vfio_backend.or(file.vfio_backend),
                security: Default::default(),
            },
        });
    }
    Ok(cases)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
devices = ["0000:00:04.0"]
timeout = "2m"
vfio_backend = "legacy"

[[case]]
name = "boots"
kernel = { path = "/l2/vmlinux", initramfs = "pass.img", cmdline = "quiet" }

[[case]]
name = "exit-3"
expect = 3
timeout = "60s"
boot_timeout = "0"
devices = ["01:00.0"]
machine = { vcpus = 2, memory = "1G" }
vfio_backend = "iommufd"
disks = ["path=root.ext4", "path=/img/data.raw,readonly=on"]
[case.kernel]
path = "vmlinuz"
"#;

    #[test]
    fn a_good_matrix() {
        let cases = parse(GOOD, Path::new("/m")).unwrap();
        assert_eq!(cases.len(), 2);
        let (a, b) = (&cases[0], &cases[1]);
        assert_eq!((a.name.as_str(), a.expect), ("boots", 0));
        assert_eq!(a.config.kernel.path, Path::new("/l2/vmlinux"));
        assert_eq!(
            a.config.kernel.initramfs.as_deref(),
            Some(Path::new("/m/pass.img"))
        );
        assert_eq!(a.config.kernel.cmdline, "quiet");
        assert_eq!(a.config.devices[0].to_string(), "0000:00:04.0");
        assert_eq!(a.config.timeout, Some(Duration::from_secs(120)));
        assert_eq!(a.config.boot_timeout, Some(DEFAULT_BOOT_TIMEOUT));
        assert_eq!(a.config.machine, MachineConfig::default());
        assert_eq!(a.config.vfio_backend, Some(VfioBackend::Legacy));
        assert_eq!(b.config.vfio_backend, Some(VfioBackend::Iommufd));
        assert_eq!((b.name.as_str(), b.expect), ("exit-3", 3));
        assert_eq!(b.config.kernel.path, Path::new("/m/vmlinuz"));
        assert_eq!(b.config.timeout, Some(Duration::from_secs(60)));
        assert_eq!(b.config.boot_timeout, None);
        assert_eq!(b.config.devices[0].to_string(), "0000:01:00.0");
        assert!(a.config.disks.is_empty());
        let disks: Vec<String> = b.config.disks.iter().map(|d| d.to_string()).collect();
        assert_eq!(
            disks,
            ["path=/m/root.ext4", "path=/img/data.raw,readonly=on"]
        );
        assert_eq!(
            (b.config.machine.vcpus, b.config.machine.memory_bytes),
            (2, 1 << 30)
        );
    }

    #[test]
    fn mistakes_are_one_line_naming_the_problem() {
        let k = "kernel = { path = \"/k\" }";
        for (text, needles) in [
            (
                format!("[[case]]\nname = \"a\"\n{k}\nexpcet = 3\n"),
                &["line 4", "expcet"][..],
            ),
            (
                format!("colour = 1\n[[case]]\nname = \"a\"\n{k}\n"),
                &["colour"],
            ),
            ("[[case]]\nname = \"a\"\n".to_string(), &["kernel"]),
            (
                format!("[[case]]\nname = \"a\"\n{k}\ntimeout = \"soon\"\n"),
                &["soon", "90s"],
            ),
            (
                format!("[[case]]\nname = \"a\"\n{k}\nboot_timeout = \"1.5s\"\n"),
                &["1.5s"],
            ),
            (
                format!("timeout = \"10x\"\n[[case]]\nname = \"a\"\n{k}\n"),
                &["10x"],
            ),
            (
                format!("[[case]]\nname = \"a\"\n{k}\nexpect = 300\n"),
                &["300"],
            ),
            (format!("[[case]]\nname = \"a b\"\n{k}\n"), &["\"a b\""]),
            (
                format!("[[case]]\nname = \"a\"\n{k}\n[[case]]\nname = \"a\"\n{k}\n"),
                &["two cases", "\"a\""],
            ),
            ("devices = []\n".to_string(), &["no cases"]),
            (
                format!("vfio_backend = \"type1\"\n[[case]]\nname = \"a\"\n{k}\n"),
                &["type1", "legacy", "iommufd"],
            ),
            ("[[case]\n".to_string(), &["line 1"]),
        ] {
            let err = parse(&text, Path::new("/")).unwrap_err();
            assert!(!err.contains('\n'), "not one line: {err}");
            for n in needles {
                assert!(err.contains(n), "{text:?}: {err:?} lacks {n:?}");
            }
        }
    }
}
