#!/bin/sh
# How a guest tells zhitong its exit status: write one byte to I/O port 0x4f4 (the guest exit
# port, arch::layout::GUEST_EXIT_PORT). The VM ends at once and `zhitong run` exits with that
# byte (0-255); `zhitong test` compares it with the case's `expect`. A plain poweroff is 0.
#
# Use it at the end of a test guest's /init (busybox sh is enough; needs /dev/port, i.e.
# devtmpfs mounted and CONFIG_DEVPORT=y, which distribution kernels have):
#
#   run-my-tests; guest_exit $?
#
# or copy this file into the initramfs and run `sh /guest-exit.sh STATUS`.

guest_exit() {
    status=${1:-0}
    [ -e /dev/port ] || mount -t devtmpfs devtmpfs /dev 2>/dev/null
    # printf's \ooo escape takes octal: the byte whose value is $status.
    printf "\\$(printf '%03o' "$status")" | dd of=/dev/port bs=1 seek=$((0x4f4)) count=1 2>/dev/null
    # Not reached under zhitong; on a VMM without the port, fall back to powering off.
    poweroff -f
}

if [ "${0##*/}" = guest-exit.sh ]; then
    guest_exit "${1:-0}"
fi
