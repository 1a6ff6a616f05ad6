//! GPU-shaped variants of the mock device: the standard capabilities with a vendor's IDs,
//! VGA class and BAR layout. Regions hold at most 16 MiB of data (reads beyond it return
//! all-ones) and only regions up to 1 GiB are mmappable, so 256 GiB BARs cost nothing.

use crate::pci::config::bar_offset;
use crate::pci::BarKind;

use super::{region, MockBackend, MSIX_CAP, MSIX_VECTORS};

/// The BAR 0 offset of the NVIDIA mock's config mirror.
pub const NVIDIA_MIRROR: u64 = 0x8_8000;
/// Where the NVIDIA mock's MSI-X table and PBA are in BAR 0 (as on Turing and later).
pub const NVIDIA_MSIX_TABLE: u64 = 0xb9_0000;
pub const NVIDIA_MSIX_PBA: u64 = 0xba_0000;

const MAX_DATA: u64 = 16 << 20;

/// (index, kind, prefetchable, size) of one BAR.
type BarSpec = (u8, BarKind, bool, u64);

impl MockBackend {
    /// NVIDIA 10de:2204 (an Ampere GA102), VGA class: BAR 0 32-bit 16 MiB with the config
    /// mirror at 0x88000 and the MSI-X table, BAR 1 64-bit prefetchable `vram` bytes, BAR 3
    /// 64-bit prefetchable 32 MiB, BAR 5 I/O 128 bytes (the window onto BAR 0).
    pub fn nvidia_gpu(vram: u64) -> Self {
        let bars = [
            (0, BarKind::Mem32, false, 16 << 20),
            (1, BarKind::Mem64, true, vram),
            (3, BarKind::Mem64, true, 32 << 20),
            (5, BarKind::Io, false, 0x80),
        ];
        let mock = Self::gpu(0x2204_10de, &bars, 0, (NVIDIA_MSIX_TABLE, NVIDIA_MSIX_PBA));
        {
            let mut s = mock.state();
            let config = s.config().to_vec();
            let at = NVIDIA_MIRROR as usize;
            s.regions.get_mut(&0).unwrap().data[at..at + 4096].copy_from_slice(&config);
        }
        mock
    }

    /// AMD 1002:73bf (an RDNA2 Navi 21), VGA class: BAR 0 64-bit prefetchable `vram`
    /// bytes, BAR 2 64-bit prefetchable 2 MiB (doorbells), BAR 4 I/O 256 bytes, BAR 5 32-bit
    /// 1 MiB (registers, with the MSI-X table).
    pub fn amd_gpu(vram: u64) -> Self {
        let bars = [
            (0, BarKind::Mem64, true, vram),
            (2, BarKind::Mem64, true, 2 << 20),
            (4, BarKind::Io, false, 0x100),
            (5, BarKind::Mem32, false, 1 << 20),
        ];
        Self::gpu(0x73bf_1002, &bars, 5, (0x4_2000, 0x4_3000))
    }

    /// The standard device with `ids` (device << 16 | vendor), VGA class, `bars` instead of
    /// its own and the MSI-X table and PBA at `msix` in BAR `msix_bar`.
    fn gpu(ids: u32, bars: &[BarSpec], msix_bar: u8, msix: (u64, u64)) -> Self {
        let mock = Self::standard();
        {
            let mut s = mock.state();
            for index in 0..6 {
                s.regions.insert(index, region(0, false, false));
                s.set_config_u32(bar_offset(index as u8), 0);
            }
            for &(index, kind, prefetchable, size) in bars {
                let mut r = region(size.min(MAX_DATA), true, size <= 1 << 30);
                r.info.size = size;
                s.regions.insert(u32::from(index), r);
                let bits = match kind {
                    BarKind::Io => 0x1,
                    BarKind::Mem64 => 0x4,
                    _ => 0x0,
                } | if prefetchable { 0x8 } else { 0 };
                s.set_config_u32(bar_offset(index), bits);
            }
            s.set_config_u32(0x00, ids);
            s.set_config_u32(0x08, 0x0300_00a1);
            let (table, pba) = msix;
            s.set_config_u32(MSIX_CAP + 4, table as u32 | u32::from(msix_bar));
            s.set_config_u32(MSIX_CAP + 8, pba as u32 | u32::from(msix_bar));
            debug_assert!(table + 16 * MSIX_VECTORS as u64 <= pba);
        }
        mock
    }

    /// Put the host's address `addr` into BAR `index`'s register(s), keeping the type bits.
    pub fn set_host_bar(&self, index: u8, addr: u64) {
        let mut s = self.state();
        let low = s.config_u32(bar_offset(index));
        s.set_config_u32(bar_offset(index), low & 0xf | addr as u32 & !0xf);
        if low & 0x7 == 0x4 {
            s.set_config_u32(bar_offset(index + 1), (addr >> 32) as u32);
        }
    }
}
