//! Host-wide checks: KVM, the IOMMU, the VFIO modules, interrupt remapping, the memlock limit.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::cpu::Vendor;
use crate::remapping::{remapping_on, unsafe_interrupts_allowed};
use crate::vfio_backend::{has_iommufd, VfioBackend};
use crate::{Finding, Host};
use arch::units::format_size;

/// The API version every KVM since Linux 2.6.22 reports.
const KVM_API_VERSION: i32 = 12;
/// CAP_IPC_LOCK: VFIO does not count pinned pages against RLIMIT_MEMLOCK for holders.
const CAP_IPC_LOCK: u32 = 14;

/// KVM usable: /dev/kvm opens read-write and answers KVM_GET_API_VERSION with 12.
pub fn kvm(host: &Host) -> Finding {
    let path = host.dev_path("kvm");
    let vendor = Vendor::from_cpuinfo(&host.proc);
    let Ok(cpath) = CString::new(path.as_os_str().as_bytes()) else {
        return kvm_open_failed(&path, libc::EINVAL, vendor);
    };
    match kvm_ioctls::Kvm::new_with_path(&cpath) {
        Err(e) => kvm_open_failed(&path, e.errno(), vendor),
        Ok(kvm) => match kvm.get_api_version() {
            KVM_API_VERSION => Finding::ok(
                "kvm",
                format!("{} works (KVM API {KVM_API_VERSION})", path.display()),
            ),
            v => Finding::fail(
                "kvm",
                format!(
                    "{} is not a usable KVM device (KVM_GET_API_VERSION gave {v}, not {KVM_API_VERSION})",
                    path.display()
                ),
                "run on a Linux host whose kernel has KVM (kvm_intel or kvm_amd)",
            ),
        },
    }
}

/// Why /dev/kvm did not open (`errno`), and the fix; `zhitong run` says the same.
pub fn kvm_open_failed(path: &Path, errno: i32, vendor: Vendor) -> Finding {
    let module = match vendor {
        Vendor::Intel => "modprobe kvm_intel, with VT-x enabled in the firmware",
        Vendor::Amd => "modprobe kvm_amd, with SVM (AMD-V) enabled in the firmware",
        Vendor::Other => "modprobe kvm_intel (Intel) or kvm_amd (AMD), with virtualization enabled in the firmware",
    };
    let path = path.display();
    match errno {
        libc::ENOENT => Finding::fail(
            "kvm",
            format!("{path} does not exist: KVM is not loaded"),
            format!("load it: {module}"),
        ),
        libc::EACCES | libc::EPERM => Finding::fail(
            "kvm",
            format!("no permission to open {path}"),
            "run as root or add this user to the group that owns it (usually kvm)",
        ),
        _ => Finding::fail(
            "kvm",
            format!(
                "cannot open {path}: {}",
                std::io::Error::from_raw_os_error(errno)
            ),
            format!("make sure KVM is loaded ({module}) and this user can read and write {path}"),
        ),
    }
}

fn cmdline(host: &Host) -> String {
    std::fs::read_to_string(host.proc_path("cmdline")).unwrap_or_default()
}

fn has_param(cmdline: &str, param: &str) -> bool {
    cmdline.split_whitespace().any(|p| p == param)
}

fn is_virtual_machine(host: &Host) -> bool {
    std::fs::read_to_string(host.proc_path("cpuinfo")).is_ok_and(|t| {
        t.lines()
            .filter(|l| l.starts_with("flags"))
            .any(|l| l.split_whitespace().any(|f| f == "hypervisor"))
    })
}

/// How to turn the IOMMU on, from the CPU vendor, the kernel command line and whether this
/// host is itself a virtual machine. Shared by every "the IOMMU is off" message.
pub fn iommu_fix(host: &Host) -> String {
    let vendor = Vendor::from_cpuinfo(&host.proc);
    let (param, firmware) = vendor.iommu_param();
    let cmdline = cmdline(host);
    if let Some(off) = ["intel_iommu=off", "amd_iommu=off", "iommu=off"]
        .into_iter()
        .find(|p| has_param(&cmdline, p))
    {
        return format!("remove {off} from the kernel command line and reboot");
    }
    if is_virtual_machine(host) {
        return format!(
            "this host is a virtual machine without a virtual IOMMU: give it one (QEMU: -device intel-iommu,caching-mode=on with {param} on its kernel command line) or run on bare metal"
        );
    }
    if vendor != Vendor::Other && has_param(&cmdline, param) {
        return format!("{param} is already on the kernel command line: enable {firmware} in the firmware setup and reboot");
    }
    format!(
        "boot the host with {param} iommu=pt (add them to GRUB_CMDLINE_LINUX in /etc/default/grub, update-grub, reboot) and enable {firmware} in the firmware"
    )
}

