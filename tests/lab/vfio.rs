//! The VFIO passthrough scenarios (../../shared/LAB.md): L0 emulates PCI devices, L1 binds
//! them to vfio-pci, the VMM under test passes them to L2, and L2's native drivers prove
//! they work. The same scenarios run with QEMU as the L1 VMM (tests/lab_vfio.rs, the
//! reference) and with zhitong (tests/lab_vfio_zhitong.rs): `vfio_tests!(Vmm::...)`.
//!
//! Two L0 boots: `run_msi` (interrupt remapping on, as on real hosts: a virtio GPU with
//! MSI-X, a bochs display, ivshmem with a 16 GiB 64-bit BAR, an NVMe) and `run_intx`
//! (remapping off, unsafe interrupts allowed in L1: the virtio GPU with INTx only).

use std::fs::{self, File};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::PathBuf;
use std::time::Duration;

use crate::case::{Case, Vmm};
use crate::console::CaseResult;
use crate::guest::Guest;
use crate::{workspace_root, Lab, LabRun, Result};

/// The L2 side: shell functions (display_test, ivshmem_test, nvme_test, ...).
const L2_LIB: &str = include_str!("../../resources/lab/l2-vfio.sh");

/// A device L0 emulates and L1 sees at `bdf`.
pub struct Device {
    /// `-device` on L0, without id and addr
    pub l0: &'static str,
    /// Its QOM id on L0 (screendumps name displays by it)
    pub id: &'static str,
    pub bdf: &'static str,
    /// PCI vendor and device id, as L2 finds it
    pub ids: (&'static str, &'static str),
}

impl Device {
    fn spec(&self) -> String {
        let slot = &self.bdf[8..10];
        format!("{},id={},addr=0x{slot}", self.l0, self.id)
    }

    fn find(&self) -> String {
        format!("$(pci_dev {} {})", self.ids.0, self.ids.1)
    }
}

pub const GPU: Device = Device {
    l0: "virtio-gpu-pci,disable-legacy=on,iommu_platform=on",
    id: "gpu0",
    bdf: "0000:00:04.0",
    ids: ("1af4", "1050"),
};
/// The virtio GPU without MSI-X: INTx only (the INTx lab puts it at GPU's address).
pub const GPU_INTX: Device = Device {
    l0: "virtio-gpu-pci,disable-legacy=on,iommu_platform=on,vectors=0",
    ..GPU
};
pub const BOCHS: Device = Device {
    l0: "bochs-display",
    id: "bochs0",
    bdf: "0000:00:05.0",
    ids: ("1234", "1111"),
};
/// ivshmem-plain: BAR2 is 64-bit prefetchable, the size of its memdev.
pub const IVSHMEM: Device = Device {
    l0: "ivshmem-plain,memdev=zt-shm",
    id: "shm0",
    bdf: "0000:00:06.0",
    ids: ("1af4", "1110"),
};
pub const NVME: Device = Device {
    l0: "nvme,drive=zt-disk,serial=zhitong",
    id: "nvme0",
    bdf: "0000:00:07.0",
    ids: ("1b36", "0010"),
};

pub const GIB: u64 = 1 << 30;
/// ivshmem's shared memory, sparse in /dev/shm.
pub const IVSHMEM_SIZE: u64 = 16 * GIB;
/// L0 puts IVSHMEM_VALUE here before the run; L2 reads it.
pub const IVSHMEM_READ: u64 = 6 * GIB + 0x1000;
pub const IVSHMEM_VALUE: u64 = 0x4c30_3e4c_3220_6f6b; // "ko 2L>0L"
/// L2 writes 0x5a54`<offset>` at each; the test finds them in the file.
pub const IVSHMEM_WRITES: [u64; 3] = [0x2000, 5 * GIB + 0x3000, IVSHMEM_SIZE - 8];
/// The NVMe namespace's backing image, and the 4K blocks L0 and L2 write.
pub const NVME_SIZE: u64 = 64 << 20;
pub const NVME_READ_BLOCK: u64 = 256;
pub const NVME_WRITE_BLOCK: u64 = 512;
pub const NVME_L0_TEXT: &str = "zhitong lab: L0 wrote this for L2";
pub const NVME_L2_TEXT: &str = "zhitong lab: L2 wrote this for L0";

