#!/usr/bin/env bash
# The project's test command: lab prerequisites, the VMM (release: the lab
# boots target/release/zhitong; built with the test-faults feature so the failure-path
# cases can inject faults), then every test: unit tests and the
# nested-lab integration tests, then the fuzz smoke (resources/fuzz.sh: each cargo-fuzz
# target for a few thousand inputs from its committed corpus). The tests themselves build in the dev profile:
# on 2 cores that is ~1 min faster than --release (thin LTO per test binary).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

resources/lab/setup.sh
resources/lab/kernel-6.12.sh   # L1 on 6.12 with iommufd: tests/lab_vfio_612*.rs
cargo build --release -p vmm --features test-faults
cargo test --workspace "$@"
resources/fuzz.sh
