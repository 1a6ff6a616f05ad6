//! Writes the committed seed corpus (tests/fuzz/corpus/<target>/): what real guests and
//! clients do, so the fuzzers start from deep states. Run from tests/fuzz:
//! `cargo +nightly run --example seeds`. The device seeds use the record format of
//! `zhitong_fuzz::Op`; the text seeds come from the docs, so they stay what is documented.

use std::fs;
use std::path::Path;

use zhitong_fuzz::{encode, Op};

const CORPUS: &str = "corpus";

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new(CORPUS).join(target);
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join(name), bytes).unwrap();
}

/// The fenced blocks of `lang` in a Markdown text.
fn blocks<'a>(md: &'a str, lang: &str) -> Vec<&'a str> {
    let open = format!("```{lang}\n");
    md.split(open.as_str())
        .skip(1)
        .filter_map(|rest| rest.split("```").next())
        .collect()
}

// bus_platform kinds.
const IN: u8 = 0;
const OUT: u8 = 1;
const INPUT: u8 = 2;

fn outb(port: u16, v: u8) -> Op {
    Op::new(OUT, 1, port.into(), v.into())
}

fn inb(port: u16) -> Op {
    Op::new(IN, 1, port.into(), 0)
}

fn bus_platform() {
    let t = "bus_platform";
    // The 8250 driver's probe and setup of COM1, then a line of output.
    let mut probe = vec![
        outb(0x3fb, 0x00),
        inb(0x3f9),
        outb(0x3f9, 0x00),
        inb(0x3fa),
        outb(0x3ff, 0xa5), // scratch
        inb(0x3ff),
        outb(0x3fc, 0x10), // loopback
        inb(0x3fe),
        outb(0x3fc, 0x00),
        outb(0x3fb, 0x80), // DLAB: 115200 baud
        outb(0x3f8, 0x01),
        outb(0x3f9, 0x00),
        outb(0x3fb, 0x03), // 8n1
        outb(0x3fa, 0xc7), // FIFOs
        outb(0x3fc, 0x0b),
        outb(0x3f9, 0x02), // THR empty interrupt
    ];
    for b in b"Linux version 6.12\r\n" {
        probe.push(inb(0x3fd));
        probe.push(outb(0x3f8, *b));
    }
    write(t, "com1-probe-and-print", &encode(&[], &probe));
    // Console input: RX interrupt on, the host types a line, the guest reads it.
    let mut input = vec![
        outb(0x3f9, 0x01),
        Op::new(INPUT, 8, 0, u64::from_le_bytes(*b"root\npw\n")),
    ];
    for _ in 0..9 {
        input.extend([inb(0x3fa), inb(0x3fd), inb(0x3f8)]);
    }
    write(t, "com1-input", &encode(&[], &input));
    let poweroff = [
        inb(0x601),
        outb(0x600, 5 << 2),
        outb(0x600, (5 << 2) | 0x20),
    ];
    write(t, "acpi-poweroff", &encode(&[], &poweroff));
    let resets = [
        inb(0x64),
        outb(0x64, 0xfe),
        outb(0x602, 0x01),
        Op::new(OUT, 4, 0x64, 0xfe),
    ];
    write(t, "resets", &encode(&[], &resets));
    let exit = [
        outb(0x4f0, 0x42),
        Op::new(OUT, 2, 0x4f0, 0x1234),
        outb(0x4f4, 3),
        Op::new(OUT, 4, 0x4f4, 0x0000_0107),
    ];
    write(t, "marker-and-exit", &encode(&[], &exit));
    let unclaimed: Vec<Op> = [0x80u32, 0x61, 0x2f8, 0x3f7, 0x400, 0xcf8, 0x603, 0xffff]
        .into_iter()
        .flat_map(|p| [1, 2, 4].map(|w| Op::new(IN, w, p, 0)))
        .collect();
    write(t, "unclaimed-ports", &encode(&[], &unclaimed));
}

