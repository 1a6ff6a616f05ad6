//! The control API in the lab: zhitong runs in the background in L1 with --api-socket;
//! `zhitong api` queries it, pauses and resumes the guest, and shuts it down through the
//! ACPI power button (the L2 guest runs acpid, which powers off), and zhitong exits 0.

use std::sync::OnceLock;

use zhitong_tests::{Case, CaseResult, Guest, Lab, LabRun};

/// L1 script: start the VM, wait for its guest to be up (acpid running), drive the API.
const SCRIPT: &str = r#"
S=/tmp/zhitong.sock; Z=/bin/zhitong
$Z run --kernel /l2/vmlinux --initramfs /l2/api.img --cmdline 'console=ttyS0 quiet' --api-socket $S > /tmp/l2.log 2>&1 &
pid=$!
for i in $(seq 300); do grep -q 'acpid running' /tmp/l2.log 2>/dev/null && break; sleep 0.1; done
echo "API: get $($Z api --socket $S get)"
$Z api --socket $S pause > /dev/null; echo "API: pause rc=$?"
echo "API: paused $($Z api --socket $S get)"
$Z api --socket $S resume > /dev/null; echo "API: resume rc=$?"
$Z api --socket $S frobnicate; echo "API: bad-command rc=$?"
$Z api --socket $S shutdown --timeout 20 > /dev/null; echo "API: shutdown rc=$?"
wait $pid; echo "API: vmm rc=$?"
sed 's/^/GUEST: /' /tmp/l2.log
[ -e $S ] && echo "API: socket left behind" || echo "API: socket removed"
"#;

fn lab() -> &'static LabRun {
    static RUN: OnceLock<Result<LabRun, String>> = OnceLock::new();
    let run = RUN.get_or_init(|| {
        // A guest that waits for the power button instead of powering off by itself.
        let guest = Guest::new()
            .module("button")
            .module("evdev")
            .line("mkdir -p /etc/acpi/PWRF")
            .line("printf '#!/bin/sh\\npoweroff -f\\n' > /etc/acpi/PWRF/00000080")
            .line("chmod +x /etc/acpi/PWRF/00000080")
            // In the foreground with -d busybox acpid logs each event to stderr (and, unlike
            // its daemon mode in this initramfs, runs the action).
            .line("(acpid -f -d 2>&1 | sed 's/^/L2: acpid: /') & echo 'L2: acpid running'")
            .end_with("sleep 600");
        Lab::new()
            .map_err(|e| e.to_string())?
            .name("api")
            // Builds /l2/api.img for the script; `--help` keeps this case instant.
            .case(Case::new("api").guest(guest).arg("--help"))
            .case(Case::shell("drive", SCRIPT))
            .run()
            .map_err(|e| e.to_string())
    });
    run.as_ref().unwrap_or_else(|e| panic!("lab failed: {e}"))
}

fn drive() -> &'static CaseResult {
    lab().case("drive")
}

fn line(prefix: &str) -> String {
    let c = drive();
    c.console
        .lines()
        .find_map(|l| l.strip_prefix(prefix))
        .unwrap_or_else(|| {
            c.check(false, &format!("no line starting {prefix:?}"));
            unreachable!()
        })
        .to_string()
}

#[test]
fn get_reports_a_running_vm_with_its_config_and_timeline() {
    let get = line("API: get ");
    let c = drive();
    c.check(
        get.contains("\"state\":\"running\""),
        "GET /vm says running",
    );
    c.check(get.contains("\"vcpus\":1"), "GET /vm has the config");
    c.check(
        get.contains("\"guest_marker_ms\":"),
        "GET /vm has the timeline",
    );
}

#[test]
fn pause_and_resume_change_the_state() {
    let c = drive();
    c.check(line("API: pause rc=") == "0", "pause exits 0");
    c.check(
        line("API: paused ").contains("\"state\":\"paused\""),
        "GET /vm says paused",
    );
    c.check(line("API: resume rc=") == "0", "resume exits 0");
    c.check(
        line("API: bad-command rc=") == "2",
        "an unknown api command is a usage error",
    );
}

#[test]
fn shutdown_presses_the_power_button_and_the_guest_powers_off() {
    let c = drive();
    c.check(line("API: shutdown rc=") == "0", "shutdown exits 0");
    // The guest's init sleeps for ten minutes: only its acpid, acting on the power button,
    // powers it off this soon.
    c.check(
        c.console.contains("reboot: Power down"),
        "the guest powered off",
    );
    c.check(
        line("API: vmm rc=") == "0",
        "zhitong exits 0 after the guest powered off",
    );
    c.check(
        line("API: socket ") == "removed",
        "the socket is removed at exit",
    );
}
