#!/usr/bin/env bash
# Prepare a Debian 6.12 guest kernel for the nested lab, with iommufd
# (/dev/iommu) and the VFIO device cdev (/dev/vfio/devices/vfioN).
#
# Debian builds 6.12 with "# CONFIG_IOMMUFD is not set", so this script builds,
# out of tree against the matching linux-headers, from the matching
# linux-source:
#   iommufd.ko                        CONFIG_IOMMUFD=m
#   vfio.ko                           + CONFIG_VFIO_DEVICE_CDEV=y (VFIO_GROUP and
#   vfio_iommu_type1.ko                 VFIO_CONTAINER stay y: the legacy
#   vfio-pci-core.ko, vfio-pci.ko       /dev/vfio/vfio and /dev/vfio/N still work)
# (include/linux/vfio.h changes struct vfio_device under CONFIG_IOMMUFD, so all
# the vfio modules are rebuilt together) and installs them into
# lib/modules/<kver>/updates/, which depmod prefers over kernel/.
# lib/interval_tree.c's span iterator (CONFIG_INTERVAL_TREE_SPAN_ITER, off in
# Debian's vmlinux) is compiled into iommufd.ko. Dirty tracking through
# iommufd (CONFIG_IOMMUFD_DRIVER, a bool of the core kernel) stays unavailable.
# Debian's kvmgt.ko (i915 GVT-g) links against vfio.ko and will no longer load.
#
# Produces, under $ZHITONG_LAB_CACHE (default <repo>/target/lab-cache), the
# layout resources/lab/setup.sh makes:
#   <kver>/vmlinuz   the bzImage
#   <kver>/vmlinux   the ELF inside the bzImage (zstd-compressed in 6.12)
#   <kver>/root/lib/modules/<kver>/   modules tree (+ updates/), depmod'ed
#   kernel-6.12 -> <kver>            (the `current` symlink is left alone)
# Idempotent: a second run with everything cached downloads and builds nothing.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CACHE="${ZHITONG_LAB_CACHE:-$ROOT/target/lab-cache}"
META=linux-image-6.12-amd64
LINK=kernel-6.12
# Bump when the build recipe changes: cached modules of another recipe are rebuilt.
RECIPE=1
# Host tools: the kernel's compiler (gcc-12, from .kernelvariables), make, and
# what the prebuilt linux-kbuild tools (modpost, objtool, genksyms) link against.
PACKAGES=(xz-utils zstd kmod binutils make gcc-12 libelf1 libssl3 zlib1g)
export DEBIAN_FRONTEND=noninteractive
t0=$SECONDS