// pci_config kinds.
const CF8: u8 = 0;
const CFC_RD: u8 = 1;
const CFC_WR: u8 = 2;
const ECAM_RD: u8 = 3;
const ECAM_WR: u8 = 4;
const BAR_RD: u8 = 5;
const BAR_WR: u8 = 6;
const RAW_RD: u8 = 7;
const SIZE_BAR: u8 = 8;
const FIRE: u8 = 9;
const FAIL: u8 = 10;
/// ECAM address bit 28: the register of 00:01.0.
const DEV: u32 = 1 << 28;

fn cf8(dev: u32, reg: u32) -> Op {
    Op::new(CF8, 4, 0x8000_0000 | dev << 11 | reg, 0)
}

fn ecam_wr(reg: u32, width: usize, v: u64) -> Op {
    Op::new(ECAM_WR, width, DEV | reg, v)
}

fn ecam_rd(reg: u32, width: usize) -> Op {
    Op::new(ECAM_RD, width, DEV | reg, 0)
}

fn bar(kind: u8, index: u32, offset: u32, width: usize, v: u64) -> Op {
    Op::new(kind, width, index << 24 | offset, v)
}

fn pci_config() {
    let t = "pci_config";
    // Linux's legacy scan and BAR sizing through 0xcf8/0xcfc, decode off meanwhile.
    let mut scan = Vec::new();
    for dev in 0..4 {
        scan.extend([
            cf8(dev, 0),
            Op::new(CFC_RD, 4, 0, 0),
            cf8(dev, 0xc),
            Op::new(CFC_RD, 1, 2, 0),
        ]);
    }
    scan.extend([
        cf8(1, 4),
        Op::new(CFC_RD, 2, 0, 0),
        Op::new(CFC_WR, 2, 0, 0),
    ]);
    for reg in (0x10..0x28).step_by(4).chain([0x30]) {
        scan.extend([
            cf8(1, reg),
            Op::new(CFC_RD, 4, 0, 0),
            Op::new(CFC_WR, 4, 0, 0xffff_ffff),
            Op::new(CFC_RD, 4, 0, 0),
            Op::new(CFC_WR, 4, 0, 0),
        ]);
    }
    scan.extend([
        cf8(1, 0x10),
        Op::new(CFC_WR, 4, 0, 0xc000_0000),
        cf8(1, 4),
        Op::new(CFC_WR, 2, 0, 7),
    ]);
    write(t, "cf8-scan-and-size", &encode(&[], &scan));

    // ECAM: absent functions, the capability chains, every BAR sized.
    let mut caps: Vec<Op> = [0u32, 1 << 12, 2 << 15, 1 << 20, 0x0fff_f000]
        .into_iter()
        .map(|off| Op::new(ECAM_RD, 4, off, 0))
        .collect();
    for reg in [0x34, 0x40, 0x50, 0x70, 0x80, 0x100, 0x140, 0x160, 0xffc] {
        caps.push(ecam_rd(reg, 4));
    }
    caps.extend((0..7).map(|i| Op::new(SIZE_BAR, 4, i, 0)));
    caps.push(Op::new(ECAM_RD, 8, DEV | 0x10, 0));
    write(t, "ecam-caps-and-sizing", &encode(&[], &caps));

    // Decode on, the BARs used, moved, turned off and on again.
    let moves = [
        ecam_wr(0x04, 2, 0x0003),
        bar(BAR_RD, 0, 0x100, 4, 0),
        bar(BAR_WR, 0, 0x100, 4, 0xdead_beef),
        bar(BAR_RD, 1, 0x10, 1, 0),
        bar(BAR_WR, 1, 0x10, 2, 0x55aa),
        ecam_wr(0x10, 4, 0xc800_0000),
        bar(BAR_RD, 0, 0, 4, 0),
        ecam_wr(0x1c, 4, 0x20),
        ecam_wr(0x18, 4, 0x0),
        bar(BAR_RD, 2, 0x4_0000, 8, 0),
        ecam_wr(0x10, 4, 0xfd00_0000), // onto the ECAM: refused
        ecam_wr(0x04, 2, 0),
        ecam_wr(0x30, 4, 0xc900_0001),
        ecam_wr(0x04, 2, 0x0002),
        bar(BAR_RD, 6, 0, 2, 0),
        ecam_wr(0x04, 1, 0x07),
    ];
    write(t, "bar-moves", &encode(&[], &moves));

    // The same with peer-to-peer on and a clique capability (options in the bytes after
    // the last op: 3 = p2p + clique 3), an IOMMU unmap failing during a move, the clique
    // capability read and written.
    let mut p2p = moves.to_vec();
    p2p.splice(
        6..6,
        [
            Op::new(FAIL, 8, 0, 4),
            ecam_wr(0x10, 4, 0xca00_0000),
            Op::new(FAIL, 8, 0, 0),
            ecam_wr(0x10, 4, 0xcb00_0000),
        ],
    );
    p2p.extend([
        ecam_rd(0x34, 1),
        ecam_rd(0xd4, 4),
        ecam_wr(0xd4, 4, 0),
        ecam_rd(0xd8, 4),
    ]);
    let mut input = encode(&[], &p2p);
    input.extend([0; 3]);
    write(t, "p2p-clique-moves", &input);

    // A guest-initiated FLR (PCIe Device Control bit 15) with MSI-X on and the BARs mapped.
    let flr = [
        ecam_wr(0x04, 2, 0x0006),
        ecam_wr(0x72, 2, 0x8000),
        bar(BAR_WR, 2, 0xa_000c, 4, 0),
        ecam_rd(0x98, 2),
        ecam_wr(0x98, 2, 0x8000),
        ecam_rd(0x04, 2),
        ecam_rd(0x10, 4),
        ecam_rd(0x72, 2),
        ecam_wr(0x04, 2, 0x0006),
        bar(BAR_RD, 0, 0, 4, 0),
    ];
    let mut input = encode(&[], &flr);
    input.push(0);
    write(t, "guest-flr", &input);

    // MSI-X as Linux enables it: enable + function mask, program, unmask, interrupts.
    let mut msix = vec![ecam_wr(0x04, 2, 0x0006), ecam_wr(0x72, 2, 0xc000)];
    for i in 0..4u32 {
        let e = 0xa_0000 + 16 * i;
        msix.extend([
            bar(BAR_WR, 2, e, 4, 0xfee0_0000 | u64::from(i) << 12),
            bar(BAR_WR, 2, e + 4, 4, 0),
            bar(BAR_WR, 2, e + 8, 4, 0x4020 + u64::from(i)),
        ]);
    }
    msix.extend([
        ecam_wr(0x72, 2, 0x8000),
        bar(BAR_WR, 2, 0xa_000c, 4, 0),
        bar(BAR_WR, 2, 0xa_001c, 4, 0),
        Op::new(FIRE, 8, 0, 2),
        bar(BAR_RD, 2, 0xa_1000, 8, 0),
        bar(BAR_WR, 2, 0xa_001c, 4, 1),
        Op::new(FIRE, 8, 0, 1),
        bar(BAR_RD, 2, 0xa_1000, 8, 0),
        bar(BAR_RD, 2, 0xa_0010, 8, 0),
        ecam_wr(0x72, 2, 0),
    ]);
    write(t, "msix-enable", &encode(&[], &msix));

    // MSI (64-bit, per-vector mask), two vectors, then back to INTx.
    let msi = [
        ecam_wr(0x54, 4, 0xfee0_1000),
        ecam_wr(0x58, 4, 0),
        ecam_wr(0x5c, 2, 0x4041),
        ecam_wr(0x60, 4, 0),
        ecam_wr(0x52, 2, 0x0011),
        Op::new(FIRE, 8, 0, 1),
        ecam_rd(0x64, 4),
        ecam_wr(0x60, 4, 2),
        ecam_wr(0x52, 2, 0),
        Op::new(FIRE, 8, 0, 0),
    ];
    write(t, "msi-enable", &encode(&[], &msi));

    // The VMM runs out of KVM slots and GSIs while the guest moves a BAR and enables MSI-X.
    let fail = [
        Op::new(FAIL, 8, 0, 3),
        ecam_wr(0x04, 2, 0x0006),
        ecam_wr(0x10, 4, 0xc400_0000),
        ecam_wr(0x72, 2, 0x8000),
        bar(BAR_WR, 2, 0xa_000c, 4, 0),
        Op::new(FAIL, 8, 0, 0),
        bar(BAR_WR, 2, 0xa_0000, 4, 0xfee0_0000),
        ecam_wr(0x10, 4, 0xc500_0000),
        ecam_wr(0x72, 2, 0),
    ];
    write(t, "services-fail", &encode(&[], &fail));

    let raw: Vec<Op> = [
        0xfec0_0000u32,
        0xd000_0000,
        0xc000_0000,
        0xdfff_fffc,
        0xffff_fff0,
    ]
    .into_iter()
    .map(|a| Op::new(RAW_RD, 4, a, 0))
    .chain([Op::new(RAW_RD, 2, 0xcfa, 1), Op::new(RAW_RD, 4, 0xcf8, 1)])
    .collect();
    write(t, "unclaimed", &encode(&[], &raw));
}

