//! Disks for L2 (virtio-blk, see `Case::disk`): an ext4 root image built on L0 with
//! `mke2fs -t ext4 -d DIR` (no root, no loop device), raw images of a known pattern, and the
//! L1 shell lines that inspect an image once the VMM is done with it.
//!
//! How an image gets to L1 and back: L1 has no share with L0 and runs from its initramfs, so
//! an image travels inside L1's initramfs (`Lab::disk_image`) and is a plain file in L1's RAM
//! when the VMM opens it. For a 64 MiB image that costs L0 a file read and L1's kernel a copy
//! while it unpacks its initramfs; an extra L0 drive would have needed virtio_blk in L1 and a
//! copy into a regular file anyway (a VMM under test is given files, not block devices).
//! Nothing travels back: after the VMM exits, L1 reads the image as the VMM left it with
//! debugfs, e2fsck and md5sum (shipped by `Lab::disk_image`) and prints "L1: key=value"
//! lines inside the case (`Case::after` with `l1_cat`, `l1_size`, `l1_fsck`, `l1_md5`).
//!
//! Booting from the disk: Debian's kernel has virtio_pci, virtio_blk and ext4 as modules, so
//! `root=/dev/vda` without an initramfs cannot work. `stage1()` is a minimal initramfs that
//! loads `ROOT_MODULES`, mounts /dev/vda and `switch_root`s to the disk's /sbin/init.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::process::Command;

use crate::guest::Guest;
use crate::initramfs::BUSYBOX;
use crate::{run_tool, Error, Result};

/// What L2 needs to mount an ext4 root on virtio-blk: ext4's crc32c is a soft dependency
/// (modules.softdep), not in modules.dep, so it is named here.
pub const ROOT_MODULES: &[&str] = &["virtio_pci", "virtio_blk", "crc32c_generic", "ext4"];

/// e2fsprogs' tools in L1 (`Lab::disk_image` ships them from the same paths on L0).
pub const DEBUGFS: &str = "/usr/sbin/debugfs";
pub const E2FSCK: &str = "/usr/sbin/e2fsck";

/// The stage-1 initramfs that boots L2 from an ext4 /dev/vda (see the module's docs).
pub fn stage1() -> Guest {
    ROOT_MODULES
        .iter()
        .fold(Guest::new(), |g, m| g.module(m))
        .switch_root("/dev/vda", "ext4")
}

/// An ext4 root file system for L2: busybox (static) with its applets, and an /sbin/init
/// that prints the usual markers (guest.rs), then
/// `L2: root=<device> fstype=<type> ro=<0|1>` (the mount of /), runs the extra lines,
/// syncs, remounts / read-only (so the image is clean, with nothing left in the journal,
/// when L1 inspects it), prints "L2: done" and powers off.
/// The lines may use `mib_s MIB COMMAND...`, which runs COMMAND (a dd moving MIB MiB) and
/// prints its MiB/s, or "failed". Busybox's dd prints no rate and its date no fractions:
/// it times with /proc/uptime, in steps of 10 ms.
#[derive(Clone, Debug)]
pub struct RootDisk {
    lines: Vec<String>,
    size_mib: u64,
}

impl Default for RootDisk {
    fn default() -> RootDisk {
        RootDisk {
            lines: Vec::new(),
            size_mib: 64,
        }
    }
}

impl RootDisk {
    pub fn new() -> RootDisk {
        RootDisk::default()
    }

    /// The image's size (default 64 MiB).
    pub fn size_mib(mut self, n: u64) -> RootDisk {
        self.size_mib = n;
        self
    }

    /// A shell line of /sbin/init, run after the root marker; print `L2: key=value` markers.
    pub fn line(mut self, line: &str) -> RootDisk {
        self.lines.push(line.to_string());
        self
    }

    /// The disk's /sbin/init.
    pub fn init_script(&self) -> String {
        let mut s = String::from(INIT_PROLOGUE);
        for l in &self.lines {
            s.push_str(l);
            s.push('\n');
        }
        s.push_str(INIT_EPILOGUE);
        s
    }

    /// Writes the image to `out` (`mke2fs -t ext4 -d`, from a tree next to it).
    pub fn build(&self, out: &Path) -> Result<()> {
        let tree = out.with_extension("tree");
        let _ = fs::remove_dir_all(&tree);
        for d in [
            "bin", "sbin", "usr/bin", "usr/sbin", "proc", "sys", "dev", "tmp", "etc", "root",
        ] {
            fs::create_dir_all(tree.join(d))?;
        }
        fs::copy(BUSYBOX, tree.join("bin/busybox"))
            .map_err(|e| Error::new(format!("{BUSYBOX}: {e}: run resources/lab/setup.sh")))?;
        let list = Command::new(BUSYBOX).arg("--list-full").output()?;
        for applet in String::from_utf8_lossy(&list.stdout).lines() {
            // /sbin/init is ours; linuxrc is of no use.
            if applet.is_empty() || applet == "sbin/init" || applet == "linuxrc" {
                continue;
            }
            let link = tree.join(applet);
            if !link.exists() && applet != "bin/busybox" {
                symlink("/bin/busybox", link)?;
            }
        }
        let init = tree.join("sbin/init");
        fs::write(&init, self.init_script())?;
        fs::set_permissions(&init, fs::Permissions::from_mode(0o755))?;
        let _ = fs::remove_file(out);
        let made = run_tool(
            Command::new("mke2fs")
                .args(["-q", "-F", "-t", "ext4", "-L", "l2root"])
                .args(["-E", "root_owner=0:0", "-d"])
                .arg(&tree)
                .arg(out)
                .arg(format!("{}M", self.size_mib)),
        );
        let _ = fs::remove_dir_all(&tree);
        made.map_err(|e| {
            Error::new(format!(
                "{e} (mke2fs is e2fsprogs: run resources/lab/setup.sh)"
            ))
        })
    }
}

