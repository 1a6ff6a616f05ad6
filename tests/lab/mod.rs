//! The nested test lab: L0 QEMU (TCG, emulated SVM + VT-d) boots an L1 Debian
//! kernel with real kvm_amd + vfio, where the VMM under test boots L2.
//!
//! ```no_run
//! use zhitong_tests::{Case, Lab};
//! let run = Lab::new()?
//!     .memory("6G")
//!     .case(Case::new("smp2").cpus(2))
//!     .case(Case::new("big").cpus(2).memory("4G").bzimage())
//!     .run()?;
//! run.case("smp2").assert_booted();
//! assert_eq!(run.case("smp2").marker("cpus"), Some("2"));
//! # Ok::<(), zhitong_tests::Error>(())
//! ```
//! Prerequisites: `resources/lab/setup.sh` (QEMU, busybox, e2fsprogs, the guest kernel)
//! and `cargo build --release -p vmm` (or `ZHITONG_BIN=path`).

mod case;
mod console;
mod cpio;
pub mod disk;
mod guest;
mod initramfs;
mod kernel;
mod l0;
mod l1;
pub mod net;
mod ppm;
mod qmp;
pub mod vfio;

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

pub use case::{
    Case, L2Kernel, Vmm, DEFAULT_CMDLINE, L2_INITRD, L2_NOT_A_KERNEL, L2_VMLINUX, L2_VMLINUZ,
};
pub use console::CaseResult;
pub use disk::RootDisk;
pub use guest::Guest;
pub use initramfs::Initramfs;
pub use kernel::Kernel;
pub use l0::L0;
pub use l1::{cloud_hypervisor_binary, compared_vmms};
pub use ppm::Ppm;
pub use qmp::Qmp;

#[derive(Debug)]
pub struct Error(String);

impl Error {
    pub fn new(msg: impl Into<String>) -> Error {
        Error(msg.into())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Error {
        Error(e.to_string())
    }
}

pub type Result<T> = std::result::Result<T, Error>;

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_path_buf()
}

/// The VMM under test: `$ZHITONG_BIN`, else `<workspace>/target/release/zhitong`.
pub fn zhitong_bin() -> Result<PathBuf> {
    let path = match std::env::var_os("ZHITONG_BIN") {
        Some(p) => PathBuf::from(p),
        None => workspace_root().join("target/release/zhitong"),
    };
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error::new(format!(
            "VMM binary {} not found: build it with `cargo build --release -p vmm` \
             (or point ZHITONG_BIN at it)",
            path.display()
        )))
    }
}

/// An exclusive flock on `path`, held until the file is dropped.
fn lock(path: &Path) -> Result<std::fs::File> {
    use std::os::fd::AsRawFd;
    let file = std::fs::File::create(path)?;
    // SAFETY: flock on a descriptor this function owns; no memory is involved.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(Error::new(format!(
            "flock {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        )));
    }
    Ok(file)
}

pub(crate) fn run_tool(cmd: &mut Command) -> Result<()> {
    let out = cmd
        .output()
        .map_err(|e| Error::new(format!("{cmd:?}: {e}")))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(Error::new(format!("{cmd:?} failed: {err}")));
    }
    Ok(())
}

/// A lab run being configured: L0's machine, L1's setup and the cases.
pub struct Lab {
    name: String,
    kernel: Kernel,
    l0: L0,
    cases: Vec<Case>,
    l1_modules: Vec<String>,
    l1_lines: Vec<String>,
    files: Vec<(String, Vec<u8>, u32)>,
    host_files: Vec<(String, PathBuf)>,
    binaries: Vec<(String, PathBuf)>,
    bind: Vec<String>,
    retries: u32,
    before_boot: Option<Box<dyn FnMut() -> Result<()>>>,
    zhitong_args: Vec<String>,
}

