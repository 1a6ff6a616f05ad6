//! virtio-vsock (device type 19) with the hybrid Unix-socket backend of Firecracker and
//! Cloud Hypervisor: stream sockets between the guest and host processes, no vhost.
//!
//! - Host → guest: a host process connects to the device's socket and writes
//!   `CONNECT <port>\n`; the guest's listener on that port accepts, the device answers
//!   `OK <local port>\n`, then the stream carries the connection's bytes. A guest that
//!   refuses closes the stream.
//! - Guest → host: a guest connection to CID 2 (the host) port P is a connection to the
//!   Unix socket `<socket>_<P>`; nobody listening there is a refusal.
//!
//! Layout: `vsock/packet.rs` the header and descriptor chains, `vsock/conn.rs` a
//! connection's state and credit, `vsock/muxer.rs` the connections and the listener,
//! `vsock/host.rs` the host sockets, `vsock/worker.rs` the thread (its doc lists the
//! syscalls it makes). Queues: rx 0, tx 1, event 2.

use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use vm_memory::GuestMemoryMmap;

use super::worker_thread::WorkerThread;
use super::VIRTIO_F_VERSION_1;
use super::{ActiveQueue, VirtioDevice, VirtioError, VirtioInterrupt, TYPE_VSOCK};
use crate::services::WorkerSpawner;

mod conn;
mod host;
mod muxer;
pub(crate) mod packet;
mod worker;

pub use conn::BUF_ALLOC;
pub use muxer::{FIRST_EPHEMERAL, MAX_CONNS};

/// Each queue's maximum size.
pub const QUEUE_SIZE: u16 = 256;
/// The longest socket path: `<path>_<port>` must still fit a sockaddr_un (107 bytes).
pub const MAX_PATH_LEN: usize = 107 - "_4294967295".len();

#[derive(Debug, thiserror::Error)]
pub enum VsockError {
    #[error("vsock CID {0} is reserved (0-2 are the hypervisor, local and host, 4294967295 is any); give the guest a CID from 3 to 4294967294")]
    ReservedCid(u64),
    #[error("vsock CID {0} does not fit in 32 bits; give the guest a CID from 3 to 4294967294")]
    CidTooLarge(u64),
    #[error("vsock socket {path}: {len} bytes is too long for a Unix socket with a port suffix; use a path of at most {MAX_PATH_LEN} bytes")]
    PathTooLong { path: PathBuf, len: usize },
    #[error("vsock socket {0} is in use (a process listens on it); stop that process or give another path")]
    InUse(PathBuf),
    #[error("vsock socket {0} exists and is not a socket; remove it or give another path")]
    NotASocket(PathBuf),
    #[error("vsock socket {0}: the directory does not exist; create it or give another path")]
    NoDirectory(PathBuf),
    #[error("vsock socket {0}: permission denied; make its directory writable by the user zhitong runs as")]
    PermissionDenied(PathBuf),
    #[error("vsock socket {0}: {1}")]
    Io(PathBuf, #[source] io::Error),
}

pub struct VirtioVsock {
    cid: u64,
    path: PathBuf,
    listener: Arc<UnixListener>,
    /// (device, inode) of the socket file we bound, so Drop removes only ours.
    inode: (u64, u64),
    spawner: Option<Arc<dyn WorkerSpawner>>,
    worker: Option<WorkerThread>,
}

fn io_error(path: &Path, e: io::Error) -> VsockError {
    let p = path.to_path_buf();
    match e.kind() {
        io::ErrorKind::NotFound => VsockError::NoDirectory(p),
        io::ErrorKind::PermissionDenied => VsockError::PermissionDenied(p),
        io::ErrorKind::AddrInUse => VsockError::InUse(p),
        _ => VsockError::Io(p, e),
    }
}

/// Make room for a listener at `path`: nothing there, or a stale socket (removed).
fn clear_stale(path: &Path) -> Result<(), VsockError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_error(path, e)),
    };
    if !meta.file_type().is_socket() {
        return Err(VsockError::NotASocket(path.to_path_buf()));
    }
    match UnixStream::connect(path) {
        Ok(_) => Err(VsockError::InUse(path.to_path_buf())),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            log::info!("vsock socket {}: removing a stale socket", path.display());
            std::fs::remove_file(path).map_err(|e| io_error(path, e))
        }
        Err(e) => Err(io_error(path, e)),
    }
}

impl VirtioVsock {
    /// A device giving the guest CID `cid`, listening for host clients at `socket`.
    pub fn open(cid: u64, socket: &Path) -> Result<VirtioVsock, VsockError> {
        if cid > u64::from(u32::MAX) {
            return Err(VsockError::CidTooLarge(cid));
        }
        if cid < 3 || cid == u64::from(u32::MAX) {
            return Err(VsockError::ReservedCid(cid));
        }
        let len = socket.as_os_str().len();
        if len > MAX_PATH_LEN || len == 0 {
            return Err(VsockError::PathTooLong {
                path: socket.to_path_buf(),
                len,
            });
        }
        clear_stale(socket)?;
        let listener = UnixListener::bind(socket).map_err(|e| io_error(socket, e))?;
        let meta = std::fs::symlink_metadata(socket).map_err(|e| io_error(socket, e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| io_error(socket, e))?;
        Ok(Self {
            cid,
            path: socket.to_path_buf(),
            listener: Arc::new(listener),
            inode: (meta.dev(), meta.ino()),
            spawner: None,
            worker: None,
        })
    }

    pub fn cid(&self) -> u64 {
        self.cid
    }

    pub fn socket_path(&self) -> &Path {
        &self.path
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

impl VirtioDevice for VirtioVsock {
    fn device_type(&self) -> u32 {
        TYPE_VSOCK
    }

    fn features(&self) -> u64 {
        VIRTIO_F_VERSION_1
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE; 3]
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let config = self.cid.to_le_bytes();
        data.fill(0);
        let Ok(start) = usize::try_from(offset) else {
            return;
        };
        for (i, b) in data.iter_mut().enumerate() {
            if let Some(v) = start.checked_add(i).and_then(|o| config.get(o)) {
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
        let mut slots: [Option<ActiveQueue>; 3] = [None, None, None];
        for q in queues {
            if let Some(s) = slots.get_mut(usize::from(q.index)) {
                *s = Some(q);
            }
        }
        let [Some(rx), Some(tx), event] = slots else {
            return Err(VirtioError::MissingQueues { needed: 2, got });
        };
        let spawner = self.spawner.clone().ok_or(VirtioError::NoSpawner)?;
        let muxer = muxer::Muxer::new(self.cid, self.path.clone(), self.listener.clone());
        let w = worker::start(&*spawner, muxer, mem, [rx, tx], event, interrupt)?;
        self.worker = Some(w);
        Ok(())
    }

    fn reset(&mut self) {
        self.stop();
    }
}

impl Drop for VirtioVsock {
    fn drop(&mut self) {
        self.stop();
        // Only the socket we bound: another process may have replaced it since.
        let ours =
            std::fs::symlink_metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == self.inode);
        if ours {
            if let Err(e) = std::fs::remove_file(&self.path) {
                log::warn!(
                    "vsock socket {}: cannot remove it: {e}",
                    self.path.display()
                );
            }
        }
    }
}
