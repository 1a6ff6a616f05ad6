//! The L1 initramfs: kvm_amd + vfio modules, optional vfio-pci bindings, the
//! VMM(s) under test, the L2 kernel and initramfs, and /cases.sh.

use std::path::{Path, PathBuf};

use crate::case::{self, Case, Vmm};
use crate::initramfs::Initramfs;
use crate::kernel::Kernel;
use crate::{Error, Result};

/// Loaded in L1 before the cases (missing built-ins are fine).
pub const L1_MODULES: &[&str] = &["kvm", "kvm_amd", "vfio", "vfio_iommu_type1", "vfio_pci"];

/// QEMU's firmware, needed when QEMU is the L1 VMM.
const QEMU_FIRMWARE: &[&str] = &[
    "bios-256k.bin",
    "linuxboot_dma.bin",
    "linuxboot.bin",
    "kvmvapic.bin",
    "pvh.bin",
    "multiboot_dma.bin",
    "vgabios-stdvga.bin",
];

pub struct L1Spec<'a> {
    pub kernel: &'a Kernel,
    pub cases: &'a [Case],
    pub modules: &'a [String],
    pub bind: &'a [String],
    pub lines: &'a [String],
    /// Extra files: (path in L1, contents, mode)
    pub files: &'a [(String, Vec<u8>, u32)],
    /// Host files: (path in L1, host path)
    pub host_files: &'a [(String, PathBuf)],
    /// Host programs with their shared libraries: (path in L1, host path)
    pub binaries: &'a [(String, PathBuf)],
    /// The zhitong binary, if any case runs it
    pub zhitong: Option<PathBuf>,
}

/// Builds the L2 images into `dir`, then L1's initramfs at `out`.
pub fn build(spec: &L1Spec, dir: &Path, out: &Path) -> Result<()> {
    let mut img = Initramfs::new()?;
    let default_l2 = dir.join("l2-initrd.img.gz");
    crate::guest::Guest::new().build(spec.kernel, &default_l2)?;
    let not_a_kernel = "this is not a kernel\n".repeat(64);
    img.file(case::L2_INITRD, &default_l2)
        .data(case::L2_NOT_A_KERNEL, not_a_kernel, 0o644);
    // Only the kernels some case names: the 66 MB vmlinux costs L1 time to load.
    let used = |path: &str| spec.cases.iter().any(|c| c.command().contains(path));
    if used(case::L2_VMLINUZ) {
        img.file(case::L2_VMLINUZ, &spec.kernel.vmlinuz);
    }
    if used(case::L2_VMLINUX) {
        img.file(case::L2_VMLINUX, &spec.kernel.vmlinux);
    }
    for c in spec.cases {
        if let Some(guest) = &c.guest {
            let path = dir.join(format!("l2-{}.img.gz", c.name));
            guest.build(spec.kernel, &path)?;
            img.file(&c.initrd_path(), &path);
        }
    }
    for (path, data, mode) in spec.files {
        img.data(path, data.clone(), *mode);
    }
    for (path, src) in spec.host_files {
        if !src.is_file() {
            return Err(Error::new(format!(
                "{} (for L1's {path}) missing",
                src.display()
            )));
        }
        img.file(path, src);
    }
    for (path, src) in spec.binaries {
        img.binary(path, src)?;
    }
    if let Some(bin) = &spec.zhitong {
        img.binary(case::ZHITONG, bin)?;
    }
    if spec.cases.iter().any(|c| c.vmm() == Some(Vmm::Qemu)) {
        add_qemu(&mut img)?;
    }
    if spec
        .cases
        .iter()
        .any(|c| c.vmm() == Some(Vmm::CloudHypervisor))
    {
        let ch = cloud_hypervisor_binary()
            .ok_or_else(|| crate::Error("no Cloud Hypervisor binary for its cases".into()))?;
        img.binary(case::CLOUD_HYPERVISOR, ch)?;
    }

    img.line("echo 'L1: init'");
    let mut modules: Vec<String> = L1_MODULES.iter().map(|s| s.to_string()).collect();
    modules.extend(spec.modules.iter().cloned());
    // What the cases' devices need on the host side: tun for taps, vhost_vsock for QEMU's
    // vsock (Case::l1_modules).
    for m in spec.cases.iter().flat_map(|c| c.l1_modules()) {
        if !modules.iter().any(|x| x == m) {
            modules.push(m.to_string());
        }
    }
    img.modules(spec.kernel, &modules, "L1")?;
    img.line("if [ -e /dev/kvm ]; then echo 'L1: kvm ready'; else echo 'L1: kvm missing'; fi");
    img.line("[ -e /dev/vfio/vfio ] && echo \"L1: vfio ready, iommu groups=$(ls /sys/kernel/iommu_groups | wc -l)\"");
    for bdf in spec.bind {
        img.line(bind_line(bdf));
    }
    for l in spec.lines {
        img.line(l.as_str());
    }
    img.data("/cases.sh", cases_script(spec.cases), 0o755);
    img.line("sh /cases.sh");
    img.line("echo 'L1: cases done'").line("poweroff -f");
    img.write(out)
}