/// A msix_table header: capability dword (table size - 1 in bits 16-26), table and PBA
/// registers, VFIO's vector count.
fn msix_header(size: u16, table: u32, pba: u32, vfio: u8) -> Vec<u8> {
    let mut h = Vec::with_capacity(16);
    h.extend_from_slice(&(0x11 | u32::from(size - 1) << 16).to_le_bytes());
    h.extend_from_slice(&table.to_le_bytes());
    h.extend_from_slice(&pba.to_le_bytes());
    h.extend_from_slice(&[vfio, 0, 0, 0]);
    h
}

// msix_table kinds; `addr` bit 28 picks the PBA, bits 0-15 are 16 + the offset in it.
const CAP_WR: u8 = 0;
const RD: u8 = 1;
const WR: u8 = 2;
const RAISE: u8 = 3;
const PBA: u32 = 1 << 28;

fn table(kind: u8, offset: u32, width: usize, v: u64) -> Op {
    Op::new(kind, width, 16 + offset, v)
}

fn pba(offset: u32, width: usize) -> Op {
    Op::new(RD, width, PBA | (16 + offset), 0)
}

fn program(entries: u32, masked: bool) -> Vec<Op> {
    (0..entries)
        .flat_map(|i| {
            [
                table(WR, 16 * i, 8, 0xfee0_0000 | u64::from(i) << 12),
                table(WR, 16 * i + 8, 4, 0x4000 + u64::from(i)),
                table(WR, 16 * i + 12, 4, u64::from(masked)),
            ]
        })
        .collect()
}

