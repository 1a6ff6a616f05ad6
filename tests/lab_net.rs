//! virtio-net and vsock in the nested lab (lab/net.rs has both sides): L1 makes a tap, L2 and
//! L1 ping each other and move `TCP_MIB` MiB over TCP both ways (md5s compared across the
//! two), L2 reports the MAC it was given; a vsock echo runs both ways, guest to host and host
//! to guest, with round trips per second. QEMU as the L1 VMM is the reference (virtio-net on a
//! tap, vhost-vsock); zhitong's cases, the same L2 with the hybrid vsock's Unix sockets on L1's
//! side. A Cloud Hypervisor case (hybrid vsock, like
//! zhitong's) runs when a binary is at hand (`cloud_hypervisor_binary`). All cases share one
//! L0 boot. The figures are printed, not asserted: this is TCG under TCG.
//!
//! Needs resources/lab/setup.sh, gcc (the static vsock helper) and
//! `cargo build --release -p vmm --features test-faults`.

use std::sync::OnceLock;
use std::time::Duration;

use zhitong_tests::net::{self, Traffic, VsockHost, GUEST_CID, ROUND_TRIPS, TCP_MIB};
use zhitong_tests::{cloud_hypervisor_binary, Case, CaseResult, Lab, LabRun};

/// Not QEMU's default (52:54:00:12:34:56): seeing it proves the option reached the device.
const MAC: &str = "52:54:00:7a:74:01";

/// L1's end of a case's vsock: hybrid (a Unix socket) or QEMU's vhost-vsock.
#[derive(Clone, Copy)]
enum Host {
    Hybrid,
    Vhost,
}

/// The full case `name` (`vmm` makes its Case): tap `tap` (made by L1), MAC, vsock, all
/// traffic.
fn full_case(lab: Lab, vmm: fn(&str) -> Case, name: &str, tap: &str, host: Host) -> Lab {
    let socket = format!("/tmp/{name}.vsock");
    let host = match host {
        Host::Hybrid => VsockHost::Hybrid(&socket),
        Host::Vhost => VsockHost::Vhost,
    };
    let guest = net::guest(Traffic {
        tcp: true,
        vsock: true,
    })
    .expect("the L2 guest");
    let case = vmm(name)
        .net(tap, Some(MAC))
        .vsock(GUEST_CID, &socket)
        .guest(guest)
        .timeout(Duration::from_secs(240));
    let case = net::l1_vsock(net::l1_tap(case, tap, true), host);
    lab.case(case)
}

fn lab() -> &'static LabRun {
    static RUN: OnceLock<Result<LabRun, String>> = OnceLock::new();
    let run = RUN.get_or_init(|| {
        let helper = net::vsock_echo().map_err(|e| e.to_string())?;
        let lab = Lab::new()
            .map_err(|e| e.to_string())?
            .name("net")
            .timeout(Duration::from_secs(600))
            .binary(net::VSOCK_ECHO, helper);
        let lab = full_case(lab, Case::qemu_l1, "qemu-net", "ztq0", Host::Vhost);
        let lab = full_case(lab, Case::new, "zhitong-net", "ztz0", Host::Hybrid);
        // No MAC given, and no tap before the VMM: zhitong makes it, L1 addresses it.
        let guest = net::guest(Traffic {
            tcp: false,
            vsock: false,
        })
        .map_err(|e| e.to_string())?;
        let made = Case::new("zhitong-net-made-tap")
            .net("ztz1", None)
            .guest(guest);
        let lab = lab.case(net::l1_tap_made_by_vmm(made, "ztz1"));
        let lab = if cloud_hypervisor_binary().is_some() {
            full_case(
                lab,
                Case::cloud_hypervisor_l1,
                "ch-net",
                "ztc0",
                Host::Hybrid,
            )
        } else {
            lab
        };
        let run = lab.run().map_err(|e| e.to_string())?;
        eprintln!(
            "lab_net: L0 run took {:.1} s (boots: {})",
            run.elapsed.as_secs_f64(),
            run.boots
        );
        for c in &run.cases {
            eprintln!(
                "lab_net: case {} rc={:?} in {:?}, first L2 marker after {:?}",
                c.name, c.rc, c.elapsed, c.to_first_marker
            );
        }
        Ok(run)
    });
    match run {
        Ok(run) => run,
        Err(e) => panic!("lab setup failed: {e}"),
    }
}

