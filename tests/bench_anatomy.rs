//! Where a boot's time goes, per VMM (resources/bench.sh runs it beside the start-time
//! benchmark; `cargo test` skips it): the no-device guest under zhitong, QEMU and (when a
//! binary is at hand) Cloud Hypervisor as the L1 VMM in one L0 boot, the same vmlinux,
//! initramfs and kernel command line for all, and for each:
//! - the guest kernel's own timeline (printk.time=1; `quiet` keeps dmesg off the console
//!   during the boot, the guest prints it after its init marker): the gaps of 30 ms or more
//!   between consecutive lines and the time of its last line; the whole dmesg goes to
//!   target/lab-out/bench/<case>.dmesg;
//! - L1 KVM's exit counters for the VM (debugfs, read until the VMM ends): exits by kind,
//!   the same meter for every VMM;
//! - where the VMM mapped guest RAM in L1 and how much of it is in transparent huge pages;
//! - the command line the guest saw.
//!
//! The report goes to stderr and target/lab-out/bench/anatomy.md.

use std::fmt::Write as _;
use std::fs;
use std::time::Duration;

use zhitong_tests::{compared_vmms, workspace_root, Case, CaseResult, Guest, Lab, Vmm};

/// The kernel command line every VMM gets (each adds its own, see "cmdline" in the report).
const CMDLINE: &str = "console=ttyS0 quiet panic=-1 printk.time=1";

/// The guest's whole dmesg, after its init marker (off the boot's clock): "L2: dmesg <line>".
const DMESG: &str = "dmesg | sed 's/^/L2: dmesg /'";

/// KVM's per-VM counters in L1's debugfs (the VM's directory sums its vCPUs; it is named
/// after the thread that created the VM, not always the VMM's pid, and one VM runs in L1 at
/// a time, so any VM's directory is this one's), read every
/// 0.2 s until the VMM ends (the directory goes with the VM); the last reading is printed
/// as "L1: kvm name:value".
const KVM_STATS: &str = r#"mount -t debugfs none /sys/kernel/debug 2>/dev/null; last=; while kill -0 $pid 2>/dev/null; do d=$(ls -d /sys/kernel/debug/kvm/*-* 2>/dev/null | tail -1); if [ -n "$d" ]; then s=$(for f in exits io_exits mmio_exits halt_exits irq_exits signal_exits irq_window_exits insn_emulation hypercalls pf_taken pf_emulate pf_fixed tlb_flush irq_injections halt_wakeup; do [ -f $d/$f ] && echo "$f:$(cat $d/$f)"; done); case "$s" in *halt_wakeup:[0-9]*) last=$s;; esac; fi; m=$(awk '/^[0-9a-f]+-[0-9a-f]+ / {r=$1} /^Size:/ {big=($2 >= 262144)} /^AnonHugePages:/ {if (big) {h+=$2; print "ram_map=" r " thp_kb=" h}}' /proc/$pid/smaps 2>/dev/null | tail -1); [ -n "$m" ] && mem=$m; sleep 0.2; done; echo "$last" | sed 's/^/L1: kvm /'; echo "$mem" | tr ' ' '\n' | sed 's/^/L1: /'"#;

/// With initcall_debug: the initcalls that took 10 ms or more, "L2: initcall <name> <us>".
const SLOW_INITCALLS: &str = r#"dmesg | awk '/initcall .* returned .* after [0-9]+ usecs/ { for (i = 1; i <= NF; i++) { if ($i == "initcall") f = $(i + 1); if ($i == "after") u = $(i + 1) } if (u >= 10000) print "L2: initcall " f " " u }'"#;

fn case(vmm: Vmm, name: &str) -> Case {
    let c = Case::with_vmm(vmm, name);
    let guest = Guest::new()
        .line("echo \"L2: cmdline=$(cat /proc/cmdline)\"")
        .line(DMESG)
        .line("sleep 1");
    c.cmdline(CMDLINE)
        .guest(guest)
        .probe_when("true", KVM_STATS)
        .timeout(Duration::from_secs(120))
}

/// The same boot with initcall_debug (its messages slow the boot a little: a round apart).
fn initcalls_case(vmm: Vmm, name: &str) -> Case {
    case(vmm, name)
        .cmdline(&format!("{CMDLINE} initcall_debug"))
        .guest(Guest::new().line(SLOW_INITCALLS))
}

/// The lab's cases: each VMM's no-device boot, twice (the first warms L1's page cache),
/// then once with initcall_debug.
pub fn cases(mut lab: Lab) -> Lab {
    for round in ["warm", "a"] {
        for (vmm, tag, _) in compared_vmms() {
            lab = lab.case(case(vmm, &format!("anatomy-{round}-{tag}")));
        }
    }
    for (vmm, tag, _) in compared_vmms() {
        lab = lab.case(initcalls_case(vmm, &format!("anatomy-calls-{tag}")));
    }
    lab
}

/// The initcalls that took 10 ms or more, by name: (name, ms).
fn slow_initcalls(c: &CaseResult) -> Vec<(String, f64)> {
    c.markers
        .iter()
        .filter_map(|m| m.strip_prefix("initcall "))
        .filter_map(|m| {
            let (name, us) = m.rsplit_once(' ')?;
            Some((name.to_string(), us.parse::<f64>().ok()? / 1000.0))
        })
        .collect()
}

/// The guest's dmesg lines as (seconds, text).
fn dmesg(c: &CaseResult) -> Vec<(f64, String)> {
    c.markers
        .iter()
        .filter_map(|m| m.strip_prefix("dmesg ["))
        .filter_map(|m| {
            let (t, text) = m.split_once(']')?;
            Some((t.trim().parse().ok()?, text.trim().to_string()))
        })
        .collect()
}

