//! The command line: flags, and turning clap's errors into one line with the fix.

use std::path::PathBuf;
use std::time::Duration;

use arch::units::{parse_duration, parse_size};
use clap::{Args, Parser, Subcommand};
use devices::pci::Bdf;
use vmm::config::parse_vcpus;
use vmm::config::security::SeccompMode;
use vmm::config::{
    ConfigError, DeviceConfig, DiskConfig, DmaMapStart, HugePageSize, NetConfig, VfioBackend,
    VsockConfig,
};
use vmm::VmConfig;

#[derive(Debug, Parser)]
#[command(
    name = "zhitong",
    version,
    about = "A small VMM for VFIO passthrough: boots a Linux guest on KVM",
    disable_help_subcommand = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

// Parsed once per process: the size of `Run` does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Boot a Linux guest; its serial console is this terminal.
    Run(RunArgs),
    /// List the host's PCI devices: ids, class, driver, IOMMU group, BARs, passthrough readiness.
    Devices(DevicesArgs),
    /// Check that this host can pass devices through; each problem comes with its fix.
    /// Exit 0 when ready, 1 when not.
    Check(CheckArgs),
    /// Hand a device and every endpoint of its IOMMU group to vfio-pci (remembering their drivers).
    Bind(BindArgs),
    /// Give a device's IOMMU group back to the drivers it had before 'zhitong bind'.
    Unbind(UnbindArgs),
    /// Talk to a running VM's API socket ('zhitong run --api-socket PATH'); prints its JSON.
    /// Exit 0 on success, 1 when the server refuses, 2 for bad usage.
    Api(ApiArgs),
    // The help texts with [[case]] or <name> are attributes, not doc comments: rustdoc would
    // take them for links and HTML tags.
    #[command(
        about = "Run a matrix of VMs one after another (a TOML file of [[case]]s); one line per case, a log per case, a JUnit report. Exit 0 when every case met its expected status"
    )]
    Test(TestArgs),
}

#[derive(Debug, Args)]
pub struct TestArgs {
    #[arg(
        value_name = "MATRIX.toml",
        help = "The matrix: [[case]] tables, each a VM configuration plus name, expect, timeout"
    )]
    pub matrix: PathBuf,
    /// Write a JUnit XML report here.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    #[arg(
        long,
        value_name = "DIR",
        help = "The directory for each case's console log, <name>.log [default: zhitong-logs]"
    )]
    pub logs: Option<PathBuf>,
    /// Run only the cases whose name contains this text.
    #[arg(long, value_name = "SUBSTR")]
    pub filter: Option<String>,
    /// Stop at the first case that does not meet its expectation (the rest are skipped).
    #[arg(long)]
    pub fail_fast: bool,
}

#[derive(Debug, Args)]
pub struct ApiArgs {
    /// The socket given to 'zhitong run --api-socket'.
    #[arg(long, value_name = "PATH")]
    pub socket: PathBuf,
    /// What to do [default: get].
    #[command(subcommand)]
    pub action: Option<ApiAction>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Subcommand)]
pub enum ApiAction {
    /// GET /vm: state, configuration, boot timeline, devices.
    Get,
    /// PUT /vm/pause: park the vCPUs.
    Pause,
    /// PUT /vm/resume: let them run again.
    Resume,
    /// PUT /vm/shutdown: press the ACPI power button; stop the VM after the timeout.
    Shutdown {
        /// Seconds the guest gets to power off [default: 30].
        #[arg(long, value_name = "SECS")]
        timeout: Option<u64>,
    },
    /// PUT /vm/reboot: end the VM now, as a guest reboot would (zhitong run exits 0).
    Reboot,
}

#[derive(Debug, Args)]
pub struct DevicesArgs {
    /// One JSON array instead of the table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// A device to pass through (repeatable): 0000:01:00.0, 01:00.0 or its sysfs path,
    /// with the options 'run --device' takes.
    #[arg(long = "device", value_name = "PATH|BDF[,OPTION...]", value_parser = parse_device_config_arg)]
    pub devices: Vec<DeviceConfig>,
    /// The guest RAM the run will have (pinned for DMA; decides where BARs go), and its
    /// huge pages as 'run --memory' takes them (checked against the host's free ones).
    #[arg(long, value_name = "SIZE[,hugepages=2M|1G]", default_value = "512M", value_parser = parse_memory_arg)]
    pub memory: MemoryArg,
    /// One JSON object ({"ready": bool, "findings": [...]}) instead of text.
    #[arg(long)]
    pub json: bool,
    /// The VFIO backend the run would use (see 'run --vfio-backend') [default: auto].
    #[arg(long, value_name = "legacy|iommufd|auto", value_parser = parse_backend_arg)]
    pub vfio_backend: Option<BackendChoice>,
}

