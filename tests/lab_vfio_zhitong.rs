//! The VFIO passthrough scenarios of lab_vfio.rs with zhitong as the L1 VMM, plus what only
//! zhitong promises (a signal releases the devices; the boot timeline has devices_ready).
//!
//! Run it alone: `cargo build --release -p vmm && cargo test -p zhitong-tests --test lab_vfio_zhitong`.
//!
//! What it asks of zhitong, in L1 (devices already bound to vfio-pci by L1's init):
//! - `zhitong run --kernel /l2/vmlinux --initramfs I --cmdline 'console=ttyS0 quiet panic=-1'
//!   --cpus 1 --memory 512M --timings --device 0000:00:04.0
//!   [--device /sys/bus/pci/devices/0000:00:05.0]` — BDF and sysfs path forms, repeated;
//!   exit 0 after L2's `poweroff -f`.
//! - L2 finds each device on its PCI bus (vendor/device ids), the native driver binds and works:
//!   virtio-gpu (virtio-pci + virtio_gpu) with MSI-X counting up, and with INTx only (L0
//!   vectors=0) on a level-triggered IO-APIC line (resample) counting up; bochs-drm; both at
//!   once; NVMe (nvme, MSI-X) DMA both ways; ivshmem's 16 GiB 64-bit BAR2 reached by
//!   /dev/mem (devmem) beyond 4 GiB and in its last word.
//! - What the drivers draw in /dev/fbN reaches L0's display (screendump, pixel exact).
//! - SIGTERM while a driver runs the device: exit 143, one stderr line "zhitong: guest
//!   stopped by SIGTERM", then the same device works in the next run (released, reset).
//! - --timings: "devices_ready_ms" is a number when devices are passed through.

use std::time::Duration;

use zhitong_tests::vfio::{self, BOCHS, GPU};
use zhitong_tests::{Lab, Vmm};

zhitong_tests::vfio_tests!(Vmm::Zhitong, more_msi, |lab| lab);

/// The device held by a running driver, SIGTERM, then the device again.
fn more_msi(lab: Lab) -> Lab {
    let held = vfio::guest(&["virtio_pci", "virtio_gpu"], &[]).end_with("sleep 100000");
    lab.case(
        vfio::passthrough(Vmm::Zhitong, "gpu-sigterm", &[GPU.bdf], held)
            .timings(false)
            .stop_with("TERM", "L2: done")
            .timeout(Duration::from_secs(60)),
    )
    .case(vfio::passthrough(
        Vmm::Zhitong,
        "gpu-again",
        &[GPU.bdf],
        vfio::gpu_guest(&GPU),
    ))
    .case(
        // Peer-to-peer: the guest moves BAR0 (decode on) and back before bochs-drm draws.
        vfio::passthrough(
            Vmm::Zhitong,
            "bochs-p2p",
            &[&format!("{},p2p=on", BOCHS.bdf)],
            vfio::guest(
                &["bochs"],
                &[
                    format!(
                        "bar_move_test $(pci_dev {} {}) -0x2000000",
                        BOCHS.ids.0, BOCHS.ids.1
                    ),
                    format!(
                        "display_test bochs $(pci_dev {} {}) {}",
                        BOCHS.ids.0, BOCHS.ids.1, BOCHS.id
                    ),
                ],
            ),
        )
        .env("ZHITONG_LOG", "debug"),
    )
    .case(
        vfio::passthrough(Vmm::Zhitong, "gpu-user", &[GPU.bdf], vfio::gpu_guest(&GPU))
            .args(["--user", "1000:1000"])
            .probe_when(VCPU_RUNS, USER_PROBE),
    )
}

/// zhitong's vCPU 0 thread exists: the guest runs.
const VCPU_RUNS: &str = "cat /proc/$pid/task/*/comm 2>/dev/null | grep -qx vcpu0";

/// The running zhitong's credentials, and how many of its threads are not uid 1000.
const USER_PROBE: &str = r#"s=/proc/$pid/status
echo "L1: uid=$(awk '/^Uid:/ {print $2":"$3":"$4":"$5}' $s)"
echo "L1: gid=$(awk '/^Gid:/ {print $2":"$3":"$4":"$5}' $s)"
echo "L1: capeff=$(awk '/^CapEff:/ {print $2}' $s)"
echo "L1: capprm=$(awk '/^CapPrm:/ {print $2}' $s)"
echo "L1: no_new_privs=$(awk '/^NoNewPrivs:/ {print $2}' $s)"
echo "L1: other_threads=$(awk '/^Uid:/ && $2 != 1000 {n++} END {print n+0}' /proc/$pid/task/*/status)""#;

