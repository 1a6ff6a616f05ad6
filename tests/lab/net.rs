//! virtio-net and vsock in the lab: what L2 runs and what L1 runs around the VMM, the same
//! for every VMM except where the host side of vsock differs.
//!
//! Network: L1 makes a persistent tap with busybox `tunctl -t TAP` (tun is loaded for any case
//! with `Case::net`), gives it `L1_ADDR`/24 and brings it up; the VMM opens it. L2 loads
//! virtio_net, takes `L2_ADDR`/24 on eth0 and prints its MAC, pings L1, sends `TCP_MIB` MiB of
//! random bytes to L1's `nc -l -p TCP_TO_L1` and reads as much from L1's `nc -l -p TCP_FROM_L1`,
//! printing the md5s and MiB/s of both (timed with /proc/uptime, 10 ms steps). Meanwhile a
//! background job in L1 pings L2 until it answers; L2 waits (bounded) until its ICMP counters
//! show an echo request from L1. After the VMM exits L1 prints its side: the md5 of what it
//! received, the tap's rx_packets, whether it reached L2 by ping.
//!
//! vsock: L2 loads vmw_vsock_virtio_transport. Guest to host: L2 connects to CID 2 port
//! `G2H_PORT`, checks the echo of a line, then times `ROUND_TRIPS` echoes of 64 bytes. Host to
//! guest: L2 serves one echo connection on port `H2G_PORT`, which L1 opens and times the same
//! way. L1's side is `VsockHost`: zhitong's hybrid vsock (Unix sockets in L1, `CONNECT <port>`)
//! or QEMU's vhost-vsock (AF_VSOCK in L1). Both sides use `vsock-echo` (vsock_echo.c, built
//! with `gcc -static`): busybox has no AF_VSOCK.
//!
//! L1's background jobs write to files that `after` lines print: their lines would otherwise
//! land in the middle of L2's console lines.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use crate::case::Case;
use crate::guest::Guest;
use crate::{run_tool, workspace_root, Error, Result};

/// L1's address on the tap.
pub const L1_ADDR: &str = "10.0.2.1";
/// L2's address on eth0.
pub const L2_ADDR: &str = "10.0.2.15";
/// MiB moved over TCP each way.
pub const TCP_MIB: u64 = 8;
/// L1 listens here for what L2 sends.
pub const TCP_TO_L1: u16 = 5001;
/// L1 listens here to send to L2.
pub const TCP_FROM_L1: u16 = 5002;
/// The guest's CID.
pub const GUEST_CID: u32 = 3;
/// L2 connects to the host (CID 2) on this port.
pub const G2H_PORT: u32 = 5000;
/// L2 listens on this port for the host.
pub const H2G_PORT: u32 = 6000;
/// Echoes of 64 bytes timed each way.
pub const ROUND_TRIPS: u32 = 1000;
/// The helper's path in L1 and in L2.
pub const VSOCK_ECHO: &str = "/bin/vsock-echo";

const VSOCK_ECHO_C: &str = include_str!("vsock_echo.c");

/// `vsock_echo.c` built static (once per process) under target/lab-out/net-tools.
pub fn vsock_echo() -> Result<PathBuf> {
    static BIN: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(|| {
        let dir = workspace_root().join("target/lab-out/net-tools");
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let (src, bin) = (dir.join("vsock_echo.c"), dir.join("vsock-echo"));
        std::fs::write(&src, VSOCK_ECHO_C).map_err(|e| e.to_string())?;
        run_tool(
            Command::new("gcc")
                .args(["-static", "-O2", "-Wall", "-Werror", "-o"])
                .arg(&bin)
                .arg(&src),
        )
        .map_err(|e| format!("building the lab's vsock-echo (gcc, libc6-dev): {e}"))?;
        Ok(bin)
    })
    .clone()
    .map_err(Error::new)
}

/// What an L2 of `guest` does besides bringing eth0 up and pinging L1.
#[derive(Clone, Copy, Debug)]
pub struct Traffic {
    /// `TCP_MIB` MiB each way, and the wait for L1's ping
    pub tcp: bool,
    /// The vsock echoes both ways
    pub vsock: bool,
}

/// Shell functions of both sides: `running PID` (alive and not a zombie: busybox sh reaps
/// its background jobs only on `wait`), `reap PID` (waits up to 5 s for it, none if the VMM
/// failed (`$rc`, see `Case::after`), then kills it, then returns its status).
const SHELL_FUNCTIONS: &str = "running() { [ -e /proc/$1 ] && [ \"$(cut -d' ' -f3 /proc/$1/stat)\" != Z ]; }\n\
reap() { i=0; [ \"${rc:-0}\" = 0 ] || i=50; while running $1 && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done; kill $1 2>/dev/null; wait $1; }";

