//! `zhitong test` in the lab: one passed-through GPU (virtio-gpu, bound to vfio-pci in L1) and
//! a three-case matrix — a guest that passes (powers off), one that exits with status 3 through
//! the guest exit port, one that hangs and hits its timeout. Each case's guest loads the GPU's
//! native driver, so every case proves it got the device from the one before. Then a strict
//! matrix (every case expects 0, `--filter exits`) must fail with exit 1, after the timed-out
//! case released the device. Last, `zhitong run --timeout 30s --console-log` on the hanging
//! guest exits 124 and leaves a timestamped log. Before it, the failure paths with the GPU
//! (binary built with `test-faults`): a vCPU that panics, a VM that fails right after its
//! devices are attached; the timed run then proves each released the GPU. After it, a run
//! whose stdout and stderr are a pipe closed after the first line still ends with the guest's
//! poweroff. One L0 boot.

use std::sync::OnceLock;

use zhitong_tests::{Case, CaseResult, Guest, Lab, LabRun};

const GPU: &str = "virtio-gpu-pci,disable-legacy=on,iommu_platform=on,addr=0x4";
const DEV: &str = "0000:00:04.0";
const CMDLINE: &str = "console=ttyS0 quiet panic=-1";

/// Each guest loads virtio_gpu and says which case it is and whether the GPU came up.
fn gpu_guest(case: &str) -> Guest {
    Guest::new()
        .module("virtio_pci")
        .module("virtio_gpu")
        .line("for i in $(seq 50); do [ -e /dev/dri/card0 ] && break; sleep 0.1; done")
        .line(&format!(
            "[ -e /dev/dri/card0 ] && echo 'L2: gpu ready in {case}' || echo 'L2: gpu missing in {case}'"
        ))
}

fn matrix(expect_exit: u8, expect_hang: u8) -> String {
    let kernel = |img: &str| {
        format!("kernel = {{ path = \"/l2/vmlinux\", initramfs = \"/l2/{img}.img\", cmdline = \"{CMDLINE}\" }}")
    };
    format!(
        "devices = [\"{DEV}\"]\ntimeout = \"120s\"\n\n\
         [[case]]\nname = \"passes\"\n{}\n\n\
         [[case]]\nname = \"exits-3\"\nexpect = {expect_exit}\n{}\n\n\
         [[case]]\nname = \"hangs\"\nexpect = {expect_hang}\ntimeout = \"30s\"\n{}\n",
        kernel("img-pass"),
        kernel("img-exit"),
        kernel("img-hang"),
    )
}

