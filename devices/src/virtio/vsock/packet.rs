//! The packet header (`struct virtio_vsock_hdr`, virtio 1.2 §5.10.6: 44 bytes, little
//! endian) and moving packets between guest descriptor chains and host buffers.
//!
//! A tx chain is read whole: every descriptor must be device-readable and inside guest
//! RAM; the header is the first 44 bytes of the chain (it may span descriptors, Linux puts
//! it in one of its own) and the payload the `len` bytes after it, at most
//! [`MAX_PAYLOAD`]. An rx chain must be device-writable throughout and hold at least the
//! header.

use virtio_queue::DescriptorChain;
use vm_memory::{Address, Bytes, GuestMemoryBackend, GuestMemoryMmap};

pub const HDR_LEN: usize = 44;
/// The most payload one packet carries either way (Linux's VIRTIO_VSOCK_MAX_PKT_BUF_SIZE).
pub const MAX_PAYLOAD: usize = 64 << 10;
/// The host's CID (VMADDR_CID_HOST).
pub const HOST_CID: u64 = 2;
pub const TYPE_STREAM: u16 = 1;

pub const OP_REQUEST: u16 = 1;
pub const OP_RESPONSE: u16 = 2;
pub const OP_RST: u16 = 3;
pub const OP_SHUTDOWN: u16 = 4;
pub const OP_RW: u16 = 5;
pub const OP_CREDIT_UPDATE: u16 = 6;
pub const OP_CREDIT_REQUEST: u16 = 7;

/// OP_SHUTDOWN flags: the sender will receive / send no more.
pub const SHUTDOWN_RCV: u32 = 1;
pub const SHUTDOWN_SEND: u32 = 2;

/// Descriptors one chain may have (more: the chain is refused).
const MAX_DESCS: usize = 64;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Header {
    pub src_cid: u64,
    pub dst_cid: u64,
    pub src_port: u32,
    pub dst_port: u32,
    pub len: u32,
    pub kind: u16,
    pub op: u16,
    pub flags: u32,
    pub buf_alloc: u32,
    pub fwd_cnt: u32,
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut v = [0u8; 4];
    v.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(v)
}

impl Header {
    pub fn parse(b: &[u8; HDR_LEN]) -> Self {
        let mut q = [0u8; 8];
        q.copy_from_slice(&b[0..8]);
        let src_cid = u64::from_le_bytes(q);
        q.copy_from_slice(&b[8..16]);
        let dst_cid = u64::from_le_bytes(q);
        Self {
            src_cid,
            dst_cid,
            src_port: u32_at(b, 16),
            dst_port: u32_at(b, 20),
            len: u32_at(b, 24),
            kind: u16::from_le_bytes([b[28], b[29]]),
            op: u16::from_le_bytes([b[30], b[31]]),
            flags: u32_at(b, 32),
            buf_alloc: u32_at(b, 36),
            fwd_cnt: u32_at(b, 40),
        }
    }

    pub fn to_bytes(self) -> [u8; HDR_LEN] {
        let mut b = [0u8; HDR_LEN];
        b[0..8].copy_from_slice(&self.src_cid.to_le_bytes());
        b[8..16].copy_from_slice(&self.dst_cid.to_le_bytes());
        b[16..20].copy_from_slice(&self.src_port.to_le_bytes());
        b[20..24].copy_from_slice(&self.dst_port.to_le_bytes());
        b[24..28].copy_from_slice(&self.len.to_le_bytes());
        b[28..30].copy_from_slice(&self.kind.to_le_bytes());
        b[30..32].copy_from_slice(&self.op.to_le_bytes());
        b[32..36].copy_from_slice(&self.flags.to_le_bytes());
        b[36..40].copy_from_slice(&self.buf_alloc.to_le_bytes());
        b[40..44].copy_from_slice(&self.fwd_cnt.to_le_bytes());
        b
    }

    /// The RST answering this packet (ports and CIDs swapped).
    pub fn reset_reply(&self) -> Self {
        Self {
            src_cid: self.dst_cid,
            dst_cid: self.src_cid,
            src_port: self.dst_port,
            dst_port: self.src_port,
            kind: TYPE_STREAM,
            op: OP_RST,
            ..Self::default()
        }
    }
}

/// Why a tx chain could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxError {
    /// Not even a header: nothing to answer.
    NoHeader,
    /// A header, but the payload is missing, too long or unreadable: the packet is answered
    /// with an RST.
    BadPayload(Header),
}

