//! The virtualised BAR registers: BARs 0-5 and the ROM BAR as [`BarShadow`]s, with sizes
//! from the VFIO regions, type bits from the device's own registers, and addresses that
//! live only here (the device's real BARs keep the host's addresses).

use crate::pci::config::{bar_offset, merge_dword, parse_bar_register, BarHalf, BarShadow};
use crate::pci::{Bar, BarKind, ROM_BAR_INDEX};

/// The shadow of the BAR registers (0x10-0x27) and the ROM BAR (0x30). Index 6 is the ROM;
/// a 64-bit BAR sits at its lower index.
#[derive(Debug, Default)]
pub struct BarShadows {
    bars: [Option<BarShadow>; 7],
}

/// A BAR size VFIO reported, made into one a BAR register can express.
fn shadow(
    name: &str,
    index: u8,
    kind: BarKind,
    prefetchable: bool,
    size: u64,
) -> Option<BarShadow> {
    let rounded = size.checked_next_power_of_two()?;
    if rounded != size {
        log::warn!("{name}: BAR {index} size {size:#x} is not a power of two; using {rounded:#x}");
    }
    match BarShadow::new(kind, prefetchable, rounded) {
        Ok(bar) => Some(bar),
        Err(e) => {
            log::warn!("{name}: BAR {index} is not usable and stays hidden: {e}");
            None
        }
    }
}

impl BarShadows {
    /// `reg(i)` is the device's BAR register `i` (for the type bits), `size(i)` the size of
    /// VFIO region `i` (0-5 the BARs, 6 the ROM; 0 = not implemented).
    pub fn probe(name: &str, reg: impl Fn(u8) -> u32, size: impl Fn(u8) -> u64) -> Self {
        let mut shadows = Self::default();
        let mut index = 0u8;
        while index < 6 {
            let len = size(index);
            let (mut kind, prefetchable) = parse_bar_register(reg(index));
            if kind == BarKind::Mem64 && index == 5 {
                log::warn!("{name}: BAR 5 claims to be 64-bit; treating it as 32-bit");
                kind = BarKind::Mem32;
            }
            if len != 0 {
                shadows.bars[usize::from(index)] = shadow(name, index, kind, prefetchable, len);
            }
            index += if kind == BarKind::Mem64 { 2 } else { 1 };
        }
        let rom = size(ROM_BAR_INDEX);
        if rom != 0 {
            shadows.bars[usize::from(ROM_BAR_INDEX)] =
                shadow(name, ROM_BAR_INDEX, BarKind::Rom, false, rom);
        }
        shadows
    }

    /// Where the host has each BAR, from the device's own registers `reg(i)` (index 6:
    /// the ROM BAR): (index, address) for those with an address.
    pub fn host_addresses(&self, reg: impl Fn(u8) -> u32) -> Vec<(u8, u64)> {
        (0..=ROM_BAR_INDEX)
            .filter_map(|i| {
                let bar = self.get(i)?;
                let low = reg(i);
                let addr = match bar.kind() {
                    BarKind::Io => u64::from(low & !0x3),
                    BarKind::Mem32 => u64::from(low & !0xf),
                    BarKind::Mem64 => u64::from(low & !0xf) | u64::from(reg(i + 1)) << 32,
                    BarKind::Rom => u64::from(low & !0x7ff),
                };
                (addr != 0).then_some((i, addr))
            })
            .collect()
    }

    /// The BAR at `index` (its lower index for a 64-bit one; 6 for the ROM).
    pub fn get(&self, index: u8) -> Option<&BarShadow> {
        self.bars.get(usize::from(index))?.as_ref()
    }

    /// Which shadow the register at `offset` belongs to, and which half of it.
    fn locate(&self, offset: u16) -> Option<(usize, BarHalf)> {
        let slot = (0..=ROM_BAR_INDEX).find(|&i| bar_offset(i) == offset)?;
        let slot = usize::from(slot);
        if self.bars[slot].is_some() {
            return Some((slot, BarHalf::Lower));
        }
        if slot == usize::from(ROM_BAR_INDEX) {
            return None;
        }
        match slot.checked_sub(1).and_then(|lo| self.bars[lo]) {
            Some(bar) if bar.kind() == BarKind::Mem64 => Some((slot - 1, BarHalf::Upper)),
            _ => None,
        }
    }

    /// Read the BAR register at `offset`; unimplemented BARs read 0.
    pub fn read(&self, offset: u16) -> u32 {
        self.locate(offset)
            .and_then(|(i, half)| Some(self.bars[i]?.read(half)))
            .unwrap_or(0)
    }

    /// A guest write of `data` at byte `shift` of the BAR register at `offset`.
    pub fn write(&mut self, offset: u16, shift: u16, data: &[u8]) {
        if let Some((i, half)) = self.locate(offset) {
            if let Some(bar) = self.bars[i].as_mut() {
                let value = merge_dword(bar.read(half), usize::from(shift), data);
                bar.write(half, value);
            }
        }
    }

