//! `zhitong test MATRIX.toml`: run each case's VM in turn (the same devices are released by
//! one case and opened by the next), one summary line per case on stderr, each console in
//! its own log file, a JUnit report. Exit 0 when every case ended with its expected status,
//! 1 when one did not, 2 for bad usage (a bad matrix), 128+N when stopped by signal N.

use std::collections::VecDeque;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use arch::units::format_duration;
use vmm::{Console, Timestamped, Vm, VmExit, VmHandle};

use crate::cli::TestArgs;
use crate::junit::{self, Outcome, TestCase};
use crate::matrix::{self, MatrixCase};
use crate::signals;

/// How many console lines of a case go into its `<system-out>`.
const TAIL_LINES: usize = 50;

pub fn main(args: &TestArgs) -> i32 {
    let signals = match signals::block_stop_signals() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("zhitong: cannot set up signal handling: {e}");
            return 1;
        }
    };
    let mut cases = match matrix::load(&args.matrix) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("zhitong: {e}");
            return 2;
        }
    };
    if let Some(filter) = &args.filter {
        cases.retain(|c| c.name.contains(filter.as_str()));
        if cases.is_empty() {
            eprintln!(
                "zhitong: no case name in {} contains '{filter}'; check --filter",
                args.matrix.display()
            );
            return 2;
        }
    }
    let logs = args
        .logs
        .clone()
        .unwrap_or_else(|| PathBuf::from("zhitong-logs"));
    if let Err(e) = std::fs::create_dir_all(&logs) {
        eprintln!(
            "zhitong: cannot create the log directory {}: {e}; check --logs",
            logs.display()
        );
        return 2;
    }

    // The signal thread stops whichever VM runs and no further case starts.
    let current: Arc<Mutex<Option<Arc<VmHandle>>>> = Arc::new(Mutex::new(None));
    let stopped_by = Arc::new(AtomicI32::new(0));
    {
        let (current, stopped_by) = (current.clone(), stopped_by.clone());
        // It serves one VM after another: no VM's filter fits it, so it stays unconfined.
        signals::forward_to(
            signals,
            || {},
            move |signal| {
                // zhitong test exits as the stopped VM would: 128 + the signal.
                let status = VmExit::Signal { signal }.exit_status();
                stopped_by.store(status, Ordering::SeqCst);
                if let Some(vm) = current.lock().unwrap().as_ref() {
                    vm.stop_for_signal(signal);
                }
            },
        );
    }

    let started = Instant::now();
    let timestamp = iso8601_now();
    let progress = std::io::stderr().is_terminal();
    let mut results: Vec<TestCase> = Vec::new();
    let mut failed = 0;
    for (i, case) in cases.iter().enumerate() {
        if stopped_by.load(Ordering::SeqCst) != 0 || (args.fail_fast && failed > 0) {
            for c in &cases[i..] {
                results.push(TestCase {
                    name: c.name.clone(),
                    time: Default::default(),
                    outcome: Outcome::Skipped,
                    system_out: String::new(),
                });
                eprintln!("SKIP  {}", c.name);
            }
            break;
        }
        if progress {
            eprint!("RUN   {} ({}/{}) ...\r", case.name, i + 1, cases.len());
        }
        let result = run_case(case, &logs, &current);
        if progress {
            eprint!("\x1b[2K");
        }
        let secs = result.time.as_secs_f64();
        match &result.outcome {
            Outcome::Passed => eprintln!("PASS  {}  ({secs:.1} s)", case.name),
            Outcome::Failed { message } | Outcome::Error { message } => {
                failed += 1;
                eprintln!("FAIL  {}  {message} ({secs:.1} s)", case.name);
            }
            Outcome::Skipped => {}
        }
        results.push(result);
    }

    let passed = results
        .iter()
        .filter(|r| r.outcome == Outcome::Passed)
        .count();
    let suite = args
        .matrix
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "matrix".into());
    let mut junit_note = String::new();
    if let Some(path) = &args.junit {
        let report = junit::render(&suite, &results, &timestamp);
        match std::fs::write(path, report) {
            Ok(()) => junit_note = format!("; JUnit report {}", path.display()),
            Err(e) => {
                eprintln!(
                    "zhitong: cannot write the JUnit report {}: {e}; check --junit",
                    path.display()
                );
                failed += 1;
            }
        }
    }
    let skipped = results
        .iter()
        .filter(|r| r.outcome == Outcome::Skipped)
        .count();
    eprintln!(
        "zhitong test: {passed} passed, {failed} failed{} of {} ({:.1} s); logs in {}{junit_note}",
        if skipped > 0 {
            format!(", {skipped} skipped")
        } else {
            String::new()
        },
        results.len(),
        started.elapsed().as_secs_f64(),
        logs.display()
    );
    match stopped_by.load(Ordering::SeqCst) {
        0 if failed == 0 && passed == results.len() => 0,
        0 => 1,
        code => code,
    }
}

