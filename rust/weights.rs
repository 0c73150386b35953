//! Quantized weight matrices used where they lie in the file mapping.
//!
//! On CPU a [`QWeight`] is a typed view of the mapped bytes: matmuls run the crate's own kernels
//! ([`crate::kernels`], chosen once per weight at load) directly on the mapped blocks, through a
//! candle `CustomOp1`, and embedding rows are dequantized one by one. Nothing is copied into
//! anonymous memory. On CUDA/Metal the mapped bytes are uploaded once into a candle `QMatMul`.

use std::borrow::Cow;
use std::sync::Arc;

use candle_core::backend::BackendStorage;
use candle_core::quantized::{QMatMul, QStorage, QTensor};
use candle_core::{CpuStorage, DType, Device, Layout, Module, Shape, Tensor};
use half::{bf16, f16};

use crate::error::{Error, Result};
use crate::gguf::{Bytes, GgmlType, GgufFile, TensorInfo};
use crate::kernels::{self, candle_dtype, ActKind, Kernels, QActs, WeightView};

/// A 2-D weight `[n_out, n_in]` (ggml dims `[n_in, n_out]`), rows of `n_in` elements.
pub struct QWeight {
    pub name: String,
    pub dtype: GgmlType,
    pub n_out: usize,
    pub n_in: usize,
    bytes: Bytes,
    /// The CPU kernels for `dtype`, chosen once here.
    kernels: Kernels,
    /// The uploaded copy on a GPU device; `None` on CPU.
    device_mm: Option<QMatMul>,
}

/// The error for a tensor whose type the engine cannot compute with.
pub fn unsupported_type(name: &str, t: GgmlType) -> Error {
    Error::Unsupported(format!(
        "tensor `{name}` has type {t}, which this engine cannot compute with (supported: {}); \
         use a file quantized to one of those types",
        GgmlType::supported_names()
    ))
}

impl QWeight {
    /// The 2-D weight `info` of `file`, checked to be `[n_out, n_in]`.
    pub fn load(
        file: &GgufFile,
        info: &TensorInfo,
        n_in: usize,
        n_out: usize,
        device: &Device,
    ) -> Result<Self> {
        let expected = [n_in as u64, n_out as u64];
        if info.dims != expected {
            return Err(Error::tensor(
                &info.name,
                format!(
                    "has shape {:?}, expected {expected:?} from the model config",
                    info.dims
                ),
            ));
        }
        let kernels = match (candle_dtype(info.dtype), Kernels::for_type(info.dtype)) {
            (Some(_), Some(k)) if info.dtype.is_supported() => k,
            _ => return Err(unsupported_type(&info.name, info.dtype)),
        };
        let bytes = file.tensor_bytes(info)?;
        let device_mm = match device {
            Device::Cpu => None,
            dev => {
                let dtype = candle_dtype(info.dtype).expect("checked above");
                let storage = QStorage::from_data(Cow::Borrowed(bytes.as_slice()), dev, dtype)?;
                Some(QMatMul::from_qtensor(QTensor::new(
                    storage,
                    (n_out, n_in),
                )?)?)
            }
        };
        Ok(QWeight {
            name: info.name.clone(),
            dtype: info.dtype,
            n_out,
            n_in,
            bytes,
            kernels,
            device_mm,
        })
    }

    /// True when the weight bytes are read from the file mapping (no private copy).
    pub fn is_mapped(&self) -> bool {
        self.bytes.is_mapped()
    }

    /// Bytes occupied by the weight.
    pub fn n_bytes(&self) -> usize {
        self.bytes.len()
    }

    /// `x @ W^T` on candle tensors: `x` is `(.., n_in)` f32, the result `(.., n_out)`.
    pub fn forward(self: &Arc<Self>, x: &Tensor, n_threads: usize) -> Result<Tensor> {
        match &self.device_mm {
            Some(mm) => Ok(mm.forward(x)?),
            None => Ok(x.apply_op1_no_bwd(&MappedMatMul(Arc::clone(self), n_threads))?),
        }
    }

