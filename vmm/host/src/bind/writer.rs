//! The side effects of binding, behind a trait so unit tests simulate the kernel on a fake
//! tree (`sysfs::fake::FakeKernel`).

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::Path;
use std::process::Command;

/// The side effects of binding: sysfs writes and loading a module.
pub trait HostWriter {
    /// Write `value` to the sysfs attribute at `path` (one write).
    fn write(&mut self, path: &Path, value: &str) -> io::Result<()>;
    /// `modprobe MODULE`.
    fn modprobe(&mut self, module: &str) -> io::Result<()>;
}

/// The real host.
pub struct RealWriter;

impl HostWriter for RealWriter {
    fn write(&mut self, path: &Path, value: &str) -> io::Result<()> {
        // sysfs takes the whole value in a single write().
        OpenOptions::new()
            .write(true)
            .open(path)?
            .write_all(value.as_bytes())
    }

    fn modprobe(&mut self, module: &str) -> io::Result<()> {
        let out = Command::new("modprobe").arg(module).output()?;
        if out.status.success() {
            return Ok(());
        }
        let err = String::from_utf8_lossy(&out.stderr);
        Err(io::Error::other(
            err.lines()
                .next()
                .unwrap_or("modprobe failed")
                .trim()
                .to_owned(),
        ))
    }
}