/// L2's `mib_s MIB 'COMMAND'`: evals COMMAND (which moves MIB MiB) and prints its MiB/s, or
/// "failed".
const MIB_S: &str = r#"mib_s() {
    read t0 _ </proc/uptime
    eval "$2" 2>/dev/null || { echo failed; return; }
    read t1 _ </proc/uptime
    awk -v m="$1" -v a="$t0" -v b="$t1" 'BEGIN { d = b - a; if (d < 0.01) d = 0.01; printf "%.1f\n", m / d }'
}"#;

/// L2's echo requests received (Icmp InEchos of /proc/net/snmp).
const IN_ECHOS: &str = "in_echos() { awk '/^Icmp:/ { if (!c) { for (i = 1; i <= NF; i++) if ($i == \"InEchos\") c = i } else print $c }' /proc/net/snmp; }";

/// The L2 guest (see the module's docs). Markers: mac, eth0, ping (received/sent), ping_ms;
/// with tcp: tcp_tx_md5, tcp_to_l1_mib_s, tcp_rx_md5, tcp_from_l1_mib_s, pinged_by_l1 (echo
/// requests seen); with vsock: vsock_g2h ("ok round_trips_per_s=R" or "failed: ..."),
/// vsock_h2g_served (the listener's status: 0 served).
pub fn guest(traffic: Traffic) -> Result<Guest> {
    let mut g = Guest::new().module("virtio_pci").module("virtio_net");
    if traffic.vsock {
        g = g
            .module("vmw_vsock_virtio_transport")
            .binary(VSOCK_ECHO, vsock_echo()?);
    }
    g = g
        .line(SHELL_FUNCTIONS)
        .line("i=0; while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done")
        .line("echo \"L2: mac=$(cat /sys/class/net/eth0/address)\"")
        .line("ip link set lo up")
        .line(&format!(
            "ip addr add {L2_ADDR}/24 dev eth0 && ip link set eth0 up && echo 'L2: eth0=up'"
        ));
    if traffic.vsock {
        // Listening from the start: L1 connects whenever it gets through.
        g = g.line(&format!("{VSOCK_ECHO} serve vsock:{H2G_PORT} 1 & h2g=$!"));
    }
    g = g
        // Until the carrier is up (linkwatch, up to a second after `ip link set up`) the
        // queue drops what is sent, ARP and pings alike.
        .line(
            "i=0; while [ \"$(cat /sys/class/net/eth0/operstate)\" != up ] && [ $i -lt 100 ]; \
             do sleep 0.1; i=$((i+1)); done; sleep 0.1; \
             echo \"L2: eth0_operstate=$(cat /sys/class/net/eth0/operstate)\"",
        )
        .line(&format!(
            "ping -c 3 -i 0.2 -W 5 {L1_ADDR} >/tmp/ping.out 2>&1; \
             got=$(sed -n 's/.*, \\([0-9]*\\) packets received.*/\\1/p' /tmp/ping.out); \
             echo \"L2: ping=$got/3\"; \
             [ \"$got\" = 3 ] || echo \"L2: ping_out=$(tr '\\n' ' ' </tmp/ping.out)\"; \
             echo \"L2: ping_ms=$(sed -n 's|.* = [0-9.]*/\\([0-9.]*\\)/.*|\\1|p' /tmp/ping.out)\""
        ));
    if traffic.tcp {
        g = g
            .line(MIB_S)
            .line(IN_ECHOS)
            .line(&format!(
                "dd if=/dev/urandom of=/tmp/tx bs=1M count={TCP_MIB} 2>/dev/null; \
                 echo \"L2: tcp_tx_md5=$(md5sum </tmp/tx | cut -d' ' -f1)\""
            ))
            .line(&format!(
                "echo \"L2: tcp_to_l1_mib_s=$(mib_s {TCP_MIB} 'nc {L1_ADDR} {TCP_TO_L1} </tmp/tx')\""
            ))
            .line(&format!(
                "echo \"L2: tcp_from_l1_mib_s=$(mib_s {TCP_MIB} 'nc {L1_ADDR} {TCP_FROM_L1} </dev/null >/tmp/rx')\""
            ))
            .line("echo \"L2: tcp_rx_md5=$(md5sum </tmp/rx | cut -d' ' -f1)\"")
            .line(
                "i=0; while [ \"$(in_echos)\" = 0 ] && [ $i -lt 200 ]; do sleep 0.1; i=$((i+1)); done; \
                 echo \"L2: pinged_by_l1=$(in_echos)\"",
            );
    }
    if traffic.vsock {
        g = g
            .line(&format!(
                "echo \"L2: vsock_g2h=$({VSOCK_ECHO} ping vsock:2:{G2H_PORT} {ROUND_TRIPS})\""
            ))
            // L1's connection: up to 60 s more.
            .line(
                "i=0; while running $h2g && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done; \
                 kill $h2g 2>/dev/null; wait $h2g; echo \"L2: vsock_h2g_served=$?\"",
            );
    }
    Ok(g)
}

