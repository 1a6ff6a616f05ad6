//! `zhitong run --disk`, `--net` and `--vsock` with bad images, taps and sockets: one line
//! naming the cause and the fix, exit 2, before KVM or any device is touched (these run on a
//! host without a usable /dev/kvm), and nothing left locked or bound.

use std::fs::{self, File};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A file that passes the kernel checks (an x86_64 ELF header) but is never loaded: the
/// disks fail first.
fn fake_kernel(dir: &Path) -> PathBuf {
    let mut h = vec![0u8; 4096];
    h[..7].copy_from_slice(b"\x7fELF\x02\x01\x01");
    h[16] = 2; // ET_EXEC
    h[18] = 0x3e; // EM_X86_64
    h[20] = 1; // EV_CURRENT
    h[24..32].copy_from_slice(&0x100_0000u64.to_le_bytes()); // entry
    h[32] = 64; // program headers right after the ELF header (none of them)
    h[52] = 64; // e_ehsize
    h[54] = 56; // e_phentsize
    h[58] = 64; // e_shentsize
    let path = dir.join("vmlinux");
    fs::write(&path, h).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    path
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("zhitong-disks-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    // Reachable by the unprivileged user a test may run zhitong as, whatever the umask.
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

fn image(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    File::create(&path).unwrap().set_len(1 << 20).unwrap();
    path
}

/// `zhitong run --kernel K --disk D...`: exit status and stderr.
fn run(kernel: &Path, disks: &[String]) -> (i32, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_zhitong"));
    cmd.args(["run", "--kernel", kernel.to_str().unwrap()]);
    for d in disks {
        cmd.args(["--disk", d]);
    }
    let out = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn refused(kernel: &Path, disks: &[String], want: &str) {
    let (status, stderr) = run(kernel, disks);
    assert_eq!(status, 2, "{disks:?}: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "{disks:?}: {stderr}");
    assert!(stderr.contains(want), "{disks:?}: {stderr}");
}

/// Whether `path` can be locked exclusively now (no one holds a lock on it).
fn unlocked(path: &Path) -> bool {
    let f = File::open(path).unwrap();
    // SAFETY: flock on an fd we own.
    unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}

#[test]
fn bad_images_are_one_line_with_exit_2() {
    let dir = scratch("bad");
    let kernel = fake_kernel(&dir);
    let good = image(&dir, "good.img");
    let missing = dir.join("missing.img");
    let p = |p: &Path| format!("path={}", p.display());
    refused(&kernel, &[p(&missing)], "missing.img: no such file");
    refused(&kernel, &[p(&dir)], "is a directory");
    refused(
        &kernel,
        &["path=/dev/null".into()],
        "not a regular file or block device",
    );
    refused(
        &kernel,
        &[p(&good), format!("path={}/./good.img", dir.display())],
        "is given to --disk twice (the 1st and the 2nd) and not read-only in both",
    );
    refused(
        &kernel,
        &[p(&good), p(&missing)],
        "missing.img: no such file",
    );
    assert!(unlocked(&good), "a failed run left good.img locked");
    refused(&kernel, &["good.img".into()], "write path=good.img");
    refused(
        &kernel,
        &[format!("{},cache=none", p(&good))],
        "disk option 'cache' is unknown",
    );
}

#[test]
fn an_image_locked_by_another_vm_is_refused() {
    let dir = scratch("locked");
    let kernel = fake_kernel(&dir);
    let img = image(&dir, "busy.img");
    let holder = File::open(&img).unwrap();
    // SAFETY: flock on an fd we own; released when `holder` closes.
    assert_eq!(unsafe { libc::flock(holder.as_raw_fd(), libc::LOCK_EX) }, 0);
    refused(
        &kernel,
        &[format!("path={}", img.display())],
        "in use by another process",
    );
    refused(
        &kernel,
        &[format!("path={},readonly=on", img.display())],
        "in use by another process",
    );
}

#[test]
fn a_read_only_file_needs_readonly_on() {
    let dir = scratch("ro");
    let kernel = fake_kernel(&dir);
    let img = image(&dir, "ro.img");
    fs::set_permissions(&img, fs::Permissions::from_mode(0o444)).unwrap();
    // SAFETY: geteuid takes nothing and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    // Root writes through file modes: run as nobody, who can only read the image, from a
    // copy of the binary nobody can reach (the checkout may be in a private directory).
    let bin = if root {
        let copy = dir.join("zhitong");
        fs::copy(env!("CARGO_BIN_EXE_zhitong"), &copy).unwrap();
        fs::set_permissions(&copy, fs::Permissions::from_mode(0o755)).unwrap();
        copy
    } else {
        PathBuf::from(env!("CARGO_BIN_EXE_zhitong"))
    };
    let mut cmd = Command::new(&bin);
    cmd.args(["run", "--kernel", kernel.to_str().unwrap()])
        .args(["--disk", &format!("path={}", img.display())]);
    if root {
        use std::os::unix::process::CommandExt;
        cmd.uid(65534).gid(65534);
    }
    let out = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(
            "ro.img: cannot be opened for writing (read-only file or file system); use readonly=on"
        ),
        "{stderr}"
    );
}

/// A tap another process holds open: one line naming it, exit 2. (Root with /dev/net/tun
/// only: the test makes the tap itself; it goes away when the test's fd closes.)
#[test]
fn a_busy_tap_is_refused() {
    // SAFETY: geteuid takes nothing and cannot fail.
    if unsafe { libc::geteuid() } != 0 || !Path::new("/dev/net/tun").exists() {
        eprintln!("a_busy_tap_is_refused: needs root and /dev/net/tun; skipped");
        return;
    }
    let dir = scratch("tap");
    let kernel = fake_kernel(&dir);
    let tun = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .unwrap();
    let name = format!("ztcli{}", std::process::id() % 100_000);
    // struct ifreq: the name, then the flags (IFF_TAP | IFF_NO_PI | IFF_VNET_HDR).
    let mut ifr = [0u8; 40];
    ifr[..name.len()].copy_from_slice(name.as_bytes());
    ifr[16..18].copy_from_slice(&(0x0002u16 | 0x1000 | 0x4000).to_le_bytes());
    const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
    // SAFETY: TUNSETIFF reads and writes a struct ifreq, which `ifr` is big enough for.
    let r = unsafe { libc::ioctl(tun.as_raw_fd(), TUNSETIFF as _, ifr.as_mut_ptr()) };
    assert_eq!(r, 0, "TUNSETIFF: {}", std::io::Error::last_os_error());
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_zhitong"));
    cmd.args(["run", "--kernel", kernel.to_str().unwrap()])
        .args(["--net", &format!("tap={name}")]);
    let out = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(&format!("tap {name}: busy: another process has it open")),
        "{stderr}"
    );
}

/// A vsock socket path where another process listens, that is not a socket, or whose
/// directory is missing, and a host cid: refused, and a file that is not a socket is kept.
#[test]
fn vsock_socket_paths_in_use_or_not_sockets_are_refused() {
    let dir = scratch("vsock");
    let kernel = fake_kernel(&dir);
    let busy = dir.join("busy.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&busy).unwrap();
    let plain = image(&dir, "plain.file");
    let run_vsock = |path: &Path| {
        let out = Command::new(env!("CARGO_BIN_EXE_zhitong"))
            .args(["run", "--kernel", kernel.to_str().unwrap()])
            .args(["--vsock", &format!("cid=3,socket={}", path.display())])
            .args(["--boot-timeout", "1s"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    for (path, want) in [
        (&busy, "is in use (a process listens on it)"),
        (&plain, "exists and is not a socket"),
    ] {
        let (status, stderr) = run_vsock(path);
        assert_eq!(status, Some(2), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains(want), "{stderr}");
    }
    assert!(plain.exists(), "a file that is not a socket was removed");
    let (status, stderr) = run_vsock(&dir.join("cid.sock").with_file_name("x").join("y.sock"));
    assert_eq!(status, Some(2), "{stderr}");
    assert!(stderr.contains("the directory does not exist"), "{stderr}");
    let (status, stderr) = {
        let out = Command::new(env!("CARGO_BIN_EXE_zhitong"))
            .args(["run", "--kernel", kernel.to_str().unwrap()])
            .args(["--vsock", "cid=2,socket=/tmp/x.sock"])
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    assert_eq!(status, Some(2), "{stderr}");
    assert!(stderr.contains("--vsock"), "{stderr}");
}
