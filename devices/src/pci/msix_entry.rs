//! One MSI-X table entry as the guest sees it: 16 bytes, message address (low, high), data,
//! vector control (bit 0: masked). The VFIO device's and the virtio transport's tables both
//! hold these.

use crate::services::MsiMessage;

/// Bytes of one table entry.
pub const ENTRY_SIZE: u64 = 16;
const ENTRY_MASKED: u32 = 1;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MsixEntry {
    pub msg: MsiMessage,
    pub masked: bool,
}

impl MsixEntry {
    pub fn bytes(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[0..4].copy_from_slice(&self.msg.addr_lo.to_le_bytes());
        b[4..8].copy_from_slice(&self.msg.addr_hi.to_le_bytes());
        b[8..12].copy_from_slice(&self.msg.data.to_le_bytes());
        b[12..16].copy_from_slice(&u32::from(self.masked).to_le_bytes());
        b
    }

    /// Reserved vector-control bits are dropped (they read back 0).
    pub fn from_bytes(b: &[u8; 16]) -> Self {
        let word = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        Self {
            msg: MsiMessage {
                addr_lo: word(0),
                addr_hi: word(4),
                data: word(8),
            },
            masked: word(12) & ENTRY_MASKED != 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_round_trips_and_keeps_only_the_mask_bit() {
        let mut raw = [0u8; 16];
        raw[0..4].copy_from_slice(&0xfee0_1000u32.to_le_bytes());
        raw[8..12].copy_from_slice(&0x4021u32.to_le_bytes());
        raw[12..16].copy_from_slice(&0xffff_fffeu32.to_le_bytes());
        let e = MsixEntry::from_bytes(&raw);
        assert!(!e.masked);
        assert_eq!((e.msg.addr_lo, e.msg.data), (0xfee0_1000, 0x4021));
        raw[12..16].copy_from_slice(&0u32.to_le_bytes());
        assert_eq!(e.bytes(), raw);
        raw[12] = 1;
        assert!(MsixEntry::from_bytes(&raw).masked);
        assert_eq!(MsixEntry::from_bytes(&raw).bytes(), raw);
    }
}
