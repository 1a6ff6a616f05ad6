//! The L2 guest: the busybox /init that the VMM under test boots.
//!
//! Every guest prints, on its console:
//! ```text
//! L2: init
//! L2: cpus=<processors in /proc/cpuinfo>
//! L2: memtotal_kb=<MemTotal>
//! L2: uname=<uname -r>
//!     ... insmod of the extra modules, the extra lines ...
//! L2: done
//! ```
//! and writes one byte to port 0x4f0 (the VMM's guest marker) right after
//! "L2: init"; then it powers off (or runs `Guest::end_with`'s line).
//!
//! `Guest::switch_root` makes a stage-1 initramfs instead, for an L2 whose root is a disk
//! (see disk.rs): it prints only "L2: stage1", loads the modules, mounts the disk and hands
//! over to the disk's /sbin/init, which prints the markers above itself.

use std::path::Path;

use crate::initramfs::Initramfs;
use crate::kernel::Kernel;
use crate::Result;

/// An L2 guest definition; extend it with modules and script lines:
/// `Guest::new().module("virtio_gpu").line("ls /dev/dri && echo 'L2: drm ok'")`.
#[derive(Clone, Debug)]
pub struct Guest {
    modules: Vec<String>,
    lines: Vec<String>,
    /// (path in the guest, host file): helper programs (`gcc -static` ones need no libs).
    binaries: Vec<(String, std::path::PathBuf)>,
    end: String,
    /// (device, fstype) of `switch_root`
    root: Option<(String, String)>,
}

impl Default for Guest {
    fn default() -> Guest {
        Guest {
            modules: Vec::new(),
            lines: Vec::new(),
            binaries: Vec::new(),
            end: "poweroff -f".into(),
            root: None,
        }
    }
}

impl Guest {
    pub fn new() -> Guest {
        Guest::default()
    }

    /// The line after "L2: done", instead of `poweroff -f`: e.g. `reboot -f`,
    /// or `sleep 100000` for a guest that runs until the VMM is stopped.
    pub fn end_with(mut self, line: &str) -> Guest {
        self.end = line.to_string();
        self
    }

    /// Loads `name` (and what it depends on, per modules.dep) before the extra lines.
    pub fn module(mut self, name: &str) -> Guest {
        self.modules.push(name.to_string());
        self
    }

    /// A shell line run after the modules are loaded; print `L2: key=value` markers.
    pub fn line(mut self, line: &str) -> Guest {
        self.lines.push(line.to_string());
        self
    }

    /// Puts the program `src` (with the shared libraries `ldd` lists) at `dst` in the guest.
    pub fn binary(mut self, dst: &str, src: impl AsRef<Path>) -> Guest {
        self.binaries
            .push((dst.to_string(), src.as_ref().to_path_buf()));
        self
    }

    /// The extra lines, in order (for tests of the script).
    #[cfg(test)]
    pub(crate) fn script_lines(&self) -> &[String] {
        &self.lines
    }

    /// A stage-1 initramfs: after the modules and lines, mount `device` (e.g. /dev/vda) as
    /// `fstype` read-write and `switch_root` to its /sbin/init, which then runs the show.
    /// Debian's kernel has virtio_blk and ext4 as modules, so `root=/dev/vda` without an
    /// initramfs cannot boot it: add them (`disk::ROOT_MODULES`) with `module`.
    pub fn switch_root(mut self, device: &str, fstype: &str) -> Guest {
        self.root = Some((device.into(), fstype.into()));
        self
    }

    /// Writes the initramfs (gzip'ed if `out` ends in .gz).
    pub fn build(&self, kernel: &Kernel, out: &Path) -> Result<()> {
        if let Some((dev, fstype)) = &self.root {
            return self.build_stage1(kernel, dev, fstype, out);
        }
        let mut img = Initramfs::new()?;
        img.line("echo 'L2: init'")
            .line("printf '\\001' | dd of=/dev/port bs=1 seek=$((0x4f0)) count=1 2>/dev/null")
            .line("echo \"L2: cpus=$(grep -c ^processor /proc/cpuinfo)\"")
            .line("echo \"L2: memtotal_kb=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)\"")
            .line("echo \"L2: uname=$(uname -r)\"");
        img.modules(kernel, &self.modules, "L2")?;
        for (dst, src) in &self.binaries {
            img.binary(dst, src)?;
        }
        for l in &self.lines {
            img.line(l.as_str());
        }
        img.line("echo 'L2: done'").line(self.end.as_str());
        img.write(out)
    }

    fn build_stage1(&self, kernel: &Kernel, dev: &str, fstype: &str, out: &Path) -> Result<()> {
        let mut img = Initramfs::new()?;
        img.line("echo 'L2: stage1'")
            .line("printf '\\001' | dd of=/dev/port bs=1 seek=$((0x4f0)) count=1 2>/dev/null");
        img.modules(kernel, &self.modules, "L2")?;
        for (dst, src) in &self.binaries {
            img.binary(dst, src)?;
        }
        for l in &self.lines {
            img.line(l.as_str());
        }
        let fail = "poweroff -f";
        img.line(format!(
            "i=0; while [ ! -b {dev} ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done"
        ))
        .line("mkdir -p /newroot")
        .line(format!(
            "mount -t {fstype} -o rw {dev} /newroot || {{ echo 'L2: stage1 mount {dev} failed'; {fail}; }}"
        ))
        // The disk's init mounts proc and sys itself; /dev (with the console) moves along.
        .line("mount --move /dev /newroot/dev; umount /sys; umount /proc")
        .line("exec switch_root /newroot /sbin/init")
        .line(format!("echo 'L2: stage1 switch_root failed'; {fail}"));
        img.write(out)
    }
}
