//! The host side of virtio-net: a tap interface opened through /dev/net/tun with a 12-byte
//! virtio-net header on every frame (IFF_VNET_HDR + TUNSETVNETHDRSZ), non-blocking.
//!
//! Opening attaches to an existing tap of that name (a persistent tap created for this user
//! needs no privilege) or creates one (needs CAP_NET_ADMIN). The offloads the tap takes are
//! probed once at open, so the device offers the guest only those; the ones the driver
//! accepted are set at activation ([`Tap::set_offload`]).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

use super::NetError;

/// The virtio_net_hdr_v1 (with num_buffers) the tap and the guest exchange.
pub const VNET_HDR_LEN: usize = 12;

/// Offload flags of TUNSETOFFLOAD (linux/if_tun.h).
pub const TUN_F_CSUM: u32 = 0x01;
pub const TUN_F_TSO4: u32 = 0x02;
pub const TUN_F_TSO6: u32 = 0x04;
pub const TUN_F_TSO_ECN: u32 = 0x08;
pub const TUN_F_UFO: u32 = 0x10;

const IFNAMSIZ: usize = 16;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_VNET_HDR: libc::c_short = 0x4000;

/// _IOW('T', nr, 4 bytes) and _IOR('T', nr, 4 bytes).
const fn iow(nr: u64) -> u64 {
    (1 << 30) | (4 << 16) | ((b'T' as u64) << 8) | nr
}
const TUNSETIFF: u64 = iow(202);
const TUNSETOFFLOAD: u64 = iow(208);
const TUNSETVNETHDRSZ: u64 = iow(216);

/// struct ifreq as TUNSETIFF reads it: the name, then the flags (the rest of the union
/// padded out).
#[repr(C)]
struct IfReq {
    name: [u8; IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// What frames go through: a tap, or (tests, fuzzing) one end of a socket pair that keeps
/// message boundaries.
pub struct Tap {
    fd: OwnedFd,
    name: String,
    is_tap: bool,
    /// The TUN_F_* flags the tap accepted when probed at open.
    offloads: u32,
}

/// Why a name cannot be an interface name, if it cannot.
pub fn name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("the name is empty")
    } else if name.len() > IFNAMSIZ - 1 {
        Some("the name is longer than 15 bytes")
    } else if name == "." || name == ".." {
        Some("the name cannot be . or ..")
    } else if name.contains('/') {
        Some("the name contains '/'")
    } else if name.contains(':') {
        Some("the name contains ':'")
    } else if name.contains('%') {
        Some("the name contains '%' (name templates are not supported)")
    } else if name.chars().any(|c| c.is_whitespace() || c == '\0') {
        Some("the name contains whitespace or a NUL")
    } else {
        None
    }
}

fn uid() -> u32 {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() }
}

/// The error for a failed open of /dev/net/tun.
pub fn open_error(name: &str, e: io::Error) -> NetError {
    let name = name.to_string();
    match e.raw_os_error() {
        Some(libc::ENOENT | libc::ENODEV | libc::ENXIO) => NetError::TunMissing { name },
        Some(libc::EPERM | libc::EACCES) => NetError::PermissionDenied { name, uid: uid() },
        _ => NetError::Io { name, source: e },
    }
}

/// The error for a failed TUNSETIFF on `name`.
pub fn attach_error(name: &str, e: io::Error) -> NetError {
    let name = name.to_string();
    match e.raw_os_error() {
        Some(libc::EPERM | libc::EACCES) => NetError::PermissionDenied { name, uid: uid() },
        Some(libc::EBUSY) => NetError::Busy { name },
        Some(libc::EINVAL) => NetError::NotATap { name },
        Some(libc::ENOENT | libc::ENODEV | libc::ENXIO) => NetError::TunMissing { name },
        _ => NetError::Io { name, source: e },
    }
}

