//! Boot vCPU state for the Linux 64-bit boot protocol: a flat GDT, identity-mapped page
//! tables for the first 4 GiB, long mode, and registers pointing at the kernel entry with the
//! zero page in RSI. Application processors stay in reset and are started by the guest with
//! INIT/SIPI through the in-kernel LAPIC.

use kvm_bindings::{kvm_fpu, kvm_regs, kvm_segment, kvm_sregs};
use vm_memory::{Bytes, GuestAddress, GuestMemoryError, GuestMemoryMmap};

use crate::layout::{
    BOOT_GDT_START, BOOT_IDT_START, BOOT_STACK_POINTER, PDE_START, PDPTE_START, PML4_START,
    ZERO_PAGE_START,
};

const X86_CR0_PE: u64 = 0x1;
const X86_CR0_ET: u64 = 0x10;
const X86_CR0_PG: u64 = 0x8000_0000;
const X86_CR4_PAE: u64 = 0x20;
const EFER_LME: u64 = 0x100;
const EFER_LMA: u64 = 0x400;

/// Page directories mapping 4 GiB with 2 MiB pages.
const PAGE_DIRECTORIES: u64 = 4;

/// A GDT entry from its flags (high nibble of byte 6 plus the access byte), base and limit.
pub const fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    ((base as u64 & 0xff00_0000) << (56 - 24))
        | ((flags as u64 & 0x0000_f0ff) << 40)
        | ((limit as u64 & 0x000f_0000) << (48 - 16))
        | ((base as u64 & 0x00ff_ffff) << 16)
        | (limit as u64 & 0x0000_ffff)
}

/// The KVM segment a GDT entry at `table_index` describes.
pub fn segment_from_gdt(entry: u64, table_index: u8) -> kvm_segment {
    let field = |shift: u32, mask: u64| ((entry >> shift) & mask) as u8;
    let base = ((entry >> 16) & 0x00ff_ffff) | ((entry >> 32) & 0xff00_0000);
    let limit = (entry & 0xffff) | ((entry >> 32) & 0x000f_0000);
    kvm_segment {
        base,
        limit: limit as u32,
        selector: u16::from(table_index) * 8,
        type_: field(40, 0xf),
        s: field(44, 0x1),
        dpl: field(45, 0x3),
        present: field(47, 0x1),
        avl: field(52, 0x1),
        l: field(53, 0x1),
        db: field(54, 0x1),
        g: field(55, 0x1),
        unusable: u8::from(field(47, 0x1) == 0),
        padding: 0,
    }
}

/// Null, 64-bit code, data and TSS descriptors.
pub const BOOT_GDT: [u64; 4] = [
    gdt_entry(0, 0, 0),
    gdt_entry(0xa09b, 0, 0xfffff),
    gdt_entry(0xc093, 0, 0xfffff),
    gdt_entry(0x808b, 0, 0xfffff),
];

/// Write the GDT, an empty IDT and the identity page tables, and set long mode in `sregs`.
pub fn setup_sregs(mem: &GuestMemoryMmap, sregs: &mut kvm_sregs) -> Result<(), GuestMemoryError> {
    for (i, entry) in BOOT_GDT.iter().enumerate() {
        mem.write_obj(*entry, GuestAddress(BOOT_GDT_START + (i as u64) * 8))?;
    }
    mem.write_obj(0u64, GuestAddress(BOOT_IDT_START))?;

    let code = segment_from_gdt(BOOT_GDT[1], 1);
    let data = segment_from_gdt(BOOT_GDT[2], 2);
    let tss = segment_from_gdt(BOOT_GDT[3], 3);
    sregs.gdt.base = BOOT_GDT_START;
    sregs.gdt.limit = (BOOT_GDT.len() * 8 - 1) as u16;
    sregs.idt.base = BOOT_IDT_START;
    sregs.idt.limit = 7;
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = tss;

    setup_page_tables(mem)?;
    sregs.cr3 = PML4_START;
    sregs.cr4 |= X86_CR4_PAE;
    sregs.cr0 |= X86_CR0_PE | X86_CR0_ET | X86_CR0_PG;
    sregs.efer |= EFER_LME | EFER_LMA;
    Ok(())
}

/// Identity-map the first 4 GiB with 2 MiB pages: the kernel, zero page, command line and
/// initramfs all live there.
fn setup_page_tables(mem: &GuestMemoryMmap) -> Result<(), GuestMemoryError> {
    const PRESENT_RW: u64 = 0x3;
    const HUGE: u64 = 0x80;
    mem.write_obj(PDPTE_START | PRESENT_RW, GuestAddress(PML4_START))?;
    for dir in 0..PAGE_DIRECTORIES {
        let pd = PDE_START + dir * 0x1000;
        mem.write_obj(pd | PRESENT_RW, GuestAddress(PDPTE_START + dir * 8))?;
        for i in 0..512u64 {
            let addr = ((dir << 9) + i) << 21;
            mem.write_obj(addr | PRESENT_RW | HUGE, GuestAddress(pd + i * 8))?;
        }
    }
    Ok(())
}

/// General registers for the boot vCPU: entry point, stack, zero page in RSI.
pub fn boot_regs(entry: u64) -> kvm_regs {
    kvm_regs {
        rflags: 0x2,
        rip: entry,
        rsp: BOOT_STACK_POINTER,
        rbp: BOOT_STACK_POINTER,
        rsi: ZERO_PAGE_START,
        ..Default::default()
    }
}

/// x87/SSE control words as after FNINIT / reset.
pub fn boot_fpu() -> kvm_fpu {
    kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestAddress;

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap()
    }

    #[test]
    fn gdt_entries_decode_to_flat_segments() {
        let code = segment_from_gdt(BOOT_GDT[1], 1);
        assert_eq!((code.selector, code.l, code.db, code.present), (8, 1, 0, 1));
        assert_eq!(
            (code.type_, code.s, code.g, code.limit),
            (0xb, 1, 1, 0xfffff)
        );
        let data = segment_from_gdt(BOOT_GDT[2], 2);
        assert_eq!((data.selector, data.type_, data.db, data.l), (16, 3, 1, 0));
        let null = segment_from_gdt(BOOT_GDT[0], 0);
        assert_eq!(null.unusable, 1);
    }

    #[test]
    fn sregs_enable_long_mode_with_identity_map() {
        let mem = mem();
        let mut sregs = kvm_sregs::default();
        setup_sregs(&mem, &mut sregs).unwrap();
        assert_eq!(sregs.cr3, PML4_START);
        assert_ne!(sregs.cr0 & X86_CR0_PG, 0);
        assert_ne!(sregs.efer & EFER_LMA, 0);
        let pml4: u64 = mem.read_obj(GuestAddress(PML4_START)).unwrap();
        assert_eq!(pml4 & !0xfff, PDPTE_START);
        // The last 2 MiB page below 4 GiB maps itself.
        let last: u64 = mem
            .read_obj(GuestAddress(PDE_START + 3 * 0x1000 + 511 * 8))
            .unwrap();
        assert_eq!(last & !0xfff, (4 << 30) - (2 << 20));
        assert_eq!(last & 0x83, 0x83);
    }

    #[test]
    fn boot_regs_point_at_entry_and_zero_page() {
        let regs = boot_regs(0x100_0200);
        assert_eq!(
            (regs.rip, regs.rsi, regs.rflags),
            (0x100_0200, ZERO_PAGE_START, 2)
        );
    }
}
