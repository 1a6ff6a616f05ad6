//! Slot/bus resets at open for devices without a function reset.
//!
//! vfio-pci resets a device when it is opened if the device has a reset of its own (FLR, PM,
//! or a bus reset when it is alone on its bus: VFIO_DEVICE_FLAGS_RESET). A function without
//! one (typically a GPU's second function, or any function of a multi-function device
//! without FLR) would meet the guest as the last user left it. The kernel resets such a bus
//! itself only when the last fd of every device on it closes, which covers release; at
//! open, it is the VMM's to ask for (VFIO_DEVICE_PCI_HOT_RESET), and the kernel allows it
//! only when every device the reset reaches is ours: its IOMMU group handed over in the
//! call (the legacy container), or bound to our iommufd (cdev).

use std::collections::HashMap;
use std::fs;
use std::io;
use std::mem::size_of;
use std::os::fd::RawFd;
use std::path::Path;
use std::time::Instant;

use devices::pci::Bdf;
use vfio_bindings::bindings::vfio::{
    vfio_device_info, VFIO_DEVICE_FLAGS_RESET, VFIO_PCI_HOT_RESET_FLAG_DEV_ID,
    VFIO_PCI_HOT_RESET_FLAG_DEV_ID_OWNED,
};
use vfio_ioctls::VfioDevice;
use vmm_sys_util::ioctl::{ioctl_with_mut_ptr, ioctl_with_mut_ref, ioctl_with_ptr};
use vmm_sys_util::ioctl_io_nr;

use host::preflight::CheckedDevice;

const VFIO_TYPE: u32 = b';' as u32;
const VFIO_BASE: u32 = 100;
ioctl_io_nr!(VFIO_DEVICE_GET_INFO, VFIO_TYPE, VFIO_BASE + 7);
ioctl_io_nr!(
    VFIO_DEVICE_GET_PCI_HOT_RESET_INFO,
    VFIO_TYPE,
    VFIO_BASE + 12
);
ioctl_io_nr!(VFIO_DEVICE_PCI_HOT_RESET, VFIO_TYPE, VFIO_BASE + 13);

/// argsz, flags, count: the header both hot-reset structs start with.
const HEADER: usize = 12;
/// Each affected device in the info: group id or device id, segment, bus, devfn.
const DEPENDENT: usize = 8;
/// More devices than a PCI segment's buses could hold below one bridge is a bad answer.
const MAX_DEPENDENTS: usize = 256 * 32 * 8;
/// The device id the kernel gives an affected device that is not ours (cdev).
const DEVID_NOT_OWNED: u32 = u32::MAX;

/// A device a slot/bus reset of the queried one also resets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dependent {
    pub bdf: Bdf,
    /// Its IOMMU group (legacy), or its iommufd device id (cdev; DEVID_NOT_OWNED if not ours).
    pub id: u32,
}

/// VFIO_DEVICE_GET_PCI_HOT_RESET_INFO's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HotResetInfo {
    /// The ids are iommufd device ids (the device was opened through its cdev).
    pub dev_ids: bool,
    /// cdev: the kernel says every affected device is ours.
    pub all_owned: bool,
    pub devices: Vec<Dependent>,
}

/// What to hand VFIO_DEVICE_PCI_HOT_RESET, or what stands in the way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// The legacy call: these groups' fds (every affected device is in one of them).
    Groups(Vec<u32>),
    /// The cdev call: no group fds, the kernel checks our iommufd owns them all.
    Iommufd,
    /// Devices the reset would reach that are not ours.
    NotOurs(Vec<Bdf>),
}

