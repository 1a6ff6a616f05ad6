//! Boot tests in the nested lab: zhitong, inside L1, boots the Debian kernel
//! (L2) in several shapes. All cases share one L0 boot (the first test to
//! ask runs it); each test checks its own case.
//!
//! Needs resources/lab/setup.sh and `cargo build --release -p vmm --features test-faults`
//! (a failure-path case injects a fault); without them these tests fail with a message
//! saying so (they never skip).

use std::sync::OnceLock;
use std::time::Duration;

use zhitong_tests::{Case, CaseResult, Guest, Kernel, L2Kernel, Lab, LabRun, L2_NOT_A_KERNEL};

const MIB: u64 = 1024 * 1024;

/// L1 paths of the tiny ELF kernels below.
const SPIN_ELF: &str = "/spin.elf";
const UD2_ELF: &str = "/ud2.elf";
/// Where the tiny kernels load and start (the kernel's usual 16 MiB).
const TINY_ELF_ENTRY: u64 = 0x100_0000;

/// A minimal x86_64 ELF executable: one PT_LOAD segment holding `code` at
/// physical (and virtual) address TINY_ELF_ENTRY, which is also the entry point.
fn tiny_elf(code: &[u8]) -> Vec<u8> {
    const EHDR: usize = 64;
    const PHDR: usize = 56;
    let offset = (EHDR + PHDR) as u64;
    let mut elf = Vec::new();
    // e_ident: magic, ELFCLASS64, ELFDATA2LSB, EV_CURRENT, System V ABI, padding
    elf.extend_from_slice(b"\x7fELF\x02\x01\x01\x00");
    elf.extend_from_slice(&[0; 8]);
    elf.extend_from_slice(&2u16.to_le_bytes()); // e_type: ET_EXEC
    elf.extend_from_slice(&62u16.to_le_bytes()); // e_machine: EM_X86_64
    elf.extend_from_slice(&1u32.to_le_bytes()); // e_version
    elf.extend_from_slice(&TINY_ELF_ENTRY.to_le_bytes()); // e_entry
    elf.extend_from_slice(&(EHDR as u64).to_le_bytes()); // e_phoff
    elf.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
    elf.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    elf.extend_from_slice(&(EHDR as u16).to_le_bytes()); // e_ehsize
    elf.extend_from_slice(&(PHDR as u16).to_le_bytes()); // e_phentsize
    elf.extend_from_slice(&1u16.to_le_bytes()); // e_phnum
    elf.extend_from_slice(&0u16.to_le_bytes()); // e_shentsize
    elf.extend_from_slice(&0u16.to_le_bytes()); // e_shnum
    elf.extend_from_slice(&0u16.to_le_bytes()); // e_shstrndx
    assert_eq!(elf.len(), EHDR);
    elf.extend_from_slice(&1u32.to_le_bytes()); // p_type: PT_LOAD
    elf.extend_from_slice(&5u32.to_le_bytes()); // p_flags: R+X
    elf.extend_from_slice(&offset.to_le_bytes()); // p_offset
    elf.extend_from_slice(&TINY_ELF_ENTRY.to_le_bytes()); // p_vaddr
    elf.extend_from_slice(&TINY_ELF_ENTRY.to_le_bytes()); // p_paddr
    elf.extend_from_slice(&(code.len() as u64).to_le_bytes()); // p_filesz
    elf.extend_from_slice(&(code.len() as u64).to_le_bytes()); // p_memsz
    elf.extend_from_slice(&1u64.to_le_bytes()); // p_align
    assert_eq!(elf.len(), EHDR + PHDR);
    elf.extend_from_slice(code);
    elf
}

/// A guest program that reads one byte of each of `pages` pages of unbacked guest-physical
/// space from `base` up (each read an MMIO exit the VMM answers with all-ones), mapping 2 MiB
/// at a time so the guest's own page tables stay small.
const TOUCH_C: &str = r#"
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
int main(int argc, char **argv) {
    unsigned long base = strtoul(argv[1], 0, 0), sum = 0;
    long pages = strtol(argv[2], 0, 0), chunk = 512;
    int fd = open("/dev/mem", O_RDONLY | O_SYNC);
    if (fd < 0) { perror("L2: open /dev/mem"); return 1; }
    for (long done = 0; done < pages; done += chunk) {
        long n = pages - done < chunk ? pages - done : chunk;
        volatile unsigned char *p = mmap(0, n * 4096, PROT_READ, MAP_SHARED, fd, base + done * 4096);
        if (p == MAP_FAILED) { perror("L2: mmap /dev/mem"); return 1; }
        for (long i = 0; i < n; i++) sum += p[i * 4096];
        munmap((void *)p, n * 4096);
    }
    printf("L2: touched=%ld sum=%lu\n", pages, sum);
    return 0;
}
"#;

