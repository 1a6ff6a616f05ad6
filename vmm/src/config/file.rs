//! VM configuration files (JSON or TOML, by extension) onto the same `VmConfig` the CLI
//! flags build. Sizes and durations are written as in the CLI ("4G", "60s"); a plain
//! number of bytes / seconds is accepted too.

use std::fs::OpenOptions;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serializer};

use arch::units::{format_size, parse_duration, parse_size, UnitError};

use super::{ConfigError, VmConfig};

/// The largest config (or `zhitong test` matrix) file read: far more than any needs, and a
/// bound on what a wrong path (a disk image, /dev/zero) makes zhitong read.
pub const MAX_FILE_SIZE: u64 = 1 << 20;

/// Read a config file: `.toml` is TOML, anything else JSON.
pub fn load(path: &Path) -> Result<VmConfig, ConfigError> {
    let text = read_text(path).map_err(|reason| ConfigError::FileUnreadable {
        path: path.display().to_string(),
        reason,
    })?;
    let is_toml = path.extension().is_some_and(|e| e == "toml");
    parse(&text, is_toml).map_err(|reason| ConfigError::File {
        path: path.display().to_string(),
        reason,
    })
}

/// The text of a regular file of at most [`MAX_FILE_SIZE`] bytes; the error is the reason,
/// worded to follow the file's name. Devices, FIFOs and directories are refused before any
/// read (a FIFO is opened without waiting for a writer).
pub fn read_text(path: &Path) -> Result<String, String> {
    // O_NONBLOCK only matters for a FIFO, whose open would otherwise block until some writer
    // opens it; reads from a regular file are unaffected.
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| e.to_string())?;
    let kind = file.metadata().map_err(|e| e.to_string())?.file_type();
    let what = if kind.is_dir() {
        "a directory"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_socket() {
        "a socket"
    } else {
        ""
    };
    if !what.is_empty() {
        return Err(format!("{what}, not a regular file"));
    }
    let mut bytes = Vec::new();
    // One byte past the limit tells a file at the limit from a larger one (sizes in
    // metadata can be wrong, e.g. in /proc).
    file.take(MAX_FILE_SIZE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > MAX_FILE_SIZE {
        return Err(format!(
            "over the {} size limit",
            format_size(MAX_FILE_SIZE)
        ));
    }
    String::from_utf8(bytes).map_err(|_| "not UTF-8 text".into())
}

/// Parse config text; the error is one line naming the offending field.
pub fn parse(text: &str, toml_format: bool) -> Result<VmConfig, String> {
    if toml_format {
        toml::from_str(text).map_err(|e| e.message().replace('\n', " "))
    } else {
        // serde_json's messages are one line, but quote the file's strings (field names
        // included) with their line breaks decoded: write them back as JSON escapes.
        serde_json::from_str(text)
            .map_err(|e| e.to_string().replace('\n', "\\n").replace('\r', "\\r"))
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum NumberOrText {
    Number(u64),
    Text(String),
}

pub mod size {
    use super::*;

    pub fn serialize<S: Serializer>(bytes: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_size(*bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        match NumberOrText::deserialize(d)? {
            // Zero bytes is no size, as "0" and "0B" are not (and "0B" must read back).
            NumberOrText::Number(0) => {
                Err(serde::de::Error::custom(UnitError::BadSize("0".into())))
            }
            NumberOrText::Number(n) => Ok(n),
            NumberOrText::Text(t) => parse_size(&t).map_err(serde::de::Error::custom),
        }
    }
}

pub mod duration {
    use super::*;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&format!("{}ms", d.as_millis())),
            None => s.serialize_str("0"),
        }
    }

    /// "0" (or 0) means no limit.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let d = match NumberOrText::deserialize(d)? {
            // Whole milliseconds, as text durations are, so that `serialize` can write any
            // duration this accepts.
            NumberOrText::Number(n) => n
                .checked_mul(1000)
                .map(Duration::from_millis)
                .ok_or_else(|| serde::de::Error::custom(UnitError::BadDuration(n.to_string())))?,
            NumberOrText::Text(t) => parse_duration(&t).map_err(serde::de::Error::custom)?,
        };
        Ok((!d.is_zero()).then_some(d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_with_every_field() {
        let cfg = parse(
            r#"{"kernel": {"path": "/k", "initramfs": "/i", "cmdline": "quiet"},
                "machine": {"vcpus": 2, "memory": "4G"},
                "devices": ["01:00.0"], "boot_timeout": "90s", "timeout": "5m"}"#,
            false,
        )
        .unwrap();
        assert_eq!(cfg.kernel.path, Path::new("/k"));
        assert_eq!(cfg.kernel.initramfs.as_deref(), Some(Path::new("/i")));
        assert_eq!((cfg.machine.vcpus, cfg.machine.memory_bytes), (2, 4 << 30));
        assert_eq!(cfg.devices[0].to_string(), "0000:01:00.0");
        assert_eq!(cfg.boot_timeout, Some(Duration::from_secs(90)));
        assert_eq!(cfg.timeout, Some(Duration::from_secs(300)));
    }

    #[test]
    fn toml_with_defaults() {
        let cfg = parse("[kernel]\npath = \"/k\"\n", true).unwrap();
        assert_eq!(cfg.machine.vcpus, 1);
        assert_eq!(cfg.machine.memory_bytes, 512 << 20);
        assert_eq!(cfg.boot_timeout, Some(Duration::from_secs(60)));
        assert!(cfg.devices.is_empty());
        assert_eq!(cfg.timeout, None);
        let cfg = parse(
            "boot_timeout = 0\n[kernel]\npath = \"/k\"\n[machine]\nmemory = 1073741824\n",
            true,
        )
        .unwrap();
        assert_eq!(cfg.boot_timeout, None);
        assert_eq!(cfg.machine.memory_bytes, 1 << 30);
    }

    #[test]
    fn round_trip_through_json() {
        let cfg = parse(
            r#"{"kernel": {"path": "/k"}, "machine": {"memory": "3G"}}"#,
            false,
        )
        .unwrap();
        let text = serde_json::to_string(&cfg).unwrap();
        assert!(text.contains("\"memory\":\"3G\""), "{text}");
        assert_eq!(parse(&text, false).unwrap(), cfg);
    }

    /// Found by the vm_config fuzz target: a number of seconds beyond u64 milliseconds
    /// parsed, but its "<ms>ms" serialization (GET /vm shows it) did not read back.
    #[test]
    fn durations_read_back_whatever_their_size() {
        let text = "boot_timeout = 18446744073709551615\n[kernel]\npath = \"/k\"\n";
        let err = parse(text, true).unwrap_err();
        assert!(
            err.contains("invalid duration '18446744073709551615'"),
            "{err}"
        );
        let most = u64::MAX / 1000;
        let cfg = parse(
            &format!("boot_timeout = {most}\n[kernel]\npath = \"/k\"\n"),
            true,
        )
        .unwrap();
        assert_eq!(cfg.boot_timeout, Some(Duration::from_secs(most)));
        let json = serde_json::to_string(&cfg).unwrap();
        assert_eq!(parse(&json, false).unwrap(), cfg);
    }

    /// Found by the vm_config fuzz target's long run: `memory = 0` (a number of bytes)
    /// parsed, but its "0B" serialization did not read back. Zero is no size.
    #[test]
    fn a_zero_size_is_refused_as_a_number_too() {
        for text in ["[machine]\nmemory = 0\n", "[machine]\nmemory = \"0B\"\n"] {
            let err = parse(&format!("[kernel]\npath = \"/k\"\n{text}"), true).unwrap_err();
            assert!(err.contains("invalid size '0"), "{err}");
            assert!(!err.contains('\n'), "{err}");
        }
        let cfg = parse("[kernel]\npath = \"/k\"\n[machine]\nmemory = 4096\n", true).unwrap();
        let json = serde_json::to_string(&cfg).unwrap();
        assert_eq!(parse(&json, false).unwrap(), cfg);
    }

    /// The vm_config fuzz target's one-line check: a JSON field name with a line break made
    /// the error two lines.
    #[test]
    fn json_errors_stay_one_line() {
        let err = parse(r#"{"kernel": {"path": "/k"}, "a\nb\rc": 1}"#, false).unwrap_err();
        assert!(err.contains(r"unknown field `a\nb\rc`"), "{err}");
        assert!(!err.contains(['\n', '\r']), "{err}");
    }

    #[test]
    fn only_small_regular_files_are_read() {
        let dir = std::env::temp_dir().join(format!("zhitong-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let big = dir.join("big.json");
        std::fs::write(&big, vec![b' '; MAX_FILE_SIZE as usize + 1]).unwrap();
        let limit = dir.join("limit.json");
        std::fs::write(&limit, vec![b' '; MAX_FILE_SIZE as usize]).unwrap();
        for (path, reason) in [
            (
                Path::new("/dev/zero"),
                "a character device, not a regular file",
            ),
            (&fifo, "a FIFO, not a regular file"),
            (&dir, "a directory, not a regular file"),
            (&big, "over the 1M size limit"),
        ] {
            assert_eq!(read_text(path).unwrap_err(), reason, "{}", path.display());
            let err = load(path).unwrap_err().to_string();
            assert!(
                err.contains(&*path.display().to_string()) && !err.contains('\n'),
                "{err}"
            );
        }
        assert_eq!(read_text(&limit).unwrap().len(), MAX_FILE_SIZE as usize);
        std::fs::write(&big, b"\xff").unwrap();
        assert_eq!(read_text(&big).unwrap_err(), "not UTF-8 text");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn mistakes_name_the_field() {
        for (text, toml, needle) in [
            (
                r#"{"kernel": {"path": "/k"}, "machine": {"memroy": "1G"}}"#,
                false,
                "memroy",
            ),
            (
                r#"{"kernel": {"path": "/k"}, "machine": {"memory": "lots"}}"#,
                false,
                "lots",
            ),
            (r#"{"machine": {}}"#, false, "kernel"),
            (
                "[kernel]\npath = \"/k\"\n[machine]\nvcpus = 0\n",
                true,
                "machine.vcpus must be between 1 and",
            ),
            (
                r#"{"kernel": {"path": "/k"}, "devices": ["gpu"]}"#,
                false,
                "gpu",
            ),
        ] {
            let err = parse(text, toml).unwrap_err();
            assert!(err.contains(needle), "{text}: {err}");
            assert!(!err.contains('\n'), "{err}");
        }
    }
}
