//! Human names for PCI class codes (the `class` attribute: base class, subclass, prog-if).

/// A short name for a 24-bit class code: "GPU", "HD audio", "NVMe", "PCI bridge"...
pub fn class_name(class: u32) -> String {
    let base = (class >> 16) as u8;
    let sub = (class >> 8) as u8;
    let name = match (base, sub) {
        (0x01, 0x00) => "SCSI storage",
        (0x01, 0x01) => "IDE storage",
        (0x01, 0x04) => "RAID storage",
        (0x01, 0x06) => "SATA storage",
        (0x01, 0x07) => "SAS storage",
        (0x01, 0x08) => "NVMe",
        (0x01, _) => "storage",
        (0x02, 0x00) => "Ethernet",
        (0x02, 0x80) => "network",
        (0x02, _) => "network",
        (0x03, 0x00) => "GPU",
        (0x03, 0x02) => "3D GPU",
        (0x03, _) => "display",
        (0x04, 0x01) => "audio",
        (0x04, 0x03) => "HD audio",
        (0x04, _) => "multimedia",
        (0x05, _) => "memory controller",
        (0x06, 0x00) => "host bridge",
        (0x06, 0x01) => "ISA bridge",
        (0x06, 0x04) => "PCI bridge",
        (0x06, _) => "bridge",
        (0x07, _) => "communication",
        (0x08, 0x06) => "IOMMU",
        (0x08, _) => "system peripheral",
        (0x09, _) => "input",
        (0x0c, 0x03) => "USB",
        (0x0c, 0x05) => "SMBus",
        (0x0c, _) => "serial bus",
        (0x0d, _) => "wireless",
        (0x10, _) => "encryption",
        (0x11, _) => "signal processing",
        (0x12, _) => "accelerator",
        (0x13, _) => "instrumentation",
        (0xff, _) => "unassigned class",
        _ => return format!("class {class:06x}"),
    };
    name.to_owned()
}

/// Whether the class is a bridge (kept with its host driver, never moved to vfio-pci).
pub fn is_bridge(class: u32) -> bool {
    class >> 16 == 0x06
}

/// A byte count as its largest whole binary unit: 256M, 16K, 32G, 128 (bytes).
pub fn short_size(bytes: u64) -> String {
    for (shift, unit) in [(40, "T"), (30, "G"), (20, "M"), (10, "K")] {
        if bytes >= 1 << shift && bytes.is_multiple_of(1 << shift) {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    bytes.to_string()
}

/// A byte count to one decimal in its largest binary unit: 255.9T, 960G, 1.5G.
pub fn approx_size(bytes: u64) -> String {
    for (shift, unit) in [(40, "T"), (30, "G"), (20, "M"), (10, "K")] {
        if bytes >= 1 << shift {
            let tenths = (bytes as u128 * 10) >> shift;
            return if tenths.is_multiple_of(10) {
                format!("{}{unit}", tenths / 10)
            } else {
                format!("{}.{}{unit}", tenths / 10, tenths % 10)
            };
        }
    }
    bytes.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(class_name(0x030000), "GPU");
        assert_eq!(class_name(0x040300), "HD audio");
        assert_eq!(class_name(0x010802), "NVMe");
        assert_eq!(class_name(0x060400), "PCI bridge");
        assert_eq!(class_name(0x0e0000), "class 0e0000");
        assert!(is_bridge(0x060000) && !is_bridge(0x030200));
        assert_eq!(short_size(256 << 20), "256M");
        assert_eq!(short_size(32 << 30), "32G");
        assert_eq!(short_size(128), "128");
        assert_eq!(short_size(24 << 10), "24K");
        assert_eq!(approx_size(262080 << 30), "255.9T");
        assert_eq!(approx_size(960 << 30), "960G");
        assert_eq!(approx_size(3 << 29), "1.5G");
    }
}
