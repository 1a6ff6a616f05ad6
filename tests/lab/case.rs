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

/// A virtio-blk disk of a case: an image file in L1 (see `Case::disk`).
#[derive(Clone, Debug)]
struct Disk {
    image: String,
    readonly: bool,
    serial: Option<String>,
}

/// A virtio-net device of a case: a tap in L1 (see `Case::net`).
#[derive(Clone, Debug)]
struct Nic {
    tap: String,
    mac: Option<String>,
}

/// The virtio-vsock device of a case (see `Case::vsock`).
#[derive(Clone, Debug)]
struct Vsock {
    cid: u32,
    socket: String,
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
    disks: Vec<Disk>,
    nics: Vec<Nic>,
    vsock: Option<Vsock>,
    before: Vec<String>,
    after: Vec<String>,
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
            disks: Vec::new(),
            nics: Vec::new(),
            vsock: None,
            before: Vec::new(),
            after: Vec::new(),
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

    /// The case run by `vmm` in L1.
    pub fn with_vmm(vmm: Vmm, name: &str) -> Case {
        match vmm {
            Vmm::Zhitong => Case::new(name),
            Vmm::Qemu => Case::qemu_l1(name),
            Vmm::CloudHypervisor => Case::cloud_hypervisor_l1(name),
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

    /// A virtio-blk disk (modern virtio-pci) backed by the file `image_in_l1` (raw), e.g. one
    /// shipped with `Lab::disk_image`; the guest sees the disks as vda, vdb, ... in the order
    /// they are added. `readonly` makes the device read-only (VIRTIO_BLK_F_RO); `serial` is
    /// what the guest reads back with VIRTIO_BLK_T_GET_ID (/sys/block/vdX/serial). Rendered as
    /// zhitong's `--disk path=IMG[,readonly=on][,serial=S]`, QEMU's `-drive ... -device
    /// virtio-blk-pci,...` and Cloud Hypervisor's `--disk path=IMG[,readonly=on][,serial=S]`.
    pub fn disk(mut self, image_in_l1: &str, readonly: bool, serial: Option<&str>) -> Case {
        for s in [Some(image_in_l1), serial].into_iter().flatten() {
            assert!(
                !s.is_empty() && !s.contains([',', '=', ' ', '\'', '"']),
                "disk paths and serials take no ',', '=', quotes or spaces: {s:?}"
            );
        }
        assert!(
            image_in_l1.starts_with('/'),
            "L1 paths are absolute: {image_in_l1}"
        );
        self.disks.push(Disk {
            image: image_in_l1.into(),
            readonly,
            serial: serial.map(Into::into),
        });
        self
    }

    /// A virtio-net device (modern virtio-pci) on the tap `tap` in L1, with the MAC address
    /// `mac` ("52:54:00:12:34:56") or the VMM's default; the guest sees the devices as eth0,
    /// eth1, ... in the order they are added. Rendered as zhitong's and Cloud Hypervisor's
    /// `--net tap=T[,mac=M]` and QEMU's `-netdev tap,ifname=T,script=no,downscript=no
    /// -device virtio-net-pci,...,romfile=` (no PXE ROM: L1 ships none, zhitong has none). zhitong and QEMU open an existing tap (e.g. one made
    /// persistent with busybox `tunctl -t T` in a `before` line, addressed and up) or create
    /// it. L1 gets the tun module for it (l1.rs).
    pub fn net(mut self, tap: &str, mac: Option<&str>) -> Case {
        assert!(
            !tap.is_empty()
                && tap.len() < 16
                && tap
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)),
            "tap names are [A-Za-z0-9._-], at most 15 long: {tap:?}"
        );
        if let Some(m) = mac {
            let octets: Vec<&str> = m.split(':').collect();
            assert!(
                octets.len() == 6
                    && octets
                        .iter()
                        .all(|o| o.len() == 2 && o.chars().all(|c| c.is_ascii_hexdigit())),
                "a MAC is six hex octets with ':': {m:?}"
            );
        }
        self.nics.push(Nic {
            tap: tap.into(),
            mac: mac.map(Into::into),
        });
        self
    }

    /// A virtio-vsock device with guest CID `cid` (3 or more). zhitong and Cloud Hypervisor
    /// get `--vsock cid=N,socket=PATH`: the hybrid vsock of Firecracker/Cloud Hypervisor,
    /// where a host process connects to the Unix socket `socket`, writes `CONNECT <port>\n`
    /// and reads `OK <hostport>\n` to reach the guest's listener on that port, and a guest's
    /// connection to CID 2 port P reaches a host Unix listener at `<socket>_P`. QEMU gets
    /// `-device vhost-vsock-pci,guest-cid=N,disable-legacy=on` (`socket` unused): the kernel's
    /// vhost-vsock, so L1 reaches the guest with AF_VSOCK (CID `cid`) and the guest's
    /// connections to CID 2 reach L1's AF_VSOCK listeners; L1 gets vhost_vsock for it (l1.rs).
    pub fn vsock(mut self, cid: u32, socket: &str) -> Case {
        assert!(cid >= 3, "guest CIDs start at 3: {cid}");
        assert!(
            socket.starts_with('/') && !socket.contains([',', '=', ' ', '\'', '"']),
            "the vsock socket is an absolute L1 path without ',', '=', quotes or spaces: {socket:?}"
        );
        assert!(self.vsock.is_none(), "one vsock device per case");
        self.vsock = Some(Vsock {
            cid,
            socket: socket.into(),
        });
        self
    }

