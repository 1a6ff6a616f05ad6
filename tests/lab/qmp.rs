//! A minimal QMP client for L0's QEMU (`-qmp unix:PATH,server=on,wait=off`):
//! screendumps of the emulated displays, and `info registers` when a run hangs.
//! One connection per use: QEMU serves one QMP client at a time.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use crate::{Error, Result};

pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Qmp {
    pub fn connect(socket: &Path) -> Result<Qmp> {
        let stream = UnixStream::connect(socket)
            .map_err(|e| Error::new(format!("QMP {}: {e}", socket.display())))?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        let writer = stream.try_clone()?;
        let mut qmp = Qmp {
            reader: BufReader::new(stream),
            writer,
        };
        let greeting = qmp.read_line()?;
        if !greeting.contains("\"QMP\"") {
            return Err(Error::new(format!("not a QMP greeting: {greeting}")));
        }
        qmp.execute("qmp_capabilities", "{}")?;
        Ok(qmp)
    }

    /// Runs `command` with `arguments` (a JSON object) and returns the
    /// response line (`{"return": ...}`); an `{"error": ...}` is an Err.
    pub fn execute(&mut self, command: &str, arguments: &str) -> Result<String> {
        writeln!(
            self.writer,
            "{{\"execute\": \"{command}\", \"arguments\": {arguments}}}"
        )?;
        loop {
            let line = self.read_line()?;
            if line.starts_with("{\"return\"") {
                return Ok(line);
            }
            if line.starts_with("{\"error\"") {
                return Err(Error::new(format!("QMP {command}: {line}")));
            }
            // {"event": ...} lines are not answers.
        }
    }

    /// Saves what display `device` (its `id=`, or the first display when None) shows, as PPM.
    pub fn screendump(&mut self, file: &Path, device: Option<&str>) -> Result<()> {
        let mut args = format!("{{\"filename\": {}", json_string(&file.to_string_lossy()));
        if let Some(d) = device {
            args.push_str(&format!(", \"device\": {}", json_string(d)));
        }
        args.push('}');
        self.execute("screendump", &args).map(|_| ())
    }

    /// A human monitor command (e.g. "info registers -a"); its output, unescaped.
    pub fn hmp(&mut self, command: &str) -> Result<String> {
        self.hmp_on(command, None)
    }

    /// A human monitor command run with vCPU `cpu` as the current one (e.g. "x/4i $pc").
    pub fn hmp_on(&mut self, command: &str, cpu: Option<u32>) -> Result<String> {
        let cpu = cpu.map_or(String::new(), |c| format!(", \"cpu-index\": {c}"));
        let line = self.execute(
            "human-monitor-command",
            &format!("{{\"command-line\": {}{cpu}}}", json_string(command)),
        )?;
        let body = line
            .trim()
            .strip_prefix("{\"return\": \"")
            .and_then(|s| s.strip_suffix("\"}"))
            .unwrap_or(&line);
        Ok(json_unescape(body))
    }

    fn read_line(&mut self) -> Result<String> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(Error::new("QMP connection closed"));
        }
        Ok(line)
    }
}

fn json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn json_unescape(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('t') => out.push('\t'),
            Some('u') => {
                let hex: String = chars.by_ref().take(4).collect();
                if let Some(c) = u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32) {
                    out.push(c);
                }
            }
            Some(c) => out.push(c),
            None => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_round_trip() {
        let s = "a \"b\"\\c\nd";
        let quoted = json_string(s);
        assert_eq!(quoted, "\"a \\\"b\\\"\\\\c\\nd\"");
        assert_eq!(json_unescape(&quoted[1..quoted.len() - 1]), s);
        assert_eq!(json_unescape("x\\u0041\\r\\n"), "xA\r\n");
    }
}
