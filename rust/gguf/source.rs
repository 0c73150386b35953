//! A logical file made of one or more memory-mapped parts.
//!
//! One GGUF file is one part. Byte-split files (`*.gguf-split-a`, `*.gguf-split-b`, as published for
//! the Q6_K and Q8_0 Med42 quants) are several parts read as their concatenation, without joining
//! them on disk. Reads inside one part borrow the mapping; the rare read that straddles a part
//! boundary is copied.

use std::borrow::Cow;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;

use crate::error::{Error, Result};

/// One mapped part and its place in the logical file.
struct Part {
    path: PathBuf,
    /// `None` for an empty file (mapping zero bytes is an error on some systems).
    map: Option<Mmap>,
    /// Logical offset of the first byte of this part.
    start: u64,
    len: u64,
}

/// A read-only logical byte range over mapped parts.
pub struct Source {
    parts: Vec<Part>,
    len: u64,
}

impl Source {
    /// Map `paths` in order as one logical file.
    pub fn open(paths: &[PathBuf]) -> Result<Self> {
        if paths.is_empty() {
            return Err(Error::arg("path", "no model file given"));
        }
        let mut parts = Vec::with_capacity(paths.len());
        let mut start = 0u64;
        for path in paths {
            let io = |source| Error::Io {
                path: path.clone(),
                source,
            };
            // Checked before opening: opening a FIFO blocks until a writer appears, and a
            // device or socket is never a model file.
            let meta = std::fs::metadata(path).map_err(io)?;
            if meta.is_dir() {
                return Err(Error::arg(
                    "path",
                    format!("{} is a directory, not a GGUF file", path.display()),
                ));
            }
            if !meta.is_file() {
                return Err(Error::arg(
                    "path",
                    format!(
                        "{} is not a regular file (a pipe, socket or device); pass a GGUF file on disk",
                        path.display()
                    ),
                ));
            }
            let file = File::open(path).map_err(io)?;
            let meta = file.metadata().map_err(io)?;
            let len = meta.len();
            let map = if len == 0 {
                None
            } else {
                // SAFETY: the mapping is read-only and private to this process. Another process
                // truncating the file while it is mapped makes later reads fault (SIGBUS); that is
                // documented in docs/ERRORS.md and tested in a child process. Renaming or deleting the
                // file is harmless: the mapping keeps the inode alive.
                Some(unsafe { Mmap::map(&file) }.map_err(io)?)
            };
            #[cfg(unix)]
            if let Some(m) = &map {
                // Tensor rows are streamed front to back; tell the kernel so read-ahead is large.
                let _ = m.advise(memmap2::Advice::Sequential);
                // Ask for 2 MiB pages: where the file system caches files in large folios (ext4
                // and XFS on recent kernels) and THP is not "never", pages faulted in here come
                // in PMD-sized folios mapped by one entry each. Decode reads every weight once
                // per token, and on a 2-core Xeon (Sapphire Rapids class) that took the slice's
                // Q4_K_M decode from 15.5 to 19.6 tok/s (docs/PERFORMANCE.md, "Page size and
                // prefetch").
                // Pages already cached in 4 KiB folios by another reader stay as they are.
                #[cfg(target_os = "linux")]
                let _ = m.advise(memmap2::Advice::HugePage);
            }
            parts.push(Part {
                path: path.clone(),
                map,
                start,
                len,
            });
            start = start
                .checked_add(len)
                .ok_or_else(|| Error::arg("path", "total size of the parts overflows"))?;
        }
        Ok(Source { parts, len: start })
    }

    /// An in-memory file (fuzzing, tests, bytes received over a network): the bytes are copied
    /// into an anonymous read-only mapping, so every read path is the same as for a file.
    pub fn from_bytes(name: &str, bytes: &[u8]) -> Result<Self> {
        let path = PathBuf::from(name);
        let map = if bytes.is_empty() {
            None
        } else {
            let io = |source| Error::Io {
                path: path.clone(),
                source,
            };
            let mut m = memmap2::MmapMut::map_anon(bytes.len()).map_err(io)?;
            m.copy_from_slice(bytes);
            Some(m.make_read_only().map_err(io)?)
        };
        let len = bytes.len() as u64;
        Ok(Source {
            parts: vec![Part {
                path,
                map,
                start: 0,
                len,
            }],
            len,
        })
    }

    /// Total logical length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True when the logical file has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The path of the first part (used in messages).
    pub fn path(&self) -> &Path {
        &self.parts[0].path
    }

    /// Paths of all parts, in order.
    pub fn paths(&self) -> Vec<PathBuf> {
        self.parts.iter().map(|p| p.path.clone()).collect()
    }

    /// Number of parts.
    pub fn n_parts(&self) -> usize {
        self.parts.len()
    }

    /// Logical offsets where each part after the first begins.
    pub fn boundaries(&self) -> Vec<u64> {
        self.parts.iter().skip(1).map(|p| p.start).collect()
    }

