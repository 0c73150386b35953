//! A stable-Rust mutation fuzzer for everything a model file reaches (`med42_rs::fuzzing`).
//!
//! ```text
//! cargo run --release --example fuzz_gguf -- [--seconds 60] [--seed 1] [--corpus fuzz/corpus/gguf]
//! ```
//!
//! Replays every corpus file, then mutates them (byte flips, integer fields set to boundary values,
//! truncation, chunk duplication and deletion, splicing two inputs) until the time is up. Fails
//! (exit status 1) on any panic, on an input that takes more than 5 s, or if peak memory exceeds
//! 2 GiB; failing inputs are written to `fuzz/crashes/`. Coverage-guided fuzzing of the same entry
//! point: `fuzz/` (cargo-fuzz).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use med42_rs::fuzzing::{run_input, Reached};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const INTERESTING: [u64; 14] = [
    0,
    1,
    2,
    3,
    4,
    7,
    255,
    0x7fff_ffff,
    0xffff_ffff,
    0x1_0000_0000,
    0x7fff_ffff_ffff_ffff,
    0x8000_0000_0000_0000,
    u64::MAX,
    u64::MAX - 7,
];

fn mutate(rng: &mut Rng, input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut v = input.to_vec();
    let rounds = 1 + rng.below(4);
    for _ in 0..rounds {
        if v.is_empty() {
            v.push(rng.next() as u8);
        }
        // Most structure is in the first few KiB (header, metadata, tensor directory).
        let hot = v.len().min(if rng.below(4) == 0 { v.len() } else { 4096 });
        let at = rng.below(hot);
        match rng.below(8) {
            0 => v[at] ^= 1 << rng.below(8),
            1 => v[at] = rng.next() as u8,
            2 | 3 => {
                let width = [1usize, 2, 4, 8][rng.below(4)];
                let mut val = INTERESTING[rng.below(INTERESTING.len())];
                if rng.below(3) == 0 {
                    val = val.wrapping_add(rng.below(16) as u64).wrapping_sub(8);
                }
                if rng.below(4) == 0 {
                    val = v.len() as u64 + rng.below(64) as u64;
                }
                let bytes = val.to_le_bytes();
                let n = width.min(v.len() - at);
                v[at..at + n].copy_from_slice(&bytes[..n]);
            }
            4 => v.truncate(at),
            5 => {
                let len = rng.below(64.min(v.len() - at) + 1);
                let chunk = v[at..at + len].to_vec();
                let to = rng.below(v.len());
                v.splice(to..to, chunk);
            }
            6 => {
                let len = rng.below(64.min(v.len() - at) + 1);
                v.drain(at..at + len);
            }
            _ => {
                if !other.is_empty() {
                    let from = rng.below(other.len());
                    let len = rng.below(256.min(other.len() - from) + 1);
                    let end = (at + len).min(v.len());
                    v.splice(at..end, other[from..from + len].iter().copied());
                }
            }
        }
    }
    v
}

fn peak_rss_mib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|r| r.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb / 1024)
}

