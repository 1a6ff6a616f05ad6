use std::path::PathBuf;

/// A setting a [`BootError`] tells the user to check or change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setting {
    KernelPath,
    Initramfs,
    Cmdline,
    Memory,
}

impl Setting {
    /// The setting as a config file spells it (docs/config.md).
    pub fn config_name(self) -> &'static str {
        match self {
            Setting::KernelPath => "kernel.path",
            Setting::Initramfs => "kernel.initramfs",
            Setting::Cmdline => "kernel.cmdline",
            Setting::Memory => "machine.memory",
        }
    }
}

/// Why a guest could not be loaded. Messages name the cause and the fix.
///
/// `Display` names settings as a config file does; a front end with its own words for them
/// (the CLI's flags) uses [`BootError::render`]. thiserror derives only `source()` here
/// (fields named `source` and `#[source]`): with no `#[error]` attributes, it leaves
/// `Display` to the impl below.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    KernelUnreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    NotAKernel {
        path: PathBuf,
    },
    KernelTooOld {
        path: PathBuf,
        version: u16,
    },
    ElfNotX86_64 {
        path: PathBuf,
    },
    KernelLoad {
        path: PathBuf,
        source: linux_loader::loader::Error,
    },
    InitramfsUnreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    InitramfsTooLarge {
        path: PathBuf,
        size: u64,
        limit: u64,
    },
    Cmdline(#[source] CmdlineError),
    CmdlineTooLong {
        max: usize,
    },
    GuestMemory(#[source] GuestWriteError),
}

impl BootError {
    /// The message, with each setting it mentions spelled by `name`. Every message is
    /// written here once, whichever words the settings are given in.
    pub fn render(&self, name: &dyn Fn(Setting) -> &'static str) -> String {
        use Setting::*;
        match self {
            BootError::KernelUnreadable { path, source } => format!(
                "cannot read kernel {}: {source}; check the path given to {}",
                path.display(),
                name(KernelPath)
            ),
            BootError::NotAKernel { path } => format!(
                "{} is not a Linux kernel (no bzImage header, no ELF magic); pass an x86_64 bzImage (vmlinuz) or ELF vmlinux with {}",
                path.display(),
                name(KernelPath)
            ),
            BootError::KernelTooOld { path, version } => format!(
                "{} is a bzImage too old for the 64-bit boot protocol (version {version:#x}, need 2.06+); use a newer kernel",
                path.display()
            ),
            BootError::ElfNotX86_64 { path } => format!(
                "{} is an ELF file but not a 64-bit x86 kernel; pass an x86_64 vmlinux or bzImage with {}",
                path.display(),
                name(KernelPath)
            ),
            BootError::KernelLoad { path, source } => format!(
                "cannot load kernel {}: {source}; check that it is an x86_64 Linux kernel and that {} is large enough",
                path.display(),
                name(Memory)
            ),
            BootError::InitramfsUnreadable { path, source } => format!(
                "cannot read initramfs {}: {source}; check the path given to {}",
                path.display(),
                name(Initramfs)
            ),
            BootError::InitramfsTooLarge { path, size, limit } => format!(
                "initramfs {} ({size} bytes) does not fit in guest RAM below {limit:#x} after the kernel; give the guest more {}",
                path.display(),
                name(Memory)
            ),
            BootError::Cmdline(e) => format!(
                "kernel command line is invalid: {e}; remove the offending characters from {}",
                name(Cmdline)
            ),
            BootError::CmdlineTooLong { max } => format!(
                "kernel command line is longer than {max} bytes; shorten {}",
                name(Cmdline)
            ),
            BootError::GuestMemory(e) => format!("cannot write boot data into guest memory: {e}"),
        }
    }
}

impl std::fmt::Display for BootError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.render(&Setting::config_name))
    }
}