/// Parse the kernel's vfio_pci_hot_reset_info (header and `count` dependents).
pub fn parse_info(buf: &[u8]) -> Option<HotResetInfo> {
    let word = |at: usize| Some(u32::from_le_bytes(buf.get(at..at + 4)?.try_into().ok()?));
    let (flags, count) = (word(4)?, word(8)? as usize);
    if count > MAX_DEPENDENTS {
        return None;
    }
    let devices = (0..count)
        .map(|i| {
            let at = HEADER + i * DEPENDENT;
            let d = buf.get(at..at + DEPENDENT)?;
            Some(Dependent {
                id: word(at)?,
                bdf: Bdf {
                    domain: u16::from_le_bytes([d[4], d[5]]),
                    bus: d[6],
                    device: d[7] >> 3,
                    function: d[7] & 7,
                },
            })
        })
        .collect::<Option<Vec<_>>>()?;
    Some(HotResetInfo {
        dev_ids: flags & VFIO_PCI_HOT_RESET_FLAG_DEV_ID != 0,
        all_owned: flags & VFIO_PCI_HOT_RESET_FLAG_DEV_ID_OWNED != 0,
        devices,
    })
}

/// Whether (and how) the reset may be asked for, with `our_groups` the IOMMU groups this
/// VM holds open.
pub fn plan(info: &HotResetInfo, our_groups: &[u32]) -> Plan {
    if info.dev_ids {
        if info.all_owned {
            return Plan::Iommufd;
        }
        let theirs = info.devices.iter().filter(|d| d.id == DEVID_NOT_OWNED);
        return Plan::NotOurs(theirs.map(|d| d.bdf).collect());
    }
    let theirs: Vec<Bdf> = info
        .devices
        .iter()
        .filter(|d| !our_groups.contains(&d.id))
        .map(|d| d.bdf)
        .collect();
    if !theirs.is_empty() {
        return Plan::NotOurs(theirs);
    }
    let mut groups: Vec<u32> = info.devices.iter().map(|d| d.id).collect();
    groups.sort_unstable();
    groups.dedup();
    Plan::Groups(groups)
}

/// Reset, by slot or bus, every opened device that VFIO cannot reset on its own, where
/// everything that reset reaches is ours; log what was done or why not. A device reached
/// by an earlier reset is not reset again. Failures are warnings: the device still works
/// as the last user left it, as it would without this.
pub fn reset_where_needed(opened: &[(&CheckedDevice, &VfioDevice)]) {
    let mut done: Vec<Bdf> = Vec::new();
    for (dev, vfio) in opened {
        match has_function_reset(vfio) {
            Ok(true) => {
                log_function_reset(dev);
                continue;
            }
            Ok(false) if done.contains(&dev.bdf) => continue,
            Ok(false) => {}
            Err(e) => {
                log::warn!("{}: VFIO_DEVICE_GET_INFO: {e}", dev.bdf);
                continue;
            }
        }
        let start = Instant::now();
        let info = match query(vfio) {
            Ok(Some(info)) => Ok(info),
            // A function on a root bus: nothing above it to reset ('zhitong check' says so).
            Ok(None) => {
                log::info!(
                    "{}: no reset (no function reset, no slot or bus to reset): it meets the guest as its last user left it",
                    dev.bdf
                );
                continue;
            }
            Err(e) => Err(e),
        };
        match info.and_then(|info| reset(vfio, &info).map(|()| info)) {
            Ok(info) => {
                let reached: Vec<Bdf> = info.devices.iter().map(|d| d.bdf).collect();
                log::info!(
                    "{}: no function reset: reset its slot/bus (VFIO hot reset) at open, {} with it, in {} ms",
                    dev.bdf,
                    list(&reached),
                    start.elapsed().as_millis()
                );
                done.extend(reached);
            }
            Err(e) => log::warn!(
                "{}: no function reset, and no slot/bus reset at open: {e}; it meets the guest as its last user left it",
                dev.bdf
            ),
        }
    }
}

/// The device's own reset, which vfio-pci has already done at open.
fn log_function_reset(dev: &CheckedDevice) {
    match fs::read_to_string(dev.sysfs_dir.join("reset_method")) {
        Ok(m) if !m.trim().is_empty() => {
            log::info!("{}: reset at open and release ({})", dev.bdf, m.trim())
        }
        _ => log::info!("{}: reset at open and release", dev.bdf),
    }
}