/// `--vfio-backend`: a backend, or "auto" (`None`: chosen per host).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackendChoice(pub Option<VfioBackend>);

fn parse_backend_arg(s: &str) -> Result<BackendChoice, String> {
    match s {
        "auto" => Ok(BackendChoice(None)),
        _ => s
            .parse()
            .map(|b| BackendChoice(Some(b)))
            .map_err(|_| format!("unknown VFIO backend '{s}' (legacy, iommufd or auto)")),
    }
}

#[derive(Debug, Args)]
pub struct BindArgs {
    /// The device: 0000:01:00.0, 01:00.0 or its sysfs path.
    #[arg(value_name = "BDF", value_parser = parse_device_arg)]
    pub bdf: Bdf,
    /// Move group members even when a disk below them is mounted or in use.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct UnbindArgs {
    /// The device: 0000:01:00.0, 01:00.0 or its sysfs path.
    #[arg(value_name = "BDF", value_parser = parse_device_arg)]
    pub bdf: Bdf,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// A VM configuration file (JSON, or TOML by its .toml extension); flags given
    /// alongside override its values.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Guest kernel: an x86_64 bzImage (vmlinuz) or ELF vmlinux.
    #[arg(long, value_name = "PATH", required_unless_present = "config")]
    pub kernel: Option<PathBuf>,
    /// Initramfs (cpio, optionally compressed) for the guest.
    #[arg(long, value_name = "PATH")]
    pub initramfs: Option<PathBuf>,
    /// Kernel command line; console=ttyS0 and the platform's parameters are added.
    #[arg(long, value_name = "STR", allow_hyphen_values = true)]
    pub cmdline: Option<String>,
    /// Number of vCPUs [default: 1].
    #[arg(long, value_name = "N", value_parser = parse_vcpus_arg)]
    pub cpus: Option<u8>,
    /// Guest RAM, e.g. 512M or 4G (a plain number means MiB) [default: 512M]; with
    /// hugepages=2M or hugepages=1G it is backed by huge pages of that size, reserved at
    /// start (the host must have enough free: see 'zhitong check --memory'). With devices
    /// passed through, RAM is DMA-mapped while the guest boots (dma-map=beside-boot, the
    /// default: a device's bus mastering waits for it) or before (dma-map=before-boot).
    #[arg(long, value_name = "SIZE[,hugepages=2M|1G][,dma-map=beside-boot|before-boot]", value_parser = parse_memory_arg)]
    pub memory: Option<MemoryArg>,
    /// Pass a host PCI device through with VFIO: a BDF (0000:01:00.0) or its sysfs path,
    /// then options: p2p=on (its BARs DMA-mapped so other passed-through devices reach
    /// them), clique=0-15 (NVIDIA GPUDirect clique; needs p2p=on). Repeatable. The device
    /// must be bound to vfio-pci (see 'zhitong bind').
    #[arg(long = "device", value_name = "PATH|BDF[,OPTION...]", value_parser = parse_device_config_arg)]
    pub devices: Vec<DeviceConfig>,
    /// A virtio disk from a raw image or a block device: path=FILE, then options:
    /// readonly=on (the guest cannot write it), serial=STR (up to 20 bytes, the guest's
    /// /sys/block/vdX/serial). Repeatable: the first is /dev/vda.
    #[arg(long = "disk", value_name = "path=FILE[,OPTION...]", value_parser = parse_disk_arg)]
    pub disks: Vec<DiskConfig>,
    /// A virtio network interface on a tap: tap=NAME (an existing tap, or one to create:
    /// that needs CAP_NET_ADMIN), then mac=MAC (default: one derived from the tap's name,
    /// the same every run). Repeatable: the first is the guest's eth0.
    #[arg(long = "net", value_name = "tap=NAME[,mac=MAC]", value_parser = parse_net_arg)]
    pub nets: Vec<NetConfig>,
    /// A vsock device: the guest's cid (3 or more) and the Unix socket zhitong listens on.
    /// A host process connects to PATH and sends the line "CONNECT PORT" to reach the
    /// guest's PORT (zhitong answers "OK N"); the guest's connections to the host (cid 2)
    /// port P reach the Unix socket PATH_P. Firecracker's and Cloud Hypervisor's convention.
    #[arg(long, value_name = "cid=N,socket=PATH", value_parser = parse_vsock_arg)]
    pub vsock: Option<VsockConfig>,
    /// Print the boot timeline as one JSON line on stderr at exit.
    #[arg(long)]
    pub timings: bool,
    /// Fail if the guest has not touched its serial port within this time (0 = never)
    /// [default: 60s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_arg)]
    pub boot_timeout: Option<Duration>,
    /// Serve the control API (HTTP/1.1 + JSON, see docs/api.md) on this Unix socket.
    #[arg(long, value_name = "PATH")]
    pub api_socket: Option<PathBuf>,
    /// Stop the guest when it still runs after this long (e.g. 10m): every device is
    /// released and zhitong exits 124, like timeout(1).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_arg)]
    pub timeout: Option<Duration>,
    /// Also write the guest's console to FILE (created or truncated); stdout is unchanged.
    #[arg(long, value_name = "FILE")]
    pub console_log: Option<PathBuf>,
    /// Prefix each line in the --console-log file with "[   12.345] ", seconds since start.
    #[arg(long, requires = "console_log")]
    pub console_timestamps: bool,
    /// Each thread's seccomp filter: on (a forbidden syscall stops the VM), off, or log
    /// (allowed, and logged by the kernel) [default: on].
    #[arg(long, value_name = "on|off|log", value_parser = parse_seccomp_arg)]
    pub seccomp: Option<SeccompMode>,
    /// Become this user (numbers: UID or UID:GID) once the devices are open, before the
    /// guest runs. zhitong must start as root.
    #[arg(long, value_name = "UID[:GID]")]
    pub user: Option<String>,
    /// How the devices are opened: iommufd (/dev/iommu and the devices' VFIO cdevs),
    /// legacy (the VFIO container and groups), or auto: iommufd when the host and every
    /// device have it, else legacy [default: auto].
    #[arg(long, value_name = "legacy|iommufd|auto", value_parser = parse_backend_arg)]
    pub vfio_backend: Option<BackendChoice>,
}

