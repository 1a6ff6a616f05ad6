//! NVIDIA's GPUDirect peer-to-peer clique capability: a vendor-specific capability the VMM
//! adds to a passed-through NVIDIA GPU, which NVIDIA's driver reads to allow P2P between
//! the GPUs of one clique inside a VM (it cannot see the host's topology). Its layout, as
//! NVIDIA defines it: ID 0x09, next pointer, length 8, the signature "P2P", then the clique
//! id in bits 3-6 of byte 6, byte 7 zero.
//!
//! It goes in free standard config space (0xd4 when free, where NVIDIA's GPUs have room
//! and other VMMs put it; else the highest free dword-aligned 8 bytes) at the head of the
//! capability list, the device's own list behind it.

use super::caps::Capability;
use crate::pci::config::{CAPABILITIES_START, CAP_ID_MSI, CAP_ID_MSIX, LEGACY_CONFIG_SIZE};

const CAP_ID_VENDOR: u8 = 0x09;
const CAP_ID_PM: u8 = 0x01;
const CAP_ID_PCIE: u8 = 0x10;
const CAP_ID_SSVID: u8 = 0x0d;
const CAP_ID_AF: u8 = 0x13;
/// Bytes of the capability.
pub const LEN: u16 = 8;
/// Where it goes when that is free.
const PREFERRED: u16 = 0xd4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CliqueCap {
    offset: u16,
    /// The device's first capability (0: none).
    next: u8,
    clique: u8,
}

impl CliqueCap {
    /// Place the capability for `clique` beside the device's `caps` (`read` reads its config
    /// dwords, `first` is its capability pointer, 0 when it has no list). `None` when no
    /// 8 bytes of standard config space are free.
    pub fn place(
        caps: &[Capability],
        read: impl Fn(u16) -> u32,
        first: u8,
        clique: u8,
    ) -> Option<Self> {
        let used = used_ranges(caps, read);
        let free = |at: u16| used.iter().all(|&(s, e)| at + LEN <= s || at >= e);
        let offset = std::iter::once(PREFERRED)
            .chain(
                (CAPABILITIES_START..=LEGACY_CONFIG_SIZE - LEN)
                    .rev()
                    .step_by(4),
            )
            .find(|&at| free(at))?;
        Some(Self {
            offset,
            next: first,
            clique,
        })
    }

    pub fn offset(&self) -> u16 {
        self.offset
    }

    /// The capability's dword at config offset `dword` (4-aligned), if it is one of its two.
    pub fn read(&self, dword: u16) -> Option<u32> {
        let bytes: [u8; 8] = [
            CAP_ID_VENDOR,
            self.next,
            LEN as u8,
            b'P',
            b'2',
            b'P',
            self.clique << 3,
            0,
        ];
        let rel = usize::from(dword.checked_sub(self.offset)?);
        let word = bytes.get(rel..rel + 4)?;
        Some(u32::from_le_bytes(word.try_into().ok()?))
    }

    /// Whether config offset `offset` falls inside the capability.
    pub fn contains(&self, offset: u16) -> bool {
        (self.offset..self.offset + LEN).contains(&offset)
    }
}

