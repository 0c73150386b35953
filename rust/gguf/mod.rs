//! GGUF files over memory maps: the logical byte source, the validated header/metadata/tensor
//! directory, and the typed model config.

pub mod config;
pub mod keys;
pub mod parts;
mod reader;
pub mod source;
pub mod types;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

pub use config::LlamaConfig;
pub use parts::Layout;
pub use reader::{DEFAULT_ALIGNMENT, GGUF_MAGIC, MAX_ALIGNMENT, MAX_ARRAY_LEN, MAX_DIMS};
pub use source::{Bytes, Source};
pub use types::{Array, GgmlType, Value};

use crate::error::{Error, Result};

/// Metadata key-value pairs in file order.
#[derive(Debug, Default, Clone)]
pub struct Metadata {
    entries: Vec<(String, Value)>,
    index: HashMap<String, usize>,
}

impl Metadata {
    fn insert(&mut self, key: String, value: Value) {
        self.index.insert(key.clone(), self.entries.len());
        self.entries.push((key, value));
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.index.get(key).map(|&i| &self.entries[i].1)
    }

    /// All entries in file order.
    pub fn entries(&self) -> &[(String, Value)] {
        &self.entries
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when there are no keys.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// A string value; `None` if absent, an error naming the key if of another type.
    pub fn get_str(&self, key: &str) -> Result<Option<&str>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(bad_key(key, "string", v)),
        }
    }

    /// A non-negative integer of any width that fits `u64`.
    pub fn get_u64(&self, key: &str) -> Result<Option<u64>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => match v.as_i128() {
                Some(n) if (0..=u64::MAX as i128).contains(&n) => Ok(Some(n as u64)),
                Some(n) => Err(Error::BadKey {
                    key: key.into(),
                    expected: "a non-negative integer".into(),
                    found: n.to_string(),
                }),
                None => Err(bad_key(key, "an integer", v)),
            },
        }
    }

    /// A float (f32/f64, or an integer).
    pub fn get_f64(&self, key: &str) -> Result<Option<f64>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| bad_key(key, "a number", v)),
        }
    }

    /// A bool.
    pub fn get_bool(&self, key: &str) -> Result<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(bad_key(key, "bool", v)),
        }
    }

    /// An array.
    pub fn get_array(&self, key: &str) -> Result<Option<&Array>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(a)) => Ok(Some(a)),
            Some(v) => Err(bad_key(key, "array", v)),
        }
    }
}

impl FromIterator<(String, Value)> for Metadata {
    /// Metadata built in memory (a later duplicate key replaces the earlier value).
    fn from_iter<I: IntoIterator<Item = (String, Value)>>(iter: I) -> Self {
        let mut md = Metadata::default();
        for (k, v) in iter {
            match md.index.get(&k) {
                Some(&i) => md.entries[i].1 = v,
                None => md.insert(k, v),
            }
        }
        md
    }
}

fn bad_key(key: &str, expected: &str, found: &Value) -> Error {
    Error::BadKey {
        key: key.into(),
        expected: expected.into(),
        found: found.type_name(),
    }
}

/// One entry of the tensor directory, validated: dimensions in ggml order (`dims[0]` is the row
/// length), absolute offset in the logical file, byte size inside the file.
#[derive(Debug, Clone)]
pub struct TensorInfo {
    pub name: String,
    pub dims: Vec<u64>,
    pub dtype: GgmlType,
    pub offset: u64,
    pub n_bytes: u64,
    pub n_elements: u64,
    /// Which file of [`GgufFile::sources`] holds the data (0 unless the model is gguf-split shards).
    pub part: usize,
}

/// A parsed, validated GGUF file (possibly made of byte-split parts).
pub struct GgufFile {
    pub version: u32,
    pub metadata: Metadata,
    pub tensors: Vec<TensorInfo>,
    pub alignment: u64,
    pub data_offset: u64,
    /// The (first) file: metadata and, for one file, every tensor.
    pub source: Arc<Source>,
    /// Every GGUF file of the model: one, or each gguf-split shard (indexed by
    /// [`TensorInfo::part`]).
    pub sources: Vec<Arc<Source>>,
}

