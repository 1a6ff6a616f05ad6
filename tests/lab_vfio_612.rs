//! The zhitong VFIO suite (tests/lab/vfio/zhitong.rs: every passthrough scenario, SIGTERM,
//! --user, P2P, the VGA ROM) with L1 on Debian's 6.12 kernel and its VFIO modules rebuilt
//! with iommufd and VFIO cdev (resources/lab/kernel-6.12.sh), every run forced onto the
//! iommufd backend (`--vfio-backend iommufd`). lab_vfio_612_legacy.rs runs the suite on the
//! same kernel with the legacy container.
//!
//! Also: `zhitong devices` and `zhitong check` in L1 say a bound device would use iommufd,
//! and name its cdev; `p2p=on` with iommufd forced is refused (exit 2, one line: the legacy
//! backend is the fix), and the suite's P2P case, left to choose, gets the legacy one.
//!
//! Run it alone: `resources/lab/kernel-6.12.sh && cargo build --release -p vmm
//! --features test-faults && cargo test -p zhitong-tests --test lab_vfio_612`.

use zhitong_tests::vfio::{self, BOCHS, GPU};
use zhitong_tests::{Case, Lab, Vmm};

zhitong_tests::zhitong_vfio_suite!(zhitong_tests::vfio::LINUX_6_12_IOMMUFD, backend_report);

/// What zhitong says of the host: `devices`, then `check` of two bound devices; then
/// p2p=on with iommufd forced.
fn backend_report(lab: Lab) -> Lab {
    lab.case(Case::shell(
        "backend",
        &format!(
            "/bin/zhitong devices; /bin/zhitong check --device {} --device {}",
            GPU.bdf, BOCHS.bdf
        ),
    ))
    .case(
        vfio::passthrough(
            Vmm::Zhitong,
            "p2p-iommufd",
            &[&format!("{},p2p=on", BOCHS.bdf)],
            vfio::guest(&[], &[]),
        )
        .timings(false),
    )
}

#[test]
fn p2p_with_iommufd_forced_is_refused_with_the_fix() {
    let c = msi().case("p2p-iommufd");
    c.check(c.rc == Some(2), "want exit status 2");
    c.check(
        c.stderr.len() == 1
            && c.stderr[0].contains("p2p=on")
            && c.stderr[0].contains("--vfio-backend legacy"),
        "want one stderr line naming p2p=on and the legacy backend",
    );
}

#[test]
fn devices_and_check_say_iommufd() {
    let c = msi().case("backend");
    for bdf in [GPU.bdf, BOCHS.bdf] {
        let row = c.console.lines().find(|l| l.starts_with(bdf));
        c.check(
            row.is_some_and(|r| r.trim_end().ends_with("ready (iommufd)")),
            &format!("zhitong devices: {bdf} is {row:?}, want 'ready (iommufd)'"),
        );
    }
    let backend = c
        .console
        .lines()
        .find(|l| l.contains("VFIO backend iommufd"));
    c.check(
        backend.is_some_and(|l| l.contains("/dev/vfio/devices/vfio")),
        &format!("zhitong check's backend line: {backend:?}"),
    );
    c.check(
        c.console
            .contains("ready: zhitong run can pass these devices through"),
        "zhitong check is not ready",
    );
}
