//! The lab demo: boots the nested lab and shows the L2 guest's console. By default L0
//! emulates a virtio GPU, L1 binds it to vfio-pci, zhitong passes it through, and L2 loads
//! its native driver (virtio_gpu), draws into its framebuffer and shows its interrupts.
//!
//! `lab [--no-gpu] [--qemu] [--bzimage] [--cpus N] [--memory SIZE] [--verbose]`
//!   --no-gpu   plain boot, no passthrough
//!   --qemu     QEMU is the L1 VMM instead of zhitong
//!   --verbose  show L1's console too, not only the case's

use std::process::ExitCode;

use zhitong_tests::{Case, Guest, Lab};

/// The emulated GPU L0 gives L1, and where it sits in L1.
const GPU: &str = "virtio-gpu-pci,disable-legacy=on,iommu_platform=on,addr=0x4";
const GPU_BDF: &str = "0000:00:04.0";

/// What L2 does with the GPU once its driver is loaded.
fn gpu_guest() -> Guest {
    Guest::new()
        .module("virtio_pci")
        .module("virtio_gpu")
        .line("dmesg | grep -E '\\[drm\\]|fb0' | sed 's/^/L2: driver: /'")
        .line("echo \"L2: framebuffer $(cat /sys/class/graphics/fb0/virtual_size 2>/dev/null) at $(cat /sys/class/graphics/fb0/bits_per_pixel 2>/dev/null) bpp\"")
        .line("fb=$(cat /sys/class/graphics/fb0/virtual_size); bytes=$(( ${fb%,*} * ${fb#*,} * 4 ))")
        .line("head -c $bytes /dev/zero | tr '\\000' '\\377' > /dev/fb0 && echo \"L2: drew a white frame ($bytes bytes) into /dev/fb0\"")
        .line("grep virtio /proc/interrupts | sed 's/^/L2: irq: /'")
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |f: &str| args.iter().any(|a| a == f);
    let value = |f: &str| {
        args.iter()
            .position(|a| a == f)
            .and_then(|i| args.get(i + 1))
    };
    let gpu = !flag("--no-gpu");
    let mut case = if flag("--qemu") {
        let case = Case::qemu_l1("demo");
        if gpu {
            case.args(["-device", &format!("vfio-pci,host={GPU_BDF}")])
        } else {
            case
        }
    } else if gpu {
        Case::new("demo").args(["--device", GPU_BDF])
    } else {
        Case::new("demo")
    };
    if gpu {
        case = case.guest(gpu_guest());
    }
    if flag("--bzimage") {
        case = case.bzimage();
    }
    case = case.cpus(value("--cpus").map_or(Ok(1), |n| n.parse()).unwrap_or(1));
    case = case.memory(value("--memory").map_or("512M", |s| s.as_str()));
    let verbose = flag("--verbose");

    eprintln!("lab: booting L0 (QEMU TCG) -> L1 -> `{}`", case.command());
    let lab = match Lab::new() {
        Ok(lab) => lab.name("demo").memory("6G"),
        Err(e) => return fail(&e),
    };
    let lab = if gpu {
        lab.device(GPU).bind(GPU_BDF)
    } else {
        lab
    };
    let mut in_case = false;
    let run = lab.case(case).run_with(|line| {
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
