//! A busybox initramfs builder shared by L1 and L2: a tree of entries, a
//! generated /init, written as a newc cpio (optionally gzip'ed).

use std::collections::BTreeMap;
use std::fs;
use std::io::BufWriter;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::cpio::CpioWriter;
use crate::kernel::Kernel;
use crate::{Error, Result};

/// Where busybox-static installs its binary on Debian.
pub const BUSYBOX: &str = "/bin/busybox";

enum Entry {
    Dir,
    Copy(PathBuf, u32),
    Data(Vec<u8>, u32),
    Symlink(String),
    CharDev(u32, u32),
}

/// An initramfs being assembled. `init_lines` become /init after a prologue
/// that installs busybox and mounts proc, sys and devtmpfs.
pub struct Initramfs {
    entries: BTreeMap<String, Entry>,
    init_lines: Vec<String>,
}

impl Initramfs {
    pub fn new() -> Result<Initramfs> {
        if !Path::new(BUSYBOX).exists() {
            return Err(Error::new(format!(
                "{BUSYBOX} missing (busybox-static): run resources/lab/setup.sh"
            )));
        }
        let mut me = Initramfs {
            entries: BTreeMap::new(),
            init_lines: Vec::new(),
        };
        for d in [
            "/proc",
            "/sys",
            "/dev",
            "/tmp",
            "/sbin",
            "/usr/bin",
            "/usr/sbin",
        ] {
            me.add(d, Entry::Dir);
        }
        me.add("/dev/console", Entry::CharDev(5, 1));
        me.file("/bin/busybox", BUSYBOX);
        Ok(me)
    }

    /// Copies a host file to `dst`, keeping its permission bits.
    pub fn file(&mut self, dst: &str, src: impl AsRef<Path>) -> &mut Self {
        let src = src.as_ref().to_path_buf();
        let mode = fs::metadata(&src)
            .map(|m| m.permissions().mode())
            .unwrap_or(0o644);
        self.add(dst, Entry::Copy(src, mode))
    }

    pub fn data(&mut self, dst: &str, data: impl Into<Vec<u8>>, mode: u32) -> &mut Self {
        self.add(dst, Entry::Data(data.into(), mode))
    }

    pub fn symlink(&mut self, dst: &str, target: &str) -> &mut Self {
        self.add(dst, Entry::Symlink(target.to_string()))
    }

    /// Copies a dynamically linked program and the shared libraries `ldd`
    /// lists (each at its host path).
    pub fn binary(&mut self, dst: &str, src: impl AsRef<Path>) -> Result<&mut Self> {
        let src = src.as_ref();
        for lib in shared_libs(src)? {
            let path = lib.to_string_lossy().into_owned();
            self.file(&path, &lib);
        }
        Ok(self.file(dst, src))
    }

    /// Adds the named modules and their dependencies from `kernel`, and
    /// /init lines that insmod them in dependency order (a failure is
    /// reported as "`<who>`: insmod `<file>` failed" and does not stop /init).
    pub fn modules<S: AsRef<str>>(
        &mut self,
        kernel: &Kernel,
        names: &[S],
        who: &str,
    ) -> Result<()> {
        let base = format!("/lib/modules/{}", kernel.version);
        for rel in kernel.module_closure(names)? {
            let dst = format!("{base}/{rel}");
            self.file(&dst, kernel.modules.join(&rel));
            self.line(format!("insmod {dst} || echo '{who}: insmod {rel} failed'"));
        }
        Ok(())
    }

    /// Appends a line to /init.
    pub fn line(&mut self, line: impl Into<String>) -> &mut Self {
        self.init_lines.push(line.into());
        self
    }

    /// Writes the archive to `out`; gzip'ed with `gzip -1` when `out` ends in ".gz".
    pub fn write(&mut self, out: &Path) -> Result<()> {
        let mut init = String::from(INIT_PROLOGUE);
        for l in &self.init_lines {
            init.push_str(l);
            init.push('\n');
        }
        self.data("/init", init, 0o755);

        let gz = out.extension().is_some_and(|e| e == "gz");
        let raw = if gz {
            out.with_extension("")
        } else {
            out.to_path_buf()
        };
        let mut w = CpioWriter::new(BufWriter::new(fs::File::create(&raw)?));
        for (path, entry) in &self.entries {
            match entry {
                Entry::Dir => w.dir(path)?,
                Entry::Copy(src, mode) => {
                    let data = fs::read(src)
                        .map_err(|e| Error::new(format!("reading {}: {e}", src.display())))?;
                    w.file(path, *mode, &data)?
                }
                Entry::Data(data, mode) => w.file(path, *mode, data)?,
                Entry::Symlink(target) => w.symlink(path, target)?,
                Entry::CharDev(major, minor) => w.chardev(path, *major, *minor)?,
            }
        }
        w.finish()?;
        if gz {
            let _ = fs::remove_file(out);
            crate::run_tool(Command::new("gzip").args(["-1", "-n"]).arg(&raw))?;
        }
        Ok(())
    }

    fn add(&mut self, path: &str, entry: Entry) -> &mut Self {
        let mut parent = Path::new(path).parent();
        while let Some(p) = parent.filter(|p| *p != Path::new("/")) {
            self.entries
                .entry(p.to_string_lossy().into_owned())
                .or_insert(Entry::Dir);
            parent = p.parent();
        }
        self.entries.insert(path.to_string(), entry);
        self
    }
}

const INIT_PROLOGUE: &str = "#!/bin/busybox sh
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
";

/// The libraries `ldd` lists for `bin` (none for a static binary).
fn shared_libs(bin: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(bin)
        .output()
        .map_err(|e| Error::new(format!("running ldd: {e}")))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut libs = Vec::new();
    for line in text.lines() {
        if line.contains("not found") {
            return Err(Error::new(format!(
                "ldd {}: {}",
                bin.display(),
                line.trim()
            )));
        }
        if let Some(path) = line.split_whitespace().find(|t| t.starts_with('/')) {
            libs.push(PathBuf::from(path));
        }
    }
    Ok(libs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_of_a_dynamic_binary_lists_libc() {
        let libs = shared_libs(Path::new("/bin/sh")).unwrap();
        assert!(
            libs.iter().any(|l| l.to_string_lossy().contains("libc.so")),
            "{libs:?}"
        );
    }

    #[test]
    fn parents_are_created_before_children() {
        let mut i = Initramfs::new().unwrap();
        i.data("/a/b/c", "x", 0o644);
        let keys: Vec<_> = i.entries.keys().cloned().collect();
        let pos = |k: &str| keys.iter().position(|x| x == k).unwrap();
        assert!(pos("/a") < pos("/a/b") && pos("/a/b") < pos("/a/b/c"));
    }
}
