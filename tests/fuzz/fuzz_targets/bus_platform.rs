//! The port I/O bus with the platform devices wired as `vmm::device_manager::platform` does
//! it (COM1, i8042, ACPI PM, guest marker, guest exit port), without KVM: the interrupt
//! lines are plain eventfds and the guest's requests go to a recorder.
//!
//! Ops (`kind % 3`): 0 read, 1 write (1/2/4 bytes at any port), 2 host input to COM1.
//! Checked: unclaimed ports read all-ones and writes to them are dropped; what the devices
//! report (reset, poweroff, exit status, marker) is exactly what the writes asked for; the
//! simple devices read as documented; COM1 never prints more bytes than it was written and
//! its input FIFO accounts for every byte queued.

#![no_main]

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use arch::layout::{
    ACPI_RESET_PORT, ACPI_RESET_VALUE, ACPI_S5_SLEEP_TYPE, ACPI_SLEEP_CONTROL_PORT,
    ACPI_SLEEP_STATUS_PORT, COM1_PORT, GUEST_EXIT_PORT, GUEST_MARKER_PORT, I8042_CMD_PORT,
    I8042_DATA_PORT,
};
use devices::acpi_pm::{AcpiPm, ACPI_PM_LEN};
use devices::guest_exit::GuestExit;
use devices::i8042::I8042;
use devices::marker::GuestMarker;
use devices::serial::{SerialDevice, SerialSignals};
use devices::{Bus, BusDevice, GuestRequest, RequestSink, WeakBusDevice};
use libfuzzer_sys::fuzz_target;
use vmm_sys_util::eventfd::EventFd;
use zhitong_fuzz::{ops, Op};

/// What the devices told the VMM, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Event {
    Request(GuestRequest),
    Marker(u8),
}

type Events = Arc<Mutex<Vec<Event>>>;

/// COM1's output: only counted.
struct Counter(Arc<Mutex<usize>>);

impl Write for Counter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        *self.0.lock().unwrap() += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn sink(events: &Events) -> RequestSink {
    let events = events.clone();
    Box::new(move |r| events.lock().unwrap().push(Event::Request(r)))
}

/// (base, length) of each device's ports, as the VMM inserts them.
const RANGES: [(u16, u64); 5] = [
    (COM1_PORT, 8),
    (I8042_DATA_PORT, 5),
    (ACPI_SLEEP_CONTROL_PORT, ACPI_PM_LEN),
    (GUEST_MARKER_PORT, 1),
    (GUEST_EXIT_PORT, 1),
];

const COM1: std::ops::Range<u16> = COM1_PORT..COM1_PORT + 8;

fn claimed(port: u16) -> bool {
    RANGES
        .iter()
        .any(|&(base, len)| port >= base && u64::from(port - base) < len)
}

/// What a write of `data` at `port` should make the devices report.
fn expected(port: u16, data: &[u8]) -> Option<Event> {
    let first = data[0];
    match port {
        I8042_CMD_PORT if first == 0xfe => Some(Event::Request(GuestRequest::Reset)),
        ACPI_SLEEP_CONTROL_PORT
            if first & (1 << 5) != 0 && (first >> 2) & 7 == ACPI_S5_SLEEP_TYPE =>
        {
            Some(Event::Request(GuestRequest::Poweroff))
        }
        ACPI_RESET_PORT if first == ACPI_RESET_VALUE => Some(Event::Request(GuestRequest::Reset)),
        GUEST_EXIT_PORT => Some(Event::Request(GuestRequest::ExitStatus(first))),
        GUEST_MARKER_PORT => Some(Event::Marker(first)),
        _ => None,
    }
}

/// A port from the op: mostly near a device (bit 16 set), else anywhere.
fn port(op: &Op) -> u16 {
    if op.addr & 0x1_0000 != 0 {
        let (base, _) = RANGES[(op.addr >> 17) as usize % RANGES.len()];
        base.wrapping_add((op.addr & 0xf) as u16)
    } else {
        op.addr as u16
    }
}

fuzz_target!(|data: &[u8]| {
    let pio = Bus::new();
    let events = Events::default();
    let printed = Arc::new(Mutex::new(0usize));
    let signals = Arc::new(SerialSignals {
        input_drained: EventFd::new(libc::EFD_NONBLOCK).unwrap(),
        touched: Arc::new(AtomicBool::new(false)),
    });
    let serial = Arc::new(Mutex::new(SerialDevice::new(
        EventFd::new(libc::EFD_NONBLOCK).unwrap(),
        signals.clone(),
        Box::new(Counter(printed.clone())),
    )));
    let marker_events = events.clone();
    let devices: [Arc<Mutex<dyn BusDevice>>; 5] = [
        serial.clone(),
        Arc::new(Mutex::new(I8042::new(sink(&events)))),
        Arc::new(Mutex::new(AcpiPm::new(
            ACPI_S5_SLEEP_TYPE,
            ACPI_RESET_VALUE,
            sink(&events),
        ))),
        Arc::new(Mutex::new(GuestMarker::new(Box::new(move |v| {
            marker_events.lock().unwrap().push(Event::Marker(v))
        })))),
        Arc::new(Mutex::new(GuestExit::new(sink(&events)))),
    ];
    for (&(base, len), dev) in RANGES.iter().zip(&devices) {
        pio.insert(u64::from(base), len, Arc::downgrade(dev) as WeakBusDevice)
            .unwrap();
    }

    let mut want: Vec<Event> = Vec::new();
    let mut com1_writes = 0usize;
    for op in ops(data) {
        let port = port(&op);
        let width = op.pio_width();
        match op.kind % 3 {
            0 => {
                let mut buf = vec![0u8; width];
                let hit = pio.read(u64::from(port), &mut buf);
                assert_eq!(hit, claimed(port), "read at {port:#x}");
                if !hit {
                    assert!(
                        buf.iter().all(|&b| b == 0xff),
                        "unclaimed {port:#x}: {buf:?}"
                    );
                } else if COM1.contains(&port) {
                    // Only the addressed register's byte; the rest of a wide read is 0.
                    assert!(buf[1..].iter().all(|&b| b == 0), "COM1 {port:#x}: {buf:?}");
                } else {
                    let mut want = vec![0u8; width];
                    if port == ACPI_SLEEP_STATUS_PORT {
                        want[0] = 1 << 7; // WAK_STS: always awake
                    }
                    assert_eq!(buf, want, "read at {port:#x}");
                }
            }
            1 => {
                let bytes = op.data(width);
                let hit = pio.write(u64::from(port), &bytes);
                assert_eq!(hit, claimed(port), "write at {port:#x}");
                if COM1.contains(&port) {
                    com1_writes += 1;
                    assert!(signals.touched.load(Ordering::Relaxed));
                }
                want.extend(expected(port, &bytes));
            }
            _ => {
                let input = op.data(op.width);
                let mut com1 = serial.lock().unwrap();
                let space = com1.input_space();
                let taken = com1.enqueue_input(&input).unwrap();
                assert!(taken <= input.len().min(space), "took {taken} of {space}");
                assert_eq!(com1.input_space(), space - taken);
            }
        }
        assert_eq!(*events.lock().unwrap(), want);
        assert!(*printed.lock().unwrap() <= com1_writes);
    }
    assert_eq!(
        signals.touched.load(Ordering::Relaxed),
        com1_writes > 0,
        "COM1 marks the guest alive on its first write"
    );
});
