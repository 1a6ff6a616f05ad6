#!/usr/bin/env bash
# Fuzz smoke test: every cargo-fuzz target (tests/fuzz, see docs/fuzzing.md) runs a few
# thousand inputs mutated from its committed seed corpus; any crash fails. Needs a nightly
# toolchain; installs cargo-fuzz (into ~/.cargo/bin) when it is missing.
#
#   resources/fuzz.sh [TARGET...]      default: every target
#   FUZZ_RUNS=N FUZZ_SECONDS=S          inputs per target (4000), time cap per target (60)
#   FUZZ_SEED=N                         libFuzzer's seed (1: the test command's runs repeat;
#                                       0: a new one each run, for exploring)
#
# Built to be quick to build on 2 cores: no sanitizer (the code under test is safe Rust but
# for a few mmap/poll helpers, and AddressSanitizer would triple both the build and the
# runs) and opt-level 1 (a fifth less to compile; coverage instrumentation, not
# optimization, sets the speed of so few runs), in a target directory of its own so that
# long runs (docs/fuzzing.md) keep theirs. New inputs go to a temporary directory, so the
# committed corpus stays as it is; a crashing input is kept in tests/fuzz/artifacts/TARGET/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

runs=${FUZZ_RUNS:-4000}
seconds=${FUZZ_SECONDS:-60}
seed=${FUZZ_SEED:-1}
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(bus_platform pci_config msix_table http_request vm_config virtio_blk virtio_net virtio_vsock)
fi

if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "fuzz.sh: no nightly toolchain; install one with: rustup toolchain install nightly" >&2
    exit 1
fi
# opt-level 1 for cargo-fuzz itself too: it only starts cargo and libFuzzer.
export CARGO_PROFILE_RELEASE_OPT_LEVEL=1
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

fuzz=(cargo +nightly fuzz)
flags=(--fuzz-dir tests/fuzz --sanitizer none --target-dir tests/fuzz/target/smoke)
"${fuzz[@]}" build "${flags[@]}"

new=$(mktemp -d)
trap 'rm -rf "$new"' EXIT
for target in "${targets[@]}"; do
    mkdir -p "$new/$target"
    status=0
    "${fuzz[@]}" run "${flags[@]}" "$target" "$new/$target" "tests/fuzz/corpus/$target" -- \
        -runs="$runs" -max_total_time="$seconds" -seed="$seed" >"$new/$target.log" 2>&1 || status=$?
    if [ $status -ne 0 ]; then
        tail -n 60 "$new/$target.log" >&2
        echo "fuzz.sh: $target crashed (status $status); reproduce with:" >&2
        echo "  cargo +nightly fuzz run ${flags[*]} $target tests/fuzz/artifacts/$target/<file>" >&2
        exit 1
    fi
    echo "fuzz.sh: $target: $(grep -E '^#[0-9]+[[:space:]]+DONE' "$new/$target.log" | tail -n 1)"
done
echo "fuzz.sh: ${#targets[@]} targets, $runs inputs each, no crash"
