//! Where a guest's serial console goes (any writer: stdout, a file, a callback, a channel)
//! and where its input comes from (any pollable file: stdin, a pty, a pipe).

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;
use std::sync::mpsc::Sender;

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
}