    /// The raw view the CPU kernels use.
    pub fn view(&self) -> WeightView<'_> {
        WeightView {
            dtype: self.dtype,
            n_out: self.n_out,
            k: self.n_in,
            data: self.bytes.as_slice(),
            kernels: self.kernels,
        }
    }

    /// The activation format this weight multiplies with.
    pub fn act_kind(&self) -> ActKind {
        ActKind::of(self.dtype).expect("checked at load")
    }

    /// `dst[m, n_out] = lhs[m, n_in] @ W^T` on CPU slices.
    pub fn matmul_cpu(&self, m: usize, lhs: &[f32], dst: &mut [f32], n_threads: usize) {
        let mut acts = QActs::default();
        acts.convert(self.act_kind(), lhs, m, self.n_in, n_threads);
        kernels::matmul(&self.view(), &acts, dst, n_threads);
    }

    /// Dequantize rows `ids` into `out` (`ids.len() * n_in` floats), reading only those rows.
    pub fn gather_rows(&self, ids: &[u32], out: &mut [f32]) -> Result<()> {
        let n_in = self.n_in;
        assert_eq!(out.len(), ids.len() * n_in);
        let b = self.bytes.as_slice();
        let row_bytes = b.len() / self.n_out;
        for (&id, dst) in ids.iter().zip(out.chunks_exact_mut(n_in)) {
            let id = id as usize;
            if id >= self.n_out {
                return Err(Error::arg(
                    "tokens",
                    format!(
                        "token id {id} is out of range for a vocabulary of {}",
                        self.n_out
                    ),
                ));
            }
            let row = &b[id * row_bytes..(id + 1) * row_bytes];
            if !kernels::dequantize_row(self.dtype, row, dst) {
                return Err(unsupported_type(&self.name, self.dtype));
            }
        }
        Ok(())
    }

    /// The rows `ids` as a `(ids.len(), n_in)` f32 tensor on `device`.
    pub fn embedding(&self, ids: &[u32], device: &Device) -> Result<Tensor> {
        let mut out = vec![0f32; ids.len() * self.n_in];
        self.gather_rows(ids, &mut out)?;
        Ok(Tensor::from_vec(out, (ids.len(), self.n_in), device)?)
    }
}

/// Load a 1-D vector (norm weights) as f32: small, so copied.
pub fn load_vector(file: &GgufFile, info: &TensorInfo, n: usize) -> Result<Vec<f32>> {
    if info.dims != [n as u64] {
        return Err(Error::tensor(
            &info.name,
            format!(
                "has shape {:?}, expected [{n}] from the model config",
                info.dims
            ),
        ));
    }
    let bytes = file.tensor_bytes(info)?;
    let b = bytes.as_slice();
    let v: Vec<f32> = match info.dtype {
        GgmlType::F32 => b
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect(),
        GgmlType::F16 => b
            .chunks_exact(2)
            .map(|c| f16::from_le_bytes(c.try_into().unwrap()).to_f32())
            .collect(),
        GgmlType::BF16 => b
            .chunks_exact(2)
            .map(|c| bf16::from_le_bytes(c.try_into().unwrap()).to_f32())
            .collect(),
        other => {
            return Err(Error::tensor(
                &info.name,
                format!("has type {other}; 1-D weights must be F32, F16 or BF16"),
            ))
        }
    };
    Ok(v)
}

/// candle custom op: `x @ W^T` with `W` read from the mapping by the project's CPU kernels.
struct MappedMatMul(Arc<QWeight>, usize);

impl candle_core::CustomOp1 for MappedMatMul {
    fn name(&self) -> &'static str {
        "mapped-qmatmul"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let w = &self.0;
        let dims = layout.shape().dims();
        let k = *dims.last().unwrap_or(&0);
        if k != w.n_in || !layout.is_contiguous() || storage.dtype() != DType::F32 {
            candle_core::bail!(
                "mapped-qmatmul `{}`: input {:?} ({:?}, contiguous: {}) does not fit [{}, {}]",
                w.name,
                dims,
                storage.dtype(),
                layout.is_contiguous(),
                w.n_out,
                w.n_in
            );
        }
        let m = layout.shape().elem_count() / k;
        let x = &storage.as_slice::<f32>()?[layout.start_offset()..layout.start_offset() + m * k];
        let mut dst = vec![0f32; m * w.n_out];
        w.matmul_cpu(m, x, &mut dst, self.1);
        let mut out_dims = dims.to_vec();
        *out_dims.last_mut().expect("rank >= 1") = w.n_out;
        Ok((CpuStorage::F32(dst), Shape::from(out_dims)))
    }
}
