//! virtio devices on the PCI root, after the passed-through functions (disks, network
//! interfaces, then the vsock): their images, taps and socket opened before the VM is made (a
//! bad disk, tap or socket path fails the run before KVM or VFIO is touched), their
//! queue notifications on KVM ioeventfds, their work on confined worker threads. The PCI
//! root owns them; dropping a device stops its worker (joined) and unregisters its
//! ioeventfds and interrupts, so the teardown of the root is theirs too.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::sync::{Arc, Mutex};

use devices::pci::root::PciRoot;
use devices::virtio::{
    stable_mac, VirtioBlock, VirtioDevice, VirtioNet, VirtioPciDevice, VirtioServices, VirtioVsock,
};

use super::passthrough::VmParts;
use super::services::{ConfinedWorkers, KvmIoEvents};
use crate::config::{DiskConfig, NetConfig, VmConfig};
use crate::error::{Error, Result};
use crate::interrupts::KvmInterruptRouter;

/// What the VM's virtio devices opened on the host, waiting for their places on the PCI
/// root.
pub struct OpenedVirtio {
    disks: Vec<OpenedDisk>,
    nets: Vec<OpenedNet>,
    vsock: Option<VirtioVsock>,
}

impl OpenedVirtio {
    /// Open what `config` asks for: images, taps, the vsock's socket (bound now).
    pub fn open(config: &VmConfig) -> Result<Self> {
        let disks = open_disks(&config.disks)?;
        let nets = open_nets(&config.nets)?;
        let vsock = match &config.vsock {
            Some(v) => Some(VirtioVsock::open(v.cid, &v.socket).map_err(Error::Vsock)?),
            None => None,
        };
        Ok(Self { disks, nets, vsock })
    }

    pub fn is_empty(&self) -> bool {
        self.disks.is_empty() && self.nets.is_empty() && self.vsock.is_none()
    }
}

/// A disk's image, open and locked, waiting for its place on the PCI root.
struct OpenedDisk {
    config: DiskConfig,
    block: VirtioBlock,
}

/// A network interface's tap, open, waiting for its place on the PCI root.
struct OpenedNet {
    config: NetConfig,
    net: VirtioNet,
}

/// Open every network interface's tap (in order: the first is the guest's eth0). A missing
/// MAC is derived from the tap's name and the interface's place: the same every run.
fn open_nets(nets: &[NetConfig]) -> Result<Vec<OpenedNet>> {
    nets.iter()
        .enumerate()
        .map(|(index, config)| {
            let mac = match config.mac {
                Some(mac) => mac.0,
                None => stable_mac(format!("zhitong net{index} tap={}", config.tap).as_bytes()),
            };
            let net =
                VirtioNet::open(&config.tap, mac).map_err(|source| Error::Net { index, source })?;
            Ok(OpenedNet {
                config: config.clone(),
                net,
            })
        })
        .collect()
}

/// Open every disk's image (in order: the first is the guest's vda). The same image twice
/// is refused unless every use of it is read-only.
fn open_disks(disks: &[DiskConfig]) -> Result<Vec<OpenedDisk>> {
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

/// Put the disks, the network interfaces and the vsock of `opened` on `root` from guest slot
/// `first_slot` on, one slot each, their vectors routed by `router`.
pub fn attach(
    vm: &VmParts,
    root: &PciRoot,
    router: &Arc<KvmInterruptRouter>,
    opened: OpenedVirtio,
    first_slot: u8,
) -> Result<VirtioDevices> {
    let OpenedVirtio { disks, nets, vsock } = opened;
    let workers = Arc::new(
        ConfinedWorkers::start(vm.exit.clone()).map_err(Error::io("the device worker launcher"))?,
    );
    let services = VirtioServices {
        router: router.clone(),
        ioevents: Arc::new(KvmIoEvents::new(vm.vm.clone())),
        spawner: workers.clone(),
    };
    let disks = disks.into_iter().enumerate().map(|(i, d)| {
        let what = format!("disk{i} ({})", d.config);
        (what, Box::new(d.block) as Box<dyn VirtioDevice>)
    });
    let nets = nets.into_iter().enumerate().map(|(i, n)| {
        let mac = devices_mac(&n.net);
        let what = format!("net{i} ({}, MAC {mac})", n.config);
        (what, Box::new(n.net) as Box<dyn VirtioDevice>)
    });
    let vsock = vsock.into_iter().map(|v| {
        let what = format!(
            "vsock (cid {}, socket {})",
            v.cid(),
            v.socket_path().display()
        );
        (what, Box::new(v) as Box<dyn VirtioDevice>)
    });
    for ((what, device), slot) in disks.chain(nets).chain(vsock).zip(first_slot..) {
        // INTx for a guest without MSI-X: pin INTA of its slot.
        let intx_gsi = arch::acpi::pci_intx_gsi(slot, 0);
        let name = what.split(' ').next().unwrap_or_default().to_string();
        let device = VirtioPciDevice::new(
            name,
            device,
            vm.mem.clone(),
            services.clone(),
            Some(intx_gsi),
        )
        .map_err(Error::io("a virtio device"))?;
        let at = root
            .add_device(Some(slot), 0, Arc::new(Mutex::new(device)))
            .map_err(|source| Error::Pci {
                what: "a virtio device's place",
                source,
            })?;
        log::info!("{what} is {at} in the guest (INTx GSI {intx_gsi})");
    }
    Ok(VirtioDevices { _workers: workers })
}

/// "52:54:00:12:34:56"
fn devices_mac(net: &VirtioNet) -> String {
    crate::config::Mac(net.mac()).to_string()
}
