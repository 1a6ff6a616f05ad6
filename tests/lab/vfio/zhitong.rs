//! What only zhitong promises in the VFIO lab, beside the scenarios both VMMs run: a signal
//! releases the devices, `--user` runs the guest unprivileged, the boot timeline has
//! devices_ready, peer-to-peer DMA mappings follow BAR moves, the standard VGA's ROM, a
//! bus reset at open for functions without a reset of their own.
//! `zhitong_vfio_suite!(FLAVOUR)` makes the whole suite (both labs) one test binary's tests
//! on that L1 kernel and VFIO backend.

use std::time::Duration;

use super::*;
use crate::guest::Guest;
use crate::Lab;

/// The device held by a running driver, SIGTERM, then the device again; P2P with BAR moves
/// (with zhitong choosing the backend where iommufd is forced: only the legacy one maps
/// BARs); the guest as an unprivileged user.
pub fn more_msi(lab: Lab, flavour: Flavour) -> Lab {
    let p2p_backend: &[&str] = match flavour.backend {
        Some("iommufd") => &["--vfio-backend", "auto"],
        _ => &[],
    };
    let held = guest(&["virtio_pci", "virtio_gpu"], &[]).end_with("sleep 100000");
    let lab = lab
        .case(
            passthrough(Vmm::Zhitong, "gpu-sigterm", &[GPU.bdf], held)
                .timings(false)
                .stop_with("TERM", "L2: done")
                .timeout(Duration::from_secs(60)),
        )
        .case(passthrough(
            Vmm::Zhitong,
            "gpu-again",
            &[GPU.bdf],
            gpu_guest(&GPU),
        ))
        .case(
            // Peer-to-peer: the guest moves BAR0 (decode on) and back before bochs-drm draws.
            passthrough(
                Vmm::Zhitong,
                "bochs-p2p",
                &[&format!("{},p2p=on", BOCHS.bdf)],
                guest(
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
            .env("ZHITONG_LOG", "debug")
            .args(p2p_backend.iter().copied()),
        )
        .case(
            passthrough(Vmm::Zhitong, "gpu-user", &[GPU.bdf], gpu_guest(&GPU))
                .args(["--user", "1000:1000"])
                .probe_when(VCPU_RUNS, USER_PROBE),
        )
        // Guest RAM's DMA mapping fails: the VM ends with that error and releases the NVMe,
        // which the next case gets with its mapping 20 s late (the guest's nvme driver enables
        // bus mastering meanwhile and waits).
        .case(
            passthrough(Vmm::Zhitong, "nvme-dma-fails", &[NVME.bdf], nvme_guest())
                .env("ZHITONG_TEST_FAULT", "dma-map-fail:0")
                .timings(false)
                .timeout(Duration::from_secs(60)),
        )
        .case(
            passthrough(Vmm::Zhitong, "nvme-dma-late", &[NVME.bdf], nvme_guest())
                .env("ZHITONG_TEST_FAULT", "dma-map-delay:20000")
                .env("ZHITONG_LOG", "info"),
        )
        // The same late mapping with dma-map=before-boot: the vCPUs start after it.
        .case(
            passthrough(Vmm::Zhitong, "nvme-dma-before", &[NVME.bdf], nvme_guest())
                .memory("512M,dma-map=before-boot")
                .env("ZHITONG_TEST_FAULT", "dma-map-delay:3000")
                .env("ZHITONG_LOG", "info"),
        )
        .device(&format!(
            "pcie-root-port,id=zt-rp,chassis=9,addr=0x{TESTDEV_PORT:x}"
        ))
        .device("pci-testdev,bus=zt-rp,addr=0.0,multifunction=on")
        .device("pci-testdev,bus=zt-rp,addr=0.1")
        .bind(TESTDEV[0])
        .bind(TESTDEV[1])
        .case(
            passthrough(Vmm::Zhitong, "testdev-bus-reset", &TESTDEV, testdev_guest())
                .env("ZHITONG_LOG", "info"),
        );
    super::virtio::more_msi(lab)
}

/// Two functions of one device below a PCIe root port, neither with a reset of its own
/// (QEMU's pci-testdev has no capabilities: no FLR, no PM): only their bus resets them.
pub const TESTDEV: [&str; 2] = ["0000:01:00.0", "0000:01:00.1"];
/// The root port's slot on L0's root bus (its secondary bus is L1's bus 01).
const TESTDEV_PORT: u8 = 0x0a;

/// L2 counts the test devices and reads each one's IDs from its config space.
fn testdev_guest() -> Guest {
    guest(
        &[],
        &[r#"n=0; for d in /sys/bus/pci/devices/*; do
  [ "$(cat $d/vendor):$(cat $d/device)" = "0x1b36:0x0005" ] || continue
  n=$((n+1)); echo "L2: testdev_ids_$n=$(od -An -tx4 -N4 $d/config | tr -d ' ')"
done; echo "L2: testdevs=$n""#
            .to_string()],
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

pub fn sigterm_releases_the_device_for_the_next_run(msi: &VfioRun) {
    let run = &msi.run;
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
    assert_display(run, "gpu-again", VIRTIO_GPU);
}

pub fn user_runs_the_guest_unprivileged(msi: &VfioRun) {
    let run = &msi.run;
    assert_display(run, "gpu-user", VIRTIO_GPU);
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

pub fn timings_show_devices_ready(msi: &VfioRun) {
    let c = msi.case("gpu");
    let ready = c.timing("devices_ready_ms");
    let entry = c.timing("first_vcpu_entry_ms");
    c.check(
        ready.is_some() && entry.is_some() && ready <= entry,
        &format!("devices_ready_ms {ready:?}, first_vcpu_entry_ms {entry:?}: want both, in order"),
    );
}

pub fn p2p_dma_mappings_follow_the_guests_bar_moves(msi: &VfioRun) {
    let run = &msi.run;
    let c = run.case("bochs-p2p");
    assert_display(run, "bochs-p2p", BOCHS_DRM);
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
pub fn vga_expansion_rom_reads_and_bochs_drm_draws(msi: &VfioRun) {
    let run = &msi.run;
    assert_bound(run, &[VGA.bdf]);
    assert_rom(run, "vga", "vga", VGA.bdf, VGA_ROM);
    assert_display(run, "vga", VGA_DRM);
}

/// Guest RAM is DMA-mapped beside the boot: the NVMe driver's bus-master enable waits for
/// the (late) mapping, then DMA works both ways; a failed mapping ends the VM with its
/// error (exit 1) and the device is released for the next VM. With dma-map=before-boot
/// the vCPUs start only once RAM is mapped, and nothing waits.
pub fn dma_mapping_beside_the_boot_gates_bus_mastering(msi: &VfioRun) {
    let failed = msi.case("nvme-dma-fails");
    failed.check(failed.rc == Some(1), "want exit status 1");
    failed.check(
        failed.stderr.len() == 1
            && failed.stderr[0].contains("guest RAM DMA mapping")
            && failed.stderr[0].contains("injected fault: dma-map-fail"),
        "want one stderr line naming the failed guest RAM DMA mapping",
    );
    assert_nvme(msi, "nvme-dma-late");
    let c = msi.case("nvme-dma-late");
    let waited: Vec<&String> = c
        .stderr
        .iter()
        .filter(|l| l.contains("bus mastering waited") && l.contains(NVME.bdf))
        .collect();
    c.check(
        waited.len() == 1,
        &format!(
            "want one 'bus mastering waited' line for {}, got {waited:?}",
            NVME.bdf
        ),
    );
    let (entry, mapped) = (c.timing("first_vcpu_entry_ms"), c.timing("dma_mapped_ms"));
    c.check(
        entry.is_some() && mapped.is_some() && entry < mapped,
        &format!("first_vcpu_entry_ms {entry:?}, dma_mapped_ms {mapped:?}: want the guest running before RAM is mapped"),
    );
    eprintln!("nvme-dma-late: {waited:?}; vCPU entry {entry:?} ms, RAM mapped {mapped:?} ms");

    assert_nvme(msi, "nvme-dma-before");
    let c = msi.case("nvme-dma-before");
    let waited = c.stderr.iter().any(|l| l.contains("bus mastering waited"));
    c.check(
        !waited,
        "dma-map=before-boot: no bus-master enable should wait",
    );
    let (entry, mapped) = (c.timing("first_vcpu_entry_ms"), c.timing("dma_mapped_ms"));
    c.check(
        entry.is_some() && mapped.is_some() && mapped < entry && mapped > Some(3000.0),
        &format!("first_vcpu_entry_ms {entry:?}, dma_mapped_ms {mapped:?}: want RAM mapped (3 s late) before the first vCPU entry"),
    );
    eprintln!("nvme-dma-before: RAM mapped {mapped:?} ms, vCPU entry {entry:?} ms");
}

/// A multi-function device whose functions have no reset: zhitong resets their bus once
/// at open (both functions are its), and L2 finds both working.
pub fn functions_without_reset_get_a_bus_reset_at_open(msi: &VfioRun) {
    let c = msi.case("testdev-bus-reset");
    assert_bound(&msi.run, &TESTDEV);
    c.check(c.has_marker("done"), "L2 did not finish");
    c.check(
        c.marker("testdevs") == Some("2"),
        &format!("L2 sees {:?} test devices, want 2", c.marker("testdevs")),
    );
    for n in ["1", "2"] {
        let ids = c.marker(&format!("testdev_ids_{n}"));
        c.check(
            ids == Some("00051b36"),
            &format!("test device {n}'s IDs read {ids:?} in L2, want 00051b36"),
        );
    }
    let resets: Vec<&String> = c
        .stderr
        .iter()
        .filter(|l| l.contains("reset its slot/bus (VFIO hot reset) at open"))
        .collect();
    let want = format!("{}: no function reset", TESTDEV[0]);
    let both = format!("{}, {} with it", TESTDEV[0], TESTDEV[1]);
    c.check(
        resets.len() == 1 && resets[0].contains(&want) && resets[0].contains(&both),
        &format!(
            "want one hot reset of {TESTDEV:?} from {}, got {resets:?}",
            TESTDEV[0]
        ),
    );
    eprintln!("testdev-bus-reset: {resets:?}");
}

/// Every VFIO lab test with zhitong as the L1 VMM, on `$flavour` (a `vfio::Flavour`);
/// `$more` adds cases to the MSI lab.
#[macro_export]
macro_rules! zhitong_vfio_suite {
    ($flavour:expr) => {
        $crate::zhitong_vfio_suite!($flavour, |lab| lab);
    };
    // `$more` (`fn(Lab) -> Lab`) adds cases to the MSI lab.
    ($flavour:expr, $more:expr) => {
        $crate::vfio_tests!(
            flavour = $flavour,
            $crate::Vmm::Zhitong,
            |lab| $more($crate::vfio::zhitong::more_msi(lab, $flavour)),
            |lab| lab
        );

        #[test]
        fn sigterm_releases_the_device_for_the_next_run() {
            $crate::vfio::zhitong::sigterm_releases_the_device_for_the_next_run(msi());
        }

        #[test]
        fn user_runs_the_guest_unprivileged() {
            $crate::vfio::zhitong::user_runs_the_guest_unprivileged(msi());
        }

        #[test]
        fn timings_show_devices_ready() {
            $crate::vfio::zhitong::timings_show_devices_ready(msi());
        }

        #[test]
        fn p2p_dma_mappings_follow_the_guests_bar_moves() {
            $crate::vfio::zhitong::p2p_dma_mappings_follow_the_guests_bar_moves(msi());
        }

        #[test]
        fn dma_mapping_beside_the_boot_gates_bus_mastering() {
            $crate::vfio::zhitong::dma_mapping_beside_the_boot_gates_bus_mastering(msi());
        }

        #[test]
        fn a_passed_through_gpu_and_a_virtio_disk_share_the_vm() {
            $crate::vfio::virtio::a_passed_through_gpu_and_a_virtio_disk_share_the_vm(msi());
        }

        #[test]
        fn a_gpu_a_root_disk_and_a_network_in_one_vm() {
            $crate::vfio::virtio::a_gpu_a_root_disk_and_a_network_in_one_vm(msi());
        }

        #[test]
        fn functions_without_reset_get_a_bus_reset_at_open() {
            $crate::vfio::zhitong::functions_without_reset_get_a_bus_reset_at_open(msi());
        }

        #[test]
        fn vga_expansion_rom_reads_and_bochs_drm_draws() {
            $crate::vfio::zhitong::vga_expansion_rom_reads_and_bochs_drm_draws(msi());
        }
    };
}
