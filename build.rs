//! Cargo build script: records the candle version from Cargo.lock, so that `build_info()` reports
//! the version that was actually linked rather than a copy kept by hand, and, in a `cuda` build,
//! the GPU architectures candle's kernels are compiled for (`CUDA_COMPUTE_CAP`, which
//! candle-kernels reads too; without it candle-kernels asks `nvidia-smi`, and so does this).

fn main() {
    println!("cargo:rerun-if-changed=Cargo.lock");
    let lock =
        std::path::Path::new(&std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("Cargo.lock");
    let text = std::fs::read_to_string(lock).unwrap_or_default();
    let mut lines = text.lines();
    let mut version = String::from("unknown");
    while let Some(line) = lines.next() {
        if line.trim() == "name = \"candle-core\"" {
            if let Some(v) = lines
                .next()
                .and_then(|l| l.trim().strip_prefix("version = "))
            {
                version = v.trim_matches('"').to_string();
            }
            break;
        }
    }
    println!("cargo:rustc-env=MED42_CANDLE_VERSION={version}");

    println!("cargo:rerun-if-env-changed=CUDA_COMPUTE_CAP");
    let caps = if std::env::var_os("CARGO_FEATURE_CUDA").is_some() {
        cuda_compute_caps()
    } else {
        Vec::new()
    };
    let caps: Vec<String> = caps.iter().map(u32::to_string).collect();
    println!("cargo:rustc-env=MED42_CUDA_COMPUTE_CAPS={}", caps.join(","));
}

/// The compute capabilities as numbers (`90` for `90` or `90a`): from `CUDA_COMPUTE_CAP`, else from
/// the first GPU `nvidia-smi` reports (`9.0`), else none.
fn cuda_compute_caps() -> Vec<u32> {
    let digits = |s: &str| -> Option<u32> {
        let d: String = s.trim().chars().filter(char::is_ascii_digit).collect();
        d.parse().ok()
    };
    if let Ok(v) = std::env::var("CUDA_COMPUTE_CAP") {
        return v.split(',').filter_map(digits).collect();
    }
    let out = std::process::Command::new("nvidia-smi")
        .args(["--query-gpu=compute_cap", "--format=csv,noheader"])
        .output();
    match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout)
            .lines()
            .take(1)
            .filter_map(digits)
            .collect(),
        _ => Vec::new(),
    }
}
