//! The library's errors name the setting as a config file spells it (`machine.vcpus`);
//! `zhitong run` prints them in the words of the flag that sets it (`--cpus`).

use boot::Setting;
use vmm::config::ConfigError;

/// `e` as zhitong prints it after "zhitong: ".
pub fn message(e: &vmm::Error) -> String {
    match e {
        vmm::Error::Config(e) => config_message(e),
        vmm::Error::Boot(e) => e.render(&flag),
        // The device's message names the image; which --disk it was is then clear.
        vmm::Error::Disk { source, .. } => source.to_string(),
        vmm::Error::Net { source, .. } => source.to_string(),
        vmm::Error::DiskTwice {
            path,
            first,
            second,
        } => format!(
            "disk image {path} is given to --disk twice (the {} and the {}) and not read-only in both; give it once, or add readonly=on to each",
            ordinal(first + 1),
            ordinal(second + 1)
        ),
        vmm::Error::TooManyVcpus { got, max } => {
            format!("--cpus {got} is more than KVM allows on this host ({max}); ask for fewer")
        }
        e => e.to_string(),
    }
}

/// 1st, 2nd, 3rd, 4th... 11th, 12th, 13th, 21st.
fn ordinal(n: usize) -> String {
    let suffix = match (n % 10, n % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

/// The flag of `zhitong run` that sets `setting`.
fn flag(setting: Setting) -> &'static str {
    match setting {
        Setting::KernelPath => "--kernel",
        Setting::Initramfs => "--initramfs",
        Setting::Cmdline => "--cmdline",
        Setting::Memory => "--memory",
    }
}

/// Every variant is listed so that a new one gets a decision here.
fn config_message(e: &ConfigError) -> String {
    match e {
        ConfigError::BadVcpus { got, max } => {
            format!("--cpus must be between 1 and {max}, got {got}")
        }
        ConfigError::MemoryTooSmall { got, min } => {
            format!("--memory {got} is below the minimum of {min}; ask for at least {min}")
        }
        ConfigError::MemoryUnaligned { got, suggest } => {
            format!("--memory {got} is not a multiple of 4K; round it, e.g. to {suggest}")
        }
        ConfigError::MemoryTooLarge { got, host } => {
            format!("--memory {got} is more than this host's {host} of RAM; ask for less")
        }
        ConfigError::MemoryNotHugePages { got, page, suggest } => format!(
            "--memory {got} is not a multiple of its {page} huge pages; round it, e.g. to {suggest},hugepages={page}"
        ),
        ConfigError::MemoryAboveMax { got, max } => format!(
            "--memory {got} is more than the platform's maximum of {max} (what 48-bit guest physical addresses hold, less the 1G MMIO hole); ask for at most {max}"
        ),
        ConfigError::TooManyDevices { functions, slots } => format!(
            "--device is given for {functions} functions in {slots} host slots, more than the guest's PCI bus 0 holds ({} slots, one per host slot, of {} functions); pass fewer --device",
            vmm::config::GUEST_PCI_SLOTS,
            devices::pci::address::MAX_FUNCTIONS
        ),
        ConfigError::TooManyVirtio { slots, virtio } => format!(
            "--device takes {slots} guest slots and --disk/--net/--vsock {virtio}, more than the guest's PCI bus 0 holds ({} slots, one per --disk, --net or --vsock); pass fewer",
            vmm::config::GUEST_PCI_SLOTS
        ),
        ConfigError::FileUnreadable { path, reason } => {
            format!("config file {path}: {reason}; check the path given to --config")
        }
        ConfigError::NoKernel => {
            "no kernel given; pass --kernel PATH or set kernel.path in the --config file".into()
        }
        ConfigError::Security(e) => e.worded("--user"),
        // Already in the words of the value or the file.
        ConfigError::Device(d) => format!("--device: {d}"),
        ConfigError::Disk(d) => format!("--disk: {d}"),
        ConfigError::Net(n) => format!("--net: {n}"),
        ConfigError::Vsock(v) => format!("--vsock: {v}"),
        ConfigError::Unit(_) | ConfigError::File { .. } => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmm::config::parse_vcpus;
    use vmm::MachineConfig;

    fn config(e: ConfigError) -> String {
        message(&e.into())
    }

    #[test]
    fn settings_are_worded_as_flags() {
        assert_eq!(
            config(parse_vcpus("0").unwrap_err()),
            "--cpus must be between 1 and 254, got 0"
        );
        let memory = |bytes| {
            let m = MachineConfig {
                vcpus: 1,
                memory_bytes: bytes,
                hugepages: None,
                ..Default::default()
            };
            config(m.validate(Some(4 << 30)).unwrap_err())
        };
        assert_eq!(
            memory(32 << 20),
            "--memory 32M is below the minimum of 64M; ask for at least 64M"
        );
        assert_eq!(
            memory((64 << 20) + 1),
            "--memory 67108865B is not a multiple of 4K; round it, e.g. to 65M"
        );
        assert_eq!(
            memory(8 << 30),
            "--memory 8G is more than this host's 4G of RAM; ask for less"
        );
        assert_eq!(
            memory(16_777_215 << 40),
            "--memory 16777215T is more than the platform's maximum of 262143G (what 48-bit guest physical addresses hold, less the 1G MMIO hole); ask for at most 262143G"
        );
        let devices: Vec<devices::pci::Bdf> = (0..=254)
            .map(|bus| devices::pci::Bdf {
                domain: 0,
                bus,
                device: 0,
                function: 0,
            })
            .collect();
        assert_eq!(
            config(vmm::config::validate_devices(&devices).unwrap_err()),
            "--device is given for 255 functions in 255 host slots, more than the guest's PCI bus 0 holds (31 slots, one per host slot, of 8 functions); pass fewer --device"
        );
        assert_eq!(
            config(ConfigError::NoKernel),
            "no kernel given; pass --kernel PATH or set kernel.path in the --config file"
        );
        let unreadable = vmm::config::file::load("/nonexistent.json".as_ref()).unwrap_err();
        assert_eq!(
            config(unreadable),
            "config file /nonexistent.json: No such file or directory (os error 2); check the path given to --config"
        );
        assert_eq!(
            message(&vmm::Error::TooManyVcpus { got: 200, max: 64 }),
            "--cpus 200 is more than KVM allows on this host (64); ask for fewer"
        );
    }

    /// The wording `zhitong run` has always printed, byte for byte.
    #[test]
    fn boot_errors_are_worded_as_flags() {
        use boot::{BootError, CmdlineError, GuestWriteError};
        let not_found = || std::io::Error::from_raw_os_error(2); // ENOENT
        let cases = [
            (
                BootError::KernelUnreadable {
                    path: "/k".into(),
                    source: not_found(),
                },
                "cannot read kernel /k: No such file or directory (os error 2); check the path given to --kernel",
            ),
            (
                BootError::NotAKernel { path: "/k".into() },
                "/k is not a Linux kernel (no bzImage header, no ELF magic); pass an x86_64 bzImage (vmlinuz) or ELF vmlinux with --kernel",
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
                "/k is an ELF file but not a 64-bit x86 kernel; pass an x86_64 vmlinux or bzImage with --kernel",
            ),
            (
                BootError::KernelLoad {
                    path: "/k".into(),
                    source: linux_loader::loader::Error::MemoryOverflow,
                },
                "cannot load kernel /k: Kernel Loader: memory to load kernel image is not enough; check that it is an x86_64 Linux kernel and that --memory is large enough",
            ),
            (
                BootError::InitramfsUnreadable {
                    path: "/i".into(),
                    source: not_found(),
                },
                "cannot read initramfs /i: No such file or directory (os error 2); check the path given to --initramfs",
            ),
            (
                BootError::InitramfsTooLarge {
                    path: "/i".into(),
                    size: 1234,
                    limit: 0x2000_0000,
                },
                "initramfs /i (1234 bytes) does not fit in guest RAM below 0x20000000 after the kernel; give the guest more --memory",
            ),
            (
                BootError::Cmdline(CmdlineError::ControlCharacter('\n')),
                "kernel command line is invalid: control character '\\n'; remove the offending characters from --cmdline",
            ),
            (
                BootError::Cmdline(linux_loader::cmdline::Error::NullTerminator.into()),
                "kernel command line is invalid: Null terminator detected in the command line structure.; remove the offending characters from --cmdline",
            ),
            (
                BootError::CmdlineTooLong { max: 2047 },
                "kernel command line is longer than 2047 bytes; shorten --cmdline",
            ),
            (
                BootError::GuestMemory(
                    vm_memory::GuestMemoryError::InvalidGuestAddress(vm_memory::GuestAddress(
                        0x1000,
                    ))
                    .into(),
                ),
                "cannot write boot data into guest memory: Guest memory error: invalid guest address 4096",
            ),
            (
                BootError::GuestMemory(GuestWriteError::TooManyE820Entries(200)),
                "cannot write boot data into guest memory: 200 e820 entries do not fit the zero page",
            ),
        ];
        for (e, want) in cases {
            let e = vmm::Error::Boot(e);
            assert_eq!(message(&e), want);
        }
    }

    #[test]
    fn other_errors_are_the_library_text() {
        let file = ConfigError::File {
            path: "vm.toml".into(),
            reason: "unknown field `memroy`".into(),
        };
        assert_eq!(config(file.clone()), file.to_string());
        let e = vmm::Error::KvmCapability("irqfd (KVM_CAP_IRQFD)");
        assert_eq!(message(&e), e.to_string());
    }

    #[test]
    fn disk_errors_name_the_flag_and_which() {
        let e = vmm::Error::DiskTwice {
            path: "/img/a".into(),
            first: 0,
            second: 2,
        };
        assert_eq!(
            message(&e),
            "disk image /img/a is given to --disk twice (the 1st and the 3rd) and not read-only in both; give it once, or add readonly=on to each"
        );
        let open = vmm::Error::Disk {
            index: 1,
            source: devices::virtio::BlockError::NotFound("/img/b".into()),
        };
        assert_eq!(
            message(&open),
            open.to_string().replacen("disks[1]: ", "", 1)
        );
        assert_eq!(
            [1, 2, 3, 4, 11, 12, 13, 21, 22, 111].map(ordinal),
            ["1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "111th"]
        );
    }
}
