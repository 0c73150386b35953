#!/usr/bin/env bash
# Build and collect here, on the development machine, everything the GPU check (check.sh) needs on a
# bare GPU machine (Python 3.12 with numpy, pytest, torch and the nvidia cu13 wheels; no Rust, no
# network) into .gpu-carry/ (git-ignored; under 60 MB, what travels beside the working tree):
#   wheels/       med42-rs (portable CPU build), med42-rs-cuda (CUDA 13, compute capability 90),
#                 gguf 0.19.0 and PyYAML for CPython 3.12 (gguf imports yaml)
#   test-assets/  the tiny K-quant GGUFs (tests/conftest.py's tiny_path: llama.cpp's quantizer makes
#                 them, and the GPU machine has none; pytest writes the other types there) and the Llama-2
#                 vocabulary the 70B-shaped slice uses; the slice itself is written there (3.7 GB)
#   usage: bash benches/gpu/prepare.sh        (then see docs/GPU.md for the run)
set -euo pipefail
cd "$(dirname "$0")/../.."
carry=.gpu-carry
export CACHE="${CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/med42-rs}"
export MED42_TEST_CACHE="${MED42_TEST_CACHE:-$CACHE/test-assets}"
command -v maturin >/dev/null || { echo "maturin is not on PATH: activate the project's virtual environment"; exit 1; }
rm -rf "$carry"
mkdir -p "$carry/wheels" "$carry/test-assets/vocab"

echo "--- med42-rs, portable CPU wheel"
RUSTFLAGS="-C target-cpu=x86-64" CARGO_TARGET_DIR="$CACHE/portable-wheel-target" \
    maturin build --profile dev-release --strip --out "$carry/wheels"
echo "--- med42-rs-cuda"
tools/cuda/build-wheel.sh "$carry/wheels"

echo "--- gguf and PyYAML (CPython 3.12, x86-64 Linux)"
python -m pip download -q --no-deps -d "$carry/wheels" "gguf==0.19.0"
python -m pip download -q --no-deps --only-binary=:all: --implementation cp --python-version 3.12 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$carry/wheels" "pyyaml>=6,<7"

echo "--- test assets"
python - "$carry/test-assets" <<'PY'
import shutil
import sys
from pathlib import Path

sys.path.insert(0, "tests")
import conftest  # noqa: E402  (tiny_path: the cached tiny GGUFs, made here where llama.cpp is)

dest = Path(sys.argv[1])
# only the llama.cpp-quantized ones: check.sh's pytest writes the others with gguf-py itself
made = [conftest.tiny_path(q) for q in conftest.LLAMA_CPP_FTYPES]
cache = conftest.g.cache_dir()
for p in made:
    to = dest / p.relative_to(cache)
    to.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(p, to)
import assets  # noqa: E402

for f in assets.llama_cpp_vocab("llama-spm"):
    shutil.copy2(f, dest / "vocab" / f.name)
print(f"{len(made)} tiny files and the llama-spm vocabulary")
PY

ls -la "$carry"/wheels
size=$(du -sb "$carry" | cut -f1)
echo "$carry: $(( size / 1000000 )) MB"
[ "$size" -lt 60000000 ] || { echo "$carry is over 60 MB: it must travel in 64 MiB with the working tree"; exit 1; }
