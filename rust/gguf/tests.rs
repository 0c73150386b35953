//! Validation paths of the GGUF reader: every malformed file gets a clear error, never a panic or
//! an allocation of the declared size.

use std::path::PathBuf;

use super::types::value_type as vt;
use super::*;

/// A test tensor: (name, dims, type id, relative offset, data).
pub(crate) type RawTensor = (String, Vec<u64>, u32, u64, Vec<u8>);

/// A tiny GGUF writer for tests (independent of the reader).
#[derive(Default)]
pub(crate) struct Writer {
    pub version: u32,
    pub kv: Vec<(String, u32, Vec<u8>)>,
    pub tensors: Vec<RawTensor>,
    pub alignment: u64,
}

pub(crate) fn gstr(s: &str) -> Vec<u8> {
    let mut v = (s.len() as u64).to_le_bytes().to_vec();
    v.extend_from_slice(s.as_bytes());
    v
}

impl Writer {
    pub fn new() -> Self {
        Writer {
            version: 3,
            alignment: 32,
            ..Default::default()
        }
    }

    pub fn kv_u32(mut self, k: &str, v: u32) -> Self {
        self.kv
            .push((k.into(), vt::UINT32, v.to_le_bytes().to_vec()));
        self
    }

    pub fn kv_f32(mut self, k: &str, v: f32) -> Self {
        self.kv
            .push((k.into(), vt::FLOAT32, v.to_le_bytes().to_vec()));
        self
    }

    pub fn kv_str(mut self, k: &str, v: &str) -> Self {
        self.kv.push((k.into(), vt::STRING, gstr(v)));
        self
    }

    pub fn kv_raw(mut self, k: &str, t: u32, raw: Vec<u8>) -> Self {
        self.kv.push((k.into(), t, raw));
        self
    }

    /// An F32 tensor placed after the previous one (aligned).
    pub fn tensor_f32(mut self, name: &str, dims: &[u64]) -> Self {
        let n: u64 = dims.iter().product();
        let off = self
            .tensors
            .last()
            .map(|t| (t.3 + t.4.len() as u64).div_ceil(self.alignment) * self.alignment)
            .unwrap_or(0);
        let data: Vec<u8> = (0..n)
            .flat_map(|i| (i as f32 * 0.01).to_le_bytes())
            .collect();
        self.tensors
            .push((name.into(), dims.to_vec(), 0, off, data));
        self
    }

    /// An F32 tensor with the given values, placed after the previous one.
    pub fn tensor_data(mut self, name: &str, dims: &[u64], values: &[f32]) -> Self {
        let off = self
            .tensors
            .last()
            .map(|t| (t.3 + t.4.len() as u64).div_ceil(self.alignment) * self.alignment)
            .unwrap_or(0);
        let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.tensors
            .push((name.into(), dims.to_vec(), 0, off, data));
        self
    }

    pub fn bytes(&self) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&GGUF_MAGIC.to_le_bytes());
        b.extend_from_slice(&self.version.to_le_bytes());
        b.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        b.extend_from_slice(&(self.kv.len() as u64).to_le_bytes());
        for (k, t, raw) in &self.kv {
            b.extend(gstr(k));
            b.extend_from_slice(&t.to_le_bytes());
            b.extend_from_slice(raw);
        }
        for (name, dims, t, off, _) in &self.tensors {
            b.extend(gstr(name));
            b.extend_from_slice(&(dims.len() as u32).to_le_bytes());
            for d in dims {
                b.extend_from_slice(&d.to_le_bytes());
            }
            b.extend_from_slice(&t.to_le_bytes());
            b.extend_from_slice(&off.to_le_bytes());
        }
        let start = (b.len() as u64).div_ceil(self.alignment) * self.alignment;
        b.resize(start as usize, 0);
        for (_, _, _, off, data) in &self.tensors {
            let Some(at) = start.checked_add(*off).filter(|&a| a < 1 << 24) else {
                continue; // a hostile offset: the data is simply not there
            };
            let at = at as usize;
            if b.len() < at {
                b.resize(at, 0);
            }
            b.extend_from_slice(data);
        }
        b
    }
}

