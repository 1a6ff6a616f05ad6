//! The VFIO passthrough scenarios of lab_vfio.rs with zhitong as the L1 VMM, plus what only
//! zhitong promises (a signal releases the devices; the boot timeline has devices_ready).
//!
//! Run it alone: `cargo build --release -p vmm && cargo test -p zhitong-tests --test lab_vfio_zhitong`.
//!
//! What it asks of zhitong, in L1 (devices already bound to vfio-pci by L1's init):
//! - `zhitong run --kernel /l2/vmlinux --initramfs I --cmdline 'console=ttyS0 quiet panic=-1'
//!   --cpus 1 --memory 512M --timings --device 0000:00:04.0
//!   [--device /sys/bus/pci/devices/0000:00:05.0]` — BDF and sysfs path forms, repeated;
//!   exit 0 after L2's `poweroff -f`.
//! - L2 finds each device on its PCI bus (vendor/device ids), the native driver binds and works:
//!   virtio-gpu (virtio-pci + virtio_gpu) with MSI-X counting up, and with INTx only (L0
//!   vectors=0) on a level-triggered IO-APIC line (resample) counting up; bochs-drm; both at
//!   once; NVMe (nvme, MSI-X) DMA both ways; ivshmem's 16 GiB 64-bit BAR2 reached by
//!   /dev/mem (devmem) beyond 4 GiB and in its last word.
//! - What the drivers draw in /dev/fbN reaches L0's display (screendump, pixel exact).
//! - SIGTERM while a driver runs the device: exit 143, one stderr line "zhitong: guest
//!   stopped by SIGTERM", then the same device works in the next run (released, reset).
//! - --timings: "devices_ready_ms" is a number when devices are passed through.
//!
//! On Debian's stable kernel (6.1, no iommufd: zhitong picks the legacy backend). The suite
//! is tests/lab/vfio/zhitong.rs; lab_vfio_612.rs runs it on 6.12 with each backend.

zhitong_tests::zhitong_vfio_suite!(zhitong_tests::vfio::DEBIAN_STABLE);
