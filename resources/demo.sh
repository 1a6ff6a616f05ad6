#!/usr/bin/env bash
# The demo: boots a Debian guest with zhitong inside the nested lab
# (QEMU TCG -> L1 with KVM -> L2) and shows the guest's console.
# Extra arguments go to the `lab` binary: --bzimage, --cpus N, --memory SIZE,
# --qemu (QEMU as the L1 VMM, for comparison), --verbose (L1's console too).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

resources/lab/setup.sh
cargo build --release -p vmm -p zhitong-tests
exec target/release/lab "$@"
