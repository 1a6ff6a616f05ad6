//! The JUnit XML report of `zhitong test`, in the shape CI systems read (Jenkins, GitLab,
//! GitHub actions): `<testsuites>` › `<testsuite>` › `<testcase>` with `<failure>`, `<error>`
//! or `<skipped>`, and the tail of the guest's console in `<system-out>`.

use std::fmt::Write;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Passed,
    /// The case ran but did not end as expected.
    Failed {
        message: String,
    },
    /// The VM could not run (a bad kernel, a device that would not open).
    Error {
        message: String,
    },
    /// Not run (`--fail-fast` after a failure).
    Skipped,
}

#[derive(Debug, Clone)]
pub struct TestCase {
    pub name: String,
    pub time: Duration,
    pub outcome: Outcome,
    /// The end of the guest's console.
    pub system_out: String,
}

/// The whole report: one suite named `suite` (the matrix file's name).
pub fn render(suite: &str, cases: &[TestCase], timestamp: &str) -> String {
    let count = |f: fn(&Outcome) -> bool| cases.iter().filter(|c| f(&c.outcome)).count();
    let failures = count(|o| matches!(o, Outcome::Failed { .. }));
    let errors = count(|o| matches!(o, Outcome::Error { .. }));
    let skipped = count(|o| matches!(o, Outcome::Skipped));
    let time: f64 = cases.iter().map(|c| c.time.as_secs_f64()).sum();
    let suite_attr = attr(suite);
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        x,
        "<testsuites name=\"zhitong\" tests=\"{}\" failures=\"{failures}\" errors=\"{errors}\" skipped=\"{skipped}\" time=\"{time:.3}\">",
        cases.len()
    );
    let _ = writeln!(
        x,
        "  <testsuite name=\"{suite_attr}\" tests=\"{}\" failures=\"{failures}\" errors=\"{errors}\" skipped=\"{skipped}\" time=\"{time:.3}\" timestamp=\"{}\">",
        cases.len(),
        attr(timestamp)
    );
    for c in cases {
        let _ = writeln!(
            x,
            "    <testcase name=\"{}\" classname=\"zhitong.{suite_attr}\" time=\"{:.3}\">",
            attr(&c.name),
            c.time.as_secs_f64()
        );
        match &c.outcome {
            Outcome::Passed => {}
            Outcome::Failed { message } => {
                let _ = writeln!(
                    x,
                    "      <failure message=\"{}\" type=\"exit-status\">{}</failure>",
                    attr(message),
                    text(message)
                );
            }
            Outcome::Error { message } => {
                let _ = writeln!(
                    x,
                    "      <error message=\"{}\" type=\"vmm\">{}</error>",
                    attr(message),
                    text(message)
                );
            }
            Outcome::Skipped => x.push_str("      <skipped/>\n"),
        }
        if !c.system_out.is_empty() {
            let _ = writeln!(x, "      <system-out>{}</system-out>", cdata(&c.system_out));
        }
        x.push_str("    </testcase>\n");
    }
    x.push_str("  </testsuite>\n</testsuites>\n");
    x
}

/// Drop what XML 1.0 cannot carry at all (control characters a console is full of: escape
/// sequences, NULs), keeping tabs and newlines.
fn xml_chars(s: &str) -> impl Iterator<Item = char> + '_ {
    s.chars().filter(|&c| {
        matches!(c, '\t' | '\n' | '\r') || !(c.is_control() || c == '\u{fffe}' || c == '\u{ffff}')
    })
}

fn attr(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in xml_chars(s) {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            '\t' => out.push_str("&#9;"),
            c => out.push(c),
        }
    }
    out
}

