//! A PCI function's address, domain:bus:device.function, and how users may write it. One
//! type for host devices (sysfs, VFIO, the host doctor) and guest placement (the root
//! complex, always domain 0).

use std::fmt;
use std::path::Path;
use std::str::FromStr;

/// Devices (slots) on a bus and functions per device.
pub const MAX_DEVICES: u8 = 32;
pub const MAX_FUNCTIONS: u8 = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Bdf {
    pub domain: u16,
    pub bus: u8,
    pub device: u8,
    pub function: u8,
}

impl Bdf {
    /// `00:device.function` in domain 0 (the guest's root bus).
    pub const fn root_bus(device: u8, function: u8) -> Self {
        Self {
            domain: 0,
            bus: 0,
            device,
            function,
        }
    }

    /// The same slot's function `function`.
    pub const fn with_function(self, function: u8) -> Self {
        Self { function, ..self }
    }

    /// Whether `other` is a function of the same device (domain, bus and slot).
    pub fn same_slot(&self, other: &Bdf) -> bool {
        (self.domain, self.bus, self.device) == (other.domain, other.bus, other.device)
    }
}

impl fmt::Display for Bdf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:04x}:{:02x}:{:02x}.{:x}",
            self.domain, self.bus, self.device, self.function
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not a PCI address; use DDDD:BB:DD.F (e.g. 0000:01:00.0), BB:DD.F, or a /sys/bus/pci/devices/... path")]
pub struct BadBdf(pub String);

impl FromStr for Bdf {
    type Err = BadBdf;

    /// `0000:01:00.0`, `01:00.0` (domain 0), or a sysfs path ending in a BDF.
    fn from_str(text: &str) -> Result<Self, BadBdf> {
        let bad = || BadBdf(text.to_owned());
        let name = if text.contains('/') {
            Path::new(text.trim_end_matches('/'))
                .file_name()
                .and_then(|n| n.to_str())
                .ok_or_else(bad)?
        } else {
            text
        };
        let (rest, function) = name.rsplit_once('.').ok_or_else(bad)?;
        let parts: Vec<&str> = rest.split(':').collect();
        let (domain, bus, device) = match parts.as_slice() {
            [d, b, s] => (*d, *b, *s),
            [b, s] => ("0", *b, *s),
            _ => return Err(bad()),
        };
        let hex = |s: &str, max: u32| {
            (!s.is_empty() && s.len() <= 4)
                .then(|| u32::from_str_radix(s, 16).ok())
                .flatten()
                .filter(|v| *v <= max)
                .ok_or_else(bad)
        };
        Ok(Bdf {
            domain: hex(domain, 0xffff)? as u16,
            bus: hex(bus, 0xff)? as u8,
            device: hex(device, u32::from(MAX_DEVICES) - 1)? as u8,
            function: hex(function, u32::from(MAX_FUNCTIONS) - 1)? as u8,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_forms() {
        let want = Bdf {
            domain: 0,
            bus: 1,
            device: 0,
            function: 1,
        };
        for text in [
            "0000:01:00.1",
            "01:00.1",
            "/sys/bus/pci/devices/0000:01:00.1",
            "/sys/bus/pci/devices/0000:01:00.1/",
            "/sys/devices/pci0000:00/0000:00:01.0/0000:01:00.1",
        ] {
            assert_eq!(text.parse::<Bdf>().unwrap(), want, "{text}");
        }
        assert_eq!(want.to_string(), "0000:01:00.1");
        assert_eq!("10000:ff:1f.7".parse::<Bdf>().ok(), None);
        assert_eq!(
            "ffff:ff:1f.7".parse::<Bdf>().unwrap().to_string(),
            "ffff:ff:1f.7"
        );
    }

    #[test]
    fn rejected_forms() {
        for text in [
            "",
            "01:00",
            "01:20.0",
            "01:00.8",
            "zz:00.0",
            "1:2:3:4.0",
            "/sys/x",
            "gpu0",
        ] {
            assert!(text.parse::<Bdf>().is_err(), "{text}");
        }
        let msg = "gpu0".parse::<Bdf>().unwrap_err().to_string();
        assert!(msg.contains("0000:01:00.0"), "{msg}");
    }

    #[test]
    fn slots_and_functions() {
        let gpu = Bdf::root_bus(3, 0);
        assert_eq!(gpu.to_string(), "0000:00:03.0");
        assert!(gpu.same_slot(&gpu.with_function(1)));
        assert!(!gpu.same_slot(&Bdf::root_bus(4, 0)));
    }
}