    fn part_index(&self, off: u64) -> usize {
        // parts are sorted by start; the last part whose start <= off
        self.parts
            .partition_point(|p| p.start <= off)
            .saturating_sub(1)
    }

    /// Read `len` bytes at logical offset `off`. `what` names the item for the truncation message.
    pub fn read(&self, off: u64, len: usize, what: &dyn Fn() -> String) -> Result<Cow<'_, [u8]>> {
        let end = off
            .checked_add(len as u64)
            .filter(|&e| e <= self.len)
            .ok_or_else(|| Error::Truncated {
                path: self.path().to_path_buf(),
                what: what(),
                needed: off.saturating_add(len as u64),
                len: self.len,
            })?;
        if len == 0 {
            return Ok(Cow::Borrowed(&[]));
        }
        let i = self.part_index(off);
        let p = &self.parts[i];
        let local = (off - p.start) as usize;
        if end <= p.start + p.len {
            let map = p
                .map
                .as_ref()
                .expect("non-empty range lies in a non-empty part");
            return Ok(Cow::Borrowed(&map[local..local + len]));
        }
        // Straddles one or more part boundaries: copy the pieces.
        let mut out = Vec::with_capacity(len);
        let mut pos = off;
        for p in &self.parts[i..] {
            if pos >= end {
                break;
            }
            let p_end = p.start + p.len;
            if p_end <= pos {
                continue;
            }
            let take_end = end.min(p_end);
            if let Some(map) = &p.map {
                out.extend_from_slice(
                    &map[(pos - p.start) as usize..(take_end - p.start) as usize],
                );
            }
            pos = take_end;
        }
        debug_assert_eq!(out.len(), len);
        Ok(Cow::Owned(out))
    }
}

/// Bytes of one tensor: a view into a mapping, or an owned copy when the tensor straddles parts
/// or is not suitably aligned in its part. Keeps the mapping alive.
#[derive(Clone)]
pub struct Bytes {
    inner: BytesInner,
}

#[derive(Clone)]
enum BytesInner {
    Mapped {
        /// Keeps the mapping alive for as long as `ptr` is used.
        _source: Arc<Source>,
        ptr: *const u8,
        len: usize,
    },
    // u64 storage guarantees 8-byte alignment of the copy.
    Owned {
        buf: Arc<Vec<u64>>,
        len: usize,
    },
}

// SAFETY: the pointer refers to a read-only mapping owned by the `Arc<Source>` held beside it, so
// it stays valid and immutable for as long as the `Bytes` exists, from any thread.
unsafe impl Send for BytesInner {}
// SAFETY: as above; the memory is never written through this type.
unsafe impl Sync for BytesInner {}

impl Bytes {
    /// The bytes `[off, off+len)` of `source`, zero-copy when they lie in one part at an address
    /// aligned to `align`.
    pub fn from_source(
        source: &Arc<Source>,
        off: u64,
        len: usize,
        align: usize,
        what: &dyn Fn() -> String,
    ) -> Result<Self> {
        let cow = source.read(off, len, what)?;
        match cow {
            Cow::Borrowed(s) if (s.as_ptr() as usize).is_multiple_of(align.max(1)) => Ok(Bytes {
                inner: BytesInner::Mapped {
                    _source: Arc::clone(source),
                    ptr: s.as_ptr(),
                    len: s.len(),
                },
            }),
            other => Ok(Self::owned(&other)),
        }
    }

    /// An owned, 8-byte aligned copy of `data`.
    pub fn owned(data: &[u8]) -> Self {
        let mut buf = vec![0u64; data.len().div_ceil(8)];
        // SAFETY: `buf` holds at least `data.len()` bytes; u8 has no alignment requirement.
        let dst =
            unsafe { std::slice::from_raw_parts_mut(buf.as_mut_ptr() as *mut u8, data.len()) };
        dst.copy_from_slice(data);
        Bytes {
            inner: BytesInner::Owned {
                buf: Arc::new(buf),
                len: data.len(),
            },
        }
    }

    /// True when these bytes live in the file mapping (not copied).
    pub fn is_mapped(&self) -> bool {
        matches!(self.inner, BytesInner::Mapped { .. })
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        match &self.inner {
            // SAFETY: see the `Send`/`Sync` argument: valid for `len` bytes while `source` lives.
            BytesInner::Mapped { ptr, len, .. } => unsafe {
                std::slice::from_raw_parts(*ptr, *len)
            },
            // SAFETY: `buf` has at least `len` initialised bytes.
            BytesInner::Owned { buf, len } => unsafe {
                std::slice::from_raw_parts(buf.as_ptr() as *const u8, *len)
            },
        }
    }

    /// Number of bytes.
    pub fn len(&self) -> usize {
        match &self.inner {
            BytesInner::Mapped { len, .. } | BytesInner::Owned { len, .. } => *len,
        }
    }

    /// True when there are no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