/// L2 pinged L1 (3 of 3), L1 pinged L2 (L2 saw the echo requests, L1 the replies), and L1's
/// tap received the guest's frames.
fn assert_pings_both_ways(c: &CaseResult) {
    c.assert_booted();
    c.check(
        c.marker("eth0") == Some("up"),
        &format!("eth0: {:?}", c.marker("eth0")),
    );
    c.check(
        c.marker("ping") == Some("3/3"),
        &format!("L2 -> L1 ping: {:?} replies", c.marker("ping")),
    );
    c.check(
        c.l1_marker("ping_l2") == Some("ok"),
        &format!("L1 -> L2 ping: {:?}", c.l1_marker("ping_l2")),
    );
    c.check(
        c.marker_u64("pinged_by_l1").is_some_and(|n| n > 0),
        &format!("L2 counted {:?} echo requests", c.marker("pinged_by_l1")),
    );
    let rx = c
        .l1_marker("tap_rx_packets")
        .and_then(|v| v.parse::<u64>().ok());
    c.check(
        rx.is_some_and(|n| n > 0),
        &format!("L1's tap received {rx:?} frames"),
    );
}

/// What L2 sent, L1 received, and the other way round (md5s of `TCP_MIB` MiB).
fn assert_tcp_both_ways(c: &CaseResult) {
    c.assert_booted();
    for (from, to, sent, got) in [
        (
            "L2",
            "L1",
            c.marker("tcp_tx_md5"),
            c.l1_marker("tcp_rx_md5"),
        ),
        (
            "L1",
            "L2",
            c.l1_marker("tcp_tx_md5"),
            c.marker("tcp_rx_md5"),
        ),
    ] {
        c.check(
            sent.is_some_and(|m| m.len() == 32) && sent == got,
            &format!("TCP {from} -> {to}: sent md5 {sent:?}, received {got:?}"),
        );
    }
}

fn assert_mac(c: &CaseResult, want: &str) {
    c.check(
        c.marker("mac") == Some(want),
        &format!("eth0's MAC {:?}, want {want}", c.marker("mac")),
    );
}

/// The round trips/s in "ok round_trips_per_s=R", or None.
fn round_trips(v: Option<&str>) -> Option<f64> {
    v?.strip_prefix("ok round_trips_per_s=")?.parse().ok()
}

/// L2 connected to the host (CID 2), its line and `ROUND_TRIPS` echoes came back, and L1's
/// listener served it.
fn assert_vsock_guest_to_host(c: &CaseResult) {
    c.assert_booted();
    c.check(
        round_trips(c.marker("vsock_g2h")).is_some(),
        &format!("L2 -> host vsock: {:?}", c.marker("vsock_g2h")),
    );
    c.check(
        c.l1_marker("vsock_g2h_served") == Some("0"),
        &format!(
            "L1's listener ended with {:?}, want 0 (served one connection)",
            c.l1_marker("vsock_g2h_served")
        ),
    );
}

/// L1 connected to L2's listener (hybrid: CONNECT + OK; vhost: AF_VSOCK), its line and
/// `ROUND_TRIPS` echoes came back, and L2's listener served it.
fn assert_vsock_host_to_guest(c: &CaseResult) {
    c.assert_booted();
    c.check(
        round_trips(c.l1_marker("vsock_h2g")).is_some(),
        &format!("host -> L2 vsock: {:?}", c.l1_marker("vsock_h2g")),
    );
    c.check(
        c.marker("vsock_h2g_served") == Some("0"),
        &format!(
            "L2's listener ended with {:?}, want 0 (served one connection)",
            c.marker("vsock_h2g_served")
        ),
    );
}