fn main() {
    let mut seconds = 30u64;
    let mut seed = 1u64;
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut corpus_dir = root.join("fuzz/corpus/gguf");
    let crash_dir = root.join("fuzz/crashes");
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let val = args.get(i + 1).cloned().unwrap_or_default();
        match args[i].as_str() {
            "--seconds" => seconds = val.parse().expect("--seconds N"),
            "--seed" => seed = val.parse().expect("--seed N"),
            "--corpus" => corpus_dir = PathBuf::from(val),
            other => panic!("unknown argument {other}"),
        }
        i += 2;
    }
    // The memory check must not depend on this machine; large declared sizes then reach the
    // shape checks, which must refuse them on their own.
    std::env::set_var("MED42_MEMORY_AVAILABLE", (1u64 << 30).to_string());
    let mut files: Vec<PathBuf> = std::fs::read_dir(&corpus_dir)
        .unwrap_or_else(|e| panic!("{}: {e}", corpus_dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    let mut pool: Vec<Vec<u8>> = files.iter().map(|p| std::fs::read(p).unwrap()).collect();
    assert!(!pool.is_empty(), "empty corpus");
    std::panic::set_hook(Box::new(|_| {}));

    // Watchdog: an input still running after 10 s is a hang. It is saved and the run fails (the
    // per-input check below only sees inputs that return). Inputs are saved before they run, so
    // an abort (e.g. an allocation failure) leaves `fuzz/crashes/current.gguf` behind.
    let started = Instant::now();
    let running_since = Arc::new(AtomicU64::new(0)); // ms since `started` + 1; 0 = idle
    let current: Arc<Mutex<Vec<u8>>> = Arc::new(Mutex::new(Vec::new()));
    {
        let (running_since, current, crash_dir) = (
            Arc::clone(&running_since),
            Arc::clone(&current),
            crash_dir.clone(),
        );
        std::thread::spawn(move || loop {
            std::thread::sleep(Duration::from_millis(200));
            let t = running_since.load(Ordering::SeqCst);
            if t != 0 && started.elapsed().as_millis() as u64 + 1 - t > 10_000 {
                let data = current.lock().unwrap_or_else(|p| p.into_inner()).clone();
                let _ = std::fs::create_dir_all(&crash_dir);
                let name = crash_dir.join("hang.gguf");
                let _ = std::fs::write(&name, &data);
                eprintln!(
                    "FAIL: an input ran for more than 10 s -> {}",
                    name.display()
                );
                std::process::exit(1);
            }
        });
    }

    let execs = std::cell::Cell::new(0u64);
    let failures = std::cell::Cell::new(0u64);
    let mut stages = [0u64; 5];
    let run = |data: &[u8], label: &str, stages: &mut [u64; 5]| -> Option<Reached> {
        current.lock().unwrap_or_else(|p| p.into_inner()).clear();
        current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(data);
        running_since.store(started.elapsed().as_millis() as u64 + 1, Ordering::SeqCst);
        let t = Instant::now();
        let r = std::panic::catch_unwind(|| run_input(data));
        let dt = t.elapsed();
        running_since.store(0, Ordering::SeqCst);
        execs.set(execs.get() + 1);
        let bad = match &r {
            Err(p) => Some(format!(
                "panic: {}",
                p.downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default()
            )),
            Ok(_) if dt > Duration::from_secs(5) => Some(format!("slow: {dt:?}")),
            Ok(_) => None,
        };
        if let Some(why) = bad {
            failures.set(failures.get() + 1);
            std::fs::create_dir_all(&crash_dir).unwrap();
            let name = crash_dir.join(format!("crash-{seed}-{}.gguf", execs.get()));
            std::fs::write(&name, data).unwrap();
            eprintln!("FAIL {label}: {why} -> {}", name.display());
            return None;
        }
        let reached = r.unwrap();
        stages[reached as usize] += 1;
        Some(reached)
    };

    let mut seed_failures = 0;
    for (p, data) in files.iter().zip(pool.clone()) {
        let reached = run(&data, &p.display().to_string(), &mut stages);
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("valid-") && reached != Some(Reached::Forward) {
            eprintln!("FAIL: valid seed {name} stopped at {reached:?} instead of a forward pass");
            seed_failures += 1;
        }
        println!(
            "corpus {:<40} {:?}",
            p.file_name().unwrap().to_string_lossy(),
            reached
        );
    }
    let replayed = execs.get();
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < deadline {
        let a = rng.below(pool.len());
        let b = rng.below(pool.len());
        let m = mutate(&mut rng, &pool[a], &pool[b]);
        if let Some(r) = run(&m, "mutant", &mut stages) {
            // keep inputs that got deep: they are the interesting ground to mutate further
            if r >= Reached::Load && pool.len() < 512 && m.len() < (4 << 20) {
                pool.push(m);
            }
        }
    }
    let peak = peak_rss_mib();
    println!(
        "fuzz_gguf: {replayed} corpus files replayed, {} mutants in {seconds} s (seed {seed}); \
         {} failures; stages parse/config/tokenizer/load/forward = {stages:?}; \
         peak RSS {peak} MiB",
        execs.get() - replayed,
        failures.get()
    );
    if failures.get() > 0 || seed_failures > 0 || peak > 2048 {
        std::process::exit(1);
    }
}
