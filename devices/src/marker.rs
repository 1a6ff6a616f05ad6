//! The guest marker port: a guest writes a byte to say "I got here" (a lab guest's init does
//! it first thing), and the VMM stamps the first such write on its boot timeline.

use crate::BusDevice;

pub type MarkerSink = Box<dyn FnMut(u8) + Send>;

pub struct GuestMarker {
    on_write: MarkerSink,
}

impl GuestMarker {
    pub fn new(on_write: MarkerSink) -> Self {
        Self { on_write }
    }
}

impl BusDevice for GuestMarker {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, _offset: u64, data: &[u8]) {
        if let Some(&value) = data.first() {
            (self.on_write)(value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn every_write_is_reported() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        let mut dev = GuestMarker::new(Box::new(move |v| sink.lock().unwrap().push(v)));
        dev.write(0, &[1]);
        dev.write(0, &[2, 0, 0, 0]);
        dev.write(0, &[]);
        assert_eq!(*seen.lock().unwrap(), vec![1, 2]);
    }
}
