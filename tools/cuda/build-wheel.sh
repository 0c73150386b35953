#!/usr/bin/env bash
# Build the med42-rs-cuda wheel (packaging/cuda) on a machine without a GPU: the CUDA 13.0 toolchain
# from PyPI (toolchain.sh), kernels for CUDA_COMPUTE_CAP (default 90: sm_90a, H100/H200), the CPU
# code for a baseline x86-64 CPU (the engine's kernels are chosen at run time).
#   usage: tools/cuda/build-wheel.sh OUT_DIR        (needs maturin on PATH)
# CACHE (default ~/.cache/med42-rs) keeps the toolchain (cuda-13.0/) and the cargo target directory
# (cuda-wheel-target/), so a rebuild compiles only what changed.
#
# The profile is the crate's `dev-release` (no LTO, 16 codegen units, incremental), not `release`
# (fat LTO, one codegen unit): the GPU kernels are nvcc's and the CPU kernels are picked at run
# time, so LTO buys this wheel little, while without it a rebuild after a change to the crate does
# not redo the whole-program optimization of the 50 MB extension.
set -euo pipefail
out=$(mkdir -p "$1" && cd "$1" && pwd)
root=$(cd "$(dirname "$0")/../.." && pwd)
CACHE="${CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/med42-rs}"
t0=$(date +%s)
# (an assignment, so that set -e stops here if toolchain.sh fails; `eval "$(...)"` would not)
exports=$("$root/tools/cuda/toolchain.sh" "$CACHE/cuda-13.0")
eval "$exports"
echo "CUDA toolchain ready in $(( $(date +%s) - t0 ))s: $(du -sh "$CACHE/cuda-13.0" | cut -f1) in $CACHE/cuda-13.0"
t1=$(date +%s)
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
cd "$root/packaging/cuda"
RUSTFLAGS="-C target-cpu=x86-64" CARGO_TARGET_DIR="$CACHE/cuda-wheel-target" \
    maturin build --profile dev-release --strip --auditwheel skip --out "$out"
echo "CUDA wheel (compute capability $CUDA_COMPUTE_CAP) built in $(( $(date +%s) - t1 ))s"
