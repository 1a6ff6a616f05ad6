//! MADT ("APIC"): one local APIC per vCPU, KVM's in-kernel IOAPIC and the ISA IRQ0 override.

use acpi_tables::{
    madt::{EnabledStatus, IoApic, ProcessorLocalApic},
    sdt::Sdt,
    Aml,
};

use super::{OEM_ID, OEM_REVISION, OEM_TABLE_ID};
use crate::layout::{APIC_START, IOAPIC_START};

/// ACPI 6.2+ MADT revision.
const MADT_REVISION: u8 = 5;
/// Header (36) + local APIC address (4) + flags (4).
const MADT_HEADER_LEN: u32 = 44;
/// The 8259 pair exists (KVM creates it with the irqchip); the OS should mask it.
const PCAT_COMPAT: u32 = 1;

const TYPE_INTERRUPT_SOURCE_OVERRIDE: u8 = 2;
const BUS_ISA: u8 = 0;
/// MPS INTI flags 0: polarity and trigger conform to the bus (ISA: edge, active high).
const INTI_CONFORMS: u16 = 0;

/// ISA IRQ 0 (the PIT) arrives on IOAPIC pin 2, as on PC hardware. The VMM's GSI routing
/// must match (GSI 0 → IOAPIC pin 2, as QEMU sets it up).
const PIT_ISA_IRQ: u8 = 0;
const PIT_GSI: u32 = 2;

/// The IOAPIC's ID. APIC IDs are 0..vcpus, so `vcpus` never clashes (and is at most
/// MAX_VCPUS = 254, below the 255 broadcast ID). Linux on x86_64 only needs IOAPIC IDs
/// unique among IOAPICs; it does not compare this with the IOAPIC's ID register.
pub(super) fn ioapic_id(vcpus: u8) -> u8 {
    vcpus
}

pub(super) fn build(vcpus: u8) -> Vec<u8> {
    let mut madt = Sdt::new(
        *b"APIC",
        MADT_HEADER_LEN,
        MADT_REVISION,
        OEM_ID,
        OEM_TABLE_ID,
        OEM_REVISION,
    );
    madt.write_u32(36, APIC_START as u32);
    madt.write_u32(40, PCAT_COMPAT);

    let mut entries = Vec::new();
    for id in 0..vcpus {
        ProcessorLocalApic::new(id, id, EnabledStatus::Enabled).to_aml_bytes(&mut entries);
    }
    IoApic::new(ioapic_id(vcpus), IOAPIC_START as u32, 0).to_aml_bytes(&mut entries);
    entries.extend_from_slice(&interrupt_source_override(
        PIT_ISA_IRQ,
        PIT_GSI,
        INTI_CONFORMS,
    ));
    // ISA IRQs 1-15 need no entry: without an override they are identity-mapped, edge,
    // active high. There is no SCI (hardware-reduced), hence no SCI override.

    madt.append_slice(&entries);
    madt.as_slice().to_vec()
}

/// Interrupt Source Override structure (ACPI 6.5, 5.2.12.5); the crate has none.
fn interrupt_source_override(isa_irq: u8, gsi: u32, flags: u16) -> [u8; 10] {
    let mut s = [0u8; 10];
    s[0] = TYPE_INTERRUPT_SOURCE_OVERRIDE;
    s[1] = s.len() as u8;
    s[2] = BUS_ISA;
    s[3] = isa_irq;
    s[4..8].copy_from_slice(&gsi.to_le_bytes());
    s[8..10].copy_from_slice(&flags.to_le_bytes());
    s
}
