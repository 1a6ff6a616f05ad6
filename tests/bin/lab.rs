//! The lab demo: boots one L2 guest in the nested lab and streams its console.
//!
//! `lab [--qemu] [--bzimage] [--cpus N] [--memory SIZE] [--verbose]`
//!   --qemu     QEMU is the L1 VMM instead of zhitong
//!   --verbose  show L1's console too, not only the case's

use std::process::ExitCode;

use zhitong_tests::{Case, Lab};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |f: &str| args.iter().any(|a| a == f);
    let value = |f: &str| {
        args.iter()
            .position(|a| a == f)
            .and_then(|i| args.get(i + 1))
    };
    let mut case = if flag("--qemu") {
        Case::qemu_l1("demo")
    } else {
        Case::new("demo")
    };
    if flag("--bzimage") {
        case = case.bzimage();
    }
    case = case.cpus(value("--cpus").map_or(Ok(1), |n| n.parse()).unwrap_or(1));
    case = case.memory(value("--memory").map_or("512M", |s| s.as_str()));
    let verbose = flag("--verbose");

    eprintln!("lab: booting L0 (QEMU TCG) -> L1 -> `{}`", case.command());
    let lab = match Lab::new() {
        Ok(lab) => lab.name("demo").memory("6G").case(case),
        Err(e) => return fail(&e),
    };
    let mut in_case = false;
    let run = lab.run_with(|line| {
        if line.contains("L1: case demo begin") {
            in_case = true;
        }
        if verbose || in_case || line.contains("L1: ") {
            println!("{line}");
        }
        if line.contains("L1: case demo rc=") {
            in_case = false;
        }
    });
    let run = match run {
        Ok(run) => run,
        Err(e) => return fail(&e),
    };
    let demo = run.case("demo");
    let secs = |d: Option<std::time::Duration>| d.map_or(f64::NAN, |d| d.as_secs_f64());
    eprintln!(
        "lab: L0 ran {:.1} s (L1 kvm ready at {:.1} s, case {:.1} s); VMM exit status {:?}; \
         console in {}",
        run.elapsed.as_secs_f64(),
        secs(run.l1_ready),
        secs(demo.elapsed),
        demo.rc,
        run.out_dir.join("console.log").display()
    );
    if let Some(t) = &demo.timings {
        eprintln!("lab: timings {t}");
    }
    if demo.rc == Some(0) && demo.has_marker("done") {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn fail(e: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("lab: {e}");
    ExitCode::FAILURE
}
