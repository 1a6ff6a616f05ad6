//! The VMM's errors. Each message names the cause and the fix; the cause's own error stays
//! reachable as the `source`. `exit_code` tells bad usage (2) from failures of the host or
//! the guest (1). Messages speak of the configuration's settings (`machine.vcpus`); the CLI
//! words them as its flags.

use boot::BootError;

use crate::config::ConfigError;
use devices::pci::root::PciRootError;
use devices::vfio::VfioPciError;
use vfio_ioctls::VfioError;

type BoxedSource = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Boot(#[from] BootError),
    /// /dev/kvm did not open; `hint` is the host doctor's finding for the errno, worded when
    /// the error was made (it reads the CPU vendor).
    #[error("{hint}")]
    KvmOpen {
        hint: String,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error("this host's KVM lacks {0}; run on a host kernel that has it")]
    KvmCapability(&'static str),
    #[error("machine.vcpus {got} is more than KVM allows on this host ({max}); ask for fewer")]
    TooManyVcpus { got: u8, max: usize },
    #[error("KVM {op} failed: {source}")]
    Kvm {
        op: &'static str,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error(
        "cannot allocate {size} of guest RAM: {source}; ask for less memory or free host memory"
    )]
    GuestMemory {
        size: String,
        #[source]
        source: BoxedSource,
    },
    #[error(transparent)]
    Preflight(#[from] host::preflight::PreflightError),
    #[error(transparent)]
    BadDevice(#[from] devices::pci::BadBdf),
    #[error("cannot pass through {what}: {source}")]
    Vfio {
        what: String,
        #[source]
        source: PassthroughError,
    },
    #[error("cannot set up {what}: {source}")]
    Pci {
        what: &'static str,
        #[source]
        source: devices::pci::root::PciRootError,
    },
    #[error("cannot build ACPI tables: {0}")]
    Acpi(#[from] AcpiWriteError),
    #[error("cannot set up {what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("the control loop failed: {0}")]
    EventLoop(#[source] event_manager::Error),
    #[error(transparent)]
    Seccomp(#[from] crate::seccomp::SeccompError),
    /// `disks[index]` did not open; the device's error names the image and the fix.
    #[error("disks[{index}]: {source}")]
    Disk {
        index: usize,
        #[source]
        source: devices::virtio::BlockError,
    },
    /// `nets[index]`'s tap did not open; the device's error names the tap and the fix.
    #[error("nets[{index}]: {source}")]
    Net {
        index: usize,
        #[source]
        source: devices::virtio::NetError,
    },
    /// The vsock's socket could not be bound; the device's error names the path and the fix.
    #[error("{0}")]
    Vsock(#[source] devices::virtio::VsockError),
    #[error("disk image {path} is given twice (disks[{first}] and disks[{second}]) and not read-only in both; give it once, or readonly=on in each")]
    DiskTwice {
        path: String,
        first: usize,
        second: usize,
    },
    #[error("cannot become user {user}: {step} failed: {source}")]
    DropUser {
        user: crate::config::security::User,
        step: &'static str,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub fn kvm(op: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> Error {
        move |source| Error::Kvm { op, source }
    }

    pub fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> Error {
        move |source| Error::Io { what, source }
    }

    /// An errno-carrying error of vmm-sys-util (timerfd, signals) as an `Io` error.
    pub fn errno(what: &'static str) -> impl FnOnce(vmm_sys_util::errno::Error) -> Error {
        move |e| Error::Io {
            what,
            source: std::io::Error::from_raw_os_error(e.errno()),
        }
    }

    /// 2 for bad usage or configuration, 1 for everything else.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Config(_)
            | Error::TooManyVcpus { .. }
            | Error::Preflight(_)
            | Error::BadDevice(_)
            | Error::Disk { .. }
            | Error::DiskTwice { .. }
            | Error::Net { .. }
            | Error::Vsock(_) => 2,
            Error::Boot(e) => match e {
                BootError::GuestMemory(_) => 1,
                _ => 2,
            },
            _ => 1,
        }
    }
}

/// Why a device could not be passed through. Each message carries its fix where there is
/// one; the VFIO or device error stays the source.
#[derive(Debug, thiserror::Error)]
pub enum PassthroughError {
    #[error("{}", describe_vfio(.0))]
    Container(#[source] VfioError),
    #[error("{hint}")]
    Open {
        hint: String,
        #[source]
        source: VfioError,
    },
    #[error(
        "{}; the guest's RAM must be pinned: check RLIMIT_MEMLOCK (ulimit -l) or give the guest less memory",
        describe_vfio(.0)
    )]
    DmaMap(#[source] VfioError),
    #[error(transparent)]
    Device(#[from] VfioPciError),
    #[error(transparent)]
    Placement(#[from] PciRootError),
}

/// Why the ACPI tables (and the reset-vector stub beside them) could not be written.
#[derive(Debug, thiserror::Error)]
pub enum AcpiWriteError {
    #[error(transparent)]
    Build(#[from] arch::acpi::AcpiError),
    #[error("the tables reach the reset vector")]
    TooBig,
    #[error(transparent)]
    Memory(#[from] vm_memory::GuestMemoryError),
}

/// A VFIO error with its OS cause spelled out.
pub fn describe_vfio(e: &VfioError) -> String {
    let text = e.to_string();
    match std::error::Error::source(e).map(|s| s.to_string()) {
        // Some of vfio-ioctls' messages carry their source already.
        Some(source) if !text.contains(&source) => format!("{text}: {source}"),
        _ => text,
    }
}

pub type Result<T> = std::result::Result<T, Error>;
