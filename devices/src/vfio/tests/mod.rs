//! Device-level tests against the in-memory VFIO device (`mock.rs`).

mod bars;
mod config;
mod dma_gate;
mod intx;
mod msi;
mod msix;
mod p2p;
mod quirks;
mod release;

use std::sync::Arc;

use crate::pci::PciDevice;

use super::mock::{MockBackend, MockMapper, MockRouter};
use super::VfioPciDevice;

pub const INTX_GSI: u32 = 10;

pub struct Rig {
    pub dev: VfioPciDevice,
    pub backend: MockBackend,
    pub router: Arc<MockRouter>,
    pub mapper: Arc<MockMapper>,
}

/// The standard mock device with INTx on GSI 10.
pub fn rig() -> Rig {
    rig_with(MockBackend::standard(), Some(INTX_GSI)).unwrap()
}

pub fn rig_with(backend: MockBackend, intx_gsi: Option<u32>) -> Result<Rig, super::VfioPciError> {
    let router = Arc::new(MockRouter::default());
    let mapper = Arc::new(MockMapper::default());
    let dev = VfioPciDevice::new(
        Box::new(backend.clone()),
        "0000:01:00.0".to_string(),
        router.clone(),
        mapper.clone(),
        intx_gsi,
    )?;
    Ok(Rig {
        dev,
        backend,
        router,
        mapper,
    })
}

impl Rig {
    pub fn read(&mut self, offset: u16) -> u32 {
        self.dev.config_read(offset)
    }

    pub fn write32(&mut self, offset: u16, value: u32) {
        self.dev.config_write(offset, &value.to_le_bytes());
    }

    pub fn write16(&mut self, offset: u16, value: u16) {
        self.dev.config_write(offset, &value.to_le_bytes());
    }

    /// Clear the record of what the device saw.
    pub fn forget_calls(&self) {
        self.backend.state().calls.clear();
    }
}