/// Pages the RSS case touches, and where: 1 GiB into the 64-bit BAR window of a 512M guest
/// (it starts at 64 GiB), where nothing is mapped.
const TOUCH_PAGES: u64 = 100_000;
const TOUCH_BASE: u64 = (64 << 30) + (1 << 30);

/// `TOUCH_C` built static for the guest.
fn touch_program() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("zhitong-touch-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (src, bin) = (dir.join("touch.c"), dir.join("touch"));
    std::fs::write(&src, TOUCH_C).unwrap();
    let status = std::process::Command::new("gcc")
        .args(["-static", "-O2", "-o"])
        .arg(&bin)
        .arg(&src)
        .status()
        .expect("gcc for the lab's guest helper");
    assert!(status.success(), "gcc -static touch.c failed");
    bin
}

/// L1: run the touching guest, sample zhitong's VmRSS before and after the touches.
const RSS_SCRIPT: &str = r#"
/bin/zhitong run --kernel /l2/vmlinux --initramfs /l2/rss-img.img --cmdline 'console=ttyS0 quiet panic=-1' >/tmp/rss.out 2>/tmp/rss.err &
pid=$!
wait_for() { while ! grep -q "$1" /tmp/rss.out; do kill -0 $pid 2>/dev/null || return 1; sleep 0.2; done; }
wait_for 'L2: touch-start' && before=$(awk '/^VmRSS/ {print $2}' /proc/$pid/status)
wait_for 'L2: touched=' && after=$(awk '/^VmRSS/ {print $2}' /proc/$pid/status)
wait $pid
echo "RSS: rc=$? before_kb=$before after_kb=$after"
grep 'L2: touched=' /tmp/rss.out | sed 's/^/RSS: /'
sed 's/^/RSS: stderr: /' /tmp/rss.err
"#;

/// L1's pool of 2M pages.
const HP_2M: &str = "kernel/mm/hugepages/hugepages-2048kB";

/// zhitong's vCPU 0 thread exists: the guest runs.
const VCPU_RUNS: &str = "cat /proc/$pid/task/*/comm 2>/dev/null | grep -qx vcpu0";

/// How many of L1's 2M pages the running VM holds: in use plus reserved.
const HUGEPAGES_PROBE: &str = r#"d=/sys/kernel/mm/hugepages/hugepages-2048kB
echo "L1: hp_held=$(( $(cat $d/nr_hugepages) - $(cat $d/free_hugepages) + $(cat $d/resv_hugepages) ))""#;

