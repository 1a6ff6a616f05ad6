//! The e820 memory map the guest kernel reads from the zero page.

use crate::layout::{
    ram_regions, ACPI_AREA_SIZE, ACPI_AREA_START, HIMEM_START, LOW_RAM_END, PCI_ECAM_SIZE,
    PCI_ECAM_START,
};

pub const E820_RAM: u32 = 1;
pub const E820_RESERVED: u32 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct E820Entry {
    pub addr: u64,
    pub size: u64,
    pub kind: u32,
}

/// RAM below 640 KiB, the reserved BIOS area holding the ACPI tables, RAM from 1 MiB split
/// around the MMIO hole, and the ECAM window (Linux only trusts MCFG when it is reserved).
pub fn memory_map(ram_size: u64) -> Vec<E820Entry> {
    let entry = |addr, size, kind| E820Entry { addr, size, kind };
    let mut map = vec![
        entry(0, LOW_RAM_END, E820_RAM),
        entry(ACPI_AREA_START, ACPI_AREA_SIZE, E820_RESERVED),
    ];
    for (start, len) in ram_regions(ram_size) {
        let start_above_bios = start.max(HIMEM_START);
        let end = start + len;
        if end > start_above_bios {
            map.push(entry(start_above_bios, end - start_above_bios, E820_RAM));
        }
    }
    map.push(entry(PCI_ECAM_START, PCI_ECAM_SIZE, E820_RESERVED));
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ram_total(map: &[E820Entry]) -> u64 {
        map.iter()
            .filter(|e| e.kind == E820_RAM)
            .map(|e| e.size)
            .sum()
    }

    #[test]
    fn small_guest_map() {
        let map = memory_map(512 << 20);
        assert_eq!(
            map[2],
            E820Entry {
                addr: HIMEM_START,
                size: (512 << 20) - HIMEM_START,
                kind: E820_RAM
            }
        );
        assert_eq!(ram_total(&map), (512 << 20) - HIMEM_START + LOW_RAM_END);
    }

    #[test]
    fn large_guest_map_resumes_at_4g() {
        let map = memory_map(6 << 30);
        let high = map.iter().find(|e| e.addr == 4 << 30).unwrap();
        assert_eq!(high.size, 3 << 30);
        assert_eq!(ram_total(&map), (6 << 30) - HIMEM_START + LOW_RAM_END);
    }

    #[test]
    fn entries_do_not_overlap() {
        let mut map = memory_map(8 << 30);
        map.sort_by_key(|e| e.addr);
        for pair in map.windows(2) {
            assert!(pair[0].addr + pair[0].size <= pair[1].addr, "{pair:?}");
        }
    }
}