fn msix_table() {
    let t = "msix_table";
    let mut linux = vec![Op::new(CAP_WR, 2, 2, 0xc000)];
    linux.extend(program(16, false));
    linux.extend([
        Op::new(CAP_WR, 2, 2, 0x8000),
        Op::new(RAISE, 8, 0, 3),
        table(WR, 3 * 16 + 12, 4, 1),
        Op::new(RAISE, 8, 0, 3),
        pba(0, 8),
        table(RD, 3 * 16, 4, 0),
        Op::new(CAP_WR, 4, 0, 0x0000_0011),
    ]);
    write(
        t,
        "linux-enable",
        &encode(&msix_header(16, 0xa_0002, 0xa_1002, 16), &linux),
    );

    let mut big = vec![Op::new(CAP_WR, 1, 3, 0x80)];
    big.extend(program(4, true));
    big.extend([
        table(WR, 2047 * 16, 8, 0xfee0_0000),
        table(WR, 2047 * 16 + 12, 4, 0),
        Op::new(RAISE, 8, 0, 200),
        pba(24, 8),
        pba(248, 8),
        Op::new(CAP_WR, 1, 3, 0xc0),
    ]);
    write(
        t,
        "2048-entries",
        &encode(&msix_header(2048, 0, 0x8000, 255), &big),
    );

    // Table and PBA overlapping in one BAR, odd widths, an entry boundary crossed.
    let odd = [
        Op::new(CAP_WR, 4, 0, 0x8000_0011),
        table(WR, 2, 2, 0xffff),
        table(WR, 4, 8, 0x1234_5678_9abc_def0),
        table(RD, 14, 4, 0),
        table(RD, 12, 8, 0),
        Op::new(WR, 4, (1 << 27) | (5 << 29) | 16, 0), // BAR 5
        Op::new(RD, 1, PBA | 15, 0),                   // just before the PBA
    ];
    write(
        t,
        "overlap-and-odd-widths",
        &encode(&msix_header(8, 0x1003, 0x1043, 8), &odd),
    );

    // VFIO offers no vectors (enabling fails), then fewer than the table has.
    let fail = [
        Op::new(CAP_WR, 2, 2, 0x8000),
        Op::new(RAISE, 8, 0, 0),
        Op::new(CAP_WR, 2, 2, 0),
    ];
    write(
        t,
        "vfio-no-vectors",
        &encode(&msix_header(16, 0x4, 0x804, 0), &fail),
    );
    let mut few = vec![Op::new(CAP_WR, 2, 2, 0x8000)];
    few.extend(program(16, false));
    few.push(Op::new(RAISE, 8, 0, 3));
    write(
        t,
        "vfio-fewer-vectors",
        &encode(&msix_header(16, 0x4, 0x804, 4), &few),
    );
}

