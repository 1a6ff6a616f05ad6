//! Connections both ways, data, credit, shutdown and resets.

use std::io::{Read, Write};
use std::time::Duration;

use super::*;
use crate::virtio::vsock::BUF_ALLOC;

#[test]
fn host_to_guest_data_both_ways_and_shutdowns() {
    let mut g = Guest::new();
    let (mut s, local) = host_connect(&mut g, 5000);
    s.write_all(b"ping").unwrap();
    let (h, data) = g.recv_no_update();
    assert_eq!((h.op, h.src_port, h.dst_port), (OP_RW, local, 5000));
    assert_eq!(data, b"ping");
    g.send(pkt(OP_RW, 5000, local), b"pong");
    assert_eq!(read_n(&mut s, 4), b"pong");
    // The guest closes: SHUTDOWN both ways, the host sees EOF, the guest an RST.
    let mut sd = pkt(OP_SHUTDOWN, 5000, local);
    sd.flags = SHUTDOWN_RCV | SHUTDOWN_SEND;
    g.send(sd, &[]);
    assert_closed(&mut s);
    let (h, _) = g.recv_no_update();
    assert_eq!((h.op, h.dst_port), (OP_RST, 5000));

    // The host closes: the guest sees SHUTDOWN (no more data), then closes its side.
    let (s, local) = host_connect(&mut g, 5000);
    drop(s);
    let (h, _) = g.recv_no_update();
    assert_eq!(
        (h.op, h.flags & SHUTDOWN_SEND),
        (OP_SHUTDOWN, SHUTDOWN_SEND)
    );
    let mut sd = pkt(OP_SHUTDOWN, 5000, local);
    sd.flags = SHUTDOWN_RCV | SHUTDOWN_SEND;
    g.send(sd, &[]);
    assert_eq!(g.recv_no_update().0.op, OP_RST);
}

#[test]
fn host_half_close_keeps_the_other_direction() {
    let mut g = Guest::new();
    let (mut s, local) = host_connect(&mut g, 5000);
    s.write_all(b"request").unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let (h, d) = g.recv_no_update();
    assert_eq!((h.op, d.as_slice()), (OP_RW, &b"request"[..]));
    assert_eq!(g.recv_no_update().0.op, OP_SHUTDOWN);
    g.send(pkt(OP_RW, 5000, local), b"answer");
    assert_eq!(read_n(&mut s, 6), b"answer");
    let mut sd = pkt(OP_SHUTDOWN, 5000, local);
    sd.flags = SHUTDOWN_SEND;
    g.send(sd, &[]);
    assert_closed(&mut s);
    assert_eq!(g.recv_no_update().0.op, OP_RST);
}

#[test]
fn a_guest_that_refuses_closes_the_host_stream() {
    let mut g = Guest::new();
    let mut s = client(&g);
    s.write_all(b"CONNECT 5001\n").unwrap();
    let (h, _) = g.recv();
    assert_eq!(h.op, OP_REQUEST);
    g.send(h.reset_reply(), &[]);
    assert_closed(&mut s);
    assert!(
        g.try_recv(Duration::from_millis(50)).is_none(),
        "no answer to an RST"
    );
}

#[test]
fn guest_to_host_through_the_port_socket() {
    let mut g = Guest::new();
    let l = host_listener(&g, 6000);
    g.send(pkt(OP_REQUEST, 1234, 6000), &[]);
    let (h, _) = g.recv();
    assert_eq!(
        (h.op, h.src_cid, h.src_port, h.dst_port),
        (OP_RESPONSE, HOST_CID, 6000, 1234)
    );
    let (mut s, _) = l.accept().unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    g.send(pkt(OP_RW, 1234, 6000), b"hello host");
    assert_eq!(read_n(&mut s, 10), b"hello host");
    s.write_all(b"hello guest").unwrap();
    let (h, d) = g.recv_no_update();
    assert_eq!((h.op, d.as_slice()), (OP_RW, &b"hello guest"[..]));
    // The guest stops sending: the host reads EOF and can still answer.
    let mut sd = pkt(OP_SHUTDOWN, 1234, 6000);
    sd.flags = SHUTDOWN_SEND;
    g.send(sd, &[]);
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    s.write_all(b"bye").unwrap();
    drop(s);
    let (h, d) = g.recv_no_update();
    assert_eq!((h.op, d.as_slice()), (OP_RW, &b"bye"[..]));
    assert_eq!(g.recv_no_update().0.op, OP_SHUTDOWN);
    assert_eq!(g.recv_no_update().0.op, OP_RST, "both directions done");

    // Nobody at port 6001.
    g.send(pkt(OP_REQUEST, 1235, 6001), &[]);
    let (h, _) = g.recv();
    assert_eq!((h.op, h.src_port, h.dst_port), (OP_RST, 6001, 1235));
}

#[test]
fn a_guest_beyond_its_credit_is_reset() {
    let mut g = Guest::new();
    let (mut s, local) = host_connect(&mut g, 5000);
    let chunk = vec![0x42u8; 64 << 10];
    let mut sent = 0usize;
    let mut reset = false;
    // The host reads nothing: its socket fills, then our buffer (BUF_ALLOC) does.
    while sent < 64 << 20 && !reset {
        g.send(pkt(OP_RW, 5000, local), &chunk);
        sent += chunk.len();
        while let Some((h, _)) = g.try_recv(Duration::from_millis(1)) {
            reset |= h.op == OP_RST;
        }
    }
    assert!(reset, "no RST after {sent} bytes");
    assert!(sent > BUF_ALLOC as usize);
    // The host stream ends after what was forwarded.
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    assert!(got.len() < sent && got.iter().all(|&b| b == 0x42));
}

