//! The guest's physical address map and fixed I/O ports.
//!
//! RAM starts at 0 and is split around a 1 GiB hole below 4 GiB that holds the 32-bit
//! PCI BAR window, the PCIe ECAM, the IOAPIC and the LAPIC. RAM that does not fit below the
//! hole continues at 4 GiB; the 64-bit BAR window starts after the end of RAM.

/// Zero page (struct boot_params) handed to the kernel in RSI.
pub const ZERO_PAGE_START: u64 = 0x7000;
/// Kernel command line.
pub const CMDLINE_START: u64 = 0x2_0000;
/// Largest command line we pass (the kernel's own COMMAND_LINE_SIZE on x86_64).
pub const CMDLINE_MAX_SIZE: usize = 2048;
/// GDT and IDT used for the 64-bit entry.
pub const BOOT_GDT_START: u64 = 0x500;
pub const BOOT_IDT_START: u64 = 0x520;
/// Identity-mapping page tables for the first 4 GiB (PML4, PDPT, 4 page directories).
pub const PML4_START: u64 = 0x9000;
pub const PDPTE_START: u64 = 0xa000;
pub const PDE_START: u64 = 0xb000;
/// Initial stack pointer for the boot vCPU.
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
/// End of conventional low memory (the EBDA/VGA/BIOS area above is reserved).
pub const LOW_RAM_END: u64 = 0xa_0000;
/// The BIOS area Linux scans for the RSDP; our ACPI tables live here.
pub const ACPI_AREA_START: u64 = 0xe_0000;
pub const ACPI_AREA_SIZE: u64 = 0x2_0000;
/// The x86 reset vector (F000:FFF0). There is no firmware; a three-instruction stub here
/// turns Linux's "BIOS" reboot method into an i8042 reset.
pub const RESET_VECTOR: u64 = 0xf_fff0;
/// mov al, 0xfe; out 0x64, al; hlt; jmp back to hlt.
pub const RESET_VECTOR_STUB: [u8; 7] = [0xb0, 0xfe, 0xe6, 0x64, 0xf4, 0xeb, 0xfd];
/// Where the kernel is loaded (the bzImage protected-mode part and ELF vmlinux alike).
pub const HIMEM_START: u64 = 0x10_0000;

/// Start of the 32-bit MMIO hole: RAM stops here and resumes at 4 GiB.
pub const MMIO_HOLE_START: u64 = 0xc000_0000;
pub const FOUR_GIB: u64 = 1 << 32;
/// Guest-physical address bits we never exceed: 4-level EPT/NPT cover 48 bits.
pub const MAX_GUEST_PHYS_BITS: u8 = 48;
/// 32-bit PCI BAR window (for BARs that must stay below 4 GiB): all of the hole up to the
/// ECAM, 976 MiB, so that it holds the addresses hosts usually give 32-bit BARs (a
/// passed-through BAR keeps its host address where it is free: see the BAR allocator).
pub const PCI_MMIO32_START: u64 = MMIO_HOLE_START;
pub const PCI_MMIO32_SIZE: u64 = PCI_ECAM_START - PCI_MMIO32_START;
/// PCIe ECAM: 1 MiB per bus, room for buses 0..=15 (the guest has one root bus, and the
/// tables claim only it: `acpi::PciHostConfig::new`),
/// at the top of the hole below the IOAPIC.
pub const PCI_ECAM_START: u64 = 0xfd00_0000;
pub const PCI_ECAM_SIZE: u64 = 0x100_0000;
/// In-kernel IOAPIC and LAPIC (KVM's fixed defaults).
pub const IOAPIC_START: u64 = 0xfec0_0000;
pub const APIC_START: u64 = 0xfee0_0000;
/// IOAPIC pins KVM's in-kernel IOAPIC provides.
pub const IOAPIC_PINS: u32 = 24;

/// The 64-bit BAR window never starts below this, even for small guests, so that guest RAM
/// can grow without moving BARs.
pub const PCI_MMIO64_MIN_START: u64 = 1 << 36; // 64 GiB

/// Legacy I/O ports and their IRQs.
pub const COM1_PORT: u16 = 0x3f8;
pub const COM1_IRQ: u32 = 4;
pub const I8042_DATA_PORT: u16 = 0x60;
pub const I8042_CMD_PORT: u16 = 0x64;
/// ACPI (hardware-reduced) sleep control/status and reset registers, one byte each.
pub const ACPI_SLEEP_CONTROL_PORT: u16 = 0x600;
pub const ACPI_SLEEP_STATUS_PORT: u16 = 0x601;
pub const ACPI_RESET_PORT: u16 = 0x602;
/// Value the guest writes to the reset register to reset the machine.
pub const ACPI_RESET_VALUE: u8 = 0x1;
/// SLP_TYP the DSDT's \_S5 object announces for soft-off.
pub const ACPI_S5_SLEEP_TYPE: u8 = 5;
/// IOAPIC pin of the ACPI power button's Generic Event Device (an ISA IRQ nothing else
/// uses; edge-triggered, active-high like the other ISA lines).
pub const POWER_BUTTON_GSI: u32 = 5;
/// Guest marker port: the first byte a guest writes here is stamped on the boot timeline
/// (a lab guest's init does it with `dd of=/dev/port`).
pub const GUEST_MARKER_PORT: u16 = 0x4f0;
/// Guest exit port (like QEMU's isa-debug-exit, but the status is the byte itself): a byte
/// written here ends the VM with that exit status (`VmExit::GuestStatus`), and
/// `zhitong run` exits with it. A guest's init does it with
/// `printf '\003' | dd of=/dev/port bs=1 seek=$((0x4f4)) count=1` (see resources/guest-exit.sh).
pub const GUEST_EXIT_PORT: u16 = 0x4f4;
/// PCI configuration mechanism #1.
pub const PCI_CONFIG_ADDRESS_PORT: u16 = 0xcf8;
pub const PCI_CONFIG_DATA_PORT: u16 = 0xcfc;

