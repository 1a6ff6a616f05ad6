//! PCI addresses in JSON, as their usual text ("0000:01:00.0"): `devices` has no serde, so
//! the host doctor's records and reports say how, field by field (`#[serde(with = ...)]`).

use devices::pci::Bdf;
use serde::{Deserialize, Deserializer, Serializer};

pub fn serialize<S: Serializer>(bdf: &Bdf, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(bdf)
}

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Bdf, D::Error> {
    // Owned: a borrowed &str fails on strings with escapes.
    String::deserialize(d)?
        .parse()
        .map_err(serde::de::Error::custom)
}

/// An optional address: its text or null.
pub fn option<S: Serializer>(bdf: &Option<Bdf>, s: S) -> Result<S::Ok, S::Error> {
    match bdf {
        Some(bdf) => s.collect_str(bdf),
        None => s.serialize_none(),
    }
}

/// A list of addresses: an array of their texts.
pub fn list<S: Serializer>(bdfs: &[Bdf], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(bdfs.iter().map(Bdf::to_string))
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct One {
        #[serde(with = "super")]
        bdf: Bdf,
    }

    #[test]
    fn text_both_ways() {
        let one = One {
            bdf: "01:00.1".parse().unwrap(),
        };
        let text = serde_json::to_string(&one).unwrap();
        assert_eq!(text, r#"{"bdf":"0000:01:00.1"}"#);
        assert_eq!(serde_json::from_str::<One>(&text).unwrap(), one);
        assert!(serde_json::from_str::<One>(r#"{"bdf":"nope"}"#).is_err());
        assert!(serde_json::from_str::<One>(r#"{"bdf":1}"#).is_err());
    }
}