pub(crate) fn write_tmp(name: &str, bytes: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("med42-rs-tests-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn open(name: &str, bytes: &[u8]) -> Result<GgufFile> {
    GgufFile::open(&[write_tmp(name, bytes)])
}

fn err(name: &str, bytes: &[u8]) -> String {
    match open(name, bytes) {
        Ok(_) => panic!("{name}: expected an error"),
        Err(e) => e.to_string(),
    }
}

fn valid() -> Writer {
    Writer::new()
        .kv_str("general.architecture", "llama")
        .kv_u32("llama.block_count", 1)
        .tensor_f32("a", &[32, 2])
        .tensor_f32("b", &[64])
}

#[test]
fn a_valid_file_parses_with_absolute_offsets() {
    let f = open("valid.gguf", &valid().bytes()).unwrap();
    assert_eq!(f.tensors.len(), 2);
    assert_eq!(f.metadata.get_u64("llama.block_count").unwrap(), Some(1));
    let a = f.tensor_info("a").unwrap();
    assert_eq!(a.offset % 32, 0);
    let bytes = f.tensor_bytes(a).unwrap();
    assert!(bytes.is_mapped(), "tensor data is a view into the mapping");
    assert_eq!(&bytes.as_slice()[4..8], &0.01f32.to_le_bytes());
}

#[test]
fn bad_magic_and_foreign_formats_are_named() {
    let e = err("magic.gguf", b"GGMLxxxxxxxxxxxxxxxxxxxxxxxx");
    assert!(e.contains("not a GGUF file") && e.contains("magic"), "{e}");
    let mut st = 100u64.to_le_bytes().to_vec();
    st.extend_from_slice(b"{\"__metadata__\":{}}");
    let e = err("model.safetensors", &st);
    assert!(e.contains("safetensors"), "{e}");
    let e = err("empty.gguf", b"");
    assert!(e.contains("not a GGUF file"), "{e}");
}

#[test]
fn unsupported_versions_are_refused() {
    let mut w = valid();
    w.version = 1;
    assert!(err("v1.gguf", &w.bytes()).contains("version 1"));
    w.version = 7;
    assert!(err("v7.gguf", &w.bytes()).contains("version 7"));
    w.version = 3u32.swap_bytes();
    assert!(err("be.gguf", &w.bytes()).contains("big-endian"));
}

#[test]
fn every_truncation_gives_a_truncation_error_without_panicking() {
    let full = valid().bytes();
    for cut in 0..full.len() {
        let e = err(&format!("cut{cut}.gguf"), &full[..cut]);
        assert!(
            e.contains("truncated") || e.contains("not a GGUF file"),
            "cut at {cut}: {e}"
        );
        if cut >= 4 {
            assert!(e.contains("download the file again"), "cut at {cut}: {e}");
        }
    }
}

#[test]
fn huge_counts_are_rejected_before_allocation() {
    let mut b = valid().bytes();
    b[8..16].copy_from_slice(&u64::MAX.to_le_bytes()); // tensor count
    assert!(err("ntensors.gguf", &b).contains("cannot fit"));
    let mut b = valid().bytes();
    b[16..24].copy_from_slice(&(1u64 << 60).to_le_bytes()); // kv count
    assert!(err("nkv.gguf", &b).contains("cannot fit"));
    // an array declaring 2^40 elements
    let mut raw = vt::UINT32.to_le_bytes().to_vec();
    raw.extend_from_slice(&(1u64 << 40).to_le_bytes());
    let w = valid().kv_raw("big.array", vt::ARRAY, raw);
    assert!(err("array.gguf", &w.bytes()).contains("exceeds the limit"));
    // a string length near 2^64
    let mut raw = u64::MAX.to_le_bytes().to_vec();
    raw.extend_from_slice(b"abc");
    let w = valid().kv_raw("big.string", vt::STRING, raw);
    assert!(err("string.gguf", &w.bytes()).contains("string length"));
}

#[test]
fn nested_arrays_beyond_the_limit_are_rejected() {
    // array of array of array of u8
    let mut raw = Vec::new();
    for _ in 0..3 {
        raw.extend_from_slice(&vt::ARRAY.to_le_bytes());
        raw.extend_from_slice(&1u64.to_le_bytes());
    }
    raw.extend_from_slice(&vt::UINT8.to_le_bytes());
    raw.extend_from_slice(&1u64.to_le_bytes());
    raw.push(7);
    let w = valid().kv_raw("deep", vt::ARRAY, raw);
    assert!(err("deep.gguf", &w.bytes()).contains("nested deeper"));
}

#[test]
fn dims_that_overflow_or_are_too_many_are_rejected() {
    let mut w = valid();
    w.tensors[0].1 = vec![1 << 32, 1 << 32, 1 << 32];
    assert!(err("overflow.gguf", &w.bytes()).contains("overflows"));
    let mut w = valid();
    w.tensors[0].1 = vec![2, 2, 2, 2, 2];
    assert!(err("dims5.gguf", &w.bytes()).contains("5 dimensions"));
    let mut w = valid();
    w.tensors[0].1 = vec![32, 0];
    assert!(err("zero.gguf", &w.bytes()).contains("dimension is 0"));
}

#[test]
fn offsets_misaligned_overlapping_or_past_the_end_are_rejected() {
    let mut w = valid();
    w.tensors[1].3 += 4;
    assert!(err("misaligned.gguf", &w.bytes()).contains("not a multiple of the alignment"));
    let mut w = valid();
    w.tensors[1].3 = 0; // same place as `a`
    assert!(err("overlap.gguf", &w.bytes()).contains("overlaps"));
    let mut w = valid();
    w.tensors[1].3 = 1 << 40;
    let mut b = w.bytes();
    b.truncate(b.len().min(4096));
    assert!(err("past.gguf", &b).contains("truncated"));
    let mut w = valid();
    w.tensors[1].3 = u64::MAX - 31;
    assert!(err("wrap.gguf", &w.bytes()).contains("overflows"));
}

#[test]
fn bad_alignment_values_are_rejected() {
    for (i, a) in [0u32, 3, 1 << 30].into_iter().enumerate() {
        let w = valid().kv_u32("general.alignment", a);
        let e = err(&format!("align{i}.gguf"), &w.bytes());
        assert!(e.contains("power of two"), "{a}: {e}");
    }
    let w = valid().kv_str("general.alignment", "32");
    assert!(err("align_type.gguf", &w.bytes()).contains("general.alignment"));
}

#[test]
fn duplicates_and_unknown_types_are_rejected() {
    let w = valid().kv_u32("llama.block_count", 2);
    assert!(err("dupkey.gguf", &w.bytes()).contains("appears twice"));
    let mut w = valid();
    w.tensors[1].0 = "a".into();
    assert!(err("dupname.gguf", &w.bytes()).contains("appears twice"));
    let mut w = valid();
    w.tensors[0].2 = 99;
    assert!(err("type.gguf", &w.bytes()).contains("unknown ggml type id 99"));
    let w = valid().kv_raw("odd", 77, vec![0; 8]);
    assert!(err("vtype.gguf", &w.bytes()).contains("unknown value type id 77"));
}

#[test]
fn byte_split_parts_read_as_one_file_at_any_cut() {
    let full = valid().bytes();
    let whole = open("whole.gguf", &full).unwrap();
    let a_whole = whole
        .tensor_bytes(whole.tensor_info("a").unwrap())
        .unwrap()
        .as_slice()
        .to_vec();
    for cut in [1usize, 7, 20, 40, 100, full.len() / 2, full.len() - 5] {
        let pa = write_tmp(&format!("split{cut}-a"), &full[..cut]);
        let pb = write_tmp(&format!("split{cut}-b"), &full[cut..]);
        let f = GgufFile::open(&[pa, pb]).unwrap();
        assert_eq!(
            f.metadata.get_str("general.architecture").unwrap(),
            Some("llama")
        );
        let a = f.tensor_bytes(f.tensor_info("a").unwrap()).unwrap();
        assert_eq!(a.as_slice(), &a_whole[..], "cut at {cut}");
    }
}

#[test]
fn split_parts_are_found_from_the_first_and_errors_name_what_is_missing() {
    use super::parts::{resolve, Layout};
    let full = valid().bytes();
    let cut = full.len() / 3;
    let a = write_tmp("m.Q6_K.gguf-split-a", &full[..cut]);
    let b = write_tmp("m.Q6_K.gguf-split-b", &full[cut..]);
    let whole = open("m-whole.gguf", &full).unwrap();
    // the first part alone finds the second; both in order work; the logical file is the same
    for given in [vec![a.clone()], vec![a.clone(), b.clone()]] {
        assert_eq!(
            resolve(&given).unwrap(),
            Layout::Concat(vec![a.clone(), b.clone()])
        );
        let f = GgufFile::open(&given).unwrap();
        assert_eq!(f.tensors.len(), whole.tensors.len());
        assert_eq!(f.source.n_parts(), 2);
    }
    let msg = |paths: &[PathBuf]| match GgufFile::open(paths) {
        Err(e @ Error::Parts(_)) => e.to_string(),
        Err(e) => panic!("expected a parts error, got {e}"),
        Ok(_) => panic!("expected a parts error for {paths:?}"),
    };
    // wrong order, a later part alone
    let m = msg(&[b.clone(), a.clone()]);
    assert!(m.contains("wrong order") && m.contains("split-a"), "{m}");
    let m = msg(std::slice::from_ref(&b));
    assert!(
        m.contains("part `b`") && m.contains("m.Q6_K.gguf-split-a"),
        "{m}"
    );
    // the first part with its sibling missing
    let lone = write_tmp("lone.gguf-split-a", &full[..cut]);
    let m = msg(std::slice::from_ref(&lone));
    assert!(
        m.contains("lone.gguf-split-b") && m.contains("missing"),
        "{m}"
    );
    // a gap in the letters, a third part left out
    let c = write_tmp("m3.gguf-split-c", &full[cut..]);
    let a3 = write_tmp("m3.gguf-split-a", &full[..cut]);
    let m = msg(&[a3.clone(), c.clone()]);
    assert!(
        m.contains("m3.gguf-split-b") && m.contains("missing"),
        "{m}"
    );
    let b3 = write_tmp("m3.gguf-split-b", &full[cut..cut]);
    let m = msg(&[a3.clone(), b3.clone()]);
    assert!(m.contains("m3.gguf-split-c") && m.contains("exists"), "{m}");
    // parts of different files
    let m = msg(&[a.clone(), b3.clone()]);
    assert!(m.contains("different files"), "{m}");
}

#[test]
fn shard_names_resolve_and_bad_sets_are_refused() {
    use super::parts::{resolve, Layout};
    let dir = std::env::temp_dir().join(format!("med42-rs-shards-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let s = |i: u32, n: u32| dir.join(format!("m-{i:05}-of-{n:05}.gguf"));
    for i in 1..=3 {
        std::fs::write(s(i, 3), b"x").unwrap();
    }
    let all = vec![s(1, 3), s(2, 3), s(3, 3)];
    assert_eq!(resolve(&[s(1, 3)]).unwrap(), Layout::Shards(all.clone()));
    assert_eq!(resolve(&all).unwrap(), Layout::Shards(all.clone()));
    let e = resolve(&[s(2, 3)]).unwrap_err().to_string();
    assert!(
        e.contains("shard 2 of 3") && e.contains("m-00001-of-00003.gguf"),
        "{e}"
    );
    let e = resolve(&[s(2, 3), s(1, 3), s(3, 3)])
        .unwrap_err()
        .to_string();
    assert!(e.contains("wrong order"), "{e}");
    let e = resolve(&[s(1, 3), s(3, 3)]).unwrap_err().to_string();
    assert!(
        e.contains("missing") && e.contains("m-00002-of-00003.gguf"),
        "{e}"
    );
    std::fs::remove_file(s(3, 3)).unwrap();
    let e = resolve(&[s(1, 3)]).unwrap_err().to_string();
    assert!(
        e.contains("m-00003-of-00003.gguf") && e.contains("missing"),
        "{e}"
    );
    // one shard of one is a plain file; names outside both conventions are a byte concatenation
    assert_eq!(resolve(&[s(1, 1)]).unwrap(), Layout::Single(s(1, 1)));
    let (x, y) = (dir.join("x.bin"), dir.join("y.bin"));
    assert_eq!(
        resolve(&[x.clone(), y.clone()]).unwrap(),
        Layout::Concat(vec![x, y])
    );
}

#[test]
fn odd_part_lists_are_errors_or_plain_files_never_panics() {
    use super::parts::{resolve, Layout};
    let dir = std::env::temp_dir().join(format!("med42-rs-odd-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // shard numbers llama.cpp never writes are not shard names
    for name in [
        "m-00001-of-00000.gguf",
        "m-00000-of-00002.gguf",
        "m-00003-of-00002.gguf",
    ] {
        let p = dir.join(name);
        std::fs::write(&p, b"x").unwrap();
        assert_eq!(
            resolve(std::slice::from_ref(&p)).unwrap(),
            Layout::Single(p)
        );
    }
    // more byte-split parts than letters
    let many: Vec<PathBuf> = (0..300).map(|_| dir.join("x.gguf-split-b")).collect();
    assert!(resolve(&many)
        .unwrap_err()
        .to_string()
        .contains("at most 26"));
    // a first part that does not exist is a plain "not found", not "the next part is missing"
    let gone = dir.join("gone.gguf-split-a");
    assert_eq!(
        resolve(std::slice::from_ref(&gone)).unwrap(),
        Layout::Single(gone.clone())
    );
    assert!(matches!(GgufFile::open(&[gone]), Err(Error::Io { .. })));
}
