"""build_info() reports the kernel each weight type gets on this machine (run-time dispatch)."""

from __future__ import annotations

import med42_rs

COMPUTABLE = ["F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0"]
COMPUTABLE += ["Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q8_K"]
AMX_TYPES = ["Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"]


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def test_dot_kernels_name_every_type_and_the_fast_paths() -> None:
    info = med42_rs.build_info()
    kernels = info["dot_kernels"]
    assert sorted(kernels) == sorted(COMPUTABLE)
    allowed = {"avx512vnni", "avxvnni", "avx2", "candle-avx2", "candle-neon", "scalar"}
    for t, k in kernels.items():
        assert k.removesuffix("+amx").removesuffix("+packed").removesuffix("+multi-row") in allowed, (
            t,
            k,
        )
    cpu = set(info["cpu_simd"])
    if {"avx2", "fma", "f16c"} <= cpu:
        # run-time dispatch: these are ours whatever the build flags were. With AVX-512
        # F/BW/VL/VNNI or AVX-VNNI the decode and multi-row kernels of the Med42 types and Q4_1
        # are the VNNI ones (the packed GEMMs are VNNI or AVX2: they sum in the same order)
        if {"avx512f", "avx512bw", "avx512vl", "avx512vnni"} <= cpu:
            isa = "avx512vnni"
        elif "avxvnni" in cpu:
            isa = "avxvnni"
        else:
            isa = "avx2"
        vnni_types = ["Q4_0", "Q4_1", "Q5_0", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"]
        assert info["kernels"] == isa, (info["kernels"], sorted(cpu))
        for t in ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"]:
            assert kernels[t].startswith(isa if t in vnni_types else "avx2"), (t, kernels[t])
        for t in ["F16", "F32"]:
            assert kernels[t] == "avx2", (t, kernels[t])
        # prompts use the multi-row kernels and, from 16 rows, the packed GEMM (8 weight rows per
        # register) for every type of the Med42 table
        # (AMX tiles for the K-quants where the CPU has them)
        for t in ["Q4_0", "Q5_0", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"]:
            want = isa if t in vnni_types else "avx2"
            amx = "+amx" if info["amx"] and t in AMX_TYPES else ""
            assert kernels[t] == f"{want}+multi-row+packed{amx}", (t, kernels[t])
    # types without a multi-row or packed kernel do not claim one
    for t in ["Q4_1", "Q5_1", "F16", "F32"]:
        assert not kernels[t].endswith(("+multi-row", "+packed")), (t, kernels[t])


def test_amx_is_reported_where_the_cpu_has_it() -> None:
    """`amx` is true exactly where the CPU offers AMX-TILE and AMX-INT8 with AVX-512 VNNI (this
    Linux grants the tile state), and only the AMX types claim it."""
    import os

    info = med42_rs.build_info()
    flags = _cpu_flags()
    want = {"amx_tile", "amx_int8", "avx512_vnni", "avx512bw", "avx512vl"} <= flags
    if os.environ.get("MED42_AMX", "").strip() == "0":
        want = False
    assert info["amx"] is want, (info["amx"], sorted(f for f in flags if "amx" in f))
    for t, k in info["dot_kernels"].items():
        assert k.endswith("+amx") == (want and t in AMX_TYPES), (t, k)
