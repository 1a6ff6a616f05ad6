use super::super::backend::IrqIndex;
use super::super::mock::{Call, MSIX_CAP, MSIX_PBA, MSIX_TABLE, MSIX_VECTORS};
use super::*;
use crate::pci::PciDevice;
use crate::services::MsiMessage;

const ENABLE: u16 = 1 << 15;
const MASKALL: u16 = 1 << 14;

pub fn entry_write(r: &mut Rig, entry: u64, field: u64, value: u32) {
    r.dev
        .bar_write(2, MSIX_TABLE + entry * 16 + field, &value.to_le_bytes());
}

fn entry_read(r: &mut Rig, entry: u64, field: u64) -> u32 {
    let mut b = [0u8; 4];
    r.dev.bar_read(2, MSIX_TABLE + entry * 16 + field, &mut b);
    u32::from_le_bytes(b)
}

/// Program entry `i` with a recognisable message (masked or not).
pub fn program(r: &mut Rig, i: u64, masked: bool) {
    entry_write(r, i, 0, 0xfee0_0000 | (i as u32) << 12);
    entry_write(r, i, 4, 0);
    entry_write(r, i, 8, 0x4000 + i as u32);
    entry_write(r, i, 12, u32::from(masked));
}

pub fn message(i: u32) -> MsiMessage {
    MsiMessage {
        addr_lo: 0xfee0_0000 | i << 12,
        addr_hi: 0,
        data: 0x4000 + i,
    }
}

fn pba(r: &mut Rig) -> u64 {
    let mut b = [0u8; 8];
    r.dev.bar_read(2, MSIX_PBA, &mut b);
    u64::from_le_bytes(b)
}

/// The eventfds VFIO MSI-X was enabled with.
fn msix_fds(r: &Rig) -> Vec<i32> {
    r.backend
        .state()
        .calls
        .iter()
        .rev()
        .find_map(|c| match c {
            Call::Enable {
                index: IrqIndex::Msix,
                fds,
            } => Some(fds.clone()),
            _ => None,
        })
        .expect("MSI-X enabled")
}

fn gsi(r: &Rig, i: usize) -> u32 {
    r.dev
        .msix_state()
        .unwrap()
        .vector(i)
        .unwrap()
        .gsi()
        .unwrap()
}

#[test]
fn the_table_starts_masked_and_reads_back_what_is_written() {
    let mut r = rig();
    assert_eq!(r.read(MSIX_CAP) >> 16, MSIX_VECTORS as u32 - 1);
    assert_eq!(entry_read(&mut r, 3, 12), 1, "vectors start masked");
    program(&mut r, 3, false);
    assert_eq!(entry_read(&mut r, 3, 0), 0xfee0_3000);
    assert_eq!(entry_read(&mut r, 3, 8), 0x4003);
    assert_eq!(entry_read(&mut r, 3, 12), 0);
    let mut q = [0u8; 8];
    r.dev.bar_read(2, MSIX_TABLE + 3 * 16, &mut q);
    assert_eq!(u64::from_le_bytes(q), 0xfee0_3000);
    entry_write(&mut r, 3, 12, 0xffff_ffff);
    assert_eq!(entry_read(&mut r, 3, 12), 1, "reserved control bits read 0");
    r.dev
        .bar_write(2, MSIX_TABLE + 3 * 16, &0x1_fee0_1000u64.to_le_bytes());
    assert_eq!(entry_read(&mut r, 3, 4), 1, "qword writes");
}

