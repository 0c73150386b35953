"""build_info() reports the kernel each weight type gets on this machine (run-time dispatch)."""

from __future__ import annotations

import med42_rs

COMPUTABLE = ["F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0"]
COMPUTABLE += ["Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q8_K"]


def test_dot_kernels_name_every_type_and_the_fast_paths() -> None:
    info = med42_rs.build_info()
    kernels = info["dot_kernels"]
    assert sorted(kernels) == sorted(COMPUTABLE)
    allowed = {"avx512vnni", "avxvnni", "avx2", "candle-avx2", "candle-neon", "scalar"}
    for t, k in kernels.items():
        assert k.removesuffix("+packed").removesuffix("+multi-row") in allowed, (t, k)
    cpu = set(info["cpu_simd"])
    if {"avx2", "fma", "f16c"} <= cpu:
        # run-time dispatch: these are ours whatever the build flags were. With AVX-512
        # F/BW/VL/VNNI the decode and multi-row kernels of the Med42 types and Q4_1 are the
        # AVX-512 VNNI ones; with AVX-VNNI alone those of the 32-value-block types (the packed
        # GEMMs are VNNI or AVX2: they sum in the same order)
        if {"avx512f", "avx512bw", "avx512vl", "avx512vnni"} <= cpu:
            isa, vnni_types = (
                "avx512vnni",
                ["Q4_0", "Q4_1", "Q5_0", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"],
            )
        elif "avxvnni" in cpu:
            isa, vnni_types = "avxvnni", ["Q4_0", "Q4_1", "Q5_0", "Q8_0"]
        else:
            isa, vnni_types = "avx2", []
        assert info["kernels"] == isa, (info["kernels"], sorted(cpu))
        for t in ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"]:
            assert kernels[t].startswith(isa if t in vnni_types else "avx2"), (t, kernels[t])
        for t in ["F16", "F32"]:
            assert kernels[t] == "avx2", (t, kernels[t])
        # prompts use the multi-row kernels and, from 16 rows, the packed GEMM (8 weight rows per
        # register) for every type of the Med42 table
        for t in ["Q4_0", "Q5_0", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"]:
            want = isa if t in vnni_types else "avx2"
            assert kernels[t] == f"{want}+multi-row+packed", (t, kernels[t])
    # types without a multi-row or packed kernel do not claim one
    for t in ["Q4_1", "Q5_1", "F16", "F32"]:
        assert not kernels[t].endswith(("+multi-row", "+packed")), (t, kernels[t])
