//! One virtio network device and its options, in one syntax for flags, config files, matrix
//! files and the API: `tap=NAME[,mac=MAC]`.

use std::fmt;
use std::str::FromStr;

/// The longest interface name Linux takes (IFNAMSIZ less the NUL).
pub const MAX_TAP_NAME: usize = 15;

/// A tap device the guest's network interface is connected to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetConfig {
    /// An existing tap, or the name of one to create (that needs CAP_NET_ADMIN).
    pub tap: String,
    /// The guest's MAC; `None`: one derived from the tap's name and the interface's place,
    /// the same on every run.
    pub mac: Option<Mac>,
}

/// An Ethernet address, unicast.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mac(pub [u8; 6]);

impl NetConfig {
    pub fn new(tap: impl Into<String>) -> Self {
        Self {
            tap: tap.into(),
            mac: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetError {
    #[error("network option '{0}' is unknown; the options are tap=NAME and mac=MAC")]
    UnknownOption(String),
    #[error("network option '{0}' needs a value: {0}=...")]
    NoValue(String),
    #[error("network '{0}' has no key; write tap={0}")]
    BareName(String),
    #[error("the network's options have an empty entry (a stray ','?)")]
    EmptyOption,
    #[error("a network needs its tap: tap=NAME")]
    NoTap,
    #[error("network option '{0}' is given twice")]
    Repeated(&'static str),
    #[error("tap name '{0}' is not an interface name: 1-{MAX_TAP_NAME} characters, no '/', ':', spaces or '.'/'..'; choose another")]
    BadTapName(String),
    #[error("MAC '{0}' is not six hex bytes separated by ':' (e.g. 52:54:00:12:34:56)")]
    BadMac(String),
    #[error("MAC {0} is a multicast address (the first byte is odd); give a unicast one, e.g. 52:54:00:12:34:56")]
    MulticastMac(String),
    #[error("MAC {0} is all zeros; give a real one, e.g. 52:54:00:12:34:56")]
    ZeroMac(String),
}

impl FromStr for Mac {
    type Err = NetError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || NetError::BadMac(s.to_string());
        let mut mac = [0u8; 6];
        let mut parts = s.split(':');
        for byte in &mut mac {
            let part = parts.next().ok_or_else(bad)?;
            if part.len() != 2 {
                return Err(bad());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        let mac = Mac(mac);
        mac.validate()?;
        Ok(mac)
    }
}

impl Mac {
    /// A guest address must be unicast and not zero.
    pub fn validate(&self) -> Result<(), NetError> {
        if self.0[0] & 1 != 0 {
            return Err(NetError::MulticastMac(self.to_string()));
        }
        if self.0 == [0; 6] {
            return Err(NetError::ZeroMac(self.to_string()));
        }
        Ok(())
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl FromStr for NetConfig {
    type Err = NetError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (mut tap, mut mac) = (None, None);
        for (i, part) in s.split(',').enumerate() {
            if part.is_empty() {
                return Err(NetError::EmptyOption);
            }
            let Some((key, value)) = part.split_once('=') else {
                return Err(match i {
                    0 => NetError::BareName(part.to_string()),
                    _ => NetError::NoValue(part.to_string()),
                });
            };
            match key {
                "tap" => set(&mut tap, "tap", value.to_string())?,
                "mac" => set(&mut mac, "mac", value.parse::<Mac>()?)?,
                _ => return Err(NetError::UnknownOption(key.to_string())),
            }
        }
        let config = Self {
            tap: tap.ok_or(NetError::NoTap)?,
            mac,
        };
        config.validate()?;
        Ok(config)
    }
}

impl NetConfig {
    /// The checks a config built in code needs too (no I/O: the tap is opened later).
    pub fn validate(&self) -> Result<(), NetError> {
        let name = &self.tap;
        let bad = name.is_empty()
            || name.len() > MAX_TAP_NAME
            || name == "."
            || name == ".."
            || name
                .chars()
                .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control());
        if bad {
            return Err(NetError::BadTapName(name.escape_debug().to_string()));
        }
        if let Some(mac) = &self.mac {
            mac.validate()?;
        }
        Ok(())
    }
}

fn set<T>(slot: &mut Option<T>, key: &'static str, value: T) -> Result<(), NetError> {
    if slot.replace(value).is_some() {
        return Err(NetError::Repeated(key));
    }
    Ok(())
}

/// The canonical form: the tap, then the MAC when one was given.
impl fmt::Display for NetConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tap={}", self.tap)?;
        if let Some(mac) = &self.mac {
            write!(f, ",mac={mac}")?;
        }
        Ok(())
    }
}

serde_as_string!(NetConfig);

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<NetConfig, String> {
        s.parse().map_err(|e: NetError| e.to_string())
    }

    #[test]
    fn options_parse_and_print_back_canonical() {
        let n = parse("mac=52:54:00:AB:cd:0F,tap=zt0").unwrap();
        assert_eq!(n.tap, "zt0");
        assert_eq!(n.mac, Some(Mac([0x52, 0x54, 0, 0xab, 0xcd, 0x0f])));
        assert_eq!(n.to_string(), "tap=zt0,mac=52:54:00:ab:cd:0f");
        assert_eq!(parse(&n.to_string()).unwrap(), n);
        assert_eq!(
            parse("tap=tap-gpu-vm17").unwrap(),
            NetConfig::new("tap-gpu-vm17")
        );
    }

    #[test]
    fn bad_options_name_the_cause_and_the_fix() {
        for (s, want) in [
            ("zt0", "network 'zt0' has no key; write tap=zt0"),
            ("tap=zt0,queues=4", "network option 'queues' is unknown; the options are tap=NAME and mac=MAC"),
            ("tap=zt0,mac", "network option 'mac' needs a value: mac=..."),
            ("mac=52:54:00:12:34:56", "a network needs its tap: tap=NAME"),
            ("tap=a,tap=b", "network option 'tap' is given twice"),
            ("tap=zt0,", "the network's options have an empty entry (a stray ','?)"),
            ("tap=", "tap name '' is not an interface name: 1-15 characters, no '/', ':', spaces or '.'/'..'; choose another"),
            ("tap=a-very-long-tap-name", "tap name 'a-very-long-tap-name' is not an interface name"),
            ("tap=a/b", "is not an interface name"),
            ("tap=..", "is not an interface name"),
            ("tap=zt0,mac=52:54:00:12:34", "MAC '52:54:00:12:34' is not six hex bytes separated by ':' (e.g. 52:54:00:12:34:56)"),
            ("tap=zt0,mac=52:54:00:12:34:56:78", "is not six hex bytes"),
            ("tap=zt0,mac=52-54-00-12-34-56", "is not six hex bytes"),
            ("tap=zt0,mac=5:54:00:12:34:56", "is not six hex bytes"),
            ("tap=zt0,mac=zz:54:00:12:34:56", "is not six hex bytes"),
            ("tap=zt0,mac=01:00:5e:00:00:01", "MAC 01:00:5e:00:00:01 is a multicast address (the first byte is odd); give a unicast one"),
            ("tap=zt0,mac=00:00:00:00:00:00", "MAC 00:00:00:00:00:00 is all zeros"),
        ] {
            let got = parse(s).unwrap_err();
            assert!(got.contains(want), "{s}: {got}");
        }
    }

    #[test]
    fn serde_is_the_string_form() {
        let n = parse("tap=zt0,mac=02:00:00:00:00:01").unwrap();
        let json = serde_json::to_string(&n).unwrap();
        assert_eq!(json, r#""tap=zt0,mac=02:00:00:00:00:01""#);
        assert_eq!(serde_json::from_str::<NetConfig>(&json).unwrap(), n);
        let err = serde_json::from_str::<NetConfig>(r#""tap=zt0,x=1""#).unwrap_err();
        assert!(
            err.to_string().contains("network option 'x' is unknown"),
            "{err}"
        );
    }
}