const SCRIPT: &str = r#"
Z=/bin/zhitong
t0=$(cut -d' ' -f1 /proc/uptime)
$Z test /matrix.toml --junit /tmp/junit.xml --logs /tmp/logs 2>/tmp/summary
rc=$?
t1=$(cut -d' ' -f1 /proc/uptime)
sed 's/^/SUMMARY: /' /tmp/summary
echo "MATRIX: rc=$rc seconds=$(awk "BEGIN { print $t1 - $t0 }")"
sed 's/^/JUNIT: /' /tmp/junit.xml
for f in /tmp/logs/*.log; do n=$(basename $f .log); sed "s/^/LOG $n: /" $f; done
$Z test /strict.toml --filter exits --junit /tmp/strict.xml --logs /tmp/strict 2>/tmp/summary
echo "STRICT: rc=$?"
sed 's/^/STRICT: /' /tmp/summary
grep -c '<failure' /tmp/strict.xml | sed 's/^/STRICT: failures=/'
sed 's/^/LOG strict: /' /tmp/strict/exits-3.log
R="$Z run --kernel /l2/vmlinux --initramfs /l2/img-pass.img --cmdline 'console=ttyS0 quiet panic=-1' --device 0000:00:04.0"
ZHITONG_TEST_FAULT=vcpu-panic:300 sh -c "$R" >/dev/null 2>/tmp/panic.err
echo "PANIC: rc=$?"
sed 's/^/PANIC: stderr: /' /tmp/panic.err
ZHITONG_TEST_FAULT=fail-after-devices:0 sh -c "$R" >/dev/null 2>/tmp/half.err
echo "HALFWAY: rc=$?"
sed 's/^/HALFWAY: stderr: /' /tmp/half.err
$Z run --kernel /l2/vmlinux --initramfs /l2/img-hang.img --cmdline 'console=ttyS0 quiet panic=-1' --device 0000:00:04.0 --timeout 30s --console-log /tmp/run.log --console-timestamps >/tmp/run.out 2>/tmp/run.err
echo "RUN: rc=$?"
sed 's/^/RUN: stderr: /' /tmp/run.err
echo "RUN: stdout_ready=$(grep -c 'L2: gpu ready in hangs' /tmp/run.out)"
sed 's/^/RUN log: /' /tmp/run.log
( sh -c "$R" 2>&1; echo "rc=$?" >/tmp/pipe.rc ) | head -1 >/tmp/pipe.head
echo "PIPE: $(cat /tmp/pipe.rc)"
sed 's/^/PIPE: head: /' /tmp/pipe.head
"#;

fn lab() -> &'static LabRun {
    static RUN: OnceLock<Result<LabRun, String>> = OnceLock::new();
    let run = RUN.get_or_init(|| {
        // These cases only build the L2 images (/l2/<name>.img); `--help` keeps them instant.
        let image = |name: &str, guest: Guest| Case::new(name).guest(guest).arg("--help");
        let exit3 = "printf '\\003' | dd of=/dev/port bs=1 seek=$((0x4f4)) count=1 2>/dev/null";
        Lab::new()
            .map_err(|e| e.to_string())?
            .name("matrix")
            .device(GPU)
            .bind(DEV)
            .timeout(std::time::Duration::from_secs(600))
            .file("/matrix.toml", matrix(3, 124))
            .file("/strict.toml", matrix(0, 0))
            .case(image("img-pass", gpu_guest("passes")))
            .case(image("img-exit", gpu_guest("exits-3").end_with(exit3)))
            .case(image("img-hang", gpu_guest("hangs").end_with("sleep 600")))
            .case(Case::shell("matrix", SCRIPT).timeout(std::time::Duration::from_secs(500)))
            .run()
            .map_err(|e| e.to_string())
    });
    run.as_ref().unwrap_or_else(|e| panic!("lab failed: {e}"))
}

fn matrix_case() -> &'static CaseResult {
    lab().case("matrix")
}

/// The lines starting with `prefix`, prefix removed.
fn lines(prefix: &str) -> Vec<String> {
    matrix_case()
        .console
        .lines()
        .filter_map(|l| l.strip_prefix(prefix))
        .map(str::to_string)
        .collect()
}

fn has_line(prefix: &str, pred: impl Fn(&str) -> bool) -> bool {
    lines(prefix).iter().any(|l| pred(l))
}

#[test]
fn every_case_meets_its_expectation_and_zhitong_test_exits_0() {
    let c = matrix_case();
    let summary = lines("SUMMARY: ");
    eprintln!("{}", summary.join("\n"));
    eprintln!("{:?}", lines("MATRIX: "));
    c.check(
        has_line("MATRIX: ", |l| l.starts_with("rc=0 ")),
        "zhitong test exits 0 when every case met its expectation",
    );
    for name in ["passes", "exits-3", "hangs"] {
        c.check(
            summary
                .iter()
                .any(|l| l.starts_with(&format!("PASS  {name}  (")) && l.ends_with(" s)")),
            &format!("a PASS line for {name}"),
        );
    }
    c.check(
        summary
            .iter()
            .any(|l| l.starts_with("zhitong test: 3 passed, 0 failed of 3")),
        "the closing line counts 3 passed",
    );
}

#[test]
fn each_case_got_the_device_in_turn() {
    let c = matrix_case();
    for name in ["passes", "exits-3", "hangs"] {
        let log = lines(&format!("LOG {name}: "));
        c.check(
            log.iter()
                .any(|l| l.starts_with('[') && l.ends_with(&format!("L2: gpu ready in {name}"))),
            &format!("the {name} guest drove the passed-through GPU (timestamped log line)"),
        );
    }
    c.check(
        has_line("LOG hangs: ", |l| l.ends_with("L2: done"))
            && !has_line("LOG hangs: ", |l| l.contains("Power down")),
        "the hanging guest never powered off",
    );
    c.check(
        has_line("LOG strict: ", |l| l.ends_with("L2: gpu ready in exits-3")),
        "the device was handed on after the timed-out case too",
    );
}

#[test]
fn the_junit_report_says_what_happened() {
    let c = matrix_case();
    let junit = lines("JUNIT: ").join("\n");
    c.check(
        junit.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>"),
        "an XML declaration",
    );
    c.check(
        junit.contains("<testsuites name=\"zhitong\" tests=\"3\" failures=\"0\" errors=\"0\"")
            && junit.contains("<testsuite name=\"matrix.toml\" tests=\"3\" failures=\"0\""),
        "testsuites/testsuite with the counts",
    );
    for name in ["passes", "exits-3", "hangs"] {
        c.check(
            junit.contains(&format!(
                "<testcase name=\"{name}\" classname=\"zhitong.matrix.toml\" time=\""
            )),
            &format!("a testcase for {name}"),
        );
        c.check(
            junit.contains(&format!("L2: gpu ready in {name}")),
            &format!("{name}'s console tail is in its system-out"),
        );
    }
    c.check(
        junit.matches("<system-out><![CDATA[").count() == 3,
        "three system-outs",
    );
    c.check(!junit.contains("<failure"), "no failures");
    c.check(
        junit.trim_end().ends_with("</testsuites>"),
        "the report is complete",
    );
}

#[test]
fn a_case_that_misses_its_expectation_fails_the_run() {
    let c = matrix_case();
    c.check(
        lines("STRICT: ").first().map(String::as_str) == Some("rc=1"),
        "exit 1",
    );
    c.check(
        has_line("STRICT: ", |l| {
            l.starts_with("FAIL  exits-3  expected 0, got 3: the guest wrote 3 to the exit port (")
        }),
        "a FAIL line naming expected and actual status",
    );
    c.check(
        has_line("STRICT: ", |l| l == "failures=1"),
        "the JUnit report has the failure",
    );
}

#[test]
fn run_timeout_exits_124_and_the_console_log_is_timestamped() {
    let c = matrix_case();
    let run = lines("RUN: ");
    eprintln!("{}", run.join("\n"));
    c.check(
        run.first().map(String::as_str) == Some("rc=124"),
        "exit 124",
    );
    c.check(
        run.iter().any(|l| {
            l.starts_with(
                "stderr: zhitong: the guest was stopped after running for the --timeout of 30s",
            )
        }),
        "one stderr line naming the limit",
    );
    c.check(
        run.iter().any(|l| l == "stdout_ready=1"),
        "stdout still carries the console",
    );
    let log = lines("RUN log: ");
    c.check(
        log.iter().any(|l| {
            l.len() > 12
                && l.starts_with('[')
                && &l[10..12] == "] "
                && l.ends_with("L2: gpu ready in hangs")
        }),
        "the log file has the console with [   12.345] stamps",
    );
}

#[test]
fn a_panicking_vcpu_ends_the_vm_with_one_line_and_releases_the_gpu() {
    let c = matrix_case();
    let out = lines("PANIC: ");
    eprintln!("{}", out.join("\n"));
    c.check(out.first().map(String::as_str) == Some("rc=1"), "exit 1");
    let panics: Vec<_> = out.iter().filter(|l| l.contains("panicked")).collect();
    c.check(
        panics.len() == 1
            && panics[0].starts_with(
                "stderr: zhitong: the vcpu0 thread panicked: injected fault: vcpu-panic at exit 300;",
            ),
        "one stderr line naming the thread and the panic",
    );
    // The timed run after it drives the same GPU.
    c.check(
        has_line("RUN: ", |l| l == "stdout_ready=1"),
        "the next VM got the GPU",
    );
}

#[test]
fn a_vm_failing_after_its_devices_releases_them() {
    let c = matrix_case();
    let out = lines("HALFWAY: ");
    eprintln!("{}", out.join("\n"));
    c.check(out.first().map(String::as_str) == Some("rc=1"), "exit 1");
    c.check(
        out.iter().any(|l| {
            l == "stderr: zhitong: cannot set up the vCPUs: injected fault: fail-after-devices"
        }),
        "one stderr line naming the cause",
    );
    c.check(
        has_line("RUN: ", |l| l == "stdout_ready=1"),
        "the next VM got the GPU",
    );
}

#[test]
fn a_closed_stdout_and_stderr_do_not_stop_the_run() {
    let c = matrix_case();
    let out = lines("PIPE: ");
    eprintln!("{}", out.join("\n"));
    c.check(
        out.first().map(String::as_str) == Some("rc=0"),
        "the guest's poweroff still ends the run with 0",
    );
    c.check(
        out.iter().any(|l| l.starts_with("head: ")),
        "the first line was read",
    );
}