fn has_function_reset(device: &VfioDevice) -> io::Result<bool> {
    let mut info = vfio_device_info {
        argsz: size_of::<vfio_device_info>() as u32,
        ..Default::default()
    };
    // SAFETY: the kernel writes at most argsz bytes into `info`, which outlives the call.
    let ret = unsafe { ioctl_with_mut_ref(device, VFIO_DEVICE_GET_INFO(), &mut info) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(info.flags & VFIO_DEVICE_FLAGS_RESET != 0)
}

/// Ask which devices a slot/bus reset would reach: once for the count, once for the list.
/// None when the device has neither a slot nor a bus that can be reset.
fn query(device: &VfioDevice) -> io::Result<Option<HotResetInfo>> {
    let mut count = 0;
    for _ in 0..2 {
        let mut buf = vec![0u32; (HEADER + count * DEPENDENT) / 4];
        buf[0] = (buf.len() * 4) as u32;
        // SAFETY: argsz is the buffer's length: the kernel writes no further.
        let ret = unsafe {
            ioctl_with_mut_ptr(
                device,
                VFIO_DEVICE_GET_PCI_HOT_RESET_INFO(),
                buf.as_mut_ptr(),
            )
        };
        let bytes: Vec<u8> = buf.iter().flat_map(|w| w.to_le_bytes()).collect();
        if ret == 0 {
            return parse_info(&bytes)
                .map(Some)
                .ok_or_else(|| bad_answer("a malformed list"));
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::ENOSPC) => {}
            Some(libc::ENODEV) | Some(libc::ENOTTY) => return Ok(None),
            _ => return Err(err),
        }
        count = buf[2] as usize;
        if count > MAX_DEPENDENTS {
            return Err(bad_answer("too many devices"));
        }
    }
    Err(bad_answer("a list that keeps growing"))
}

fn bad_answer(what: &str) -> io::Error {
    io::Error::other(format!("VFIO_DEVICE_GET_PCI_HOT_RESET_INFO gave {what}"))
}

fn reset(device: &VfioDevice, info: &HotResetInfo) -> io::Result<()> {
    let open = open_groups(Path::new("/proc/self/fd"));
    let fds: Vec<RawFd> = match plan(info, &open.keys().copied().collect::<Vec<_>>()) {
        Plan::Iommufd => Vec::new(),
        Plan::Groups(groups) => groups.iter().filter_map(|g| open.get(g).copied()).collect(),
        Plan::NotOurs(theirs) => {
            return Err(io::Error::other(format!(
                "it would also reset {}, not passed to this VM (pass them through too, or leave them bound to vfio-pci in the same IOMMU group)",
                list(&theirs)
            )))
        }
    };
    let mut buf: Vec<i32> = vec![0; HEADER / 4 + fds.len()];
    buf[0] = (buf.len() * 4) as i32;
    buf[2] = fds.len() as i32;
    buf[HEADER / 4..].copy_from_slice(&fds);
    // SAFETY: the kernel reads argsz bytes (header and `count` fds) from `buf`.
    let ret = unsafe { ioctl_with_ptr(device, VFIO_DEVICE_PCI_HOT_RESET(), buf.as_ptr()) };
    if ret < 0 {
        return Err(io::Error::other(format!(
            "VFIO_DEVICE_PCI_HOT_RESET: {}",
            io::Error::last_os_error()
        )));
    }
    Ok(())
}

/// The VFIO groups this process holds open, by number: /dev/vfio/N behind `fd_dir`
/// (/proc/self/fd). vfio-ioctls keeps its container's group files to itself; a group can
/// be open only once, so these are the container's.
fn open_groups(fd_dir: &Path) -> HashMap<u32, RawFd> {
    let Ok(entries) = fs::read_dir(fd_dir) else {
        return HashMap::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let fd: RawFd = e.file_name().to_str()?.parse().ok()?;
            let target = fs::read_link(e.path()).ok()?;
            let group = target.to_str()?.strip_prefix("/dev/vfio/")?.parse().ok()?;
            Some((group, fd))
        })
        .collect()
}