/// Largest vCPU count the platform supports (APIC IDs fit the xAPIC's 8 bits).
pub const MAX_VCPUS: u8 = 254;
/// Smallest guest RAM we accept: enough for a kernel, its page tables and an initramfs.
pub const MIN_MEMORY: u64 = 64 << 20;
/// Largest guest RAM the platform can address: what 48-bit guest-physical addresses hold,
/// less the MMIO hole RAM skips below 4 GiB (256T - 1G). Larger sizes would also overflow
/// the address arithmetic of the memory map.
pub const MAX_MEMORY: u64 = (1 << MAX_GUEST_PHYS_BITS) - (FOUR_GIB - MMIO_HOLE_START);

/// Guest RAM regions (start, length) for `size` bytes of RAM, split around the MMIO hole.
/// Meaningful up to [`MAX_MEMORY`], which configurations are checked against.
pub fn ram_regions(size: u64) -> Vec<(u64, u64)> {
    if size <= MMIO_HOLE_START {
        vec![(0, size)]
    } else {
        vec![(0, MMIO_HOLE_START), (FOUR_GIB, size - MMIO_HOLE_START)]
    }
}

/// First guest-physical address after the last byte of RAM (`u64::MAX` when a size far past
/// [`MAX_MEMORY`] would not fit the address space).
pub fn ram_end(size: u64) -> u64 {
    ram_regions(size)
        .last()
        .map(|(start, len)| start.saturating_add(*len))
        .unwrap_or(0)
}

/// The 64-bit PCI BAR window for a guest with `ram_size` bytes of RAM and `phys_bits` bits of
/// guest-physical address space: from the first 1 GiB boundary past RAM (at least 64 GiB)
/// to the top of the address space. `None` when nothing is left.
pub fn pci_mmio64_window(ram_size: u64, phys_bits: u8) -> Option<(u64, u64)> {
    let top = 1u64.checked_shl(u32::from(phys_bits))?;
    let start = ram_end(ram_size)
        .checked_next_multiple_of(1 << 30)?
        .max(PCI_MMIO64_MIN_START);
    (top > start).then(|| (start, top - start))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_guest_is_one_region_below_the_hole() {
        assert_eq!(ram_regions(512 << 20), vec![(0, 512 << 20)]);
        assert_eq!(ram_end(512 << 20), 512 << 20);
    }

    #[test]
    fn large_guest_is_split_around_the_hole() {
        let regions = ram_regions(4 << 30);
        assert_eq!(regions, vec![(0, 3 << 30), (4 << 30, 1 << 30)]);
        assert_eq!(ram_end(4 << 30), 5 << 30);
        assert_eq!(regions.iter().map(|r| r.1).sum::<u64>(), 4 << 30);
    }

    #[test]
    fn exactly_the_hole_start_is_not_split() {
        assert_eq!(ram_regions(MMIO_HOLE_START), vec![(0, MMIO_HOLE_START)]);
    }

    #[test]
    fn mmio64_window_fits_large_bars() {
        let (start, len) = pci_mmio64_window(4 << 30, 46).unwrap();
        assert_eq!(start, 64 << 30);
        assert_eq!(start + len, 1 << 46);
        assert!(len >= 128 << 30);
        let (start, _) = pci_mmio64_window(100 << 30, 46).unwrap();
        assert_eq!(start, 101 << 30);
        assert!(pci_mmio64_window(4 << 30, 36).is_none());
    }

    #[test]
    fn the_largest_guest_fills_48_bits_and_larger_sizes_do_not_overflow() {
        assert_eq!(MAX_MEMORY, (256 << 40) - (1 << 30));
        assert_eq!(ram_end(MAX_MEMORY), 1 << 48);
        assert_eq!(pci_mmio64_window(MAX_MEMORY, 48), None);
        for size in [u64::MAX, !0xfff] {
            assert_eq!(ram_end(size), u64::MAX);
        }
        for size in [u64::MAX, u64::MAX - (1 << 30), 16_777_215 << 40] {
            assert_eq!(pci_mmio64_window(size, 48), None);
        }
    }

    #[test]
    fn hole_contents_are_ordered_and_inside_the_hole() {
        const {
            assert!(PCI_MMIO32_START + PCI_MMIO32_SIZE <= PCI_ECAM_START);
            assert!(PCI_ECAM_START + PCI_ECAM_SIZE <= IOAPIC_START);
            assert!(IOAPIC_START < APIC_START && APIC_START < FOUR_GIB);
        }
    }
}
