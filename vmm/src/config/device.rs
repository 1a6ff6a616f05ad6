//! One passed-through device and its options, in one syntax for flags, config files, matrix
//! files and the API: `BDF|PATH[,key=value...]`, e.g. `0000:41:00.0,p2p=on,clique=1`.

use std::fmt;
use std::str::FromStr;

use devices::pci::{BadBdf, Bdf};

/// Clique ids NVIDIA's GPUDirect capability can carry (4 bits).
pub const MAX_CLIQUE: u8 = 15;

/// A host PCI function to pass through with VFIO, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceConfig {
    pub bdf: Bdf,
    /// Peer-to-peer: the device's mmappable BAR parts are DMA-mapped in the IOMMU at their
    /// guest addresses (and follow the guest's moves), so other passed-through devices
    /// reach them by DMA (GPUDirect between GPUs).
    pub p2p: bool,
    /// NVIDIA GPUDirect clique id (0-15): the device gets the vendor capability NVIDIA's
    /// driver reads to allow P2P between GPUs of one clique in a VM. Needs `p2p`.
    pub clique: Option<u8>,
}

impl From<Bdf> for DeviceConfig {
    fn from(bdf: Bdf) -> Self {
        Self {
            bdf,
            p2p: false,
            clique: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceError {
    #[error(transparent)]
    Bdf(#[from] BadBdf),
    #[error(
        "device option '{0}' is unknown; the options are p2p=on|off and clique=0-{MAX_CLIQUE}"
    )]
    UnknownOption(String),
    #[error("device option '{0}' needs a value: {0}=...")]
    NoValue(String),
    #[error("the device's options have an empty entry (a stray ','?)")]
    EmptyOption,
    #[error("device option {key}={value} is not valid; want {key}={want}")]
    BadValue {
        key: &'static str,
        value: String,
        want: String,
    },
    #[error("device option '{0}' is given twice")]
    Repeated(&'static str),
    #[error("device option clique={0} needs p2p=on (a clique tells the driver that peer-to-peer DMA works); add p2p=on")]
    CliqueWithoutP2p(u8),
}

impl FromStr for DeviceConfig {
    type Err = DeviceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parts = s.split(',');
        let bdf: Bdf = parts.next().unwrap_or_default().parse()?;
        let (mut p2p, mut clique) = (None, None);
        for part in parts {
            if part.is_empty() {
                return Err(DeviceError::EmptyOption);
            }
            let (key, value) = part
                .split_once('=')
                .ok_or_else(|| DeviceError::NoValue(part.to_string()))?;
            match key {
                "p2p" => set(&mut p2p, "p2p", parse_switch(value)?)?,
                "clique" => set(&mut clique, "clique", parse_clique(value)?)?,
                _ => return Err(DeviceError::UnknownOption(key.to_string())),
            }
        }
        let config = Self {
            bdf,
            p2p: p2p.unwrap_or(false),
            clique,
        };
        config.validate()?;
        Ok(config)
    }
}

impl DeviceConfig {
    /// The checks between options (a config built in code skips the parser).
    pub fn validate(&self) -> Result<(), DeviceError> {
        match self.clique {
            Some(c) if c > MAX_CLIQUE => Err(DeviceError::BadValue {
                key: "clique",
                value: c.to_string(),
                want: format!("0-{MAX_CLIQUE}"),
            }),
            Some(c) if !self.p2p => Err(DeviceError::CliqueWithoutP2p(c)),
            _ => Ok(()),
        }
    }
}

fn set<T>(slot: &mut Option<T>, key: &'static str, value: T) -> Result<(), DeviceError> {
    if slot.replace(value).is_some() {
        return Err(DeviceError::Repeated(key));
    }
    Ok(())
}

fn parse_switch(value: &str) -> Result<bool, DeviceError> {
    match value {
        "on" | "true" | "yes" => Ok(true),
        "off" | "false" | "no" => Ok(false),
        _ => Err(DeviceError::BadValue {
            key: "p2p",
            value: value.to_string(),
            want: "on|off".into(),
        }),
    }
}

fn parse_clique(value: &str) -> Result<u8, DeviceError> {
    value
        .parse::<u8>()
        .ok()
        .filter(|c| *c <= MAX_CLIQUE)
        .ok_or_else(|| DeviceError::BadValue {
            key: "clique",
            value: value.to_string(),
            want: format!("0-{MAX_CLIQUE}"),
        })
}

/// The canonical form: the BDF, then the options that differ from the defaults.
impl fmt::Display for DeviceConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.bdf)?;
        if self.p2p {
            write!(f, ",p2p=on")?;
        }
        if let Some(c) = self.clique {
            write!(f, ",clique={c}")?;
        }
        Ok(())
    }
}

