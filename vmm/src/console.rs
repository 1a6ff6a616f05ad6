//! Where a guest's serial console goes (any writer: stdout, a file, a callback, a channel)
//! and where its input comes from (any pollable file: stdin, a pty, a pipe).

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;
use std::sync::mpsc::Sender;
use std::time::Instant;

pub struct Console {
    pub output: Box<dyn Write + Send>,
    /// Polled for input; `None` means the guest gets no console input.
    pub input: Option<File>,
}

impl Console {
    /// Output to this process's stdout, no input.
    pub fn stdout() -> Self {
        Self::writer(io::stdout())
    }

    /// Output discarded, no input.
    pub fn none() -> Self {
        Self::writer(io::sink())
    }

    /// Output to any writer, no input.
    pub fn writer(w: impl Write + Send + 'static) -> Self {
        Self {
            output: Box::new(w),
            input: None,
        }
    }

    /// Output appended to a file (created if missing), no input.
    pub fn file(path: &Path) -> io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(Self::writer(file))
    }

    /// Output delivered to `f` in chunks as the guest writes them.
    pub fn callback(f: impl FnMut(&[u8]) + Send + 'static) -> Self {
        Self::writer(Callback(f))
    }

    /// Output sent over a channel in chunks.
    pub fn channel(tx: Sender<Vec<u8>>) -> Self {
        Self::callback(move |bytes| {
            let _ = tx.send(bytes.to_vec());
        })
    }

    /// Also send the output to `log` (a tee): `zhitong run --console-log`. The console's own
    /// output comes first; a failing log is reported once (`log::warn!`) and then skipped,
    /// so it never stops the guest's console.
    pub fn tee(mut self, log: impl Write + Send + 'static) -> Self {
        self.output = Box::new(Tee {
            first: self.output,
            second: Box::new(log),
            second_failed: false,
        });
        self
    }

    /// Also take input from `input` (it must be pollable: a tty, pty, pipe or socket).
    pub fn with_input(mut self, input: File) -> Self {
        self.input = Some(input);
        self
    }
}

struct Callback<F>(F);

impl<F: FnMut(&[u8]) + Send> Write for Callback<F> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (self.0)(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Writes both; see `Console::tee`.
struct Tee {
    first: Box<dyn Write + Send>,
    second: Box<dyn Write + Send>,
    second_failed: bool,
}

impl Write for Tee {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.first.write_all(buf)?;
        if !self.second_failed {
            if let Err(e) = self
                .second
                .write_all(buf)
                .and_then(|()| self.second.flush())
            {
                log::warn!("the console log stopped: {e}");
                self.second_failed = true;
            }
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.first.flush()
    }
}

/// A writer that prefixes every line with the seconds since `start`, as the kernel stamps
/// its log: `[   12.345] ` (`zhitong run --console-timestamps`). A line's stamp is the time
/// its first byte arrived.
pub struct Timestamped<W> {
    inner: W,
    start: Instant,
    at_line_start: bool,
}

impl<W: Write> Timestamped<W> {
    pub fn new(inner: W, start: Instant) -> Self {
        Self {
            inner,
            start,
            at_line_start: true,
        }
    }
}

impl<W: Write> Write for Timestamped<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut rest = buf;
        while !rest.is_empty() {
            if self.at_line_start {
                let secs = self.start.elapsed().as_secs_f64();
                write!(self.inner, "[{secs:9.3}] ")?;
                self.at_line_start = false;
            }
            let (line, more) = match rest.iter().position(|&b| b == b'\n') {
                Some(i) => rest.split_at(i + 1),
                None => (rest, &[][..]),
            };
            self.inner.write_all(line)?;
            self.at_line_start = line.ends_with(b"\n");
            rest = more;
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_and_callback_receive_output() {
        let (tx, rx) = std::sync::mpsc::channel();
        let mut c = Console::channel(tx);
        c.output.write_all(b"hello").unwrap();
        assert_eq!(rx.recv().unwrap(), b"hello");
        assert!(c.input.is_none());
    }

    #[test]
    fn file_output_appends() {
        let path = std::env::temp_dir().join(format!("zhitong-console-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        Console::file(&path)
            .unwrap()
            .output
            .write_all(b"a")
            .unwrap();
        Console::file(&path)
            .unwrap()
            .output
            .write_all(b"b")
            .unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"ab");
        std::fs::remove_file(&path).unwrap();
    }

    #[derive(Clone, Default)]
    struct Shared(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Shared {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    #[test]
    fn tee_writes_both_sinks() {
        let (a, b) = (Shared::default(), Shared::default());
        let mut c = Console::writer(a.clone()).tee(b.clone());
        c.output.write_all(b"L2: init\n").unwrap();
        assert_eq!(a.text(), "L2: init\n");
        assert_eq!(b.text(), "L2: init\n");
    }

    #[test]
    fn tee_survives_a_failing_log() {
        struct Broken;
        impl Write for Broken {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::other("disk full"))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let a = Shared::default();
        let mut c = Console::writer(a.clone()).tee(Broken);
        c.output.write_all(b"one\n").unwrap();
        c.output.write_all(b"two\n").unwrap();
        assert_eq!(a.text(), "one\ntwo\n");
    }

    #[test]
    fn timestamps_prefix_every_line_once() {
        let out = Shared::default();
        let start = Instant::now() - std::time::Duration::from_millis(12_345);
        let mut w = Timestamped::new(out.clone(), start);
        // Lines split across writes, and several lines in one write.
        w.write_all(b"L2: in").unwrap();
        w.write_all(b"it\nL2: done\nL2: ").unwrap();
        w.write_all(b"bye\n").unwrap();
        let text = out.text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        for (line, body) in lines.iter().zip(["L2: init", "L2: done", "L2: bye"]) {
            assert!(line.starts_with("[   12.3"), "{line}");
            assert_eq!(&line[0..1], "[");
            assert_eq!(&line[10..12], "] ", "{line}");
            assert_eq!(&line[12..], body);
        }
    }
}