/// ioctl with a pointer or integer argument; the caller vouches for `arg`.
fn ioctl(fd: RawFd, req: u64, arg: libc::c_ulong) -> io::Result<()> {
    // SAFETY: the requests used here take an int by value or a pointer the caller passes
    // to a live, correctly sized object; the kernel checks the rest.
    let r = unsafe { libc::ioctl(fd, req as _, arg) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

impl Tap {
    /// Attach to (or create) tap `name`.
    pub fn open(name: &str) -> Result<Tap, NetError> {
        if let Some(reason) = name_problem(name) {
            return Err(NetError::InvalidName {
                name: name.to_string(),
                reason,
            });
        }
        let file: File = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")
            .map_err(|e| open_error(name, e))?;
        let mut req = IfReq {
            name: [0; IFNAMSIZ],
            flags: IFF_TAP | IFF_NO_PI | IFF_VNET_HDR,
            _pad: [0; 22],
        };
        req.name[..name.len()].copy_from_slice(name.as_bytes());
        let fd = file.as_raw_fd();
        ioctl(fd, TUNSETIFF, &mut req as *mut IfReq as libc::c_ulong)
            .map_err(|e| attach_error(name, e))?;
        let io = |source| NetError::Io {
            name: name.to_string(),
            source,
        };
        let mut hdr: libc::c_int = VNET_HDR_LEN as libc::c_int;
        ioctl(
            fd,
            TUNSETVNETHDRSZ,
            &mut hdr as *mut libc::c_int as libc::c_ulong,
        )
        .map_err(io)?;
        let mut tap = Tap {
            fd: file.into(),
            name: name.to_string(),
            is_tap: true,
            offloads: 0,
        };
        tap.offloads = tap.probe_offloads();
        // Until a driver accepts some, the kernel finishes checksums and segments itself.
        tap.set_offload(0).map_err(io)?;
        Ok(tap)
    }

    /// Each offload on top of the ones taken so far (TSO and UFO need CSUM, ECN needs TSO).
    fn probe_offloads(&self) -> u32 {
        let mut ok = 0;
        if self.set_offload(TUN_F_CSUM).is_err() {
            return 0;
        }
        ok |= TUN_F_CSUM;
        for flag in [TUN_F_TSO4, TUN_F_TSO6, TUN_F_TSO_ECN, TUN_F_UFO] {
            if flag == TUN_F_TSO_ECN && ok & (TUN_F_TSO4 | TUN_F_TSO6) == 0 {
                continue;
            }
            if self.set_offload(ok | flag).is_ok() {
                ok |= flag;
            }
        }
        ok
    }

    /// One end of a socket pair standing in for a tap, as if it took every offload.
    #[cfg(any(test, feature = "mock"))]
    pub fn socket(fd: OwnedFd, name: &str) -> Tap {
        Tap {
            fd,
            name: name.to_string(),
            is_tap: false,
            offloads: TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN | TUN_F_UFO,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The TUN_F_* offloads the tap accepted at open.
    pub fn offloads(&self) -> u32 {
        self.offloads
    }

    /// What the guest can take from the tap: partial checksums, TSO/UFO frames (TUN_F_*).
    pub fn set_offload(&self, flags: u32) -> io::Result<()> {
        if !self.is_tap {
            return Ok(());
        }
        ioctl(
            self.fd.as_raw_fd(),
            TUNSETOFFLOAD,
            libc::c_ulong::from(flags),
        )
    }

    /// Read one frame (with its header); `Ok(None)` when none is waiting.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        // SAFETY: buf is valid for buf.len() bytes of writes.
        let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n >= 0 {
            return Ok(Some(n as usize));
        }
        let e = io::Error::last_os_error();
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(None),
            _ => Err(e),
        }
    }

    /// Write one frame (with its header); `Ok(false)` when the tap cannot take it now.
    pub fn send(&self, buf: &[u8]) -> io::Result<bool> {
        // SAFETY: buf is valid for buf.len() bytes of reads.
        let n = unsafe { libc::write(self.fd.as_raw_fd(), buf.as_ptr().cast(), buf.len()) };
        if n >= 0 {
            return Ok(true);
        }
        let e = io::Error::last_os_error();
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(false),
            _ => Err(e),
        }
    }
}

impl AsRawFd for Tap {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}
