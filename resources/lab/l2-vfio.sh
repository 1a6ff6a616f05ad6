# Shell functions for the L2 guests of the VFIO lab cases (busybox ash; sourced into L2's
# /init by tests/lab/vfio.rs). Each prints "L2: <key>=<value>" markers for the tests.

# pci_dev VENDOR DEVICE: the sysfs directory of the first PCI device with these ids (hex).
pci_dev() {
    for d in /sys/bus/pci/devices/*; do
        if [ "$(cat "$d/vendor")" = "0x$1" ] && [ "$(cat "$d/device")" = "0x$2" ]; then
            echo "$d"
            return 0
        fi
    done
    return 1
}

# wait_until SECONDS COMMAND...: runs COMMAND every 0.1 s until it succeeds.
wait_until() {
    n=$(($1 * 10))
    shift
    while ! "$@" >/dev/null 2>&1; do
        n=$((n - 1))
        [ "$n" -gt 0 ] || return 1
        sleep 0.1
    done
}

driver_of() {
    if [ -e "$1/driver" ]; then basename "$(readlink "$1/driver")"; else echo none; fi
}

# The IRQ numbers of PCI device $1: its MSI/MSI-X vectors, else its INTx line (if any).
dev_irqs() {
    if [ -n "$(ls "$1/msi_irqs" 2>/dev/null)" ]; then
        ls "$1/msi_irqs"
    elif [ "$(cat "$1/irq")" != 0 ]; then
        cat "$1/irq"
    fi
}

# irq_count DEV: the device's interrupts so far, summed over its vectors and all CPUs.
irq_count() {
    total=0
    for n in $(dev_irqs "$1"); do
        c=$(awk -v n="$n:" '$1 == n { for (i = 2; i <= NF && $i ~ /^[0-9]+$/; i++) s += $i } END { print s + 0 }' /proc/interrupts)
        total=$((total + c))
    done
    echo "$total"
}

# irq_kind DEV: msix, msi, intx or none.
irq_kind() {
    first=$(ls "$1/msi_irqs" 2>/dev/null | head -n 1)
    if [ -n "$first" ]; then
        cat "$1/msi_irqs/$first"
    elif [ -n "$(dev_irqs "$1")" ] && grep -q "^ *$(dev_irqs "$1"):" /proc/interrupts; then
        echo intx
    else
        echo none
    fi
}

# irq_chip DEV: how /proc/interrupts names the device's first line, e.g. "IO-APIC 11-fasteoi".
irq_chip() {
    n=$(dev_irqs "$1" | head -n 1)
    [ -n "$n" ] || return 0
    awk -v n="$n:" '$1 == n { for (i = 2; i <= NF && $i ~ /^[0-9]+$/; i++); print $i, $(i + 1) }' /proc/interrupts
}

# fb_of DEV: /dev/fbN of the framebuffer whose device is PCI device DEV or below it.
fb_of() {
    pci=$(readlink -f "$1")
    for f in /sys/class/graphics/fb*; do
        case "$(readlink -f "$f/device")" in
        "$pci" | "$pci"/*)
            echo "/dev/${f##*/}"
            return 0
            ;;
        esac
    done
    return 1
}

# fill FILE BYTES PIXEL: FILE holds BYTES bytes of PIXEL (printf octal escapes) repeated.
fill() {
    printf "$3" >"$1"
    while [ "$(wc -c <"$1")" -lt "$2" ]; do
        cat "$1" "$1" >"$1.2" && mv "$1.2" "$1"
    done
    head -c "$2" "$1" >"$1.2" && mv "$1.2" "$1"
}