impl Lab {
    /// Fails (naming resources/lab/setup.sh) if QEMU or the kernel cache is missing.
    pub fn new() -> Result<Lab> {
        let kernel = Kernel::locate()?;
        if Command::new(l0::QEMU).arg("--version").output().is_err() {
            return Err(Error::new(format!(
                "{} not installed: run resources/lab/setup.sh",
                l0::QEMU
            )));
        }
        Ok(Lab {
            name: "lab".into(),
            kernel,
            l0: L0::default(),
            cases: Vec::new(),
            l1_modules: Vec::new(),
            l1_lines: Vec::new(),
            files: Vec::new(),
            host_files: Vec::new(),
            binaries: Vec::new(),
            bind: Vec::new(),
            retries: 2,
            before_boot: None,
            zhitong_args: Vec::new(),
        })
    }

    /// Names the output directory target/lab-out/`<name>`.
    pub fn name(mut self, name: &str) -> Lab {
        self.name = name.into();
        self
    }

    /// L0's RAM (default 3G; a 4G L2 needs about 6G).
    pub fn memory(mut self, size: &str) -> Lab {
        self.l0.memory = size.into();
        self
    }

    /// How many times L0 is booted again after a hang (default 2; see L0::stall).
    pub fn retries(mut self, n: u32) -> Lab {
        self.retries = n;
        self
    }

    /// Runs before each boot of L0 (e.g. to reset the files backing L0's devices).
    pub fn before_boot(mut self, f: impl FnMut() -> Result<()> + 'static) -> Lab {
        self.before_boot = Some(Box::new(f));
        self
    }

    /// L0's hard timeout (default 300 s).
    pub fn timeout(mut self, t: Duration) -> Lab {
        self.l0.timeout = t;
        self
    }

    /// `-device SPEC` on L0, e.g. "virtio-gpu-pci,disable-legacy=on,iommu_platform=on,addr=0x4".
    pub fn device(self, spec: &str) -> Lab {
        self.l0_args(["-device", spec])
    }