fn lab() -> &'static LabRun {
    static RUN: OnceLock<Result<LabRun, String>> = OnceLock::new();
    let run = RUN.get_or_init(|| {
        let lab = Lab::new()
            .map_err(|e| e.to_string())?
            .name("boot")
            .memory("6G")
            .timeout(Duration::from_secs(300))
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
            .case(Case::qemu_l1("qemu-reference"))
            // The failure paths of `zhitong run`.
            .file(SPIN_ELF, tiny_elf(&[0xeb, 0xfe])) // jmp $
            .file(UD2_ELF, tiny_elf(&[0x0f, 0x0b])) // ud2, no IDT: triple fault
            .case(
                Case::new("sigterm")
                    .timings(false)
                    .guest(Guest::new().end_with("sleep 100000"))
                    .stop_with("TERM", "L2: done")
                    .timeout(Duration::from_secs(60)),
            )
            .case(
                // panic=0: the kernel panics and spins forever.
                Case::new("sigint")
                    .timings(false)
                    .no_initramfs()
                    .cmdline("console=ttyS0 quiet panic=0")
                    .stop_with("INT", "Kernel panic")
                    .timeout(Duration::from_secs(60)),
            )
            .case(Case::new("after-signals"))
            .case(
                Case::new("spin")
                    .timings(false)
                    .kernel(L2Kernel::Path(SPIN_ELF.into()))
                    .no_initramfs()
                    .args(["--boot-timeout", "5s"])
                    .timeout(Duration::from_secs(60)),
            )
            .case(
                Case::new("triple-fault")
                    .timings(false)
                    .kernel(L2Kernel::Path(UD2_ELF.into()))
                    .no_initramfs()
                    .timeout(Duration::from_secs(60)),
            )
            // A vCPU making a syscall its seccomp filter forbids (the binary is built with
            // --features test-faults), then a VM in the same L1.
            .case(
                Case::new("seccomp-violation")
                    .timings(false)
                    .env("ZHITONG_TEST_FAULT", "vcpu-syscall:300")
                    .timeout(Duration::from_secs(60)),
            )
            .case(Case::new("after-violation"))
            .case(Case::new("reboot").guest(Guest::new().end_with("reboot -f")))
            .case(Case::new("memory-too-big").timings(false).memory("64G"))
            // A guest touching 100k unbacked pages: the VMM's memory must not grow with them.
            .case(
                Case::new("rss-img")
                    .guest(
                        Guest::new()
                            .binary("/touch", touch_program())
                            .line("echo 'L2: touch-start'; sleep 1")
                            .line(&format!("/touch {TOUCH_BASE:#x} {TOUCH_PAGES}; sleep 1")),
                    )
                    .arg("--help"),
            )
            .case(Case::shell("rss", RSS_SCRIPT).timeout(Duration::from_secs(240)))
            .case(Case::new("cpus0").timings(false).cpus(0))
            // Guest RAM in 2M huge pages (L1 reserves 300), then more 1G pages than L1 has.
            .l1_line(&format!("echo 300 > /sys/{HP_2M}/nr_hugepages"))
            .case(
                Case::new("hugepages-2m")
                    .memory("512M,hugepages=2M")
                    .probe_when(VCPU_RUNS, HUGEPAGES_PROBE),
            )
            .case(
                Case::new("hugepages-short")
                    .timings(false)
                    .memory("2G,hugepages=1G"),
            );
        let run = lab.run().map_err(|e| e.to_string())?;
        eprintln!(
            "lab_boot: L0 run took {:.1} s (boots: {})",
            run.elapsed.as_secs_f64(),
            run.boots
        );
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

/// Asserts exit status `rc` and exactly one stderr line, containing each of `words`.
#[track_caller]
fn assert_one_error_line(c: &CaseResult, rc: i32, words: &[&str]) {
    c.check(
        c.rc == Some(rc),
        &format!("VMM exit status {:?}, want {rc}", c.rc),
    );
    c.check(
        c.stderr.len() == 1,
        &format!("want exactly one stderr line, got {:?}", c.stderr),
    );
    for w in words {
        c.check(
            c.stderr[0].contains(w),
            &format!("stderr line should contain {w:?}"),
        );
    }
}

#[test]
fn bad_kernel_is_a_usage_error() {
    let c = lab().case("badkernel");
    assert_one_error_line(c, 2, &["zhitong: "]);
    c.check(
        c.stderr[0].to_lowercase().contains("kernel"),
        "error line should name the kernel",
    );
}

/// The VMM stopped by `signal` within a few seconds, exit status `rc`, one line saying so.
#[track_caller]
fn assert_stopped_by(c: &CaseResult, signal: &str, rc: i32) {
    c.check(
        c.l1_marker("stop").is_none(),
        "the guest never showed it was running",
    );
    assert_one_error_line(c, rc, &[&format!("zhitong: guest stopped by {signal}")]);
    let ms = c.l1_marker("stop_ms").and_then(|v| v.parse::<u64>().ok());
    c.check(
        ms.is_some_and(|ms| ms < 5000),
        &format!("stopping took {ms:?} ms, want < 5000"),
    );
    eprintln!("{}: stopped {ms:?} ms after {signal}", c.name);
}

#[test]
fn sigterm_stops_a_running_guest() {
    let c = lab().case("sigterm");
    c.check(c.has_marker("done"), "L2 did not reach its sleep");
    assert_stopped_by(c, "SIGTERM", 143);
}

#[test]
fn sigint_stops_a_spinning_guest() {
    let c = lab().case("sigint");
    c.check(c.console.contains("Kernel panic"), "no kernel panic");
    assert_stopped_by(c, "SIGINT", 130);
}

#[test]
fn a_guest_boots_after_signalled_ones() {
    assert_guest(lab().case("after-signals"), 1, 512);
}

#[test]
fn a_kernel_that_never_boots_times_out() {
    let c = lab().case("spin");
    assert_one_error_line(c, 1, &["no sign of life", "--boot-timeout"]);
    let secs = c.elapsed.map_or(0.0, |d| d.as_secs_f64());
    c.check(
        (5.0..20.0).contains(&secs),
        &format!("took {secs:.1} s with --boot-timeout 5s"),
    );
}

#[test]
fn a_triple_fault_is_reported() {
    let c = lab().case("triple-fault");
    assert_one_error_line(c, 1, &["triple-faulted"]);
}

#[test]
fn a_forbidden_syscall_stops_the_vm_with_one_line() {
    let c = lab().case("seccomp-violation");
    c.check(
        c.rc != Some(0),
        "the guest ran to its end: build target/release/zhitong with --features test-faults",
    );
    assert_one_error_line(
        c,
        1,
        &["zhitong: the vcpu0 thread made a syscall its seccomp filter forbids: socket (41); "],
    );
    assert_guest(lab().case("after-violation"), 1, 512);
}

#[test]
fn guest_reboot_exits_0() {
    lab().case("reboot").assert_booted();
}

#[test]
fn more_memory_than_the_host_is_a_usage_error() {
    assert_one_error_line(lab().case("memory-too-big"), 2, &["--memory"]);
}

/// `--memory 512M,hugepages=2M`: the guest boots with its RAM, and the VM holds exactly 256
/// of L1's 2M pages (in use or reserved) while it runs.
#[test]
fn guest_ram_in_2m_huge_pages() {
    let c = lab().case("hugepages-2m");
    assert_guest(c, 1, 512);
    c.check(
        c.l1_marker("hp_held") == Some("256"),
        &format!(
            "the VM holds {:?} 2M pages, want 256",
            c.l1_marker("hp_held")
        ),
    );
}

/// More 1G pages than the host has (none are reserved in L1): one line naming free vs
/// needed and the fix, exit 2.
#[test]
fn too_few_huge_pages_is_a_usage_error_with_the_fix() {
    assert_one_error_line(lab().case("hugepages-short"), 2, &["1G huge pages"]);
}

#[test]
fn zero_cpus_is_a_usage_error() {
    assert_one_error_line(lab().case("cpus0"), 2, &["--cpus"]);
}

#[test]
fn tiny_elf_layout() {
    let elf = tiny_elf(&[0xeb, 0xfe]);
    assert_eq!(&elf[..4], b"\x7fELF");
    assert_eq!(
        u64::from_le_bytes(elf[24..32].try_into().unwrap()),
        TINY_ELF_ENTRY
    );
    assert_eq!(elf.len(), 64 + 56 + 2);
    assert_eq!(&elf[120..], [0xeb, 0xfe]);
}

#[test]
fn qemu_as_l1_reference_boots() {
    let c = lab().case("qemu-reference");
    c.assert_booted();
    c.check(c.marker_u64("cpus") == Some(1), "want 1 cpu");
}

/// The VMM's per-exit bookkeeping is bounded: a guest touching 100,000 distinct unbacked
/// pages (100,000 MMIO exits) leaves zhitong's RSS within 1 MiB.
#[test]
fn unbacked_page_touches_do_not_grow_the_vmm() {
    let c = lab().case("rss");
    let line = c
        .console
        .lines()
        .find_map(|l| l.strip_prefix("RSS: rc="))
        .unwrap_or("");
    eprintln!("RSS: rc={line}");
    let field = |key: &str| -> Option<u64> {
        line.split_whitespace()
            .find_map(|f| f.strip_prefix(key))
            .and_then(|v| v.parse().ok())
    };
    c.check(line.starts_with("0 "), "the guest powered off");
    let want = format!("RSS: L2: touched={TOUCH_PAGES} sum={}", TOUCH_PAGES * 255);
    c.check(
        c.console.lines().any(|l| l == want),
        "every touch was an exit answered with all-ones",
    );
    match (field("before_kb="), field("after_kb=")) {
        (Some(before), Some(after)) => c.check(
            after <= before + 1024,
            &format!("RSS grew from {before} KiB to {after} KiB: more than 1 MiB"),
        ),
        _ => c.check(false, "RSS sampled before and after"),
    }
}
