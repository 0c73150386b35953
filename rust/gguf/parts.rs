//! Which files make up one model, from the path(s) the user gives.
//!
//! Two conventions are recognised by file name:
//! - **byte-split parts** `NAME-split-a`, `NAME-split-b`, … (how the Q6_K and Q8_0 Med42 files are
//!   published): the model file cut into byte ranges; read as their concatenation, in place.
//! - **gguf-split shards** `PREFIX-00001-of-00003.gguf`, … (llama.cpp's `gguf-split`, and gguf-py's
//!   writer with a split limit): each shard is a GGUF file holding some of the tensors.
//!
//! Giving the first part (or first shard) finds the others next to it; giving all of them in order
//! works too. A missing part, parts out of order, or a later part given alone is an error that names
//! what is missing and the convention detected. Any other list of paths is read as a byte
//! concatenation, in the order given.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The files of one model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// One GGUF file.
    Single(PathBuf),
    /// Byte ranges of one GGUF file, in order (a byte-split set, or an explicit list).
    Concat(Vec<PathBuf>),
    /// gguf-split shards, in order; each is a GGUF file.
    Shards(Vec<PathBuf>),
}

impl Layout {
    /// Every path, in order.
    pub fn paths(&self) -> Vec<PathBuf> {
        match self {
            Layout::Single(p) => vec![p.clone()],
            Layout::Concat(v) | Layout::Shards(v) => v.clone(),
        }
    }
}

const BYTE_SPLIT: &str = "byte-split parts (NAME-split-a, NAME-split-b, ...)";
const SHARDS: &str = "gguf-split shards (NAME-00001-of-0000N.gguf, ...)";

/// `NAME-split-x` → (`NAME`, x) for one lowercase letter x.
fn byte_split_name(p: &Path) -> Option<(String, u8)> {
    let name = p.file_name()?.to_str()?;
    let (stem, letter) = name.rsplit_once("-split-")?;
    match letter.as_bytes() {
        [c] if c.is_ascii_lowercase() && !stem.is_empty() => Some((stem.to_string(), *c)),
        _ => None,
    }
}

/// `PREFIX-0000i-of-0000n.gguf` → (`PREFIX`, i, n).
fn shard_name(p: &Path) -> Option<(String, u32, u32)> {
    let name = p.file_name()?.to_str()?;
    let rest = name.strip_suffix(".gguf")?;
    let (head, n) = rest.rsplit_once("-of-")?;
    let (prefix, i) = head.rsplit_once('-')?;
    let digits = |s: &str| s.len() == 5 && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(i) || !digits(n) || prefix.is_empty() {
        return None;
    }
    let (i, n): (u32, u32) = (i.parse().ok()?, n.parse().ok()?);
    if i == 0 || i > n {
        return None; // not a shard name llama.cpp would write
    }
    Some((prefix.to_string(), i, n))
}

fn sibling(first: &Path, name: String) -> PathBuf {
    first.with_file_name(name)
}

fn byte_part(first: &Path, stem: &str, letter: u8) -> PathBuf {
    sibling(first, format!("{stem}-split-{}", letter as char))
}

fn shard_path(first: &Path, prefix: &str, i: u32, n: u32) -> PathBuf {
    sibling(first, format!("{prefix}-{i:05}-of-{n:05}.gguf"))
}

fn parts_error(msg: String) -> Error {
    Error::Parts(msg)
}