/// Frames L2 draws (display_test): 1 is A over B, 2 is B over A.
pub const PIXEL_A: [u8; 3] = [0xc0, 0x80, 0x40];
pub const PIXEL_B: [u8; 3] = [0x20, 0x40, 0xc0];

/// A passthrough case: `vmm` boots L2 with `guest` and the devices at `bdfs`.
/// zhitong gets `--device X` for each (the second and later as sysfs paths, so that
/// both forms are used); QEMU gets `-device vfio-pci,host=X`.
pub fn passthrough(vmm: Vmm, name: &str, bdfs: &[&str], guest: Guest) -> Case {
    let case = match vmm {
        Vmm::Zhitong => Case::new(name),
        Vmm::Qemu => Case::qemu_l1(name),
    };
    let mut args = Vec::new();
    for (i, bdf) in bdfs.iter().enumerate() {
        match vmm {
            Vmm::Zhitong if i == 0 => args.extend(["--device".to_string(), bdf.to_string()]),
            Vmm::Zhitong => args.extend([
                "--device".to_string(),
                format!("/sys/bus/pci/devices/{bdf}"),
            ]),
            Vmm::Qemu => args.extend(["-device".to_string(), format!("vfio-pci,host={bdf}")]),
        }
    }
    case.args(args).guest(guest)
}

/// An L2 guest with the lab's shell functions, `modules` loaded, fbcon unbound, then `lines`.
pub fn guest(modules: &[&str], lines: &[String]) -> Guest {
    let mut g = Guest::new();
    for m in modules {
        g = g.module(m);
    }
    g = g.line(L2_LIB).line("no_fbcon");
    for l in lines {
        g = g.line(l.as_str());
    }
    g
}

pub fn gpu_guest(dev: &Device) -> Guest {
    guest(
        &["virtio_pci", "virtio_gpu"],
        &[format!("display_test gpu {} {}", dev.find(), dev.id)],
    )
}

pub fn bochs_guest() -> Guest {
    guest(
        &["bochs"],
        &[format!("display_test bochs {} {}", BOCHS.find(), BOCHS.id)],
    )
}

pub fn two_displays_guest() -> Guest {
    guest(
        &["virtio_pci", "virtio_gpu", "bochs"],
        &[
            format!("display_test gpu {} {}", GPU.find(), GPU.id),
            format!("display_test bochs {} {}", BOCHS.find(), BOCHS.id),
        ],
    )
}

pub fn ivshmem_guest() -> Guest {
    let writes: Vec<String> = IVSHMEM_WRITES.iter().map(|w| w.to_string()).collect();
    guest(
        &[],
        &[format!("ivshmem_test {IVSHMEM_READ} {}", writes.join(" "))],
    )
}

pub fn nvme_guest() -> Guest {
    guest(
        &["nvme"],
        &[format!(
            "nvme_test {NVME_READ_BLOCK} {NVME_WRITE_BLOCK} '{NVME_L2_TEXT}'"
        )],
    )
}

/// One L0 boot of VFIO scenarios, and what L2 left in L0's backing files.
pub struct VfioRun {
    pub run: LabRun,
    /// The 64-bit words at IVSHMEM_WRITES in ivshmem's file after the run
    pub ivshmem_words: Vec<u64>,
    /// Bytes the (sparse) ivshmem file took on disk after the run
    pub ivshmem_allocated: u64,
    /// NVME_WRITE_BLOCK of the NVMe image after the run, zeros dropped
    pub nvme_text: String,
}

impl VfioRun {
    pub fn case(&self, name: &str) -> &CaseResult {
        self.run.case(name)
    }