/// L1's side of the tap `tap` (see the module's docs). L1 markers: tap (its name, once up),
/// with tcp: tcp_tx_md5 (what it sends), tcp_rx_md5 (what it got), ping_l2 ("ok" or "never"),
/// and always tap_rx_packets (frames from the VMM).
pub fn l1_tap(case: Case, tap: &str, tcp: bool) -> Case {
    let name = case.name.clone();
    let (tx, rx, ping) = (
        format!("/tmp/{name}-tcp-tx"),
        format!("/tmp/{name}-tcp-rx"),
        format!("/tmp/{name}-ping.out"),
    );
    let mut c = case.before(SHELL_FUNCTIONS).before(&format!(
        "tunctl -t {tap} >/dev/null && ip addr add {L1_ADDR}/24 dev {tap} && ip link set {tap} up \
         && echo 'L1: tap={tap}'"
    ));
    if tcp {
        c = c
            .before(&format!(
                "dd if=/dev/urandom of={tx} bs=1M count={TCP_MIB} 2>/dev/null; \
                 echo \"L1: tcp_tx_md5=$(md5sum <{tx} | cut -d' ' -f1)\""
            ))
            // nc -e: the listener ends when its program does, not at its stdin's EOF (which
            // would close the connection under the sender).
            .before(&format!(
                "rm -f {rx}; nc -l -p {TCP_TO_L1} -e sh -c 'cat >{rx}' & tcp_rx=$!"
            ))
            .before(&format!("nc -l -p {TCP_FROM_L1} -e cat {tx} & tcp_tx=$!"))
            .before(&format!(
                "(i=0; until ping -c 1 -W 1 {L2_ADDR} >/dev/null 2>&1; do i=$((i+1)); \
                 if [ $i -gt 600 ]; then echo 'L1: ping_l2=never'; exit; fi; sleep 0.1; done; \
                 echo 'L1: ping_l2=ok') >{ping} 2>&1 & pinger=$!"
            ))
            .after("reap $tcp_rx; reap $tcp_tx; reap $pinger")
            .after(&format!("cat {ping}"))
            .after(&format!(
                "echo \"L1: tcp_rx_md5=$(md5sum <{rx} | cut -d' ' -f1)\""
            ));
    }
    c.after(&format!(
        "echo \"L1: tap_rx_packets=$(cat /sys/class/net/{tap}/statistics/rx_packets)\""
    ))
    .after(&format!("tunctl -d {tap} >/dev/null"))
}

/// L1's side of a tap the VMM creates itself (`tap` does not exist when it starts): a
/// background job addresses it and brings it up once it appears. L1 marker: tap (once up, or
/// "never").
pub fn l1_tap_made_by_vmm(case: Case, tap: &str) -> Case {
    let out = format!("/tmp/{}-tap.out", case.name);
    case.before(SHELL_FUNCTIONS)
        .before(&format!(
            "(i=0; until [ -e /sys/class/net/{tap} ]; do i=$((i+1)); \
             if [ $i -gt 1200 ]; then echo 'L1: tap=never'; exit; fi; sleep 0.05; done; \
             ip addr add {L1_ADDR}/24 dev {tap} && ip link set {tap} up && echo 'L1: tap={tap}') \
             >{out} 2>&1 & tap_job=$!"
        ))
        .after("reap $tap_job")
        .after(&format!("cat {out}"))
}

/// L1's end of the guest's vsock.
#[derive(Clone, Copy, Debug)]
pub enum VsockHost<'a> {
    /// zhitong's (Firecracker's, Cloud Hypervisor's) hybrid vsock on the Unix socket
    /// `socket` (`Case::vsock`'s): `<socket>_<port>` listeners, `CONNECT <port>`
    Hybrid(&'a str),
    /// The kernel's vhost-vsock (QEMU's): AF_VSOCK in L1, the guest at `GUEST_CID`
    Vhost,
}