fn names(v: &[PathBuf]) -> String {
    v.iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Resolve the user's path(s) to the files of one model (see the module docs).
pub fn resolve(paths: &[PathBuf]) -> Result<Layout> {
    match paths {
        [] => Err(Error::arg("path", "no model file given")),
        [p] => resolve_one(p),
        _ => resolve_list(paths),
    }
}

fn resolve_one(p: &Path) -> Result<Layout> {
    if !p.exists() {
        // the ordinary "file not found", naming the path as given
        return Ok(Layout::Single(p.to_path_buf()));
    }
    if let Some((stem, letter)) = byte_split_name(p) {
        if letter != b'a' {
            return Err(parts_error(format!(
                "{} is part `{}` of {BYTE_SPLIT}; pass the first part, {}, and the others are \
                 found next to it",
                p.display(),
                letter as char,
                byte_part(p, &stem, b'a').display()
            )));
        }
        let mut parts = vec![p.to_path_buf()];
        let mut next = b'b';
        while next <= b'z' {
            let q = byte_part(p, &stem, next);
            if !q.exists() {
                break;
            }
            parts.push(q);
            next += 1;
        }
        if parts.len() == 1 {
            return Err(parts_error(format!(
                "{} is the first of {BYTE_SPLIT}, but the next part {} is missing; download every \
                 part into the same directory (the Med42 Q6_K and Q8_0 files come in two parts)",
                p.display(),
                byte_part(p, &stem, b'b').display()
            )));
        }
        return Ok(Layout::Concat(parts));
    }
    if let Some((prefix, i, n)) = shard_name(p) {
        if n == 1 && i == 1 {
            return Ok(Layout::Single(p.to_path_buf()));
        }
        if i != 1 {
            return Err(parts_error(format!(
                "{} is shard {i} of {n} of {SHARDS}; pass the first shard, {}, and the others \
                 are found next to it",
                p.display(),
                shard_path(p, &prefix, 1, n).display()
            )));
        }
        let all: Vec<PathBuf> = (1..=n).map(|k| shard_path(p, &prefix, k, n)).collect();
        let missing: Vec<PathBuf> = all.iter().filter(|q| !q.exists()).cloned().collect();
        if !missing.is_empty() {
            return Err(parts_error(format!(
                "{} is shard 1 of {n} of {SHARDS}, but {} missing: {}; download every shard into \
                 the same directory",
                p.display(),
                if missing.len() == 1 {
                    "this one is"
                } else {
                    "these are"
                },
                names(&missing)
            )));
        }
        return Ok(Layout::Shards(all));
    }
    Ok(Layout::Single(p.to_path_buf()))
}

fn resolve_list(paths: &[PathBuf]) -> Result<Layout> {
    let bytes: Vec<_> = paths.iter().map(|p| byte_split_name(p)).collect();
    if bytes.iter().all(Option::is_some) {
        if paths.len() > 26 {
            return Err(parts_error(format!(
                "{} paths given as {BYTE_SPLIT}; the convention has at most 26 parts (a..z)",
                paths.len()
            )));
        }
        let bytes: Vec<(String, u8)> = bytes.into_iter().flatten().collect();
        let stem = &bytes[0].0;
        if bytes.iter().any(|(s, _)| s != stem) {
            return Err(parts_error(format!(
                "the parts {} are {BYTE_SPLIT} of different files; pass the parts of one file",
                names(paths)
            )));
        }
        let expected: Vec<PathBuf> = (0..paths.len() as u8)
            .map(|k| byte_part(&paths[0], stem, b'a' + k))
            .collect();
        let letters: Vec<u8> = bytes.iter().map(|(_, c)| *c).collect();
        let mut sorted = letters.clone();
        sorted.sort_unstable();
        if sorted != letters {
            return Err(parts_error(format!(
                "{BYTE_SPLIT} given in the wrong order ({}); pass them in order: {}",
                names(paths),
                names(&expected)
            )));
        }
        if let Some(k) = (0..letters.len()).find(|&k| letters[k] != b'a' + k as u8) {
            return Err(parts_error(format!(
                "{BYTE_SPLIT}: part {} is missing from {}; pass every part, in order",
                expected[k].display(),
                names(paths)
            )));
        }
        let after = byte_part(&paths[0], stem, b'a' + paths.len() as u8);
        if after.exists() {
            return Err(parts_error(format!(
                "{BYTE_SPLIT}: {} exists next to the parts given ({}); pass every part",
                after.display(),
                names(paths)
            )));
        }
        return Ok(Layout::Concat(paths.to_vec()));
    }
    let shards: Vec<_> = paths.iter().map(|p| shard_name(p)).collect();
    if shards.iter().all(Option::is_some) {
        let shards: Vec<(String, u32, u32)> = shards.into_iter().flatten().collect();
        let (prefix, _, n) = &shards[0];
        if shards.iter().any(|(p, _, m)| p != prefix || m != n) {
            return Err(parts_error(format!(
                "the files {} are {SHARDS} of different models; pass the shards of one model",
                names(paths)
            )));
        }
        let expected: Vec<PathBuf> = (1..=*n)
            .map(|k| shard_path(&paths[0], prefix, k, *n))
            .collect();
        let idx: Vec<u32> = shards.iter().map(|s| s.1).collect();
        if idx.len() != *n as usize || idx.iter().enumerate().any(|(k, &i)| i != k as u32 + 1) {
            let mut sorted = idx.clone();
            sorted.sort_unstable();
            sorted.dedup();
            let detail = if sorted.len() == idx.len() && sorted != idx {
                "given in the wrong order".to_string()
            } else {
                let missing: Vec<PathBuf> = (1..=*n)
                    .filter(|k| !idx.contains(k))
                    .map(|k| shard_path(&paths[0], prefix, k, *n))
                    .collect();
                format!("missing {}", names(&missing))
            };
            return Err(parts_error(format!(
                "{SHARDS}: {detail}; pass all {n} shards in order ({}), or only the first",
                names(&expected)
            )));
        }
        return Ok(Layout::Shards(paths.to_vec()));
    }
    // Names that follow no split convention are read as byte parts of one file, in order. A
    // later part that is itself a whole GGUF file (it starts with the magic) means two separate
    // models were given: reading them as one would silently ignore the second.
    for p in &paths[1..] {
        let mut magic = [0u8; 4];
        let starts_gguf = std::fs::metadata(p).is_ok_and(|m| m.is_file())
            && std::fs::File::open(p)
                .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
                .is_ok()
            && &magic == b"GGUF";
        if starts_gguf {
            return Err(parts_error(format!(
                "{} and {} are separate GGUF files, not parts of one model; pass one model \
                 (its first part or shard, or all of its parts in order)",
                paths[0].display(),
                p.display()
            )));
        }
    }
    Ok(Layout::Concat(paths.to_vec()))
}