    /// L1 modules the case's devices need beyond L1's usual ones (see l1.rs).
    pub(crate) fn l1_modules(&self) -> Vec<&'static str> {
        let mut m = Vec::new();
        if self.raw.is_none() && !self.nics.is_empty() {
            m.push("tun");
        }
        if self.raw.is_none() && self.vsock.is_some() && self.vmm == Vmm::Qemu {
            m.push("vhost_vsock");
        }
        m
    }

    /// A shell line L1 runs inside the case, before the VMM starts (e.g. copying an image).
    pub fn before(mut self, line: &str) -> Case {
        self.before.push(line.into());
        self
    }

    /// A shell line L1 runs inside the case once the VMM has exited, e.g. one that inspects a
    /// disk image and prints "L1: key=value" (the case's `l1_marker`s). The case's status
    /// stays the VMM's.
    pub fn after(mut self, line: &str) -> Case {
        self.after.push(line.into());
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
            return self.bracketed(raw.clone());
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
                for d in &self.disks {
                    v.extend(["--disk".into(), d.key_values()]);
                }
                v.extend(self.net_and_vsock_args());
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
                for (i, d) in self.disks.iter().enumerate() {
                    let mut drive = format!("file={},if=none,id=d{i},format=raw", d.image);
                    if d.readonly {
                        drive.push_str(",readonly=on");
                    }
                    // Modern virtio only, as zhitong offers.
                    let mut dev = format!("virtio-blk-pci,drive=d{i},disable-legacy=on");
                    if let Some(s) = &d.serial {
                        dev.push_str(&format!(",serial={s}"));
                    }
                    v.extend(["-drive".into(), drive, "-device".into(), dev]);
                }
                for (i, n) in self.nics.iter().enumerate() {
                    let netdev = format!("tap,id=n{i},ifname={},script=no,downscript=no", n.tap);
                    // No option ROM (PXE): zhitong has none, and L1 ships no efi-virtio.rom.
                    let mut dev = format!("virtio-net-pci,netdev=n{i},disable-legacy=on,romfile=");
                    if let Some(m) = &n.mac {
                        dev.push_str(&format!(",mac={m}"));
                    }
                    v.extend(["-netdev".into(), netdev, "-device".into(), dev]);
                }
                if let Some(vs) = &self.vsock {
                    v.extend([
                        "-device".into(),
                        format!("vhost-vsock-pci,guest-cid={},disable-legacy=on", vs.cid),
                    ]);
                }
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
                for d in &self.disks {
                    v.extend(["--disk".into(), d.key_values()]);
                }
                v.extend(self.net_and_vsock_args());
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
        let command = match (&self.stop, &self.probe) {
            (Some((signal, text)), _) => stop_script(&command, signal, text, &self.name),
            (None, Some((ready, script))) => probe_script(&command, ready, script),
            (None, None) => command,
        };
        self.bracketed(command)
    }

    /// zhitong's (and Cloud Hypervisor's) `--net tap=T[,mac=M]`... and `--vsock cid=N,socket=P`.
    fn net_and_vsock_args(&self) -> Vec<String> {
        let mut v = Vec::new();
        for n in &self.nics {
            let mut kv = format!("tap={}", n.tap);
            if let Some(m) = &n.mac {
                kv.push_str(&format!(",mac={m}"));
            }
            v.extend(["--net".into(), kv]);
        }
        if let Some(vs) = &self.vsock {
            v.extend([
                "--vsock".into(),
                format!("cid={},socket={}", vs.cid, vs.socket),
            ]);
        }
        v
    }

    /// `command` between the `before` and `after` lines, its exit status kept.
    fn bracketed(&self, command: String) -> String {
        if self.before.is_empty() && self.after.is_empty() {
            return command;
        }
        // The VMM's part in a subshell (the stop/probe scripts `exit`), its status kept.
        let mut s = String::new();
        for l in &self.before {
            s.push_str(l);
            s.push('\n');
        }
        s.push_str(&format!("(\n{command}\n)\nrc=$?\n"));
        for l in &self.after {
            s.push_str(l);
            s.push('\n');
        }
        s.push_str("exit $rc");
        s
    }
}

