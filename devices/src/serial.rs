//! COM1: vm-superio's 16550A, raising its IRQ through an EventFd (an irqfd in KVM), with
//! its output going to any writer and input fed by the VMM.

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use vm_superio::serial::SerialEvents;
use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

use crate::BusDevice;

/// The serial's interrupt line as an EventFd.
pub struct IrqTrigger(pub EventFd);

impl Trigger for IrqTrigger {
    type E = io::Error;
    fn trigger(&self) -> io::Result<()> {
        self.0.write(1)
    }
}

/// Events the VMM needs from the UART: the guest drained the input FIFO (so more input can
/// be queued), and the guest touched the UART at all (a sign the kernel is alive).
pub struct SerialSignals {
    pub input_drained: EventFd,
    pub touched: Arc<AtomicBool>,
}

impl SerialEvents for SerialSignals {
    fn buffer_read(&self) {}
    fn out_byte(&self) {}
    fn tx_lost_byte(&self) {}
    fn in_buffer_empty(&self) {
        let _ = self.input_drained.write(1);
    }
}

pub struct SerialDevice {
    uart: Serial<IrqTrigger, Arc<SerialSignals>, Box<dyn Write + Send>>,
    signals: Arc<SerialSignals>,
}

impl SerialDevice {
    pub fn new(irq: EventFd, signals: Arc<SerialSignals>, out: Box<dyn Write + Send>) -> Self {
        Self {
            uart: Serial::with_events(IrqTrigger(irq), signals.clone(), out),
            signals,
        }
    }

    /// Queue guest input; returns how many bytes fit in the receive FIFO (0 when full).
    pub fn enqueue_input(&mut self, bytes: &[u8]) -> io::Result<usize> {
        match self.uart.enqueue_raw_bytes(bytes) {
            Ok(n) => Ok(n),
            Err(vm_superio::serial::Error::FullFifo) => Ok(0),
            Err(e) => Err(io::Error::other(format!("{e:?}"))),
        }
    }

    pub fn input_space(&self) -> usize {
        self.uart.fifo_capacity()
    }
}

impl BusDevice for SerialDevice {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if let (Ok(offset), Some(first)) = (u8::try_from(offset), data.first_mut()) {
            *first = self.uart.read(offset);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        self.signals.touched.store(true, Ordering::Relaxed);
        if let (Ok(offset), Some(&value)) = (u8::try_from(offset), data.first()) {
            if let Err(e) = self.uart.write(offset, value) {
                crate::limited!(warn, "serial write failed: {e:?}");
            }
        }
    }
}

/// A writer that flushes after every write, so partial lines (prompts) show up at once.
pub struct Unbuffered<W: Write>(pub W);

impl<W: Write> Write for Unbuffered<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.0.write(buf)?;
        self.0.flush()?;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn device() -> (SerialDevice, Shared, Arc<SerialSignals>, EventFd) {
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let signals = Arc::new(SerialSignals {
            input_drained: EventFd::new(libc::EFD_NONBLOCK).unwrap(),
            touched: Arc::new(AtomicBool::new(false)),
        });
        let out = Shared::default();
        let dev = SerialDevice::new(
            irq.try_clone().unwrap(),
            signals.clone(),
            Box::new(out.clone()),
        );
        (dev, out, signals, irq)
    }

    #[test]
    fn guest_output_reaches_the_writer() {
        let (mut dev, out, signals, _) = device();
        assert!(!signals.touched.load(Ordering::Relaxed));
        for b in b"hi\n" {
            dev.write(0, &[*b]);
        }
        assert_eq!(*out.0.lock().unwrap(), b"hi\n");
        assert!(signals.touched.load(Ordering::Relaxed));
    }

    #[test]
    fn input_is_readable_and_raises_the_irq_when_enabled() {
        let (mut dev, _, signals, irq) = device();
        dev.write(1, &[0x1]); // IER: received-data interrupt
        assert_eq!(dev.enqueue_input(b"ab").unwrap(), 2);
        assert!(irq.read().unwrap() >= 1);
        let mut byte = [0u8];
        dev.read(0, &mut byte);
        assert_eq!(byte, [b'a']);
        dev.read(0, &mut byte);
        assert_eq!(byte, [b'b']);
        assert_eq!(signals.input_drained.read().unwrap(), 1);
    }

    #[test]
    fn full_fifo_takes_nothing_more() {
        let (mut dev, _, _, _) = device();
        let space = dev.input_space();
        assert_eq!(dev.enqueue_input(&vec![b'x'; space + 10]).unwrap(), space);
        assert_eq!(dev.enqueue_input(b"y").unwrap(), 0);
    }
}
