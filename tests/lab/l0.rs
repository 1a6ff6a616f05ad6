//! L0: qemu-system-x86_64 under TCG, emulating AMD SVM and an Intel IOMMU,
//! booting L1. Its serial console (stdout) is captured line by line, with a
//! hard timeout.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::{Error, Result};

pub const QEMU: &str = "qemu-system-x86_64";

#[derive(Clone, Debug)]
pub struct L0 {
    pub memory: String,
    /// `-accel` (default "tcg,thread=multi")
    pub accel: String,
    pub smp: u32,
    pub cpu: String,
    /// Options of `-device intel-iommu` (e.g. add ",intremap=off" for INTx cases).
    pub iommu: String,
    /// Extra arguments after the IOMMU, e.g. `-device virtio-gpu-pci,...,addr=0x4`.
    pub args: Vec<String>,
    /// `-qmp unix:PATH,server=on,wait=off` (screendumps, diagnostics) when set.
    pub qmp: Option<PathBuf>,
    pub append: String,
    /// Boot L1 from the ELF vmlinux (PVH entry): ~3 s faster than the
    /// bzImage, which decompresses itself under TCG.
    pub boot_elf: bool,
    pub timeout: Duration,
    /// Killed as hung when the console is silent this long (default 90 s), or at once when
    /// L1's kernel reports a soft lockup.
    pub stall: Duration,
}

impl Default for L0 {
    fn default() -> L0 {
        L0 {
            memory: "3G".into(),
            accel: "tcg,thread=multi".into(),
            smp: 2,
            cpu: "EPYC".into(),
            iommu: "caching-mode=on,aw-bits=48".into(),
            args: Vec::new(),
            qmp: None,
            append: "console=ttyS0 intel_iommu=on iommu=pt quiet panic=-1".into(),
            boot_elf: true,
            timeout: Duration::from_secs(300),
            stall: Duration::from_secs(90),
        }
    }
}

/// What L0 printed.
pub struct L0Output {
    pub console: String,
    /// Each console line with its arrival time since L0 started
    pub lines: Vec<(Duration, String)>,
    /// QEMU's own stderr (warnings, errors)
    pub stderr: String,
    pub timed_out: bool,
    /// Killed after `stall` without a console line
    pub stalled: bool,
    /// On a timeout or stall: L0's vCPU registers (`info registers -a`), if QMP was on
    pub hang_registers: Option<String>,
    pub exit: Option<i32>,
    pub elapsed: Duration,
}

impl L0 {
    pub fn command(&self, kernel: &Path, initrd: &Path) -> Command {
        let mut cmd = Command::new(QEMU);
        cmd.args(["-machine", "q35", "-accel", &self.accel])
            .args([
                "-cpu",
                &self.cpu,
                "-smp",
                &self.smp.to_string(),
                "-m",
                &self.memory,
            ])
            .args(["-nographic", "-no-reboot", "-nic", "none", "-vga", "none"])
            // The IOMMU must be created before the devices it translates for.
            .args(["-device", &format!("intel-iommu,{}", self.iommu)])
            .args(["-global", "q35-pcihost.pci-hole64-size=64G"])
            .args(&self.args);
        if let Some(sock) = &self.qmp {
            cmd.arg("-qmp")
                .arg(format!("unix:{},server=on,wait=off", sock.display()));
        }
        cmd.arg("-kernel").arg(kernel).arg("-initrd").arg(initrd);
        cmd.args(["-append", &self.append]);
        cmd
    }

    /// Boots L1 and returns the whole console once QEMU exits or the timeout
    /// kills it; `on_line` sees each console line as it arrives.
    pub fn run(
        &self,
        kernel: &Path,
        initrd: &Path,
        on_line: &mut dyn FnMut(&str),
    ) -> Result<L0Output> {
        let start = Instant::now();
        let mut child = self
            .command(kernel, initrd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                Error::new(format!(
                    "cannot start {QEMU}: {e}: run resources/lab/setup.sh"
                ))
            })?;
        let stdout = child.stdout.take().expect("piped stdout");
        let mut stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = mpsc::channel::<String>();
        let reader = thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            let mut buf = Vec::new();
            while matches!(r.read_until(b'\n', &mut buf), Ok(n) if n > 0) {
                let line = String::from_utf8_lossy(&buf).replace('\r', "");
                if tx.send(line.trim_end_matches('\n').to_string()).is_err() {
                    break;
                }
                buf.clear();
            }
        });
        let err_reader = thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        });

        let deadline = start + self.timeout;
        let mut console = String::new();
        let mut lines = Vec::new();
        let mut timed_out = false;
        let mut stalled = false;
        let mut hang_registers = None;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left.min(self.stall)) {
                Ok(line) => {
                    on_line(&line);
                    console.push_str(&line);
                    console.push('\n');
                    // L1's watchdog: a CPU made no progress for 20 s and more. The console
                    // then stays busy with its reports, so silence never comes: a hang.
                    let locked_up = line.contains("watchdog: BUG: soft lockup");
                    lines.push((start.elapsed(), line));
                    if locked_up {
                        stalled = true;
                        hang_registers = self.qmp.as_deref().map(|sock| {
                            hang_state(sock, self.smp).unwrap_or_else(|e| e.to_string())
                        });
                        let _ = child.kill();
                        break;
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if left <= self.stall {
                        timed_out = true;
                    } else {
                        stalled = true;
                    }
                    hang_registers = self
                        .qmp
                        .as_deref()
                        .map(|sock| hang_state(sock, self.smp).unwrap_or_else(|e| e.to_string()));
                    let _ = child.kill();
                    break;
                }
            }
        }
        let status = child.wait()?;
        let _ = reader.join();
        let stderr = err_reader.join().unwrap_or_default();
        Ok(L0Output {
            console,
            lines,
            stderr,
            timed_out,
            stalled,
            hang_registers,
            exit: status.code(),
            elapsed: start.elapsed(),
        })
    }
}

/// What L0's vCPUs are doing: all registers, then each vCPU's next instructions.
fn hang_state(qmp: &Path, smp: u32) -> Result<String> {
    let mut q = crate::qmp::Qmp::connect(qmp)?;
    let mut out = q.hmp("info registers -a")?;
    for cpu in 0..smp {
        let code = q.hmp_on("x/4i $pc", Some(cpu))?;
        out.push_str(&format!("CPU#{cpu} next instructions:\n{code}"));
    }
    Ok(out)
}
