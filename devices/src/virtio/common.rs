//! The common configuration structure (virtio spec 4.1.4.3) at BAR 0 offset 0: feature
//! negotiation, the device status state machine, and queue setup.
//!
//! The state machine, for a driver write of `new` over the current status `old`:
//! - 0 resets the device (the transport stops the device and puts everything back);
//! - a write that clears a bit already set (other than by reset) is ignored: status only
//!   grows between resets;
//! - FEATURES_OK is kept only when ACKNOWLEDGE and DRIVER are set and the driver accepted
//!   VIRTIO_F_VERSION_1 (features the device did not offer never stick, see
//!   driver_feature); otherwise the write is taken without it, so the driver reads it back
//!   clear, as the spec asks;
//! - DRIVER_OK without FEATURES_OK sets DEVICE_NEEDS_RESET instead (and DRIVER_OK stays
//!   clear); with FEATURES_OK it activates the device, and a failed activation sets
//!   DEVICE_NEEDS_RESET too.
//!
//! Features and queue registers are frozen once FEATURES_OK (features) or DRIVER_OK
//! (queues) is set; writes then are ignored. Accesses must have the field's width (a 64-bit
//! field may also be written as two dwords); other writes are ignored, reads of any width
//! return the structure's bytes.

use super::{status, NO_VECTOR, VIRTIO_F_VERSION_1};

/// The structure's length as the capability announces it (the 1.2 fields
/// queue_notify_data and queue_reset read as 0: their features are not offered).
pub const COMMON_LEN: u64 = 0x40;

const DEVICE_FEATURE_SELECT: u64 = 0x00;
const DEVICE_FEATURE: u64 = 0x04;
const DRIVER_FEATURE_SELECT: u64 = 0x08;
const DRIVER_FEATURE: u64 = 0x0c;
const MSIX_CONFIG: u64 = 0x10;
const NUM_QUEUES: u64 = 0x12;
const DEVICE_STATUS: u64 = 0x14;
const CONFIG_GENERATION: u64 = 0x15;
const QUEUE_SELECT: u64 = 0x16;
const QUEUE_SIZE: u64 = 0x18;
const QUEUE_MSIX_VECTOR: u64 = 0x1a;
const QUEUE_ENABLE: u64 = 0x1c;
const QUEUE_NOTIFY_OFF: u64 = 0x1e;
const QUEUE_DESC: u64 = 0x20;
const QUEUE_DRIVER: u64 = 0x28;
const QUEUE_DEVICE: u64 = 0x30;

/// One queue's registers as the driver programs them; turned into a `virtio_queue::Queue`
/// (and validated) at activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueRegs {
    pub max_size: u16,
    pub size: u16,
    pub msix_vector: u16,
    pub enabled: bool,
    pub desc: u64,
    pub driver: u64,
    pub device: u64,
}

impl QueueRegs {
    fn new(max_size: u16) -> Self {
        Self {
            max_size,
            size: max_size,
            msix_vector: NO_VECTOR,
            enabled: false,
            desc: 0,
            driver: 0,
            device: 0,
        }
    }
}

/// What the transport must do after a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    None,
    /// The driver wrote 0 to device_status.
    Reset,
    /// The driver set DRIVER_OK (with FEATURES_OK).
    Activate,
    /// An MSI-X vector assignment changed.
    Vectors,
    /// The driver did something invalid and DEVICE_NEEDS_RESET got set.
    NeedsReset,
}

pub struct CommonConfig {
    device_features: u64,
    device_feature_select: u32,
    driver_feature_select: u32,
    driver_features: u64,
    pub msix_config: u16,
    status: u8,
    pub config_generation: u8,
    queue_select: u16,
    pub queues: Vec<QueueRegs>,
    /// MSI-X table entries: vectors at or past it read back as NO_VECTOR.
    vectors: u16,
}