/// Run one case's VM to its end; its console goes to `logs/<name>.log` (timestamped lines)
/// and the last lines are kept for the report.
fn run_case(case: &MatrixCase, logs: &Path, current: &Mutex<Option<Arc<VmHandle>>>) -> TestCase {
    let start = Instant::now();
    let tail = Arc::new(Mutex::new(Tail::default()));
    let finish = |outcome| TestCase {
        name: case.name.clone(),
        time: start.elapsed(),
        outcome,
        system_out: tail.lock().unwrap().text(),
    };
    let log_path = matrix::log_path(logs, case);
    let log = match std::fs::File::create(&log_path) {
        Ok(f) => f,
        Err(e) => {
            return finish(Outcome::Error {
                message: format!("cannot create {}: {e}", log_path.display()),
            })
        }
    };
    let sink = tail.clone();
    let console = Console::callback(move |bytes| sink.lock().unwrap().push(bytes))
        .tee(Timestamped::new(log, start));
    let vm = match Vm::new(case.config.clone(), console, start) {
        Ok(vm) => vm,
        Err(e) => {
            return finish(Outcome::Error {
                message: format!("did not start: {e}"),
            })
        }
    };
    let result = vm.start().map(Arc::new).and_then(|vm| {
        *current.lock().unwrap() = Some(vm.clone());
        let result = vm.wait();
        *current.lock().unwrap() = None;
        result
    });
    let (status, how) = match &result {
        Ok(exit) => describe(exit),
        Err(e) => {
            let _ = writeln!(tail.lock().unwrap(), "zhitong: {e}");
            return finish(Outcome::Error {
                message: format!("expected {}, got an error: {e}", case.expect),
            });
        }
    };
    if status == i32::from(case.expect) {
        finish(Outcome::Passed)
    } else {
        finish(Outcome::Failed {
            message: format!("expected {}, got {status}: {how}", case.expect),
        })
    }
}

/// The exit status `zhitong run` would give, and what happened in words.
fn describe(exit: &VmExit) -> (i32, String) {
    let how = match exit {
        VmExit::Poweroff => "the guest powered off".into(),
        VmExit::Reset => "the guest rebooted".into(),
        VmExit::GuestStatus(s) => format!("the guest wrote {s} to the exit port"),
        VmExit::Timeout(limit) => format!("stopped by the timeout of {}", format_duration(*limit)),
        VmExit::BootTimeout(limit) => format!(
            "no sign of life within the boot timeout of {}",
            format_duration(*limit)
        ),
        VmExit::Crashed { vcpu, reason } => format!("crashed on vCPU {vcpu}: {reason}"),
        VmExit::Stopped { reason } => format!("stopped by {reason}"),
        VmExit::Signal { signal } => format!("stopped by {}", signals::name(*signal)),
        VmExit::Panicked { thread, message } => format!("the {thread} thread panicked: {message}"),
        VmExit::Seccomp(violation) => violation.to_string(),
    };
    (exit.exit_status(), how)
}

/// The last lines of a console (at most 64 KiB of them).
#[derive(Default)]
struct Tail {
    lines: VecDeque<String>,
    partial: Vec<u8>,
}

impl Tail {
    fn push(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if b == b'\n' {
                let line = String::from_utf8_lossy(&self.partial)
                    .trim_end_matches('\r')
                    .to_string();
                self.partial.clear();
                if self.lines.len() == TAIL_LINES {
                    self.lines.pop_front();
                }
                self.lines.push_back(line);
            } else if self.partial.len() < 64 << 10 {
                self.partial.push(b);
            }
        }
    }

    fn text(&self) -> String {
        let mut s: String = self.lines.iter().map(|l| format!("{l}\n")).collect();
        s.push_str(&String::from_utf8_lossy(&self.partial));
        s
    }
}

impl Write for Tail {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.push(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// UTC now as 2026-01-01T12:00:00 (JUnit's timestamp attribute).
fn iso8601_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tail_keeps_the_last_lines() {
        let mut t = Tail::default();
        for i in 0..120 {
            t.push(format!("line {i}\r\n").as_bytes());
        }
        t.push(b"partial");
        let text = t.text();
        assert_eq!(text.lines().count(), TAIL_LINES + 1);
        assert!(text.starts_with("line 70\n"), "{text}");
        assert!(text.ends_with("line 119\npartial"), "{text}");
    }

    #[test]
    fn statuses_match_zhitong_run() {
        use std::time::Duration;
        assert_eq!(describe(&VmExit::Poweroff).0, 0);
        assert_eq!(describe(&VmExit::GuestStatus(3)).0, 3);
        let (code, how) = describe(&VmExit::Timeout(Duration::from_secs(20)));
        assert_eq!((code, how.as_str()), (124, "stopped by the timeout of 20s"));
        let (code, how) = describe(&VmExit::Signal {
            signal: libc::SIGTERM,
        });
        assert_eq!((code, how.as_str()), (143, "stopped by SIGTERM"));
        let (code, how) = describe(&VmExit::Stopped {
            reason: "api".into(),
        });
        assert_eq!((code, how.as_str()), (1, "stopped by api"));
    }

    #[test]
    fn timestamps_are_iso8601() {
        let t = iso8601_now();
        assert_eq!(t.len(), 19, "{t}");
        assert!(t.starts_with("20") && &t[10..11] == "T", "{t}");
    }
}
