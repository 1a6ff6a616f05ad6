//! The start-time benchmark (resources/bench.sh runs it; `cargo test` skips it): one L0 boot
//! of the nested lab, zhitong, QEMU and (when a binary is at hand: `CLOUD_HYPERVISOR` or
//! target/lab-cache/cloud-hypervisor) Cloud Hypervisor as the L1 VMM side by side, the same
//! vmlinux and initramfs for all, and a table of:
//! - the boot timeline per case (no device, the virtio GPU, the NVMe; 512M, one vCPU);
//! - start time (case start to the guest's first marker, as L0 sees both VMMs' guests) with
//!   the NVMe for 512M/2G/4G/8G of RAM in 4K pages, transparent huge pages, and zhitong's
//!   2M and 1G hugetlb pages, with the growth per GiB; for THP and 2M pages also zhitong
//!   with `dma-map=before-boot` (the A/B of mapping RAM beside the boot);
//! - zhitong's DMA-map time per GiB (devices ready to RAM mapped);
//! - each VMM's RSS beyond guest RAM (mappings under 256 MiB: the guest's regions excluded);
//! - zhitong's I/O exits in the GPU case (its debug exit statistics).
//!
//! Absolute times are TCG-emulated and noisy: read the ratios. The table goes to stderr and
//! to target/lab-out/bench/table.md; docs/performance.md keeps the latest one.

use std::fmt::Write as _;
use std::fs::{self, File};
use std::path::PathBuf;
use std::time::Duration;

use zhitong_tests::vfio::{gpu_guest, nvme_guest, passthrough, GPU, NVME, NVME_SIZE};
use zhitong_tests::{compared_vmms, workspace_root, Case, CaseResult, Guest, Lab, Vmm};

const SIZES: [(&str, f64); 4] = [("512M", 0.5), ("2G", 2.0), ("4G", 4.0), ("8G", 8.0)];

/// A page kind: label, case prefix, L1's setup, and each VMM's memory argument for a size
/// (None: that VMM does not run it).
struct Pages {
    label: &'static str,
    prefix: &'static str,
    setup: &'static str,
    memory: fn(Vmm, &str) -> Option<String>,
}

fn pages() -> [Pages; 6] {
    [
        Pages {
            label: "4K",
            prefix: "4k",
            setup: "echo never > /sys/kernel/mm/transparent_hugepage/enabled",
            memory: |_, size| Some(size.to_string()),
        },
        Pages {
            label: "THP",
            prefix: "thp",
            setup: "echo always > /sys/kernel/mm/transparent_hugepage/enabled",
            memory: |_, size| Some(size.to_string()),
        },
        // The A/B of the overlap: zhitong mapping RAM before the boot, as the others do.
        Pages {
            label: "THP, DMA map before the boot",
            prefix: "thpb",
            setup: "echo always > /sys/kernel/mm/transparent_hugepage/enabled",
            memory: |vmm, size| match vmm {
                Vmm::Zhitong => Some(format!("{size},dma-map=before-boot")),
                _ => None,
            },
        },
        Pages {
            label: "2M hugetlb",
            prefix: "2m",
            setup: "echo never > /sys/kernel/mm/transparent_hugepage/enabled; echo 4200 > /sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages",
            memory: |vmm, size| match vmm {
                Vmm::Zhitong => Some(format!("{size},hugepages=2M")),
                Vmm::CloudHypervisor => Some(format!("{size},hugepages=on,hugepage_size=2M")),
                Vmm::Qemu => None,
            },
        },
        Pages {
            label: "2M hugetlb, DMA map before the boot",
            prefix: "2mb",
            setup: "echo never > /sys/kernel/mm/transparent_hugepage/enabled; echo 4200 > /sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages",
            memory: |vmm, size| match vmm {
                Vmm::Zhitong => Some(format!("{size},hugepages=2M,dma-map=before-boot")),
                _ => None,
            },
        },
        Pages {
            label: "1G hugetlb",
            prefix: "1g",
            setup: "echo 0 > /sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages; echo 9 > /sys/kernel/mm/hugepages/hugepages-1048576kB/nr_hugepages; echo \"L1: hp_1g=$(cat /sys/kernel/mm/hugepages/hugepages-1048576kB/nr_hugepages)\"",
            memory: |vmm, size| match vmm {
                Vmm::Zhitong => Some(format!("{size},hugepages=1G")),
                Vmm::CloudHypervisor => Some(format!("{size},hugepages=on,hugepage_size=1G")),
                Vmm::Qemu => None,
            },
        },
    ]
}

