//! What this build was compiled with, and what the running CPU offers: the facts behind
//! `med42_rs.build_info()`, gathered here so that the binding only converts them.

/// SIMD features the crate (and candle's kernels, compiled in the same build) were compiled for.
pub fn compiled_features() -> Vec<&'static str> {
    let mut f = Vec::new();
    macro_rules! feat {
        ($($name:literal),*) => { $( if cfg!(target_feature = $name) { f.push($name); } )* };
    }
    feat!(
        "sse3",
        "ssse3",
        "sse4.1",
        "sse4.2",
        "avx",
        "avx2",
        "fma",
        "f16c",
        "avx512f",
        "avx512bw",
        "avx512vnni",
        "neon",
        "dotprod",
        "simd128"
    );
    f
}

/// SIMD features the running CPU supports.
pub fn runtime_features() -> Vec<&'static str> {
    #[allow(unused_mut)]
    let mut f = Vec::new();
    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
    {
        macro_rules! det {
            ($($name:tt),*) => { $( if std::is_x86_feature_detected!($name) { f.push($name); } )* };
        }
        det!(
            "sse3",
            "ssse3",
            "sse4.1",
            "sse4.2",
            "avx",
            "avx2",
            "fma",
            "f16c",
            "avx512f",
            "avx512bw",
            "avx512vl",
            "avx512vnni",
            "avxvnni"
        );
    }
    #[cfg(target_arch = "aarch64")]
    {
        if std::arch::is_aarch64_feature_detected!("neon") {
            f.push("neon");
        }
        if std::arch::is_aarch64_feature_detected!("dotprod") {
            f.push("dotprod");
        }
    }
    f
}

/// The instruction-set family candle's own quantized kernels were compiled for (`avx2`, `avx`,
/// `neon`, `simd128` or `scalar`). The engine's CPU kernels are chosen at run time instead
/// (see [`BuildInfo::kernels`]); candle's serve the GPU path and the reference tests.
pub fn candle_kernel_family() -> &'static str {
    if cfg!(all(target_feature = "avx2", target_feature = "fma")) {
        "avx2"
    } else if cfg!(target_feature = "avx") {
        "avx"
    } else if cfg!(target_feature = "neon") {
        "neon"
    } else if cfg!(target_feature = "simd128") {
        "simd128"
    } else {
        "scalar"
    }
}

/// Cargo features this build was made with.
pub fn cargo_features() -> Vec<&'static str> {
    let mut f = Vec::new();
    if cfg!(feature = "python") {
        f.push("python");
    }
    if cfg!(feature = "cuda") {
        f.push("cuda");
    }
    if cfg!(feature = "metal") {
        f.push("metal");
    }
    f
}

/// The GPU architectures (compute capabilities, `90` = H100/H200) candle's CUDA kernels were
/// compiled for: empty unless this is a `cuda` build (recorded by build.rs from `CUDA_COMPUTE_CAP`).
pub fn cuda_compute_caps() -> Vec<u32> {
    env!("MED42_CUDA_COMPUTE_CAPS")
        .split(',')
        .filter_map(|c| c.parse().ok())
        .collect()
}

/// Everything `build_info()` reports.
#[derive(Debug, Clone)]
pub struct BuildInfo {
    /// The crate's version.
    pub version: &'static str,
    /// The instruction set the engine's CPU kernels use on this machine (run-time dispatch).
    pub kernels: &'static str,
    /// candle's compile-time kernel family.
    pub candle_kernels: &'static str,
    /// The candle version this build links (read from Cargo.lock when it was built).
    pub candle: &'static str,
    /// SIMD features compiled in.
    pub compiled_simd: Vec<&'static str>,
    /// SIMD features of the running CPU.
    pub cpu_simd: Vec<&'static str>,
    /// Cargo features of this build.
    pub cargo_features: Vec<&'static str>,
    /// Whether this is a CUDA build (the `cuda` feature).
    pub cuda: bool,
    /// The compute capabilities its CUDA kernels were compiled for (see [`cuda_compute_caps`]).
    pub cuda_compute_caps: Vec<u32>,
    /// The target architecture.
    pub target: &'static str,
    /// Per weight type: the dot-product kernel, with `+multi-row` and `+packed` where prompts
    /// use those kernels, and `+amx` where the packed GEMM runs on AMX tiles.
    pub dot_kernels: Vec<(String, String)>,
    /// Whether prompts of the K-quants use AMX: the CPU has AMX-TILE and AMX-INT8 with
    /// AVX-512, the OS granted the tile state, and `MED42_AMX=0` is not set.
    pub amx: bool,
}

impl BuildInfo {
    /// Gather the facts of this build and this CPU.
    pub fn collect() -> Self {
        let dot_kernels = crate::gguf::GgmlType::SUPPORTED
            .iter()
            .map(|&t| {
                let k = crate::kernels::Kernels::for_type(t);
                let name = k.map_or("none", |k| k.name);
                let multi = if k.is_some_and(|k| k.dot_rows.is_some()) {
                    "+multi-row"
                } else {
                    ""
                };
                let packed = match k.and_then(|k| k.packed) {
                    Some(p) if p.amx() => "+packed+amx",
                    Some(_) => "+packed",
                    None => "",
                };
                (t.name(), format!("{name}{multi}{packed}"))
            })
            .collect();
        BuildInfo {
            version: env!("CARGO_PKG_VERSION"),
            kernels: crate::kernels::isa(),
            candle_kernels: candle_kernel_family(),
            candle: env!("MED42_CANDLE_VERSION"),
            compiled_simd: compiled_features(),
            cpu_simd: runtime_features(),
            cargo_features: cargo_features(),
            cuda: cfg!(feature = "cuda"),
            cuda_compute_caps: cuda_compute_caps(),
            target: std::env::consts::ARCH,
            dot_kernels,
            amx: amx_available(),
        }
    }
}

/// Whether the AMX prompt GEMM runs on this CPU (see [`BuildInfo::amx`]).
fn amx_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        crate::kernels::x86::amx::available()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}
