//! virtio-blk in the nested lab: L2 boots from an ext4 root on a virtio-blk disk (an image
//! built on L0 with `mke2fs -d`, a stage-1 initramfs only to load the modules and
//! switch_root), writes /hello and 8 MiB of /big, reads 32 MiB of the raw disk back (MiB/s
//! markers, printed not asserted), reads its serial (GET_ID), and fails to write to a
//! second, readonly=on disk. After each run L1 inspects the images as the VMM left them
//! (lab/disk.rs says how images travel). QEMU as the L1 VMM is the reference; zhitong's
//! cases wait for its `--disk`. All cases share one L0 boot.
//!
//! Needs resources/lab/setup.sh and `cargo build --release -p vmm --features test-faults`.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use zhitong_tests::disk::{self, RootDisk};
use zhitong_tests::{workspace_root, Case, CaseResult, Lab, LabRun, DEFAULT_CMDLINE};

const ROOT_MIB: u64 = 64;
const RO_BYTES: usize = 1 << 20;
const SERIAL: &str = "zt-root-0001";
const HELLO: &str = "hello from the L2 root disk";
const BIG_BYTES: u64 = 8 << 20;
/// On L2's command line: the disk's init flushes a block to vdc and waits to be stopped.
const HOLD: &str = "zt_hold";
const FLUSHED: &str = "flushed by L2 before its VMM was stopped";

/// The disk's init, after the root marker (see RootDisk): vda is the root, vdb read-only.
fn root_disk() -> RootDisk {
    RootDisk::new()
        .size_mib(ROOT_MIB)
        .line("echo \"L2: vda_serial=$(cat /sys/block/vda/serial 2>/dev/null)\"")
        .line("echo \"L2: vda_sectors=$(cat /sys/block/vda/size)\"")
        // "PCI-MSIX-0000:00:01.0" or "IO-APIC": how the first virtio device interrupts.
        .line(
            "echo \"L2: virtio_irq_chip=$(grep -m1 virtio /proc/interrupts | tr -s ' ' | cut -d' ' -f4)\"",
        )
        .line(&format!(
            "echo '{HELLO}' > /hello && sync && echo 'L2: hello=written'"
        ))
        .line(&format!(
            "echo \"L2: write_mib_s=$(mib_s {mib} dd if=/dev/zero of=/big bs=1M count={mib} \
             oflag=direct conv=fsync)\"",
            mib = BIG_BYTES >> 20
        ))
        .line(
            "echo \"L2: read_mib_s=$(mib_s 32 dd if=/dev/vda of=/dev/null bs=1M count=32 \
             iflag=direct)\"",
        )
        // The hold cases: a block on vdc written and flushed (O_DIRECT + fsync: a FLUSH),
        // then the guest waits to be stopped from outside.
        .line(&format!(
            "if grep -q {HOLD} /proc/cmdline; then printf '{FLUSHED}' >/tmp/b; truncate -s 4096 /tmp/b; \
             dd if=/tmp/b of=/dev/vdc bs=4096 count=1 oflag=direct conv=fsync 2>/dev/null \
             && echo 'L2: flushed'; sleep 100000; fi"
        ))
        .line("echo \"L2: vdb_ro=$(cat /sys/block/vdb/ro 2>/dev/null)\"")
        .line("echo \"L2: vdb_md5=$(md5sum < /dev/vdb | cut -d' ' -f1)\"")
        .line(
            "if dd if=/dev/zero of=/dev/vdb bs=4096 count=1 oflag=direct 2>/tmp/ro.err; \
             then echo 'L2: vdb_write=allowed'; \
             else echo \"L2: vdb_write=refused: $(head -n 1 /tmp/ro.err)\"; fi",
        )
}

/// The images on L0 (each case gets its own copies in L1) and the read-only one's md5.
struct Images {
    root: PathBuf,
    ro: PathBuf,
    /// 1 MiB of zeros, the hold cases' vdc.
    scratch: PathBuf,
    ro_md5: String,
}

fn images() -> &'static Images {
    static IMAGES: OnceLock<Images> = OnceLock::new();
    IMAGES.get_or_init(|| {
        let dir = workspace_root().join("target/lab-out/disk-images");
        std::fs::create_dir_all(&dir).expect("target/lab-out/disk-images");
        let root = dir.join("root.img");
        root_disk()
            .build(&root)
            .expect("building the ext4 root image");
        let ro = dir.join("ro.img");
        let scratch = dir.join("scratch.img");
        std::fs::write(&scratch, vec![0u8; 1 << 20]).expect("the scratch image");
        let ro_md5 = disk::pattern_image(&ro, RO_BYTES).expect("the read-only image");
        Images {
            root,
            ro,
            scratch,
            ro_md5,
        }
    })
}

