//! What the VFIO scenarios check in each case's result: displays (driver, framebuffer,
//! L0's screendumps, interrupts), the expansion ROM, ivshmem's big BAR, NVMe's DMA.

use std::fs;

use crate::LabRun;

use super::*;

/// How a display's interrupts must look.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Irq {
    /// MSI-X vectors that count up while drawing
    MsiX,
    /// A level-triggered IO-APIC line that counts up while drawing
    IntX,
    /// A level-triggered IO-APIC line that delivered interrupts, drawing or not (QXL
    /// interrupts its driver's set-up commands, not plain frame updates)
    IntXUsed,
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
/// The standard VGA under bochs-drm.
pub const VGA_DRM: Display = Display {
    tag: "vga",
    ..BOCHS_DRM
};
/// QXL under its DRM driver: INTx only.
pub const QXL_DRM: Display = Display {
    tag: "qxl",
    pci_driver: "qxl",
    fb_name: "qxl",
    irq: Irq::IntXUsed,
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
        Irq::IntXUsed => c.check(
            kind == "intx" && chip.contains("IO-APIC") && chip.contains("fasteoi") && after > 0,
            &format!(
                "{tag}: interrupts {kind} ({chip}) {before} -> {after}, want a level-triggered \
                 IO-APIC line that delivered some"
            ),
        ),
        Irq::Nothing => {}
    }
    eprintln!("{case}/{tag}: {fb}, interrupts {kind} ({chip}) {before} -> {after}");
}

/// The expansion ROM L2 read through sysfs (rom_test `tag`) is the one L1 reads from the
/// device at `bdf` (`rom_dump`), byte for byte: a PCI image (55aa) of the size Linux finds
/// in its headers. (L1's view is the truth to pass on: for a boot VGA, L1's kernel reads the
/// copy SeaBIOS shadowed, not the image file; `image` is only reported beside it.)
#[track_caller]
pub fn assert_rom(run: &LabRun, case: &str, tag: &str, bdf: &str, image: &str) {
    let c = run.case(case);
    c.assert_booted();
    let m = |k: &str| c.marker(&format!("{tag}_{k}")).unwrap_or("").to_string();
    let l1 = format!("L1: rom {bdf} ");
    let host = run
        .console
        .lines()
        .find_map(|l| l.trim().strip_prefix(l1.as_str()))
        .unwrap_or("");
    let want = format!("size={} md5={}", m("rom_size"), m("rom_md5"));
    c.check(
        m("rom_sig") == "55aa",
        &format!(
            "{tag}: ROM starts {:?}, want 55aa (ROM BAR {:?})",
            m("rom_sig"),
            m("rom_bar")
        ),
    );
    c.check(
        !host.is_empty() && host == want,
        &format!("{tag}: L2 read a ROM of {want}, L1 reads {host:?} from {bdf}"),
    );
    let file = fs::read(image).map_or("unreadable".to_string(), |b| md5_hex(&b));
    eprintln!(
        "{case}/{tag}: ROM {want} (L1: {host}; {image}: md5={file}), BAR {}",
        m("rom_bar")
    );
}

/// The L1 line that prints "L1: rom BDF size=N md5=X" for each device's ROM.
pub fn rom_dump(bdfs: &[&str]) -> String {
    format!(
        "for b in {}; do d=/sys/bus/pci/devices/$b; echo 1 > $d/rom; \
         echo \"L1: rom $b size=$(cat $d/rom | wc -c) md5=$(cat $d/rom | md5sum | cut -d ' ' -f 1)\"; \
         echo 0 > $d/rom; done",
        bdfs.join(" ")
    )
}

/// md5 of `bytes`, hex, by md5sum(1) (coreutils; no crate for one report).
fn md5_hex(bytes: &[u8]) -> String {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new("md5sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("md5sum");
    child.stdin.take().unwrap().write_all(bytes).unwrap();
    let out = child.wait_with_output().expect("md5sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_string()
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
        m("nvme_rom") == "none",
        &format!(
            "NVMe has no ROM; L2 found one ({:?} bytes)",
            m("nvme_rom_size")
        ),
    );
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