/// A Cloud Hypervisor binary for L1: $CLOUD_HYPERVISOR, else
/// target/lab-cache/cloud-hypervisor (Debian packages none; see docs/performance.md).
pub fn cloud_hypervisor_binary() -> Option<std::path::PathBuf> {
    let path = std::env::var_os("CLOUD_HYPERVISOR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| crate::workspace_root().join("target/lab-cache/cloud-hypervisor"));
    path.is_file().then_some(path)
}

/// The VMMs a benchmark compares, as (VMM, case-name tag, name in tables): zhitong, QEMU,
/// and Cloud Hypervisor when a binary is at hand.
pub fn compared_vmms() -> Vec<(crate::Vmm, &'static str, &'static str)> {
    let mut v = vec![
        (crate::Vmm::Zhitong, "z", "zhitong"),
        (crate::Vmm::Qemu, "q", "QEMU"),
    ];
    if cloud_hypervisor_binary().is_some() {
        v.push((crate::Vmm::CloudHypervisor, "c", "Cloud Hypervisor"));
    }
    v
}

fn add_qemu(img: &mut Initramfs) -> Result<()> {
    let qemu = which(crate::l0::QEMU)?;
    img.binary(case::QEMU, qemu)?;
    for f in QEMU_FIRMWARE {
        let src = ["/usr/share/qemu", "/usr/share/seabios"]
            .iter()
            .map(|d| Path::new(d).join(f))
            .find(|p| p.exists());
        if let Some(src) = src {
            img.file(&format!("{}/{f}", case::QEMU_FIRMWARE), src);
        }
    }
    Ok(())
}

/// Hands PCI device `bdf` (e.g. 0000:00:04.0) to vfio-pci.
fn bind_line(bdf: &str) -> String {
    let dev = format!("/sys/bus/pci/devices/{bdf}");
    format!(
        "echo vfio-pci > {dev}/driver_override; \
         [ -e {dev}/driver ] && echo {bdf} > {dev}/driver/unbind; \
         echo {bdf} > /sys/bus/pci/drivers_probe; \
         echo \"L1: bind {bdf} driver=$(basename $(readlink {dev}/driver)) \
         group=$(basename $(readlink {dev}/iommu_group))\""
    )
}

/// Runs each case in turn; its stderr is printed after it ends, each line
/// prefixed (console::STDERR) so that tests can tell it from L2's console.
fn cases_script(cases: &[Case]) -> String {
    let mut s = String::from("#!/bin/sh\n");
    for c in cases {
        let cmd = c.command().replace('\'', "'\\''");
        // A case about to be killed first shows where each zhitong thread is (its state,
        // wait channel and kernel stack): a guest spinning and a VMM thread blocked look
        // alike from the console alone.
        let t = c.timeout.as_secs().max(1);
        s.push_str(&format!(
            "echo 'L1: case {name} begin'\n\
             timeout -s KILL {t} sh -c '{cmd}' </dev/null 2>/tmp/stderr &\n\
             case_pid=$!\n\
             (sleep {watch}; for p in $(pidof zhitong); do for k in /proc/$p/task/*; do \
             echo \"L1: hung: $(cat $k/comm) state=$(cut -d' ' -f3 $k/stat) wchan=$(cat $k/wchan 2>/dev/null) stack=$(head -4 $k/stack 2>/dev/null | cut -d' ' -f2 | tr '\\n' ' ')\"; \
             done; done) &\n\
             watch_pid=$!\n\
             wait $case_pid\n\
             rc=$?\n\
             kill $watch_pid 2>/dev/null\n\
             sed 's/^/{prefix}/' /tmp/stderr\n\
             echo \"L1: case {name} rc=$rc\"\n",
            name = c.name,
            watch = t.saturating_sub(3).max(1),
            prefix = crate::console::STDERR,
        ));
    }
    s
}

fn which(prog: &str) -> Result<PathBuf> {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join(prog))
        .find(|p| p.is_file())
        .ok_or_else(|| Error::new(format!("{prog} not found: run resources/lab/setup.sh")))
}
