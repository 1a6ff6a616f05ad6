//! The MSI-X emulation (`devices::vfio` msix.rs) on its own, against a model of what the
//! guest should see.
//!
//! Input: a 16-byte header (the capability's first dword, table offset/BIR, PBA
//! offset/BIR, the vectors VFIO offers) describing any capability a device could have,
//! then ops (`kind % 4`): 0 a config write to the capability (any width, enable and
//! function-mask toggles); 1/2 a read/write of 1-8 bytes near the table or the PBA (or in
//! any BAR); 3 the device raises a vector.
//!
//! Checked: the capability reads back the shadowed control bits and the device's table/PBA
//! registers; accesses outside the table and PBA are not claimed; table entries read back
//! what aligned dword/qword writes put there (vector control: the mask bit only) and only
//! those; the PBA shows exactly the vectors that fired while held back; an irqfd is
//! registered for exactly the unmasked vectors, each on a GSI routed to its entry's
//! message; disabling (and the final teardown) gives every GSI back.

#![no_main]

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use devices::vfio::mock::{MockBackend, MockRouter, MockState};
use devices::vfio::msix_parts::{IrqCtx, Msix, TrapRange, CAP_LEN};
use devices::vfio::{IrqIndex, IrqInfo};
use libfuzzer_sys::fuzz_target;
use zhitong_fuzz::{le, ops, Op};

const HEADER_LEN: usize = 16;
const CAP: u16 = 0x70;
const ENABLE: u16 = 1 << 15;
const FUNCTION_MASK: u16 = 1 << 14;

/// What the guest should see.
struct Model {
    /// Message address low/high, data, and the mask bit, per entry.
    entries: Vec<[u32; 4]>,
    enabled: bool,
    function_masked: bool,
    /// Vectors enabled in VFIO (0: none).
    active: usize,
    /// Enabling failed; not retried until the guest disables MSI-X.
    failed: bool,
    /// Vectors the device raised since they were enabled.
    fired: Vec<bool>,
}

impl Model {
    fn control(&self) -> u16 {
        let mut ctrl = (self.entries.len() - 1) as u16;
        if self.enabled {
            ctrl |= ENABLE;
        }
        if self.function_masked {
            ctrl |= FUNCTION_MASK;
        }
        ctrl
    }

    fn delivering(&self, i: usize) -> bool {
        i < self.active && self.enabled && !self.function_masked && self.entries[i][3] & 1 == 0
    }

    fn pending(&self, i: usize) -> bool {
        i < self.active && self.fired[i] && !self.delivering(i)
    }

    /// What `Msix::apply` should do, given the vectors VFIO offers: host vectors up to the
    /// highest unmasked entry (at least one), grown as the guest unmasks more, kept (with
    /// what fired on them) while MSI-X stays on.
    fn apply(&mut self, vfio_count: usize) {
        if !self.enabled {
            // Disabling frees the vectors: what fired on them is gone with their eventfds.
            self.active = 0;
            self.fired.clear();
            self.failed = false;
            return;
        }
        let usable = self.entries.len().min(vfio_count);
        let needed = self.entries[..usable]
            .iter()
            .rposition(|e| e[3] & 1 == 0)
            .map_or(1, |i| i + 1)
            .min(usable);
        if self.active < needed && !self.failed {
            self.active = needed;
            self.fired.resize(needed, false);
        }
    }
}

/// `Some(Some((is_table, offset in it)))` for an access inside the table or the PBA,
/// `Some(None)` for one that starts there but runs past its end, `None` elsewhere.
fn locate(
    table: TrapRange,
    pba: TrapRange,
    bar: u8,
    off: u64,
    len: usize,
) -> Option<Option<(bool, u64)>> {
    [(true, table), (false, pba)]
        .into_iter()
        .find(|(_, r)| r.bar == bar && off >= r.offset && off < r.offset + r.len)
        .map(|(is_table, r)| {
            let rel = off - r.offset;
            (rel + len as u64 <= r.len).then_some((is_table, rel))
        })
}