    /// Prints the run's figures (stderr): L0 time, L1 ready, each case's time.
    pub fn report(&self, what: &str) {
        eprintln!(
            "{what}: L0 run {:.1} s (boots: {}), L1 kvm ready at {:.1} s",
            self.run.elapsed.as_secs_f64(),
            self.run.boots,
            self.run.l1_ready.map_or(f64::NAN, |d| d.as_secs_f64())
        );
        for c in &self.run.cases {
            eprintln!(
                "{what}: case {} rc={:?} in {:.1} s",
                c.name,
                c.rc,
                c.elapsed.map_or(f64::NAN, |d| d.as_secs_f64())
            );
        }
    }
}

/// A file removed when dropped (also when a run fails).
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// The MSI/MSI-X lab: GPU, BOCHS, IVSHMEM and NVME on L0 with interrupt remapping on;
/// cases gpu, bochs, ivshmem, two-displays, nvme for `vmm`; `more` adds cases.
pub fn run_msi(vmm: Vmm, more: impl FnOnce(Lab) -> Lab) -> Result<VfioRun> {
    let name = format!("vfio-msi-{}", vmm_name(vmm));
    let dir = workspace_root().join("target/lab-out").join(&name);
    fs::create_dir_all(&dir)?;

    let shm = Scratch(PathBuf::from(format!(
        "/dev/shm/zhitong-lab-ivshmem-{}",
        std::process::id()
    )));
    let disk = Scratch(dir.join("nvme.img"));
    // Fresh backing files for each boot of L0 (a hung boot is retried).
    let (shm_path, disk_path) = (shm.0.clone(), disk.0.clone());
    let reset = move || -> Result<()> {
        let f = File::create(&shm_path)?;
        f.set_len(IVSHMEM_SIZE)?;
        f.write_all_at(&IVSHMEM_VALUE.to_le_bytes(), IVSHMEM_READ)?;
        let f = File::create(&disk_path)?;
        f.set_len(NVME_SIZE)?;
        f.write_all_at(NVME_L0_TEXT.as_bytes(), NVME_READ_BLOCK * 4096)?;
        Ok(())
    };

    let lab = Lab::new()?
        .name(&name)
        .timeout(Duration::from_secs(300))
        .before_boot(reset)
        .l0_args([
            "-object".to_string(),
            format!(
                "memory-backend-file,id=zt-shm,mem-path={},size={},share=on",
                shm.0.display(),
                IVSHMEM_SIZE
            ),
            "-drive".to_string(),
            format!("file={},if=none,id=zt-disk,format=raw", disk.0.display()),
        ]);
    let mut lab = lab;
    for d in [&GPU, &BOCHS, &IVSHMEM, &NVME] {
        lab = lab.device(&d.spec()).bind(d.bdf);
    }
    let lab = lab
        .case(passthrough(vmm, "gpu", &[GPU.bdf], gpu_guest(&GPU)))
        .case(passthrough(vmm, "bochs", &[BOCHS.bdf], bochs_guest()))
        .case(passthrough(
            vmm,
            "two-displays",
            &[GPU.bdf, BOCHS.bdf],
            two_displays_guest(),
        ))
        .case(passthrough(vmm, "ivshmem", &[IVSHMEM.bdf], ivshmem_guest()))
        .case(passthrough(vmm, "nvme", &[NVME.bdf], nvme_guest()));
    let run = more(lab).run()?;

    let f = File::open(&shm.0)?;
    let mut ivshmem_words = Vec::new();
    for off in IVSHMEM_WRITES {
        let mut word = [0u8; 8];
        f.read_exact_at(&mut word, off)?;
        ivshmem_words.push(u64::from_le_bytes(word));
    }
    let ivshmem_allocated = f.metadata()?.blocks() * 512;
    let mut block = vec![0u8; 4096];
    File::open(&disk.0)?.read_exact_at(&mut block, NVME_WRITE_BLOCK * 4096)?;
    let nvme_text = String::from_utf8_lossy(&block)
        .trim_end_matches('\0')
        .to_string();
    Ok(VfioRun {
        run,
        ivshmem_words,
        ivshmem_allocated,
        nvme_text,
    })
}