/// The running VMM's RSS: mappings under 256 MiB (the VMM) and the rest (guest RAM), and
/// the VMM's five largest resident mappings ("L1: rss_top=<kB> <name>"; anonymous ones
/// named by their address).
const RSS_PROBE: &str = r#"sleep 12; awk '/^[0-9a-f]+-[0-9a-f]+ / {name = ($6 == "" ? $1 : $6)} /^Size:/ {big = ($2 >= 262144)} /^Rss:/ {if (big) g += $2; else {o += $2; r[name] += $2}} END {print "L1: rss_vmm_kb=" o; print "L1: rss_guest_kb=" g; for (n in r) print r[n], n}' /proc/$pid/smaps | sort -rn | awk '/^L1: / {print; next} n++ < 5 {print "L1: rss_top=" $1 " " $2}'"#;

/// L1's RAM written once before the cases (a tmpfs file of 11 GiB, then freed): L0 backs
/// L1's RAM lazily, so otherwise whichever VMM first touches a stretch of it pays L0's
/// faults, and the first case of a size ran up to 2x slower than the same case after it.
const WARM_L1_RAM: &str = "mkdir -p /tmp/warm && mount -t tmpfs -o size=12g none /tmp/warm && dd if=/dev/zero of=/tmp/warm/f bs=1M count=11264 2>/dev/null; umount /tmp/warm; echo 'L1: warmed'";

fn boot_case(vmm: Vmm, t: &str, kind: &str) -> Case {
    let name = format!("{t}-{kind}");
    match kind {
        "gpu" => passthrough(vmm, &name, &[GPU.bdf], gpu_guest(&GPU)).env("ZHITONG_LOG", "debug"),
        "nvme" => passthrough(vmm, &name, &[NVME.bdf], nvme_guest()),
        _ => Case::with_vmm(vmm, &name).guest(Guest::new()),
    }
}

fn cases(lab: Lab) -> Lab {
    let mut lab = lab.case(Case::shell("warm-l1-ram", WARM_L1_RAM));
    // A first boot of each VMM warms L1's page cache with its binary, the kernel and the
    // initramfs; then each kind of boot by every VMM in turn, so no VMM always goes first.
    for (vmm, t, _) in compared_vmms() {
        lab = lab.case(boot_case(vmm, &format!("warm-{t}"), "none"));
    }
    for kind in ["none", "gpu", "nvme"] {
        for (vmm, t, _) in compared_vmms() {
            lab = lab.case(boot_case(vmm, t, kind));
        }
    }
    for (vmm, t, _) in compared_vmms() {
        // Idle for a while after its test, then powers off: the probe reads smaps meanwhile.
        let idle = nvme_guest().line("sleep 25");
        lab = lab.case(
            passthrough(vmm, &format!("{t}-rss"), &[NVME.bdf], idle)
                .probe_when("true", RSS_PROBE)
                .timeout(Duration::from_secs(90)),
        );
    }
    for p in pages() {
        lab = lab.case(Case::shell(&format!("setup-{}", p.prefix), p.setup));
        for (size, _) in SIZES {
            for (vmm, t, _) in compared_vmms() {
                let Some(memory) = (p.memory)(vmm, size) else {
                    continue;
                };
                let name = format!("{t}-{}-{size}", p.prefix);
                lab = lab.case(
                    passthrough(vmm, &name, &[NVME.bdf], nvme_guest())
                        .memory(&memory)
                        .timeout(Duration::from_secs(400)),
                );
            }
        }
    }
    lab
}

fn secs(d: Option<Duration>) -> String {
    d.map_or("-".into(), |d| format!("{:.1}", d.as_secs_f64()))
}

fn ms(c: &CaseResult, key: &str) -> String {
    c.timing(key)
        .map_or("-".into(), |v| format!("{:.1}", v / 1000.0))
}

