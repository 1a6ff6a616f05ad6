//! The zhitong VFIO suite (tests/lab/vfio/zhitong.rs) with L1 on Debian's 6.12 kernel (and
//! its iommufd-enabled VFIO modules, as lab_vfio_612.rs), every run forced onto the legacy
//! VFIO container (`--vfio-backend legacy`): both backends on one kernel.
//!
//! Run it alone: `resources/lab/kernel-6.12.sh && cargo build --release -p vmm
//! --features test-faults && cargo test -p zhitong-tests --test lab_vfio_612_legacy`.

zhitong_tests::zhitong_vfio_suite!(zhitong_tests::vfio::LINUX_6_12_LEGACY);
