//! Parsing the GGUF header, metadata and tensor directory from a mapped [`Source`].
//!
//! Every count, length, dimension product, offset and alignment is checked with checked arithmetic
//! against the file's real size before anything is allocated for it.

use std::collections::HashSet;
use std::sync::Arc;

use super::source::Source;
use super::types::{value_type as vt, Array, GgmlType, Value};
use super::{keys, GgufFile, Metadata, TensorInfo};
use crate::error::{Error, Result};

/// "GGUF" read as a little-endian u32.
pub const GGUF_MAGIC: u32 = 0x4655_4747;
/// Default data alignment when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// Largest alignment accepted (ggml uses 32; anything near this is already hostile).
pub const MAX_ALIGNMENT: u64 = 1 << 16;
/// Most dimensions a ggml tensor can have.
pub const MAX_DIMS: u32 = 4;
/// Most elements accepted in one metadata array (real vocabularies have at most a few 100k).
pub const MAX_ARRAY_LEN: u64 = 1 << 24;
/// Deepest nesting of metadata arrays accepted (an array of arrays of scalars).
pub const MAX_ARRAY_DEPTH: u32 = 2;
/// Longest string accepted (chat templates are a few KB; 64 MiB is generous).
pub const MAX_STRING_LEN: u64 = 64 << 20;
/// Longest tensor name accepted.
pub const MAX_NAME_LEN: u64 = 1 << 10;

struct Cursor<'a> {
    src: &'a Source,
    pos: u64,
}

impl<'a> Cursor<'a> {
    fn invalid(&self, detail: impl Into<String>) -> Error {
        Error::InvalidGguf {
            path: self.src.path().to_path_buf(),
            detail: detail.into(),
        }
    }