fn list(bdfs: &[Bdf]) -> String {
    let names: Vec<String> = bdfs.iter().map(Bdf::to_string).collect();
    names.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info_bytes(flags: u32, devices: &[(u32, &str)]) -> Vec<u8> {
        let mut b = Vec::new();
        let argsz = (HEADER + devices.len() * DEPENDENT) as u32;
        for w in [argsz, flags, devices.len() as u32] {
            b.extend(w.to_le_bytes());
        }
        for (id, bdf) in devices {
            let bdf: Bdf = bdf.parse().unwrap();
            b.extend(id.to_le_bytes());
            b.extend(bdf.domain.to_le_bytes());
            b.push(bdf.bus);
            b.push(bdf.device << 3 | bdf.function);
        }
        b
    }

    fn bdf(s: &str) -> Bdf {
        s.parse().unwrap()
    }

    #[test]
    fn the_kernels_list_is_read_as_it_lays_it_out() {
        let info = parse_info(&info_bytes(
            0,
            &[(12, "0000:01:00.0"), (12, "0001:02:1f.7")],
        ));
        assert_eq!(
            info,
            Some(HotResetInfo {
                dev_ids: false,
                all_owned: false,
                devices: vec![
                    Dependent {
                        bdf: bdf("0000:01:00.0"),
                        id: 12
                    },
                    Dependent {
                        bdf: bdf("0001:02:1f.7"),
                        id: 12
                    },
                ],
            })
        );
    }

    #[test]
    fn a_short_or_oversized_answer_is_refused() {
        let mut b = info_bytes(0, &[(12, "0000:01:00.0"), (13, "0000:01:00.1")]);
        b.truncate(b.len() - 1);
        assert_eq!(parse_info(&b), None);
        assert_eq!(parse_info(&b[..8]), None);
        let mut huge = info_bytes(0, &[]);
        huge[8..12].copy_from_slice(&(MAX_DEPENDENTS as u32 + 1).to_le_bytes());
        assert_eq!(parse_info(&huge), None);
    }

    #[test]
    fn legacy_resets_when_every_affected_group_is_ours() {
        let info = parse_info(&info_bytes(
            0,
            &[
                (13, "0000:01:00.0"),
                (12, "0000:01:00.1"),
                (13, "0000:01:00.2"),
            ],
        ))
        .unwrap();
        assert_eq!(plan(&info, &[12, 13, 40]), Plan::Groups(vec![12, 13]));
        assert_eq!(plan(&info, &[13]), Plan::NotOurs(vec![bdf("0000:01:00.1")]));
    }

    #[test]
    fn cdev_resets_when_the_kernel_says_all_are_owned() {
        let flags = VFIO_PCI_HOT_RESET_FLAG_DEV_ID | VFIO_PCI_HOT_RESET_FLAG_DEV_ID_OWNED;
        let owned = parse_info(&info_bytes(
            flags,
            &[(1, "0000:01:00.0"), (0, "0000:01:00.1")],
        ));
        assert_eq!(plan(&owned.unwrap(), &[]), Plan::Iommufd);
        let theirs = parse_info(&info_bytes(
            VFIO_PCI_HOT_RESET_FLAG_DEV_ID,
            &[(1, "0000:01:00.0"), (DEVID_NOT_OWNED, "0000:01:00.1")],
        ));
        assert_eq!(
            plan(&theirs.unwrap(), &[7]),
            Plan::NotOurs(vec![bdf("0000:01:00.1")])
        );
    }

    #[test]
    fn open_groups_are_the_fds_naming_a_vfio_group() {
        let dir = std::env::temp_dir().join(format!("zhitong-fds-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir(&dir).unwrap();
        for (fd, target) in [
            ("5", "/dev/vfio/12"),
            ("6", "/dev/null"),
            ("7", "/dev/vfio/vfio"),
            ("8", "/dev/vfio/devices/vfio0"),
            ("9", "/dev/vfio/3"),
            ("x", "/dev/vfio/4"),
        ] {
            std::os::unix::fs::symlink(target, dir.join(fd)).unwrap();
        }
        let groups = open_groups(&dir);
        fs::remove_dir_all(&dir).unwrap();
        assert_eq!(groups, HashMap::from([(12, 5), (3, 9)]));
    }
}