impl Disk {
    /// zhitong's (and Cloud Hypervisor's) `path=IMG[,readonly=on][,serial=S]`.
    fn key_values(&self) -> String {
        let mut kv = format!("path={}", self.image);
        if self.readonly {
            kv.push_str(",readonly=on");
        }
        if let Some(s) = &self.serial {
            kv.push_str(&format!(",serial={s}"));
        }
        kv
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

    #[test]
    fn disks_for_each_vmm() {
        let c = Case::new("d")
            .timings(false)
            .disk("/disks/root.img", false, Some("zt-root"))
            .disk("/disks/ro.img", true, None);
        assert!(
            c.command().ends_with(
                "--memory 512M --disk path=/disks/root.img,serial=zt-root \
                 --disk path=/disks/ro.img,readonly=on"
            ),
            "{}",
            c.command()
        );
        let q = Case::qemu_l1("q")
            .disk("/disks/root.img", false, Some("zt-root"))
            .disk("/disks/ro.img", true, None);
        assert!(
            q.command().ends_with(
                "-drive file=/disks/root.img,if=none,id=d0,format=raw \
                 -device virtio-blk-pci,drive=d0,disable-legacy=on,serial=zt-root \
                 -drive file=/disks/ro.img,if=none,id=d1,format=raw,readonly=on \
                 -device virtio-blk-pci,drive=d1,disable-legacy=on"
            ),
            "{}",
            q.command()
        );
        let ch = Case::cloud_hypervisor_l1("ch").disk("/disks/ro.img", true, Some("s"));
        assert!(
            ch.command()
                .ends_with("--disk path=/disks/ro.img,readonly=on,serial=s"),
            "{}",
            ch.command()
        );
    }

    #[test]
    fn net_for_each_vmm() {
        let c = Case::new("n")
            .timings(false)
            .disk("/disks/a.img", false, None)
            .net("zt0", Some("52:54:00:12:34:56"))
            .net("zt1", None);
        assert!(
            c.command().ends_with(
                "--disk path=/disks/a.img --net tap=zt0,mac=52:54:00:12:34:56 --net tap=zt1"
            ),
            "{}",
            c.command()
        );
        assert_eq!(c.l1_modules(), ["tun"]);
        let q = Case::qemu_l1("q")
            .net("zt0", Some("52:54:00:12:34:56"))
            .net("zt1", None);
        assert!(
            q.command().ends_with(
                "-netdev tap,id=n0,ifname=zt0,script=no,downscript=no \
                 -device virtio-net-pci,netdev=n0,disable-legacy=on,romfile=,mac=52:54:00:12:34:56 \
                 -netdev tap,id=n1,ifname=zt1,script=no,downscript=no \
                 -device virtio-net-pci,netdev=n1,disable-legacy=on,romfile="
            ),
            "{}",
            q.command()
        );
        let ch = Case::cloud_hypervisor_l1("ch").net("zt0", Some("52:54:00:00:00:01"));
        assert!(
            ch.command()
                .ends_with("--console off --net tap=zt0,mac=52:54:00:00:00:01"),
            "{}",
            ch.command()
        );
        assert!(Case::new("plain").l1_modules().is_empty());
    }

    #[test]
    fn vsock_for_each_vmm() {
        let c = Case::new("v")
            .timings(false)
            .net("zt0", None)
            .vsock(3, "/tmp/v.sock");
        assert!(
            c.command()
                .ends_with("--memory 512M --net tap=zt0 --vsock cid=3,socket=/tmp/v.sock"),
            "{}",
            c.command()
        );
        // The hybrid vsock needs no host module; QEMU's vhost-vsock does.
        assert_eq!(c.l1_modules(), ["tun"]);
        let q = Case::qemu_l1("q").vsock(3, "/tmp/v.sock");
        assert!(
            q.command()
                .ends_with("-device vhost-vsock-pci,guest-cid=3,disable-legacy=on"),
            "{}",
            q.command()
        );
        assert_eq!(q.l1_modules(), ["vhost_vsock"]);
        let ch = Case::cloud_hypervisor_l1("ch").vsock(4, "/tmp/ch.sock");
        assert!(
            ch.command().ends_with("--vsock cid=4,socket=/tmp/ch.sock"),
            "{}",
            ch.command()
        );
    }

    #[test]
    #[should_panic(expected = "guest CIDs")]
    fn a_reserved_cid_is_refused() {
        let _ = Case::new("x").vsock(2, "/tmp/v.sock");
    }

    #[test]
    #[should_panic(expected = "a MAC")]
    fn a_malformed_mac_is_refused() {
        let _ = Case::new("x").net("zt0", Some("52:54:00:12:34"));
    }

    #[test]
    fn before_and_after_keep_the_vmm_status() {
        let c = Case::new("b")
            .timings(false)
            .before("cp /a /b")
            .after("echo \"L1: x=$(cat /b)\"")
            .stop_with("TERM", "L2: done");
        let script = c.command();
        assert!(
            script.starts_with("cp /a /b\n(\n/bin/zhitong run "),
            "{script}"
        );
        assert!(
            script.ends_with("\n)\nrc=$?\necho \"L1: x=$(cat /b)\"\nexit $rc"),
            "{script}"
        );
        assert_shell_syntax(&script);
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(
                Case::shell("s", "echo vmm; exit 3")
                    .after("echo after")
                    .command(),
            )
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(3));
        assert_eq!(String::from_utf8_lossy(&out.stdout), "vmm\nafter\n");
    }

    #[test]
    #[should_panic(expected = "disk paths")]
    fn a_disk_path_with_a_comma_is_refused() {
        let _ = Case::new("x").disk("/a,b.img", false, None);
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
