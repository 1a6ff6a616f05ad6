//! virtio devices on the PCI root, after the passed-through functions: their images opened
//! before the VM is made (a bad disk fails the run before KVM or VFIO is touched), their
//! queue notifications on KVM ioeventfds, their work on confined worker threads. The PCI
//! root owns them; dropping a device stops its worker (joined) and unregisters its
//! ioeventfds and interrupts, so the teardown of the root is theirs too.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::sync::{Arc, Mutex};

use devices::pci::root::PciRoot;
use devices::virtio::{VirtioBlock, VirtioPciDevice, VirtioServices};

use super::passthrough::VmParts;
use super::services::{ConfinedWorkers, KvmIoEvents};
use crate::config::DiskConfig;
use crate::error::{Error, Result};
use crate::interrupts::KvmInterruptRouter;

/// A disk's image, open and locked, waiting for its place on the PCI root.
pub struct OpenedDisk {
    pub config: DiskConfig,
    block: VirtioBlock,
}

/// Open every disk's image (in order: the first is the guest's vda). The same image twice
/// is refused unless every use of it is read-only.
pub fn open_disks(disks: &[DiskConfig]) -> Result<Vec<OpenedDisk>> {
    let mut seen: Vec<(u64, u64, usize)> = Vec::new();
    let mut opened = Vec::with_capacity(disks.len());
    for (index, config) in disks.iter().enumerate() {
        if let Some(id) = identity(&config.path) {
            let earlier = seen
                .iter()
                .find(|(dev, ino, _)| (*dev, *ino) == id)
                .map(|(_, _, i)| *i);
            if let Some(first) = earlier {
                if !config.readonly || !disks[first].readonly {
                    return Err(Error::DiskTwice {
                        path: config.path.display().to_string(),
                        first,
                        second: index,
                    });
                }
            }
            seen.push((id.0, id.1, index));
        }
        let block = VirtioBlock::open(&config.path, config.readonly, config.serial.clone())
            .map_err(|source| Error::Disk { index, source })?;
        opened.push(OpenedDisk {
            config: config.clone(),
            block,
        });
    }
    Ok(opened)
}

/// The file's (device, inode), when it can be read (else open reports the cause).
fn identity(path: &Path) -> Option<(u64, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    // A block device is one disk whichever node names it.
    if meta.file_type().is_block_device() {
        return Some((u64::MAX, meta.rdev()));
    }
    Some((meta.dev(), meta.ino()))
}

/// What the VM holds of its virtio devices beside the PCI root: the launcher of their
/// workers (ended when the last device lets go of it).
pub struct VirtioDevices {
    _workers: Arc<ConfinedWorkers>,
}

/// Put `disks` on `root` from guest slot `first_slot` on, one slot each, their vectors
/// routed by `router`.
pub fn attach(
    vm: &VmParts,
    root: &PciRoot,
    router: &Arc<KvmInterruptRouter>,
    disks: Vec<OpenedDisk>,
    first_slot: u8,
) -> Result<VirtioDevices> {
    let workers = Arc::new(
        ConfinedWorkers::start(vm.exit.clone()).map_err(Error::io("the device worker launcher"))?,
    );
    let services = VirtioServices {
        router: router.clone(),
        ioevents: Arc::new(KvmIoEvents::new(vm.vm.clone())),
        spawner: workers.clone(),
    };
    for (index, (disk, slot)) in disks.into_iter().zip(first_slot..).enumerate() {
        let name = format!("disk{index}");
        // INTx for a guest without MSI-X: pin INTA of its slot.
        let intx_gsi = arch::acpi::pci_intx_gsi(slot, 0);
        let device = VirtioPciDevice::new(
            name.clone(),
            Box::new(disk.block),
            vm.mem.clone(),
            services.clone(),
            Some(intx_gsi),
        )
        .map_err(Error::io("a virtio-blk device"))?;
        let at = root
            .add_device(Some(slot), 0, Arc::new(Mutex::new(device)))
            .map_err(|source| Error::Pci {
                what: "a virtio-blk device's place",
                source,
            })?;
        log::info!(
            "{name} ({}) is {at} in the guest (INTx GSI {intx_gsi})",
            disk.config
        );
    }
    Ok(VirtioDevices { _workers: workers })
}
