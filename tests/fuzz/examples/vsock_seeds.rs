//! Writes the seed corpus of the virtio_vsock target (corpus/virtio_vsock/): a host client's
//! connection answered by the guest, a guest connection to a host listener, bad first lines
//! and a driver reset. Run from tests/fuzz: `cargo +nightly run --example vsock_seeds`.

use std::fs;
use std::path::Path;

use zhitong_fuzz::{encode, Op};

const TX: u8 = 0;
const RX: u8 = 1;
const CONNECT: u8 = 3;
const WRITE: u8 = 4;
const CLOSE: u8 = 5;
const ACCEPT: u8 = 6;
const READ: u8 = 7;
const WAIT: u8 = 8;
const RESET: u8 = 10;
const ANSWER: u8 = 11;

/// A tx packet's value: op, guest port index (1000, 1001, 5000, 5001), host port selector
/// (0: 6000, 2: 6001, 3+: ephemeral), payload length, shutdown flags.
fn tx(op: u64, src: u64, dst: u64, payload: u64, flags: u64) -> u64 {
    op | src << 8 | dst << 10 | payload << 16 | flags << 32 | 0x4_0000 << 34
}

fn op(kind: u8, width: usize, addr: u32, value: u64) -> Op {
    Op::new(kind, width, addr, value)
}

fn write(name: &str, ops: &[Op]) {
    let dir = Path::new("corpus/virtio_vsock");
    fs::create_dir_all(dir).unwrap();
    fs::write(dir.join(name), encode(&[], ops)).unwrap();
}

fn main() {
    let wait = op(WAIT, 1, 0, 0);
    write(
        "host-connect-data-shutdown",
        &[
            op(CONNECT, 1, 0, 0),
            op(WRITE, 1, 0, 1), // CONNECT 5000
            wait,
            op(ANSWER, 1, 0, 0x4_0000 << 8), // RESPONSE
            wait,
            op(READ, 1, 0, 0),
            op(WRITE, 8, 0, 0x6f6c_6c65_6800),
            wait,
            op(TX, 2, 0, tx(5, 2, 3, 16, 0)),
            op(READ, 1, 0, 0),
            op(TX, 2, 0, tx(7, 2, 3, 0, 0)),
            op(RX, 1, 0, 3 | 2 << 2),
            op(CLOSE, 1, 0, 1),
            wait,
            op(TX, 2, 0, tx(4, 2, 3, 0, 3)),
            wait,
        ],
    );
    write(
        "guest-connect-data",
        &[
            op(TX, 2, 0, tx(1, 0, 0, 0, 0)),
            wait,
            op(ACCEPT, 1, 0, 0),
            op(TX, 2, 0, tx(5, 0, 0, 100, 0)),
            op(READ, 1, 0, 0),
            op(WRITE, 1, 0, 2 | 4000 << 16),
            wait,
            op(TX, 4, 0, tx(6, 0, 0, 0, 0)),
            op(TX, 2, 0, tx(4, 0, 0, 0, 2)),
            op(CLOSE, 1, 0, 0),
            wait,
            op(TX, 2, 0, tx(1, 1, 2, 0, 0)), // nobody at 6001
            wait,
        ],
    );
    write(
        "bad-lines-refusal-reset",
        &[
            op(CONNECT, 1, 0, 0),
            op(WRITE, 8, 0, 0x0a4f_4c4c_4548),
            op(CONNECT, 1, 0, 0),
            op(WRITE, 1, 1, 1 | 2 << 1),
            wait,
            op(ANSWER, 1, 0, 1), // RST
            op(TX, 8, 0, tx(5, 2, 3, 10, 0)),
            op(TX, 1, 0, tx(9, 2, 3, 0, 0) | 0x10),
            op(RESET, 1, 0, 1),
            op(CONNECT, 1, 0, 0),
            op(WRITE, 1, 2, 1),
            wait,
        ],
    );
}