/// The config bytes the header and the device's capabilities take, as [start, end).
/// A capability of unknown size is taken to run up to the next one above it (or to 256).
fn used_ranges(caps: &[Capability], read: impl Fn(u16) -> u32) -> Vec<(u16, u16)> {
    let mut used = vec![(0, CAPABILITIES_START)];
    for cap in caps {
        let header = read(cap.offset);
        let known = match cap.id {
            CAP_ID_PM | CAP_ID_SSVID => Some(8),
            CAP_ID_AF => Some(6),
            CAP_ID_MSIX => Some(12),
            CAP_ID_PCIE => Some(0x3c),
            CAP_ID_VENDOR => Some(u16::from((header >> 16) as u8).max(3)),
            CAP_ID_MSI => {
                let ctrl = (header >> 16) as u16;
                let is_64 = ctrl & (1 << 7) != 0;
                let masking = ctrl & (1 << 8) != 0;
                Some(10 + if is_64 { 4 } else { 0 } + if masking { 10 } else { 0 })
            }
            _ => None,
        };
        let next_above = caps
            .iter()
            .map(|c| c.offset)
            .filter(|&o| o > cap.offset)
            .min()
            .unwrap_or(LEGACY_CONFIG_SIZE);
        let len = known.unwrap_or(next_above - cap.offset);
        let end = (cap.offset + len)
            .min(LEGACY_CONFIG_SIZE)
            .next_multiple_of(4);
        used.push((cap.offset, end));
    }
    used
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cap(id: u8, offset: u16) -> Capability {
        Capability { id, offset }
    }

    /// A config space where the dword at each capability holds `header`.
    fn reader(headers: &[(u16, u32)]) -> impl Fn(u16) -> u32 + '_ {
        |off| headers.iter().find(|h| h.0 == off).map_or(0, |h| h.1)
    }

    #[test]
    fn the_layout_is_nvidias() {
        let c = CliqueCap::place(&[], |_| 0, 0x60, 5).unwrap();
        assert_eq!(c.offset(), 0xd4);
        assert_eq!(
            c.read(0xd4),
            Some(u32::from_le_bytes([0x09, 0x60, 8, b'P']))
        );
        assert_eq!(
            c.read(0xd8),
            Some(u32::from_le_bytes([b'2', b'P', 5 << 3, 0]))
        );
        assert_eq!(c.read(0xd0), None);
        assert_eq!(c.read(0xdc), None);
        assert!(c.contains(0xd4) && c.contains(0xdb) && !c.contains(0xdc));
        let c = CliqueCap::place(&[], |_| 0, 0, 15).unwrap();
        assert_eq!(c.read(0xd8).unwrap() >> 16 & 0xff, 15 << 3);
    }

    #[test]
    fn a_turing_like_layout_leaves_0xd4_free() {
        // PM 0x60, MSI 0x68 (64-bit, no masking), PCIe 0x78 (to 0xb4), vendor 0xb4 (len 0x14).
        let caps = [
            cap(CAP_ID_PM, 0x60),
            cap(CAP_ID_MSI, 0x68),
            cap(CAP_ID_PCIE, 0x78),
            cap(CAP_ID_VENDOR, 0xb4),
        ];
        let headers = [(0x68, 1 << 23), (0xb4, 0x14 << 16)];
        let c = CliqueCap::place(&caps, reader(&headers), 0x60, 1).unwrap();
        assert_eq!(c.offset(), 0xd4);
    }

    #[test]
    fn an_occupied_0xd4_moves_it_to_free_space() {
        // A vendor capability of 0x20 bytes at 0xc8 covers 0xc8..0xe8.
        let caps = [cap(CAP_ID_PM, 0x40), cap(CAP_ID_VENDOR, 0xc8)];
        let headers = [(0xc8, 0x20 << 16)];
        let c = CliqueCap::place(&caps, reader(&headers), 0x40, 1).unwrap();
        assert_eq!(c.offset(), 0xf8, "the highest free 8 bytes");
        // An unknown capability is taken to run up to the next one: 0x48..0xc0 here.
        let caps = [cap(CAP_ID_PM, 0x40), cap(0x0f, 0x48), cap(CAP_ID_PM, 0xd0)];
        let c = CliqueCap::place(&caps, |_| 0, 0x40, 1).unwrap();
        assert_eq!(
            c.offset(),
            0xf8,
            "0xd4 is the PM capability's; the top is free"
        );
        let caps = [cap(CAP_ID_PM, 0x40), cap(0x0f, 0x48)];
        assert_eq!(
            CliqueCap::place(&caps, |_| 0, 0x40, 1),
            None,
            "it runs to 256"
        );
    }

    #[test]
    fn a_full_config_space_has_no_room() {
        let caps = [cap(0x0f, 0x40)];
        assert_eq!(CliqueCap::place(&caps, |_| 0, 0x40, 1), None);
    }
}
