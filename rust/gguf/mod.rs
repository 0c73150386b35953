//! GGUF files over memory maps: the logical byte source, the validated header/metadata/tensor
//! directory, and the typed model config.

pub mod config;
pub mod keys;
mod reader;
pub mod source;
pub mod types;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

pub use config::LlamaConfig;
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
}

/// A parsed, validated GGUF file (possibly made of byte-split parts).
pub struct GgufFile {
    pub version: u32,
    pub metadata: Metadata,
    pub tensors: Vec<TensorInfo>,
    pub alignment: u64,
    pub data_offset: u64,
    pub source: Arc<Source>,
}

impl GgufFile {
    /// Map and parse one file, or several byte-split parts read as one.
    pub fn open(paths: &[PathBuf]) -> Result<Self> {
        let source = Arc::new(Source::open(paths)?);
        reader::parse(source)
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
        Bytes::from_source(&self.source, info.offset, len, 4, &|| {
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