    fn bytes(&mut self, n: usize, what: &dyn Fn() -> String) -> Result<std::borrow::Cow<'a, [u8]>> {
        let b = self.src.read(self.pos, n, what)?;
        self.pos += n as u64;
        Ok(b)
    }

    fn array<const N: usize>(&mut self, what: &dyn Fn() -> String) -> Result<[u8; N]> {
        let b = self.bytes(N, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(&b);
        Ok(out)
    }

    fn u32(&mut self, what: &dyn Fn() -> String) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &dyn Fn() -> String) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A length-prefixed string. Lengths beyond `max` or beyond the file are rejected before any
    /// allocation.
    fn string(&mut self, max: u64, what: &dyn Fn() -> String) -> Result<String> {
        let len = self.u64(what)?;
        if len > max {
            return Err(self.invalid(format!(
                "{}: string length {len} exceeds the limit of {max} bytes",
                what()
            )));
        }
        let b = self.bytes(len as usize, what)?;
        Ok(String::from_utf8_lossy(&b).into_owned())
    }

    /// Reject a count that no file could hold. A count that merely exceeds what is left of this
    /// file is allowed through: the file was cut short, and reading on reports the truncation at
    /// the exact item (loops end at the end of the file; capacities are capped separately).
    fn plausible_count(&self, count: u64, min_size: u64, what: &str) -> Result<()> {
        let fits_file = count
            .checked_mul(min_size)
            .is_some_and(|b| b <= self.src.len());
        if fits_file || count <= MAX_ARRAY_LEN {
            return Ok(());
        }
        Err(self.invalid(format!(
            "{what} declares {count} entries, which cannot fit in a file of {} bytes",
            self.src.len()
        )))
    }

    fn value(&mut self, t: u32, key: &str, depth: u32) -> Result<Value> {
        let what = || format!("metadata value of `{key}`");
        Ok(match t {
            vt::UINT8 => Value::U8(self.array::<1>(&what)?[0]),
            vt::INT8 => Value::I8(self.array::<1>(&what)?[0] as i8),
            vt::UINT16 => Value::U16(u16::from_le_bytes(self.array(&what)?)),
            vt::INT16 => Value::I16(i16::from_le_bytes(self.array(&what)?)),
            vt::UINT32 => Value::U32(u32::from_le_bytes(self.array(&what)?)),
            vt::INT32 => Value::I32(i32::from_le_bytes(self.array(&what)?)),
            vt::FLOAT32 => Value::F32(f32::from_le_bytes(self.array(&what)?)),
            vt::UINT64 => Value::U64(u64::from_le_bytes(self.array(&what)?)),
            vt::INT64 => Value::I64(i64::from_le_bytes(self.array(&what)?)),
            vt::FLOAT64 => Value::F64(f64::from_le_bytes(self.array(&what)?)),
            vt::BOOL => Value::Bool(self.bool(key)?),
            vt::STRING => Value::String(self.string(MAX_STRING_LEN, &what)?),
            vt::ARRAY => Value::Array(self.array_value(key, depth + 1)?),
            other => {
                return Err(self.invalid(format!(
                    "metadata key `{key}` has unknown value type id {other}"
                )))
            }
        })
    }

    fn bool(&mut self, key: &str) -> Result<bool> {
        let b = self.array::<1>(&|| format!("metadata value of `{key}`"))?[0];
        match b {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(self.invalid(format!(
                "metadata key `{key}`: bool byte must be 0 or 1, found {other}"
            ))),
        }
    }

    fn array_value(&mut self, key: &str, depth: u32) -> Result<Array> {
        if depth > MAX_ARRAY_DEPTH {
            return Err(self.invalid(format!(
                "metadata key `{key}`: arrays nested deeper than {MAX_ARRAY_DEPTH} levels are not supported"
            )));
        }
        let what = || format!("array header of `{key}`");
        let t = self.u32(&what)?;
        let n = self.u64(&what)?;
        if n > MAX_ARRAY_LEN {
            return Err(self.invalid(format!(
                "metadata key `{key}`: array of {n} elements exceeds the limit of {MAX_ARRAY_LEN}"
            )));
        }
        self.plausible_count(n, vt::min_size(t), &format!("metadata array `{key}`"))?;
        let n = n as usize;
        let ewhat = || format!("array `{key}`");
        macro_rules! prim {
            ($variant:ident, $ty:ty) => {{
                const SZ: usize = std::mem::size_of::<$ty>();
                let raw = self.bytes(n * SZ, &ewhat)?;
                Array::$variant(
                    raw.chunks_exact(SZ)
                        .map(|c| <$ty>::from_le_bytes(c.try_into().expect("chunk of SZ bytes")))
                        .collect(),
                )
            }};
        }
        Ok(match t {
            vt::UINT8 => prim!(U8, u8),
            vt::INT8 => prim!(I8, i8),
            vt::UINT16 => prim!(U16, u16),
            vt::INT16 => prim!(I16, i16),
            vt::UINT32 => prim!(U32, u32),
            vt::INT32 => prim!(I32, i32),
            vt::FLOAT32 => prim!(F32, f32),
            vt::UINT64 => prim!(U64, u64),
            vt::INT64 => prim!(I64, i64),
            vt::FLOAT64 => prim!(F64, f64),
            vt::BOOL => {
                let mut v = Vec::with_capacity(n.min(1 << 16));
                for _ in 0..n {
                    v.push(self.bool(key)?);
                }
                Array::Bool(v)
            }
            vt::STRING => {
                let mut v = Vec::with_capacity(n.min(1 << 16));
                for _ in 0..n {
                    v.push(self.string(MAX_STRING_LEN, &ewhat)?);
                }
                Array::String(v)
            }
            vt::ARRAY => {
                let mut v = Vec::with_capacity(n.min(1 << 16));
                for _ in 0..n {
                    v.push(self.array_value(key, depth + 1)?);
                }
                Array::Array(v)
            }
            other => {
                return Err(self.invalid(format!(
                    "metadata array `{key}` has unknown element type id {other}"
                )))
            }
        })
    }
}