fn parse_device_arg(s: &str) -> Result<Bdf, String> {
    s.parse().map_err(|e: devices::pci::BadBdf| e.to_string())
}

fn parse_device_config_arg(s: &str) -> Result<DeviceConfig, String> {
    s.parse()
        .map_err(|e: vmm::config::DeviceError| e.to_string())
}

fn parse_disk_arg(s: &str) -> Result<DiskConfig, String> {
    s.parse().map_err(|e: vmm::config::DiskError| e.to_string())
}

fn parse_net_arg(s: &str) -> Result<NetConfig, String> {
    s.parse().map_err(|e: vmm::config::NetError| e.to_string())
}

fn parse_vsock_arg(s: &str) -> Result<VsockConfig, String> {
    s.parse()
        .map_err(|e: vmm::config::VsockError| e.to_string())
}

fn parse_size_arg(s: &str) -> Result<u64, String> {
    parse_size(s).map_err(|e| e.to_string())
}

/// `--memory SIZE[,hugepages=2M|1G][,dma-map=beside-boot|before-boot]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryArg {
    pub bytes: u64,
    pub hugepages: Option<HugePageSize>,
    pub dma_map: Option<DmaMapStart>,
}

fn parse_memory_arg(s: &str) -> Result<MemoryArg, String> {
    let mut parts = s.split(',');
    let bytes = parse_size_arg(parts.next().unwrap_or_default())?;
    let (mut hugepages, mut dma_map) = (None, None);
    for option in parts {
        match option.split_once('=') {
            Some(("hugepages", size)) if hugepages.is_none() => hugepages = Some(size.parse()?),
            Some(("dma-map", when)) if dma_map.is_none() => {
                dma_map = Some(when.parse().map_err(|e| format!("dma-map={e}"))?)
            }
            Some((key @ ("hugepages" | "dma-map"), _)) => {
                return Err(format!("{key} is given twice"))
            }
            _ => {
                return Err(format!(
                    "unknown memory option '{option}' (hugepages=2M|1G, dma-map=beside-boot|before-boot)"
                ))
            }
        }
    }
    Ok(MemoryArg {
        bytes,
        hugepages,
        dma_map,
    })
}