fn table(run: &zhitong_tests::LabRun) -> String {
    let case = |n: &str| run.cases.iter().find(|c| c.name == n);
    let vmms = compared_vmms();
    let mut t = String::new();
    let _ = writeln!(
        t,
        "L0 run {:.0} s (boots: {}); {}.\n\n### Boot: case start → the guest's first marker (its init), s, one vCPU, 512M\n",
        run.elapsed.as_secs_f64(),
        run.boots,
        vmms.iter().map(|v| v.2).collect::<Vec<_>>().join(", ")
    );
    let head: Vec<&str> = vmms.iter().map(|v| v.2).collect();
    let _ = writeln!(
        t,
        "| case | {} | zhitong's timeline: devices ready / first vCPU entry / RAM DMA-mapped / first marker / exit |\n|---|{}---|",
        head.join(" | "),
        "---|".repeat(head.len())
    );
    for kind in ["none", "gpu", "nvme"] {
        let cells: Vec<String> = vmms
            .iter()
            .map(|(_, tag, _)| secs(case(&format!("{tag}-{kind}")).and_then(|c| c.to_first_marker)))
            .collect();
        let zt = case(&format!("z-{kind}")).map_or("-".into(), |c| {
            format!(
                "{} / {} / {} / {} / {}",
                ms(c, "devices_ready_ms"),
                ms(c, "first_vcpu_entry_ms"),
                ms(c, "dma_mapped_ms"),
                ms(c, "guest_marker_ms"),
                ms(c, "exit_ms")
            )
        });
        let _ = writeln!(t, "| {kind} | {} | {zt} |", cells.join(" | "));
    }
    let _ = writeln!(
        t,
        "\n### Start with the NVMe by RAM: case start → the guest's first marker, s (zhitong: RAM DMA-mapped at, s)\n\n| VMM, pages | 512M | 2G | 4G | 8G | growth 512M→8G, s/GiB |\n|---|---|---|---|---|---|"
    );
    for p in pages() {
        for (vmm, tag, who) in &vmms {
            if (p.memory)(*vmm, "1G").is_none() {
                continue;
            }
            let mut row = format!("| {who}, {} |", p.label);
            let mut points = Vec::new();
            for (size, gib) in SIZES {
                let c = case(&format!("{tag}-{}-{size}", p.prefix));
                let start = c
                    .filter(|c| c.rc == Some(0))
                    .and_then(|c| c.to_first_marker);
                if let Some(s) = start {
                    points.push((gib, s.as_secs_f64()));
                }
                let mapped = c
                    .filter(|_| *vmm == Vmm::Zhitong)
                    .map_or(String::new(), |c| format!(" ({})", ms(c, "dma_mapped_ms")));
                let rc = c.and_then(|c| c.rc).filter(|&rc| rc != 0);
                let failed = rc.map_or(String::new(), |rc| format!(" rc {rc}"));
                let _ = write!(row, " {}{mapped}{failed} |", secs(start));
            }
            let growth = match (points.first(), points.last()) {
                (Some(a), Some(b)) if b.0 > a.0 => format!("{:.2}", (b.1 - a.1) / (b.0 - a.0)),
                _ => "-".into(),
            };
            let _ = writeln!(t, "{row} {growth} |");
        }
    }
    let _ = writeln!(
        t,
        "\n### zhitong's DMA map, ms per GiB (devices ready → RAM mapped, beside the boot)\n\n| pages | 512M | 2G | 4G | 8G |\n|---|---|---|---|---|"
    );
    for p in pages() {
        let mut row = format!("| {} |", p.label);
        for (size, gib) in SIZES {
            let c = case(&format!("z-{}-{size}", p.prefix));
            let per = c.and_then(|c| {
                Some((c.timing("dma_mapped_ms")? - c.timing("devices_ready_ms")?) / gib)
            });
            let _ = write!(row, " {} |", per.map_or("-".into(), |v| format!("{v:.0}")));
        }
        let _ = writeln!(t, "{row}");
    }
    let _ = writeln!(
        t,
        "\n### RSS with the NVMe, 512M, the guest idle after boot, kB\n\n| VMM | beyond guest RAM | guest RAM resident |\n|---|---|---|"
    );
    let mut tops = Vec::new();
    for (_, tag, who) in &vmms {
        if let Some(c) = case(&format!("{tag}-rss")) {
            let _ = writeln!(
                t,
                "| {who} | {} | {} |",
                c.l1_marker("rss_vmm_kb").unwrap_or("-"),
                c.l1_marker("rss_guest_kb").unwrap_or("-")
            );
            let top: Vec<&str> = c
                .l1_markers
                .iter()
                .filter_map(|m| m.strip_prefix("rss_top="))
                .collect();
            tops.push(format!("{who}: {}", top.join(", ")));
        }
    }
    let _ = writeln!(t, "\nLargest resident mappings beyond guest RAM, kB:\n");
    for l in tops {
        let _ = writeln!(t, "    {l}");
    }
    if let Some(c) = case("z-gpu") {
        let _ = writeln!(t, "\n### zhitong's I/O exits (GPU case)\n");
        for l in c.stderr.iter().filter(|l| l.contains("I/O exits")) {
            let _ = writeln!(t, "    {}", l.trim_start_matches("zhitong: debug: "));
        }
    }
    t
}

#[test]
#[ignore = "a benchmark, not a test: resources/bench.sh runs it"]
fn start_time_benchmark() {
    let dir = workspace_root().join("target/lab-out/bench");
    fs::create_dir_all(&dir).unwrap();
    let disk = dir.join("nvme.img");
    File::create(&disk).unwrap().set_len(NVME_SIZE).unwrap();
    let lab = Lab::new()
        .unwrap()
        .name("bench")
        .timeout(Duration::from_secs(3600))
        .l0(|l0| {
            l0.memory = "14G".into();
            l0.stall = Duration::from_secs(400);
        })
        .l0_args([
            "-drive".to_string(),
            format!("file={},if=none,id=zt-disk,format=raw", disk.display()),
        ])
        .device(&GPU.spec())
        .bind(GPU.bdf)
        .device(&NVME.spec())
        .bind(NVME.bdf);
    let run = cases(lab).run().unwrap();
    let table = table(&run);
    eprintln!("{table}");
    let out: PathBuf = dir.join("table.md");
    fs::write(&out, &table).unwrap();
    eprintln!("bench: table in {}", out.display());
}
