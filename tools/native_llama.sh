#!/usr/bin/env bash
# llama-cpp-python 0.3.36 (the version the tests pin) built with -march=native into its own venv:
# the oracle that runs llama.cpp's AVX-512 / VNNI kernels on a machine that has them. A plain
# `pip install llama-cpp-python` may reuse a portable wheel from pip's cache (pip keys the cache on
# the sdist, not on CMAKE_ARGS), hence --no-cache-dir.
#
#   tools/native_llama.sh [VENV] [BASE_VENV]     # defaults: /work/native-llama, /work/base-venv
#   VENV/bin/python benches/divergence.py        # the SmolLM2 float64 comparison, all three engines
#   VENV/bin/python benches/compare.py ...       # the benchmark against the native build
#
# BASE_VENV (optional; a venv with the test dependencies: numpy, gguf, pytest, maturin, ...) is
# appended to VENV's path by a .pth written after the install, so VENV's own llama_cpp comes first
# and pip never sees (or uninstalls) BASE_VENV's. The compile runs at nice 19 with one job
# (CMAKE_BUILD_PARALLEL_LEVEL overrides that); the multimodal library (mtmd) is left out, the
# tests never load it. To test med42-rs against this build, install it into VENV from a checkout:
#   . VENV/bin/activate && maturin develop --release      (or --profile dev-release)
set -euo pipefail

venv=${1:-/work/native-llama}
base=${2:-/work/base-venv}
version=0.3.36

if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install -q --upgrade pip
fi

# the sdist tests/assets.py caches, if present; PyPI otherwise
cache=${MED42_TEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/med42-rs/test-assets}
sdist="$cache/dl/llama_cpp_python-$version.tar.gz"
[ -f "$sdist" ] || sdist="llama-cpp-python==$version"

export CMAKE_ARGS="-DGGML_NATIVE=ON -DLLAVA_BUILD=OFF ${CMAKE_ARGS:-}"
# No AMX: in this llama.cpp version the AMX matmul (ggml-cpu/amx, used for Q4_0, Q4_1, Q8_0 and
# Q4_K..Q6_K weights where the CPU has AMX-INT8) segfaults on every batch of more than one token,
# and the AVX-512 VNNI kernels are the ones under comparison. -mno-* wins over -march=native.
export CFLAGS="${CFLAGS:-} -mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
export CXXFLAGS="${CXXFLAGS:-} -mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-1}
site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
rm -f "$site/zz_base.pth"
nice -n 19 "$venv/bin/python" -m pip install --no-cache-dir --force-reinstall -v "$sdist"

if [ -d "$base" ]; then
  basesite=$("$base/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  echo "$basesite" >"$site/zz_base.pth"
fi

CACHE="$cache" "$venv/bin/python" - <<'EOF'
import llama_cpp

info = llama_cpp.llama_print_system_info().decode()
print(llama_cpp.__file__)
print(info)
if "AVX512 = 1" not in info and "avx512f" in open("/proc/cpuinfo").read():
    raise SystemExit("the CPU has AVX-512 but this build does not use it")
if "AMX_INT8 = 1" in info:
    raise SystemExit("this build uses AMX (see CFLAGS above)")
# a prompt batch through the quantized matmuls (where the AMX path crashed), if the test
# cache has SmolLM2 (tests/assets.py puts it there)
import os

smol = os.path.join(os.environ["CACHE"], "SmolLM2-135M-Instruct.Q4_1.gguf")
if os.path.exists(smol):
    L = llama_cpp.Llama(smol, n_ctx=256, n_threads=2, verbose=False)
    L.eval(list(range(1, 33)))
    print("a 32-token batch runs")
EOF