#[test]
fn linux_enables_with_the_function_masked_then_unmasks() {
    let mut r = rig();
    r.forget_calls();
    r.write16(MSIX_CAP + 2, ENABLE | MASKALL);
    assert_eq!(
        r.backend.state().irq_calls()[0],
        Call::Disable(IrqIndex::Intx),
        "INTx goes first"
    );
    assert_eq!(msix_fds(&r).len(), 1, "no entry in use yet: one vector");
    assert!(r.router.state().routes.is_empty());
    for i in 0..MSIX_VECTORS as u64 {
        program(&mut r, i, true);
    }
    entry_write(&mut r, 0, 12, 0);
    entry_write(&mut r, 5, 12, 0);
    let fds = msix_fds(&r);
    assert_eq!(fds.len(), 6, "vectors up to the highest unmasked entry");
    assert!(
        r.router.state().irqfds.is_empty(),
        "the function mask holds everything back"
    );
    r.write16(MSIX_CAP + 2, ENABLE);
    assert_eq!(r.read(MSIX_CAP) >> 16, 0x8000 | (MSIX_VECTORS as u32 - 1));
    let (g0, g5) = (gsi(&r, 0), gsi(&r, 5));
    let router = r.router.state();
    assert_eq!(router.routes.len(), 2);
    assert_eq!(router.routes[&g0], message(0));
    assert_eq!(router.routes[&g5], message(5));
    assert_eq!(router.irqfds[&g0], fds[0]);
    assert_eq!(router.irqfds[&g5], fds[5]);
    assert!(router.resample_irqfds.is_empty(), "INTx is off");
}

#[test]
fn masking_holds_interrupts_back_and_shows_them_pending() {
    let mut r = rig();
    r.write16(MSIX_CAP + 2, ENABLE);
    program(&mut r, 1, false);
    program(&mut r, 2, false);
    let g1 = gsi(&r, 1);
    assert!(r.router.state().irqfds.contains_key(&g1));
    assert_eq!(pba(&mut r), 0);

    entry_write(&mut r, 1, 12, 1);
    assert!(!r.router.state().irqfds.contains_key(&g1));
    assert_eq!(pba(&mut r), 0);
    r.backend.state().fire(IrqIndex::Msix, 1);
    r.backend.state().fire(IrqIndex::Msix, 2);
    assert_eq!(pba(&mut r), 1 << 1, "only the masked vector shows pending");

    entry_write(&mut r, 1, 12, 0);
    assert!(
        r.router.state().irqfds.contains_key(&g1),
        "KVM delivers it now"
    );
    assert_eq!(pba(&mut r), 0);
    assert_eq!(r.router.state().routes[&g1], message(1));

    // The function mask holds back every vector.
    r.write16(MSIX_CAP + 2, ENABLE | MASKALL);
    assert!(r.router.state().irqfds.is_empty());
    r.write16(MSIX_CAP + 2, ENABLE);
    assert_eq!(r.router.state().irqfds.len(), 2);
    r.forget_calls();
    r.write16(MSIX_CAP + 2, ENABLE);
    assert!(
        r.backend.state().irq_calls().is_empty(),
        "rewriting the same control changes nothing"
    );
}

#[test]
fn growing_the_vectors_keeps_what_is_pending_and_disabling_drops_it() {
    let mut r = rig();
    r.write16(MSIX_CAP + 2, ENABLE);
    program(&mut r, 0, false);
    program(&mut r, 1, false);
    entry_write(&mut r, 1, 12, 1);
    r.backend.state().fire(IrqIndex::Msix, 1);
    assert_eq!(pba(&mut r), 1 << 1);
    let before = msix_fds(&r);
    assert_eq!(before.len(), 2);
    program(&mut r, 5, false); // VFIO is re-enabled with 6 vectors
    let after = msix_fds(&r);
    assert_eq!(after.len(), 6);
    assert_eq!(after[..2], before[..], "vectors in use keep their eventfds");
    assert_eq!(pba(&mut r), 1 << 1, "a grown set keeps what was held back");

    r.write16(MSIX_CAP + 2, 0);
    r.write16(MSIX_CAP + 2, ENABLE);
    assert_eq!(
        pba(&mut r),
        0,
        "disabling frees the vectors and what they held"
    );
}

