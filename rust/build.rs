//! What this build was compiled with, and what the running CPU offers.

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
            "avx512vnni"
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

/// The quantized kernel family candle was compiled with: `avx2` (x86 AVX2+FMA), `neon`,
/// `simd128`, or `scalar` (slow: the build lacked `-C target-cpu`).
pub fn kernel_family() -> &'static str {
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
