//! Cargo build script: records the candle version from Cargo.lock, so that `build_info()` reports
//! the version that was actually linked rather than a copy kept by hand.

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
}
