//! Hardware-reduced ACPI sleep control, sleep status and reset registers (one byte each at
//! consecutive ports): writing SLP_EN with the S5 sleep type powers off, writing the reset
//! value resets.

use crate::{BusDevice, GuestRequest, RequestSink};

const SLEEP_CONTROL: u64 = 0;
const SLEEP_STATUS: u64 = 1;
const RESET: u64 = 2;
/// Length of the register block.
pub const ACPI_PM_LEN: u64 = 3;
const SLP_EN: u8 = 1 << 5;
const WAK_STS: u8 = 1 << 7;

pub struct AcpiPm {
    s5_sleep_type: u8,
    reset_value: u8,
    requests: RequestSink,
}

impl AcpiPm {
    /// `s5_sleep_type` is the SLP_TYP the DSDT's \_S5 announces; `reset_value` the FADT's.
    pub fn new(s5_sleep_type: u8, reset_value: u8, requests: RequestSink) -> Self {
        Self {
            s5_sleep_type,
            reset_value,
            requests,
        }
    }
}

impl BusDevice for AcpiPm {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if offset == SLEEP_STATUS {
            // We never sleep, so we are always awake.
            data[0] = WAK_STS;
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let Some(&value) = data.first() else { return };
        match offset {
            SLEEP_CONTROL if value & SLP_EN != 0 => {
                let sleep_type = (value >> 2) & 0x7;
                if sleep_type == self.s5_sleep_type {
                    (self.requests)(GuestRequest::Poweroff);
                } else {
                    crate::limited!(
                        warn,
                        "guest asked for unsupported ACPI sleep type {sleep_type}"
                    );
                }
            }
            RESET if value == self.reset_value => (self.requests)(GuestRequest::Reset),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn device() -> (AcpiPm, Arc<Mutex<Vec<GuestRequest>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        let dev = AcpiPm::new(5, 1, Box::new(move |r| sink.lock().unwrap().push(r)));
        (dev, seen)
    }

    #[test]
    fn s5_with_slp_en_powers_off() {
        let (mut dev, seen) = device();
        dev.write(SLEEP_CONTROL, &[5 << 2]); // no SLP_EN
        dev.write(SLEEP_CONTROL, &[(3 << 2) | SLP_EN]); // S3: not supported
        assert!(seen.lock().unwrap().is_empty());
        dev.write(SLEEP_CONTROL, &[(5 << 2) | SLP_EN]);
        assert_eq!(*seen.lock().unwrap(), vec![GuestRequest::Poweroff]);
    }

    #[test]
    fn reset_register_resets_only_with_its_value() {
        let (mut dev, seen) = device();
        dev.write(RESET, &[2]);
        dev.write(RESET, &[1]);
        assert_eq!(*seen.lock().unwrap(), vec![GuestRequest::Reset]);
    }

    #[test]
    fn status_reads_awake() {
        let (mut dev, _) = device();
        let mut data = [0u8];
        dev.read(SLEEP_STATUS, &mut data);
        assert_eq!(data[0], WAK_STS);
    }
}
