//! `zhitong check [--device BDF]... [--memory SIZE] [--json]`: exit 0 when ready, 1 when not.

use host::checks::{check_all, ready};
use host::finding::Report;
use host::{Finding, Host, Status};

use crate::cli::CheckArgs;

pub fn main(args: &CheckArgs) -> i32 {
    let host = Host::from_env();
    let bdfs: Vec<_> = args.devices.iter().map(|d| d.bdf).collect();
    let findings = check_all(
        &host,
        &bdfs,
        args.memory.bytes,
        args.memory.hugepages,
        args.vfio_backend.and_then(|c| c.0),
        args.devices.iter().any(|d| d.p2p),
    );
    let ready = ready(&findings);
    if args.json {
        let report = Report {
            ready,
            findings: &findings,
        };
        println!("{}", report.to_json());
    } else {
        print!("{}", render(&findings, ready, args.devices.is_empty()));
    }
    if ready {
        0
    } else {
        1
    }
}

/// One line per finding ("ok", "warn", "FAIL", then the finding), then the verdict.
fn render(findings: &[Finding], ready: bool, no_devices: bool) -> String {
    let mut out = String::new();
    for f in findings {
        let tag = match f.status {
            Status::Ok => "ok  ",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
        };
        out.push_str(&format!("{tag}  {f}\n"));
    }
    let failed = findings.iter().filter(|f| f.status == Status::Fail).count();
    if ready {
        out.push_str(if no_devices {
            "ready: this host can pass devices through; name them with --device BDF to check them too\n"
        } else {
            "ready: zhitong run can pass these devices through\n"
        });
    } else {
        out.push_str(&if failed == 1 {
            "not ready: 1 problem above; fix it and run zhitong check again\n".to_owned()
        } else {
            format!("not ready: {failed} problems above; fix them in order and run zhitong check again\n")
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_line_stands_alone() {
        let findings = [
            Finding::ok("kvm", "/dev/kvm works (KVM API 12)"),
            Finding::fail("iommu", "the host IOMMU is off", "boot with intel_iommu=on"),
        ];
        let text = render(&findings, false, true);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "ok    /dev/kvm works (KVM API 12)");
        assert_eq!(
            lines[1],
            "FAIL  the host IOMMU is off; boot with intel_iommu=on"
        );
        assert!(lines[2].starts_with("not ready: 1 problem above"));
        assert!(render(&findings[..1], true, true).contains("--device"));
    }
}
