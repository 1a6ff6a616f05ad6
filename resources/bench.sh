#!/usr/bin/env bash
# The start-time benchmark (docs/performance.md): one boot of the nested lab with zhitong,
# QEMU and, when a binary is at hand (CLOUD_HYPERVISOR=path, or one at
# target/lab-cache/cloud-hypervisor), Cloud Hypervisor as the L1 VMM side by side
# (tests/lab_bench.rs), after a shorter boot of where each VMM's boot goes
# (tests/bench_anatomy.rs). Prints the tables, which also land in
# target/lab-out/bench/{anatomy,table}.md. L0 takes 14 GiB of RAM; a run takes ~30 minutes.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

resources/lab/setup.sh
cargo build --release -p vmm
cargo test -p zhitong-tests --test bench_anatomy -- --ignored --nocapture "$@"
cargo test -p zhitong-tests --test lab_bench -- --ignored --nocapture "$@"
echo "bench: tables in target/lab-out/bench/anatomy.md and table.md"
