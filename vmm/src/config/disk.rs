//! One virtio block device and its options, in one syntax for flags, config files, matrix
//! files and the API: `path=FILE[,readonly=on][,serial=STR]`.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// The longest serial virtio-blk carries (its GET_ID answer is 20 bytes).
pub const MAX_SERIAL: usize = 20;

/// A raw image (a file or a block device) the guest sees as a virtio disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskConfig {
    pub path: PathBuf,
    /// The guest sees a read-only disk (VIRTIO_BLK_F_RO) and its writes are refused; the
    /// image is opened read-only.
    pub readonly: bool,
    /// What the guest reads as the disk's serial (/sys/block/vdX/serial).
    pub serial: Option<String>,
}

impl DiskConfig {
    /// A writable disk without a serial.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            readonly: false,
            serial: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiskError {
    #[error(
        "disk option '{0}' is unknown; the options are path=FILE, readonly=on|off and serial=STR"
    )]
    UnknownOption(String),
    #[error("disk option '{0}' needs a value: {0}=...")]
    NoValue(String),
    #[error("disk '{0}' has no key; write path={0}")]
    BarePath(String),
    #[error("the disk's options have an empty entry (a stray ','?)")]
    EmptyOption,
    #[error("a disk needs its image: path=FILE")]
    NoPath,
    #[error("disk option readonly={0} is not valid; want readonly=on|off")]
    BadReadonly(String),
    #[error("disk option '{0}' is given twice")]
    Repeated(&'static str),
    #[error("disk serial '{0}' is longer than {MAX_SERIAL} bytes; shorten it")]
    SerialTooLong(String),
    #[error("disk serial '{0}' has a character outside printable ASCII; use letters, digits and punctuation")]
    SerialNotPrintable(String),
}

impl FromStr for DiskConfig {
    type Err = DiskError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (mut path, mut readonly, mut serial) = (None, None, None);
        for (i, part) in s.split(',').enumerate() {
            if part.is_empty() {
                return Err(DiskError::EmptyOption);
            }
            let Some((key, value)) = part.split_once('=') else {
                return Err(match i {
                    0 => DiskError::BarePath(part.to_string()),
                    _ => DiskError::NoValue(part.to_string()),
                });
            };
            match key {
                "path" => set(&mut path, "path", PathBuf::from(value))?,
                "readonly" => set(&mut readonly, "readonly", parse_switch(value)?)?,
                "serial" => set(&mut serial, "serial", value.to_string())?,
                _ => return Err(DiskError::UnknownOption(key.to_string())),
            }
        }
        let config = Self {
            path: path.ok_or(DiskError::NoPath)?,
            readonly: readonly.unwrap_or(false),
            serial,
        };
        config.validate()?;
        Ok(config)
    }
}

impl DiskConfig {
    /// The checks a config built in code needs too (no I/O: the image is opened later).
    pub fn validate(&self) -> Result<(), DiskError> {
        if self.path.as_os_str().is_empty() {
            return Err(DiskError::NoPath);
        }
        if let Some(serial) = &self.serial {
            if serial.len() > MAX_SERIAL {
                return Err(DiskError::SerialTooLong(serial.clone()));
            }
            if !serial.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
                return Err(DiskError::SerialNotPrintable(
                    serial.escape_debug().to_string(),
                ));
            }
        }
        Ok(())
    }
}

fn set<T>(slot: &mut Option<T>, key: &'static str, value: T) -> Result<(), DiskError> {
    if slot.replace(value).is_some() {
        return Err(DiskError::Repeated(key));
    }
    Ok(())
}

fn parse_switch(value: &str) -> Result<bool, DiskError> {
    match value {
        "on" | "true" | "yes" => Ok(true),
        "off" | "false" | "no" => Ok(false),
        _ => Err(DiskError::BadReadonly(value.to_string())),
    }
}

/// The canonical form: the path, then the options that differ from the defaults.
impl fmt::Display for DiskConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "path={}", self.path.display())?;
        if self.readonly {
            write!(f, ",readonly=on")?;
        }
        if let Some(serial) = &self.serial {
            write!(f, ",serial={serial}")?;
        }
        Ok(())
    }
}

serde_as_string!(DiskConfig);

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<DiskConfig, String> {
        s.parse().map_err(|e: DiskError| e.to_string())
    }

    #[test]
    fn options_parse_and_print_back_canonical() {
        let d = parse("serial=ZT-1,path=/img/root.ext4,readonly=on").unwrap();
        assert_eq!(d.path, PathBuf::from("/img/root.ext4"));
        assert!(d.readonly);
        assert_eq!(d.serial.as_deref(), Some("ZT-1"));
        assert_eq!(d.to_string(), "path=/img/root.ext4,readonly=on,serial=ZT-1");
        assert_eq!(parse(&d.to_string()).unwrap(), d);
        let plain = parse("path=/dev/sdb,readonly=off").unwrap();
        assert_eq!(plain, DiskConfig::new("/dev/sdb"));
        assert_eq!(plain.to_string(), "path=/dev/sdb");
        // Exactly 20 bytes is the most GET_ID carries.
        assert!(parse("path=/a,serial=01234567890123456789").is_ok());
    }

    #[test]
    fn bad_options_name_the_cause_and_the_fix() {
        for (s, want) in [
            ("path=/a,cache=none", "disk option 'cache' is unknown; the options are path=FILE, readonly=on|off and serial=STR"),
            ("/a", "disk '/a' has no key; write path=/a"),
            ("path=/a,readonly", "disk option 'readonly' needs a value: readonly=..."),
            ("readonly=on", "a disk needs its image: path=FILE"),
            ("path=", "a disk needs its image: path=FILE"),
            ("path=/a,readonly=maybe", "disk option readonly=maybe is not valid; want readonly=on|off"),
            ("path=/a,path=/b", "disk option 'path' is given twice"),
            ("path=/a,", "the disk's options have an empty entry (a stray ','?)"),
            ("path=/a,serial=012345678901234567890", "disk serial '012345678901234567890' is longer than 20 bytes; shorten it"),
            ("path=/a,serial=a\tb", "disk serial 'a\\tb' has a character outside printable ASCII; use letters, digits and punctuation"),
        ] {
            assert_eq!(parse(s).unwrap_err(), want, "{s}");
        }
    }

    #[test]
    fn serde_is_the_string_form() {
        let d = parse("path=/img/a.raw,serial=x").unwrap();
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(json, r#""path=/img/a.raw,serial=x""#);
        assert_eq!(serde_json::from_str::<DiskConfig>(&json).unwrap(), d);
        let err = serde_json::from_str::<DiskConfig>(r#""path=/a,x=1""#).unwrap_err();
        assert!(
            err.to_string().contains("disk option 'x' is unknown"),
            "{err}"
        );
    }
}
