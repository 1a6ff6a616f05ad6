//! `zhitong bind BDF [--force]` and `zhitong unbind BDF`: exit 0 when done (or nothing was to
//! do), 1 when refused or failed.

use host::bind::{bind, unbind, BindReport, RealWriter};
use host::Host;

use crate::cli::{BindArgs, UnbindArgs};

pub fn bind_main(args: &BindArgs) -> i32 {
    let host = Host::from_env();
    match bind(&host, &mut RealWriter, args.bdf, args.force) {
        Ok(report) => {
            print_report(&report);
            let devices: Vec<String> = report
                .devices
                .iter()
                .map(|d| format!("--device {d}"))
                .collect();
            let group = report.group.map(|g| g.to_string()).unwrap_or_default();
            if report.changed {
                println!(
                    "IOMMU group {group} is on vfio-pci: zhitong run ... {}; 'zhitong unbind {}' gives it back",
                    devices.join(" "),
                    args.bdf
                );
            } else {
                println!(
                    "nothing to do: IOMMU group {group} was already on vfio-pci (zhitong run ... {})",
                    devices.join(" ")
                );
            }
            0
        }
        Err(finding) => {
            eprintln!("zhitong: {finding}");
            1
        }
    }
}

pub fn unbind_main(args: &UnbindArgs) -> i32 {
    let host = Host::from_env();
    match unbind(&host, &mut RealWriter, args.bdf) {
        Ok(report) => {
            print_report(&report);
            if !report.changed {
                println!(
                    "nothing to do: no device of {}'s IOMMU group is on vfio-pci",
                    args.bdf
                );
            }
            0
        }
        Err(finding) => {
            eprintln!("zhitong: {finding}");
            1
        }
    }
}

fn print_report(report: &BindReport) {
    for line in &report.lines {
        println!("{line}");
    }
    for warning in &report.warnings {
        eprintln!("zhitong: warning: {warning}");
    }
}
