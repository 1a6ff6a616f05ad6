//! Boot tests in the nested lab: zhitong, inside L1, boots the Debian kernel
//! (L2) in several shapes. All cases share one L0 boot (the first test to
//! ask runs it); each test checks its own case.
//!
//! Needs resources/lab/setup.sh and `cargo build --release -p vmm`; without
//! them these tests fail with a message saying so (they never skip).

use std::sync::OnceLock;
use std::time::Duration;

use zhitong_tests::{Case, CaseResult, Kernel, L2Kernel, Lab, LabRun, L2_NOT_A_KERNEL};

const MIB: u64 = 1024 * 1024;

fn lab() -> &'static LabRun {
    static RUN: OnceLock<Result<LabRun, String>> = OnceLock::new();
    let run = RUN.get_or_init(|| {
        let lab = Lab::new()
            .map_err(|e| e.to_string())?
            .name("boot")
            .memory("6G")
            .timeout(Duration::from_secs(600))
            .case(Case::new("smp1"))
            .case(Case::new("smp2").cpus(2))
            .case(Case::new("mem4g").cpus(2).memory("4G"))
            .case(Case::new("bzimage").cpus(2).bzimage())
            .case(
                Case::new("noinitrd")
                    .no_initramfs()
                    .timeout(Duration::from_secs(60)),
            )
            .case(Case::new("badkernel").kernel(L2Kernel::Path(L2_NOT_A_KERNEL.into())))
            .case(Case::qemu_l1("qemu-reference"));
        let run = lab.run().map_err(|e| e.to_string())?;
        eprintln!("lab_boot: L0 run took {:.1} s", run.elapsed.as_secs_f64());
        for c in &run.cases {
            eprintln!("lab_boot: case {} rc={:?} in {:?}", c.name, c.rc, c.elapsed);
        }
        Ok(run)
    });
    match run {
        Ok(run) => run,
        Err(e) => panic!("lab setup failed: {e}"),
    }
}

/// Asserts a full L2 boot with `cpus` vCPUs and `mem_mib` of RAM.
fn assert_guest(c: &CaseResult, cpus: u64, mem_mib: u64) {
    c.assert_booted();
    c.check(
        c.marker_u64("cpus") == Some(cpus),
        &format!("want {cpus} cpus"),
    );
    // MemTotal excludes what the kernel reserves for itself.
    let kib = c.marker_u64("memtotal_kb").unwrap_or(0);
    let want = mem_mib * MIB / 1024;
    c.check(
        kib * 100 >= want * 85 && kib <= want,
        &format!("MemTotal {kib} kB not within 85-100% of {want} kB"),
    );
    let version = Kernel::locate().expect("kernel").version;
    c.check(
        c.marker("uname") == Some(version.as_str()),
        &format!("uname != {version}"),
    );
    if let Some(t) = &c.timings {
        eprintln!("{}: {t}", c.name);
    }
}

#[test]
fn l1_has_kvm() {
    let run = lab();
    assert!(run.kvm_ready(), "L1 has no /dev/kvm\n{}", run.console);
}

#[test]
fn one_vcpu_512m_elf_with_initramfs() {
    assert_guest(lab().case("smp1"), 1, 512);
}

#[test]
fn two_vcpus_512m() {
    assert_guest(lab().case("smp2"), 2, 512);
}

#[test]
fn two_vcpus_4g_across_the_pci_hole() {
    assert_guest(lab().case("mem4g"), 2, 4096);
}

#[test]
fn bzimage_boots() {
    assert_guest(lab().case("bzimage"), 2, 512);
}

#[test]
fn no_initramfs_panics_and_reboots() {
    let c = lab().case("noinitrd");
    c.check(
        c.console.contains("VFS: Unable to mount root fs"),
        "no 'VFS: Unable to mount root fs' panic",
    );
    c.check(!c.has_marker("init"), "L2 init ran without an initramfs?");
    c.check(c.rc == Some(0), "panic=-1 reboot should exit 0");
}

#[test]
fn bad_kernel_is_a_usage_error() {
    let c = lab().case("badkernel");
    c.check(c.rc == Some(2), "want exit status 2");
    // Kernel log lines from L1 ("[   12.3] ...") may interleave; ignore them.
    let lines: Vec<&str> = c
        .console
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('['))
        .collect();
    c.check(lines.len() == 1, "want exactly one error line");
    c.check(
        lines[0].to_lowercase().contains("kernel"),
        "error line should name the kernel",
    );
}

#[test]
fn qemu_as_l1_reference_boots() {
    let c = lab().case("qemu-reference");
    c.assert_booted();
    c.check(c.marker_u64("cpus") == Some(1), "want 1 cpu");
}
