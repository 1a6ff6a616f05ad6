//! What `zhitong bind` changed, so `zhitong unbind` can put it back: one small JSON file per
//! moved device under /run/zhitong/bind (tmpfs: a reboot forgets it together with the
//! bindings themselves).

use std::fs;
use std::io;
use std::path::PathBuf;

use super::json::{parse_flat_object, Flat, JsonObject};
use devices::pci::Bdf;

/// One device moved to vfio-pci: the driver and driver_override it had before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindRecord {
    pub bdf: Bdf,
    /// The driver it was bound to (None: it had none).
    pub driver: Option<String>,
    /// Its driver_override before (None: unset).
    pub driver_override: Option<String>,
    pub group: u32,
    /// The device `zhitong bind` was asked for (the whole group moves with it).
    pub requested: Bdf,
}

impl BindRecord {
    pub fn to_json(&self) -> String {
        let mut o = JsonObject::new();
        o.str("bdf", &self.bdf.to_string())
            .opt_str("driver", self.driver.as_deref())
            .opt_str("driver_override", self.driver_override.as_deref())
            .num("iommu_group", self.group)
            .str("requested", &self.requested.to_string());
        o.finish()
    }

    pub fn from_json(text: &str) -> Option<Self> {
        let map = parse_flat_object(text)?;
        let opt = |key: &str| match map.get(key)? {
            Flat::Str(s) => Some(Some(s.clone())),
            Flat::Null => Some(None),
            _ => None,
        };
        let bdf = |key: &str| map.get(key)?.as_str()?.parse::<Bdf>().ok();
        Some(Self {
            bdf: bdf("bdf")?,
            driver: opt("driver")?,
            driver_override: opt("driver_override")?,
            group: match map.get("iommu_group")? {
                Flat::Num(n) => u32::try_from(*n).ok()?,
                _ => return None,
            },
            requested: bdf("requested")?,
        })
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
}
