//! The virtio vendor capabilities (spec 4.1.4) pointing into BAR 0, the MSI-X capability
//! pointing into BAR 2, and the PCI_CFG access window (a BAR access through config space).

use crate::pci::config::{ConfigError, ConfigSpace, CAP_ID_MSIX};

use super::common::COMMON_LEN;
use super::interrupt::PBA_OFFSET;
use super::notify::{NOTIFY_MULTIPLIER, NOTIFY_OFFSET};

const CAP_ID_VENDOR: u8 = 0x09;

/// cfg_type values.
const COMMON_CFG: u8 = 1;
const NOTIFY_CFG: u8 = 2;
const ISR_CFG: u8 = 3;
const DEVICE_CFG: u8 = 4;
const PCI_CFG: u8 = 5;

/// BAR 0 layout.
pub const REGS_BAR: u8 = 0;
pub const REGS_BAR_SIZE: u64 = 0x4000;
pub const ISR_OFFSET: u64 = 0x1000;
pub const DEVICE_OFFSET: u64 = 0x2000;
pub const DEVICE_LEN: u64 = 0x1000;
/// BAR 2: the MSI-X table at 0, the PBA at [`PBA_OFFSET`].
pub const MSIX_BAR: u8 = 2;
pub const MSIX_BAR_SIZE: u64 = 0x1000;

/// Offsets in a virtio_pci_cap (from the capability's start).
const CAP_BAR: u16 = 4;
const CAP_OFFSET: u16 = 8;
const CAP_LENGTH: u16 = 12;
const CFG_DATA: u16 = 16;

/// MSI-X message control: enable and function mask are the top two bits.
const MSIX_ENABLE: u16 = 1 << 15;
const MSIX_FUNCTION_MASK: u16 = 1 << 14;

/// Where the capabilities the transport acts on ended up.
pub struct Caps {
    pub pci_cfg: u16,
    pub msix: u16,
}

/// The body of a virtio_pci_cap after the id/next bytes, plus `extra`.
fn vendor_body(cfg_type: u8, bar: u8, offset: u64, length: u64, extra: &[u8]) -> Vec<u8> {
    let cap_len = 16 + extra.len() as u8;
    let mut b = vec![cap_len, cfg_type, bar, 0, 0, 0];
    b.extend_from_slice(&(offset as u32).to_le_bytes());
    b.extend_from_slice(&(length as u32).to_le_bytes());
    b.extend_from_slice(extra);
    b
}

pub fn add_caps(cs: &mut ConfigSpace, queues: usize, vectors: u16) -> Result<Caps, ConfigError> {
    let bar = REGS_BAR;
    cs.add_capability(
        CAP_ID_VENDOR,
        &vendor_body(COMMON_CFG, bar, 0, COMMON_LEN, &[]),
    )?;
    let notify_len = (queues.max(1) as u64) * u64::from(NOTIFY_MULTIPLIER);
    cs.add_capability(
        CAP_ID_VENDOR,
        &vendor_body(
            NOTIFY_CFG,
            bar,
            NOTIFY_OFFSET,
            notify_len,
            &NOTIFY_MULTIPLIER.to_le_bytes(),
        ),
    )?;
    cs.add_capability(
        CAP_ID_VENDOR,
        &vendor_body(ISR_CFG, bar, ISR_OFFSET, 4, &[]),
    )?;
    cs.add_capability(
        CAP_ID_VENDOR,
        &vendor_body(DEVICE_CFG, bar, DEVICE_OFFSET, DEVICE_LEN, &[]),
    )?;
    let pci_cfg = cs.add_capability(CAP_ID_VENDOR, &vendor_body(PCI_CFG, 0, 0, 0, &[0; 4]))?;
    // The driver picks the BAR, offset and length of the window, then accesses the data.
    cs.set_write_mask(pci_cfg + CAP_BAR, &[0xff]);
    cs.set_write_mask(pci_cfg + CAP_OFFSET, &[0xff; 8]);
    cs.set_write_mask(pci_cfg + CFG_DATA, &[0xff; 4]);

    let mut msix = Vec::new();
    msix.extend_from_slice(&(vectors - 1).to_le_bytes());
    msix.extend_from_slice(&u32::from(MSIX_BAR).to_le_bytes());
    msix.extend_from_slice(&(PBA_OFFSET as u32 | u32::from(MSIX_BAR)).to_le_bytes());
    let msix_cap = cs.add_capability(CAP_ID_MSIX, &msix)?;
    let ctrl_mask = MSIX_ENABLE | MSIX_FUNCTION_MASK;
    cs.set_write_mask(msix_cap + 2, &ctrl_mask.to_le_bytes());
    Ok(Caps {
        pci_cfg,
        msix: msix_cap,
    })
}

/// MSI-X (enabled, function masked) as the capability holds it.
pub fn msix_control(cs: &ConfigSpace, cap: u16) -> (bool, bool) {
    let ctrl = cs.get_u16(cap + 2);
    (ctrl & MSIX_ENABLE != 0, ctrl & MSIX_FUNCTION_MASK != 0)
}

/// Whether a config access `offset..offset+len` touches `start..start+size`.
pub fn overlaps(offset: u16, len: usize, start: u16, size: u16) -> bool {
    let (a, b) = (usize::from(offset), usize::from(offset) + len);
    let (c, d) = (usize::from(start), usize::from(start) + usize::from(size));
    a < d && c < b
}

/// The PCI_CFG window's data register offset.
pub fn window_data(cap: u16) -> u16 {
    cap + CFG_DATA
}

/// The BAR access the PCI_CFG window describes, if valid: (BAR, offset, length). The length
/// must be 1, 2 or 4, the offset aligned to it and the access inside one of our BARs.
pub fn window_access(cs: &ConfigSpace, cap: u16) -> Option<(u8, u64, usize)> {
    let bar = cs.get_u8(cap + CAP_BAR);
    let offset = u64::from(cs.get_u32(cap + CAP_OFFSET));
    let len = cs.get_u32(cap + CAP_LENGTH);
    let size = match bar {
        REGS_BAR => REGS_BAR_SIZE,
        MSIX_BAR => MSIX_BAR_SIZE,
        _ => return None,
    };
    let ok = matches!(len, 1 | 2 | 4) && offset % u64::from(len) == 0;
    (ok && offset + u64::from(len) <= size).then_some((bar, offset, len as usize))
}