impl CommonConfig {
    pub fn new(device_features: u64, queue_max_sizes: &[u16], vectors: u16) -> Self {
        Self {
            device_features: device_features | VIRTIO_F_VERSION_1,
            device_feature_select: 0,
            driver_feature_select: 0,
            driver_features: 0,
            msix_config: NO_VECTOR,
            status: 0,
            config_generation: 0,
            queue_select: 0,
            queues: queue_max_sizes.iter().map(|&m| QueueRegs::new(m)).collect(),
            vectors,
        }
    }

    /// Back to the state after power-on (the device reset, spec 2.4).
    pub fn reset(&mut self) {
        let features = self.device_features;
        let sizes: Vec<u16> = self.queues.iter().map(|q| q.max_size).collect();
        let generation = self.config_generation;
        *self = Self::new(features, &sizes, self.vectors);
        self.config_generation = generation;
    }

    /// The features the driver accepted (only offered bits stick).
    pub fn driver_features(&self) -> u64 {
        self.driver_features
    }

    /// Set DEVICE_NEEDS_RESET (the device hit an error the driver must recover from).
    pub fn set_needs_reset(&mut self) {
        self.status |= status::DEVICE_NEEDS_RESET;
    }

    /// Clear DRIVER_OK again (activation failed).
    pub fn clear_driver_ok(&mut self) {
        self.status &= !status::DRIVER_OK;
    }

    fn selected(&self) -> Option<&QueueRegs> {
        self.queues.get(usize::from(self.queue_select))
    }

    fn half(value: u64, select: u32) -> u32 {
        match select {
            0 => value as u32,
            1 => (value >> 32) as u32,
            _ => 0,
        }
    }

    /// The structure's bytes, as read by the driver.
    fn image(&self) -> [u8; COMMON_LEN as usize] {
        let mut b = [0u8; COMMON_LEN as usize];
        let mut put = |off: u64, bytes: &[u8]| {
            let off = off as usize;
            b[off..off + bytes.len()].copy_from_slice(bytes);
        };
        let q = self.selected().copied();
        put(
            DEVICE_FEATURE_SELECT,
            &self.device_feature_select.to_le_bytes(),
        );
        let df = Self::half(self.device_features, self.device_feature_select);
        put(DEVICE_FEATURE, &df.to_le_bytes());
        put(
            DRIVER_FEATURE_SELECT,
            &self.driver_feature_select.to_le_bytes(),
        );
        let drf = Self::half(self.driver_features, self.driver_feature_select);
        put(DRIVER_FEATURE, &drf.to_le_bytes());
        put(MSIX_CONFIG, &self.msix_config.to_le_bytes());
        put(NUM_QUEUES, &(self.queues.len() as u16).to_le_bytes());
        put(DEVICE_STATUS, &[self.status]);
        put(CONFIG_GENERATION, &[self.config_generation]);
        put(QUEUE_SELECT, &self.queue_select.to_le_bytes());
        if let Some(q) = q {
            put(QUEUE_SIZE, &q.size.to_le_bytes());
            put(QUEUE_MSIX_VECTOR, &q.msix_vector.to_le_bytes());
            put(QUEUE_ENABLE, &u16::from(q.enabled).to_le_bytes());
            // queue_notify_off = the queue index: queue q notifies at notify base + 4 * q.
            put(QUEUE_NOTIFY_OFF, &self.queue_select.to_le_bytes());
            put(QUEUE_DESC, &q.desc.to_le_bytes());
            put(QUEUE_DRIVER, &q.driver.to_le_bytes());
            put(QUEUE_DEVICE, &q.device.to_le_bytes());
        }
        b
    }

    pub fn read(&self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        let image = self.image();
        let Ok(start) = usize::try_from(offset) else {
            return;
        };
        for (i, byte) in data.iter_mut().enumerate() {
            if let Some(b) = start.checked_add(i).and_then(|o| image.get(o)) {
                *byte = *b;
            }
        }
    }

