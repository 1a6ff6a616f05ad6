use std::sync::Arc;
use std::thread;
use std::time::Duration;

use super::*;
use crate::vfio::DmaGate;

/// The guest's bus-master enable reaches the device only once guest RAM is mapped; memory
/// decoding alone never waits; a failed mapping leaves bus mastering off on the device.
#[test]
fn bus_mastering_reaches_the_device_only_after_the_mapping() {
    let mut r = rig();
    let gate = Arc::new(DmaGate::pending());
    r.dev.set_dma_gate(gate.clone());
    r.write16(0x04, 0x0002);
    assert_eq!(
        r.read(0x04) & 0x7,
        0x2,
        "memory decoding went through at once"
    );

    let backend = r.backend.clone();
    let writer = thread::spawn(move || {
        r.write16(0x04, 0x0006);
        r
    });
    thread::sleep(Duration::from_millis(100));
    let command_writes = || -> Vec<Vec<u8>> {
        let writes = backend.state().config_writes();
        writes
            .into_iter()
            .filter(|(o, _)| *o == 4)
            .map(|(_, d)| d)
            .collect()
    };
    assert_eq!(
        command_writes().last(),
        Some(&vec![0x02, 0x00]),
        "bus mastering before the mapping"
    );
    gate.open();
    let mut r = writer.join().unwrap();
    assert_eq!(command_writes().last(), Some(&vec![0x06, 0x00]));
    assert_eq!(r.read(0x04) & 0x7, 0x6);

    let mut failed = rig();
    let gate = Arc::new(DmaGate::pending());
    failed.dev.set_dma_gate(gate.clone());
    gate.fail();
    failed.write16(0x04, 0x0006);
    assert_eq!(
        failed.read(0x04) & 0x7,
        0x2,
        "bus mastering on without guest RAM mapped"
    );
}
