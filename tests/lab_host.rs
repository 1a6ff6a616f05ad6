//! The host doctor in the lab: a device starts on its own driver in L1; `zhitong check`
//! explains, `zhitong bind` fixes, `zhitong run` passes it through, `zhitong unbind` gives it
//! back. One L0 boot.

use std::sync::OnceLock;

use zhitong_tests::{Case, CaseResult, Lab, LabRun};

const DEV: &str = "0000:00:04.0";
const Z: &str = "/bin/zhitong";

fn lab() -> &'static LabRun {
    static RUN: OnceLock<Result<LabRun, String>> = OnceLock::new();
    let run = RUN.get_or_init(|| {
        let shell = |name: &str, cmd: String| Case::shell(name, &cmd);
        Lab::new()
            .map_err(|e| e.to_string())?
            .name("host-doctor")
            .device("virtio-gpu-pci,disable-legacy=on,iommu_platform=on,addr=0x4")
            .l1_module("virtio_pci")
            .case(shell("devices", format!("{Z} devices")))
            .case(shell("check-before", format!("{Z} check --device {DEV}")))
            .case(shell(
                "run-unbound",
                format!("{Z} run --kernel /l2/vmlinux --device {DEV}"),
            ))
            .case(shell("bind", format!("{Z} bind {DEV}")))
            .case(shell("bind-again", format!("{Z} bind {DEV}")))
            .case(shell(
                "check-after",
                format!("{Z} check --device {DEV} --json"),
            ))
            .case(Case::new("run").args(["--device", DEV]))
            .case(shell(
                "unbind",
                format!("{Z} unbind {DEV} && readlink /sys/bus/pci/devices/{DEV}/driver"),
            ))
            .case(shell("unbind-again", format!("{Z} unbind {DEV}")))
            .run()
            .map_err(|e| e.to_string())
    });
    run.as_ref().unwrap_or_else(|e| panic!("lab failed: {e}"))
}

fn case(name: &str) -> &'static CaseResult {
    lab().case(name)
}

#[test]
fn devices_lists_the_gpu_on_its_driver() {
    let c = case("devices");
    c.check(c.rc == Some(0), "devices exits 0");
    let line = c.console.lines().find(|l| l.contains(DEV));
    c.check(
        line.is_some_and(|l| l.contains("virtio-pci")),
        "the device is listed with its driver",
    );
}

#[test]
fn check_explains_and_names_the_fix() {
    let c = case("check-before");
    c.check(c.rc == Some(1), "check exits 1 when not ready");
    c.check(
        c.console.contains("bound to virtio-pci, not vfio-pci")
            && c.console.contains(&format!("zhitong bind {DEV}")),
        "check names the driver and the bind command",
    );
}

#[test]
fn run_refuses_an_unbound_device_before_touching_it() {
    let c = case("run-unbound");
    c.check(c.rc == Some(2), "run exits 2");
    c.check(
        c.console.contains("not vfio-pci") && !c.console.contains("L2:"),
        "run stops with the same finding and never boots",
    );
}

#[test]
fn bind_moves_the_group_and_is_idempotent() {
    let c = case("bind");
    c.check(c.rc == Some(0), "bind exits 0");
    c.check(
        c.console.contains("virtio-pci -> vfio-pci"),
        "bind says what moved",
    );
    let again = case("bind-again");
    again.check(again.rc == Some(0), "second bind exits 0");
    again.check(
        again.console.contains("nothing to do"),
        "second bind does nothing",
    );
    let after = case("check-after");
    after.check(after.rc == Some(0), "check exits 0 once bound");
    after.check(
        after.console.contains("\"ready\":true"),
        "check --json says ready",
    );
}

#[test]
fn run_passes_the_bound_device_through() {
    let c = case("run");
    c.assert_booted();
}

#[test]
fn unbind_gives_the_device_back() {
    let c = case("unbind");
    c.check(c.rc == Some(0), "unbind exits 0");
    c.check(
        c.console.contains("vfio-pci -> virtio-pci"),
        "unbind says what moved",
    );
    c.check(
        c.console
            .lines()
            .any(|l| l.trim_end().ends_with("/virtio-pci")),
        "the device is back on virtio-pci",
    );
    let again = case("unbind-again");
    again.check(again.rc == Some(0), "second unbind exits 0");
    again.check(
        again.console.contains("nothing to do"),
        "second unbind does nothing",
    );
}