fn entry_bytes(e: &[u32; 4]) -> [u8; 16] {
    let mut b = [0u8; 16];
    for (i, w) in e.iter().enumerate() {
        b[4 * i..4 * i + 4].copy_from_slice(&w.to_le_bytes());
    }
    b
}

fuzz_target!(|data: &[u8]| {
    let Some((header, rest)) = data.split_first_chunk::<HEADER_LEN>() else {
        return;
    };
    let dword = |i: usize| u32::from_le_bytes(header[i..i + 4].try_into().unwrap());
    let (first, table_reg, pba_reg) = (dword(0), dword(4), dword(8));
    let vfio_count = usize::from(header[12]);

    // Only the interrupt side of the mock device is used: no regions to allocate.
    // EVENTFD | NORESIZE, as VFIO reports MSI-X.
    let info = IrqInfo::from_flags(vfio_count as u32, 1 | 8);
    let backend = MockBackend(Arc::new(Mutex::new(MockState {
        regions: BTreeMap::new(),
        irqs: HashMap::from([(IrqIndex::Msix, info)]),
        calls: Vec::new(),
        triggers: HashMap::new(),
        enabled: None,
        fail_mmap: false,
    })));
    let router = MockRouter::default();
    let ctx = IrqCtx {
        backend: &backend,
        router: &router,
        name: "fuzz",
    };
    let read = |offset: u16| match offset - CAP {
        0 => first,
        4 => table_reg,
        8 => pba_reg,
        _ => 0,
    };
    let mut msix = Msix::probe(CAP, read, vfio_count as u32);
    let size = usize::from((first >> 16) as u16 & 0x7ff) + 1;
    let mut model = Model {
        entries: vec![[0, 0, 0, 1]; size],
        enabled: false,
        function_masked: false,
        active: 0,
        failed: false,
        fired: Vec::new(),
    };
    let (table, pba) = (msix.table(), msix.pba());
    assert_eq!(
        (table.bar, table.offset),
        ((table_reg & 7) as u8, u64::from(table_reg & !7))
    );
    assert_eq!(table.len, size as u64 * 16);
    assert_eq!(pba.len, size.div_ceil(64) as u64 * 8);

    for op in ops(rest) {
        match op.kind % 4 {
            0 => config_write(&mut msix, &mut model, &ctx, op, vfio_count),
            1 | 2 => {
                bar_access(&mut msix, &mut model, &ctx, op, (table, pba));
                // Unmasking an entry past the enabled vectors grows them.
                model.apply(vfio_count);
            }
            _ => {
                let i = op.value as usize % model.active.max(1);
                let state = backend.state();
                let evt = state.triggers.get(&IrqIndex::Msix).and_then(|t| t.get(i));
                assert_eq!(evt.is_some(), model.active > 0, "VFIO MSI-X on");
                if let Some(evt) = evt {
                    evt.write(1).unwrap();
                    model.fired[i] = true;
                }
            }
        }
        check_cap(&msix, &model, [first, table_reg, pba_reg]);
        check_routes(&router, &model);
    }
    msix.teardown(&ctx);
    let r = router.state();
    assert!(r.allocated.is_empty() && r.routes.is_empty() && r.irqfds.is_empty());
});

/// A guest config write inside the capability, naturally aligned as the device passes it.
fn config_write(msix: &mut Msix, model: &mut Model, ctx: &IrqCtx, op: Op, vfio_count: usize) {
    let width = op.pio_width();
    let offset = (op.addr as u16 % CAP_LEN) & !(width as u16 - 1);
    let (rel, shift) = (offset & !3, offset & 3);
    let data = op.data(width);
    msix.write_cap(rel, shift, &data);
    msix.apply(ctx);
    if rel == 0 {
        let mut dword = msix.read_cap(0).to_le_bytes();
        dword[2..4].copy_from_slice(&model.control().to_le_bytes());
        let s = usize::from(shift);
        dword[s..s + width].copy_from_slice(&data);
        let ctrl = u16::from_le_bytes([dword[2], dword[3]]);
        model.enabled = ctrl & ENABLE != 0;
        model.function_masked = ctrl & FUNCTION_MASK != 0;
    }
    model.apply(vfio_count);
}