/// IOMMU enabled: the kernel made IOMMU groups.
pub fn iommu(host: &Host) -> Finding {
    let groups = host.sysfs.iommu_groups();
    if groups.is_empty() {
        return Finding::fail(
            "iommu",
            "the host IOMMU is off (no IOMMU groups in /sys/kernel/iommu_groups)",
            iommu_fix(host),
        );
    }
    let units = host.sysfs.iommus();
    let units = if units.is_empty() {
        String::new()
    } else {
        format!(" ({})", units.join(", "))
    };
    Finding::ok(
        "iommu",
        format!("the IOMMU is on{units}: {} IOMMU groups", groups.len()),
    )
}

/// vfio-pci (the driver) and an IOMMU backend are loaded: vfio_iommu_type1 (the legacy
/// container's) or iommufd.
pub fn vfio_modules(host: &Host) -> Finding {
    let sys = &host.sysfs;
    let pci = sys.module_loaded("vfio_pci") || sys.driver_dir("vfio-pci").exists();
    let type1 = sys.module_loaded("vfio_iommu_type1");
    match (pci, type1) {
        (true, true) => Finding::ok("vfio-modules", "vfio-pci and vfio_iommu_type1 are loaded"),
        (true, false) if has_iommufd(host) => Finding::ok(
            "vfio-modules",
            "vfio-pci and iommufd are loaded (vfio_iommu_type1 is not: only the iommufd backend works)",
        ),
        (false, true) => Finding::fail(
            "vfio-modules",
            "the vfio-pci driver is not loaded",
            "modprobe vfio-pci (zhitong bind loads it too)",
        ),
        (true, false) => Finding::fail(
            "vfio-modules",
            "vfio_iommu_type1 (the VFIO IOMMU backend) is not loaded",
            "modprobe vfio_iommu_type1",
        ),
        (false, false) => Finding::fail(
            "vfio-modules",
            "vfio-pci and vfio_iommu_type1 are not loaded",
            "modprobe vfio-pci vfio_iommu_type1",
        ),
    }
}

/// Intel VT-d: ECAP bit 3 (IR) of any DMAR unit.
const INTEL_ECAP_IR: u64 = 1 << 3;

/// Whether the IOMMU hardware can remap interrupts: Some(false) only when every unit says no.
fn hardware_remapping(host: &Host) -> Option<bool> {
    let units = host.sysfs.iommus();
    let mut answers = units.iter().filter_map(|unit| {
        let dir = host.sysfs.path("class/iommu").join(unit);
        if let Ok(ecap) = std::fs::read_to_string(dir.join("intel-iommu/ecap")) {
            let ecap = u64::from_str_radix(ecap.trim().trim_start_matches("0x"), 16).ok()?;
            return Some(ecap & INTEL_ECAP_IR != 0);
        }
        // Every AMD-Vi unit remaps interrupts (it is part of the IVHD architecture).
        dir.join("amd-iommu").exists().then_some(true)
    });
    let first = answers.next()?;
    Some(first || answers.any(|a| a))
}

