#!/usr/bin/env bash
# The project's test command: lab prerequisites, the VMM, then every test
# (unit tests and the nested-lab integration tests, which need both).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

resources/lab/setup.sh
cargo build --release -p vmm
cargo test --workspace --release "$@"
