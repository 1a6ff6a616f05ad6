//! VFIO passthrough in the nested lab with QEMU as the L1 VMM: the reference that zhitong
//! (lab_vfio_zhitong.rs) must match. Two L0 boots (MSI/MSI-X devices; an INTx-only GPU);
//! the scenarios and their checks are in tests/lab/vfio.rs, the L2 side in
//! resources/lab/l2-vfio.sh.
//!
//! Needs resources/lab/setup.sh; without it these tests fail saying so (they never skip).

zhitong_tests::vfio_tests!(zhitong_tests::Vmm::Qemu, |lab| lab, |lab| lab);
