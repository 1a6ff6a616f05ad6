//! The guest's vsock device, in one syntax for flags, config files, matrix files and the
//! API: `cid=N,socket=PATH`. The host side is a Unix socket (the convention Firecracker and
//! Cloud Hypervisor use): a host process connects to PATH and writes `CONNECT <port>\n` to
//! reach the guest's port; the guest's connections to the host's port P reach `PATH_P`.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// CIDs 0-2 are the hypervisor's, the loopback's and the host's; u32::MAX is "any".
pub const MIN_GUEST_CID: u64 = 3;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VsockConfig {
    /// The guest's context id.
    pub cid: u64,
    /// The Unix socket zhitong listens on for host connections to the guest.
    pub socket: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VsockError {
    #[error("vsock option '{0}' is unknown; the options are cid=N and socket=PATH")]
    UnknownOption(String),
    #[error("vsock option '{0}' needs a value: {0}=...")]
    NoValue(String),
    #[error("the vsock's options have an empty entry (a stray ','?)")]
    EmptyOption,
    #[error("vsock option '{0}' is given twice")]
    Repeated(&'static str),
    #[error("a vsock needs the guest's cid=N (3 or more)")]
    NoCid,
    #[error("a vsock needs its host socket: socket=PATH")]
    NoSocket,
    #[error("vsock cid={0} is not a guest's; want 3 to 4294967294 (0-2 are the hypervisor, the loopback and the host)")]
    BadCid(String),
}

impl FromStr for VsockConfig {
    type Err = VsockError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (mut cid, mut socket) = (None, None);
        for part in s.split(',') {
            if part.is_empty() {
                return Err(VsockError::EmptyOption);
            }
            let (key, value) = part
                .split_once('=')
                .ok_or_else(|| VsockError::NoValue(part.to_string()))?;
            match key {
                "cid" => {
                    let n = value
                        .parse::<u64>()
                        .map_err(|_| VsockError::BadCid(value.to_string()))?;
                    set(&mut cid, "cid", n)?
                }
                "socket" => set(&mut socket, "socket", PathBuf::from(value))?,
                _ => return Err(VsockError::UnknownOption(key.to_string())),
            }
        }
        let config = Self {
            cid: cid.ok_or(VsockError::NoCid)?,
            socket: socket.ok_or(VsockError::NoSocket)?,
        };
        config.validate()?;
        Ok(config)
    }
}

impl VsockConfig {
    /// The checks a config built in code needs too (no I/O: the socket is bound later).
    pub fn validate(&self) -> Result<(), VsockError> {
        if self.cid < MIN_GUEST_CID || self.cid >= u64::from(u32::MAX) {
            return Err(VsockError::BadCid(self.cid.to_string()));
        }
        if self.socket.as_os_str().is_empty() {
            return Err(VsockError::NoSocket);
        }
        Ok(())
    }
}

fn set<T>(slot: &mut Option<T>, key: &'static str, value: T) -> Result<(), VsockError> {
    if slot.replace(value).is_some() {
        return Err(VsockError::Repeated(key));
    }
    Ok(())
}

impl fmt::Display for VsockConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cid={},socket={}", self.cid, self.socket.display())
    }
}

serde_as_string!(VsockConfig);

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<VsockConfig, String> {
        s.parse().map_err(|e: VsockError| e.to_string())
    }

    #[test]
    fn options_parse_and_print_back() {
        let v = parse("socket=/run/vm0.vsock,cid=3").unwrap();
        assert_eq!((v.cid, v.socket.to_str()), (3, Some("/run/vm0.vsock")));
        assert_eq!(v.to_string(), "cid=3,socket=/run/vm0.vsock");
        assert_eq!(parse(&v.to_string()).unwrap(), v);
        assert_eq!(parse("cid=4294967294,socket=s").unwrap().cid, 4294967294);
        let json = serde_json::to_string(&v).unwrap();
        assert_eq!(json, r#""cid=3,socket=/run/vm0.vsock""#);
        assert_eq!(serde_json::from_str::<VsockConfig>(&json).unwrap(), v);
    }

    #[test]
    fn bad_options_name_the_cause_and_the_fix() {
        for (s, want) in [
            (
                "cid=2,socket=/s",
                "vsock cid=2 is not a guest's; want 3 to 4294967294",
            ),
            ("cid=0,socket=/s", "vsock cid=0 is not a guest's"),
            (
                "cid=4294967295,socket=/s",
                "vsock cid=4294967295 is not a guest's",
            ),
            ("cid=-1,socket=/s", "vsock cid=-1 is not a guest's"),
            ("cid=three,socket=/s", "vsock cid=three is not a guest's"),
            ("socket=/s", "a vsock needs the guest's cid=N (3 or more)"),
            ("cid=3", "a vsock needs its host socket: socket=PATH"),
            (
                "cid=3,socket=",
                "a vsock needs its host socket: socket=PATH",
            ),
            (
                "cid=3,socket=/s,port=1",
                "vsock option 'port' is unknown; the options are cid=N and socket=PATH",
            ),
            ("cid=3,cid=4,socket=/s", "vsock option 'cid' is given twice"),
            (
                "cid=3,,socket=/s",
                "the vsock's options have an empty entry (a stray ','?)",
            ),
            ("cid", "vsock option 'cid' needs a value: cid=..."),
        ] {
            let got = parse(s).unwrap_err();
            assert!(got.starts_with(want), "{s}: {got}");
        }
    }
}