/// The INTx lab: GPU_INTX on L0 with interrupt remapping off, L1 allowing unsafe
/// interrupts; case gpu-intx for `vmm`; `more` adds cases.
pub fn run_intx(vmm: Vmm, more: impl FnOnce(Lab) -> Lab) -> Result<VfioRun> {
    let lab = Lab::new()?
        .name(&format!("vfio-intx-{}", vmm_name(vmm)))
        .timeout(Duration::from_secs(300))
        .l0(|l0| l0.iommu.push_str(",intremap=off"))
        .device(&GPU_INTX.spec())
        .bind(GPU_INTX.bdf)
        .l1_line("echo 1 > /sys/module/vfio_iommu_type1/parameters/allow_unsafe_interrupts")
        .case(passthrough(
            vmm,
            "gpu-intx",
            &[GPU_INTX.bdf],
            gpu_guest(&GPU_INTX),
        ));
    Ok(VfioRun {
        run: more(lab).run()?,
        ivshmem_words: Vec::new(),
        ivshmem_allocated: 0,
        nvme_text: String::new(),
    })
}

fn vmm_name(vmm: Vmm) -> &'static str {
    match vmm {
        Vmm::Zhitong => "zhitong",
        Vmm::Qemu => "qemu",
    }
}

/// How a display's interrupts must look.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Irq {
    /// MSI-X vectors that count up while drawing
    MsiX,
    /// A level-triggered IO-APIC line that counts up while drawing
    IntX,
    /// The device has none (bochs)
    Nothing,
}

/// L1 handed each of `bdfs` to vfio-pci.
#[track_caller]
pub fn assert_bound(run: &LabRun, bdfs: &[&str]) {
    for bdf in bdfs {
        let want = format!("L1: bind {bdf} driver=vfio-pci");
        assert!(
            run.console.contains(&want),
            "no '{want}' in L1's console\n{}",
            run.console
        );
    }
}

/// A display adapter as L2 sees it.
#[derive(Clone, Copy, Debug)]
pub struct Display {
    /// Which `display_test` in the guest ("gpu", "bochs")
    pub tag: &'static str,
    /// The PCI driver bound to it in L2
    pub pci_driver: &'static str,
    /// What the DRM driver's framebuffer is called (a prefix of /sys/class/graphics/fbN/name)
    pub fb_name: &'static str,
    pub irq: Irq,
}

/// virtio-gpu: virtio-pci on the PCI side, virtio_gpu (DRM) on the virtio device.
pub const VIRTIO_GPU: Display = Display {
    tag: "gpu",
    pci_driver: "virtio-pci",
    fb_name: "virtio_gpu",
    irq: Irq::MsiX,
};
pub const VIRTIO_GPU_INTX: Display = Display {
    irq: Irq::IntX,
    ..VIRTIO_GPU
};
pub const BOCHS_DRM: Display = Display {
    tag: "bochs",
    pci_driver: "bochs-drm",
    fb_name: "bochs",
    irq: Irq::Nothing,
};