/// Parse and validate a GGUF file from its mapped bytes.
pub fn parse(src: Arc<Source>) -> Result<GgufFile> {
    let path = src.path().to_path_buf();
    let mut c = Cursor { src: &src, pos: 0 };
    if src.len() < 4 {
        return Err(Error::NotGguf {
            path,
            detail: format!("the file has only {} bytes", src.len()),
        });
    }
    let magic = c.u32(&|| "magic".into())?;
    if magic != GGUF_MAGIC {
        let head = src.read(0, src.len().min(16) as usize, &|| "magic".into())?;
        return Err(Error::NotGguf {
            path,
            detail: describe_magic(&head),
        });
    }
    let version = c.u32(&|| "header (version)".into())?;
    match version {
        2 | 3 => {}
        1 => {
            return Err(Error::Unsupported(format!(
                "{}: GGUF version 1 is obsolete; re-convert the model with a current llama.cpp",
                path.display()
            )))
        }
        v if v.swap_bytes() == 2 || v.swap_bytes() == 3 => {
            return Err(Error::Unsupported(format!(
                "{}: big-endian GGUF files are not supported; use the little-endian file",
                path.display()
            )))
        }
        v => {
            return Err(Error::Unsupported(format!(
                "{}: GGUF version {v} is not supported (this build reads versions 2 and 3)",
                path.display()
            )))
        }
    }
    let n_tensors = c.u64(&|| "header (tensor count)".into())?;
    let n_kv = c.u64(&|| "header (metadata count)".into())?;
    // A key-value pair needs at least 8 (key length) + 1 (key) + 4 (type) + 1 (value) bytes; a
    // tensor entry at least 8 + 1 + 4 + 8 + 4 + 8.
    c.plausible_count(n_kv, 14, "the header's metadata count")?;
    c.plausible_count(n_tensors, 33, "the header's tensor count")?;

    let mut metadata = Metadata::default();
    for i in 0..n_kv {
        let key = c.string(MAX_STRING_LEN, &|| format!("metadata key #{i}"))?;
        let t = c.u32(&|| format!("type of metadata key `{key}`"))?;
        let value = c.value(t, &key, 0)?;
        if metadata.get(&key).is_some() {
            return Err(c.invalid(format!("metadata key `{key}` appears twice")));
        }
        metadata.insert(key, value);
    }

    let alignment = match metadata.get(keys::GENERAL_ALIGNMENT) {
        None => DEFAULT_ALIGNMENT,
        Some(Value::U32(a)) => u64::from(*a),
        Some(v) => {
            return Err(Error::BadKey {
                key: keys::GENERAL_ALIGNMENT.into(),
                expected: "uint32".into(),
                found: v.type_name(),
            })
        }
    };
    if alignment == 0 || !alignment.is_power_of_two() || alignment > MAX_ALIGNMENT {
        return Err(c.invalid(format!(
            "`{}` is {alignment}; it must be a power of two between 1 and {MAX_ALIGNMENT}",
            keys::GENERAL_ALIGNMENT
        )));
    }

    let mut tensors = Vec::with_capacity(n_tensors.min(1 << 16) as usize);
    let mut names = HashSet::new();
    for i in 0..n_tensors {
        let name = c.string(MAX_NAME_LEN, &|| format!("name of tensor #{i}"))?;
        let what = || format!("directory entry of tensor `{name}`");
        let n_dims = c.u32(&what)?;
        if n_dims == 0 || n_dims > MAX_DIMS {
            return Err(c.invalid(format!(
                "tensor `{name}` has {n_dims} dimensions; ggml tensors have 1 to {MAX_DIMS}"
            )));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            dims.push(c.u64(&what)?);
        }
        let type_id = c.u32(&what)?;
        let offset = c.u64(&what)?;
        let dtype = GgmlType::from_id(type_id).ok_or_else(|| {
            c.invalid(format!(
                "tensor `{name}` has unknown ggml type id {type_id}"
            ))
        })?;
        let n_elements = dims
            .iter()
            .try_fold(1u64, |acc, &d| {
                if d == 0 {
                    None
                } else {
                    acc.checked_mul(d)
                }
            })
            .filter(|&n| n <= i64::MAX as u64)
            .ok_or_else(|| {
                c.invalid(format!(
                    "tensor `{name}` has dimensions {dims:?}: a dimension is 0 or their product overflows"
                ))
            })?;
        let (block, type_size) = dtype.block_layout();
        if dims[0] % block as u64 != 0 {
            return Err(c.invalid(format!(
                "tensor `{name}` ({dtype}): row length {} is not a multiple of the block size {block}",
                dims[0]
            )));
        }
        let n_bytes = (n_elements / block as u64)
            .checked_mul(type_size as u64)
            .ok_or_else(|| c.invalid(format!("tensor `{name}`: byte size overflows")))?;
        if offset % alignment != 0 {
            return Err(c.invalid(format!(
                "tensor `{name}`: data offset {offset} is not a multiple of the alignment {alignment}"
            )));
        }
        if !names.insert(name.clone()) {
            return Err(c.invalid(format!("tensor name `{name}` appears twice")));
        }
        tensors.push(TensorInfo {
            name,
            dims,
            dtype,
            offset,
            n_bytes,
            n_elements,
            part: 0,
        });
    }

    let data_offset = c.pos.div_ceil(alignment) * alignment;
    // Absolute offsets, then: inside the file, and no two tensors overlapping.
    for t in &mut tensors {
        t.offset = data_offset
            .checked_add(t.offset)
            .ok_or_else(|| c.invalid(format!("tensor `{}`: data offset overflows", t.name)))?;
    }
    let mut order: Vec<usize> = (0..tensors.len()).collect();
    order.sort_by_key(|&i| tensors[i].offset);
    let mut prev_end = data_offset;
    let mut prev_name: Option<&str> = None;
    for &i in &order {
        let t = &tensors[i];
        let end = t
            .offset
            .checked_add(t.n_bytes)
            .ok_or_else(|| c.invalid(format!("tensor `{}`: data end overflows", t.name)))?;
        if t.offset < prev_end {
            return Err(c.invalid(format!(
                "tensor `{}` (bytes {}..{end}) overlaps tensor `{}`",
                t.name,
                t.offset,
                prev_name.unwrap_or("?")
            )));
        }
        if end > src.len() {
            return Err(Error::Truncated {
                path: src.path().to_path_buf(),
                what: format!("tensor `{}` ({} bytes of {})", t.name, t.n_bytes, t.dtype),
                needed: end,
                len: src.len(),
            });
        }
        prev_end = end;
        prev_name = Some(&t.name);
    }

    Ok(GgufFile {
        version,
        metadata,
        tensors,
        alignment,
        data_offset,
        sources: vec![Arc::clone(&src)],
        source: src,
    })
}

/// Recognise common non-GGUF files so the message can say what the file is.
fn describe_magic(head: &[u8]) -> String {
    if head.len() >= 9 && head[8] == b'{' {
        return "it looks like a safetensors file; convert it to GGUF with llama.cpp's convert_hf_to_gguf.py".into();
    }
    if head.starts_with(b"PK") {
        return "it looks like a zip archive (a PyTorch checkpoint?); convert it to GGUF first"
            .into();
    }
    if head.starts_with(b"ggjt") || head.starts_with(b"tjgg") || head.starts_with(b"lmgg") {
        return "it is an old GGML/GGJT file; convert it to GGUF with llama.cpp".into();
    }
    if head.starts_with(b"<") || head.starts_with(b"version https://git-lfs") {
        return "it is a text file (an HTML error page or a Git LFS pointer?), not model weights"
            .into();
    }
    format!(
        "bad magic bytes {:02x?}, expected \"GGUF\"",
        &head[..head.len().min(4)]
    )
}
