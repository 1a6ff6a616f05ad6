//! A control plane in miniature: start two VMs from the library, watch their state, pause
//! and resume one, shut both down (ACPI power button, forced stop after a timeout), wait for
//! them, and print how each ended and its boot timeline.
//!
//! ```sh
//! cargo run --example control_plane -- KERNEL [INITRAMFS]
//! ZHITONG_KERNEL=vmlinuz ZHITONG_INITRAMFS=initrd.img cargo run --example control_plane
//! ```
//!
//! Without a kernel it prints this usage and exits 0. The guests' consoles go to files in the
//! temporary directory.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use vmm::{Console, Vm, VmConfig, VmState};

const USAGE: &str = "usage: control_plane KERNEL [INITRAMFS] (or set ZHITONG_KERNEL and ZHITONG_INITRAMFS); starts two VMs, watches them, shuts them down";

fn main() {
    let mut args = std::env::args_os().skip(1).map(PathBuf::from);
    let kernel = args
        .next()
        .or_else(|| std::env::var_os("ZHITONG_KERNEL").map(PathBuf::from));
    let initramfs = args
        .next()
        .or_else(|| std::env::var_os("ZHITONG_INITRAMFS").map(PathBuf::from));
    let Some(kernel) = kernel else {
        println!("{USAGE}");
        return;
    };
    if let Err(e) = run(kernel, initramfs) {
        eprintln!("control_plane: {e}");
        std::process::exit(1);
    }
}

fn run(kernel: PathBuf, initramfs: Option<PathBuf>) -> Result<(), Box<dyn std::error::Error>> {
    let start = Instant::now();
    let mut vms = Vec::new();
    for name in ["vm0", "vm1"] {
        let mut config = VmConfig::new(&kernel);
        config.kernel.initramfs = initramfs.clone();
        config.kernel.cmdline = "quiet".into();
        config.machine.memory_bytes = 256 << 20;
        let console_path = std::env::temp_dir().join(format!("zhitong-{name}.console"));
        let console = Console::file(&console_path)?;
        let handle = Vm::new(config, console, start)?.start()?;
        println!("{name}: started, console in {}", console_path.display());
        vms.push((name, handle));
    }

    // Watch the states for a few seconds, reporting changes.
    let mut seen = vec![None; vms.len()];
    let watch_until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < watch_until {
        for (i, (name, vm)) in vms.iter().enumerate() {
            let state = vm.state();
            if seen[i] != Some(state) {
                println!("{name}: {state} at {:?}", start.elapsed());
                seen[i] = Some(state);
            }
        }
        if vms.iter().all(|(_, vm)| vm.state() == VmState::Stopped) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }

    // Pause one VM for a moment: its vCPUs are parked, its state says so.
    let (name, vm0) = &vms[0];
    match vm0.pause() {
        Ok(()) => {
            println!("{name}: {}", vm0.state());
            std::thread::sleep(Duration::from_millis(500));
            vm0.resume()?;
            println!("{name}: {}", vm0.state());
        }
        Err(e) => println!("{name}: not paused: {e}"),
    }

    // Shut both down: the power button now, a forced stop 10 s later if the guest ignores it.
    for (name, vm) in &vms {
        if let Err(e) = vm.shutdown(Duration::from_secs(10)) {
            println!("{name}: no shutdown needed: {e}");
        }
    }
    for (name, vm) in vms {
        let timeline = vm.timeline();
        let exit = vm.wait()?;
        println!("{name}: ended: {exit:?} (clean: {})", exit.is_clean());
        println!("{name}: timeline {}", timeline.to_json());
    }
    Ok(())
}