    /// Set BAR `index` to `addr` as firmware would. False when there is no such BAR or the
    /// address does not suit it.
    pub fn assign(&mut self, index: u8, addr: u64) -> bool {
        let Some(bar) = self
            .bars
            .get_mut(usize::from(index))
            .and_then(Option::as_mut)
        else {
            return false;
        };
        let fits = match bar.kind() {
            BarKind::Mem64 => true,
            _ => addr
                .checked_add(bar.size())
                .is_some_and(|end| end <= 1 << 32),
        };
        if !fits || addr & (bar.size() - 1) != 0 {
            return false;
        }
        bar.set_addr(addr);
        true
    }

    /// Every BAR back to its reset state (after a function reset): unassigned.
    pub fn reset(&mut self) {
        for bar in self.bars.iter_mut().flatten() {
            bar.reset();
        }
    }

    pub fn bars(&self, command: u16) -> Vec<Bar> {
        (0..=ROM_BAR_INDEX)
            .filter_map(|i| Some(self.get(i)?.to_bar(i, command)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pci::config::{COMMAND_IO, COMMAND_MEMORY};

    /// BAR0 mem32 16K, BAR1 I/O 256, BAR2/3 mem64 prefetchable 1M, ROM 64K.
    fn shadows() -> BarShadows {
        let regs = [0xfe00_0000, 0xe001, 0xd000_000c, 0x1, 0, 0];
        let sizes = [0x4000, 0x100, 0x10_0000, 0, 0, 0, 0x1_0000];
        BarShadows::probe("test", |i| regs[i as usize], |i| sizes[i as usize])
    }

    #[test]
    fn sizing_reads_return_the_size_mask_and_type_bits() {
        let mut s = shadows();
        for off in [0x10, 0x14, 0x18, 0x1c, 0x20, 0x30] {
            s.write(off, 0, &[0xff; 4]);
        }
        assert_eq!(s.read(0x10), 0xffff_c000);
        assert_eq!(s.read(0x14), 0xffff_ff01);
        assert_eq!(s.read(0x18), 0xfff0_000c);
        assert_eq!(s.read(0x1c), 0xffff_ffff);
        assert_eq!(s.read(0x20), 0);
        assert_eq!(s.read(0x30), 0xffff_0001);
    }

    #[test]
    fn writes_move_bars_and_partial_writes_merge() {
        let mut s = shadows();
        s.write(0x18, 0, &0x8000_0000u32.to_le_bytes());
        s.write(0x1c, 0, &0x0000_0004u32.to_le_bytes());
        assert_eq!(s.get(2).unwrap().addr(), 0x4_8000_0000);
        s.write(0x10, 2, &[0x00, 0xc0]);
        assert_eq!(s.read(0x10), 0xc000_0000);
        s.write(0x10, 1, &[0x12]);
        assert_eq!(s.read(0x10), 0xc000_0000, "bits below the size stay 0");
    }

    #[test]
    fn odd_sizes_are_rounded_and_impossible_bars_hidden() {
        let regs = [0, 0, 0, 0, 0, 0x4];
        let sizes = [0x3000, 0x1_0000_0000, 0, 0, 0, 0x1000, 0];
        let s = BarShadows::probe("test", |i| regs[i as usize], |i| sizes[i as usize]);
        assert_eq!(s.get(0).unwrap().size(), 0x4000);
        assert!(s.get(1).is_none(), "a 4 GiB 32-bit BAR cannot exist");
        assert_eq!(s.get(5).unwrap().kind(), BarKind::Mem32);
    }

    #[test]
    fn decoding_follows_the_command_register_and_the_rom_enable() {
        let mut s = shadows();
        assert!(s.assign(0, 0xc000_0000));
        assert!(s.assign(1, 0x1000));
        assert!(s.assign(2, 0x10_0000_0000));
        assert!(s.assign(6, 0xc010_0000));
        assert!(!s.assign(3, 0x1000), "upper half of a 64-bit BAR");
        assert!(!s.assign(0, 0xc000_1000), "misaligned");
        let decoding = |s: &BarShadows, cmd| {
            s.bars(cmd)
                .iter()
                .filter(|b| b.decoding)
                .map(|b| b.index)
                .collect::<Vec<_>>()
        };
        assert_eq!(decoding(&s, 0), Vec::<u8>::new());
        assert_eq!(decoding(&s, COMMAND_IO), vec![1]);
        assert_eq!(decoding(&s, COMMAND_MEMORY), vec![0, 2]);
        s.write(0x30, 0, &[0x01]);
        assert_eq!(decoding(&s, COMMAND_MEMORY | COMMAND_IO), vec![0, 1, 2, 6]);
        assert_eq!(s.read(0x30), 0xc010_0001);
    }
}
