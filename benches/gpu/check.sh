#!/usr/bin/env bash
# The GPU check, one command on a bare GPU machine (Python 3.12 with numpy, pytest, torch and the
# nvidia cu13 wheels; no Rust, no network), from the repository root with .gpu-carry/ beside it
# (made by benches/gpu/prepare.sh; docs/GPU.md says how to run both):
#   bash benches/gpu/check.sh
# 1. installs the carried wheels (med42-rs, med42-rs-cuda, gguf, PyYAML where missing) into a
#    folder on PYTHONPATH, and puts the nvidia wheels' lib folder on LD_LIBRARY_PATH;
# 2. runs the `gpu` tests (the tests/test_*.py files with gpu marks) against the installed package,
#    without downloads (MED42_TEST_OFFLINE=1: the SmolLM2 tests skip), while the 70B-shaped
#    slice is written as Q8_0 and Q4_0 in the background;
# 3. runs the benchmark (benches/gpu/bench.py): prefill and decode tok/s with all layers on the
#    GPU, half of them and the CPU alone, the bandwidth roofline beside decode.
# Logs and results go to $OUT (default target/gpu-check). The exit status is 0 only if every step
# passed. MED42_CHECK_CPU=1 tries the script on a machine without a GPU: the CPU wheel alone
# (MED42_BACKEND=cpu), the gpu tests (skipped there), a small slice and --device cpu;
# MED42_CHECK_SMALL=1 keeps the CUDA build but uses the small slice (for a trial with stub drivers).
set -uo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD
carry=$(cd "${MED42_GPU_CARRY:-.gpu-carry}" && pwd) || { echo "no .gpu-carry/: run benches/gpu/prepare.sh first"; exit 2; }
out=${OUT:-target/gpu-check}
mkdir -p "$out"
out=$(cd "$out" && pwd)
exec > >(tee "$out/check.log") 2>&1
py=${PYTHON:-python3}
cpu_only=${MED42_CHECK_CPU:-0}
work=${MED42_GPU_WORK:-${TMPDIR:-/tmp}/med42-gpu-check}
rm -rf "$work/site"
mkdir -p "$work/site" "$work/test-assets"
start=$(date +%s)
failed=()
step() { printf '\n=== %s (+%ss)\n' "$1" "$(( $(date +%s) - start ))"; }

step "machine"
nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv 2>&1 | head -3
"$py" -c 'import platform, sys; print("python", sys.version.split()[0], "glibc", platform.libc_ver()[1])'
"$py" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)' 2>&1 | tail -1
nproc

step "install the carried wheels into $work/site"
wheels=("$carry"/wheels/med42_rs-*.whl "$carry"/wheels/gguf-*.whl)
[ "$cpu_only" = 1 ] || wheels+=("$carry"/wheels/med42_rs_cuda-*.whl)
"$py" -c 'import yaml' 2>/dev/null || wheels+=("$carry"/wheels/[Pp][Yy][Yy][Aa][Mm][Ll]-*.whl)
if ! "$py" -m pip install -q --no-index --no-deps --disable-pip-version-check --target "$work/site" \
        "${wheels[@]}"; then
    # no pip, or a platform tag it refuses: a wheel is a zip of what goes into site-packages (an
    # extension that cannot load here then fails the import step below, saying why)
    echo "pip could not install the wheels: extracting them"
    "$py" -c 'import sys, zipfile; [zipfile.ZipFile(w).extractall(sys.argv[1]) for w in sys.argv[2:]]' \
        "$work/site" "${wheels[@]}" || failed+=("install")
fi
export PYTHONPATH="$work/site${PYTHONPATH:+:$PYTHONPATH}"
nvlib=$("$py" -c 'import nvidia, pathlib; print(":".join(str(p) for p in (pathlib.Path(d) / "cu13" / "lib" for d in nvidia.__path__) if p.is_dir()))' 2>/dev/null)
[ -n "$nvlib" ] && export LD_LIBRARY_PATH="$nvlib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
echo "nvidia libraries: ${nvlib:-none found}"
if [ "$cpu_only" = 1 ]; then export MED42_BACKEND=cpu; fi
"$py" - <<'PY' || failed+=("import")
import med42_rs

i = med42_rs.build_info()
print(f"med42_rs {med42_rs.__version__} from {med42_rs.__file__}")
for k in ("native_module", "cuda", "cuda_compute_caps", "cuda_unavailable", "kernels", "cargo_features"):
    print(f"  {k}: {i[k]}")
if i["backend"] != "cpu":
    assert i["native_module"] == "med42_rs_cuda._native", f"the CUDA build is not in use: {i['cuda_unavailable']}"
PY

export MED42_TEST_CACHE="$work/test-assets"
cp -r "$carry"/test-assets/. "$MED42_TEST_CACHE"/
bench_args=(--assets "$MED42_TEST_CACHE/bench" --json "$out/bench.json")
small=()
[ "$cpu_only" = 1 ] && bench_args+=(--device cpu)
if [ "$cpu_only" = 1 ] || [ "${MED42_CHECK_SMALL:-0}" = 1 ]; then
    small=(--small)
    bench_args+=(--small --prompt 64 --gen 16)
fi
step "the 70B-shaped slice (background) and the gpu tests"
"$py" benches/gpu/slice70b.py "$MED42_TEST_CACHE/bench" "${small[@]}" > "$out/slice.log" 2>&1 &
slice_pid=$!
# the test files with gpu-marked tests (collecting all of tests/ would import llama.cpp, selenium...)
mapfile -t gpu_tests < <(grep -l "mark\.gpu" tests/test_*.py)
echo "gpu tests in: ${gpu_tests[*]:-none}"
if [ ${#gpu_tests[@]} -gt 0 ]; then
    # SmolLM2 cannot travel (98 MB) nor be downloaded: its tests skip, saying so
    MED42_TEST_OFFLINE=1 timeout 240 "$py" -m pytest -m gpu "${gpu_tests[@]}" -p no:cacheprovider -q -rs \
        --junitxml="$out/pytest-gpu.xml" || failed+=("gpu tests")
else
    failed+=("gpu tests (none found)")
fi
wait "$slice_pid" || failed+=("slice")
cat "$out/slice.log"

step "benchmark"
timeout 200 "$py" benches/gpu/bench.py --timeout 90 "${bench_args[@]}" || failed+=("benchmark")

step "done in $(( $(date +%s) - start ))s; logs in $out"
if [ ${#failed[@]} -gt 0 ]; then
    echo "FAILED: ${failed[*]}"
    exit 1
fi
echo "all steps passed"
cd "$repo"