#[test]
fn rewriting_a_message_while_enabled_updates_the_route() {
    let mut r = rig();
    r.write16(MSIX_CAP + 2, ENABLE);
    program(&mut r, 4, false);
    let g4 = gsi(&r, 4);
    entry_write(&mut r, 4, 0, 0xfee0_8000);
    entry_write(&mut r, 4, 8, 0x4099);
    let route = r.router.state().routes[&g4];
    assert_eq!(
        route,
        MsiMessage {
            addr_lo: 0xfee0_8000,
            addr_hi: 0,
            data: 0x4099
        }
    );
    assert_eq!(r.router.state().allocated.len(), 1, "same GSI, new route");
}

#[test]
fn bad_table_accesses_are_ignored() {
    let mut r = rig();
    r.write16(MSIX_CAP + 2, ENABLE);
    r.dev.bar_write(2, MSIX_TABLE + 2, &[1, 2, 3, 4]); // unaligned
    r.dev.bar_write(2, MSIX_TABLE + 12, &[0]); // byte write
    r.dev
        .bar_write(2, MSIX_TABLE + 8, &0x0000_0000_0000_1234u64.to_le_bytes()); // qword spanning data+ctrl is fine
    assert_eq!(entry_read(&mut r, 0, 8), 0x1234);
    assert_eq!(entry_read(&mut r, 0, 12), 0, "qword unmasked it");
    r.dev.bar_write(2, MSIX_TABLE + 16 * 16, &[0; 4]); // past the table: the device's
    r.dev.bar_write(2, MSIX_PBA, &[0xff; 8]); // PBA is read-only
    assert_eq!(pba(&mut r), 0);
    let mut b = [0u8; 8];
    r.dev.bar_read(2, MSIX_TABLE + 12, &mut b); // crosses an entry
    assert_eq!(b, [0; 8]);
    assert_eq!(entry_read(&mut r, 0, 0), 0);
}

#[test]
fn disabling_tears_everything_down_and_brings_intx_back() {
    let mut r = rig();
    r.write16(MSIX_CAP + 2, ENABLE);
    program(&mut r, 0, false);
    program(&mut r, 7, false);
    let gsis = [gsi(&r, 0), gsi(&r, 7)];
    r.forget_calls();
    r.write16(MSIX_CAP + 2, 0);
    let calls = r.backend.state().irq_calls();
    assert_eq!(calls[0], Call::Disable(IrqIndex::Msix));
    assert!(matches!(
        calls[1],
        Call::Enable {
            index: IrqIndex::Intx,
            ..
        }
    ));
    assert!(matches!(calls[2], Call::SetUnmaskFd(_)));
    let router = r.router.state();
    assert!(router.routes.is_empty() && router.irqfds.is_empty());
    assert!(router.allocated.is_empty());
    assert_eq!(router.released, gsis.to_vec());
    assert!(router.resample_irqfds.contains_key(&INTX_GSI));
    drop(router);
    // The table survives for the next enable.
    r.write16(MSIX_CAP + 2, ENABLE);
    assert_eq!(r.router.state().routes.len(), 2);
}

#[test]
fn a_failing_enable_is_reported_once_and_retried_after_disable() {
    let mut r = rig();
    r.backend
        .state()
        .irqs
        .get_mut(&IrqIndex::Msix)
        .unwrap()
        .count = 0;
    r.write16(MSIX_CAP + 2, ENABLE);
    program(&mut r, 0, false);
    assert!(!r.dev.msix_state().unwrap().is_active());
    assert!(r.router.state().routes.is_empty());
    r.backend
        .state()
        .irqs
        .get_mut(&IrqIndex::Msix)
        .unwrap()
        .count = 16;
    r.write16(MSIX_CAP + 2, ENABLE | MASKALL);
    assert!(
        !r.dev.msix_state().unwrap().is_active(),
        "not retried while on"
    );
    r.write16(MSIX_CAP + 2, 0);
    r.write16(MSIX_CAP + 2, ENABLE);
    assert!(r.dev.msix_state().unwrap().is_active());
    assert_eq!(r.router.state().routes.len(), 1);
}