/// The case `name` (run by `base`) with its own root and read-only images in L1, which L1
/// inspects once the VMM has exited.
fn disk_case(lab: Lab, base: Case, name: &str) -> Lab {
    let (root, ro) = (
        format!("/disks/{name}-root.img"),
        format!("/disks/{name}-ro.img"),
    );
    let case = base
        .guest(disk::stage1())
        .disk(&root, false, Some(SERIAL))
        .disk(&ro, true, None)
        .after(&disk::l1_cat(&root, "/hello", "hello"))
        .after(&disk::l1_size(&root, "/big", "big_size"))
        .after(&disk::l1_fsck(&root, "fsck"))
        .after(&disk::l1_md5(&ro, "ro_md5"))
        .timeout(Duration::from_secs(150));
    lab.disk_image(&root, &images().root)
        .disk_image(&ro, &images().ro)
        .case(case)
}

/// The case `name`: the disk's init flushes a block to a third disk and waits; `stop` ends
/// the VMM from outside (a signal, its --timeout). L1 then reads the block from the image.
fn hold_case(lab: Lab, name: &str, stop: impl FnOnce(Case) -> Case) -> Lab {
    let (root, ro, scratch) = (
        format!("/disks/{name}-root.img"),
        format!("/disks/{name}-ro.img"),
        format!("/disks/{name}-scratch.img"),
    );
    let case = Case::new(name)
        .cmdline(&format!("{DEFAULT_CMDLINE} {HOLD}"))
        .guest(disk::stage1())
        .disk(&root, false, None)
        .disk(&ro, true, None)
        .disk(&scratch, false, None)
        .after(&format!(
            "echo \"L1: scratch=$(head -c {} {scratch})\"",
            FLUSHED.len()
        ))
        .timeout(Duration::from_secs(150));
    lab.disk_image(&root, &images().root)
        .disk_image(&ro, &images().ro)
        .disk_image(&scratch, &images().scratch)
        .case(stop(case))
}