/// Interrupt remapping in use, or `backend` told to live without it.
pub fn interrupt_remapping(host: &Host, backend: VfioBackend) -> Finding {
    const CHECK: &str = "interrupt-remapping";
    let remapping = remapping_on(host);
    if remapping == Some(true) {
        return Finding::ok(CHECK, "interrupt remapping is on");
    }
    let module = backend.unsafe_interrupts_module();
    if unsafe_interrupts_allowed(host, module) {
        return Finding::warn(
            CHECK,
            format!("interrupt remapping is off; VFIO accepts devices anyway ({module} allow_unsafe_interrupts=Y), so a guest could forge interrupts"),
            "fine for trusted guests; for isolation turn remapping on (no intremap=off, IR enabled in the firmware) and set allow_unsafe_interrupts back to N",
        );
    }
    if remapping.is_none() {
        return Finding::warn(
            CHECK,
            format!(
                "cannot tell whether interrupt remapping is on ({} is unreadable)",
                host.proc_path("interrupts").display()
            ),
            format!("mount /proc; VFIO refuses devices without remapping unless {module} allow_unsafe_interrupts=1"),
        );
    }
    let unsafe_fix = format!("echo Y > /sys/module/{module}/parameters/allow_unsafe_interrupts (or options {module} allow_unsafe_interrupts=1 in /etc/modprobe.d/; a guest can then forge interrupts, so trusted guests only)");
    let cmdline = cmdline(host);
    let (cause, fix) = if host.sysfs.iommu_groups().is_empty() {
        (
            "interrupt remapping is off because the IOMMU is off".to_owned(),
            "turning the IOMMU on (see the IOMMU finding) turns remapping on too".to_owned(),
        )
    } else if let Some(p) = ["intremap=off", "nointremap"]
        .into_iter()
        .find(|p| has_param(&cmdline, p))
    {
        (
            format!("interrupt remapping is off ({p} on the kernel command line) and VFIO refuses devices without it"),
            format!("remove {p} from the kernel command line and reboot, or {unsafe_fix}"),
        )
    } else if hardware_remapping(host) == Some(false) {
        (
            "this IOMMU cannot remap interrupts (VT-d ECAP.IR is 0) and VFIO refuses devices without it".to_owned(),
            format!("allow unsafe interrupts: {unsafe_fix}"),
        )
    } else {
        (
            "interrupt remapping is off (no IR- interrupt domains in /proc/interrupts) and VFIO refuses devices without it".to_owned(),
            format!("enable interrupt remapping (x2APIC/IR in the firmware, no intremap=off), or {unsafe_fix}"),
        )
    };
    Finding::fail(CHECK, cause, fix)
}

/// RLIMIT_MEMLOCK covers `memory` bytes of guest RAM (VFIO pins all of it), or this process
/// holds CAP_IPC_LOCK (root does) and no limit applies.
pub fn memlock(host: &Host, memory: u64) -> Finding {
    const CHECK: &str = "memlock";
    let status = std::fs::read_to_string(host.proc_path("self/status")).unwrap_or_default();
    let cap_eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok());
    if cap_eff.is_some_and(|c| c & (1 << CAP_IPC_LOCK) != 0) {
        return Finding::ok(
            CHECK,
            format!(
                "this user has CAP_IPC_LOCK (root): the {} of guest RAM VFIO pins is not limited",
                format_size(memory)
            ),
        );
    }
    let limits = std::fs::read_to_string(host.proc_path("self/limits")).unwrap_or_default();
    let soft = limits
        .lines()
        .find(|l| l.starts_with("Max locked memory"))
        .and_then(|l| l.split_whitespace().nth(3))
        .map(|v| {
            if v == "unlimited" {
                Some(u64::MAX)
            } else {
                v.parse().ok()
            }
        });
    let want = format_size(memory);
    match soft.flatten() {
        None => Finding::warn(
            CHECK,
            "cannot read RLIMIT_MEMLOCK (/proc/self/limits)",
            format!("make sure ulimit -l is at least {want}, the guest RAM VFIO pins"),
        ),
        Some(u64::MAX) => Finding::ok(
            CHECK,
            format!("RLIMIT_MEMLOCK is unlimited: the {want} of guest RAM can be pinned"),
        ),
        Some(limit) if limit >= memory => Finding::ok(
            CHECK,
            format!(
                "RLIMIT_MEMLOCK {} covers the {want} of guest RAM VFIO pins",
                format_size(limit)
            ),
        ),
        Some(limit) => Finding::fail(
            CHECK,
            format!(
                "RLIMIT_MEMLOCK is {}, less than the {want} of guest RAM VFIO pins for DMA",
                format_size(limit)
            ),
            format!("raise it to at least {want}: ulimit -l unlimited (a memlock line in /etc/security/limits.conf raises the hard limit), LimitMEMLOCK=infinity in a systemd unit, or run as root"),
        ),
    }
}