say() { echo "kernel-6.12: [+$((SECONDS - t0)) s] $*"; }
die() { echo "kernel-6.12: $*" >&2; exit 1; }
as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# --- 1. resolve the kernel version -------------------------------------------
resolve() {
    apt-cache depends "$META" 2>/dev/null |
        sed -n 's/^ *Depends: linux-image-\([0-9][^ ]*-amd64\)$/\1/p' | head -n1
}
cached_ok() {   # everything for kernel $1 is in place
    local d="$CACHE/$1"
    [ -s "$d/vmlinuz" ] && [ -s "$d/vmlinux" ] &&
        [ -s "$d/root/lib/modules/$1/modules.dep" ] &&
        [ "$(cat "$d/iommufd.stamp" 2>/dev/null)" = "$RECIPE $1" ]
}
# apt-cache costs 1-3 s here (no pkgcache.bin): skip it when the apt lists and
# sources are those of the last resolution, which cannot have changed then.
apt_state() {
    { stat -c '%n %s %Y' /var/lib/apt/lists/*Packages* /etc/apt/sources.list \
        /etc/apt/sources.list.d/* /etc/apt/preferences /etc/apt/preferences.d/* \
        2>/dev/null || true; } | md5sum | cut -d' ' -f1
}
state="$META $(apt_state)"
kver=
if [ -L "$CACHE/$LINK" ]; then
    old="$(basename "$(readlink "$CACHE/$LINK")")"
    if [ "$(cat "$CACHE/$old/resolved" 2>/dev/null)" = "$state" ] && cached_ok "$old"; then
        kver="$old"
    fi
fi
[ -n "$kver" ] || kver="$(resolve || true)"
if [ -z "$kver" ] && [ -L "$CACHE/$LINK" ]; then
    old="$(basename "$(readlink "$CACHE/$LINK")")"
    cached_ok "$old" && kver="$old"   # no apt lists: use the cached one
fi
updated=0
if [ -z "$kver" ]; then
    as_root apt-get update -q
    updated=1
    kver="$(resolve || true)"
fi
[ -n "$kver" ] || die "cannot resolve $META's kernel (needs bookworm-security or bookworm-backports in the apt sources)"

dir="$CACHE/$kver"
mods="$dir/root/lib/modules/$kver"

if cached_ok "$kver"; then
    echo "$state" > "$dir/resolved"
    ln -sfn "$kver" "$CACHE/$LINK"
    say "kernel $kver with iommufd already cached, nothing to do ($((SECONDS - t0)) s)"
    echo "  vmlinuz: $dir/vmlinuz"
    echo "  vmlinux: $dir/vmlinux"
    echo "  modules: $mods (iommufd + vfio in updates/)"
    exit 0
fi

# --- 2. host tools -------------------------------------------------------------
missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    say "installing ${missing[*]}"
    [ "$updated" -eq 1 ] || as_root apt-get update -q
    as_root apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# The package versions: image, headers (+ their -common and linux-kbuild) and
# the source of the same Debian version.
pkgver="$(apt-cache show "linux-image-$kver" | sed -n 's/^Version: //p' | head -n1)"
[ -n "$pkgver" ] || die "no version for linux-image-$kver"
depends_of() {
    apt-cache depends "$1" 2>/dev/null | sed -n "s/^ *|\\?Depends: \\($2\\)$/\\1/p" | head -n1
}
common="$(depends_of "linux-headers-$kver" 'linux-headers-[^ ]*-common')"
kbuild="$(depends_of "linux-headers-$kver" 'linux-kbuild-[^ ]*')"
[ -n "$common" ] && [ -n "$kbuild" ] || die "cannot resolve linux-headers-$kver's dependencies"
series="$(echo "$kver" | cut -d. -f1,2)"          # 6.12
source="linux-source-$series"

work="$dir/work"
rm -rf "$work"
mkdir -p "$work/dl"
trap 'rm -rf "$work"' EXIT

# --- 3. the kernel image (skipped when cached) ------------------------------------
if [ ! -s "$dir/vmlinux" ] || [ ! -s "$dir/vmlinuz" ] || [ ! -d "$mods/kernel" ]; then
    say "fetching linux-image-$kver ($pkgver)"
    rm -rf "$dir/root" "$dir/vmlinuz" "$dir/vmlinux" "$dir/iommufd.stamp"
    (cd "$work/dl" && apt-get download -q -o APT::Sandbox::User=root "linux-image-$kver=$pkgver")
    dpkg-deb -x "$work"/dl/linux-image-"$kver"_*.deb "$dir/root"
    rm -rf "$dir/root/usr/share/doc" "$work"/dl/linux-image-*.deb
    cp "$dir/root/boot/vmlinuz-$kver" "$dir/vmlinuz"

    # The bzImage carries a compressed ELF (zstd for 6.12, xz for 6.1): its
    # setup header gives where (payload_offset at 0x248, payload_length at
    # 0x24c, from the protected-mode code at (setup_sects + 1) * 512); the
    # payload ends in the ELF's size (4 bytes, little endian).
    hdr_u() { od -An -tu"$2" -j "$(($1))" -N"$2" "$dir/vmlinuz" | tr -d ' '; }
    sects="$(hdr_u 0x1f1 1)"; [ "$sects" -ne 0 ] || sects=4
    start=$(( (sects + 1) * 512 + $(hdr_u 0x248 4) ))
    len="$(hdr_u 0x24c 4)"
    dd if="$dir/vmlinuz" of="$work/payload" iflag=skip_bytes,count_bytes \
        skip="$start" count="$len" bs=1M status=none
    size="$(tail -c 4 "$work/payload" | od -An -tu4 | tr -d ' ')"
    case "$(head -c 4 "$work/payload" | od -An -tx1 | tr -d ' ')" in
        28b52ffd) head -c "$((len - 4))" "$work/payload" | zstd -dcq > "$dir/vmlinux.tmp" ;;
        fd377a58) xz -dc --single-stream "$work/payload" > "$dir/vmlinux.tmp" ;;
        *) die "unknown payload compression in $dir/vmlinuz" ;;
    esac
    rm -f "$work/payload"
    [ "$(head -c 4 "$dir/vmlinux.tmp" | od -An -tx1 | tr -d ' ')" = 7f454c46 ] ||
        die "extracted vmlinux is not an ELF"
    [ "$(stat -c %s "$dir/vmlinux.tmp")" -eq "$size" ] ||
        die "extracted vmlinux is $(stat -c %s "$dir/vmlinux.tmp") bytes, the bzImage says $size"
    mv "$dir/vmlinux.tmp" "$dir/vmlinux"
else
    say "linux-image-$kver already unpacked"
fi
grep -q '^# CONFIG_IOMMUFD is not set' "$dir/root/boot/config-$kver" ||
    say "note: this kernel's config does not say 'CONFIG_IOMMUFD is not set'; building anyway"

# --- 4. headers + source ----------------------------------------------------------
say "fetching linux-headers-$kver, $common, $kbuild, $source ($pkgver)"
(cd "$work/dl" && apt-get download -q -o APT::Sandbox::User=root \
    "linux-headers-$kver=$pkgver" "$common=$pkgver" "$kbuild=$pkgver" "$source=$pkgver")
for deb in "$work"/dl/linux-headers-*.deb "$work"/dl/linux-kbuild-*.deb; do
    dpkg-deb -x "$deb" "$work/hdr"
done
hdr="$work/hdr/usr/src/linux-headers-$kver"
# The headers' Makefile includes the -common tree by its absolute /usr/src path.
sed -i "s#^include /usr/src/#include $work/hdr/usr/src/#" "$hdr/Makefile"
grep -q IOMMUFD_INTERNAL "$hdr/Module.symvers" ||
    die "vmlinux exports no IOMMUFD_INTERNAL symbols: iommufd cannot be built out of tree"

dpkg-deb --fsys-tarfile "$work"/dl/"$source"_*.deb |
    tar -xO --wildcards "./usr/src/$source.tar.xz" > "$work/source.tar.xz"
rm -f "$work"/dl/*.deb
say "unpacking drivers/iommu, drivers/vfio, lib/interval_tree.c from $source.tar.xz"
mkdir -p "$work/src"
tar -xJf "$work/source.tar.xz" -C "$work/src" --strip-components=1 --wildcards \
    "$source/drivers/iommu/iommu-priv.h" "$source/drivers/iommu/iommufd/*" \
    "$source/drivers/vfio/*" "$source/lib/interval_tree.c"
rm -f "$work/source.tar.xz"

# --- 5. build ---------------------------------------------------------------------
src="$work/src"
b="$work/build"
mkdir -p "$b/drivers/iommu" "$b/drivers/vfio/pci"
cp -r "$src/drivers/iommu/iommufd" "$b/drivers/iommu/"
cp "$src/drivers/iommu/iommu-priv.h" "$b/drivers/iommu/"
cp "$src"/drivers/vfio/*.[ch] "$src/drivers/vfio/Makefile" "$b/drivers/vfio/"
cp "$src"/drivers/vfio/pci/*.[ch] "$src/drivers/vfio/pci/Makefile" "$b/drivers/vfio/pci/"
{
    echo '// The span iterator of lib/interval_tree.c: CONFIG_INTERVAL_TREE_SPAN_ITER is'
    echo '// off in the Debian kernel, so iommufd.ko carries its own (not exported).'
    echo '#include <linux/interval_tree.h>'
    sed -n '/^#ifdef CONFIG_INTERVAL_TREE_SPAN_ITER/,/^#endif/p' "$src/lib/interval_tree.c" |
        sed '1d;$d' | grep -v '^EXPORT_SYMBOL'
} > "$b/drivers/iommu/iommufd/interval_tree_span.c"
grep -q '^void interval_tree_span_iter_first' "$b/drivers/iommu/iommufd/interval_tree_span.c" ||
    die "span iterator not found in lib/interval_tree.c"
echo 'iommufd-y += interval_tree_span.o' >> "$b/drivers/iommu/iommufd/Makefile"
echo 'obj-m += drivers/iommu/iommufd/ drivers/vfio/' > "$b/Kbuild"

say "building iommufd + vfio modules against linux-headers-$kver"
tb=$SECONDS
# Config symbols the headers' autoconf.h lacks: for make (which objects) and for
# the preprocessor (IS_ENABLED()). BTF of modules (needs pahole) is not needed;
# mdev (another consumer of vfio.h) is not rebuilt.
if ! make -C "$hdr" M="$b" -j"$(nproc)" \
    CONFIG_IOMMUFD=m CONFIG_VFIO_DEVICE_CDEV=y CONFIG_VFIO_MDEV= \
    CONFIG_DEBUG_INFO_BTF_MODULES= \
    KCFLAGS="-DCONFIG_IOMMUFD_MODULE=1 -DCONFIG_VFIO_DEVICE_CDEV=1" \
    modules > "$work/build.log" 2>&1; then
    tail -n 40 "$work/build.log" >&2
    die "module build failed"
fi
say "modules built in $((SECONDS - tb)) s"

# --- 6. install into updates/ + depmod ------------------------------------------
rm -rf "$mods/updates"
built=(drivers/iommu/iommufd/iommufd.ko drivers/vfio/vfio.ko drivers/vfio/vfio_iommu_type1.ko
       drivers/vfio/pci/vfio-pci-core.ko drivers/vfio/pci/vfio-pci.ko)
for ko in "${built[@]}"; do
    [ -s "$b/$ko" ] || die "$ko was not built"
    vm="$(modinfo -F vermagic "$b/$ko")"
    [ "${vm%% *}" = "$kver" ] || die "$ko: vermagic '$vm' does not match $kver"
    mkdir -p "$mods/updates/$(dirname "$ko")"
    strip --strip-debug -o "$mods/updates/$ko" "$b/$ko"
    echo "  $mods/updates/$ko"
done
# Our own depmod config (no host /etc/depmod.d surprises): updates/ first.
echo 'search updates built-in' > "$work/depmod.conf"
depmod -C "$work/depmod.conf" -b "$dir/root" "$kver"
for m in iommufd vfio vfio_iommu_type1 vfio-pci-core vfio-pci; do
    grep -q "^updates/.*/$m\.ko:" "$mods/modules.dep" || die "depmod does not prefer updates/$m.ko"
done
echo "$RECIPE $kver" > "$dir/iommufd.stamp"
echo "$state" > "$dir/resolved"
ln -sfn "$kver" "$CACHE/$LINK"
rm -rf "$work"
trap - EXIT

say "kernel $kver with iommufd ready ($((SECONDS - t0)) s)"
echo "  cache:   $CACHE ($LINK -> $kver; current unchanged)"
echo "  vmlinuz: $dir/vmlinuz"
echo "  vmlinux: $dir/vmlinux"
echo "  modules: $mods"
