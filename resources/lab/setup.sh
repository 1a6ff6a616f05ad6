#!/usr/bin/env bash
# Prepare the nested test lab (see ../../shared/LAB.md in the steering repo):
#   1. install the host tools (only those missing);
#   2. fetch the Debian guest kernel named by linux-image-amd64, unpack it and
#      produce, under $ZHITONG_LAB_CACHE (default <repo>/target/lab-cache):
#        <kver>/vmlinuz   the bzImage (L1 kernel, and L2 bzImage case)
#        <kver>/vmlinux   the ELF inside the bzImage (fast L2 boots)
#        <kver>/root/lib/modules/<kver>/   modules tree, depmod'ed
#        current -> <kver>
# Idempotent: a second run with the kernel cached downloads and unpacks nothing.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CACHE="${ZHITONG_LAB_CACHE:-$ROOT/target/lab-cache}"
# gcc + libc6-dev: the guests' static helpers (lab_boot's touch, lab_net's vsock-echo).
PACKAGES=(qemu-system-x86 busybox-static cpio kmod xz-utils e2fsprogs gcc libc6-dev)
export DEBIAN_FRONTEND=noninteractive

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# --- 1. host tools ---------------------------------------------------------
missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
done
updated=0
if [ "${#missing[@]}" -gt 0 ]; then
    echo "lab setup: installing ${missing[*]}"
    as_root apt-get update -q
    updated=1
    as_root apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# --- 2. resolve the kernel version ------------------------------------------
resolve() {
    apt-cache depends linux-image-amd64 2>/dev/null |
        sed -n 's/^ *Depends: linux-image-\([0-9][^ ]*-amd64\)$/\1/p' | head -n1
}
kver="$(resolve || true)"
if [ -z "$kver" ] && [ -L "$CACHE/current" ] && [ -s "$CACHE/current/vmlinux" ]; then
    kver="$(basename "$(readlink "$CACHE/current")")"   # no apt lists: use the cached one
fi
if [ -z "$kver" ] && [ "$updated" -eq 0 ]; then
    as_root apt-get update -q
    kver="$(resolve || true)"
fi
[ -n "$kver" ] || { echo "lab setup: cannot resolve linux-image-amd64's kernel" >&2; exit 1; }

dir="$CACHE/$kver"
mods="$dir/root/lib/modules/$kver"

# --- 3. fetch + unpack (skipped when cached) ---------------------------------
if [ ! -s "$dir/vmlinux" ] || [ ! -s "$mods/modules.dep" ]; then
    echo "lab setup: fetching linux-image-$kver"
    rm -rf "$dir"
    mkdir -p "$dir/dl"
    (cd "$dir/dl" && apt-get download -q -o APT::Sandbox::User=root "linux-image-$kver")
    dpkg-deb -x "$dir"/dl/linux-image-"$kver"_*.deb "$dir/root"
    rm -rf "$dir/dl" "$dir/root/usr/share/doc"
    depmod -b "$dir/root" "$kver"
    cp "$dir/root/boot/vmlinuz-$kver" "$dir/vmlinuz"

    # The bzImage carries an xz-compressed ELF: decompress from the xz magic.
    off="$(LC_ALL=C grep -obaP -m1 '\xfd7zXZ\x00' "$dir/vmlinuz" | tr -d '\0' || true)"
    off="${off%%:*}"
    [ -n "$off" ] || { echo "lab setup: no xz payload in $dir/vmlinuz" >&2; exit 1; }
    tail -c +"$((off + 1))" "$dir/vmlinuz" > "$dir/payload.xz"
    xz -dc --single-stream "$dir/payload.xz" > "$dir/vmlinux.tmp"
    rm "$dir/payload.xz"
    if [ "$(head -c 4 "$dir/vmlinux.tmp" | od -An -tx1 | tr -d ' ')" != 7f454c46 ]; then
        echo "lab setup: extracted vmlinux is not an ELF" >&2
        exit 1
    fi
    mv "$dir/vmlinux.tmp" "$dir/vmlinux"
    # Older kernels (~450 MB each) are of no more use; the one kernel-6.12.sh keeps is.
    keep="$(basename "$(readlink "$CACHE/kernel-6.12" 2>/dev/null)" 2>/dev/null || true)"
    find "$CACHE" -mindepth 1 -maxdepth 1 -type d ! -name "$kver" ! -name "${keep:-$kver}" -exec rm -rf {} +
fi
ln -sfn "$kver" "$CACHE/current"

echo "lab setup: kernel $kver"
echo "  cache:   $CACHE"
echo "  vmlinuz: $dir/vmlinuz"
echo "  vmlinux: $dir/vmlinux"
echo "  modules: $mods"