/// Display `d` in case `case`: its native driver bound, a framebuffer, both frames on
/// L0's display as drawn, interrupts as `d.irq` says.
#[track_caller]
pub fn assert_display(run: &LabRun, case: &str, d: Display) {
    let (tag, driver, irq) = (d.tag, d.pci_driver, d.irq);
    let c = run.case(case);
    c.assert_booted();
    let m = |k: &str| c.marker(&format!("{tag}_{k}")).unwrap_or("").to_string();
    c.check(
        m("driver") == driver,
        &format!("{tag}: driver {:?}, want {driver}", m("driver")),
    );
    c.check(
        m("fb_name").starts_with(d.fb_name),
        &format!("{tag}: framebuffer {:?}, want {}*", m("fb_name"), d.fb_name),
    );
    // "/dev/fb0 1280,800 32bpp stride=5120"
    let fb = m("fb");
    let fields: Vec<&str> = fb.split_whitespace().collect();
    c.check(
        fields.len() == 4 && fields[2] == "32bpp",
        &format!("{tag}: framebuffer {fb:?}, want a 32 bpp /dev/fbN"),
    );
    let (w, h) = fields[1].split_once(',').unwrap_or(("0", "0"));
    let (w, h): (usize, usize) = (w.parse().unwrap_or(0), h.parse().unwrap_or(0));
    for (frame, top, bottom) in [(1, PIXEL_A, PIXEL_B), (2, PIXEL_B, PIXEL_A)] {
        let label = format!("{tag}-{frame}");
        let img = run
            .screendump(case, &label)
            .unwrap_or_else(|e| panic!("case {case}: {e}\n{c}"));
        c.check(
            (img.width, img.height) == (w, h),
            &format!(
                "{label}: L0 shows {}x{}, L2's framebuffer is {w}x{h}",
                img.width, img.height
            ),
        );
        // A few rows either side of the middle are left out; a stray cursor may cost a few pixels.
        let upper = img.share_of(0..h / 2 - 2, top);
        let lower = img.share_of(h / 2 + 2..h, bottom);
        c.check(
            upper > 0.99 && lower > 0.99,
            &format!(
                "{label}: {:.1}% of the upper half is {top:02x?} and {:.1}% of the lower half \
                 {bottom:02x?}, want > 99% (pixel 0,0 is {:02x?})",
                upper * 100.0,
                lower * 100.0,
                img.pixel(0, 0)
            ),
        );
    }
    let before: u64 = m("irqs_before").parse().unwrap_or(0);
    let after: u64 = m("irqs_after").parse().unwrap_or(0);
    let kind = m("irq_kind");
    let chip = m("irq_chip");
    match irq {
        Irq::MsiX => c.check(
            kind == "msix" && after > before,
            &format!("{tag}: interrupts {kind} {before} -> {after}, want MSI-X counting up"),
        ),
        Irq::IntX => c.check(
            kind == "intx"
                && chip.contains("IO-APIC")
                && chip.contains("fasteoi")
                && after > before
                && after > 1,
            &format!(
                "{tag}: interrupts {kind} ({chip}) {before} -> {after}, want a level-triggered \
                 IO-APIC line counting up"
            ),
        ),
        Irq::Nothing => {}
    }
    eprintln!("{case}/{tag}: {fb}, interrupts {kind} ({chip}) {before} -> {after}");
}

/// ivshmem: a 16 GiB BAR2; L2 read what L0 put beyond 4 GiB, and its writes (one beyond
/// 4 GiB, one in the last word) are in L0's file, which stayed sparse.
#[track_caller]
pub fn assert_ivshmem(v: &VfioRun, case: &str) {
    let c = v.case(case);
    c.assert_booted();
    let bar = c.marker("ivshmem_bar2").unwrap_or("");
    c.check(
        bar.contains(&format!("size={IVSHMEM_SIZE} ")),
        &format!("BAR2 {bar:?}, want size={IVSHMEM_SIZE}"),
    );
    let read = c.marker("ivshmem_read").unwrap_or("");
    c.check(
        read.eq_ignore_ascii_case(&format!("0x{IVSHMEM_VALUE:016x}")),
        &format!("L2 read {read:?} at {IVSHMEM_READ:#x}, L0 put 0x{IVSHMEM_VALUE:016x} there"),
    );
    for (off, got) in IVSHMEM_WRITES.iter().zip(&v.ivshmem_words) {
        let want = 0x5a54_0000_0000_0000 | off;
        c.check(
            *got == want,
            &format!("ivshmem file at {off:#x}: {got:#018x}, L2 wrote {want:#018x}"),
        );
    }
    c.check(
        v.ivshmem_allocated < 64 << 20,
        &format!(
            "the 16 GiB ivshmem file took {} bytes: not sparse",
            v.ivshmem_allocated
        ),
    );
    eprintln!(
        "{case}: BAR2 {bar}, read {read}, file allocated {} KiB",
        v.ivshmem_allocated / 1024
    );
}

