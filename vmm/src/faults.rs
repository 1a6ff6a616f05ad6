//! Faults a test build can inject (cargo feature `test-faults`), to prove the failure paths
//! end the VM cleanly: `ZHITONG_TEST_FAULT=KIND:N` makes vCPU 0 misbehave at its Nth exit.
//! Kinds: `vcpu-panic` (the thread panics), `vcpu-syscall` (it makes a syscall its seccomp
//! filter forbids); `fail-after-devices:0`, where the VM fails to start right after its
//! devices are attached (as when a vCPU cannot be created); `dma-map-delay:MS`, where guest
//! RAM's DMA mapping starts MS milliseconds late (the guest reaches its devices while it
//! runs); and `dma-map-fail:0`, where that mapping fails. Without the feature every hook
//! is a no-op the compiler removes.

/// Environment variable naming the fault.
pub const FAULT_ENV: &str = "ZHITONG_TEST_FAULT";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    VcpuPanic { at_exit: u64 },
    VcpuSyscall { at_exit: u64 },
    FailAfterDevices,
    DmaMapDelay { ms: u64 },
    DmaMapFail,
}

impl Fault {
    /// `KIND:N` as in the module documentation; None for anything else.
    pub fn parse(text: &str) -> Option<Fault> {
        let (kind, n) = text.split_once(':')?;
        let at_exit = n.parse().ok()?;
        match kind {
            "vcpu-panic" => Some(Fault::VcpuPanic { at_exit }),
            "vcpu-syscall" => Some(Fault::VcpuSyscall { at_exit }),
            "fail-after-devices" => Some(Fault::FailAfterDevices),
            "dma-map-delay" => Some(Fault::DmaMapDelay { ms: at_exit }),
            "dma-map-fail" => Some(Fault::DmaMapFail),
            _ => None,
        }
    }
}

/// The fault this process was asked to inject (read once).
#[cfg(feature = "test-faults")]
fn configured() -> Option<Fault> {
    static FAULT: std::sync::OnceLock<Option<Fault>> = std::sync::OnceLock::new();
    *FAULT.get_or_init(|| Fault::parse(&std::env::var(FAULT_ENV).ok()?))
}

/// Called by vCPU `id` after each exit it handled (`count` so far).
#[cfg(feature = "test-faults")]
pub fn at_vcpu_exit(id: u8, count: u64) {
    match configured() {
        Some(Fault::VcpuPanic { at_exit }) if id == 0 && count == at_exit => {
            panic!("injected fault: vcpu-panic at exit {count}")
        }
        Some(Fault::VcpuSyscall { at_exit }) if id == 0 && count == at_exit => {
            // A syscall no vCPU thread needs: its filter must stop it.
            // SAFETY: socket(2) takes no pointers; the fd, if any, is closed at once.
            let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
            if fd >= 0 {
                // SAFETY: closing the fd just made.
                unsafe { libc::close(fd) };
            }
        }
        _ => {}
    }
}

#[cfg(not(feature = "test-faults"))]
#[inline(always)]
pub fn at_vcpu_exit(_id: u8, _count: u64) {}

/// Whether the VM must fail right after attaching its devices.
#[cfg(feature = "test-faults")]
pub fn fail_after_devices() -> bool {
    configured() == Some(Fault::FailAfterDevices)
}

#[cfg(not(feature = "test-faults"))]
#[inline(always)]
pub fn fail_after_devices() -> bool {
    false
}

/// Called by the DMA-mapping thread before it maps: waits, or says the mapping must fail.
#[cfg(feature = "test-faults")]
pub fn before_dma_map() -> Result<(), std::io::Error> {
    match configured() {
        Some(Fault::DmaMapDelay { ms }) => {
            std::thread::sleep(std::time::Duration::from_millis(ms));
            Ok(())
        }
        Some(Fault::DmaMapFail) => Err(std::io::Error::other("injected fault: dma-map-fail")),
        _ => Ok(()),
    }
}

#[cfg(not(feature = "test-faults"))]
#[inline(always)]
pub fn before_dma_map() -> Result<(), std::io::Error> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_specs() {
        assert_eq!(
            Fault::parse("vcpu-panic:100"),
            Some(Fault::VcpuPanic { at_exit: 100 })
        );
        assert_eq!(
            Fault::parse("vcpu-syscall:7"),
            Some(Fault::VcpuSyscall { at_exit: 7 })
        );
        assert_eq!(
            Fault::parse("fail-after-devices:0"),
            Some(Fault::FailAfterDevices)
        );
        assert_eq!(
            Fault::parse("dma-map-delay:3000"),
            Some(Fault::DmaMapDelay { ms: 3000 })
        );
        assert_eq!(Fault::parse("dma-map-fail:0"), Some(Fault::DmaMapFail));
        for bad in ["", "vcpu-panic", "vcpu-panic:x", "other:1"] {
            assert_eq!(Fault::parse(bad), None, "{bad}");
        }
    }
}
