//! A minimal i8042 keyboard controller: no keyboard, only the CPU reset line (command 0xFE),
//! which is one of the ways Linux reboots.

use crate::{BusDevice, GuestRequest, RequestSink};

const CMD_OFFSET: u64 = 4; // 0x64 relative to the data port 0x60
const CMD_RESET_CPU: u8 = 0xfe;

pub struct I8042 {
    requests: RequestSink,
}

impl I8042 {
    /// The device covers ports 0x60..=0x64; insert it at 0x60 with length 5.
    pub fn new(requests: RequestSink) -> Self {
        Self { requests }
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        // Status 0: output buffer empty, input buffer empty; data reads return nothing.
        data.fill(0);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset == CMD_OFFSET && data.first() == Some(&CMD_RESET_CPU) {
            (self.requests)(GuestRequest::Reset);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn reset_command_requests_a_reset() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        let mut dev = I8042::new(Box::new(move |r| sink.lock().unwrap().push(r)));
        dev.write(0, &[CMD_RESET_CPU]);
        dev.write(CMD_OFFSET, &[0xad]);
        assert!(seen.lock().unwrap().is_empty());
        dev.write(CMD_OFFSET, &[CMD_RESET_CPU]);
        assert_eq!(*seen.lock().unwrap(), vec![GuestRequest::Reset]);
        let mut status = [0xffu8];
        dev.read(CMD_OFFSET, &mut status);
        assert_eq!(status, [0]);
    }
}