/// Gaps of `min` seconds or more between consecutive dmesg lines: (gap, line before, after).
fn gaps(lines: &[(f64, String)], min: f64) -> Vec<(f64, &str, &str)> {
    lines
        .windows(2)
        .filter(|w| w[1].0 - w[0].0 >= min)
        .map(|w| (w[1].0 - w[0].0, w[0].1.as_str(), w[1].1.as_str()))
        .collect()
}

fn kvm_counters(c: &CaseResult) -> Vec<(String, String)> {
    c.l1_markers
        .iter()
        .filter_map(|m| m.strip_prefix("kvm "))
        .filter_map(|m| m.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The report: per VMM, first marker, kernel time, counters and gaps.
pub fn report(run: &zhitong_tests::LabRun) -> String {
    let mut t = String::new();
    let vmms = compared_vmms();
    let cases: Vec<(&str, &CaseResult)> = vmms
        .iter()
        .filter_map(|(_, tag, who)| {
            let c = run
                .cases
                .iter()
                .find(|c| c.name == format!("anatomy-a-{tag}"))?;
            Some((*who, c))
        })
        .collect();
    let _ = writeln!(
        t,
        "### Boot anatomy: no device, one vCPU, 512M, cmdline `{CMDLINE}`\n\n| | {} |\n|---|{}",
        cases.iter().map(|c| c.0).collect::<Vec<_>>().join(" | "),
        "---|".repeat(cases.len())
    );
    let row = |t: &mut String, label: &str, f: &dyn Fn(&CaseResult) -> String| {
        let cells: Vec<String> = cases.iter().map(|(_, c)| f(c)).collect();
        let _ = writeln!(t, "| {label} | {} |", cells.join(" | "));
    };
    row(&mut t, "case start → init marker, s", &|c| {
        c.to_first_marker
            .map_or("-".into(), |d| format!("{:.2}", d.as_secs_f64()))
    });
    row(&mut t, "guest kernel: \"Run /init\" at, s", &|c| {
        dmesg(c)
            .iter()
            .find(|l| l.1.starts_with("Run /init"))
            .map_or("-".into(), |l| format!("{:.2}", l.0))
    });
    let mut names: Vec<String> = Vec::new();
    for (_, c) in &cases {
        for (k, _) in kvm_counters(c) {
            if !names.contains(&k) {
                names.push(k);
            }
        }
    }
    for n in &names {
        row(&mut t, &format!("KVM {n}"), &|c| {
            kvm_counters(c)
                .into_iter()
                .find(|(k, _)| k == n)
                .map_or("-".into(), |(_, v)| v)
        });
    }
    initcall_table(&mut t, run, &vmms);
    for (who, c) in &cases {
        let _ = writeln!(
            t,
            "\n{who}: cmdline `{}`, rc {:?}, guest RAM at {} ({} kB in THP)\n",
            c.marker("cmdline").unwrap_or("-"),
            c.rc,
            c.l1_marker("ram_map").unwrap_or("-"),
            c.l1_marker("thp_kb").unwrap_or("-")
        );
        for (gap, before, after) in gaps(&dmesg(c), 0.03) {
            let _ = writeln!(
                t,
                "    {:4.0} ms after [{before}] before [{after}]",
                gap * 1000.0
            );
        }
    }
    t
}

/// Initcalls of 10 ms or more under any VMM, side by side, slowest first (ms).
fn initcall_table(t: &mut String, run: &zhitong_tests::LabRun, vmms: &[(Vmm, &str, &str)]) {
    let per: Vec<(&str, Vec<(String, f64)>)> = vmms
        .iter()
        .filter_map(|(_, tag, who)| {
            let c = run
                .cases
                .iter()
                .find(|c| c.name == format!("anatomy-calls-{tag}"))?;
            Some((*who, slow_initcalls(c)))
        })
        .collect();
    let mut names: Vec<(String, f64)> = Vec::new();
    for (_, calls) in &per {
        for (n, ms) in calls {
            match names.iter_mut().find(|(k, _)| k == n) {
                Some(e) => e.1 = e.1.max(*ms),
                None => names.push((n.clone(), *ms)),
            }
        }
    }
    names.sort_by(|a, b| b.1.total_cmp(&a.1));
    let _ = writeln!(
        t,
        "\n### Initcalls of 10 ms or more (initcall_debug, a separate boot), ms\n\n| initcall | {} |\n|---|{}",
        per.iter().map(|p| p.0).collect::<Vec<_>>().join(" | "),
        "---|".repeat(per.len())
    );
    for (n, _) in &names {
        let cells: Vec<String> = per
            .iter()
            .map(|(_, calls)| {
                calls
                    .iter()
                    .find(|(k, _)| k == n)
                    .map_or("<10".into(), |(_, ms)| format!("{ms:.0}"))
            })
            .collect();
        let _ = writeln!(t, "| {n} | {} |", cells.join(" | "));
    }
}

#[test]
#[ignore = "a benchmark, not a test: resources/bench.sh runs it"]
fn boot_anatomy() {
    let dir = workspace_root().join("target/lab-out/bench");
    fs::create_dir_all(&dir).unwrap();
    let lab = Lab::new()
        .unwrap()
        .name("anatomy")
        .timeout(Duration::from_secs(1200));
    let run = cases(lab).run().unwrap();
    let report = report(&run);
    eprintln!("{report}");
    fs::write(dir.join("anatomy.md"), &report).unwrap();
    for c in &run.cases {
        let text: String = dmesg(c)
            .iter()
            .map(|(t, l)| format!("[{t:12.6}] {l}\n"))
            .collect();
        fs::write(dir.join(format!("{}.dmesg", c.name)), text).unwrap();
    }
}
