//! The kernel command line: what the user asked for plus what the platform needs.

use arch::layout::CMDLINE_MAX_SIZE;
use linux_loader::cmdline::Cmdline;

use crate::{BootError, CmdlineError};

/// Parameters every zhitong guest needs, whatever the user passes:
/// - `i8042.noaux`: the i8042 is emulated for its reset line only, there is no mouse.
pub const PLATFORM_PARAMS: &str = "i8042.noaux";
/// Defaults the user may override by naming the parameter themselves:
/// - the console is COM1 (the VMM's stdout);
/// - reboot through the ACPI reset register: with hardware-reduced ACPI and no EFI, Linux
///   would otherwise go EFI -> BIOS and jump to a reset vector there is no firmware behind.
pub const DEFAULTS: [(&str, &str); 2] = [("console=", "console=ttyS0"), ("reboot=", "reboot=acpi")];

/// Build the command line: the user's parameters (including any `-- init args`) with the
/// platform's parameters added to the kernel part.
pub fn build_cmdline(user: &str) -> Result<Cmdline, BootError> {
    use linux_loader::cmdline::Error;
    if let Some(c) = user.chars().find(|c| c.is_control()) {
        return Err(BootError::Cmdline(CmdlineError::ControlCharacter(c)));
    }
    let too_long = |e: Error| match e {
        Error::TooLarge | Error::InvalidCapacity => BootError::CmdlineTooLong {
            max: CMDLINE_MAX_SIZE - 1,
        },
        other => BootError::Cmdline(other.into()),
    };
    let mut cmdline = if user.trim().is_empty() {
        Cmdline::new(CMDLINE_MAX_SIZE).map_err(too_long)?
    } else {
        Cmdline::try_from(user.trim(), CMDLINE_MAX_SIZE).map_err(too_long)?
    };
    let kernel_part = user.split(" -- ").next().unwrap_or_default();
    for (key, default) in DEFAULTS {
        if !kernel_part.split_whitespace().any(|p| p.starts_with(key)) {
            cmdline.insert_str(default).map_err(too_long)?;
        }
    }
    cmdline.insert_str(PLATFORM_PARAMS).map_err(too_long)?;
    Ok(cmdline)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(c: &Cmdline) -> String {
        c.as_cstring().unwrap().into_string().unwrap()
    }

    #[test]
    fn platform_params_are_appended() {
        let c = build_cmdline("console=ttyS0 quiet").unwrap();
        assert_eq!(
            text(&c),
            format!("console=ttyS0 quiet reboot=acpi {PLATFORM_PARAMS}")
        );
    }

    #[test]
    fn init_args_stay_last() {
        let c = build_cmdline("console=ttyS0 -- --verbose").unwrap();
        let t = text(&c);
        assert!(t.starts_with("console=ttyS0 "), "{t}");
        assert!(t.ends_with("-- --verbose"), "{t}");
        assert!(t.contains(PLATFORM_PARAMS));
    }

    #[test]
    fn empty_user_cmdline_gets_the_defaults() {
        assert_eq!(
            text(&build_cmdline("").unwrap()),
            format!("console=ttyS0 reboot=acpi {PLATFORM_PARAMS}")
        );
    }

    #[test]
    fn defaults_are_added_only_when_the_user_names_none() {
        let t = text(&build_cmdline("quiet").unwrap());
        assert_eq!(
            t,
            format!("quiet console=ttyS0 reboot=acpi {PLATFORM_PARAMS}")
        );
        let t = text(&build_cmdline("console=hvc0 reboot=k -- console=x").unwrap());
        assert!(!t.contains("ttyS0") && !t.contains("reboot=acpi"), "{t}");
        let t = text(&build_cmdline("quiet -- console=x").unwrap());
        assert!(t.contains("console=ttyS0"), "{t}");
    }

    #[test]
    fn too_long_is_rejected_with_the_limit() {
        let err = build_cmdline(&"a".repeat(CMDLINE_MAX_SIZE)).unwrap_err();
        assert!(matches!(err, BootError::CmdlineTooLong { .. }), "{err}");
    }

    #[test]
    fn nul_is_rejected() {
        assert!(build_cmdline("console=ttyS0\0").is_err());
    }
}
