//! The capability-list walk over the device's config space, and config-write helpers.

use crate::pci::config::{
    CAPABILITIES_START, CAPABILITY_POINTER, COMMAND, LEGACY_CONFIG_SIZE, STATUS_CAPABILITIES_LIST,
};

/// A capability in the standard list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capability {
    pub id: u8,
    pub offset: u16,
}

/// Walk the standard capability list. `read` returns the config dword at a 4-aligned offset.
/// Stops at a null pointer, a pointer into the header or past 256, or a loop.
pub fn capabilities(mut read: impl FnMut(u16) -> u32) -> Vec<Capability> {
    let mut caps = Vec::new();
    let status = (read(COMMAND) >> 16) as u16;
    if status & STATUS_CAPABILITIES_LIST == 0 {
        return caps;
    }
    let mut ptr = (read(CAPABILITY_POINTER) & 0xfc) as u16;
    // At most (256 - 64) / 4 capabilities fit; more means a loop.
    while (CAPABILITIES_START..LEGACY_CONFIG_SIZE).contains(&ptr) && caps.len() < 48 {
        let header = read(ptr);
        caps.push(Capability {
            id: header as u8,
            offset: ptr,
        });
        ptr = ((header >> 8) & 0xfc) as u16;
    }
    caps
}

/// Which bytes of a dword a write at byte `shift` of `len` bytes touches, as a mask.
pub fn byte_mask(shift: u16, len: usize) -> u32 {
    (0..len)
        .map(|i| usize::from(shift) + i)
        .filter(|&byte| byte < 4)
        .fold(0, |mask, byte| mask | 0xff << (8 * byte))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pci::config::{CAP_ID_MSI, CAP_ID_MSIX};

    fn space(regs: &[(u16, u32)]) -> impl FnMut(u16) -> u32 + '_ {
        move |off| {
            regs.iter()
                .find(|(o, _)| *o == off)
                .map(|(_, v)| *v)
                .unwrap_or(0)
        }
    }

    const CAPS_ON: u32 = (STATUS_CAPABILITIES_LIST as u32) << 16;

    #[test]
    fn walks_the_list() {
        let cfg = [
            (COMMAND, CAPS_ON),
            (CAPABILITY_POINTER, 0x40),
            (0x40, 0x0000_5001),
            (0x50, 0x0000_7005),
            (0x70, 0x0000_0011),
        ];
        let caps = capabilities(space(&cfg));
        let ids: Vec<_> = caps.iter().map(|c| (c.id, c.offset)).collect();
        assert_eq!(
            ids,
            vec![(1, 0x40), (CAP_ID_MSI, 0x50), (CAP_ID_MSIX, 0x70)]
        );
    }

    #[test]
    fn no_capabilities_bit_no_list_and_loops_stop() {
        assert!(capabilities(space(&[(CAPABILITY_POINTER, 0x40)])).is_empty());
        let looped = [
            (COMMAND, CAPS_ON),
            (CAPABILITY_POINTER, 0x40),
            (0x40, 0x0000_4001),
        ];
        assert_eq!(capabilities(space(&looped)).len(), 48);
    }

    #[test]
    fn byte_masks() {
        assert_eq!(byte_mask(2, 2), 0xffff_0000);
        assert_eq!(byte_mask(0, 4), 0xffff_ffff);
        assert_eq!(byte_mask(1, 1), 0x0000_ff00);
    }
}
