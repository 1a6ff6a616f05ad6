//! Checks the tables the way a guest reads them: copy the blobs into a model of the BIOS
//! area, find the RSDP by scanning, follow the pointers.

use std::collections::HashMap;

use super::*;
use crate::layout::{
    pci_mmio64_window, ACPI_RESET_PORT, ACPI_RESET_VALUE, ACPI_S5_SLEEP_TYPE,
    ACPI_SLEEP_CONTROL_PORT, ACPI_SLEEP_STATUS_PORT, APIC_START, IOAPIC_START, PCI_ECAM_SIZE,
    PCI_ECAM_START, PCI_MMIO32_SIZE, PCI_MMIO32_START,
};

fn u16_at(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes(b[off..off + 2].try_into().unwrap())
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
}

fn sum(b: &[u8]) -> u8 {
    b.iter().fold(0u8, |acc, x| acc.wrapping_add(*x))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// A 64 TiB 64-bit window (46 physical bits, 4 GiB of RAM).
fn pci() -> PciHostConfig {
    PciHostConfig::new(pci_mmio64_window(4 << 30, 46))
}

fn config(vcpus: u8, pci: Option<PciHostConfig>) -> AcpiConfig {
    AcpiConfig { vcpus, pci }
}

/// The BIOS area after the VMM copied the blobs in, and the tables reached from the RSDP.
struct Guest {
    area: Vec<u8>,
    rsdp: u64,
    xsdt: Vec<u64>,
    tables: HashMap<[u8; 4], Vec<u8>>,
}

impl Guest {
    fn boot(cfg: &AcpiConfig) -> Self {
        let built = build(cfg).unwrap();
        let mut area = vec![0u8; ACPI_AREA_SIZE as usize];
        let mut last_end = ACPI_AREA_START;
        for (addr, bytes) in &built.blobs {
            assert!(*addr >= last_end, "blobs overlap or are out of order");
            last_end = addr + bytes.len() as u64;
            assert!(
                last_end <= ACPI_AREA_START + ACPI_AREA_SIZE,
                "blob outside area"
            );
            let off = (addr - ACPI_AREA_START) as usize;
            area[off..off + bytes.len()].copy_from_slice(bytes);
        }
        let mut guest = Guest {
            area,
            rsdp: 0,
            xsdt: Vec::new(),
            tables: HashMap::new(),
        };
        guest.rsdp = guest.scan_for_rsdp();
        assert_eq!(guest.rsdp, built.rsdp_addr);

        let rsdp = guest.bytes(guest.rsdp, 36).to_vec();
        let xsdt = guest.table(u64_at(&rsdp, 24)).to_vec();
        assert_eq!(&xsdt[..4], b"XSDT");
        guest.xsdt = xsdt[36..].chunks(8).map(|e| u64_at(e, 0)).collect();
        for &addr in &guest.xsdt {
            let table = guest.table(addr).to_vec();
            guest.tables.insert(table[..4].try_into().unwrap(), table);
        }
        let dsdt = guest.table(u64_at(guest.get(b"FACP"), 140)).to_vec();
        guest.tables.insert(*b"DSDT", dsdt);
        guest.tables.insert(*b"XSDT", xsdt);
        guest
    }

    fn bytes(&self, addr: u64, len: usize) -> &[u8] {
        assert!(addr >= ACPI_AREA_START, "{addr:#x} below the ACPI area");
        let off = (addr - ACPI_AREA_START) as usize;
        &self.area[off..off + len]
    }

    /// A table by its header's length.
    fn table(&self, addr: u64) -> &[u8] {
        let len = u32_at(self.bytes(addr, 8), 4) as usize;
        self.bytes(addr, len)
    }

    /// Like Linux: the first "RSD PTR " on a 16-byte boundary whose checksum is right.
    fn scan_for_rsdp(&self) -> u64 {
        (0..self.area.len() - 20)
            .step_by(16)
            .find(|&off| {
                &self.area[off..off + 8] == b"RSD PTR " && sum(&self.area[off..off + 20]) == 0
            })
            .map(|off| ACPI_AREA_START + off as u64)
            .expect("no RSDP in the BIOS area")
    }

    fn get(&self, sig: &[u8; 4]) -> &[u8] {
        self.tables
            .get(sig)
            .unwrap_or_else(|| panic!("no {}", String::from_utf8_lossy(sig)))
    }
}

#[test]
fn every_table_checksums_to_zero() {
    for host in [None, Some(pci())] {
        let built = build(&config(8, host.clone())).unwrap();
        for (addr, bytes) in &built.blobs {
            assert_eq!(sum(bytes), 0, "table at {addr:#x}");
        }
        let guest = Guest::boot(&config(8, host));
        for (sig, table) in &guest.tables {
            assert_eq!(sum(table), 0, "{}", String::from_utf8_lossy(sig));
        }
    }
}

#[test]
fn rsdp_is_revision_2_and_points_at_the_xsdt() {
    let guest = Guest::boot(&config(2, None));
    let rsdp = guest.bytes(guest.rsdp, 36);
    assert_eq!(guest.rsdp % 16, 0);
    assert_eq!(&rsdp[..8], b"RSD PTR ");
    assert_eq!(sum(&rsdp[..20]), 0);
    assert_eq!(sum(rsdp), 0, "extended checksum");
    assert_eq!(&rsdp[9..15], &OEM_ID);
    assert_eq!(rsdp[15], 2, "revision");
    assert_eq!(u32_at(rsdp, 16), 0, "no RSDT");
    assert_eq!(u32_at(rsdp, 20), 36, "length");
    let xsdt = u64_at(rsdp, 24);
    assert!((ACPI_AREA_START..ACPI_AREA_START + ACPI_AREA_SIZE).contains(&xsdt));
    assert_eq!(&guest.bytes(xsdt, 4), b"XSDT");
}

#[test]
fn xsdt_points_at_each_table() {
    let guest = Guest::boot(&config(4, None));
    let sigs: Vec<&[u8]> = guest.xsdt.iter().map(|&a| guest.bytes(a, 4)).collect();
    assert_eq!(sigs, [b"FACP", b"APIC"]);

    let guest = Guest::boot(&config(4, Some(pci())));
    let sigs: Vec<&[u8]> = guest.xsdt.iter().map(|&a| guest.bytes(a, 4)).collect();
    assert_eq!(sigs, [b"FACP", b"APIC", b"MCFG"]);
    assert_eq!(&guest.get(b"DSDT")[..4], b"DSDT");
    for table in guest.tables.values() {
        assert_eq!(&table[10..16], &OEM_ID);
    }
}

/// (processor UID, APIC ID, flags) of each local APIC entry, the IOAPIC entries and the
/// interrupt source overrides.
type Lapic = (u8, u8, u32);
type Ioapic = (u8, u32, u32);
type Override = (u8, u8, u32, u16);

fn madt_entries(madt: &[u8]) -> (Vec<Lapic>, Vec<Ioapic>, Vec<Override>) {
    let (mut lapics, mut ioapics, mut overrides) = (Vec::new(), Vec::new(), Vec::new());
    let mut off = 44;
    while off < madt.len() {
        let (kind, len) = (madt[off], madt[off + 1] as usize);
        let e = &madt[off..off + len];
        match kind {
            0 => lapics.push((e[2], e[3], u32_at(e, 4))),
            1 => ioapics.push((e[2], u32_at(e, 4), u32_at(e, 8))),
            2 => overrides.push((e[2], e[3], u32_at(e, 4), u16_at(e, 8))),
            other => panic!("unexpected MADT entry type {other}"),
        }
        off += len;
    }
    assert_eq!(off, madt.len());
    (lapics, ioapics, overrides)
}

#[test]
fn madt_has_one_enabled_lapic_per_vcpu() {
    for n in [1u8, 2, 64, MAX_VCPUS] {
        let guest = Guest::boot(&config(n, None));
        let madt = guest.get(b"APIC");
        assert_eq!(u32_at(madt, 36), APIC_START as u32);
        assert_eq!(u32_at(madt, 40) & 1, 1, "PCAT_COMPAT");

        let (lapics, ioapics, overrides) = madt_entries(madt);
        let expected: Vec<Lapic> = (0..n).map(|id| (id, id, 1)).collect();
        assert_eq!(lapics, expected, "{n} vCPUs");

        assert_eq!(ioapics, vec![(n, IOAPIC_START as u32, 0)]);
        assert!(lapics
            .iter()
            .all(|&(_, apic_id, _)| apic_id != ioapics[0].0));

        // ISA bus, IRQ 0 → GSI 2, conforming polarity/trigger.
        assert_eq!(overrides, vec![(0, 0, 2, 0)]);
    }
}

#[test]
fn fadt_is_hardware_reduced_with_sleep_and_reset_registers() {
    let guest = Guest::boot(&config(1, None));
    let fadt = guest.get(b"FACP");
    assert_eq!(fadt.len(), 276);
    assert_eq!(fadt[8], 6, "major revision");
    let flags = u32_at(fadt, 112);
    assert_ne!(flags & (1 << 20), 0, "HW_REDUCED_ACPI");
    assert_ne!(flags & (1 << 10), 0, "RESET_REG_SUP");

    let io_byte = |port: u16| {
        let mut gas = vec![1, 8, 0, 1];
        gas.extend_from_slice(&u64::from(port).to_le_bytes());
        gas
    };
    assert_eq!(
        &fadt[244..256],
        io_byte(ACPI_SLEEP_CONTROL_PORT),
        "sleep control"
    );
    assert_eq!(
        &fadt[256..268],
        io_byte(ACPI_SLEEP_STATUS_PORT),
        "sleep status"
    );
    assert_eq!(&fadt[116..128], io_byte(ACPI_RESET_PORT), "reset register");
    assert_eq!(fadt[128], ACPI_RESET_VALUE);

    let boot_arch = u16_at(fadt, 109);
    assert_eq!(boot_arch & (1 << 1), 0, "no 8042 for Linux to probe");
    assert_eq!(boot_arch & (1 << 3), 0, "MSI supported");
    assert_ne!(boot_arch & (1 << 2), 0, "no VGA");

    // X_DSDT only; the 32-bit pointer and the legacy PM blocks stay empty.
    assert_eq!(u32_at(fadt, 40), 0);
    assert_eq!(&guest.bytes(u64_at(fadt, 140), 4), b"DSDT");
    assert!(
        fadt[56..92].iter().all(|&b| b == 0),
        "PM1/PM2/PMTMR/GPE blocks"
    );
}

#[test]
fn dsdt_announces_s5_and_com1() {
    let guest = Guest::boot(&config(1, None));
    let dsdt = guest.get(b"DSDT");
    assert_eq!(dsdt[8], 2, "revision 2: 64-bit integers");
    // Name (_S5_, Package (4) { 5, 5, 0, 0 })
    let s5 = [
        0x08,
        b'_',
        b'S',
        b'5',
        b'_',
        0x12,
        0x08,
        0x04,
        0x0a,
        ACPI_S5_SLEEP_TYPE,
        0x0a,
        ACPI_S5_SLEEP_TYPE,
        0x00,
        0x00,
    ];
    assert!(contains(dsdt, &s5));
    assert!(contains(dsdt, b"COM1"));
    // IO (Decode16, 0x3f8, 0x3f8, 1, 8) and Interrupt (consumer, edge, high) { 4 }
    assert!(contains(
        dsdt,
        &[0x47, 0x01, 0xf8, 0x03, 0xf8, 0x03, 0x01, 0x08]
    ));
    assert!(contains(
        dsdt,
        &[0x89, 0x06, 0x00, 0x03, 0x01, 0x04, 0, 0, 0]
    ));
    assert!(!contains(dsdt, b"PCI0"));
    assert!(!guest.tables.contains_key(b"MCFG"));
}

/// An address space descriptor as the ACPI spec lays it out (producer, min and max fixed).
fn address_space(kind: u8, type_flags: u8, width: usize, min: u64, max: u64) -> Vec<u8> {
    let tag = match width {
        2 => 0x88,
        4 => 0x87,
        _ => 0x8a,
    };
    let mut d = vec![tag];
    d.extend_from_slice(&((3 + 5 * width) as u16).to_le_bytes());
    d.extend_from_slice(&[kind, 0x0c, type_flags]);
    for v in [0, min, max, 0, max - min + 1] {
        d.extend_from_slice(&v.to_le_bytes()[..width]);
    }
    d
}

#[test]
fn dsdt_with_pci_declares_the_host_bridge_windows() {
    let pci = pci();
    let (mmio64_start, mmio64_size) = pci.mmio64.unwrap();
    assert!(mmio64_size > 10 << 40, "tens of TiB");
    let guest = Guest::boot(&config(4, Some(pci)));
    let dsdt = guest.get(b"DSDT");

    assert!(contains(dsdt, b"PCI0"));
    assert!(contains(dsdt, b"_OSC"));
    // EisaId ("PNP0A08") and ("PNP0A03")
    assert!(contains(dsdt, &[0x0c, 0x41, 0xd0, 0x0a, 0x08]));
    assert!(contains(dsdt, &[0x0c, 0x41, 0xd0, 0x0a, 0x03]));

    let bus = address_space(2, 0, 2, 0, 0);
    let io = address_space(1, 3, 2, 0x1000, 0xffff);
    let mmio32 = address_space(
        0,
        1,
        4,
        PCI_MMIO32_START,
        PCI_MMIO32_START + PCI_MMIO32_SIZE - 1,
    );
    let mmio64 = address_space(0, 1, 8, mmio64_start, mmio64_start + mmio64_size - 1);
    let config_ports = [0x47, 0x01, 0xf8, 0x0c, 0xf8, 0x0c, 0x01, 0x08];
    for (what, d) in [
        ("bus", &bus[..]),
        ("io", &io[..]),
        ("mmio32", &mmio32[..]),
        ("mmio64", &mmio64[..]),
        ("0xcf8", &config_ports[..]),
    ] {
        assert!(contains(dsdt, d), "{what} descriptor missing");
    }

    // The PNP0C02 device reserving the ECAM.
    assert!(contains(dsdt, &[0x0c, 0x41, 0xd0, 0x0c, 0x02]));
    let mut ecam = vec![0x86, 0x09, 0x00, 0x01];
    ecam.extend_from_slice(&(PCI_ECAM_START as u32).to_le_bytes());
    ecam.extend_from_slice(&(PCI_ECAM_SIZE as u32).to_le_bytes());
    assert!(contains(dsdt, &ecam));
}

#[test]
fn osc_grants_pme_aer_and_pcie_capability_only() {
    let guest = Guest::boot(&config(1, Some(pci())));
    let dsdt = guest.get(b"DSDT");
    // ToUUID ("33db4d5b-1ff7-401c-9657-7441c03dd766") as a 16-byte buffer.
    let uuid = [
        0x5b, 0x4d, 0xdb, 0x33, 0xf7, 0x1f, 0x1c, 0x40, 0x96, 0x57, 0x74, 0x41, 0xc0, 0x3d, 0xd7,
        0x66,
    ];
    assert!(contains(dsdt, &uuid));
    assert_eq!(osc::GRANTED, 0x1c);
    // Local0 = CDW3 & 0x1c
    assert!(contains(dsdt, b"\x7bCDW3\x0a\x1c\x60"));
}

/// AML integer encoding, written out independently of the crate.
fn aml_integer(v: u32) -> Vec<u8> {
    match v {
        0 => vec![0x00],
        1 => vec![0x01],
        2..=0xff => vec![0x0a, v as u8],
        0x100..=0xffff => [&[0x0b][..], &(v as u16).to_le_bytes()].concat(),
        _ => [&[0x0c][..], &v.to_le_bytes()].concat(),
    }
}

#[test]
fn prt_routes_every_slot_and_pin_like_pci_intx_gsi() {
    let guest = Guest::boot(&config(1, Some(pci())));
    let dsdt = guest.get(b"DSDT");
    // Name (_PRT, Package (128) { ... }): the count follows a two-byte PkgLength.
    let at = dsdt.windows(4).position(|w| w == b"_PRT").unwrap();
    assert_eq!(dsdt[at + 4], 0x12);
    assert_eq!(dsdt[at + 7], 128);
    for slot in 0..32u8 {
        for pin in 0..4u8 {
            let mut body = vec![4];
            body.extend(aml_integer((u32::from(slot) << 16) | 0xffff));
            body.extend(aml_integer(pin.into()));
            body.extend(aml_integer(0));
            body.extend(aml_integer(pci_intx_gsi(slot, pin)));
            let mut entry = vec![0x12, body.len() as u8 + 1];
            entry.extend(body);
            assert!(contains(dsdt, &entry), "slot {slot} pin {pin}");
        }
    }
}

#[test]
fn mcfg_describes_the_ecam() {
    let guest = Guest::boot(&config(1, Some(pci())));
    let mcfg = guest.get(b"MCFG");
    assert_eq!(mcfg.len(), 44 + 16);
    assert_eq!(u64_at(mcfg, 44), PCI_ECAM_START);
    assert_eq!(u16_at(mcfg, 52), 0, "segment");
    assert_eq!((mcfg[54], mcfg[55]), (0, 0), "buses: the root bus only");
}

#[test]
fn ecam_above_4g_is_reserved_with_a_qword_descriptor() {
    let mut pci = pci();
    pci.ecam_base = 1 << 40;
    pci.ecam_size = 16 << 20;
    pci.bus_end = 15;
    let guest = Guest::boot(&config(1, Some(pci)));
    let reservation = address_space(0, 1, 8, 1 << 40, (1 << 40) + (16 << 20) - 1);
    assert!(contains(guest.get(b"DSDT"), &reservation));
    let mcfg = guest.get(b"MCFG");
    assert_eq!(u64_at(mcfg, 44), 1 << 40);
    assert_eq!((mcfg[54], mcfg[55]), (0, 15));
}

#[test]
fn without_a_64_bit_window_there_is_no_qword_memory() {
    let mut pci = pci();
    pci.mmio64 = None;
    let guest = Guest::boot(&config(1, Some(pci)));
    let dsdt = guest.get(b"DSDT");
    assert!(contains(dsdt, b"PCI0"));
    assert!(!contains(dsdt, &[0x8a, 0x2b, 0x00, 0x00]));
}

#[test]
fn everything_fits_the_bios_area_for_the_most_vcpus() {
    let built = build(&config(MAX_VCPUS, Some(pci()))).unwrap();
    let (last_addr, last) = built.blobs.last().unwrap();
    assert!(last_addr + last.len() as u64 <= ACPI_AREA_START + ACPI_AREA_SIZE);
    assert!(built
        .blobs
        .iter()
        .all(|(addr, _)| addr % 16 == 0 && *addr >= ACPI_AREA_START));
    Guest::boot(&config(MAX_VCPUS, Some(pci())));
}

#[test]
fn bad_configs_are_refused() {
    assert_eq!(build(&config(0, None)), Err(AcpiError::VcpuCount(0)));
    assert_eq!(
        build(&config(MAX_VCPUS + 1, None)),
        Err(AcpiError::VcpuCount(MAX_VCPUS + 1))
    );
    let mut bad = pci();
    bad.mmio32 = (0, 0);
    assert!(matches!(
        build(&config(1, Some(bad))),
        Err(AcpiError::Mmio32Window { .. })
    ));
}

#[test]
fn dsdt_has_the_power_button_and_its_event_device() {
    let guest = Guest::boot(&config(1, None));
    let dsdt = &guest.tables[b"DSDT"];
    assert!(contains(dsdt, b"ACPI0013\0"), "no GED _HID");
    assert!(contains(dsdt, b"PWRB"), "no power button device");
    assert!(contains(dsdt, b"_EVT"), "no _EVT method");
    // Notify (\_SB_.PWRB, 0x80): NotifyOp, the path, BytePrefix 0x80.
    assert!(
        contains(dsdt, b"\x86\\._SB_PWRB\x0a\x80"),
        "no notify of PWRB with 0x80"
    );
}

#[test]
fn host_config_from_windows_matches_them() {
    use crate::layout::{PCI_MMIO32_SIZE, PCI_MMIO32_START};
    use crate::pci_windows::PciWindows;
    let w = PciWindows::for_guest(4 << 30, 46);
    let acpi = PciHostConfig::from_windows(&w);
    assert_eq!(acpi.mmio32, (PCI_MMIO32_START, PCI_MMIO32_SIZE));
    assert_eq!(acpi.mmio64, w.mmio64.map(|m| (m.start, m.size)));
    assert_eq!(*acpi.io.start(), 0x1000);
    assert_eq!(*acpi.io.end(), 0xffff);
}
