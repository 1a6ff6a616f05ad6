//! Putting the guest's boot data into its RAM: kernel, initramfs, command line, ACPI tables
//! and the zero page.

use arch::acpi::PciHostConfig;
use arch::layout::{ram_regions, FOUR_GIB, RESET_VECTOR, RESET_VECTOR_STUB};
use boot::{BootParamsInput, DEFAULT_INITRD_ADDR_MAX};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::config::VmConfig;
use crate::error::{AcpiWriteError, Result};

/// Load everything; returns the kernel's 64-bit entry point.
pub fn load(mem: &GuestMemoryMmap, config: &VmConfig, pci: &PciHostConfig) -> Result<u64> {
    let kernel = boot::load_kernel(mem, &config.kernel.path)?;

    let initramfs = match &config.kernel.initramfs {
        Some(path) => {
            let addr_max = kernel
                .setup_header
                .map(|h| u64::from(h.initrd_addr_max))
                .filter(|&max| max != 0)
                .unwrap_or(DEFAULT_INITRD_ADDR_MAX);
            let low_ram_end = ram_regions(config.machine.memory_bytes)[0].1.min(FOUR_GIB);
            let limit = low_ram_end.min(addr_max + 1);
            Some(boot::load_initramfs(mem, path, kernel.end, limit)?)
        }
        None => None,
    };

    let cmdline = boot::build_cmdline(&config.kernel.cmdline)?;
    let rsdp_addr = write_acpi(mem, config, pci)?;
    let e820 = arch::e820::memory_map(config.machine.memory_bytes);
    boot::write_boot_params(
        mem,
        &BootParamsInput {
            kernel: &kernel,
            cmdline: &cmdline,
            initramfs,
            e820: &e820,
            rsdp_addr,
        },
    )?;
    log::debug!(
        "kernel {:?} entry {:#x}, initramfs {initramfs:?}",
        kernel.format,
        kernel.entry.0
    );
    Ok(kernel.entry.0)
}

fn write_acpi(
    mem: &GuestMemoryMmap,
    config: &VmConfig,
    pci: &PciHostConfig,
) -> std::result::Result<u64, AcpiWriteError> {
    let tables = arch::acpi::build(&arch::acpi::AcpiConfig {
        vcpus: config.machine.vcpus,
        pci: Some(pci.clone()),
    })?;
    for (addr, bytes) in &tables.blobs {
        if addr + bytes.len() as u64 > RESET_VECTOR {
            return Err(AcpiWriteError::TooBig);
        }
        mem.write_slice(bytes, GuestAddress(*addr))?;
    }
    mem.write_slice(&RESET_VECTOR_STUB, GuestAddress(RESET_VECTOR))?;
    Ok(tables.rsdp_addr)
}