fn lab() -> &'static LabRun {
    static RUN: OnceLock<Result<LabRun, String>> = OnceLock::new();
    let run = RUN.get_or_init(|| {
        let lab = Lab::new()
            .map_err(|e| e.to_string())?
            .name("disk")
            .timeout(Duration::from_secs(400));
        let lab = disk_case(lab, Case::qemu_l1("qemu-disk"), "qemu-disk");
        let lab = disk_case(lab, Case::new("zhitong-disk"), "zhitong-disk");
        // No MSI in the guest: the disks interrupt through INTx (an IOAPIC pin, resampled).
        let intx = Case::new("zhitong-disk-intx").cmdline(&format!("{DEFAULT_CMDLINE} pci=nomsi"));
        let lab = disk_case(lab, intx, "zhitong-disk-intx");
        let lab = hold_case(lab, "zhitong-disk-term", |c| {
            c.stop_with("TERM", "L2: flushed")
        });
        let lab = hold_case(lab, "zhitong-disk-timeout", |c| {
            c.args(["--timeout", "25s"])
        });
        let run = lab.run().map_err(|e| e.to_string())?;
        eprintln!(
            "lab_disk: L0 run took {:.1} s (boots: {})",
            run.elapsed.as_secs_f64(),
            run.boots
        );
        for c in &run.cases {
            eprintln!(
                "lab_disk: case {} rc={:?} in {:?}, first L2 marker after {:?}",
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

/// L2 ran the disk's /sbin/init from a read-write ext4 /dev/vda, to its end.
fn assert_booted_from_disk(c: &CaseResult) {
    c.assert_booted();
    c.check(c.has_marker("stage1"), "the stage-1 initramfs did not run");
    c.check(
        c.marker("root") == Some("/dev/vda fstype=ext4 ro=0"),
        &format!("root mount {:?}, want /dev/vda ext4 rw", c.marker("root")),
    );
    let sectors = ROOT_MIB << 11;
    c.check(
        c.marker_u64("vda_sectors") == Some(sectors),
        &format!(
            "vda has {:?} sectors, want {sectors}",
            c.marker("vda_sectors")
        ),
    );
    c.check(
        c.marker("root_clean") == Some("1"),
        "remounting / read-only at the end failed",
    );
}

/// /hello and /big are in the image as L1 found it after the run, and it is consistent.
fn assert_writes_in_the_image(c: &CaseResult) {
    c.check(
        c.marker("hello") == Some("written"),
        "L2 did not write /hello",
    );
    c.check(
        c.l1_marker("hello") == Some(HELLO),
        &format!(
            "/hello in the image: {:?}, want {HELLO:?}",
            c.l1_marker("hello")
        ),
    );
    c.check(
        c.l1_marker("big_size") == Some(BIG_BYTES.to_string().as_str()),
        &format!("/big in the image: {:?} bytes", c.l1_marker("big_size")),
    );
    c.check(
        c.l1_marker("fsck") == Some("0"),
        &format!("e2fsck -fn of the image: status {:?}", c.l1_marker("fsck")),
    );
}

/// vdb (readonly=on) reads right, is read-only to the guest, refuses a write, is unchanged.
fn assert_readonly_disk(c: &CaseResult) {
    let want = &images().ro_md5;
    c.check(
        c.marker("vdb_md5") == Some(want.as_str()),
        &format!("L2 read vdb as md5 {:?}, want {want}", c.marker("vdb_md5")),
    );
    c.check(
        c.marker("vdb_ro") == Some("1"),
        &format!(
            "/sys/block/vdb/ro is {:?}: VIRTIO_BLK_F_RO not offered",
            c.marker("vdb_ro")
        ),
    );
    c.check(
        c.marker("vdb_write")
            .is_some_and(|v| v.starts_with("refused")),
        &format!("a write to vdb: {:?}", c.marker("vdb_write")),
    );
    c.check(
        c.l1_marker("ro_md5") == Some(want.as_str()),
        &format!(
            "the read-only image changed: md5 {:?}",
            c.l1_marker("ro_md5")
        ),
    );
}

fn assert_serial(c: &CaseResult) {
    c.check(
        c.marker("vda_serial") == Some(SERIAL),
        &format!("vda's serial {:?}, want {SERIAL}", c.marker("vda_serial")),
    );
}

/// Prints the guest's dd figures (not asserted: this is TCG under TCG).
fn report_throughput(c: &CaseResult) {
    let (w, r) = (c.marker("write_mib_s"), c.marker("read_mib_s"));
    eprintln!(
        "{}: write {} MiB/s (8 MiB, O_DIRECT, ext4), read {} MiB/s (32 MiB, O_DIRECT, /dev/vda)",
        c.name,
        w.unwrap_or("?"),
        r.unwrap_or("?")
    );
    for (what, v) in [("write_mib_s", w), ("read_mib_s", r)] {
        c.check(
            v.is_some_and(|v| v.parse::<f64>().is_ok()),
            &format!("no number in 'L2: {what}=' ({v:?})"),
        );
    }
}

/// The image L0 shipped has no /hello: what L1 finds after the run, L2 wrote.
#[test]
fn the_shipped_root_image_is_pristine() {
    let img = &images().root;
    let out = std::process::Command::new(disk::DEBUGFS)
        .args(["-R", "stat /hello"])
        .arg(img)
        .output()
        .expect("debugfs (e2fsprogs): run resources/lab/setup.sh");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("File not found"), "{err}");
}

#[test]
fn qemu_boots_from_an_ext4_virtio_blk_root() {
    assert_booted_from_disk(lab().case("qemu-disk"));
}

#[test]
fn qemu_guest_writes_land_in_the_image() {
    assert_writes_in_the_image(lab().case("qemu-disk"));
}

#[test]
fn qemu_readonly_disk_refuses_writes() {
    assert_readonly_disk(lab().case("qemu-disk"));
}

#[test]
fn qemu_serial_reads_back() {
    assert_serial(lab().case("qemu-disk"));
}

#[test]
fn qemu_throughput_is_reported() {
    report_throughput(lab().case("qemu-disk"));
}

#[test]
fn zhitong_boots_from_an_ext4_virtio_blk_root() {
    assert_booted_from_disk(lab().case("zhitong-disk"));
}

#[test]
fn zhitong_guest_writes_land_in_the_image() {
    assert_writes_in_the_image(lab().case("zhitong-disk"));
}

#[test]
fn zhitong_readonly_disk_refuses_writes() {
    assert_readonly_disk(lab().case("zhitong-disk"));
}

#[test]
fn zhitong_serial_reads_back() {
    assert_serial(lab().case("zhitong-disk"));
}

#[test]
fn zhitong_throughput_is_reported() {
    report_throughput(lab().case("zhitong-disk"));
}

/// A block the guest flushed is in the image when the VM ends by SIGTERM (exit 143), and by its
/// --timeout (exit 124).
#[test]
fn zhitong_flushed_writes_survive_sigterm_and_timeout() {
    for (name, want_rc) in [("zhitong-disk-term", 143), ("zhitong-disk-timeout", 124)] {
        let c = lab().case(name);
        c.check(c.has_marker("flushed"), "L2 did not flush its block to vdc");
        c.check(
            c.rc == Some(want_rc),
            &format!("exit status {:?}, want {want_rc}", c.rc),
        );
        c.check(
            c.l1_marker("scratch") == Some(FLUSHED),
            &format!(
                "vdc's first block in the image: {:?}, want {FLUSHED:?}",
                c.l1_marker("scratch")
            ),
        );
    }
}

/// With MSI-X the disks interrupt through it; without (pci=nomsi) through INTx, and the
/// whole disk workload still runs (a lost interrupt would hang it).
#[test]
fn zhitong_disks_interrupt_by_msix_or_intx() {
    let msix = lab().case("zhitong-disk");
    msix.check(
        msix.marker("virtio_irq_chip")
            .is_some_and(|c| c.starts_with("PCI-MSI")),
        &format!(
            "interrupt chip {:?}, want PCI-MSI* (6.1 names MSI-X so too: virtio offers only MSI-X)",
            msix.marker("virtio_irq_chip")
        ),
    );
    let intx = lab().case("zhitong-disk-intx");
    assert_booted_from_disk(intx);
    assert_writes_in_the_image(intx);
    assert_readonly_disk(intx);
    intx.check(
        intx.marker("virtio_irq_chip") == Some("IO-APIC"),
        &format!(
            "interrupt chip {:?}, want IO-APIC",
            intx.marker("virtio_irq_chip")
        ),
    );
}