/// Read a tx chain into `buf` (cleared; header then payload); returns the header, the
/// payload being `buf[HDR_LEN..]`.
pub fn read_tx(
    chain: DescriptorChain<&GuestMemoryMmap>,
    buf: &mut Vec<u8>,
) -> Result<Header, TxError> {
    let mem = chain.memory();
    buf.clear();
    let mut header = None;
    let mut want = HDR_LEN;
    let mut bad = false;
    for (i, d) in chain.clone().enumerate() {
        if i == MAX_DESCS || d.is_write_only() || !mem.check_range(d.addr(), d.len() as usize) {
            bad = true;
            break;
        }
        let mut off = 0usize;
        let len = d.len() as usize;
        while off < len && buf.len() < want {
            let n = (len - off).min(want - buf.len());
            let at = buf.len();
            buf.resize(at + n, 0);
            let Some(addr) = d.addr().checked_add(off as u64) else {
                bad = true;
                break;
            };
            if mem.read_slice(&mut buf[at..], addr).is_err() {
                bad = true;
                break;
            }
            off += n;
            if header.is_none() && buf.len() == HDR_LEN {
                let mut h = [0u8; HDR_LEN];
                h.copy_from_slice(buf);
                let hdr = Header::parse(&h);
                if hdr.len as usize > MAX_PAYLOAD {
                    return Err(TxError::BadPayload(hdr));
                }
                want = HDR_LEN + hdr.len as usize;
                header = Some(hdr);
            }
        }
        if bad || buf.len() == want && header.is_some() {
            break;
        }
    }
    match header {
        None => Err(TxError::NoHeader),
        Some(h) if bad || buf.len() != want => Err(TxError::BadPayload(h)),
        Some(h) => Ok(h),
    }
}

/// The bytes an rx chain can take, if it is usable (all writable, in RAM, room for a
/// header).
pub fn rx_capacity(chain: &DescriptorChain<&GuestMemoryMmap>) -> Option<usize> {
    let mem = chain.memory();
    let mut total = 0usize;
    for (i, d) in chain.clone().enumerate() {
        if i == MAX_DESCS || !d.is_write_only() || !mem.check_range(d.addr(), d.len() as usize) {
            return None;
        }
        total = total.checked_add(d.len() as usize)?;
    }
    (total >= HDR_LEN).then_some(total)
}

/// Write `hdr` then `payload` into an rx chain whose [`rx_capacity`] holds them; returns
/// the bytes written.
pub fn write_rx(
    chain: DescriptorChain<&GuestMemoryMmap>,
    hdr: &Header,
    payload: &[u8],
) -> Option<u32> {
    let mem = chain.memory();
    let h = hdr.to_bytes();
    let mut parts = [&h[..], payload];
    let mut written = 0usize;
    for d in chain.clone() {
        let mut off = 0usize;
        let len = d.len() as usize;
        for part in parts.iter_mut() {
            while !part.is_empty() && off < len {
                let n = part.len().min(len - off);
                let addr = d.addr().checked_add(off as u64)?;
                mem.write_slice(&part[..n], addr).ok()?;
                *part = &part[n..];
                off += n;
                written += n;
            }
        }
        if parts.iter().all(|p| p.is_empty()) {
            return u32::try_from(written).ok();
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_in_the_spec_layout() {
        let h = Header {
            src_cid: 3,
            dst_cid: 2,
            src_port: 0x1234,
            dst_port: 5000,
            len: 7,
            kind: TYPE_STREAM,
            op: OP_RW,
            flags: 3,
            buf_alloc: 256 << 10,
            fwd_cnt: 99,
        };
        let b = h.to_bytes();
        assert_eq!(&b[0..8], &3u64.to_le_bytes());
        assert_eq!(&b[24..28], &7u32.to_le_bytes());
        assert_eq!(&b[28..32], &[1, 0, 5, 0]);
        assert_eq!(&b[40..44], &99u32.to_le_bytes());
        assert_eq!(Header::parse(&b), h);
        let r = h.reset_reply();
        assert_eq!(
            (r.src_cid, r.dst_cid, r.src_port, r.dst_port),
            (2, 3, 5000, 0x1234)
        );
        assert_eq!((r.op, r.len), (OP_RST, 0));
    }
}