#[test]
fn sigterm_releases_the_device_for_the_next_run() {
    let run = &msi().run;
    let c = run.case("gpu-sigterm");
    c.check(c.has_marker("done"), "L2 did not get its driver loaded");
    c.check(c.rc == Some(143), "want exit status 143");
    c.check(
        c.stderr == ["zhitong: guest stopped by SIGTERM"],
        "want one stderr line 'zhitong: guest stopped by SIGTERM'",
    );
    let ms = c.l1_marker("stop_ms").and_then(|v| v.parse::<u64>().ok());
    c.check(
        ms.is_some_and(|ms| ms < 5000),
        &format!("stopping took {ms:?} ms, want < 5000"),
    );
    vfio::assert_display(run, "gpu-again", vfio::VIRTIO_GPU);
}

#[test]
fn user_runs_the_guest_unprivileged() {
    let run = &msi().run;
    vfio::assert_display(run, "gpu-user", vfio::VIRTIO_GPU);
    let c = run.case("gpu-user");
    for (key, want) in [
        ("uid", "1000:1000:1000:1000"),
        ("gid", "1000:1000:1000:1000"),
        ("capeff", "0000000000000000"),
        ("capprm", "0000000000000000"),
        ("no_new_privs", "1"),
        ("other_threads", "0"),
    ] {
        c.check(
            c.l1_marker(key) == Some(want),
            &format!(
                "the running zhitong's {key} is {:?}, want {want}",
                c.l1_marker(key)
            ),
        );
    }
}

#[test]
fn timings_show_devices_ready() {
    let c = msi().case("gpu");
    let ready = c.timing("devices_ready_ms");
    let entry = c.timing("first_vcpu_entry_ms");
    c.check(
        ready.is_some() && entry.is_some() && ready <= entry,
        &format!("devices_ready_ms {ready:?}, first_vcpu_entry_ms {entry:?}: want both, in order"),
    );
}

#[test]
fn p2p_dma_mappings_follow_the_guests_bar_moves() {
    let run = &msi().run;
    let c = run.case("bochs-p2p");
    vfio::assert_display(run, "bochs-p2p", vfio::BOCHS_DRM);
    let (bar, moved) = (
        c.marker("p2p_bar0").unwrap_or("?"),
        c.marker("p2p_moved").unwrap_or("?"),
    );
    c.check(
        c.marker("p2p_back") == Some(bar),
        &format!("BAR0 back at {:?}, want {bar}", c.marker("p2p_back")),
    );
    // zhitong's debug log: "...: BAR 0 0x0+0x1000000 DMA-mapped at 0x... (peer-to-peer)"
    let mapped: Vec<&str> = c
        .stderr
        .iter()
        .filter(|l| l.contains("BAR 0 0x0+") && l.contains("DMA-mapped at"))
        .filter_map(|l| l.split("DMA-mapped at ").nth(1)?.split_whitespace().next())
        .collect();
    // The driver may toggle decode afterwards: the first three are the test's moves.
    c.check(
        mapped.len() >= 3 && mapped[..3] == [bar, moved, bar],
        &format!("BAR 0 DMA-mapped at {mapped:?}, want {bar}, {moved}, {bar} first"),
    );
    c.check(
        c.stderr
            .iter()
            .any(|l| l.contains("peer-to-peer DMA mappings")),
        "no 'peer-to-peer DMA mappings' line",
    );
    eprintln!("bochs-p2p: BAR 0 DMA-mapped at {mapped:?}");
}

/// QEMU's standard VGA (its VGA BIOS is the ROM): read as L1 reads it, then bochs-drm draws.
/// (zhitong only for now: see run_msi.)
#[test]
fn vga_expansion_rom_reads_and_bochs_drm_draws() {
    let run = &msi().run;
    vfio::assert_bound(run, &[vfio::VGA.bdf]);
    vfio::assert_rom(run, "vga", "vga", vfio::VGA.bdf, vfio::VGA_ROM);
    vfio::assert_display(run, "vga", vfio::VGA_DRM);
}
