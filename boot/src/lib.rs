//! Loading a Linux guest: the kernel image (bzImage or ELF vmlinux), the initramfs, the
//! command line and the zero page (boot_params) of the 64-bit boot protocol.

mod cmdline;
mod error;
mod initramfs;
mod kernel;
mod params;

pub use cmdline::build_cmdline;
pub use error::{BootError, CmdlineError, GuestWriteError, Setting};
pub use initramfs::{load_initramfs, InitramfsPlacement};
pub use kernel::{check_kernel_file, load_kernel, KernelFormat, LoadedKernel};
pub use params::{write_boot_params, BootParamsInput, DEFAULT_INITRD_ADDR_MAX};