fn http_request() {
    let t = "http_request";
    let curl = "Host: localhost\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\n";
    let reqs: Vec<(&str, u8, String)> = vec![
        ("get-vm", 1, format!("GET /vm HTTP/1.1\r\n{curl}\r\n")),
        ("pause", 1, format!("PUT /vm/pause HTTP/1.1\r\n{curl}\r\n")),
        (
            "resume",
            2,
            format!("PUT /vm/resume HTTP/1.1\r\n{curl}\r\n"),
        ),
        (
            "shutdown-timeout",
            2,
            format!(
                "PUT /vm/shutdown HTTP/1.1\r\n{curl}Content-Length: 16\r\n\
                 Content-Type: application/x-www-form-urlencoded\r\n\r\n{{\"timeout_s\": 10}}"
            ),
        ),
        (
            "reboot-stopped",
            4,
            format!("PUT /vm/reboot HTTP/1.1\r\n{curl}\r\n"),
        ),
        (
            "pause-starting",
            0,
            "PUT /vm/pause?now=1 HTTP/1.0\r\n\r\n".into(),
        ),
        ("wrong-method", 1, "DELETE /vm HTTP/1.1\r\n\r\n".into()),
        (
            "chunked",
            1,
            "PUT /vm/shutdown HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".into(),
        ),
        ("http2", 1, "GET /vm HTTP/2\r\n\r\n".into()),
        (
            "bad-body",
            3,
            "PUT /vm/shutdown HTTP/1.1\r\ncontent-length: 15\r\n\r\n{\"timeout\": -1}".into(),
        ),
    ];
    for (name, state, req) in reqs {
        let mut input = vec![state, 0, 0];
        input.extend_from_slice(req.as_bytes());
        write(t, name, &input);
    }
    // A client sending a byte at a time, and one that stalls inside its body.
    let mut slow = vec![1, 1, 0];
    slow.extend_from_slice(b"PUT /vm/shutdown HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}");
    write(t, "byte-at-a-time", &slow);
    let mut stall = vec![1, 7, 1];
    stall.extend_from_slice(
        b"PUT /vm/shutdown HTTP/1.1\r\nContent-Length: 40\r\n\r\n{\"timeout_s\": 1}",
    );
    write(t, "stalls-in-body", &stall);
}

