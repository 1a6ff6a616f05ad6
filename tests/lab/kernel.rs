//! The cached Debian guest kernel that resources/lab/setup.sh prepares:
//! bzImage, extracted ELF vmlinux and the depmod'ed modules tree.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

use crate::{workspace_root, Error, Result};

#[derive(Clone, Debug)]
pub struct Kernel {
    /// e.g. "6.1.0-56-amd64"
    pub version: String,
    /// bzImage (the L1 kernel, and L2's bzImage cases)
    pub vmlinuz: PathBuf,
    /// ELF extracted from the bzImage (L2's fast boots)
    pub vmlinux: PathBuf,
    /// lib/modules/`<version>`
    pub modules: PathBuf,
}

impl Kernel {
    /// The kernel in `$ZHITONG_LAB_CACHE` (default `<workspace>/target/lab-cache`) that
    /// resources/lab/setup.sh made current.
    pub fn locate() -> Result<Kernel> {
        Self::locate_named("current", "resources/lab/setup.sh")
    }

    /// The kernel the cache's symlink `link` names, which `script` prepares.
    pub fn locate_named(link: &str, script: &str) -> Result<Kernel> {
        let cache = match std::env::var_os("ZHITONG_LAB_CACHE") {
            Some(dir) => PathBuf::from(dir),
            None => workspace_root().join("target/lab-cache"),
        };
        let dir = fs::canonicalize(cache.join(link)).map_err(|_| {
            Error::new(format!(
                "no lab kernel {link} in {}: run {script} first",
                cache.display()
            ))
        })?;
        let version = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let kernel = Kernel {
            vmlinuz: dir.join("vmlinuz"),
            vmlinux: dir.join("vmlinux"),
            modules: dir.join("root/lib/modules").join(&version),
            version,
        };
        for p in [
            &kernel.vmlinuz,
            &kernel.vmlinux,
            &kernel.modules.join("modules.dep"),
        ] {
            if !p.exists() {
                return Err(Error::new(format!(
                    "lab kernel cache incomplete ({} missing): run {script}",
                    p.display()
                )));
            }
        }
        Ok(kernel)
    }

    /// Module files (relative to `self.modules`) to insmod, dependencies first,
    /// for the named modules ("kvm_amd" or "kvm-amd"). Built-in modules are
    /// skipped; an unknown name is an error.
    pub fn module_closure<S: AsRef<str>>(&self, names: &[S]) -> Result<Vec<String>> {
        let dep = fs::read_to_string(self.modules.join("modules.dep"))?;
        let builtin = fs::read_to_string(self.modules.join("modules.builtin")).unwrap_or_default();
        let mut order = Vec::new();
        let mut seen = HashSet::new();
        for name in names {
            let name = normalize(name.as_ref());
            if builtin.lines().any(|l| module_name(l) == name) {
                continue;
            }
            let line = dep
                .lines()
                .find(|l| module_name(l.split(':').next().unwrap_or("")) == name)
                .ok_or_else(|| {
                    Error::new(format!("module {name} not in {}", self.modules.display()))
                })?;
            let (file, deps) = line.split_once(':').unwrap_or((line, ""));
            // modules.dep lists the full closure, the deepest dependency last.
            for m in deps.split_whitespace().rev().chain([file]) {
                if seen.insert(m.to_string()) {
                    order.push(m.to_string());
                }
            }
        }
        Ok(order)
    }
}

/// "kernel/arch/x86/kvm/kvm-amd.ko" -> "kvm_amd"
fn module_name(path: &str) -> String {
    let base = Path::new(path.trim())
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = base.split(".ko").next().unwrap_or("");
    normalize(stem)
}

fn normalize(name: &str) -> String {
    name.replace('-', "_")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_names() {
        assert_eq!(module_name("kernel/arch/x86/kvm/kvm-amd.ko"), "kvm_amd");
        assert_eq!(
            module_name("kernel/drivers/vfio/pci/vfio-pci.ko.xz"),
            "vfio_pci"
        );
    }

    #[test]
    fn closure_orders_dependencies_first() {
        let dir = std::env::temp_dir().join(format!("zt-kernel-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        fs::write(
            dir.join("modules.dep"),
            "kernel/a/vfio.ko:\nkernel/a/irqbypass.ko:\n\
             kernel/a/vfio-pci-core.ko: kernel/a/vfio.ko kernel/a/irqbypass.ko\n\
             kernel/a/vfio-pci.ko: kernel/a/vfio-pci-core.ko kernel/a/vfio.ko kernel/a/irqbypass.ko\n",
        )
        .unwrap();
        fs::write(dir.join("modules.builtin"), "kernel/b/builtin_one.ko\n").unwrap();
        let k = Kernel {
            version: "x".into(),
            vmlinuz: dir.join("vmlinuz"),
            vmlinux: dir.join("vmlinux"),
            modules: dir.clone(),
        };
        let got = k
            .module_closure(&["vfio_pci", "builtin-one", "vfio"])
            .unwrap();
        assert_eq!(
            got,
            [
                "kernel/a/irqbypass.ko",
                "kernel/a/vfio.ko",
                "kernel/a/vfio-pci-core.ko",
                "kernel/a/vfio-pci.ko"
            ]
        );
        assert!(k.module_closure(&["nope"]).is_err());
        fs::remove_dir_all(&dir).unwrap();
    }
}