impl GgufFile {
    /// Map and parse a model: one file, byte-split parts read as one, or gguf-split shards (see
    /// [`parts`] for how the path list is resolved).
    pub fn open(paths: &[PathBuf]) -> Result<Self> {
        match parts::resolve(paths)? {
            Layout::Single(p) => Self::open_concat(&[p]),
            Layout::Concat(v) => Self::open_concat(&v),
            Layout::Shards(v) => Self::open_shards(&v),
        }
    }

    /// Parse a GGUF file held in memory (see [`Source::from_bytes`]); `name` is used in messages.
    pub fn from_bytes(name: &str, bytes: &[u8]) -> Result<Self> {
        reader::parse(Arc::new(Source::from_bytes(name, bytes)?))
    }

    fn split_keys(&self) -> Result<(Option<u64>, Option<u64>)> {
        Ok((
            self.metadata.get_u64(keys::SPLIT_NO)?,
            self.metadata.get_u64(keys::SPLIT_COUNT)?,
        ))
    }

    fn open_concat(paths: &[PathBuf]) -> Result<Self> {
        let file = reader::parse(Arc::new(Source::open(paths)?))?;
        if let (no, Some(n)) = file.split_keys()? {
            if n > 1 {
                return Err(Error::Parts(format!(
                    "{} is shard {} of {n} of a gguf-split model (metadata `split.no`, `split.count`), but the file names do not follow NAME-00001-of-0000N.gguf; give the shards their original names and pass the first one",
                    file.source.path().display(),
                    no.unwrap_or(0).saturating_add(1)
                )));
            }
        }
        Ok(file)
    }

    fn open_shards(paths: &[PathBuf]) -> Result<Self> {
        let n = paths.len();
        let mut first: Option<GgufFile> = None;
        let mut names: HashMap<String, usize> = HashMap::new();
        for (k, path) in paths.iter().enumerate() {
            let mut shard = reader::parse(Arc::new(Source::open(std::slice::from_ref(path))?))?;
            let (no, count) = shard.split_keys()?;
            if no != Some(k as u64) || count != Some(n as u64) {
                return Err(Error::Parts(format!(
                    "{}: by its name shard {} of {n}, but its metadata says {} of {}; the shards are from different splits or were renamed: download them again",
                    path.display(),
                    k + 1,
                    no.map_or("no shard number".into(), |i| i.saturating_add(1).to_string()),
                    count.map_or("no count".into(), |c| c.to_string()),
                )));
            }
            for t in &mut shard.tensors {
                t.part = k;
                if let Some(j) = names.insert(t.name.clone(), k) {
                    return Err(Error::Parts(format!(
                        "tensor `{}` is in shard {} and in shard {}; the shards are from different splits: download them again",
                        t.name,
                        j + 1,
                        k + 1
                    )));
                }
            }
            match &mut first {
                None => first = Some(shard),
                Some(f) => {
                    f.tensors.append(&mut shard.tensors);
                    f.sources.push(Arc::clone(&shard.source));
                }
            }
        }
        let file = first.expect("at least two shards");
        if let Some(total) = file.metadata.get_u64(keys::SPLIT_TENSORS_COUNT)? {
            if total != file.tensors.len() as u64 {
                return Err(Error::Parts(format!(
                    "{}: the shards hold {} tensors but `split.tensors.count` says {total}; download the shards again",
                    file.source.path().display(),
                    file.tensors.len()
                )));
            }
        }
        Ok(file)
    }

    /// The directory entry of `name`.
    pub fn tensor_info(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The bytes of a tensor: a view into the mapping when possible.
    pub fn tensor_bytes(&self, info: &TensorInfo) -> Result<Bytes> {
        let len = usize::try_from(info.n_bytes)
            .map_err(|_| Error::tensor(&info.name, "too large for this platform"))?;
        // Block structs hold f16/f32 fields; 4-byte alignment covers every type we compute with.
        Bytes::from_source(&self.sources[info.part], info.offset, len, 4, &|| {
            format!("tensor `{}`", info.name)
        })
    }

    /// `general.architecture`.
    pub fn architecture(&self) -> Result<&str> {
        self.metadata
            .get_str(keys::GENERAL_ARCHITECTURE)?
            .ok_or_else(|| Error::MissingKey {
                key: keys::GENERAL_ARCHITECTURE.into(),
                hint: "every GGUF model file declares its architecture; the file may be damaged"
                    .into(),
            })
    }
}

#[cfg(test)]
pub(crate) mod tests;
