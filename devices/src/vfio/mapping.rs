//! An owned `mmap` of (part of) a VFIO region: unmapped when dropped.

use std::io;
use std::os::unix::io::RawFd;
use std::ptr::NonNull;

/// The host page size (what KVM slots and VFIO mmaps are aligned to).
pub fn page_size() -> u64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if size > 0 {
        size as u64
    } else {
        4096
    }
}

/// Host memory mapped from a device file (or anonymous memory standing in for it in tests).
#[derive(Debug)]
pub struct DeviceMapping {
    addr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain shared memory owned by this object; the pointer is never
// dereferenced here, only handed to KVM, and is valid from any thread.
unsafe impl Send for DeviceMapping {}
// SAFETY: as above, no interior state is touched through `&self`.
unsafe impl Sync for DeviceMapping {}

impl DeviceMapping {
    /// `mmap(MAP_SHARED)` `len` bytes of `fd` at file offset `offset`.
    pub fn map_fd(fd: RawFd, offset: u64, len: u64, writable: bool) -> io::Result<Self> {
        let len = usize::try_from(len).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let offset = libc::off_t::try_from(offset)
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        if len == 0 {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        }
        let prot = libc::PROT_READ | if writable { libc::PROT_WRITE } else { 0 };
        // SAFETY: a fresh mapping chosen by the kernel; no existing memory is affected.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                libc::MAP_SHARED,
                fd,
                offset,
            )
        };
        Self::from_mmap(addr, len)
    }

    /// Anonymous shared memory (the in-memory test device's "BAR").
    pub fn anonymous(len: u64) -> io::Result<Self> {
        let len = usize::try_from(len).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: a fresh anonymous mapping chosen by the kernel.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        Self::from_mmap(addr, len)
    }

    fn from_mmap(addr: *mut libc::c_void, len: usize) -> io::Result<Self> {
        if addr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let addr = NonNull::new(addr.cast::<u8>()).ok_or_else(io::Error::last_os_error)?;
        Ok(Self { addr, len })
    }

    pub fn as_ptr(&self) -> *mut u8 {
        self.addr.as_ptr()
    }

    pub fn len(&self) -> u64 {
        self.len as u64
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Drop for DeviceMapping {
    fn drop(&mut self) {
        // SAFETY: we own this mapping and nobody uses it after drop (KVM slots over it are
        // removed first: see `bars::BarRegion`).
        let ret = unsafe { libc::munmap(self.addr.as_ptr().cast(), self.len) };
        if ret != 0 {
            crate::limited!(
                warn,
                "munmap of a VFIO region mapping ({:#x} bytes) failed: {}",
                self.len,
                io::Error::last_os_error()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anonymous_mappings_are_usable_and_sized() {
        let m = DeviceMapping::anonymous(2 * page_size()).unwrap();
        assert_eq!(m.len(), 2 * page_size());
        // SAFETY: inside the mapping.
        unsafe {
            *m.as_ptr() = 7;
            assert_eq!(*m.as_ptr(), 7);
        }
    }

    #[test]
    fn a_bad_fd_is_an_error() {
        assert!(DeviceMapping::map_fd(-1, 0, page_size(), true).is_err());
        assert!(DeviceMapping::map_fd(-1, 0, 0, true).is_err());
    }
}
