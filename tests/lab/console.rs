//! Parsing L0's serial console: L1 and L2 write to the same stream, so cases
//! are found by their "L1: case `<name>` begin/rc=" brackets and L2 results by
//! their "L2: " markers.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// What one case did, as seen on the console.
#[derive(Clone)]
pub struct CaseResult {
    pub name: String,
    /// "L1: case `<name>` begin" was seen
    pub began: bool,
    /// The exit status L1 printed; None if the case never finished
    pub rc: Option<i32>,
    /// Text after each "L2: " in the case, in order ("init", "cpus=2", ...)
    pub markers: Vec<String>,
    /// Text after each "L1: " in the case (what the case's own script
    /// reports, e.g. "stop_ms=120"), except the stderr lines
    pub l1_markers: Vec<String>,
    /// The case command's stderr, line by line (L1 prints it after the
    /// command ends, each line as "L1: stderr: `<line>`")
    pub stderr: Vec<String>,
    /// The VMM's JSON timings line (starts with `{`, has "vm_created_ms")
    pub timings: Option<String>,
    /// The console lines between the case's begin and rc lines
    pub console: String,
    /// From the begin line to the rc line, as seen from L0
    pub elapsed: Option<Duration>,
    /// From the case's start to the guest's first "L2: " marker line, as L0 saw them
    /// (comparable between VMMs: both reach L0's console the same way)
    pub to_first_marker: Option<Duration>,
    /// The whole L0 console, for failure messages
    pub full_console: Arc<String>,
}

impl CaseResult {
    /// The value of an "L2: key=value" marker.
    pub fn marker(&self, key: &str) -> Option<&str> {
        self.markers
            .iter()
            .find_map(|m| m.strip_prefix(key)?.strip_prefix('='))
    }

    /// The value of an "L1: key=value" line the case's script printed.
    pub fn l1_marker(&self, key: &str) -> Option<&str> {
        self.l1_markers
            .iter()
            .find_map(|m| m.strip_prefix(key)?.strip_prefix('='))
    }

    /// Whether a bare "L2: `<word>`" marker (e.g. "done") was printed.
    pub fn has_marker(&self, word: &str) -> bool {
        self.markers.iter().any(|m| m == word)
    }

    /// A marker parsed as a number.
    pub fn marker_u64(&self, key: &str) -> Option<u64> {
        self.marker(key)?.trim().parse().ok()
    }

    /// A number field of the timings JSON line (e.g. "vm_created_ms").
    pub fn timing(&self, key: &str) -> Option<f64> {
        let line = self.timings.as_deref()?;
        let at = line.find(&format!("\"{key}\""))? + key.len() + 2;
        let rest = line[at..].trim_start().strip_prefix(':')?.trim_start();
        let end = rest.find([',', '}']).unwrap_or(rest.len());
        rest[..end].trim().parse().ok()
    }

    /// Panics with this case's and the whole console unless `ok`.
    #[track_caller]
    pub fn check(&self, ok: bool, what: &str) {
        if !ok {
            panic!("case {}: {what}\n{self}", self.name);
        }
    }

    /// L2 booted, ran its commands and powered off, and the VMM exited 0.
    #[track_caller]
    pub fn assert_booted(&self) {
        self.check(self.began, "never began (L1 did not reach it)");
        for m in ["init", "done"] {
            self.check(self.has_marker(m), &format!("no 'L2: {m}' marker"));
        }
        for k in ["cpus", "memtotal_kb", "uname"] {
            self.check(self.marker(k).is_some(), &format!("no 'L2: {k}=' marker"));
        }
        self.check(
            self.rc == Some(0),
            &format!("VMM exit status {:?}, want 0", self.rc),
        );
    }
}

impl fmt::Display for CaseResult {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        writeln!(f, "----- whole L0 console -----\n{}", self.full_console)?;
        writeln!(
            f,
            "----- case {} (rc={:?}) -----\n{}",
            self.name, self.rc, self.console
        )
    }
}