fn parse_vcpus_arg(s: &str) -> Result<u8, String> {
    parse_vcpus(s).map_err(|e| crate::flag_errors::message(&e.into()))
}

fn parse_seccomp_arg(s: &str) -> Result<SeccompMode, String> {
    s.parse()
}

fn parse_duration_arg(s: &str) -> Result<Duration, String> {
    parse_duration(s).map_err(|e| e.to_string())
}

impl RunArgs {
    /// The VM configuration: the --config file (if any) with the flags on top.
    pub fn to_config(&self) -> Result<VmConfig, ConfigError> {
        let mut cfg = match (&self.config, &self.kernel) {
            (Some(path), _) => vmm::config::file::load(path)?,
            (None, Some(kernel)) => VmConfig::new(kernel),
            (None, None) => return Err(ConfigError::NoKernel),
        };
        if let Some(kernel) = &self.kernel {
            cfg.kernel.path = kernel.clone();
        }
        if let Some(initramfs) = &self.initramfs {
            cfg.kernel.initramfs = Some(initramfs.clone());
        }
        if let Some(cmdline) = &self.cmdline {
            cfg.kernel.cmdline = cmdline.clone();
        }
        if let Some(cpus) = self.cpus {
            cfg.machine.vcpus = cpus;
        }
        if let Some(memory) = self.memory {
            cfg.machine.memory_bytes = memory.bytes;
            if memory.hugepages.is_some() {
                cfg.machine.hugepages = memory.hugepages;
            }
            if let Some(when) = memory.dma_map {
                cfg.machine.dma_map = when;
            }
        }
        if !self.devices.is_empty() {
            cfg.devices = self.devices.clone();
        }
        if !self.disks.is_empty() {
            cfg.disks = self.disks.clone();
        }
        if !self.nets.is_empty() {
            cfg.nets = self.nets.clone();
        }
        if let Some(vsock) = &self.vsock {
            cfg.vsock = Some(vsock.clone());
        }
        if let Some(limit) = self.boot_timeout {
            cfg.boot_timeout = (!limit.is_zero()).then_some(limit);
        }
        if let Some(limit) = self.timeout {
            cfg.timeout = (!limit.is_zero()).then_some(limit);
        }
        if let Some(mode) = self.seccomp {
            cfg.security.seccomp = mode;
        }
        if let Some(user) = &self.user {
            cfg.security.user = Some(user.parse()?);
        }
        if let Some(BackendChoice(backend)) = self.vfio_backend {
            cfg.vfio_backend = backend;
        }
        Ok(cfg)
    }
}

/// What parsing the command line led to.
// Made once per process, so the size of `Run` does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Parsed {
    Run(Cli),
    /// Help or version text for stdout, exit 0.
    Info(String),
    /// One line for stderr, exit 2.
    Usage(String),
}

pub fn parse<I, T>(args: I) -> Parsed
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    use clap::error::ErrorKind;
    let args: Vec<std::ffi::OsString> = args.into_iter().map(Into::into).collect();
    let command = subcommand_name(&args);
    match Cli::try_parse_from(args) {
        Ok(cli) => Parsed::Run(cli),
        Err(e) => match e.kind() {
            ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
                Parsed::Info(e.render().to_string())
            }
            ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand | ErrorKind::MissingSubcommand => {
                Parsed::Usage(
                    "no command given; use 'zhitong run --kernel PATH', or test, devices, check, bind, unbind, api (see 'zhitong --help')"
                        .into(),
                )
            }
            _ => Parsed::Usage(one_line(&e.render().to_string(), command)),
        },
    }
}

/// The subcommand the user typed, when it is one of ours (for pointing at its --help).
fn subcommand_name(args: &[std::ffi::OsString]) -> &'static str {
    let typed = args
        .iter()
        .skip(1)
        .find_map(|a| a.to_str().filter(|a| !a.starts_with('-')));
    ["run", "devices", "check", "bind", "unbind", "api", "test"]
        .into_iter()
        .find(|c| typed == Some(*c))
        .unwrap_or("run")
}

/// Clap's message up to its first blank line, on one line, with where to look for usage.
fn one_line(rendered: &str, command: &str) -> String {
    let first: Vec<&str> = rendered
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .map(str::trim)
        .collect();
    let text = first.join(" ");
    let text = text.strip_prefix("error: ").unwrap_or(&text);
    format!("{text}; see 'zhitong {command} --help'")
}

#[cfg(test)]
mod tests;
