//! Screendumps: L2 prints "L2: screendump=`<label>`[,\<L0 display id\>]" and the
//! lab saves what that L0 display shows to `<out_dir>`/`<case>`-`<label>`.ppm
//! (QEMU's binary PPM, P6), which tests compare pixel by pixel.

use std::path::{Path, PathBuf};

use crate::qmp::Qmp;
use crate::{Error, Result};

/// An RGB image.
#[derive(Clone, Debug)]
pub struct Ppm {
    pub width: usize,
    pub height: usize,
    /// RGB triples, row by row
    pub rgb: Vec<u8>,
}

impl Ppm {
    pub fn load(path: &Path) -> Result<Ppm> {
        let data = std::fs::read(path)
            .map_err(|e| Error::new(format!("screendump {}: {e}", path.display())))?;
        Ppm::parse(&data).map_err(|e| Error::new(format!("{}: {e}", path.display())))
    }

    /// "P6 `<width>` `<height>` `<maxval>`" (whitespace separated) then width*height RGB triples.
    pub fn parse(data: &[u8]) -> std::result::Result<Ppm, String> {
        let mut fields = Vec::new();
        let mut at = 0;
        while fields.len() < 4 {
            while at < data.len() && data[at].is_ascii_whitespace() {
                at += 1;
            }
            let start = at;
            while at < data.len() && !data[at].is_ascii_whitespace() {
                at += 1;
            }
            if start == at {
                return Err("truncated PPM header".into());
            }
            fields.push(String::from_utf8_lossy(&data[start..at]).into_owned());
        }
        at += 1; // the single whitespace byte after maxval
        let num = |i: usize| {
            fields[i]
                .parse::<usize>()
                .map_err(|_| format!("bad PPM header {fields:?}"))
        };
        if fields[0] != "P6" || num(3)? != 255 {
            return Err(format!("not an 8-bit P6 PPM: {fields:?}"));
        }
        let (width, height) = (num(1)?, num(2)?);
        let rgb = data
            .get(at..at + width * height * 3)
            .ok_or_else(|| format!("PPM {width}x{height} truncated"))?
            .to_vec();
        Ok(Ppm { width, height, rgb })
    }

    pub fn pixel(&self, x: usize, y: usize) -> [u8; 3] {
        let i = (y * self.width + x) * 3;
        [self.rgb[i], self.rgb[i + 1], self.rgb[i + 2]]
    }

    /// The share (0.0-1.0) of pixels in rows `rows` that are exactly `rgb`.
    pub fn share_of(&self, rows: std::ops::Range<usize>, rgb: [u8; 3]) -> f64 {
        let rows = rows.start.min(self.height)..rows.end.min(self.height);
        let total = rows.len() * self.width;
        if total == 0 {
            return 0.0;
        }
        let hits = rows
            .flat_map(|y| (0..self.width).map(move |x| (x, y)))
            .filter(|&(x, y)| self.pixel(x, y) == rgb)
            .count();
        hits as f64 / total as f64
    }
}

/// Watches the console for screendump markers and takes them over QMP.
pub(crate) struct Screendumps {
    qmp: PathBuf,
    dir: PathBuf,
    case: String,
    /// What went wrong, for the console
    pub notes: Vec<String>,
}

pub(crate) const MARKER: &str = "L2: screendump=";

impl Screendumps {
    pub fn new(qmp: PathBuf, dir: PathBuf) -> Screendumps {
        Screendumps {
            qmp,
            dir,
            case: "none".into(),
            notes: Vec::new(),
        }
    }

    pub fn on_line(&mut self, line: &str) {
        if let Some(at) = line.find("L1: case ") {
            if let Some(name) = line[at + 9..].strip_suffix(" begin") {
                self.case = name.to_string();
            }
        }
        let Some(at) = line.find(MARKER) else { return };
        let spec = line[at + MARKER.len()..].trim();
        let (label, device) = match spec.split_once(',') {
            Some((l, d)) => (l, Some(d)),
            None => (spec, None),
        };
        let file = path(&self.dir, &self.case, label);
        let _ = std::fs::remove_file(&file);
        let result = Qmp::connect(&self.qmp).and_then(|mut q| q.screendump(&file, device));
        if let Err(e) = result {
            self.notes
                .push(format!("screendump {} for case {}: {e}", label, self.case));
        }
    }
}

/// Where the screendump `label` of case `case` is saved.
pub(crate) fn path(dir: &Path, case: &str, label: &str) -> PathBuf {
    dir.join(format!("{case}-{label}.ppm"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_p6() {
        let mut data = b"P6\n2 2\n255\n".to_vec();
        data.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 1, 2, 3]);
        let p = Ppm::parse(&data).unwrap();
        assert_eq!((p.width, p.height), (2, 2));
        assert_eq!(p.pixel(1, 0), [4, 5, 6]);
        assert_eq!(p.pixel(1, 1), [1, 2, 3]);
        assert_eq!(p.share_of(0..2, [1, 2, 3]), 0.5);
        assert_eq!(p.share_of(1..2, [1, 2, 3]), 0.5);
        assert!(Ppm::parse(b"P6\n2 2\n255\n\x01").is_err());
        assert!(Ppm::parse(b"P5\n1 1\n255\n\x01").is_err());
    }
}