fn vm_config() {
    let t = "vm_config";
    let config_md = include_str!("../../../docs/config.md");
    let readme = include_str!("../../../README.md");
    let mut texts: Vec<(String, u8, String)> = Vec::new();
    for (i, b) in blocks(config_md, "toml").into_iter().enumerate() {
        texts.push((format!("config-md-{i}.toml"), 0, b.into()));
    }
    for (i, b) in blocks(config_md, "json").into_iter().enumerate() {
        texts.push((format!("config-md-{i}.json"), 1, b.into()));
    }
    for (i, b) in blocks(readme, "toml").into_iter().enumerate() {
        texts.push((format!("readme-matrix-{i}.toml"), 2, b.into()));
    }
    texts.extend([
        ("minimal.toml".into(), 0, "[kernel]\npath = \"/k\"\n".into()),
        (
            "numbers.toml".into(),
            0,
            "boot_timeout = 0\ntimeout = 90\n[kernel]\npath = \"/k\"\n[machine]\nmemory = 1073741824\n"
                .into(),
        ),
        (
            "every-field.json".into(),
            1,
            r#"{"kernel": {"path": "/k", "initramfs": "/i", "cmdline": "quiet"},
 "machine": {"vcpus": 2, "memory": "4G"},
 "devices": ["01:00.0", "0000:41:00.0,p2p=on,clique=7", "/sys/bus/pci/devices/0000:42:00.1,p2p=off"],
 "boot_timeout": "90s", "timeout": "500ms"}"#
                .into(),
        ),
        (
            "cases.toml".into(),
            2,
            "devices = [\"0000:00:04.0\"]\ntimeout = \"2m\"\n\n[[case]]\nname = \"boots\"\n\
             kernel = { path = \"/l2/vmlinux\", initramfs = \"pass.img\" }\n\n[[case]]\n\
             name = \"exit-3\"\nexpect = 3\nboot_timeout = \"0\"\ndevices = [\"01:00.0\"]\n\
             machine = { vcpus = 2, memory = \"1G\" }\n[case.kernel]\npath = \"vmlinuz\"\n"
                .into(),
        ),
    ]);
    for (name, mode, text) in texts {
        let mut input = vec![mode];
        input.extend_from_slice(text.as_bytes());
        write(t, &name, &input);
    }
}

// virtio_net kinds and descriptor flags.
const DESC: u8 = 0;
const AVAIL: u8 = 1;
const FRAME: u8 = 2;
const TX: u8 = 3;
const RX: u8 = 4;
const RAW: u8 = 5;
const D_NEXT: u32 = 1;
const D_WRITE: u32 = 2;
const D_INDIRECT: u32 = 4;

fn desc(q: u32, idx: u32, gaddr: u64, len: u32, flags: u32, next: u32) -> Op {
    Op::new(
        DESC,
        8,
        q | idx << 8 | flags << 16 | next << 24,
        gaddr << 32 | u64::from(len),
    )
}

fn avail(q: u32, head: u32) -> Op {
    Op::new(AVAIL, 8, q | head << 8, 0)
}

fn frame(len: u64, pattern: u32) -> Op {
    Op::new(FRAME, 8, pattern, len)
}