#[test]
fn host_data_waits_for_the_guests_credit() {
    let mut g = Guest::new();
    let mut s = client(&g);
    s.write_all(b"CONNECT 5000\n").unwrap();
    let (h, _) = g.recv();
    let local = h.src_port;
    let mut resp = pkt(OP_RESPONSE, 5000, local);
    resp.buf_alloc = 8;
    g.send(resp, &[]);
    let ok = format!("OK {local}\n");
    assert_eq!(read_n(&mut s, ok.len()), ok.as_bytes());
    s.write_all(b"0123456789abcdef").unwrap();
    let (h, d) = g.recv_no_update();
    assert_eq!((h.op, d.as_slice()), (OP_RW, &b"01234567"[..]));
    assert_eq!(g.recv_no_update().0.op, OP_CREDIT_REQUEST);
    assert!(
        g.try_recv(Duration::from_millis(50)).is_none(),
        "no credit, no data"
    );
    let mut up = pkt(OP_CREDIT_UPDATE, 5000, local);
    up.buf_alloc = 8;
    up.fwd_cnt = 8;
    g.send(up, &[]);
    let (h, d) = g.recv_no_update();
    assert_eq!((h.op, d.as_slice()), (OP_RW, &b"89abcdef"[..]));
    // The guest asks for our credit.
    g.send(pkt(OP_CREDIT_REQUEST, 5000, local), &[]);
    let mut h = g.recv().0;
    if h.op == OP_CREDIT_REQUEST {
        // Out of credit again, the device could not know the stream was drained.
        h = g.recv().0;
    }
    assert_eq!((h.op, h.buf_alloc), (OP_CREDIT_UPDATE, BUF_ALLOC));
}

#[test]
fn bad_first_lines_close_only_their_stream() {
    let mut g = Guest::new();
    let mut bad = client(&g);
    bad.write_all(b"HELLO 5000\n").unwrap();
    let mut long = client(&g);
    long.write_all(&[b'7'; 40]).unwrap();
    let mut big = client(&g);
    big.write_all(b"CONNECT 99999999999\n").unwrap();
    let (mut good, _) = host_connect(&mut g, 5000);
    for s in [&mut bad, &mut long, &mut big] {
        assert_closed(s);
    }
    good.write_all(b"fine").unwrap();
    let (_, d) = g.recv_no_update();
    assert_eq!(d, b"fine");
    // Data sent right behind the line is not lost.
    let mut s = client(&g);
    s.write_all(b"CONNECT 5002\nearly").unwrap();
    let (h, _) = g.recv();
    assert_eq!((h.op, h.dst_port), (OP_REQUEST, 5002));
    g.send(pkt(OP_RESPONSE, 5002, h.src_port), &[]);
    let (h, d) = g.recv_no_update();
    assert_eq!((h.op, d.as_slice()), (OP_RW, &b"early"[..]));
}

#[test]
fn wrong_addresses_types_and_ops_get_rst() {
    let mut g = Guest::new();
    let (mut s, local) = host_connect(&mut g, 5000);
    let mut wrong = pkt(OP_RW, 5000, local);
    wrong.src_cid = 9;
    g.send(wrong, b"x");
    assert_eq!(g.recv().0.op, OP_RST);
    let mut wrong = pkt(OP_REQUEST, 1, 2);
    wrong.dst_cid = 5;
    g.send(wrong, &[]);
    assert_eq!(g.recv().0.op, OP_RST);
    let mut wrong = pkt(OP_REQUEST, 1, 2);
    wrong.kind = 2; // SEQPACKET
    g.send(wrong, &[]);
    assert_eq!(g.recv().0.op, OP_RST);
    // An RST for nothing is dropped; data for nothing gets an RST.
    g.send(pkt(OP_RST, 1, 2), &[]);
    g.send(pkt(OP_RW, 1, 2), b"x");
    let (h, _) = g.recv();
    assert_eq!((h.op, h.src_port, h.dst_port), (OP_RST, 2, 1));
    // A header with a payload shorter than its len, then no header at all.
    let mut h = pkt(OP_RW, 5000, local);
    h.len = 100;
    g.mem
        .write_slice(&h.to_bytes(), GuestAddress(TX_HDR))
        .unwrap();
    g.send_chain(&[(TX_HDR, HDR_LEN as u32, 0), (TX_DATA, 10, 0)]);
    assert_eq!(g.recv_no_update().0.op, OP_RST);
    assert_closed(&mut s);
    g.send_chain(&[(TX_HDR, 10, 0)]);
    g.send_chain(&[(TX_HDR, HDR_LEN as u32, F_WRITE)]);
    // An unknown op on a live connection resets it.
    let (mut s, local) = host_connect(&mut g, 5000);
    g.send(pkt(42, 5000, local), &[]);
    assert_eq!(g.recv_no_update().0.op, OP_RST);
    assert_closed(&mut s);
    // And the device still works.
    let (mut s, _) = host_connect(&mut g, 5000);
    s.write_all(b"ok").unwrap();
    assert_eq!(g.recv_no_update().1, b"ok");
}
