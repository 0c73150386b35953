#!/usr/bin/env bash
# A CUDA 13.0 toolchain from PyPI wheels on a CPU-only Linux machine, for `cargo build --features cuda`
# and the med42-rs-cuda wheel (.ci/cuda-wheel): nvcc and headers in a virtual environment (about
# 640 MB), plus link-time stubs for the libraries no PyPI wheel ships for a machine without a GPU
# (the driver's libcuda, and cuBLAS, whose real libraries come with the driver and the nvidia-cublas
# wheel where the extension runs). CUDA 13.0 (not newer): its PTX must load on driver 580.
#   usage:  eval "$(tools/cuda/toolchain.sh [VENV_DIR])"     (prints the exports to use)
# The stubs are in $CUDA_HOME/lib/stubs (libcuda.so, libcublas.so, libcublasLt.so: every function
# returns 100, CUDA_ERROR_NO_DEVICE), which the smoke test of .ci/cuda-wheel also loads at run time.
set -euo pipefail
venv=${1:-${XDG_CACHE_HOME:-$HOME/.cache}/med42-rs/cuda-13.0}
if [ ! -f "$venv/.med42-toolchain-complete" ]; then
  rm -rf "$venv"
  python3 -m venv "$venv" >&2
  # nvcc alone pulls the newest companions (13.5: PTX too new for driver 580) and lacks cicc and headers.
  "$venv/bin/pip" install -q "nvidia-cuda-nvcc==13.0.88" "nvidia-nvvm==13.0.88" "nvidia-cuda-crt==13.0.88" \
      "nvidia-cuda-runtime==13.0.96" "nvidia-cuda-cccl==13.0.85" "nvidia-cuda-nvrtc==13.0.88" \
      "nvidia-curand==10.4.0.35" >&2
  touch "$venv/.med42-toolchain-complete"
fi
CU=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/nvidia/cu13
stubs=$CU/lib/stubs
if [ ! -f "$stubs/libcuda.so" ]; then
  mkdir -p "$stubs"
  ln -sf "$CU/lib/libcudart.so.13" "$stubs/libcudart.so"
  ln -sf "$CU/lib/libcurand.so.10" "$stubs/libcurand.so"
  ln -sf "$CU/lib/libnvrtc.so.13" "$stubs/libnvrtc.so"
  # No driver or cuBLAS stub ships on PyPI: make link-time stubs from the symbol names cudarc binds
  # (the real libraries come from the driver and the nvidia-cublas wheel on the GPU machine).
  # (On a fresh cargo home cudarc is not unpacked yet: `cargo fetch` brings it; `|| true` because
  # a failed `ls` fails the pipeline, and with it this script, under pipefail.)
  find_cudarc() { ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-0.19.10 2>/dev/null | head -1 || true; }
  cudarc=$(find_cudarc)
  [ -n "$cudarc" ] || { (cd "$(dirname "$0")" && cargo fetch -q >&2); cudarc=$(find_cudarc); }
  [ -n "$cudarc" ] || { echo "toolchain.sh: cudarc 0.19.10's source is not in the cargo registry" >&2; exit 1; }
  mk() { grep -ohE "^\s+(pub )?fn $2[A-Za-z0-9_]*\(" "$cudarc/src/$1/sys/mod.rs" | sed -E 's/^ *(pub )?fn //;s/\(//' \
         | sort -u | sed 's/.*/int &(void){return 100;}/' > "$stubs/$3.c"
         gcc -shared -fPIC -Wl,-soname,"$4" -o "$stubs/$3.so" "$stubs/$3.c"; }
  mk driver cu libcuda libcuda.so.1
  mk cublas cublas libcublas libcublas.so.13
  mk cublaslt cublasLt libcublasLt libcublasLt.so.13
fi
cat <<ENV
export PATH="$CU/bin:\$PATH" NVCC="$CU/bin/nvcc" CUDA_HOME="$CU" CUDA_PATH="$CU" CUDA_ROOT="$CU"
export CUDA_COMPUTE_CAP=\${CUDA_COMPUTE_CAP:-90} CUDARC_CUDA_VERSION=13000 CUDAFORGE_THREADS=\${CUDAFORGE_THREADS:-2}
export LIBRARY_PATH="$stubs:$CU/lib\${LIBRARY_PATH:+:\$LIBRARY_PATH}"
ENV
