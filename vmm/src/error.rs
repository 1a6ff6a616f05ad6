//! The VMM's errors. Each message names the cause and the fix; `exit_code` tells bad usage
//! (2) from failures of the host or the guest (1).

use boot::BootError;

use crate::config::ConfigError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Boot(#[from] BootError),
    #[error("{}", host::checks::kvm_open_failed(
        std::path::Path::new("/dev/kvm"),
        .0.errno(),
        host::cpu::Vendor::from_cpuinfo(std::path::Path::new("/proc")),
    ))]
    KvmOpen(kvm_ioctls::Error),
    #[error("this host's KVM lacks {0}; run on a host kernel that has it")]
    KvmCapability(&'static str),
    #[error("--cpus {got} is more than KVM allows on this host ({max}); ask for fewer")]
    TooManyVcpus { got: u8, max: usize },
    #[error("KVM {op} failed: {source}")]
    Kvm {
        op: &'static str,
        source: kvm_ioctls::Error,
    },
    #[error(
        "cannot allocate {size} of guest RAM: {reason}; ask for less --memory or free host memory"
    )]
    GuestMemory { size: String, reason: String },
    #[error(transparent)]
    Preflight(#[from] host::preflight::PreflightError),
    #[error(transparent)]
    BadDevice(#[from] devices::pci::BadBdf),
    #[error("cannot pass through {what}: {reason}")]
    Vfio { what: String, reason: String },
    #[error("cannot build ACPI tables: {0}")]
    Acpi(String),
    #[error("cannot set up {what}: {source}")]
    Io {
        what: &'static str,
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

    /// 2 for bad usage or configuration, 1 for everything else.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Config(_)
            | Error::TooManyVcpus { .. }
            | Error::Preflight(_)
            | Error::BadDevice(_) => 2,
            Error::Boot(e) => match e {
                BootError::GuestMemory(_) => 1,
                _ => 2,
            },
            _ => 1,
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;
