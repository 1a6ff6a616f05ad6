//! Errors of the VFIO PCI device. Every message names the device (its host BDF or whatever
//! name the VMM gave it) and the cause.

/// A failure of a VFIO operation (an ioctl, an mmap) reported by a [`super::VfioBackend`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{op}: {cause}")]
pub struct BackendError {
    /// What was attempted ("VFIO_DEVICE_SET_IRQS (MSI-X enable)", "mmap of region 2"...).
    pub op: String,
    /// Why it failed (the OS error, usually).
    pub cause: String,
}

impl BackendError {
    pub fn new(op: impl Into<String>, cause: impl ToString) -> Self {
        Self {
            op: op.into(),
            cause: cause.to_string(),
        }
    }
}

/// Why a [`super::VfioPciDevice`] could not be built.
#[derive(Debug, thiserror::Error)]
pub enum VfioPciError {
    #[error(
        "{device}: VFIO reports no PCI config region; is this a PCI device bound to vfio-pci?"
    )]
    NoConfigRegion { device: String },
    #[error(
        "{device}: config space reads as all-ones (vendor ID 0xffff): the device does not \
         respond; check it is powered and not in D3cold, or reset it on the host"
    )]
    NotResponding { device: String },
    #[error("{device}: the MSI-X {what} (BAR {bar}, offset {offset:#x}, {len:#x} bytes) lies outside the BAR ({bar_size:#x} bytes)")]
    MsixOutsideBar {
        device: String,
        what: &'static str,
        bar: u8,
        offset: u64,
        len: u64,
        bar_size: u64,
    },
    #[error("{device}: cannot set up INTx on GSI {gsi}: {cause}")]
    Intx {
        device: String,
        gsi: u32,
        cause: String,
    },
    #[error(
        "{device}: peer-to-peer asked for, but none of its BARs can be mapped (VFIO offers no \
         mmappable BAR area), so no other device could reach them; drop the p2p option"
    )]
    NoP2pBars { device: String },
    #[error(
        "{device}: a GPUDirect clique is for NVIDIA GPUs (vendor 10de); this device's vendor \
         is {vendor:04x}; drop the clique option"
    )]
    CliqueNotNvidia { device: String, vendor: u16 },
    #[error(
        "{device}: no 8 bytes of config space are free for the GPUDirect clique capability; \
         drop the clique option"
    )]
    NoRoomForClique { device: String },
    #[error("{device}: cannot create an eventfd: {source}")]
    EventFd {
        device: String,
        #[source]
        source: std::io::Error,
    },
}
