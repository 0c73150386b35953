//! `NativeTokenizer` and `NativeStreamDecoder`: the engine's tokenizer, immutable and shared.

use std::path::PathBuf;
use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::PyBytes;

use super::args;
use super::errors::{detached, to_py};
use crate::gguf::GgufFile;
use crate::tokenizer::{attr, StreamDecoder, Tokenizer, TokenizerKind};

/// A tokenizer built from GGUF metadata; immutable and shared across threads.
#[pyclass(frozen, module = "med42_rs._native")]
pub(crate) struct NativeTokenizer {
    pub(crate) tok: Arc<Tokenizer>,
}

#[pymethods]
impl NativeTokenizer {
    /// Read only the metadata of a GGUF file (vocabulary-only files work) and build its tokenizer.
    #[staticmethod]
    fn from_file(py: Python<'_>, paths: &Bound<'_, PyAny>) -> PyResult<Self> {
        let paths: Vec<PathBuf> = args::paths(paths)?;
        let tok = detached(py, move || {
            let file = GgufFile::open(&paths)?;
            Tokenizer::from_metadata(&file.metadata)
        })?;
        Ok(NativeTokenizer { tok: Arc::new(tok) })
    }

    /// Text to ids (`add_special`: BOS/EOS as the vocabulary asks; `parse_special`: control-token
    /// text becomes control tokens).
    fn encode(
        &self,
        py: Python<'_>,
        text: &str,
        add_special: bool,
        parse_special: bool,
    ) -> PyResult<Vec<u32>> {
        let tok = Arc::clone(&self.tok);
        let text = text.to_owned();
        detached(py, move || {
            Ok(tok.encode(&text, add_special, parse_special))
        })
    }

    /// Encode `(text, parse_special)` parts as one text (see `Tokenizer::encode_parts`).
    fn encode_parts(
        &self,
        py: Python<'_>,
        parts: Vec<(String, bool)>,
        add_special: bool,
    ) -> PyResult<Vec<u32>> {
        let tok = Arc::clone(&self.tok);
        detached(py, move || {
            let refs: Vec<(&str, bool)> = parts.iter().map(|(s, b)| (s.as_str(), *b)).collect();
            Ok(tok.encode_parts(&refs, add_special))
        })
    }

    /// Ids to text as llama.cpp's `llama_detokenize(ids, remove_special=False, unparse_special=special)`.
    fn decode(&self, py: Python<'_>, ids: &Bound<'_, PyAny>, special: bool) -> PyResult<String> {
        let ids = args::ids(ids, "ids")?;
        let tok = Arc::clone(&self.tok);
        detached(py, move || tok.decode(&ids, special))
    }

    /// Raw bytes of `llama_detokenize(ids, remove_special, unparse_special)`.
    fn detokenize<'py>(
        &self,
        py: Python<'py>,
        ids: &Bound<'py, PyAny>,
        remove_special: bool,
        unparse_special: bool,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let ids = args::ids(ids, "ids")?;
        let tok = Arc::clone(&self.tok);
        let b = detached(py, move || {
            tok.detokenize(&ids, remove_special, unparse_special)
        })?;
        Ok(PyBytes::new(py, &b))
    }

    /// The bytes of one token.
    fn token_to_piece<'py>(
        &self,
        py: Python<'py>,
        id: &Bound<'py, PyAny>,
        special: bool,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let id = args::id(id, "token_id")?;
        let b = self
            .tok
            .token_to_piece(id, special, 0)
            .map_err(|e| to_py(py, e))?;
        Ok(PyBytes::new(py, b))
    }

    /// The vocabulary text of one token.
    fn token_text(&self, py: Python<'_>, id: &Bound<'_, PyAny>) -> PyResult<String> {
        let id = args::id(id, "token_id")?;
        self.tok
            .token_text(id)
            .map(str::to_owned)
            .map_err(|e| to_py(py, e))
    }

    /// The type of one token.
    fn token_type(&self, py: Python<'_>, id: &Bound<'_, PyAny>) -> PyResult<&'static str> {
        let id = args::id(id, "token_id")?;
        let a = self.tok.token_attr(id).map_err(|e| to_py(py, e))?;
        Ok(if a & attr::CONTROL != 0 {
            "control"
        } else if a & attr::USER_DEFINED != 0 {
            "user_defined"
        } else if a & attr::UNKNOWN != 0 {
            "unknown"
        } else if a & attr::BYTE != 0 {
            "byte"
        } else if a & attr::NORMAL != 0 {
            "normal"
        } else if a & attr::UNUSED != 0 {
            "unused"
        } else {
            "undefined"
        })
    }

    /// The id of a token text, or None.
    fn token_id(&self, text: &str) -> Option<u32> {
        self.tok.token_id(text)
    }

    /// A fresh stream decoder.
    fn stream(&self, special: bool) -> NativeStreamDecoder {
        NativeStreamDecoder {
            tok: Arc::clone(&self.tok),
            dec: std::sync::Mutex::new(self.tok.stream(special)),
        }
    }

    #[getter]
    fn vocab_size(&self) -> usize {
        self.tok.vocab_size()
    }
    #[getter]
    fn kind(&self) -> &'static str {
        match self.tok.kind() {
            TokenizerKind::Spm => "llama",
            TokenizerKind::Bpe => "gpt2",
        }
    }
    #[getter]
    fn pre(&self) -> Option<&'static str> {
        match self.tok.kind() {
            TokenizerKind::Spm => None,
            TokenizerKind::Bpe => Some(self.tok.pre_tokenizer().name()),
        }
    }
    #[getter]
    fn bos_id(&self) -> Option<u32> {
        self.tok.bos()
    }
    #[getter]
    fn eos_id(&self) -> Option<u32> {
        self.tok.eos()
    }
    #[getter]
    fn eot_id(&self) -> Option<u32> {
        self.tok.eot()
    }
    #[getter]
    fn unk_id(&self) -> Option<u32> {
        self.tok.unk()
    }
    #[getter]
    fn pad_id(&self) -> Option<u32> {
        self.tok.pad()
    }
    #[getter]
    fn eog_ids(&self) -> Vec<u32> {
        self.tok.eog().to_vec()
    }
    #[getter]
    fn add_bos(&self) -> bool {
        self.tok.add_bos()
    }
    #[getter]
    fn add_eos(&self) -> bool {
        self.tok.add_eos()
    }
    #[getter]
    fn add_space_prefix(&self) -> bool {
        self.tok.add_space_prefix()
    }
}

/// Incremental decoder: ids in, whole-character text chunks out.
#[pyclass(frozen, module = "med42_rs._native")]
pub(crate) struct NativeStreamDecoder {
    tok: Arc<Tokenizer>,
    dec: std::sync::Mutex<StreamDecoder>,
}

#[pymethods]
impl NativeStreamDecoder {
    /// Add one id; the text that became final.
    fn push(&self, py: Python<'_>, id: &Bound<'_, PyAny>) -> PyResult<String> {
        let id = args::id(id, "token_id")?;
        let mut d = self.dec.lock().unwrap_or_else(|p| p.into_inner());
        d.push(&self.tok, id).map_err(|e| to_py(py, e))
    }

    /// End of stream: the rest.
    fn finish(&self) -> String {
        let mut d = self.dec.lock().unwrap_or_else(|p| p.into_inner());
        d.finish(&self.tok)
    }
}