serde_as_string!(DeviceConfig);

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<DeviceConfig, String> {
        s.parse().map_err(|e: DeviceError| e.to_string())
    }

    #[test]
    fn a_bdf_or_path_alone_has_no_options() {
        for s in [
            "0000:41:00.0",
            "41:00.0",
            "/sys/bus/pci/devices/0000:41:00.0",
        ] {
            let d = parse(s).unwrap();
            assert_eq!(d.to_string(), "0000:41:00.0");
            assert!(!d.p2p && d.clique.is_none());
        }
    }

    #[test]
    fn options_parse_and_print_back_canonical() {
        let d = parse("41:00.0,clique=7,p2p=on").unwrap();
        assert!(d.p2p);
        assert_eq!(d.clique, Some(7));
        assert_eq!(d.to_string(), "0000:41:00.0,p2p=on,clique=7");
        assert_eq!(parse(&d.to_string()).unwrap(), d);
        assert_eq!(
            parse("41:00.0,p2p=off").unwrap().to_string(),
            "0000:41:00.0"
        );
        assert_eq!(parse("41:00.0,p2p=on,clique=0").unwrap().clique, Some(0));
        assert_eq!(parse("41:00.0,p2p=on,clique=15").unwrap().clique, Some(15));
    }

    #[test]
    fn bad_options_name_the_cause_and_the_fix() {
        for (s, want) in [
            ("41:00.0,rombar=0", "device option 'rombar' is unknown; the options are p2p=on|off and clique=0-15"),
            ("41:00.0,p2p", "device option 'p2p' needs a value: p2p=..."),
            ("41:00.0,p2p=maybe", "device option p2p=maybe is not valid; want p2p=on|off"),
            ("41:00.0,p2p=on,clique=16", "device option clique=16 is not valid; want clique=0-15"),
            ("41:00.0,p2p=on,clique=-1", "device option clique=-1 is not valid; want clique=0-15"),
            ("41:00.0,p2p=on,p2p=off", "device option 'p2p' is given twice"),
            ("41:00.0,clique=3", "device option clique=3 needs p2p=on (a clique tells the driver that peer-to-peer DMA works); add p2p=on"),
            ("41:00.0,", "the device's options have an empty entry (a stray ','?)"),
        ] {
            assert_eq!(parse(s).unwrap_err(), want, "{s}");
        }
        assert!(parse("zz:00.0,p2p=on").is_err());
        let built = DeviceConfig {
            clique: Some(99),
            ..parse("41:00.0,p2p=on").unwrap()
        };
        assert!(built.validate().is_err());
    }

    #[test]
    fn serde_is_the_string_form() {
        let d = parse("41:00.0,p2p=on,clique=2").unwrap();
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(json, r#""0000:41:00.0,p2p=on,clique=2""#);
        assert_eq!(serde_json::from_str::<DeviceConfig>(&json).unwrap(), d);
        let err = serde_json::from_str::<DeviceConfig>(r#""41:00.0,x=1""#).unwrap_err();
        assert!(
            err.to_string().contains("device option 'x' is unknown"),
            "{err}"
        );
    }
}