const INIT_PROLOGUE: &str = r#"#!/bin/sh
export PATH=/sbin:/usr/sbin:/bin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
[ -c /dev/null ] || mount -t devtmpfs devtmpfs /dev
echo 'L2: init'
echo "L2: cpus=$(grep -c ^processor /proc/cpuinfo)"
echo "L2: memtotal_kb=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)"
echo "L2: uname=$(uname -r)"
set -- $(awk '$2 == "/" { d = $1; t = $3; o = $4 } END { print d, t, o }' /proc/mounts)
case ",$3," in *,ro,*) ro=1 ;; *) ro=0 ;; esac
echo "L2: root=$1 fstype=$2 ro=$ro"
mib_s() {
    mib=$1
    shift
    read t0 _ </proc/uptime
    "$@" 2>/dev/null || { echo failed; return; }
    read t1 _ </proc/uptime
    awk -v m="$mib" -v a="$t0" -v b="$t1" \
        'BEGIN { d = b - a; if (d < 0.01) d = 0.01; printf "%.1f\n", m / d }'
}
"#;

const INIT_EPILOGUE: &str = r#"sync
mount -o remount,ro / && echo 'L2: root_clean=1'
echo 'L2: done'
poweroff -f
"#;

/// Writes a raw image of `bytes` bytes of a fixed text pattern to `out`; returns its md5.
pub fn pattern_image(out: &Path, bytes: usize) -> Result<String> {
    let line = b"zhitong lab: a read-only virtio-blk disk\n";
    let data: Vec<u8> = line.iter().copied().cycle().take(bytes).collect();
    fs::write(out, data)?;
    md5(out)
}

/// The md5 of a host file (as `md5sum` prints it).
pub fn md5(path: &Path) -> Result<String> {
    let out = Command::new("md5sum")
        .arg(path)
        .output()
        .map_err(|e| Error::new(format!("md5sum: {e}")))?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .next()
        .filter(|h| h.len() == 32)
        .map(str::to_string)
        .ok_or_else(|| Error::new(format!("md5sum {}: {text}", path.display())))
}

/// What `DEBUGFS -R 'cmd' image` prints on stdout (no banner, no pager).
fn debugfs(image: &str, cmd: &str) -> String {
    format!("DEBUGFS_PAGER=__none__ {DEBUGFS} -R '{cmd}' {image} 2>/dev/null")
}

/// An L1 line printing "L1: `key`=<first line of `path` in the ext4 `image`>".
pub fn l1_cat(image: &str, path: &str, key: &str) -> String {
    format!(
        "echo \"L1: {key}=$({} | head -n 1)\"",
        debugfs(image, &format!("cat {path}"))
    )
}

/// An L1 line printing "L1: `key`=<size in bytes of `path` in the ext4 `image`>".
pub fn l1_size(image: &str, path: &str, key: &str) -> String {
    format!(
        "echo \"L1: {key}=$({} | sed -n 's/.*Size: \\([0-9]*\\).*/\\1/p' | head -n 1)\"",
        debugfs(image, &format!("stat {path}"))
    )
}

/// An L1 line printing "L1: `key`=<`e2fsck -fn` status of `image`: 0 is clean>".
pub fn l1_fsck(image: &str, key: &str) -> String {
    format!("{E2FSCK} -fn {image} >/dev/null 2>&1; echo \"L1: {key}=$?\"")
}

/// An L1 line printing "L1: `key`=<md5 of `image`>".
pub fn l1_md5(image: &str, key: &str) -> String {
    format!("echo \"L1: {key}=$(md5sum < {image} | cut -d' ' -f1)\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_script_is_shell() {
        let s = RootDisk::new().line("echo 'L2: x=1'").init_script();
        assert!(s.starts_with("#!/bin/sh\n"));
        assert!(s.contains("echo 'L2: x=1'\nsync\n"), "{s}");
        let out = Command::new("sh")
            .arg("-n")
            .arg("-c")
            .arg(&s)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    }

    #[test]
    fn mib_s_times_a_command() {
        let script = format!(
            "{}\nmib_s 8 true; mib_s 8 false",
            INIT_PROLOGUE
                .lines()
                .skip_while(|l| !l.starts_with("mib_s"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        let out = Command::new("sh").arg("-c").arg(&script).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines.len() == 2 && lines[0].parse::<f64>().is_ok_and(|v| v > 0.0),
            "{text}"
        );
        assert_eq!(lines[1], "failed");
    }

    /// The image holds the tree: debugfs on L0 finds /sbin/init and busybox's applets.
    #[test]
    fn root_image_is_ext4_with_init() {
        let dir = std::env::temp_dir().join(format!("zt-disk-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let img = dir.join("root.img");
        RootDisk::new().size_mib(16).build(&img).unwrap();
        assert_eq!(fs::metadata(&img).unwrap().len(), 16 << 20);
        let cat = Command::new(DEBUGFS)
            .args(["-R", "cat /sbin/init"])
            .arg(&img)
            .output()
            .unwrap();
        let init = String::from_utf8_lossy(&cat.stdout);
        assert!(init.contains("L2: root="), "{init}");
        let ls = Command::new(DEBUGFS)
            .args(["-R", "stat /bin/sh"])
            .arg(&img)
            .output()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&ls.stdout).contains("/bin/busybox"),
            "{ls:?}"
        );
        let md5 = pattern_image(&dir.join("ro.img"), 4096).unwrap();
        assert_eq!(md5.len(), 32);
        fs::remove_dir_all(&dir).unwrap();
    }
}
