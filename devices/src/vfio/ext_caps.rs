//! Extended capabilities (config space from 0x100) pass through, except a few the guest must
//! not see, which are unlinked from the chain (the headers around them are virtualised) and
//! whose registers read as 0 and ignore writes:
//! - Resizable BAR (and its VF variant): VFIO exposes it read-only, and a guest driver that
//!   resizes a BAR (amdgpu does) would end up with sizes that do not match the regions;
//! - SR-IOV: the guest cannot create VFs, and its read-only VF BARs confuse firmware;
//! - ARI: its next-function numbers describe the host's topology, not the guest's.

use std::collections::BTreeMap;

use crate::pci::config::EXT_CAPABILITIES_START;

pub const EXT_CAP_ID_ARI: u16 = 0x0e;
pub const EXT_CAP_ID_SRIOV: u16 = 0x10;
pub const EXT_CAP_ID_REBAR: u16 = 0x15;
pub const EXT_CAP_ID_VF_REBAR: u16 = 0x24;

const HIDDEN: [u16; 4] = [
    EXT_CAP_ID_ARI,
    EXT_CAP_ID_SRIOV,
    EXT_CAP_ID_REBAR,
    EXT_CAP_ID_VF_REBAR,
];

fn next_of(header: u32) -> u16 {
    (header >> 20) as u16 & !3
}

/// The virtualised view of the extended capability chain.
#[derive(Debug, Default)]
pub struct ExtCaps {
    /// Header dwords the guest sees instead of the device's.
    headers: BTreeMap<u16, u32>,
    /// Hidden capabilities' bytes: [start, end).
    hidden: Vec<(u16, u16)>,
}

impl ExtCaps {
    /// Walk the device's chain (`read` gives config dwords, `size` is the VFIO config
    /// region's size: a 256-byte one has no extended space).
    pub fn probe(name: &str, read: impl Fn(u16) -> u32, size: u64) -> Self {
        let mut caps = Self::default();
        if size <= u64::from(EXT_CAPABILITIES_START) {
            return caps;
        }
        let end = size.min(4096) as u16;
        let mut chain: Vec<(u16, u32)> = Vec::new();
        let mut offset = EXT_CAPABILITIES_START;
        while offset >= EXT_CAPABILITIES_START && offset < end && chain.len() < 960 {
            if chain.iter().any(|(o, _)| *o == offset) {
                log::warn!("{name}: extended capability chain loops at {offset:#x}");
                break;
            }
            let header = read(offset);
            if header == 0 || header == 0xffff_ffff {
                break;
            }
            chain.push((offset, header));
            offset = next_of(header);
        }
        let hidden = |header: u32| HIDDEN.contains(&(header as u16));
        if !chain.iter().any(|&(_, h)| hidden(h)) {
            return caps;
        }
        // Each hidden capability spans up to the next capability in address order.
        let mut starts: Vec<u16> = chain.iter().map(|(o, _)| *o).collect();
        starts.sort_unstable();
        for &(offset, header) in chain.iter().filter(|(_, h)| hidden(*h)) {
            let stop = starts.iter().copied().find(|&s| s > offset).unwrap_or(end);
            log::info!(
                "{name}: hiding extended capability {:#x} at {offset:#x}",
                header as u16
            );
            caps.hidden.push((offset, stop));
        }
        // Relink the kept capabilities.
        let kept: Vec<(u16, u32)> = chain.iter().copied().filter(|&(_, h)| !hidden(h)).collect();
        for (i, &(offset, header)) in kept.iter().enumerate() {
            let next = kept.get(i + 1).map_or(0, |(o, _)| *o);
            caps.headers
                .insert(offset, (header & 0x000f_ffff) | u32::from(next) << 20);
        }
        // The chain must start at 0x100: if that capability is hidden, leave a null one
        // (ID 0) there pointing at the first kept capability.
        if hidden(chain[0].1) {
            let first = kept.first().map_or(0, |(o, _)| *o);
            caps.headers
                .insert(EXT_CAPABILITIES_START, u32::from(first) << 20);
        }
        caps
    }

    /// What the guest reads at dword `offset`, when it is not the device's.
    pub fn read(&self, offset: u16) -> Option<u32> {
        if let Some(h) = self.headers.get(&offset) {
            return Some(*h);
        }
        self.is_hidden(offset).then_some(0)
    }

    /// Whether a write to dword `offset` must be dropped (a virtual header or a hidden
    /// capability's register).
    pub fn blocks_write(&self, offset: u16) -> bool {
        self.headers.contains_key(&offset) || self.is_hidden(offset)
    }

    fn is_hidden(&self, offset: u16) -> bool {
        self.hidden.iter().any(|&(s, e)| offset >= s && offset < e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(id: u16, next: u16) -> u32 {
        u32::from(id) | 1 << 16 | u32::from(next) << 20
    }

    fn probe(regs: &[(u16, u32)]) -> ExtCaps {
        let read = |o| regs.iter().find(|(r, _)| *r == o).map_or(0, |(_, v)| *v);
        ExtCaps::probe("test", read, 4096)
    }

    #[test]
    fn nothing_to_hide_changes_nothing() {
        let caps = probe(&[(0x100, header(1, 0x140)), (0x140, header(0x18, 0))]);
        assert_eq!(caps.read(0x100), None);
        assert_eq!(caps.read(0x140), None);
        assert!(!caps.blocks_write(0x144));
    }

    #[test]
    fn a_hidden_capability_is_unlinked() {
        let caps = probe(&[
            (0x100, header(1, 0x140)),
            (0x140, header(EXT_CAP_ID_REBAR, 0x160)),
            (0x160, header(0x18, 0)),
        ]);
        assert_eq!(caps.read(0x100), Some(header(1, 0x160)));
        assert_eq!(caps.read(0x160), Some(header(0x18, 0)));
        assert_eq!(caps.read(0x140), Some(0));
        assert_eq!(caps.read(0x15c), Some(0));
        assert!(caps.blocks_write(0x148));
        assert!(!caps.blocks_write(0x164));
    }

    #[test]
    fn a_hidden_first_capability_leaves_a_null_header() {
        let caps = probe(&[
            (0x100, header(EXT_CAP_ID_SRIOV, 0x200)),
            (0x200, header(1, 0x180)),
            (0x180, header(EXT_CAP_ID_ARI, 0)),
        ]);
        assert_eq!(caps.read(0x100), Some(0x200 << 20));
        assert_eq!(caps.read(0x200), Some(header(1, 0)));
        assert_eq!(caps.read(0x104), Some(0), "SR-IOV body hidden");
        assert_eq!(caps.read(0x184), Some(0), "ARI hidden up to 0x200");
        assert_eq!(caps.read(0x204), None);

        let only = probe(&[(0x100, header(EXT_CAP_ID_REBAR, 0))]);
        assert_eq!(only.read(0x100), Some(0), "no extended capabilities left");
    }

    #[test]
    fn loops_and_short_spaces_are_survived() {
        let looped = probe(&[
            (0x100, header(EXT_CAP_ID_REBAR, 0x140)),
            (0x140, header(1, 0x100)),
        ]);
        assert_eq!(looped.read(0x140), Some(header(1, 0)));
        let short = ExtCaps::probe("test", |_| header(EXT_CAP_ID_REBAR, 0), 256);
        assert_eq!(short.read(0x100), None);
    }
}
