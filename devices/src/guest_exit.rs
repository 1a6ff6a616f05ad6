//! The guest exit port: a byte the guest writes here ends the VM with that exit status, so a
//! test guest can report pass/fail to whoever runs the VMM (zhitong exits with the byte).

use crate::{BusDevice, GuestRequest, RequestSink};

pub struct GuestExit {
    sink: RequestSink,
}

impl GuestExit {
    pub fn new(sink: RequestSink) -> Self {
        Self { sink }
    }
}

impl BusDevice for GuestExit {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    /// The first byte of a write of any width is the status (`outb`, or `outw`/`outl` whose
    /// low byte is the status).
    fn write(&mut self, _offset: u64, data: &[u8]) {
        if let Some(&status) = data.first() {
            (self.sink)(GuestRequest::ExitStatus(status));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn a_write_requests_an_exit_with_its_byte() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        let mut dev = GuestExit::new(Box::new(move |r| sink.lock().unwrap().push(r)));
        let mut byte = [0xff];
        dev.read(0, &mut byte);
        assert_eq!(byte, [0]);
        dev.write(0, &[3]);
        dev.write(0, &[0]);
        dev.write(0, &[7, 1, 0, 0]);
        dev.write(0, &[]);
        assert_eq!(
            *seen.lock().unwrap(),
            vec![
                GuestRequest::ExitStatus(3),
                GuestRequest::ExitStatus(0),
                GuestRequest::ExitStatus(7)
            ]
        );
    }
}