/// Prints the figures (TCP MiB/s each way, vsock round trips/s each way); checks they parse.
fn report_figures(c: &CaseResult) {
    let to_l1 = c.marker("tcp_to_l1_mib_s");
    let from_l1 = c.marker("tcp_from_l1_mib_s");
    let g2h = round_trips(c.marker("vsock_g2h"));
    let h2g = round_trips(c.l1_marker("vsock_h2g"));
    eprintln!(
        "{}: TCP L2->L1 {} MiB/s, L1->L2 {} MiB/s ({TCP_MIB} MiB each); vsock round trips/s \
         (64 B, {ROUND_TRIPS}) L2->host {}, host->L2 {}; ping {} ms",
        c.name,
        to_l1.unwrap_or("?"),
        from_l1.unwrap_or("?"),
        g2h.map_or("?".into(), |v| format!("{v:.0}")),
        h2g.map_or("?".into(), |v| format!("{v:.0}")),
        c.marker("ping_ms").unwrap_or("?"),
    );
    for (what, v) in [("tcp_to_l1_mib_s", to_l1), ("tcp_from_l1_mib_s", from_l1)] {
        c.check(
            v.is_some_and(|v| v.parse::<f64>().is_ok()),
            &format!("no number in 'L2: {what}=' ({v:?})"),
        );
    }
    c.check(g2h.is_some() && h2g.is_some(), "no vsock round trip rates");
}

#[test]
fn qemu_l2_and_l1_ping_each_other() {
    assert_pings_both_ways(lab().case("qemu-net"));
}

#[test]
fn qemu_tcp_moves_data_both_ways() {
    assert_tcp_both_ways(lab().case("qemu-net"));
}

#[test]
fn qemu_guest_has_the_given_mac() {
    assert_mac(lab().case("qemu-net"), MAC);
}

#[test]
fn qemu_vsock_guest_to_host_echoes() {
    assert_vsock_guest_to_host(lab().case("qemu-net"));
}

#[test]
fn qemu_vsock_host_to_guest_echoes() {
    assert_vsock_host_to_guest(lab().case("qemu-net"));
}

#[test]
fn qemu_figures_are_reported() {
    report_figures(lab().case("qemu-net"));
}

#[test]
fn zhitong_l2_and_l1_ping_each_other() {
    assert_pings_both_ways(lab().case("zhitong-net"));
}

#[test]
fn zhitong_tcp_moves_data_both_ways() {
    assert_tcp_both_ways(lab().case("zhitong-net"));
}

#[test]
fn zhitong_guest_has_the_given_mac() {
    assert_mac(lab().case("zhitong-net"), MAC);
}

#[test]
fn zhitong_vsock_guest_to_host_echoes() {
    assert_vsock_guest_to_host(lab().case("zhitong-net"));
}

#[test]
fn zhitong_vsock_host_to_guest_echoes() {
    assert_vsock_host_to_guest(lab().case("zhitong-net"));
}

#[test]
fn zhitong_figures_are_reported() {
    report_figures(lab().case("zhitong-net"));
}

/// No tap before the VMM: zhitong creates it; without `mac=` the guest gets a unicast,
/// locally administered address of the VMM's choosing, and L2 pings L1 through it.
#[test]
fn zhitong_creates_its_tap_and_picks_a_mac() {
    let c = lab().case("zhitong-net-made-tap");
    c.assert_booted();
    c.check(
        c.l1_marker("tap") == Some("ztz1"),
        &format!("L1 found the tap: {:?}", c.l1_marker("tap")),
    );
    let first = c
        .marker("mac")
        .and_then(|m| m.split(':').next())
        .and_then(|o| u8::from_str_radix(o, 16).ok());
    c.check(
        c.marker("mac").is_some_and(|m| m.len() == 17)
            && first.is_some_and(|o| o & 1 == 0 && o & 2 == 2),
        &format!(
            "eth0's MAC {:?}: want unicast, locally administered",
            c.marker("mac")
        ),
    );
    c.check(
        c.marker("ping") == Some("3/3"),
        &format!("L2 -> L1 ping: {:?} replies", c.marker("ping")),
    );
}

/// Cloud Hypervisor's hybrid vsock is the convention zhitong follows: the same L1 side works
/// against it. Run with `--ignored` where a binary is at hand (CLOUD_HYPERVISOR, or
/// target/lab-cache/cloud-hypervisor).
#[test]
#[ignore = "needs a Cloud Hypervisor binary"]
fn cloud_hypervisor_passes_the_same_checks() {
    assert!(
        cloud_hypervisor_binary().is_some(),
        "no Cloud Hypervisor binary: set CLOUD_HYPERVISOR or put one at target/lab-cache/cloud-hypervisor"
    );
    let c = lab().case("ch-net");
    assert_pings_both_ways(c);
    assert_tcp_both_ways(c);
    assert_mac(c, MAC);
    assert_vsock_guest_to_host(c);
    assert_vsock_host_to_guest(c);
    report_figures(c);
}
