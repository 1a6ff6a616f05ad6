//! virtio-blk over a regular file or a block device: one queue, requests IN, OUT, FLUSH
//! and GET_ID, served on a worker thread (`block/worker.rs`) that validates every chain
//! (`block/request.rs`).
//!
//! The disk is locked with flock (exclusive when writable, shared when read-only) so two
//! VMs cannot write one image. A size that is not a multiple of 512 is rounded down (the
//! tail is not visible to the guest) with a warning.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_F_BLK_SIZE, VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_RO, VIRTIO_BLK_F_SEG_MAX,
};
use vm_memory::GuestMemoryMmap;

use super::worker_thread::WorkerThread;
use super::VIRTIO_F_VERSION_1;
use super::{ActiveQueue, VirtioDevice, VirtioError, VirtioInterrupt, TYPE_BLOCK};
use crate::services::WorkerSpawner;

mod request;
mod worker;

pub use request::{SECTOR_SIZE, SEG_MAX, SERIAL_LEN};

/// The one queue's maximum size.
pub const QUEUE_SIZE: u16 = 256;

#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    #[error("disk image {0}: no such file; check the path")]
    NotFound(PathBuf),
    #[error("disk image {0} is a directory; give a raw image file or a block device")]
    IsDirectory(PathBuf),
    #[error("disk image {0} is not a regular file or block device; give a raw image file or a block device")]
    NotAFileOrBlockDevice(PathBuf),
    #[error("disk image {0}: permission denied; make it readable (and writable unless readonly=on) by the user zhitong runs as")]
    PermissionDenied(PathBuf),
    #[error("disk image {0}: cannot be opened for writing (read-only file or file system); use readonly=on")]
    ReadOnly(PathBuf),
    #[error("disk image {0} is in use by another process (it holds a lock on it); stop that process, or give another image")]
    Locked(PathBuf),
    #[error("disk image {path}: serial {serial:?} is {len} bytes, at most 20 allowed")]
    SerialTooLong {
        path: PathBuf,
        serial: String,
        len: usize,
    },
    #[error("disk image {0}: {1}")]
    Io(PathBuf, #[source] std::io::Error),
}

/// What the worker needs of the disk.
pub(crate) struct Disk {
    pub file: File,
    pub readonly: bool,
    /// In 512-byte sectors.
    pub capacity: u64,
    pub serial: [u8; SERIAL_LEN],
}

pub struct VirtioBlock {
    disk: Arc<Disk>,
    config: [u8; 24],
    spawner: Option<Arc<dyn WorkerSpawner>>,
    worker: Option<WorkerThread>,
}

fn errno(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(0)
}