/// Finds the named cases in `lines` (console lines with their arrival
/// times); `console` is the whole text, kept for failure messages.
pub fn parse_cases(
    console: &Arc<String>,
    lines: &[(Duration, String)],
    names: &[String],
) -> Vec<CaseResult> {
    names
        .iter()
        .map(|n| parse_case(console, lines, n))
        .collect()
}

/// How L1 prefixes each line of a case command's stderr.
pub(crate) const STDERR: &str = "L1: stderr: ";

fn parse_case(console: &Arc<String>, lines: &[(Duration, String)], name: &str) -> CaseResult {
    let begin = format!("L1: case {name} begin");
    let end = format!("L1: case {name} rc=");
    let mut r = CaseResult {
        name: name.to_string(),
        began: false,
        rc: None,
        markers: Vec::new(),
        l1_markers: Vec::new(),
        stderr: Vec::new(),
        timings: None,
        console: String::new(),
        elapsed: None,
        to_first_marker: None,
        full_console: console.clone(),
    };
    let mut began_at = Duration::ZERO;
    for (at_time, line) in lines {
        if !r.began {
            r.began = line.contains(&begin);
            began_at = *at_time;
            continue;
        }
        if let Some(at) = line.find(&end) {
            let rc = &line[at + end.len()..];
            let digits = rc.split(|c: char| !c.is_ascii_digit()).next().unwrap_or("");
            r.rc = digits.parse().ok();
            r.elapsed = Some(at_time.saturating_sub(began_at));
            break;
        }
        r.console.push_str(line);
        r.console.push('\n');
        if let Some(at) = line.find(STDERR) {
            r.stderr.push(line[at + STDERR.len()..].to_string());
        } else if let Some(at) = line.find("L2: ") {
            r.markers.push(line[at + 4..].trim_end().to_string());
            r.to_first_marker
                .get_or_insert(at_time.saturating_sub(began_at));
        } else if let Some(at) = line.find("L1: ") {
            r.l1_markers.push(line[at + 4..].trim_end().to_string());
        }
        if let Some(at) = line.find('{') {
            if r.timings.is_none() && line.contains("\"vm_created_ms\"") {
                r.timings = Some(line[at..].trim_end().to_string());
            }
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cases_markers_and_timings() {
        let console = Arc::new(
            "L1: kvm ready\nL1: case a begin\n[ 1.0] x\nL2: init\nL2: cpus=2\n\
             {\"vm_created_ms\": 1.5, \"guest_marker_ms\": 300}\nL2: done\nL1: case a rc=0\n\
             L1: case b begin\nL1: stop_ms=40\nL1: stderr: zhitong: bad kernel\nL1: case b rc=2\n\
             L1: case c begin\n"
                .to_string(),
        );
        let lines: Vec<_> = console
            .lines()
            .enumerate()
            .map(|(i, l)| (Duration::from_secs(i as u64), l.to_string()))
            .collect();
        let r = parse_cases(
            &console,
            &lines,
            &["a".into(), "b".into(), "c".into(), "d".into()],
        );
        assert_eq!(r[0].rc, Some(0));
        assert_eq!(r[0].elapsed, Some(Duration::from_secs(6)));
        assert_eq!(r[0].to_first_marker, Some(Duration::from_secs(2)));
        assert_eq!(r[1].to_first_marker, None);
        assert_eq!(r[0].marker("cpus"), Some("2"));
        assert!(r[0].has_marker("done") && r[0].has_marker("init"));
        assert_eq!(r[0].timing("guest_marker_ms"), Some(300.0));
        assert_eq!(r[0].timing("vm_created_ms"), Some(1.5));
        assert_eq!(r[1].rc, Some(2));
        assert_eq!(r[1].stderr, ["zhitong: bad kernel"]);
        assert_eq!(r[1].l1_marker("stop_ms"), Some("40"));
        assert!(r[1].markers.is_empty() && r[0].stderr.is_empty());
        assert!(r[2].began && r[2].rc.is_none());
        assert!(!r[3].began);
    }
}
