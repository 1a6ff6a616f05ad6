//! One case: a command L1 runs (normally a VMM booting L2), bracketed by
//! "L1: case `<name>` begin" and "L1: case `<name>` rc=`<status>`".

use std::time::Duration;

use crate::guest::Guest;

/// Paths inside L1.
pub const ZHITONG: &str = "/bin/zhitong";
pub const QEMU: &str = "/bin/qemu-system-x86_64";
pub const QEMU_FIRMWARE: &str = "/qemu";
pub const CLOUD_HYPERVISOR: &str = "/bin/cloud-hypervisor";
pub const L2_VMLINUX: &str = "/l2/vmlinux";
pub const L2_VMLINUZ: &str = "/l2/vmlinuz";
pub const L2_INITRD: &str = "/l2/initrd.img";
/// A small file of text, for bad-kernel cases.
pub const L2_NOT_A_KERNEL: &str = "/l2/not-a-kernel";

/// The kernel cmdline cases use unless told otherwise.
pub const DEFAULT_CMDLINE: &str = "console=ttyS0 quiet panic=-1";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Vmm {
    /// The VMM under test, `zhitong run ...`
    Zhitong,
    /// QEMU as the L1 VMM, for comparison
    Qemu,
    /// Cloud Hypervisor as the L1 VMM (the benchmark's, when a binary is at hand:
    /// `cloud_hypervisor_binary`)
    CloudHypervisor,
}

#[derive(Clone, Debug)]
pub enum L2Kernel {
    /// The ELF vmlinux extracted from the bzImage (fast under emulation)
    Elf,
    /// The Debian bzImage
    BzImage,
    /// Any path inside L1 (e.g. a bad kernel)
    Path(String),
}

#[derive(Clone, Debug)]
pub struct Case {
    pub(crate) name: String,
    vmm: Vmm,
    kernel: L2Kernel,
    initramfs: bool,
    cmdline: String,
    cpus: u32,
    memory: String,
    timings: bool,
    args: Vec<String>,
    raw: Option<String>,
    stop: Option<(String, String)>,
    probe: Option<(String, String)>,
    env: Vec<(String, String)>,
    pub(crate) guest: Option<Guest>,
    pub(crate) timeout: Duration,
}

