//! The library's errors name the setting as a config file spells it (`machine.vcpus`);
//! `zhitong run` prints them in the words of the flag that sets it (`--cpus`).

use vmm::config::ConfigError;

/// `e` as zhitong prints it after "zhitong: ".
pub fn message(e: &vmm::Error) -> String {
    match e {
        vmm::Error::Config(e) => config_message(e),
        vmm::Error::TooManyVcpus { got, max } => {
            format!("--cpus {got} is more than KVM allows on this host ({max}); ask for fewer")
        }
        e => e.to_string(),
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
        ConfigError::FileUnreadable { path, reason } => {
            format!("config file {path}: {reason}; check the path given to --config")
        }
        ConfigError::NoKernel => {
            "no kernel given; pass --kernel PATH or set kernel.path in the --config file".into()
        }
        // Already in the words of the value or the file.
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
}