fn text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in xml_chars(s) {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

/// A CDATA section holding `s`; a `]]>` inside is split across two sections.
fn cdata(s: &str) -> String {
    let clean: String = xml_chars(s).collect();
    format!("<![CDATA[{}]]>", clean.replace("]]>", "]]]]><![CDATA[>"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cases() -> Vec<TestCase> {
        vec![
            TestCase {
                name: "boots".into(),
                time: Duration::from_millis(12_345),
                outcome: Outcome::Passed,
                system_out: "L2: init\nL2: done\n".into(),
            },
            TestCase {
                name: "exit<3>&".into(),
                time: Duration::from_millis(2_000),
                outcome: Outcome::Failed {
                    message: "expected 0, got 3 \"guest\" <exit> & co".into(),
                },
                system_out: "a ]]> b <tag> & \u{1b}[0m\u{0} end".into(),
            },
            TestCase {
                name: "bad-kernel".into(),
                time: Duration::ZERO,
                outcome: Outcome::Error {
                    message: "not a kernel".into(),
                },
                system_out: String::new(),
            },
            TestCase {
                name: "later".into(),
                time: Duration::ZERO,
                outcome: Outcome::Skipped,
                system_out: String::new(),
            },
        ]
    }

    /// A tiny XML reader, enough to check the report's structure: elements with their
    /// attributes (entities decoded), text and CDATA, and that every tag is closed in order.
    #[derive(Debug, Default)]
    struct Element {
        name: String,
        attrs: Vec<(String, String)>,
        children: Vec<Element>,
        text: String,
    }

    impl Element {
        fn attr(&self, name: &str) -> &str {
            self.attrs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
                .unwrap_or_else(|| panic!("<{}> lacks {name}", self.name))
        }
        fn all(&self, name: &str) -> Vec<&Element> {
            self.children.iter().filter(|c| c.name == name).collect()
        }
    }

    fn unescape(s: &str) -> String {
        assert!(!s.contains('<'), "raw < in {s:?}");
        let mut out = String::new();
        let mut rest = s;
        while let Some(i) = rest.find('&') {
            out.push_str(&rest[..i]);
            let end = rest[i..].find(';').expect("unterminated entity") + i;
            out.push(match &rest[i + 1..end] {
                "amp" => '&',
                "lt" => '<',
                "gt" => '>',
                "quot" => '"',
                "apos" => '\'',
                e if e.starts_with('#') => char::from_u32(e[1..].parse().unwrap()).unwrap(),
                e => panic!("unknown entity &{e};"),
            });
            rest = &rest[end + 1..];
        }
        out + rest
    }

    fn parse_xml(doc: &str) -> Element {
        let body = doc
            .strip_prefix("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n")
            .expect("XML declaration");
        for c in body.chars() {
            assert!(
                !c.is_control() || matches!(c, '\n' | '\t' | '\r'),
                "control character {c:?} in the report"
            );
        }
        let mut stack = vec![Element::default()];
        let mut rest = body;
        while !rest.is_empty() {
            if let Some(r) = rest.strip_prefix("<![CDATA[") {
                let end = r.find("]]>").unwrap();
                stack.last_mut().unwrap().text.push_str(&r[..end]);
                rest = &r[end + 3..];
            } else if let Some(r) = rest.strip_prefix("</") {
                let end = r.find('>').unwrap();
                let done = stack.pop().unwrap();
                assert_eq!(done.name, &r[..end], "mismatched close tag");
                stack.last_mut().unwrap().children.push(done);
                rest = &r[end + 1..];
            } else if let Some(r) = rest.strip_prefix('<') {
                let end = r.find('>').unwrap();
                let tag = &r[..end];
                let (tag, empty) = match tag.strip_suffix('/') {
                    Some(t) => (t, true),
                    None => (tag, false),
                };
                let mut el = Element::default();
                let (name, mut attrs) = tag.split_once(' ').unwrap_or((tag, ""));
                el.name = name.into();
                while let Some(eq) = attrs.find("=\"") {
                    let key = attrs[..eq].trim().to_string();
                    let vend = attrs[eq + 2..].find('"').unwrap() + eq + 2;
                    el.attrs.push((key, unescape(&attrs[eq + 2..vend])));
                    attrs = &attrs[vend + 1..];
                }
                if empty {
                    stack.last_mut().unwrap().children.push(el);
                } else {
                    stack.push(el);
                }
                rest = &r[end + 1..];
            } else {
                let end = rest.find('<').unwrap_or(rest.len());
                let t = unescape(&rest[..end]);
                stack.last_mut().unwrap().text.push_str(&t);
                rest = &rest[end..];
            }
        }
        assert_eq!(stack.len(), 1, "unclosed elements");
        let mut root = stack.pop().unwrap();
        assert_eq!(root.children.len(), 1);
        root.children.pop().unwrap()
    }

    #[test]
    fn the_report_has_what_the_junit_schema_requires() {
        let doc = render("ci.toml", &cases(), "2026-01-01T00:00:00");
        let root = parse_xml(&doc);
        assert_eq!(root.name, "testsuites");
        assert_eq!(root.attr("tests"), "4");
        assert_eq!(root.attr("failures"), "1");
        assert_eq!(root.attr("errors"), "1");
        assert_eq!(root.attr("time"), "14.345");
        let suites = root.all("testsuite");
        assert_eq!(suites.len(), 1);
        let suite = suites[0];
        for a in [
            "name",
            "tests",
            "failures",
            "errors",
            "skipped",
            "time",
            "timestamp",
        ] {
            suite.attr(a);
        }
        assert_eq!(suite.attr("name"), "ci.toml");
        assert_eq!(suite.attr("skipped"), "1");
        let tcs = suite.all("testcase");
        assert_eq!(tcs.len(), 4);
        for tc in &tcs {
            for a in ["name", "classname", "time"] {
                tc.attr(a);
            }
            tc.attr("time").parse::<f64>().unwrap();
        }
        assert_eq!(tcs[0].attr("time"), "12.345");
        assert!(tcs[0].all("failure").is_empty());
        assert_eq!(tcs[0].all("system-out")[0].text, "L2: init\nL2: done\n");
        assert_eq!(tcs[1].attr("name"), "exit<3>&");
        let failure = tcs[1].all("failure");
        assert_eq!(
            failure[0].attr("message"),
            "expected 0, got 3 \"guest\" <exit> & co"
        );
        assert_eq!(failure[0].text, "expected 0, got 3 \"guest\" <exit> & co");
        // ]]> survives the CDATA split; escape sequences and NULs are dropped.
        assert_eq!(tcs[1].all("system-out")[0].text, "a ]]> b <tag> & [0m end");
        assert_eq!(tcs[2].all("error")[0].attr("message"), "not a kernel");
        assert!(tcs[2].all("system-out").is_empty());
        assert_eq!(tcs[3].all("skipped").len(), 1);
    }

    #[test]
    fn escaping() {
        assert_eq!(attr("a<b&c\"d'\n"), "a&lt;b&amp;c&quot;d&apos;&#10;");
        assert_eq!(text("x]]>y<&"), "x]]&gt;y&lt;&amp;");
        assert_eq!(cdata("x]]>y"), "<![CDATA[x]]]]><![CDATA[>y]]>");
        assert_eq!(cdata("bell\u{7}"), "<![CDATA[bell]]>");
    }
}