/// L1's side of the vsock (see the module's docs): it serves one echo connection from L2
/// and opens one to L2. L1 markers: vsock_h2g ("ok round_trips_per_s=R" or "failed: ..."),
/// vsock_g2h_served (the listener's status: 0 served).
pub fn l1_vsock(case: Case, host: VsockHost) -> Case {
    let name = case.name.clone();
    let (serve, connect) = match host {
        VsockHost::Hybrid(socket) => (
            format!("unix:{socket}_{G2H_PORT}"),
            format!("hybrid:{socket}:{H2G_PORT}"),
        ),
        VsockHost::Vhost => (
            format!("vsock:{G2H_PORT}"),
            format!("vsock:{GUEST_CID}:{H2G_PORT}"),
        ),
    };
    let (g2h_out, h2g_out) = (
        format!("/tmp/{name}-g2h.out"),
        format!("/tmp/{name}-h2g.out"),
    );
    case.before(SHELL_FUNCTIONS)
        .before(&format!(
            "{VSOCK_ECHO} serve {serve} 1 >{g2h_out} 2>&1 & g2h=$!"
        ))
        .before(&format!(
            "(echo \"L1: vsock_h2g=$({VSOCK_ECHO} ping {connect} {ROUND_TRIPS})\") >{h2g_out} 2>&1 & h2g=$!"
        ))
        .after("reap $h2g")
        .after(&format!("cat {h2g_out}"))
        .after("reap $g2h; echo \"L1: vsock_g2h_served=$?\"")
        .after(&format!("sed 's/^/L1: g2h: /' {g2h_out}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_shell_syntax(script: &str) {
        let out = Command::new("sh")
            .arg("-n")
            .arg("-c")
            .arg(script)
            .output()
            .unwrap();
        assert!(out.status.success(), "{script}\n{out:?}");
    }

    #[test]
    fn l1_sides_are_shell() {
        let c = l1_vsock(
            l1_tap(Case::new("n").net("zt0", None), "zt0", true),
            VsockHost::Hybrid("/tmp/n.vsock"),
        );
        let s = c.command();
        assert!(s.contains("tunctl -t zt0"), "{s}");
        assert!(s.contains("serve unix:/tmp/n.vsock_5000 1"), "{s}");
        assert!(s.contains("ping hybrid:/tmp/n.vsock:6000 1000"), "{s}");
        assert_shell_syntax(&s);
        assert_shell_syntax(&l1_tap_made_by_vmm(Case::new("m"), "zt1").command());
        let q = l1_vsock(Case::qemu_l1("q"), VsockHost::Vhost).command();
        assert!(
            q.contains("serve vsock:5000 1") && q.contains("ping vsock:3:6000 1000"),
            "{q}"
        );
        assert_shell_syntax(&q);
    }

    #[test]
    fn guest_lines_are_shell() {
        for (tcp, vsock) in [(true, true), (false, false)] {
            let g = guest(Traffic { tcp, vsock }).unwrap();
            let script = g.script_lines().join("\n");
            assert_eq!(script.contains("vsock_g2h"), vsock, "{script}");
            assert_eq!(script.contains("tcp_rx_md5"), tcp, "{script}");
            assert_shell_syntax(&script);
        }
    }

    #[test]
    fn mib_s_and_in_echos() {
        let script = format!(
            "{MIB_S}\n{IN_ECHOS}\nmib_s 8 'true </dev/null'; mib_s 8 false; \
             in_echos >/dev/null && echo echos"
        );
        let out = Command::new("sh").arg("-c").arg(&script).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines.len() == 3 && lines[0].parse::<f64>().is_ok_and(|v| v > 0.0),
            "{text}"
        );
        assert_eq!(lines[1..], ["failed", "echos"]);
    }

    /// The helper echoes over a Unix socket, and the hybrid handshake is what it writes.
    #[test]
    fn vsock_echo_over_unix_sockets() {
        let bin = vsock_echo().unwrap();
        let dir = std::env::temp_dir().join(format!("zt-vsock-echo-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("s");
        let addr = format!("unix:{}", sock.display());
        let mut server = Command::new(&bin)
            .args(["serve", &addr, "1"])
            .spawn()
            .unwrap();
        let out = Command::new(&bin)
            .args(["ping", &addr, "100"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.starts_with("ok round_trips_per_s="), "{text}");
        assert!(server.wait().unwrap().success());

        // A hybrid host: read "CONNECT 6000\n", answer "OK 1\n", then echo.
        use std::io::{BufRead, BufReader, Write};
        let hybrid = dir.join("h");
        let listener = std::os::unix::net::UnixListener::bind(&hybrid).unwrap();
        let host = std::thread::spawn(move || {
            let (s, _) = listener.accept().unwrap();
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            let mut w = s;
            w.write_all(b"OK 1\n").unwrap();
            std::io::copy(&mut r, &mut w).unwrap();
            line
        });
        let out = Command::new(&bin)
            .args(["ping", &format!("hybrid:{}:6000", hybrid.display()), "10"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.starts_with("ok round_trips_per_s="), "{text}");
        assert_eq!(host.join().unwrap(), "CONNECT 6000\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