# draw FB TOP BOTTOM: the upper half of framebuffer FB in pixel TOP, the lower half in BOTTOM.
draw() {
    sys=/sys/class/graphics/${1##*/}
    size=$(cat "$sys/virtual_size")
    half=$(($(cat "$sys/stride") * ${size#*,} / 2))
    fill /tmp/top "$half" "$2"
    fill /tmp/bottom "$half" "$3"
    cat /tmp/top /tmp/bottom >"$1"
}

# Pixels (XRGB8888 in memory: B, G, R, X): A is RGB c0 80 40, B is RGB 20 40 c0.
PIXEL_A='\100\200\300\000'
PIXEL_B='\300\100\040\000'

# display_test TAG DEV L0_ID: the display driver of PCI device DEV draws two frames; after
# each, "L2: screendump=TAG-N,L0_ID" has L0 save what its display L0_ID shows.
display_test() {
    tag=$1
    dev=$2
    echo "L2: ${tag}_driver=$(driver_of "$dev")"
    if ! wait_until 10 fb_of "$dev"; then
        echo "L2: ${tag}_fb=none"
        return 1
    fi
    fb=$(fb_of "$dev")
    sys=/sys/class/graphics/${fb##*/}
    echo "L2: ${tag}_fb=$fb $(cat "$sys/virtual_size") $(cat "$sys/bits_per_pixel")bpp stride=$(cat "$sys/stride")"
    echo "L2: ${tag}_fb_name=$(cat "$sys/name")"
    # Setting the mode (the same one) has DRM scan this framebuffer out: fbcon does so only
    # for the first one, and a display may still show a frame from an earlier run.
    cat "$sys/bits_per_pixel" >"$sys/bits_per_pixel"
    echo "L2: ${tag}_irqs_before=$(irq_count "$dev")"
    draw "$fb" "$PIXEL_A" "$PIXEL_B"
    sleep 1
    echo "L2: screendump=${tag}-1,$3"
    sleep 2
    draw "$fb" "$PIXEL_B" "$PIXEL_A"
    sleep 1
    echo "L2: screendump=${tag}-2,$3"
    sleep 2
    echo "L2: ${tag}_irq_kind=$(irq_kind "$dev")"
    echo "L2: ${tag}_irq_chip=$(irq_chip "$dev")"
    echo "L2: ${tag}_irqs_after=$(irq_count "$dev")"
}

# Unbind fbcon, so that no cursor blinks in the frames drawn.
no_fbcon() {
    for v in /sys/class/vtconsole/vtcon*; do
        grep -q "frame buffer" "$v/name" 2>/dev/null && echo 0 >"$v/bind"
    done
}

# ivshmem_test READ_OFFSET WRITE_OFFSET... : reads a 64-bit word L0 put at READ_OFFSET of the
# shared memory BAR (BAR2), writes one at each WRITE_OFFSET (value: 0x5a54<offset in hex>).
ivshmem_test() {
    dev=$(pci_dev 1af4 1110) || {
        echo "L2: ivshmem_bar2=missing"
        return 1
    }
    echo 1 >"$dev/enable"
    set -- $(sed -n 3p "$dev/resource") "$@"
    start=$1
    end=$2
    echo "L2: ivshmem_bar2=$start size=$((end - start + 1)) flags=$3"
    echo "L2: ivshmem_read=$(devmem "$(printf 0x%x $((start + $4)))" 64)"
    shift 4
    for off in "$@"; do
        value=$(printf 0x5a54%012x "$off")
        devmem "$(printf 0x%x $((start + off)))" 64 "$value" &&
            echo "L2: ivshmem_wrote=$(printf 0x%x "$off"):$value"
    done
}

# nvme_test READ_BLOCK WRITE_BLOCK TEXT: reads 4K block READ_BLOCK of the namespace (text
# L0 wrote), writes TEXT into block WRITE_BLOCK (zero-padded) and flushes it.
nvme_test() {
    dev=$(pci_dev 1b36 0010) || {
        echo "L2: nvme_driver=missing"
        return 1
    }
    echo "L2: nvme_driver=$(driver_of "$dev")"
    wait_until 20 test -b /dev/nvme0n1 || {
        echo "L2: nvme_disk=none"
        return 1
    }
    echo "L2: nvme_disk=/dev/nvme0n1 $(cat /sys/block/nvme0n1/size) sectors"
    echo "L2: nvme_read=$(dd if=/dev/nvme0n1 bs=4096 skip="$1" count=1 2>/dev/null | tr -d '\000')"
    printf '%s' "$3" | dd of=/dev/nvme0n1 bs=4096 seek="$2" count=1 conv=sync,fsync 2>/dev/null &&
        echo "L2: nvme_wrote=ok"
    echo "L2: nvme_irq_kind=$(irq_kind "$dev")"
    echo "L2: nvme_irqs=$(irq_count "$dev")"
}

# rom_test TAG DEV: reads PCI device DEV's expansion ROM through sysfs (as vBIOS readers
# do: enable, read, disable); its size, first two bytes (55aa for a valid image) and md5.
rom_test() {
    if [ ! -e "$2/rom" ]; then
        echo "L2: $1_rom=none"
        return 1
    fi
    echo 1 >"$2/rom"
    cat "$2/rom" >/tmp/rom 2>/dev/null
    echo 0 >"$2/rom"
    echo "L2: $1_rom_bar=$(sed -n 7p "$2/resource")"
    echo "L2: $1_rom_size=$(wc -c </tmp/rom)"
    echo "L2: $1_rom_sig=$(head -c 2 /tmp/rom | od -An -tx1 | tr -d ' \n')"
    echo "L2: $1_rom_md5=$(md5sum </tmp/rom | cut -d ' ' -f 1)"
}

# le32 VALUE: VALUE as 4 little-endian bytes.
le32() {
    printf "$(printf '\\%03o\\%03o\\%03o\\%03o' $(($1 & 255)) $((($1 >> 8) & 255)) \
        $((($1 >> 16) & 255)) $((($1 >> 24) & 255)))"
}

# cfg_read DEV OFFSET BYTES, cfg_write DEV OFFSET BYTES VALUE: config space through sysfs,
# one naturally aligned access (as setpci does).
cfg_read() {
    od -An -tu"$3" -j "$2" -N "$3" "$1/config" | tr -d ' '
}
cfg_write() {
    le32 "$4" | head -c "$3" | dd of="$1/config" bs="$3" seek=$(($2 / $3)) conv=notrunc 2>/dev/null
}

# bar_move_test DEV DELTA: with memory decode on, BAR0 moves by DELTA and back (each step
# after a second, so the VMM's log shows them apart); then decode goes back off.
bar_move_test() {
    cmd=$(cfg_read "$1" 4 2)
    bar=$(($(cfg_read "$1" 16 4) & ~15))
    cfg_write "$1" 4 2 $((cmd | 2))
    echo "L2: p2p_bar0=$(printf 0x%x $bar)"
    sleep 1
    cfg_write "$1" 16 4 $((bar + $2))
    echo "L2: p2p_moved=$(printf 0x%x $((bar + $2)))"
    sleep 1
    cfg_write "$1" 16 4 "$bar"
    sleep 1
    cfg_write "$1" 4 2 "$cmd"
    echo "L2: p2p_back=$(printf 0x%x "$(($(cfg_read "$1" 16 4) & ~15))")"
}