fn virtio_net() {
    let t = "virtio_net";
    // Queues of 256, mergeable buffers: Linux posts 1536-byte buffers, frames of one, two
    // and three buffers arrive, then the guest sends a frame (header in its own descriptor).
    let mut ops = Vec::new();
    for i in 0..4u32 {
        ops.push(desc(0, i, 0x8000 + 0x800 * u64::from(i), 1536, D_WRITE, 0));
        ops.push(avail(0, i));
    }
    ops.extend([
        frame(72, 1),
        frame(1512, 2),
        frame(3000, 3),
        Op::new(RX, 8, 0, 0),
    ]);
    ops.extend([
        desc(1, 0, 0x20000, 12, D_NEXT, 1),
        desc(1, 1, 0x20100, 1500, 0, 0),
        avail(1, 0),
        Op::new(TX, 8, 0, 0),
        // A frame waits for buffers, then gets them.
        frame(200, 4),
        Op::new(RX, 8, 0, 0),
        desc(0, 4, 0x30000, 4096, D_WRITE, 0),
        avail(0, 4),
        Op::new(RX, 8, 0, 0),
    ]);
    write(
        t,
        "linux-mrg",
        &encode(&[8, 8, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], &ops),
    );

    // No mergeable buffers, small queues: one big receive buffer in three descriptors, a
    // frame too big for a small one.
    let ops = vec![
        desc(0, 0, 0x8000, 12, D_WRITE | D_NEXT, 1),
        desc(0, 1, 0x9000, 30000, D_WRITE | D_NEXT, 2),
        desc(0, 2, 0x18000, 35550, D_WRITE, 0),
        avail(0, 0),
        frame(65562, 5),
        Op::new(RX, 8, 0, 0),
        desc(0, 3, 0x30000, 100, D_WRITE, 0),
        avail(0, 3),
        frame(500, 6),
        frame(50, 7),
        Op::new(RX, 8, 0, 0),
    ];
    write(
        t,
        "single-buffers",
        &encode(&[4, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], &ops),
    );

    // Broken chains both ways: writable transmit data, a loop, an indirect table, a head
    // past the ring, a length past guest RAM, an avail index far ahead.
    let ops = vec![
        desc(1, 0, 0x20000, 12, D_NEXT, 1),
        desc(1, 1, 0x20100, 100, D_WRITE, 0),
        avail(1, 0),
        desc(1, 2, 0x20000, 16, D_NEXT, 2),
        avail(1, 2),
        desc(1, 3, 0x21000, 32, D_INDIRECT, 0),
        Op::new(RAW, 8, 0x21000, 0x0002_0000),
        Op::new(RAW, 8, 0x21008, 0x0000_0000_0000_0100),
        avail(1, 3),
        avail(1, 200),
        desc(1, 4, 0x3fff0, 0x100, 0, 0),
        avail(1, 4),
        Op::new(TX, 8, 0, 0),
        desc(0, 0, 0x8000, 512, 0, 0),
        avail(0, 0),
        desc(0, 1, 0x8000, 5, D_WRITE, 0),
        avail(0, 1),
        frame(100, 8),
        Op::new(RX, 8, 0, 0),
        Op::new(6, 8, 1, 0x4000),
        Op::new(TX, 8, 0, 0),
    ];
    write(
        t,
        "bad-chains",
        &encode(&[3, 3, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], &ops),
    );
}

fn main() {
    virtio_net();
    bus_platform();
    pci_config();
    msix_table();
    http_request();
    vm_config();
    virtio_blk();
}

// virtio_blk kinds.
const V_CFG_WR: u8 = 0;
const V_BAR_WR: u8 = 2;
const V_BAR_RD: u8 = 3;
const V_MEM: u8 = 4;
const V_NOTIFY: u8 = 5;
const V_WAIT: u8 = 6;

fn v_cfg(off: u32, width: usize, v: u64) -> Op {
    Op::new(V_CFG_WR, width, off, v)
}

fn v_bar(bar: u8, off: u32, width: usize, v: u64) -> Op {
    let sel = if bar == 2 { 1 << 16 } else { 0 };
    Op::new(V_BAR_WR, width, off | sel, v)
}

fn v_mem(addr: u32, v: u64) -> Op {
    Op::new(V_MEM, 8, addr, v)
}

/// A split-ring descriptor at index `i` of the table at 0x1000.
fn v_desc(i: u32, addr: u64, len: u32, flags: u16, next: u16) -> [Op; 2] {
    let meta = u64::from(len) | u64::from(flags) << 32 | u64::from(next) << 48;
    [v_mem(0x1000 + 16 * i, addr), v_mem(0x1008 + 16 * i, meta)]
}

/// Linux's bring-up: memory decoding, ACK, DRIVER, features, FEATURES_OK, queue 0 at
/// 0x1000/0x2000/0x3000 (16 entries, vector 1), DRIVER_OK.
fn v_bring_up(features_lo: u64) -> Vec<Op> {
    vec![
        v_cfg(0x04, 2, 0x0006),
        v_bar(0, 0x14, 1, 0),
        v_bar(0, 0x14, 1, 1),
        v_bar(0, 0x14, 1, 3),
        v_bar(0, 0x00, 4, 1),
        Op::new(V_BAR_RD, 4, 0x04, 0),
        v_bar(0, 0x08, 4, 0),
        v_bar(0, 0x0c, 4, features_lo),
        v_bar(0, 0x08, 4, 1),
        v_bar(0, 0x0c, 4, 1),
        v_bar(0, 0x14, 1, 0xb),
        v_bar(0, 0x16, 2, 0),
        v_bar(0, 0x18, 2, 16),
        v_bar(0, 0x1a, 2, 1),
        v_bar(0, 0x10, 2, 0),
        v_bar(0, 0x20, 4, 0x1000),
        v_bar(0, 0x28, 4, 0x2000),
        v_bar(0, 0x30, 4, 0x3000),
        v_bar(0, 0x1c, 2, 1),
        v_bar(0, 0x14, 1, 0xf),
    ]
}

