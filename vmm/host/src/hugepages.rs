//! Huge pages for guest RAM: the sizes a guest can be backed with, and whether the host has
//! enough of them free (/sys/kernel/mm/hugepages/hugepages-`<kB>`kB/free_hugepages). A VM
//! backed by huge pages reserves them all when its RAM is mapped, so a shortfall is found
//! before the guest runs, never as a fault later.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::{Finding, Host};
use arch::units::format_size;

/// In config files and JSON: "2M", "1G".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HugePageSize {
    #[serde(rename = "2M")]
    Size2M,
    #[serde(rename = "1G")]
    Size1G,
}

impl HugePageSize {
    pub fn bytes(self) -> u64 {
        match self {
            HugePageSize::Size2M => 2 << 20,
            HugePageSize::Size1G => 1 << 30,
        }
    }

    /// log2 of the size, as MFD_HUGE_* and MAP_HUGE_* encode it.
    pub fn shift(self) -> u32 {
        self.bytes().trailing_zeros()
    }

    /// The host's pool of this size in sysfs.
    pub fn sysfs_dir(self) -> String {
        format!("kernel/mm/hugepages/hugepages-{}kB", self.bytes() >> 10)
    }
}

impl fmt::Display for HugePageSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HugePageSize::Size2M => "2M",
            HugePageSize::Size1G => "1G",
        })
    }
}

impl FromStr for HugePageSize {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "2M" | "2m" => Ok(HugePageSize::Size2M),
            "1G" | "1g" => Ok(HugePageSize::Size1G),
            _ => Err(format!("unknown huge page size '{s}' (2M or 1G)")),
        }
    }
}

/// Whether `memory` bytes of guest RAM fit the host's free huge pages of `size`: the number
/// free against the number needed, and the sysctl that fixes a shortfall.
pub fn check(host: &Host, memory: u64, size: HugePageSize) -> Finding {
    const CHECK: &str = "hugepages";
    let need = memory.div_ceil(size.bytes());
    let dir = size.sysfs_dir();
    let read = |name: &str| {
        std::fs::read_to_string(host.sysfs.path(format!("{dir}/{name}")))
            .ok()
            .and_then(|t| t.trim().parse::<u64>().ok())
    };
    let Some(free) = read("free_hugepages") else {
        let fix = match size {
            HugePageSize::Size1G => "use 2M pages, or a CPU with 1G pages (pdpe1gb in /proc/cpuinfo) and hugepagesz=1G on the kernel command line",
            HugePageSize::Size2M => "use a kernel with CONFIG_HUGETLBFS, or leave hugepages out (transparent huge pages are used then)",
        };
        return Finding::fail(
            CHECK,
            format!("this host has no {size} huge pages (no /sys/{dir})"),
            fix,
        );
    };
    let total = read("nr_hugepages").unwrap_or(free);
    if free >= need {
        return Finding::ok(
            CHECK,
            format!(
                "{need} free {size} huge pages back the {} of guest RAM ({free} free of {total})",
                format_size(memory)
            ),
        );
    }
    Finding::fail(
        CHECK,
        format!(
            "the {} of guest RAM needs {need} {size} huge pages; the host has {free} free (of {total})",
            format_size(memory)
        ),
        format!(
            "reserve them: echo {} > /sys/{dir}/nr_hugepages (as root; at boot: hugepagesz={size} hugepages={}), or give the guest less memory",
            total + (need - free),
            total + (need - free)
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sysfs::fake::FakeSysfs;

    #[test]
    fn sizes_parse_print_and_name_their_pool() {
        for s in [HugePageSize::Size2M, HugePageSize::Size1G] {
            assert_eq!(s.to_string().parse::<HugePageSize>(), Ok(s));
        }
        assert_eq!(HugePageSize::Size2M.shift(), 21);
        assert_eq!(HugePageSize::Size1G.shift(), 30);
        assert_eq!(
            HugePageSize::Size1G.sysfs_dir(),
            "kernel/mm/hugepages/hugepages-1048576kB"
        );
        let e = "4M".parse::<HugePageSize>().unwrap_err();
        assert_eq!(e, "unknown huge page size '4M' (2M or 1G)");
    }

    #[test]
    fn free_pages_are_counted_against_the_need() {
        let fake = FakeSysfs::new("hugepages");
        let host = fake.host();
        let f = check(&host, 16 << 30, HugePageSize::Size1G);
        assert!(f.is_fail() && f.message.contains("no 1G huge pages"), "{f}");
        let dir = "sys/kernel/mm/hugepages/hugepages-1048576kB";
        fake.file(&format!("{dir}/nr_hugepages"), "10\n");
        fake.file(&format!("{dir}/free_hugepages"), "8\n");
        let f = check(&host, 16 << 30, HugePageSize::Size1G);
        assert_eq!(
            f.to_string(),
            "the 16G of guest RAM needs 16 1G huge pages; the host has 8 free (of 10); reserve them: echo 18 > /sys/kernel/mm/hugepages/hugepages-1048576kB/nr_hugepages (as root; at boot: hugepagesz=1G hugepages=18), or give the guest less memory"
        );
        fake.file(&format!("{dir}/free_hugepages"), "16\n");
        let f = check(&host, 16 << 30, HugePageSize::Size1G);
        assert!(!f.is_fail(), "{f}");
        assert!(f.message.starts_with("16 free 1G huge pages"), "{f}");
    }
}