    /// Raw extra arguments for L0 (after the IOMMU).
    pub fn l0_args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> Lab {
        self.l0.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Direct access to L0's settings (cpu model, iommu options, append, ...).
    pub fn l0(mut self, f: impl FnOnce(&mut L0)) -> Lab {
        f(&mut self.l0);
        self
    }

    /// Binds L1's PCI device `bdf` (e.g. "0000:00:04.0") to vfio-pci.
    pub fn bind(mut self, bdf: &str) -> Lab {
        self.bind.push(bdf.into());
        self
    }

    /// Another module to insmod in L1 (with its dependencies).
    pub fn l1_module(mut self, name: &str) -> Lab {
        self.l1_modules.push(name.into());
        self
    }

    /// A shell line L1 runs before the cases.
    pub fn l1_line(mut self, line: &str) -> Lab {
        self.l1_lines.push(line.into());
        self
    }

    /// A file in L1's initramfs at `path` (mode 0755: data or a program).
    pub fn file(mut self, path: &str, data: impl Into<Vec<u8>>) -> Lab {
        assert!(path.starts_with('/'), "L1 paths are absolute: {path}");
        self.files.push((path.into(), data.into(), 0o755));
        self
    }

    /// The host file `src` in L1's initramfs at `path` (its mode kept), read when L1's image
    /// is built.
    pub fn file_from(mut self, path: &str, src: impl AsRef<Path>) -> Lab {
        assert!(path.starts_with('/'), "L1 paths are absolute: {path}");
        self.host_files
            .push((path.into(), src.as_ref().to_path_buf()));
        self
    }

    /// The host program `src` in L1 at `path`, with the shared libraries `ldd` lists.
    pub fn binary(mut self, path: &str, src: impl AsRef<Path>) -> Lab {
        assert!(path.starts_with('/'), "L1 paths are absolute: {path}");
        if self.binaries.iter().all(|(p, _)| p != path) {
            self.binaries
                .push((path.into(), src.as_ref().to_path_buf()));
        }
        self
    }

    /// A disk image for the cases' `Case::disk`: the host file `src` becomes the file `path`
    /// in L1's RAM (see disk.rs for why it travels in L1's initramfs), and e2fsprogs'
    /// debugfs and e2fsck come along so that a case can inspect it afterwards
    /// (`disk::l1_cat` and friends).
    pub fn disk_image(self, path: &str, src: impl AsRef<Path>) -> Lab {
        self.file_from(path, src)
            .binary(disk::DEBUGFS, disk::DEBUGFS)
            .binary(disk::E2FSCK, disk::E2FSCK)
    }

    pub fn case(mut self, case: Case) -> Lab {
        assert!(
            self.cases.iter().all(|c| c.name != case.name),
            "duplicate case name {}",
            case.name
        );
        self.cases.push(case);
        self
    }

    pub fn kernel(&self) -> &Kernel {
        &self.kernel
    }

    /// L1 (and L2) boot `kernel` instead of the cache's current one.
    pub fn with_kernel(mut self, kernel: Kernel) -> Lab {
        self.kernel = kernel;
        self
    }

    /// Arguments added to every zhitong run of this lab, cases added later included (e.g.
    /// `--vfio-backend iommufd`), except a case that names a `--vfio-backend` itself.
    pub fn zhitong_args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> Lab {
        self.zhitong_args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn run(self) -> Result<LabRun> {
        self.run_with(|_| {})
    }

    /// Runs, showing each console line to `on_line` as it arrives.
    pub fn run_with(mut self, mut on_line: impl FnMut(&str)) -> Result<LabRun> {
        if !self.zhitong_args.is_empty() {
            let extra = std::mem::take(&mut self.zhitong_args);
            self.cases = std::mem::take(&mut self.cases)
                .into_iter()
                .map(|c| match c.vmm() {
                    // A case that names a backend itself keeps it.
                    Some(Vmm::Zhitong) if !c.command().contains("--vfio-backend") => {
                        c.args(extra.iter().cloned())
                    }
                    _ => c,
                })
                .collect();
        }
        let needs_zhitong = self
            .cases
            .iter()
            .any(|c| c.command().contains(case::ZHITONG));
        let zhitong = if needs_zhitong {
            Some(zhitong_bin()?)
        } else {
            None
        };
        let out = workspace_root().join("target/lab-out");
        std::fs::create_dir_all(&out)?;
        // One lab at a time on this machine: each L0 wants every core.
        let _lock = lock(&std::env::temp_dir().join("zhitong-lab.lock"))?;
        let dir = out.join(&self.name);
        std::fs::create_dir_all(&dir)?;
        let l1_img = dir.join("l1.cpio");
        let spec = l1::L1Spec {
            kernel: &self.kernel,
            cases: &self.cases,
            modules: &self.l1_modules,
            bind: &self.bind,
            lines: &self.l1_lines,
            files: &self.files,
            host_files: &self.host_files,
            binaries: &self.binaries,
            zhitong,
        };
        l1::build(&spec, &dir, &l1_img)?;

        // QMP, for screendumps (see ppm.rs) and registers on a hang.
        let qmp = std::env::temp_dir().join(format!(
            "zhitong-lab-{}-{}.qmp",
            std::process::id(),
            self.name
        ));
        let mut l0 = self.l0.clone();
        l0.qmp = Some(qmp.clone());
        let l1_kernel = if self.l0.boot_elf {
            &self.kernel.vmlinux
        } else {
            &self.kernel.vmlinuz
        };
        let mut attempt = 1;
        let (out, console) = loop {
            if let Some(f) = &mut self.before_boot {
                f()?;
            }
            let (out, console) = boot(&l0, l1_kernel, &l1_img, &dir, &qmp, &mut on_line)?;
            let hung = out.timed_out || out.stalled;
            // L1's kernel crashed before its init ran: no case had a chance. Seen with 6.12
            // under multi-threaded TCG ("Oops: int3" in a jump label being patched while
            // the other vCPU ran it), never with the VMM involved.
            let crashed = !console.contains("L1: init")
                && ["Oops:", "Kernel panic"]
                    .iter()
                    .any(|s| console.contains(s));
            if !(hung || crashed) || attempt > self.retries {
                break (out, console);
            }
            // The nested lab (TCG under TCG) now and then stops making progress for
            // minutes, whatever the VMM; one more boot tells a flake from a bug.
            let what = if crashed { "crashed" } else { "hung" };
            let kept = dir.join(format!("console-{what}-{attempt}.log"));
            std::fs::rename(dir.join("console.log"), &kept)?;
            eprintln!(
                "lab {}: L0 {what} (see {}); booting it again",
                self.name,
                kept.display()
            );
            attempt += 1;
        };
        let console = Arc::new(console);
        let names: Vec<String> = self.cases.iter().map(|c| c.name.clone()).collect();
        Ok(LabRun {
            cases: console::parse_cases(&console, &out.lines, &names),
            l1_ready: out
                .lines
                .iter()
                .find(|(_, l)| l.contains("L1: kvm ready"))
                .map(|(t, _)| *t),
            console,
            timed_out: out.timed_out || out.stalled,
            boots: attempt,
            elapsed: out.elapsed,
            out_dir: dir,
        })
    }
}

/// One boot of L0 with L1's image: its output, and the console with the lab's notes.
fn boot(
    l0: &L0,
    kernel: &Path,
    l1_img: &Path,
    dir: &Path,
    qmp: &Path,
    on_line: &mut dyn FnMut(&str),
) -> Result<(l0::L0Output, String)> {
    for e in std::fs::read_dir(dir)?.flatten() {
        if e.path().extension().is_some_and(|x| x == "ppm") {
            std::fs::remove_file(e.path())?;
        }
    }
    let mut screendumps = ppm::Screendumps::new(qmp.to_path_buf(), dir.to_path_buf());
    // console.log grows line by line, so a hung run can be watched.
    let mut log = std::io::BufWriter::new(std::fs::File::create(dir.join("console.log"))?);
    let out = l0.run(kernel, l1_img, &mut |line: &str| {
        use std::io::Write;
        let _ = writeln!(log, "{line}").and_then(|_| log.flush());
        screendumps.on_line(line);
        on_line(line);
    });
    let _ = std::fs::remove_file(qmp);
    let out = out?;
    drop(log);
    let mut console = out.console.clone();
    for note in &screendumps.notes {
        console.push_str(&format!("[lab: {note}]\n"));
    }
    if out.timed_out {
        console.push_str(&format!("[lab: L0 killed after {:?}]\n", l0.timeout));
    }
    if out.stalled {
        console.push_str(&format!(
            "[lab: L0 killed: no console output for {:?}]\n",
            l0.stall
        ));
    }
    if let Some(regs) = &out.hang_registers {
        console.push_str(&format!("[lab: L0 vCPUs when killed]\n{regs}\n"));
    }
    // TCG lacks a few of EPYC's features and says so: not news.
    let stderr: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| !l.contains("TCG doesn't support requested feature"))
        .collect();
    if !stderr.is_empty() {
        console.push_str(&format!("[lab: L0 stderr]\n{}\n", stderr.join("\n")));
    }
    std::fs::write(dir.join("console.log"), &console)?;
    Ok((out, console))
}

/// The outcome of one L0 boot.
pub struct LabRun {
    /// The whole L0 serial console (plus notes on timeout and QEMU's stderr)
    pub console: Arc<String>,
    pub cases: Vec<CaseResult>,
    /// L0 was killed: it ran out of time or its console went silent (L0::stall)
    pub timed_out: bool,
    /// How many times L0 was booted (more than 1 after a hang, see Lab::retries)
    pub boots: u32,
    /// Wall time of the (last) L0 run
    pub elapsed: Duration,
    /// When L1 printed "L1: kvm ready" (since L0 started)
    pub l1_ready: Option<Duration>,
    /// Images and console.log
    pub out_dir: PathBuf,
}

impl LabRun {
    /// The screendump `label` that case `case` asked for ("L2: screendump=`<label>`...").
    pub fn screendump(&self, case: &str, label: &str) -> Result<Ppm> {
        Ppm::load(&ppm::path(&self.out_dir, case, label))
    }

    /// The named case's result (panics, with the console, on an unknown name).
    pub fn case(&self, name: &str) -> &CaseResult {
        self.cases
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no case {name} in this run\n{}", self.console))
    }

    /// Whether L1 printed "L1: kvm ready".
    pub fn kvm_ready(&self) -> bool {
        self.console.contains("L1: kvm ready")
    }
}