/// Why a kernel command line is invalid.
#[derive(Debug, thiserror::Error)]
pub enum CmdlineError {
    /// Checked before linux-loader sees the line, which would accept most of them.
    #[error("control character {0:?}")]
    ControlCharacter(char),
    #[error(transparent)]
    Invalid(#[from] linux_loader::cmdline::Error),
}

/// What failed while writing boot data into guest memory.
#[derive(Debug, thiserror::Error)]
pub enum GuestWriteError {
    #[error(transparent)]
    Memory(#[from] vm_memory::GuestMemoryError),
    /// Writing the command line.
    #[error(transparent)]
    Loader(#[from] linux_loader::loader::Error),
    /// Writing the zero page.
    #[error(transparent)]
    BootParams(#[from] linux_loader::configurator::Error),
    #[error("{0} e820 entries do not fit the zero page")]
    TooManyE820Entries(usize),
}

#[cfg(test)]
mod tests {
    use super::*;
    use linux_loader::cmdline::Error as LinuxCmdlineError;
    use std::error::Error as _;

    fn not_found() -> std::io::Error {
        std::io::Error::from_raw_os_error(2) // ENOENT
    }

    #[test]
    fn messages_name_the_config_settings() {
        let cases = [
            (
                BootError::KernelUnreadable {
                    path: "/k".into(),
                    source: not_found(),
                },
                "cannot read kernel /k: No such file or directory (os error 2); check the path given to kernel.path",
            ),
            (
                BootError::NotAKernel { path: "/k".into() },
                "/k is not a Linux kernel (no bzImage header, no ELF magic); pass an x86_64 bzImage (vmlinuz) or ELF vmlinux with kernel.path",
            ),
            (
                BootError::KernelTooOld {
                    path: "/k".into(),
                    version: 0x204,
                },
                "/k is a bzImage too old for the 64-bit boot protocol (version 0x204, need 2.06+); use a newer kernel",
            ),
            (
                BootError::ElfNotX86_64 { path: "/k".into() },
                "/k is an ELF file but not a 64-bit x86 kernel; pass an x86_64 vmlinux or bzImage with kernel.path",
            ),
            (
                BootError::KernelLoad {
                    path: "/k".into(),
                    source: linux_loader::loader::Error::MemoryOverflow,
                },
                "cannot load kernel /k: Kernel Loader: memory to load kernel image is not enough; check that it is an x86_64 Linux kernel and that machine.memory is large enough",
            ),
            (
                BootError::InitramfsUnreadable {
                    path: "/i".into(),
                    source: not_found(),
                },
                "cannot read initramfs /i: No such file or directory (os error 2); check the path given to kernel.initramfs",
            ),
            (
                BootError::InitramfsTooLarge {
                    path: "/i".into(),
                    size: 1234,
                    limit: 0x2000_0000,
                },
                "initramfs /i (1234 bytes) does not fit in guest RAM below 0x20000000 after the kernel; give the guest more machine.memory",
            ),
            (
                BootError::Cmdline(CmdlineError::ControlCharacter('\n')),
                "kernel command line is invalid: control character '\\n'; remove the offending characters from kernel.cmdline",
            ),
            (
                BootError::CmdlineTooLong { max: 2047 },
                "kernel command line is longer than 2047 bytes; shorten kernel.cmdline",
            ),
            (
                BootError::GuestMemory(GuestWriteError::TooManyE820Entries(200)),
                "cannot write boot data into guest memory: 200 e820 entries do not fit the zero page",
            ),
        ];
        for (e, want) in cases {
            assert_eq!(e.to_string(), want);
        }
    }

    #[test]
    fn causes_are_typed_sources_and_printed() {
        let e = BootError::Cmdline(LinuxCmdlineError::NullTerminator.into());
        let cause = e.source().unwrap().downcast_ref::<CmdlineError>().unwrap();
        assert!(matches!(
            cause,
            CmdlineError::Invalid(LinuxCmdlineError::NullTerminator)
        ));
        assert!(e
            .to_string()
            .contains(&LinuxCmdlineError::NullTerminator.to_string()));

        let mem = vm_memory::GuestMemoryError::InvalidGuestAddress(vm_memory::GuestAddress(0x1000));
        let text = mem.to_string();
        let e = BootError::GuestMemory(mem.into());
        assert_eq!(
            e.to_string(),
            format!("cannot write boot data into guest memory: {text}")
        );
        assert!(e.source().unwrap().is::<GuestWriteError>());

        let e = BootError::KernelLoad {
            path: "/k".into(),
            source: linux_loader::loader::Error::MemoryOverflow,
        };
        assert!(e.source().unwrap().is::<linux_loader::loader::Error>());
    }
}