fn open_file(path: &Path, readonly: bool) -> Result<File, BlockError> {
    let p = || path.to_path_buf();
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => BlockError::NotFound(p()),
        std::io::ErrorKind::PermissionDenied => BlockError::PermissionDenied(p()),
        _ => BlockError::Io(p(), e),
    })?;
    let ft = meta.file_type();
    if ft.is_dir() {
        return Err(BlockError::IsDirectory(p()));
    }
    if !ft.is_file() && !ft.is_block_device() {
        return Err(BlockError::NotAFileOrBlockDevice(p()));
    }
    match OpenOptions::new().read(true).write(!readonly).open(path) {
        Ok(f) => Ok(f),
        Err(e) if errno(&e) == libc::EROFS => Err(BlockError::ReadOnly(p())),
        Err(e) if errno(&e) == libc::EACCES || errno(&e) == libc::EPERM => {
            // Readable but not writable: the fix is opening it read-only.
            if !readonly && File::open(path).is_ok() {
                Err(BlockError::ReadOnly(p()))
            } else {
                Err(BlockError::PermissionDenied(p()))
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(BlockError::NotFound(p())),
        Err(e) => Err(BlockError::Io(p(), e)),
    }
}

fn lock(file: &File, path: &Path, readonly: bool) -> Result<(), BlockError> {
    let op = if readonly {
        libc::LOCK_SH
    } else {
        libc::LOCK_EX
    };
    // SAFETY: flock on a file descriptor we own; no memory is involved.
    let r = unsafe { libc::flock(file.as_raw_fd(), op | libc::LOCK_NB) };
    if r == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    if errno(&e) == libc::EWOULDBLOCK {
        Err(BlockError::Locked(path.to_path_buf()))
    } else {
        Err(BlockError::Io(path.to_path_buf(), e))
    }
}

impl VirtioBlock {
    pub fn open(
        path: &Path,
        readonly: bool,
        serial: Option<String>,
    ) -> Result<VirtioBlock, BlockError> {
        let mut id = [0u8; SERIAL_LEN];
        if let Some(s) = serial {
            if s.len() > SERIAL_LEN {
                let len = s.len();
                return Err(BlockError::SerialTooLong {
                    path: path.to_path_buf(),
                    serial: s,
                    len,
                });
            }
            id[..s.len()].copy_from_slice(s.as_bytes());
        }
        let mut file = open_file(path, readonly)?;
        lock(&file, path, readonly)?;
        // Seeking to the end gives the size of block devices too.
        let size = file
            .seek(SeekFrom::End(0))
            .map_err(|e| BlockError::Io(path.to_path_buf(), e))?;
        if size % SECTOR_SIZE != 0 {
            log::warn!(
                "disk image {}: size {size} is not a multiple of {SECTOR_SIZE}; the last {} bytes are not visible to the guest",
                path.display(),
                size % SECTOR_SIZE
            );
        }
        let capacity = size / SECTOR_SIZE;
        let mut config = [0u8; 24];
        config[0..8].copy_from_slice(&capacity.to_le_bytes());
        config[12..16].copy_from_slice(&SEG_MAX.to_le_bytes());
        config[20..24].copy_from_slice(&(SECTOR_SIZE as u32).to_le_bytes());
        Ok(VirtioBlock {
            disk: Arc::new(Disk {
                file,
                readonly,
                capacity,
                serial: id,
            }),
            config,
            spawner: None,
            worker: None,
        })
    }

    /// The disk's size in 512-byte sectors.
    pub fn capacity(&self) -> u64 {
        self.disk.capacity
    }

    /// Whether a worker thread is running.
    pub fn is_running(&self) -> bool {
        self.worker.is_some()
    }

    fn stop(&mut self) {
        if let Some(w) = self.worker.take() {
            w.stop();
        }
    }
}

impl VirtioDevice for VirtioBlock {
    fn device_type(&self) -> u32 {
        TYPE_BLOCK
    }

    fn features(&self) -> u64 {
        let mut f = VIRTIO_F_VERSION_1
            | 1 << VIRTIO_BLK_F_FLUSH
            | 1 << VIRTIO_BLK_F_SEG_MAX
            | 1 << VIRTIO_BLK_F_BLK_SIZE;
        if self.disk.readonly {
            f |= 1 << VIRTIO_BLK_F_RO;
        }
        f
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        let Ok(start) = usize::try_from(offset) else {
            return;
        };
        for (i, b) in data.iter_mut().enumerate() {
            if let Some(v) = start.checked_add(i).and_then(|o| self.config.get(o)) {
                *b = *v;
            }
        }
    }

    fn set_worker_spawner(&mut self, spawner: Arc<dyn WorkerSpawner>) {
        self.spawner = Some(spawner);
    }

    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        queues: Vec<ActiveQueue>,
        interrupt: Arc<dyn VirtioInterrupt>,
    ) -> Result<(), VirtioError> {
        if self.worker.is_some() {
            return Err(VirtioError::AlreadyActive);
        }
        let got = queues.len();
        let Some(queue) = queues.into_iter().find(|q| q.index == 0) else {
            return Err(VirtioError::MissingQueues { needed: 1, got });
        };
        let spawner = self.spawner.clone().ok_or(VirtioError::NoSpawner)?;
        let w = worker::start(&*spawner, self.disk.clone(), mem, queue, interrupt)?;
        self.worker = Some(w);
        Ok(())
    }

    fn reset(&mut self) {
        self.stop();
    }
}

impl Drop for VirtioBlock {
    fn drop(&mut self) {
        self.stop();
    }
}
