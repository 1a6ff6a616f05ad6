//! zhitong's virtio devices beside a passed-through GPU in the VFIO lab's MSI boot: one PCI
//! root, one GSI routing table, the GPU's MSI-X and the virtio devices' side by side.
//! gpu-disk: the GPU draws, a read-only data disk reads back. gpu-root-net: L2's root is an
//! ext4 disk (a stage-1 initramfs loads the modules and switch_roots), the GPU draws from
//! there, eth0 on a tap pings L1, a file written on the root is in the image afterwards.

use std::path::PathBuf;
use std::sync::OnceLock;

use super::*;
use crate::disk::{self, RootDisk};
use crate::guest::Guest;
use crate::{net, Lab};

/// The gpu-disk case's read-only data disk in L1.
const GPU_DISK: &str = "/disks/gpu-data.img";
/// The gpu-root-net case's root disk in L1, and its tap.
const ROOT_DISK: &str = "/disks/gpu-root.img";
const TAP: &str = "ztg0";
const HELLO: &str = "written by L2 beside its GPU";

pub fn more_msi(lab: Lab) -> Lab {
    let root = net::l1_tap(
        passthrough(Vmm::Zhitong, "gpu-root-net", &[GPU.bdf], root_stage1())
            .disk(ROOT_DISK, false, None)
            .net(TAP, None)
            .after(&disk::l1_cat(ROOT_DISK, "/hello", "hello")),
        TAP,
        false,
    );
    lab.disk_image(GPU_DISK, &gpu_disk_image().0)
        .case(
            passthrough(Vmm::Zhitong, "gpu-disk", &[GPU.bdf], gpu_disk_guest()).disk(
                GPU_DISK,
                true,
                Some("zt-data"),
            ),
        )
        .disk_image(ROOT_DISK, root_image())
        .case(root)
}

/// The data disk on L0 and its md5.
fn gpu_disk_image() -> &'static (PathBuf, String) {
    static IMAGE: OnceLock<(PathBuf, String)> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let path = images_dir().join("gpu-data.img");
        let md5 = disk::pattern_image(&path, 1 << 20).expect("the gpu-disk image");
        (path, md5)
    })
}

fn images_dir() -> PathBuf {
    let dir = crate::workspace_root().join("target/lab-out/disk-images");
    std::fs::create_dir_all(&dir).expect("target/lab-out/disk-images");
    dir
}

/// The GPU draws; the disk reads back (md5), with its serial and its interrupt kind.
fn gpu_disk_guest() -> Guest {
    guest(
        &["virtio_pci", "virtio_gpu", "virtio_blk"],
        &[
            format!("display_test gpu {} {}", GPU.find(), GPU.id),
            "echo \"L2: vda_md5=$(md5sum < /dev/vda | cut -d' ' -f1)\"".into(),
            "echo \"L2: vda_serial=$(cat /sys/block/vda/serial)\"".into(),
            "echo \"L2: vda_irqs=$(grep -c 'virtio.*-req' /proc/interrupts)\"".into(),
        ],
    )
}

/// Stage 1 loads the GPU's and the network's drivers beside the root disk's.
fn root_stage1() -> Guest {
    disk::stage1().module("virtio_gpu").module("virtio_net")
}

/// The root image: the VFIO guests' shell library, then the GPU draws, eth0 pings L1 and
/// /hello is written (the disk's init syncs and remounts / read-only before powering off).
fn root_image() -> &'static PathBuf {
    static IMAGE: OnceLock<PathBuf> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let path = images_dir().join("gpu-root.img");
        RootDisk::new()
            .line(L2_LIB)
            .line("no_fbcon")
            .line(&format!("display_test gpu {} {}", GPU.find(), GPU.id))
            .line("ip link set lo up")
            .line(&format!(
                "ip addr add {}/24 dev eth0 && ip link set eth0 up",
                net::L2_ADDR
            ))
            .line(
                "i=0; while [ \"$(cat /sys/class/net/eth0/operstate)\" != up ] && [ $i -lt 100 ]; \
                 do sleep 0.1; i=$((i+1)); done; sleep 0.1",
            )
            .line(&format!(
                "ping -c 3 -i 0.2 -W 5 {} >/tmp/ping.out 2>&1; \
                 echo \"L2: ping=$(sed -n 's/.*, \\([0-9]*\\) packets received.*/\\1/p' /tmp/ping.out)/3\"",
                net::L1_ADDR
            ))
            .line(&format!("echo '{HELLO}' > /hello && echo 'L2: hello=written'"))
            .build(&path)
            .expect("the gpu-root-net root image");
        path
    })
}

/// A GPU passed through and a virtio disk in one VM: the GPU draws and interrupts (MSI-X),
/// the disk reads back what L0 wrote, on an MSI-X vector of its own.
pub fn a_passed_through_gpu_and_a_virtio_disk_share_the_vm(msi: &VfioRun) {
    let run = &msi.run;
    assert_display(run, "gpu-disk", VIRTIO_GPU);
    let c = run.case("gpu-disk");
    let want = &gpu_disk_image().1;
    c.check(
        c.marker("vda_md5") == Some(want.as_str()),
        &format!("vda read as md5 {:?}, want {want}", c.marker("vda_md5")),
    );
    c.check(
        c.marker("vda_serial") == Some("zt-data"),
        &format!("vda's serial {:?}", c.marker("vda_serial")),
    );
    c.check(
        c.marker_u64("vda_irqs").is_some_and(|n| n >= 1),
        &format!(
            "virtio-blk request vectors in /proc/interrupts: {:?}",
            c.marker("vda_irqs")
        ),
    );
}

/// The whole guest of a GPU job: its root on a virtio disk, the GPU passed through and
/// drawing, a network to L1; the root's write is in the image after the run.
pub fn a_gpu_a_root_disk_and_a_network_in_one_vm(msi: &VfioRun) {
    let run = &msi.run;
    assert_display(run, "gpu-root-net", VIRTIO_GPU);
    let c = run.case("gpu-root-net");
    c.check(c.has_marker("stage1"), "the stage-1 initramfs did not run");
    c.check(
        c.marker("root") == Some("/dev/vda fstype=ext4 ro=0"),
        &format!("root mount {:?}, want /dev/vda ext4 rw", c.marker("root")),
    );
    c.check(
        c.marker("ping") == Some("3/3"),
        &format!("L2 pinged L1: {:?}, want 3/3", c.marker("ping")),
    );
    c.check(
        c.l1_marker("hello") == Some(HELLO),
        &format!("/hello in the image: {:?}", c.l1_marker("hello")),
    );
}