/// A trapped BAR access near the table or PBA (`addr` bit 28), or in any BAR (bit 27).
fn bar_access(
    msix: &mut Msix,
    model: &mut Model,
    ctx: &IrqCtx,
    op: Op,
    (table, pba): (TrapRange, TrapRange),
) {
    let region = if op.addr & (1 << 28) != 0 { pba } else { table };
    let bar = if op.addr & (1 << 27) != 0 {
        (op.addr >> 29) as u8
    } else {
        region.bar
    };
    let offset = region
        .offset
        .wrapping_add(u64::from(op.addr & 0xffff))
        .wrapping_sub(16);
    let width = op.width;
    let hit = locate(table, pba, bar, offset, width);
    if op.kind % 4 == 2 {
        let data = op.data(width);
        assert_eq!(msix.bar_write(ctx, bar, offset, &data), hit.is_some());
        if let Some(Some((true, rel))) = hit {
            let (index, byte) = ((rel / 16) as usize, (rel % 16) as usize);
            if matches!(width, 4 | 8) && byte % width == 0 {
                let mut bytes = entry_bytes(&model.entries[index]);
                bytes[byte..byte + width].copy_from_slice(&data);
                let word = |i: usize| u32::from_le_bytes(bytes[i..i + 4].try_into().unwrap());
                model.entries[index] = [word(0), word(4), word(8), word(12) & 1];
            }
        }
        return;
    }
    let mut got = vec![0xa5u8; width];
    assert_eq!(msix.bar_read("fuzz", bar, offset, &mut got), hit.is_some());
    let want = match hit {
        None => vec![0xa5; width],
        Some(None) => vec![0; width],
        Some(Some((true, rel))) => {
            let (index, byte) = ((rel / 16) as usize, (rel % 16) as usize);
            let bytes = entry_bytes(&model.entries[index]);
            bytes
                .get(byte..byte + width)
                .map_or(vec![0; width], <[u8]>::to_vec)
        }
        Some(Some((false, rel))) => (0..width)
            .map(|i| {
                (0..8)
                    .filter(|bit| model.pending((rel as usize + i) * 8 + bit))
                    .fold(0u8, |acc, bit| acc | 1 << bit)
            })
            .collect(),
    };
    assert_eq!(
        got,
        want,
        "read of {width} at BAR {bar} {offset:#x} (value {:#x})",
        le(&got)
    );
}

/// The capability's dwords: the device's header, our control; the device's table and PBA
/// registers.
fn check_cap(msix: &Msix, model: &Model, device: [u32; 3]) {
    let first = msix.read_cap(0);
    assert_eq!(first as u16, device[0] as u16);
    assert_eq!((first >> 16) as u16, model.control());
    assert_eq!([msix.read_cap(4), msix.read_cap(8)], [device[1], device[2]]);
    assert_eq!(msix.wants_enabled(), model.enabled);
}

/// One irqfd per delivering vector, on a GSI routed to its entry's message.
fn check_routes(router: &MockRouter, model: &Model) {
    let r = router.state();
    let mut routed: BTreeMap<(u32, u32, u32), usize> = BTreeMap::new();
    for gsi in r.irqfds.keys() {
        assert!(r.allocated.contains(gsi));
        let m = r.routes[gsi];
        *routed.entry((m.addr_lo, m.addr_hi, m.data)).or_default() += 1;
    }
    let mut want: BTreeMap<(u32, u32, u32), usize> = BTreeMap::new();
    for (i, e) in model.entries.iter().enumerate() {
        if model.delivering(i) {
            *want.entry((e[0], e[1], e[2])).or_default() += 1;
        }
    }
    assert_eq!(routed, want);
}
