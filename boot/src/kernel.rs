//! Kernel image detection and loading through linux-loader.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use arch::layout::HIMEM_START;
use linux_loader::loader::bootparam::setup_header;
use linux_loader::loader::{bzimage::BzImage, elf::Elf, KernelLoader};
use vm_memory::{GuestAddress, GuestMemoryMmap};

use crate::BootError;

const ELF_MAGIC: &[u8; 4] = b"\x7fELF";
const BZIMAGE_MAGIC: u32 = 0x5372_6448; // "HdrS" at 0x202
const BZIMAGE_MIN_VERSION: u16 = 0x0206;
const EM_X86_64: u16 = 62;
/// bzImage: startup_64 sits 0x200 bytes into the protected-mode kernel.
const STARTUP_64_OFFSET: u64 = 0x200;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelFormat {
    BzImage,
    Elf,
}

/// A kernel in guest memory: where to jump, and what the zero page needs from it.
#[derive(Debug, Clone)]
pub struct LoadedKernel {
    pub format: KernelFormat,
    pub entry: GuestAddress,
    /// First byte after the kernel image.
    pub end: u64,
    /// The bzImage's setup header (None for ELF).
    pub setup_header: Option<setup_header>,
}

/// Look at the first bytes of `path` and say which kind of kernel it is, without loading it.
/// Used to reject a wrong file before any VM resources exist.
pub fn check_kernel_file(path: &Path) -> Result<KernelFormat, BootError> {
    let unreadable = |source| BootError::KernelUnreadable {
        path: path.to_owned(),
        source,
    };
    let mut file = File::open(path).map_err(unreadable)?;
    if file.metadata().map_err(unreadable)?.is_dir() {
        return Err(unreadable(std::io::Error::other("it is a directory")));
    }
    let mut head = [0u8; 0x210];
    let n = read_up_to(&mut file, &mut head).map_err(unreadable)?;
    let head = &head[..n];
    if head.len() >= 20 && &head[..4] == ELF_MAGIC {
        let is_64 = head[4] == 2;
        let machine = u16::from_le_bytes([head[18], head[19]]);
        if !is_64 || machine != EM_X86_64 {
            return Err(BootError::ElfNotX86_64 {
                path: path.to_owned(),
            });
        }
        return Ok(KernelFormat::Elf);
    }
    if head.len() >= 0x208 {
        let magic = u32::from_le_bytes(head[0x202..0x206].try_into().unwrap());
        if magic == BZIMAGE_MAGIC {
            let version = u16::from_le_bytes(head[0x206..0x208].try_into().unwrap());
            if version < BZIMAGE_MIN_VERSION {
                return Err(BootError::KernelTooOld {
                    path: path.to_owned(),
                    version,
                });
            }
            return Ok(KernelFormat::BzImage);
        }
    }
    Err(BootError::NotAKernel {
        path: path.to_owned(),
    })
}

fn read_up_to(file: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

/// Load the kernel at `path` into guest memory.
pub fn load_kernel(mem: &GuestMemoryMmap, path: &Path) -> Result<LoadedKernel, BootError> {
    let format = check_kernel_file(path)?;
    let mut file = File::open(path).map_err(|source| BootError::KernelUnreadable {
        path: path.to_owned(),
        source,
    })?;
    file.seek(SeekFrom::Start(0))
        .map_err(|source| BootError::KernelUnreadable {
            path: path.to_owned(),
            source,
        })?;
    let himem = Some(GuestAddress(HIMEM_START));
    let result = match format {
        KernelFormat::BzImage => BzImage::load(mem, None, &mut file, himem),
        KernelFormat::Elf => Elf::load(mem, None, &mut file, himem),
    }
    .map_err(|source| BootError::KernelLoad {
        path: path.to_owned(),
        source,
    })?;
    let entry = match format {
        KernelFormat::BzImage => result.kernel_load.0 + STARTUP_64_OFFSET,
        KernelFormat::Elf => result.kernel_load.0,
    };
    Ok(LoadedKernel {
        format,
        entry: GuestAddress(entry),
        end: result.kernel_end,
        setup_header: result.setup_header,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn temp_file(name: &str, bytes: &[u8]) -> std::path::PathBuf {
        let path = std::env::temp_dir().join(format!("zhitong-boot-{}-{name}", std::process::id()));
        File::create(&path).unwrap().write_all(bytes).unwrap();
        path
    }

    #[test]
    fn text_file_is_not_a_kernel() {
        let path = temp_file("text", b"hello world\n");
        let err = check_kernel_file(&path).unwrap_err();
        assert!(matches!(err, BootError::NotAKernel { .. }), "{err}");
        assert!(err.to_string().contains("kernel.path"), "{err}");
    }

    #[test]
    fn missing_file_is_unreadable() {
        let err = check_kernel_file(Path::new("/nonexistent/vmlinuz")).unwrap_err();
        assert!(matches!(err, BootError::KernelUnreadable { .. }), "{err}");
    }

    #[test]
    fn directory_is_unreadable() {
        let err = check_kernel_file(Path::new("/")).unwrap_err();
        assert!(err.to_string().contains("directory"), "{err}");
    }

    #[test]
    fn elf_of_another_machine_is_rejected() {
        let mut elf = vec![0u8; 64];
        elf[..4].copy_from_slice(ELF_MAGIC);
        elf[4] = 2;
        elf[18] = 183; // aarch64
        let path = temp_file("arm", &elf);
        assert!(matches!(
            check_kernel_file(&path).unwrap_err(),
            BootError::ElfNotX86_64 { .. }
        ));
        elf[18] = EM_X86_64 as u8;
        let path = temp_file("x86", &elf);
        assert_eq!(check_kernel_file(&path).unwrap(), KernelFormat::Elf);
    }

    #[test]
    fn bzimage_header_is_recognised_and_versioned() {
        let mut image = vec![0u8; 0x400];
        image[0x202..0x206].copy_from_slice(&BZIMAGE_MAGIC.to_le_bytes());
        image[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
        let path = temp_file("bz", &image);
        assert_eq!(check_kernel_file(&path).unwrap(), KernelFormat::BzImage);
        image[0x206..0x208].copy_from_slice(&0x0204u16.to_le_bytes());
        let path = temp_file("bzold", &image);
        assert!(matches!(
            check_kernel_file(&path).unwrap_err(),
            BootError::KernelTooOld { .. }
        ));
    }
}
