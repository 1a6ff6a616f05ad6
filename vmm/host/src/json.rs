//! Just enough JSON for `--json` output and the bind records: objects written field by field,
//! and flat objects of strings, numbers and nulls read back.

use std::collections::BTreeMap;
use std::fmt::Write;

/// A JSON string literal.
pub fn string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A JSON array of already-encoded values.
pub fn array<I: IntoIterator<Item = String>>(items: I) -> String {
    format!("[{}]", items.into_iter().collect::<Vec<_>>().join(","))
}

/// Builds `{"key":value,...}` in the order fields are added.
#[derive(Default)]
pub struct JsonObject {
    fields: Vec<String>,
}

impl JsonObject {
    pub fn new() -> Self {
        Self::default()
    }

    /// A field whose value is already JSON.
    pub fn raw(&mut self, key: &str, value: impl Into<String>) -> &mut Self {
        self.fields
            .push(format!("{}:{}", string(key), value.into()));
        self
    }

    pub fn str(&mut self, key: &str, value: &str) -> &mut Self {
        self.raw(key, string(value))
    }

    pub fn opt_str(&mut self, key: &str, value: Option<&str>) -> &mut Self {
        self.raw(key, value.map_or("null".into(), string))
    }

    pub fn num(&mut self, key: &str, value: impl Into<u64>) -> &mut Self {
        self.raw(key, value.into().to_string())
    }

    pub fn opt_num(&mut self, key: &str, value: Option<u64>) -> &mut Self {
        self.raw(key, value.map_or("null".into(), |v| v.to_string()))
    }

    pub fn bool(&mut self, key: &str, value: bool) -> &mut Self {
        self.raw(key, value.to_string())
    }

    pub fn finish(&self) -> String {
        format!("{{{}}}", self.fields.join(","))
    }
}

/// A value of a flat object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Flat {
    Str(String),
    Num(u64),
    Bool(bool),
    Null,
}

impl Flat {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Flat::Str(s) => Some(s),
            _ => None,
        }
    }
}

/// Parse `{"key": value, ...}` whose values are strings, unsigned numbers, booleans or null.
pub fn parse_flat_object(text: &str) -> Option<BTreeMap<String, Flat>> {
    let mut p = Parser {
        chars: text.trim().chars().collect(),
        pos: 0,
    };
    let mut map = BTreeMap::new();
    p.expect('{')?;
    if p.peek()? == '}' {
        p.pos += 1;
    } else {
        loop {
            let key = p.string()?;
            p.expect(':')?;
            let value = p.value()?;
            map.insert(key, value);
            match p.next()? {
                ',' => continue,
                '}' => break,
                _ => return None,
            }
        }
    }
    p.skip_ws();
    (p.pos == p.chars.len()).then_some(map)
}

struct Parser {
    chars: Vec<char>,
    pos: usize,
}

impl Parser {
    fn skip_ws(&mut self) {
        while self.chars.get(self.pos).is_some_and(|c| c.is_whitespace()) {
            self.pos += 1;
        }
    }

    fn peek(&mut self) -> Option<char> {
        self.skip_ws();
        self.chars.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += 1;
        Some(c)
    }

    fn expect(&mut self, want: char) -> Option<()> {
        (self.next()? == want).then_some(())
    }

    fn string(&mut self) -> Option<String> {
        self.expect('"')?;
        let mut out = String::new();
        loop {
            let c = *self.chars.get(self.pos)?;
            self.pos += 1;
            match c {
                '"' => return Some(out),
                '\\' => {
                    let e = *self.chars.get(self.pos)?;
                    self.pos += 1;
                    out.push(match e {
                        'n' => '\n',
                        'r' => '\r',
                        't' => '\t',
                        'u' => {
                            let hex: String =
                                self.chars.get(self.pos..self.pos + 4)?.iter().collect();
                            self.pos += 4;
                            char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?
                        }
                        other => other,
                    });
                }
                c => out.push(c),
            }
        }
    }

    fn word(&mut self) -> String {
        let start = self.pos;
        while self
            .chars
            .get(self.pos)
            .is_some_and(|c| c.is_ascii_alphanumeric())
        {
            self.pos += 1;
        }
        self.chars[start..self.pos].iter().collect()
    }

    fn value(&mut self) -> Option<Flat> {
        if self.peek()? == '"' {
            return self.string().map(Flat::Str);
        }
        match self.word().as_str() {
            "null" => Some(Flat::Null),
            "true" => Some(Flat::Bool(true)),
            "false" => Some(Flat::Bool(false)),
            n => n.parse().ok().map(Flat::Num),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut o = JsonObject::new();
        o.str("bdf", "0000:01:00.1")
            .opt_str("driver", Some("snd \"hda\"\n"))
            .opt_str("driver_override", None)
            .num("group", 12u32)
            .bool("moved", true);
        let text = o.finish();
        let map = parse_flat_object(&text).unwrap();
        assert_eq!(map["bdf"].as_str(), Some("0000:01:00.1"));
        assert_eq!(map["driver"].as_str(), Some("snd \"hda\"\n"));
        assert_eq!(map["driver_override"], Flat::Null);
        assert_eq!(map["group"], Flat::Num(12));
        assert_eq!(map["moved"], Flat::Bool(true));
        assert_eq!(string("\u{1}"), "\"\\u0001\"");
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "{",
            "{\"a\"}",
            "{\"a\":}",
            "{\"a\":1,}",
            "{\"a\":1} x",
            "[1]",
        ] {
            assert!(parse_flat_object(bad).is_none(), "{bad}");
        }
        assert!(parse_flat_object(" { } ").unwrap().is_empty());
    }
}