/// Request `n` (0-based) of `kind` at `sector` with one 512-byte data buffer.
fn v_request(n: u16, kind: u64, sector: u64, data_flags: u16) -> Vec<Op> {
    let mut ops = vec![v_mem(0x8000, kind), v_mem(0x8008, sector)];
    ops.extend(v_desc(0, 0x8000, 16, 1, 1));
    ops.extend(v_desc(1, 0x9000, 512, 1 | data_flags, 2));
    ops.extend(v_desc(2, 0x8100, 1, 2, 0));
    // avail: flags 0, idx n + 1, ring[n] = 0 (ring entries start zeroed).
    ops.push(v_mem(0x2000, u64::from(n + 1) << 16));
    ops.push(Op::new(V_NOTIFY, 1, 0, 0));
    ops.push(Op::new(V_WAIT, 1, 0, 0));
    ops
}

fn virtio_blk() {
    let t = "virtio_blk";
    const FEATURES: u64 = 0x244; // SEG_MAX, BLK_SIZE, FLUSH
    let mut rw = v_bring_up(FEATURES);
    rw.push(v_mem(0x9000, 0x1122_3344_5566_7788));
    rw.extend(v_request(0, 1, 3, 0));
    rw.extend(v_request(1, 0, 3, 2));
    rw.extend(v_request(2, 8, 0, 2)); // GET_ID
    rw.extend(v_request(3, 4, 0, 0)); // FLUSH
    rw.push(Op::new(V_BAR_RD, 1, 0x1000, 0)); // ISR
    write(t, "write-read-id-flush", &encode(&[], &rw));

    // MSI-X on (function masked while the table is written, as Linux does), then a request.
    let mut msix = vec![v_cfg(0x04, 2, 0x0006), v_cfg(0x9a, 2, 0xc000)];
    for e in 0..2u32 {
        msix.push(v_bar(2, 16 * e, 4, 0xfee0_0000));
        msix.push(v_bar(2, 16 * e + 8, 4, 0x40 + u64::from(e)));
        msix.push(v_bar(2, 16 * e + 12, 4, 0));
    }
    msix.push(v_cfg(0x9a, 2, 0x8000));
    msix.extend(v_bring_up(FEATURES));
    msix.extend(v_request(0, 0, 1, 2));
    msix.push(v_bar(2, 12 + 16, 4, 1)); // mask the queue's vector
    msix.extend(v_request(1, 0, 2, 2));
    msix.push(Op::new(V_BAR_RD, 8, 0x800 | 1 << 16, 0)); // PBA
    write(t, "msix", &encode(&[], &msix));

    // Read-only disk with INTx (3 trailing bytes): a refused write, the ISR, a reset.
    let mut ro = v_bring_up(FEATURES | 0x20);
    ro.extend(v_request(0, 1, 0, 0));
    ro.push(Op::new(V_BAR_RD, 1, 0x1000, 0));
    ro.push(v_bar(0, 0x14, 1, 0));
    ro.extend(v_bring_up(FEATURES | 0x20));
    let mut bytes = encode(&[], &ro);
    bytes.extend_from_slice(&[0, 0, 0]);
    write(t, "readonly-intx-reset", &bytes);

    // BAR 0 moved while the device runs, then the PCI_CFG window reads num_queues.
    let mut mv = v_bring_up(FEATURES);
    mv.extend([
        v_cfg(0x10, 4, 0xd000_0004),
        v_cfg(0x14, 4, 0),
        v_cfg(0x88, 1, 0),
        v_cfg(0x8c, 4, 0x12),
        v_cfg(0x90, 4, 2),
        Op::new(1, 4, 0x94, 0),
    ]);
    mv.extend(v_request(0, 0, 0, 2));
    write(t, "bar-move-window", &encode(&[], &mv));
}