    pub fn write(&mut self, offset: u64, data: &[u8]) -> Action {
        let value = match *data {
            [a] => u64::from(a),
            [a, b] => u64::from(u16::from_le_bytes([a, b])),
            [a, b, c, d] => u64::from(u32::from_le_bytes([a, b, c, d])),
            [a, b, c, d, e, f, g, h] => u64::from_le_bytes([a, b, c, d, e, f, g, h]),
            _ => return Action::None,
        };
        let len = data.len();
        match (offset, len) {
            (DEVICE_FEATURE_SELECT, 4) => self.device_feature_select = value as u32,
            (DRIVER_FEATURE_SELECT, 4) => self.driver_feature_select = value as u32,
            (DRIVER_FEATURE, 4) => self.write_driver_features(value as u32),
            (MSIX_CONFIG, 2) => {
                self.msix_config = self.checked_vector(value as u16);
                return Action::Vectors;
            }
            (DEVICE_STATUS, 1) => return self.write_status(value as u8),
            (QUEUE_SELECT, 2) => self.queue_select = value as u16,
            (QUEUE_MSIX_VECTOR, 2) => {
                let vector = self.checked_vector(value as u16);
                if let Some(q) = self.queues.get_mut(usize::from(self.queue_select)) {
                    q.msix_vector = vector;
                    return Action::Vectors;
                }
            }
            (QUEUE_SIZE | QUEUE_ENABLE, 2) | (QUEUE_DESC..=0x37, 4 | 8) => {
                self.write_queue(offset, len, value)
            }
            _ => {}
        }
        Action::None
    }

    fn checked_vector(&self, vector: u16) -> u16 {
        if vector < self.vectors {
            vector
        } else {
            NO_VECTOR
        }
    }

    fn write_driver_features(&mut self, value: u32) {
        if self.status & status::FEATURES_OK != 0 {
            return;
        }
        let (shift, mask) = match self.driver_feature_select {
            0 => (0, 0xffff_ffff),
            1 => (32, 0xffff_ffff << 32),
            _ => return,
        };
        // Only offered bits stick.
        let bits = (u64::from(value) << shift) & self.device_features;
        self.driver_features = (self.driver_features & !mask) | bits;
    }

    fn write_queue(&mut self, offset: u64, len: usize, value: u64) {
        if self.status & status::DRIVER_OK != 0 {
            return;
        }
        let Some(q) = self.queues.get_mut(usize::from(self.queue_select)) else {
            return;
        };
        let field = match offset {
            QUEUE_SIZE => {
                q.size = value as u16;
                return;
            }
            QUEUE_ENABLE => {
                // Only 1 enables; a queue is disabled by a device reset, not by writing 0.
                if value == 1 {
                    q.enabled = true;
                }
                return;
            }
            QUEUE_DESC..=0x27 => &mut q.desc,
            QUEUE_DRIVER..=0x2f => &mut q.driver,
            _ => &mut q.device,
        };
        match (offset % 8, len) {
            (0, 8) => *field = value,
            (0, 4) => *field = (*field & !0xffff_ffff) | value,
            (4, 4) => *field = (*field & 0xffff_ffff) | (value << 32),
            _ => {}
        }
    }

    fn write_status(&mut self, new: u8) -> Action {
        use status::*;
        if new == 0 {
            return Action::Reset;
        }
        let old = self.status;
        let kept = old & !DEVICE_NEEDS_RESET;
        if new & kept != kept {
            crate::limited!(
                debug,
                "virtio: device_status {new:#x} would clear bits of {old:#x}; ignored"
            );
            return Action::None;
        }
        let mut new = (new & !DEVICE_NEEDS_RESET) | (old & DEVICE_NEEDS_RESET);
        let added = new & !old;
        if added & FEATURES_OK != 0 {
            let ready = new & (ACKNOWLEDGE | DRIVER) == ACKNOWLEDGE | DRIVER;
            let modern = self.driver_features & VIRTIO_F_VERSION_1 != 0;
            if !ready || !modern {
                new &= !FEATURES_OK;
            }
        }
        if added & DRIVER_OK != 0 {
            if new & FEATURES_OK == 0 || old & DEVICE_NEEDS_RESET != 0 {
                self.status = (new & !DRIVER_OK) | DEVICE_NEEDS_RESET;
                return Action::NeedsReset;
            }
            self.status = new;
            return Action::Activate;
        }
        self.status = new;
        Action::None
    }
}