/// NVMe: the nvme driver read L0's block (DMA to L2's memory) and wrote L2's (DMA from it)
/// with MSI-X interrupts.
#[track_caller]
pub fn assert_nvme(v: &VfioRun, case: &str) {
    let c = v.case(case);
    c.assert_booted();
    let m = |k: &str| c.marker(k).unwrap_or("");
    c.check(m("nvme_driver") == "nvme", "nvme driver not bound");
    c.check(
        m("nvme_read") == NVME_L0_TEXT,
        &format!("L2 read {:?}, L0 wrote {NVME_L0_TEXT:?}", m("nvme_read")),
    );
    c.check(m("nvme_wrote") == "ok", "L2's write failed");
    c.check(
        v.nvme_text == NVME_L2_TEXT,
        &format!(
            "the image holds {:?}, L2 wrote {NVME_L2_TEXT:?}",
            v.nvme_text
        ),
    );
    let irqs: u64 = m("nvme_irqs").parse().unwrap_or(0);
    c.check(
        m("nvme_irq_kind") == "msix" && irqs > 0,
        &format!("nvme interrupts {} x{irqs}, want MSI-X", m("nvme_irq_kind")),
    );
    eprintln!("{case}: {}, {irqs} MSI-X interrupts", m("nvme_disk"));
}

/// The scenario tests for `$vmm` (a `Vmm`), each in a `#[test]`; both labs run once per
/// test binary. `$more_msi` / `$more_intx` (`fn(Lab) -> Lab`) add cases to each lab.
#[macro_export]
macro_rules! vfio_tests {
    ($vmm:expr, $more_msi:expr, $more_intx:expr) => {
        fn msi() -> &'static $crate::vfio::VfioRun {
            static RUN: ::std::sync::OnceLock<
                ::std::result::Result<$crate::vfio::VfioRun, String>,
            > = ::std::sync::OnceLock::new();
            let run = RUN.get_or_init(|| {
                let v = $crate::vfio::run_msi($vmm, $more_msi).map_err(|e| e.to_string())?;
                v.report("vfio msi");
                Ok(v)
            });
            run.as_ref()
                .unwrap_or_else(|e| panic!("lab setup failed: {e}"))
        }

        fn intx() -> &'static $crate::vfio::VfioRun {
            static RUN: ::std::sync::OnceLock<
                ::std::result::Result<$crate::vfio::VfioRun, String>,
            > = ::std::sync::OnceLock::new();
            let run = RUN.get_or_init(|| {
                let v = $crate::vfio::run_intx($vmm, $more_intx).map_err(|e| e.to_string())?;
                v.report("vfio intx");
                Ok(v)
            });
            run.as_ref()
                .unwrap_or_else(|e| panic!("lab setup failed: {e}"))
        }

        #[test]
        fn l1_binds_every_device_to_vfio_pci() {
            use $crate::vfio::{assert_bound, BOCHS, GPU, GPU_INTX, IVSHMEM, NVME};
            assert_bound(&msi().run, &[GPU.bdf, BOCHS.bdf, IVSHMEM.bdf, NVME.bdf]);
            assert_bound(&intx().run, &[GPU_INTX.bdf]);
        }

        #[test]
        fn virtio_gpu_with_msix_draws_and_interrupts() {
            $crate::vfio::assert_display(&msi().run, "gpu", $crate::vfio::VIRTIO_GPU);
        }

        #[test]
        fn virtio_gpu_with_intx_only_draws_and_interrupts() {
            $crate::vfio::assert_display(&intx().run, "gpu-intx", $crate::vfio::VIRTIO_GPU_INTX);
        }

        #[test]
        fn bochs_display_draws() {
            $crate::vfio::assert_display(&msi().run, "bochs", $crate::vfio::BOCHS_DRM);
        }

        #[test]
        fn two_displays_at_once() {
            let run = &msi().run;
            $crate::vfio::assert_display(run, "two-displays", $crate::vfio::VIRTIO_GPU);
            $crate::vfio::assert_display(run, "two-displays", $crate::vfio::BOCHS_DRM);
        }

        #[test]
        fn ivshmem_16g_bar_reads_and_writes_beyond_4g() {
            $crate::vfio::assert_ivshmem(msi(), "ivshmem");
        }

        #[test]
        fn nvme_dma_both_ways() {
            $crate::vfio::assert_nvme(msi(), "nvme");
        }
    };
}
