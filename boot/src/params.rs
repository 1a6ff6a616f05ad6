//! The zero page (struct boot_params): setup header, command line, initramfs, e820, RSDP.

use arch::e820::E820Entry;
use arch::layout::{CMDLINE_START, ZERO_PAGE_START};
use linux_loader::cmdline::Cmdline;
use linux_loader::configurator::linux::LinuxBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::bootparam::{boot_e820_entry, boot_params};
use linux_loader::loader::load_cmdline;
use vm_memory::{GuestAddress, GuestMemoryMmap};

use crate::{BootError, GuestWriteError, InitramfsPlacement, LoadedKernel};

const KERNEL_BOOT_FLAG_MAGIC: u16 = 0xaa55;
const KERNEL_HDR_MAGIC: u32 = 0x5372_6448;
const KERNEL_LOADER_OTHER: u8 = 0xff;
const KERNEL_MIN_ALIGNMENT_BYTES: u32 = 0x100_0000;
/// Last address an initramfs may use when the kernel has no setup header to say so.
pub const DEFAULT_INITRD_ADDR_MAX: u64 = 0x7fff_ffff;

pub struct BootParamsInput<'a> {
    pub kernel: &'a LoadedKernel,
    pub cmdline: &'a Cmdline,
    pub initramfs: Option<InitramfsPlacement>,
    pub e820: &'a [E820Entry],
    pub rsdp_addr: u64,
}

/// Build the zero page and write it, and the command line, into guest memory.
pub fn write_boot_params(mem: &GuestMemoryMmap, input: &BootParamsInput) -> Result<(), BootError> {
    load_cmdline(mem, GuestAddress(CMDLINE_START), input.cmdline)
        .map_err(|e| BootError::GuestMemory(e.into()))?;
    let cmdline_len = input
        .cmdline
        .as_cstring()
        .map_err(|e| BootError::Cmdline(e.into()))?
        .as_bytes()
        .len();
    let params = build(input, cmdline_len)?;
    LinuxBootConfigurator::write_bootparams::<GuestMemoryMmap>(
        &BootParams::new::<boot_params>(&params, GuestAddress(ZERO_PAGE_START)),
        mem,
    )
    .map_err(|e| BootError::GuestMemory(e.into()))
}

fn build(input: &BootParamsInput, cmdline_len: usize) -> Result<boot_params, BootError> {
    let mut params = boot_params::default();
    if let Some(header) = input.kernel.setup_header {
        params.hdr = header;
    } else {
        params.hdr.boot_flag = KERNEL_BOOT_FLAG_MAGIC;
        params.hdr.header = KERNEL_HDR_MAGIC;
        params.hdr.kernel_alignment = KERNEL_MIN_ALIGNMENT_BYTES;
    }
    params.hdr.type_of_loader = KERNEL_LOADER_OTHER;
    params.hdr.cmd_line_ptr = CMDLINE_START as u32;
    params.hdr.cmdline_size = cmdline_len as u32;
    if let Some(initramfs) = input.initramfs {
        params.hdr.ramdisk_image = initramfs.addr as u32;
        params.hdr.ramdisk_size = initramfs.size as u32;
    }
    params.acpi_rsdp_addr = input.rsdp_addr;
    if input.e820.len() > params.e820_table.len() {
        return Err(BootError::GuestMemory(GuestWriteError::TooManyE820Entries(
            input.e820.len(),
        )));
    }
    for (slot, entry) in params.e820_table.iter_mut().zip(input.e820) {
        *slot = boot_e820_entry {
            addr: entry.addr,
            size: entry.size,
            r#type: entry.kind,
        };
    }
    params.e820_entries = input.e820.len() as u8;
    Ok(params)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{build_cmdline, KernelFormat};

    #[test]
    fn elf_kernel_gets_a_synthetic_header_and_everything_is_recorded() {
        let kernel = LoadedKernel {
            format: KernelFormat::Elf,
            entry: GuestAddress(0x100_0000),
            end: 0x300_0000,
            setup_header: None,
        };
        let cmdline = build_cmdline("console=ttyS0").unwrap();
        let e820 = arch::e820::memory_map(512 << 20);
        let input = BootParamsInput {
            kernel: &kernel,
            cmdline: &cmdline,
            initramfs: Some(InitramfsPlacement {
                addr: 0x1000_0000,
                size: 1234,
            }),
            e820: &e820,
            rsdp_addr: 0xe_0000,
        };
        let p = build(&input, 20).unwrap();
        assert_eq!({ p.hdr.header }, KERNEL_HDR_MAGIC);
        assert_eq!({ p.hdr.boot_flag }, KERNEL_BOOT_FLAG_MAGIC);
        assert_eq!({ p.hdr.cmd_line_ptr }, CMDLINE_START as u32);
        assert_eq!({ p.hdr.ramdisk_image }, 0x1000_0000);
        assert_eq!({ p.hdr.ramdisk_size }, 1234);
        assert_eq!({ p.acpi_rsdp_addr }, 0xe_0000);
        assert_eq!(p.e820_entries as usize, e820.len());
        assert_eq!({ p.e820_table[2].addr }, e820[2].addr);
    }
}
