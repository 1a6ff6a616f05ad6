//! What `zhitong bind` changed, so `zhitong unbind` can put it back: one small JSON file per
//! moved device under /run/zhitong/bind (tmpfs: a reboot forgets it together with the
//! bindings themselves).

use std::fs;
use std::io;
use std::path::PathBuf;

use devices::pci::Bdf;
use serde::{Deserialize, Serialize};

/// One device moved to vfio-pci: the driver and driver_override it had before. On disk:
/// `{"bdf":..,"driver":..,"driver_override":..,"iommu_group":..,"requested":..}` with null
/// for an absent driver or override.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindRecord {
    #[serde(with = "crate::serde_bdf")]
    pub bdf: Bdf,
    /// The driver it was bound to (None: it had none). Required when read, null or not: a
    /// record without it is damaged, not "no driver".
    #[serde(deserialize_with = "Option::deserialize")]
    pub driver: Option<String>,
    /// Its driver_override before (None: unset).
    #[serde(deserialize_with = "Option::deserialize")]
    pub driver_override: Option<String>,
    #[serde(rename = "iommu_group")]
    pub group: u32,
    /// The device `zhitong bind` was asked for (the whole group moves with it).
    #[serde(with = "crate::serde_bdf")]
    pub requested: Bdf,
}

impl BindRecord {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a bind record is plain data")
    }

    /// None when the text is not a record.
    pub fn from_json(text: &str) -> Option<Self> {
        serde_json::from_str(text).ok()
    }
}

/// The directory of records.
#[derive(Debug, Clone)]
pub struct BindState {
    dir: PathBuf,
}

impl BindState {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    pub fn path(&self, bdf: &Bdf) -> PathBuf {
        self.dir.join(format!("{bdf}.json"))
    }

    /// The record of `bdf`; Err when a file is there but unreadable or damaged.
    pub fn load(&self, bdf: &Bdf) -> Result<Option<BindRecord>, String> {
        let path = self.path(bdf);
        match fs::read_to_string(&path) {
            Ok(text) => BindRecord::from_json(&text)
                .filter(|r| r.bdf == *bdf)
                .map(Some)
                .ok_or_else(|| format!("{} is damaged", path.display())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("cannot read {}: {e}", path.display())),
        }
    }

    /// Write the record (to a temporary file first, so a crash leaves the old one or the new).
    pub fn save(&self, record: &BindRecord) -> io::Result<()> {
        fs::create_dir_all(&self.dir)?;
        let path = self.path(&record.bdf);
        let tmp = path.with_extension("json.tmp");
        fs::write(&tmp, record.to_json() + "\n")?;
        fs::rename(&tmp, &path)
    }

    pub fn remove(&self, bdf: &Bdf) -> io::Result<()> {
        match fs::remove_file(self.path(bdf)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let dir = std::env::temp_dir().join(format!("zhitong-state-{}", std::process::id()));
        let state = BindState::new(&dir);
        let bdf: Bdf = "0000:01:00.1".parse().unwrap();
        assert_eq!(state.load(&bdf), Ok(None));
        let rec = BindRecord {
            bdf,
            driver: Some("snd_hda_intel".into()),
            driver_override: None,
            group: 12,
            requested: "0000:01:00.0".parse().unwrap(),
        };
        state.save(&rec).unwrap();
        assert_eq!(state.load(&bdf), Ok(Some(rec)));
        fs::write(state.path(&bdf), "{\"bdf\":").unwrap();
        assert!(state.load(&bdf).unwrap_err().contains("damaged"));
        state.remove(&bdf).unwrap();
        state.remove(&bdf).unwrap();
        assert_eq!(state.load(&bdf), Ok(None));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn record_json_is_pinned() {
        let rec = BindRecord {
            bdf: "0000:01:00.1".parse().unwrap(),
            driver: Some("snd \"hda\"\n".into()),
            driver_override: None,
            group: 12,
            requested: "0000:01:00.0".parse().unwrap(),
        };
        let text = rec.to_json();
        assert_eq!(
            text,
            r#"{"bdf":"0000:01:00.1","driver":"snd \"hda\"\n","driver_override":null,"iommu_group":12,"requested":"0000:01:00.0"}"#
        );
        assert_eq!(BindRecord::from_json(&text), Some(rec.clone()));
        // Whitespace and key order do not matter when reading.
        let spaced = r#" { "requested": "01:00.0", "iommu_group": 12, "driver_override": null,
            "driver": "snd \"hda\"\n", "bdf": "0000:01:00.1" } "#;
        assert_eq!(BindRecord::from_json(spaced), Some(rec));
    }

    #[test]
    fn damaged_records_are_refused() {
        for bad in [
            "",
            "{",
            "[1]",
            r#"{"bdf":"0000:01:00.1"}"#,
            r#"{"bdf":"0000:01:00.1","driver_override":null,"iommu_group":1,"requested":"0000:01:00.0"}"#,
            r#"{"bdf":"zz","driver":null,"driver_override":null,"iommu_group":1,"requested":"0000:01:00.0"}"#,
            r#"{"bdf":"0000:01:00.1","driver":3,"driver_override":null,"iommu_group":1,"requested":"0000:01:00.0"}"#,
            r#"{"bdf":"0000:01:00.1","driver":null,"driver_override":null,"iommu_group":-1,"requested":"0000:01:00.0"}"#,
            r#"{"bdf":"0000:01:00.1","driver":null,"driver_override":null,"iommu_group":1,"requested":"0000:01:00.0"} x"#,
        ] {
            assert_eq!(BindRecord::from_json(bad), None, "{bad}");
        }
    }
}
