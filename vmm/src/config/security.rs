//! `security`: the seccomp mode and the user to become once the devices are open
//! (`zhitong run --seccomp on|off|log --user UID[:GID]`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub use crate::seccomp::SeccompMode;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecurityConfig {
    /// Each thread's seccomp filter: on (the default), off, or log.
    pub seccomp: SeccompMode,
    /// Drop to this user after opening /dev/kvm, the devices and the images, before the
    /// guest runs. Needs zhitong to start as root.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<User>,
}

impl SecurityConfig {
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// Whether the process can do what this asks; `euid` is the process's effective uid.
    pub fn validate(&self, euid: u32) -> Result<(), SecurityError> {
        match self.user {
            Some(user) if euid != 0 => Err(SecurityError::NotRoot { user, euid }),
            _ => Ok(()),
        }
    }
}

/// A numeric user and group, `UID[:GID]`; the group is the uid's number when not given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
}

impl FromStr for User {
    type Err = SecurityError;
    fn from_str(text: &str) -> Result<Self, SecurityError> {
        let bad = || SecurityError::BadUser(text.to_owned());
        let number = |s: &str| -> Result<u32, SecurityError> {
            // u32::from_str takes a leading '+'; a user id is digits only.
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            s.parse().map_err(|_| bad())
        };
        let (uid, gid) = match text.split_once(':') {
            Some((uid, gid)) => (number(uid)?, number(gid)?),
            None => {
                let uid = number(text)?;
                (uid, uid)
            }
        };
        if uid == 0 || gid == 0 {
            return Err(SecurityError::Root(text.to_owned()));
        }
        Ok(User { uid, gid })
    }
}

impl fmt::Display for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.uid, self.gid)
    }
}

serde_as_string!(User);

/// A bad `security` setting (bad usage: exit status 2). Worded with the setting's name as a
/// config file spells it; the CLI words it with its flag (`worded("--user")`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecurityError {
    /// Not numbers (a user name, `1000:x`, an empty part).
    BadUser(String),
    /// The uid or gid 0: root keeps every privilege.
    Root(String),
    /// Dropping privileges needs them: zhitong must start as root.
    NotRoot { user: User, euid: u32 },
}

impl SecurityError {
    /// The message, with `setting` naming the user setting ("security.user", "--user").
    pub fn worded(&self, setting: &str) -> String {
        match self {
            Self::BadUser(got) => format!(
                "{setting} {got:?} is not UID or UID:GID in numbers, e.g. 1000:1000; look a user's up with id -u NAME and id -g NAME"
            ),
            Self::Root(got) => format!(
                "{setting} {got} is root (uid or gid 0), which keeps every privilege; name an unprivileged user, e.g. 1000:1000"
            ),
            Self::NotRoot { user, euid } => format!(
                "{setting} {user} drops root's privileges, but zhitong runs as uid {euid}; start it as root (it opens the devices, then becomes {user}) or leave {setting} out"
            ),
        }
    }
}

impl fmt::Display for SecurityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.worded("security.user"))
    }
}

impl std::error::Error for SecurityError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_parse() {
        assert_eq!(
            "1000:1000".parse(),
            Ok(User {
                uid: 1000,
                gid: 1000
            })
        );
        assert_eq!(
            "1000:100".parse(),
            Ok(User {
                uid: 1000,
                gid: 100
            })
        );
        assert_eq!(
            "1234".parse(),
            Ok(User {
                uid: 1234,
                gid: 1234
            })
        );
        assert_eq!("4294967295".parse::<User>().unwrap().uid, u32::MAX);
        for bad in [
            "nobody",
            "1000:x",
            "",
            ":",
            "1000:",
            ":1000",
            "+5",
            "-1",
            "1:2:3",
            "4294967296",
        ] {
            assert_eq!(
                bad.parse::<User>(),
                Err(SecurityError::BadUser(bad.into())),
                "{bad:?}"
            );
        }
        for root in ["0", "0:1000", "1000:0"] {
            assert_eq!(root.parse::<User>(), Err(SecurityError::Root(root.into())));
        }
    }

    #[test]
    fn messages_name_the_cause_and_the_fix() {
        let msg = "nobody".parse::<User>().unwrap_err().worded("--user");
        assert!(
            msg.starts_with("--user \"nobody\" is not UID or UID:GID"),
            "{msg}"
        );
        assert!(msg.contains("id -u NAME"), "{msg}");
        let cfg = SecurityConfig {
            user: Some(User {
                uid: 1000,
                gid: 1000,
            }),
            ..Default::default()
        };
        assert_eq!(cfg.validate(0), Ok(()));
        let msg = cfg.validate(1000).unwrap_err().to_string();
        assert!(msg.starts_with("security.user 1000:1000 drops root's privileges, but zhitong runs as uid 1000; start it as root"), "{msg}");
        assert_eq!(SecurityConfig::default().validate(1000), Ok(()));
    }

    /// docs/config.md's example parses and validates, its `[security]` table and virtio
    /// devices included.
    #[test]
    fn the_documented_example_parses() {
        let doc = include_str!("../../../docs/config.md");
        let toml = doc
            .split("```toml\n")
            .nth(1)
            .unwrap()
            .split("```")
            .next()
            .unwrap();
        let cfg = crate::config::file::parse(toml, true).unwrap();
        assert_eq!(cfg.security.seccomp, SeccompMode::On);
        // The virtio devices' entries are there and valid too.
        assert_eq!((cfg.disks.len(), cfg.nets.len()), (2, 2));
        assert_eq!(cfg.vsock.as_ref().map(|v| v.cid), Some(3));
        cfg.validate(None).unwrap();
        assert_eq!(
            cfg.security.user,
            Some(User {
                uid: 1000,
                gid: 1000
            })
        );
    }

    #[test]
    fn serde_round_trip() {
        let cfg: SecurityConfig =
            serde_json::from_str(r#"{"seccomp": "log", "user": "1000:1000"}"#).unwrap();
        assert_eq!(cfg.seccomp, SeccompMode::Log);
        assert_eq!(
            cfg.user,
            Some(User {
                uid: 1000,
                gid: 1000
            })
        );
        let text = serde_json::to_string(&cfg).unwrap();
        assert_eq!(text, r#"{"seccomp":"log","user":"1000:1000"}"#);
        let err = serde_json::from_str::<SecurityConfig>(r#"{"user": "nobody"}"#).unwrap_err();
        assert!(
            err.to_string().contains("security.user \"nobody\""),
            "{err}"
        );
        let err = serde_json::from_str::<SecurityConfig>(r#"{"seccomp": "maybe"}"#).unwrap_err();
        assert!(err.to_string().contains("maybe"), "{err}");
    }
}