#[test]
fn no_gsi_left_leaves_the_vector_silent_without_panicking() {
    let mut r = rig();
    r.router.state().fail_allocations = true;
    r.write16(MSIX_CAP + 2, ENABLE);
    program(&mut r, 0, false);
    assert!(r.router.state().irqfds.is_empty());
    r.router.state().fail_allocations = false;
    entry_write(&mut r, 0, 12, 1);
    entry_write(&mut r, 0, 12, 0);
    assert_eq!(r.router.state().irqfds.len(), 1, "next unmask retries");
}

/// A guest that uses 2 of the table's entries gets 2 host vectors (and eventfds), grown
/// as it unmasks more, never the whole table; the first vectors keep their eventfds.
#[test]
fn host_vectors_follow_the_entries_in_use() {
    let mut r = rig();
    r.write16(MSIX_CAP + 2, ENABLE);
    assert_eq!(msix_fds(&r).len(), 1);
    program(&mut r, 0, false);
    assert_eq!(msix_fds(&r).len(), 1);
    let first = msix_fds(&r)[0];
    program(&mut r, 1, false);
    let fds = msix_fds(&r);
    assert_eq!(fds.len(), 2);
    assert_eq!(fds[0], first, "vector 0 keeps its eventfd (and irqfd)");
    let enables = |r: &Rig| {
        r.backend
            .state()
            .calls
            .iter()
            .filter(|c| {
                matches!(
                    c,
                    Call::Enable {
                        index: IrqIndex::Msix,
                        ..
                    }
                )
            })
            .count()
    };
    let before = enables(&r);
    // Re-programming or masking entries in use changes no host vectors.
    program(&mut r, 0, true);
    program(&mut r, 0, false);
    assert_eq!(enables(&r), before);
    assert_eq!(r.router.state().irqfds.len(), 2);
}

#[test]
fn a_guest_flr_resets_bars_command_and_msix() {
    use super::super::mock::PCIE_CAP;
    let mut r = rig();
    r.dev.assign_bar(0, 0xc000_0000);
    r.write16(0x04, 0x0006);
    r.write16(MSIX_CAP + 2, ENABLE);
    program(&mut r, 1, false);
    assert!(r.dev.msix_state().unwrap().is_active());
    assert!(!r.router.state().irqfds.is_empty());

    // Device Control: Initiate FLR (bit 15), as Linux's pcie_flr writes it.
    r.forget_calls();
    r.write16(PCIE_CAP + 8, 0x8000);
    let calls = r.backend.state().config_writes();
    assert_eq!(
        calls[0],
        (u64::from(PCIE_CAP + 8), vec![0x00, 0x80]),
        "VFIO gets the FLR"
    );
    assert_eq!(r.read(0x10), 0, "BAR unassigned");
    assert_eq!(r.read(0x04) & 0x7, 0, "decode and bus mastering off");
    assert_eq!(
        r.backend.state().config()[4..6],
        [0, 0],
        "on the device too"
    );
    assert!(!r.dev.msix_state().unwrap().is_active(), "MSI-X off");
    assert_eq!(r.read(MSIX_CAP) >> 16 & 0x8000, 0);
    let table_entry = {
        let mut b = [0u8; 4];
        r.dev.bar_read(2, MSIX_TABLE + 16 + 12, &mut b);
        u32::from_le_bytes(b)
    };
    assert_eq!(table_entry, 1, "the table is back to masked entries");
    let router = r.router.state();
    assert!(router.irqfds.is_empty() && router.routes.is_empty() && router.allocated.is_empty());
    assert_eq!(router.resample_irqfds.len(), 1, "INTx is back");
    drop(router);

    // Other Device Control writes are no reset.
    r.write16(0x04, 0x0002);
    r.write16(PCIE_CAP + 8, 0x2810);
    assert_eq!(r.read(0x04) & 0x2, 0x2);
}
