use std::path::PathBuf;

/// Why a guest could not be loaded. Messages name the cause and the fix.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("cannot read kernel {path}: {source}; check the path given to --kernel")]
    KernelUnreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a Linux kernel (no bzImage header, no ELF magic); pass an x86_64 bzImage (vmlinuz) or ELF vmlinux with --kernel")]
    NotAKernel { path: PathBuf },
    #[error("{path} is a bzImage too old for the 64-bit boot protocol (version {version:#x}, need 2.06+); use a newer kernel")]
    KernelTooOld { path: PathBuf, version: u16 },
    #[error("{path} is an ELF file but not a 64-bit x86 kernel; pass an x86_64 vmlinux or bzImage with --kernel")]
    ElfNotX86_64 { path: PathBuf },
    #[error("cannot load kernel {path}: {reason}; check that it is an x86_64 Linux kernel and that --memory is large enough")]
    KernelLoad { path: PathBuf, reason: String },
    #[error("cannot read initramfs {path}: {source}; check the path given to --initramfs")]
    InitramfsUnreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("initramfs {path} ({size} bytes) does not fit in guest RAM below {limit:#x} after the kernel; give the guest more --memory")]
    InitramfsTooLarge {
        path: PathBuf,
        size: u64,
        limit: u64,
    },
    #[error("kernel command line is invalid: {0}; remove the offending characters from --cmdline")]
    Cmdline(String),
    #[error("kernel command line is longer than {max} bytes; shorten --cmdline")]
    CmdlineTooLong { max: usize },
    #[error("cannot write boot data into guest memory: {0}")]
    GuestMemory(String),
}
