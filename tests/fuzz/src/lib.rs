//! What the fuzz targets share: the byte format of a sequence of bus accesses, which the
//! device targets decode and `examples/seeds.rs` encodes for the seed corpus.
//!
//! Fixed-size records rather than a derived `Arbitrary` format: a mutation of one byte
//! changes one field of one access, and seeds are easy to write by hand.

/// One record: 16 bytes, little-endian.
pub const RECORD_LEN: usize = 16;

/// One access (or other operation) as a fuzz target reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Op {
    /// What to do; each target gives its own meaning (`kind % number of kinds`).
    pub kind: u8,
    /// 1, 2, 4 or 8 bytes.
    pub width: usize,
    /// A port, an address, an offset: whatever the kind says.
    pub addr: u32,
    pub value: u64,
}

impl Op {
    pub const fn new(kind: u8, width: usize, addr: u32, value: u64) -> Self {
        Self {
            kind,
            width,
            addr,
            value,
        }
    }

    /// Layout: kind, log2(width) (low 2 bits), 2 spare bytes, address (u32), value (u64).
    pub fn decode(b: &[u8; RECORD_LEN]) -> Self {
        Self {
            kind: b[0],
            width: 1 << (b[1] & 3),
            addr: u32::from_le_bytes(b[4..8].try_into().unwrap()),
            value: u64::from_le_bytes(b[8..16].try_into().unwrap()),
        }
    }

    pub fn encode(&self) -> [u8; RECORD_LEN] {
        let mut b = [0u8; RECORD_LEN];
        b[0] = self.kind;
        b[1] = self.width.trailing_zeros() as u8;
        b[4..8].copy_from_slice(&self.addr.to_le_bytes());
        b[8..16].copy_from_slice(&self.value.to_le_bytes());
        b
    }

    /// Port I/O is 1, 2 or 4 bytes wide: an 8-byte record is a dword.
    pub fn pio_width(&self) -> usize {
        self.width.min(4)
    }

    /// The low `width` bytes of the value, as the guest would write them.
    pub fn data(&self, width: usize) -> Vec<u8> {
        self.value.to_le_bytes()[..width].to_vec()
    }
}

/// The records in `data` (a trailing partial record is ignored).
pub fn ops(data: &[u8]) -> impl Iterator<Item = Op> + '_ {
    data.chunks_exact(RECORD_LEN)
        .map(|c| Op::decode(c.try_into().unwrap()))
}

/// Encode a sequence of ops (after `header`) as one fuzz input.
pub fn encode(header: &[u8], ops: &[Op]) -> Vec<u8> {
    let mut out = header.to_vec();
    for op in ops {
        out.extend_from_slice(&op.encode());
    }
    out
}

/// Little-endian value of up to 8 bytes.
pub fn le(data: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    b[..data.len()].copy_from_slice(data);
    u64::from_le_bytes(b)
}