impl Case {
    /// `zhitong run --kernel /l2/vmlinux --initramfs /l2/initrd.img
    ///  --cmdline "console=ttyS0 quiet panic=-1" --cpus 1 --memory 512M --timings`
    pub fn new(name: &str) -> Case {
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)),
            "case names are [A-Za-z0-9._-]+: {name:?}"
        );
        Case {
            name: name.to_string(),
            vmm: Vmm::Zhitong,
            kernel: L2Kernel::Elf,
            initramfs: true,
            cmdline: DEFAULT_CMDLINE.to_string(),
            cpus: 1,
            memory: "512M".to_string(),
            timings: true,
            args: Vec::new(),
            raw: None,
            stop: None,
            probe: None,
            env: Vec::new(),
            guest: None,
            timeout: Duration::from_secs(120),
        }
    }

    /// The same case run by QEMU in L1 (`-enable-kvm -cpu host`).
    pub fn qemu_l1(name: &str) -> Case {
        Case {
            vmm: Vmm::Qemu,
            timings: false,
            ..Case::new(name)
        }
    }

    /// The same case run by Cloud Hypervisor in L1.
    pub fn cloud_hypervisor_l1(name: &str) -> Case {
        Case {
            vmm: Vmm::CloudHypervisor,
            timings: false,
            ..Case::new(name)
        }
    }

    /// Runs an arbitrary shell command line in L1 as the case.
    pub fn shell(name: &str, command: &str) -> Case {
        Case {
            raw: Some(command.to_string()),
            ..Case::new(name)
        }
    }

    pub fn cpus(mut self, n: u32) -> Case {
        self.cpus = n;
        self
    }

    /// "512M", "4G" (zhitong's and QEMU's syntax alike).
    pub fn memory(mut self, size: &str) -> Case {
        self.memory = size.to_string();
        self
    }

    pub fn kernel(mut self, kernel: L2Kernel) -> Case {
        self.kernel = kernel;
        self
    }

    pub fn bzimage(self) -> Case {
        self.kernel(L2Kernel::BzImage)
    }

    pub fn no_initramfs(mut self) -> Case {
        self.initramfs = false;
        self
    }

    pub fn cmdline(mut self, cmdline: &str) -> Case {
        self.cmdline = cmdline.to_string();
        self
    }

    pub fn timings(mut self, on: bool) -> Case {
        self.timings = on;
        self
    }

    /// Extra VMM arguments, appended (e.g. `["--device", "0000:00:04.0"]`).
    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> Case {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn arg(self, arg: &str) -> Case {
        self.args([arg])
    }

    /// A custom L2 initramfs for this case (default: the plain `Guest::new()`).
    pub fn guest(mut self, guest: Guest) -> Case {
        self.guest = Some(guest);
        self
    }

    /// Runs the VMM in the background and, once its console shows `text`,
    /// sends it `signal` ("TERM", "INT"). The case's status is the VMM's;
    /// the console is printed after it ends, then "L1: stop_ms=<ms from the
    /// signal to the VMM's exit>", or "L1: stop=never-saw-text" if the VMM
    /// ended or 60 s passed before `text` appeared (it is signalled anyway).
    pub fn stop_with(mut self, signal: &str, text: &str) -> Case {
        self.stop = Some((signal.into(), text.into()));
        self
    }

    /// Runs the VMM in the background (its console still live) and, once the shell
    /// condition `ready` holds, runs `script` while it runs on; `$pid` is the VMM's in both.
    /// E.g. read /proc/$pid/status and print "L1: key=value" lines. The case's status is the
    /// VMM's; "L1: probe=never-ready" if it ended or 60 s passed first.
    pub fn probe_when(mut self, ready: &str, script: &str) -> Case {
        self.probe = Some((ready.into(), script.into()));
        self
    }

    /// An environment variable for the VMM (e.g. ZHITONG_TEST_FAULT).
    pub fn env(mut self, key: &str, value: &str) -> Case {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Killed (SIGKILL) in L1 after this long; default 120 s.
    pub fn timeout(mut self, t: Duration) -> Case {
        self.timeout = t;
        self
    }

    pub fn vmm(&self) -> Option<Vmm> {
        self.raw.is_none().then_some(self.vmm)
    }

    /// The L1 path of this case's L2 initramfs.
    pub(crate) fn initrd_path(&self) -> String {
        match self.guest {
            Some(_) => format!("/l2/{}.img", self.name),
            None => L2_INITRD.to_string(),
        }
    }

    /// The shell command line L1 runs.
    pub fn command(&self) -> String {
        if let Some(raw) = &self.raw {
            return raw.clone();
        }
        let kernel = match &self.kernel {
            L2Kernel::Elf => L2_VMLINUX.to_string(),
            L2Kernel::BzImage => L2_VMLINUZ.to_string(),
            L2Kernel::Path(p) => p.clone(),
        };
        let initrd = self.initramfs.then(|| self.initrd_path());
        let mut argv: Vec<String> = match self.vmm {
            Vmm::Zhitong => {
                let mut v = vec![ZHITONG.into(), "run".into(), "--kernel".into(), kernel];
                if let Some(i) = initrd {
                    v.extend(["--initramfs".into(), i]);
                }
                v.extend(["--cmdline".into(), self.cmdline.clone()]);
                v.extend(["--cpus".into(), self.cpus.to_string()]);
                v.extend(["--memory".into(), self.memory.clone()]);
                if self.timings {
                    v.push("--timings".into());
                }
                v
            }
            Vmm::Qemu => {
                let mut v: Vec<String> = [QEMU, "-L", QEMU_FIRMWARE, "-enable-kvm", "-cpu", "host"]
                    .map(String::from)
                    .into();
                v.extend(["-machine".into(), "q35".into()]);
                v.extend([
                    "-smp".into(),
                    self.cpus.to_string(),
                    "-m".into(),
                    self.memory.clone(),
                ]);
                v.extend(
                    ["-nographic", "-no-reboot", "-nic", "none", "-vga", "none"].map(String::from),
                );
                v.extend(["-kernel".into(), kernel]);
                if let Some(i) = initrd {
                    v.extend(["-initrd".into(), i]);
                }
                v.extend(["-append".into(), self.cmdline.clone()]);
                v
            }
            Vmm::CloudHypervisor => {
                let mut v = vec![CLOUD_HYPERVISOR.into(), "--kernel".into(), kernel];
                if let Some(i) = initrd {
                    v.extend(["--initramfs".into(), i]);
                }
                v.extend(["--cmdline".into(), self.cmdline.clone()]);
                v.extend(["--cpus".into(), format!("boot={}", self.cpus)]);
                v.extend(["--memory".into(), format!("size={}", self.memory)]);
                v.extend(["--serial", "tty", "--console", "off"].map(String::from));
                v
            }
        };
        argv.extend(self.args.iter().cloned());
        let env = self.env.iter().map(|(k, v)| format!("{k}={v}"));
        let command = env
            .chain(argv)
            .map(|a| shell_quote(&a))
            .collect::<Vec<_>>()
            .join(" ");
        match (&self.stop, &self.probe) {
            (Some((signal, text)), _) => stop_script(&command, signal, text, &self.name),
            (None, Some((ready, script))) => probe_script(&command, ready, script),
            (None, None) => command,
        }
    }
}

/// `command` in the background, signalled once its output shows `text`.
fn stop_script(command: &str, signal: &str, text: &str, name: &str) -> String {
    let out = format!("/tmp/{name}.out");
    let text = shell_quote(text);
    format!(
        "{command} >{out} &\n\
         pid=$!\n\
         i=0\n\
         until grep -qF {text} {out}; do\n\
         i=$((i+1))\n\
         if [ $i -gt 600 ] || ! kill -0 $pid 2>/dev/null; then echo 'L1: stop=never-saw-text'; break; fi\n\
         sleep 0.1\n\
         done\n\
         t0=$(cut -d' ' -f1 /proc/uptime)\n\
         kill -{signal} $pid\n\
         wait $pid\n\
         rc=$?\n\
         t1=$(cut -d' ' -f1 /proc/uptime)\n\
         cat {out}; echo\n\
         echo \"L1: stop_ms=$(awk \"BEGIN {{ printf \\\"%d\\\", ($t1 - $t0) * 1000 }}\")\"\n\
         exit $rc"
    )
}

/// `command` in the background; `script` runs once `ready` holds.
fn probe_script(command: &str, ready: &str, script: &str) -> String {
    format!(
        "{command} &\n\
         pid=$!\n\
         i=0\n\
         until {ready}; do\n\
         i=$((i+1))\n\
         if [ $i -gt 600 ] || ! kill -0 $pid 2>/dev/null; then echo 'L1: probe=never-ready'; break; fi\n\
         sleep 0.1\n\
         done\n\
         {script}\n\
         wait $pid"
    )
}

fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/-_.,:=+@%".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zhitong_command() {
        let c = Case::new("smp2")
            .cpus(2)
            .memory("4G")
            .bzimage()
            .arg("--device");
        assert_eq!(
            c.command(),
            "/bin/zhitong run --kernel /l2/vmlinuz --initramfs /l2/initrd.img \
             --cmdline 'console=ttyS0 quiet panic=-1' --cpus 2 --memory 4G --timings --device"
        );
    }

    #[test]
    fn qemu_command_and_custom_guest() {
        let c = Case::qemu_l1("q").no_initramfs().cmdline("a'b");
        assert!(
            c.command()
                .ends_with("-kernel /l2/vmlinux -append 'a'\\''b'"),
            "{}",
            c.command()
        );
        let c = Case::new("gpu").guest(Guest::new().module("virtio_gpu"));
        assert!(c.command().contains("--initramfs /l2/gpu.img"));
    }

    #[test]
    fn env_and_probe() {
        let c = Case::new("p")
            .timings(false)
            .env("ZHITONG_TEST_FAULT", "vcpu-syscall:2000");
        assert!(
            c.command()
                .starts_with("ZHITONG_TEST_FAULT=vcpu-syscall:2000 /bin/zhitong run "),
            "{}",
            c.command()
        );
        let c = c.probe_when("[ -e /proc/$pid ]", "echo \"L1: uid=$(id -u)\"");
        let script = c.command();
        assert!(script.contains("until [ -e /proc/$pid ]; do"), "{script}");
        assert!(
            script.contains("echo \"L1: uid=$(id -u)\"\nwait $pid"),
            "{script}"
        );
        assert_shell_syntax(&script);
    }

    #[test]
    fn stop_with_runs_a_shell_script() {
        let c = Case::new("t").timings(false).stop_with("TERM", "L2: done");
        let script = c.command();
        assert!(script.starts_with("/bin/zhitong run "), "{script}");
        assert!(
            script.contains("grep -qF 'L2: done' /tmp/t.out"),
            "{script}"
        );
        assert!(script.contains("kill -TERM $pid"), "{script}");
        assert_shell_syntax(&script);
    }

    /// `sh -n` accepts `script`.
    fn assert_shell_syntax(script: &str) {
        let out = std::process::Command::new("sh")
            .arg("-n")
            .arg("-c")
            .arg(script)
            .output()
            .unwrap();
        assert!(out.status.success(), "{script}\n{out:?}");
    }
}
