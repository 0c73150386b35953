//! The KV cache of one layer in its stored type ([`KvType`]: F16, Q8_0 or F32) and causal
//! grouped-query attention that reads it in that type.
//!
//! Layout ([`KvLayer`]): K and V each `[G][n_ctx][row]`, one row per KV head and position holding
//! `D` values in the stored type: `D` f32, `D` f16, or `D / 32` Q8_0 blocks (ggml's `block_q8_0`:
//! an f16 scale then 32 i8, quantized when the row is written with ggml's x86 rule, as llama.cpp
//! writes its Q8_0 cache). A head's positions are contiguous, so attention streams them in order.
//!
//! [`attention`] works per KV head `g` on chunks of its queries (the `rep = H / G` query heads
//! that read `g`, for consecutive tokens; K/V are never repeated) and walks the positions in tiles
//! of [`TILE`]: each tile of K and V is converted to f32 once into a per-thread buffer small
//! enough for L1 (F16 with F16C, Q8_0 per block as `d * q`), then every query of the chunk that
//! sees the tile takes its scores from it, updates its running maximum and sum (online softmax)
//! and adds the tile's weighted V rows. Memory traffic is one pass over the cache per chunk,
//! never a copy of the whole cache, and no `T x L` score matrix exists.
//!
//! Results are deterministic and independent of batching: a query's output depends only on its
//! vector, its position and the cache. Tiles start at absolute multiples of [`TILE`], each query
//! is computed by one thread in one fixed order of operations, and the kernels give a query the
//! same bits whether it is computed alone or beside another (each SIMD lane sums in one order; the
//! four-position horizontal sum is the same tree for every query). So `t` queries in one call
//! equal `t` calls of one query, bit for bit, whatever the thread count (tested).

use std::cell::RefCell;
use std::fmt;

use half::f16;
use half::slice::{HalfBitsSliceExt, HalfFloatSliceExt};

use super::pool::pool;
use super::quantize::{quantize_row_q8_0, Q8_0_BYTES};
#[cfg(target_arch = "x86_64")]
use super::x86::{self, avx2};
use super::SendPtr;
use crate::error::{Error, Result};

/// Positions per tile of [`attention`]: K and V of one tile at `D = 128` take 32 KiB as f32.
pub const TILE: usize = 32;
/// Queries of one KV head handled together (sharing each converted tile).
const QCHUNK: usize = 16;
/// Positions per score kernel call (one horizontal-sum tree).
const GROUP: usize = 4;
// whole SIMD vectors of scores and whole score groups per tile
const _: () = assert!(TILE.is_multiple_of(8) && TILE.is_multiple_of(GROUP));

/// The element type K and V are stored in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum KvType {
    /// Half precision (llama.cpp's default): 2 bytes per value.
    #[default]
    F16,
    /// ggml's Q8_0 blocks (32 values, f16 scale): 34 bytes per 32 values; head_dim % 32 == 0.
    Q8_0,
    /// Single precision: 4 bytes per value.
    F32,
}

impl KvType {
    /// Every type, the default first.
    pub const ALL: [KvType; 3] = [KvType::F16, KvType::Q8_0, KvType::F32];

    /// The name used by the API and the CLI (llama.cpp's `type_k`/`--cache-type-k` spelling).
    pub fn name(self) -> &'static str {
        match self {
            KvType::F16 => "f16",
            KvType::Q8_0 => "q8_0",
            KvType::F32 => "f32",
        }
    }

    /// The type called `name` (case-insensitive), else an `InvalidArgument` for `kv_type`.
    pub fn from_name(name: &str) -> Result<Self> {
        KvType::ALL
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(name))
            .ok_or_else(|| {
                Error::arg(
                    "kv_type",
                    format!("unknown KV cache type `{name}`; use \"f16\", \"q8_0\" or \"f32\""),
                )
            })
    }

    /// Checks that heads of `head_dim` values can be stored in this type (Q8_0 needs whole
    /// blocks of 32, as in llama.cpp).
    pub fn check_head_dim(self, head_dim: usize) -> Result<()> {
        if head_dim == 0 || (self == KvType::Q8_0 && !head_dim.is_multiple_of(32)) {
            return Err(Error::arg(
                "kv_type",
                format!(
                    "a {self} KV cache needs a head dimension that is a positive multiple of {}; \
                     this model's is {head_dim} (use kv_type=\"f16\")",
                    if self == KvType::Q8_0 { 32 } else { 1 }
                ),
            ));
        }
        Ok(())
    }

    /// Bytes of one stored row of `head_dim` values (one head, one position, K or V).
    pub fn row_bytes(self, head_dim: usize) -> usize {
        match self {
            KvType::F16 => 2 * head_dim,
            KvType::Q8_0 => head_dim / 32 * Q8_0_BYTES,
            KvType::F32 => 4 * head_dim,
        }
    }

    /// Bytes of K and V for one position in one layer of `n_head_kv` heads.
    pub fn bytes_per_position(self, n_head_kv: usize, head_dim: usize) -> usize {
        2 * n_head_kv * self.row_bytes(head_dim)
    }
}

impl fmt::Display for KvType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Rows of one tensor (K or V) in the stored type.
enum Store {
    F16(Vec<u16>),
    Q8_0(Vec<u8>),
    F32(Vec<f32>),
}

impl Store {
    /// `n_rows` zeroed rows of `d` values (a zeroed allocation: the OS commits pages when written).
    fn new(ty: KvType, n_rows: usize, d: usize) -> Self {
        match ty {
            KvType::F16 => Store::F16(vec![0; n_rows * d]),
            KvType::Q8_0 => Store::Q8_0(vec![0; n_rows * ty.row_bytes(d)]),
            KvType::F32 => Store::F32(vec![0.0; n_rows * d]),
        }
    }

    fn bytes(&self) -> &[u8] {
        match self {
            Store::F16(v) => as_bytes(v),
            Store::Q8_0(v) => v,
            Store::F32(v) => as_bytes(v),
        }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        match self {
            Store::F16(v) => as_bytes_mut(v),
            Store::Q8_0(v) => v,
            Store::F32(v) => as_bytes_mut(v),
        }
    }

    /// Row `r` (of `d` values) from `src`, rounded to the stored type.
    fn write_row(&mut self, r: usize, d: usize, src: &[f32]) {
        match self {
            Store::F16(v) => v[r * d..(r + 1) * d]
                .reinterpret_cast_mut::<f16>()
                .convert_from_f32_slice(src),
            Store::Q8_0(v) => {
                let rb = d / 32 * Q8_0_BYTES;
                quantize_row_q8_0(src, &mut v[r * rb..(r + 1) * rb]);
            }
            Store::F32(v) => v[r * d..(r + 1) * d].copy_from_slice(src),
        }
    }

    /// Rows `r0..r0 + n` (of `d` values) as f32 into `out[..n * d]`.
    fn to_f32(&self, isa: Isa, r0: usize, n: usize, d: usize, out: &mut [f32]) {
        let out = &mut out[..n * d];
        match self {
            Store::F32(v) => out.copy_from_slice(&v[r0 * d..(r0 + n) * d]),
            Store::F16(v) => {
                let src = &v[r0 * d..(r0 + n) * d];
                match isa {
                    // SAFETY: `Isa::Avx2` exists only after detection; both hold n * d values.
                    #[cfg(target_arch = "x86_64")]
                    Isa::Avx2 => unsafe {
                        avx2::attn::f16_to_f32(n * d, src.as_ptr(), out.as_mut_ptr())
                    },
                    Isa::Scalar => src.reinterpret_cast::<f16>().convert_to_f32_slice(out),
                }
            }
            Store::Q8_0(v) => {
                let (nb, rb) = (d / 32, d / 32 * Q8_0_BYTES);
                let src = &v[r0 * rb..(r0 + n) * rb];
                match isa {
                    // SAFETY: as above; `src` holds n * nb blocks, `out` 32 values per block.
                    #[cfg(target_arch = "x86_64")]
                    Isa::Avx2 => unsafe {
                        avx2::attn::q8_0_to_f32(n * nb, src.as_ptr(), out.as_mut_ptr())
                    },
                    Isa::Scalar => {
                        for (b, o) in src.chunks_exact(Q8_0_BYTES).zip(out.chunks_exact_mut(32)) {
                            let s = f16::from_le_bytes([b[0], b[1]]).to_f32();
                            for (o, &q) in o.iter_mut().zip(&b[2..]) {
                                *o = q as i8 as f32 * s;
                            }
                        }
                    }
                }
            }
        }
    }
}

fn as_bytes<T: Copy>(v: &[T]) -> &[u8] {
    // SAFETY: plain numbers (u16, f32) without padding; any u8 view of them is valid.
    unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u8, std::mem::size_of_val(v)) }
}

fn as_bytes_mut<T: Copy>(v: &mut [T]) -> &mut [u8] {
    // SAFETY: as `as_bytes`; every bit pattern is a valid u16 or f32, so writes cannot break them.
    unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr() as *mut u8, std::mem::size_of_val(v)) }
}

/// K and V of one layer for up to `n_ctx` positions, in one [`KvType`].
pub struct KvLayer {
    ty: KvType,
    n_head_kv: usize,
    n_ctx: usize,
    head_dim: usize,
    k: Store,
    v: Store,
}

impl KvLayer {
    /// An empty cache of `n_ctx` positions for `n_head_kv` heads of `head_dim` values; an
    /// `InvalidArgument` where the type cannot hold such heads ([`KvType::check_head_dim`]).
    pub fn new(ty: KvType, n_head_kv: usize, n_ctx: usize, head_dim: usize) -> Result<Self> {
        ty.check_head_dim(head_dim)?;
        let rows = n_head_kv
            .checked_mul(n_ctx)
            .and_then(|r| r.checked_mul(ty.row_bytes(head_dim)).map(|_| r))
            .ok_or_else(|| Error::arg("n_ctx", format!("{n_ctx} positions overflow memory")))?;
        Ok(KvLayer {
            ty,
            n_head_kv,
            n_ctx,
            head_dim,
            k: Store::new(ty, rows, head_dim),
            v: Store::new(ty, rows, head_dim),
        })
    }

    /// The stored type.
    pub fn kv_type(&self) -> KvType {
        self.ty
    }

    /// Positions this cache holds.
    pub fn n_ctx(&self) -> usize {
        self.n_ctx
    }

    /// Bytes of K and V together.
    pub fn bytes(&self) -> usize {
        self.k.bytes().len() + self.v.bytes().len()
    }

    /// The stored K bytes, `[G][n_ctx][row]` (see the module docs), e.g. to save a session.
    pub fn k_bytes(&self) -> &[u8] {
        self.k.bytes()
    }

    /// The stored V bytes, laid out like [`KvLayer::k_bytes`].
    pub fn v_bytes(&self) -> &[u8] {
        self.v.bytes()
    }

    /// The stored K bytes for writing (e.g. restoring a saved session of the same type).
    pub fn k_bytes_mut(&mut self) -> &mut [u8] {
        self.k.bytes_mut()
    }

    /// The stored V bytes for writing.
    pub fn v_bytes_mut(&mut self) -> &mut [u8] {
        self.v.bytes_mut()
    }

    /// Bytes [`KvLayer::save`] writes for positions `0..len`.
    pub fn saved_bytes(&self, len: usize) -> usize {
        len * self.ty.bytes_per_position(self.n_head_kv, self.head_dim)
    }

    /// Append the stored K then V rows of positions `0..len`, head by head, to `out` (the bytes of
    /// a saved session: they restore only into a cache of the same type and shape).
    pub fn save(&self, len: usize, out: &mut Vec<u8>) {
        assert!(len <= self.n_ctx);
        let rb = self.ty.row_bytes(self.head_dim);
        for st in [&self.k, &self.v] {
            for g in 0..self.n_head_kv {
                let r0 = g * self.n_ctx;
                out.extend_from_slice(&st.bytes()[r0 * rb..(r0 + len) * rb]);
            }
        }
    }

    /// Read positions `0..len` back from `src` as [`KvLayer::save`] wrote them; returns the bytes
    /// consumed. Panics if `src` is short or `len` exceeds `n_ctx` (callers check both first).
    pub fn restore(&mut self, len: usize, src: &[u8]) -> usize {
        let n = self.saved_bytes(len);
        assert!(
            len <= self.n_ctx && src.len() >= n,
            "KV restore of {len} positions"
        );
        let rb = self.ty.row_bytes(self.head_dim);
        let (g_n, n_ctx) = (self.n_head_kv, self.n_ctx);
        let mut at = 0;
        for st in [&mut self.k, &mut self.v] {
            let b = st.bytes_mut();
            for g in 0..g_n {
                let r0 = g * n_ctx;
                b[r0 * rb..(r0 + len) * rb].copy_from_slice(&src[at..at + len * rb]);
                at += len * rb;
            }
        }
        n
    }

    /// Store `t` positions `pos..pos + t` from `k` and `v`, each `(t, G*D)` rows as the K and V
    /// projections produce them (`t` is `k.len() / (G*D)`). Panics past `n_ctx`.
    pub fn write(&mut self, pos: usize, k: &[f32], v: &[f32]) {
        let (g_n, d) = (self.n_head_kv, self.head_dim);
        let kvd = g_n * d;
        assert!(k.len() == v.len() && k.len().is_multiple_of(kvd));
        let t = k.len() / kvd;
        assert!(
            pos + t <= self.n_ctx,
            "KV write of positions {pos}..{} past n_ctx {}",
            pos + t,
            self.n_ctx
        );
        for ti in 0..t {
            for g in 0..g_n {
                let (row, src) = (g * self.n_ctx + pos + ti, ti * kvd + g * d);
                self.k.write_row(row, d, &k[src..src + d]);
                self.v.write_row(row, d, &v[src..src + d]);
            }
        }
    }

    /// Stored K and V of head `g` at position `p` as f32, converted by the kernels of `isa`
    /// (what attention computes with).
    pub fn read(&self, isa: Isa, g: usize, p: usize, k: &mut [f32], v: &mut [f32]) {
        assert!(g < self.n_head_kv && p < self.n_ctx);
        #[cfg(target_arch = "x86_64")]
        assert!(isa != Isa::Avx2 || x86::has_avx2());
        let r = g * self.n_ctx + p;
        self.k.to_f32(isa, r, 1, self.head_dim, k);
        self.v.to_f32(isa, r, 1, self.head_dim, v);
    }
}

/// Which kernels [`attention_with`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    /// Portable Rust.
    Scalar,
    /// AVX2/FMA/F16C (x86-64, detected at run time; head_dim % 8 == 0).
    #[cfg(target_arch = "x86_64")]
    Avx2,
}

impl Isa {
    /// The best kernels this CPU has for heads of `head_dim` values.
    pub fn best(head_dim: usize) -> Self {
        #[cfg(target_arch = "x86_64")]
        if x86::has_avx2() && head_dim.is_multiple_of(8) {
            return Isa::Avx2;
        }
        let _ = head_dim;
        Isa::Scalar
    }
}

/// Per-thread buffers of [`attention`] (pool threads live as long as the process, so these are
/// allocated once per thread and grow to the largest head seen).
#[derive(Default)]
struct Scratch {
    k: Vec<f32>,   // (TILE, D) the current tile's K as f32
    v: Vec<f32>,   // (TILE, D) its V
    s: Vec<f32>,   // (QCHUNK, TILE) scores, then weights, of the tile
    o: Vec<f32>,   // (QCHUNK, D) unnormalized outputs
    m: Vec<f32>,   // (QCHUNK) running maximum score
    sum: Vec<f64>, // (QCHUNK) running sum of exp(score - max)
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Causal grouped-query attention of `t` queries at positions `pos..pos + t` over the cache
/// (which must already hold positions `0..pos + t`): query `i` sees positions `0..=pos + i`.
/// `q` and `out` are `(t, n_head * D)` (only the first `t` rows are used); query head `h` reads
/// KV head `h / (n_head / G)`. Runs on `nt` pool threads with the best kernels ([`Isa::best`]).
pub fn attention(
    kv: &KvLayer,
    q: &[f32],
    n_head: usize,
    pos: usize,
    t: usize,
    out: &mut [f32],
    nt: usize,
) {
    attention_with(Isa::best(kv.head_dim), kv, q, n_head, pos, t, out, nt);
}

/// [`attention`] with the kernels of `isa` (tests compare them).
#[allow(clippy::too_many_arguments)]
pub fn attention_with(
    isa: Isa,
    kv: &KvLayer,
    q: &[f32],
    n_head: usize,
    pos: usize,
    t: usize,
    out: &mut [f32],
    nt: usize,
) {
    let (g_n, d) = (kv.n_head_kv, kv.head_dim);
    assert!(
        n_head > 0 && n_head.is_multiple_of(g_n),
        "n_head {n_head} vs {g_n} KV heads"
    );
    let qd = n_head * d;
    assert!(q.len() >= t * qd && out.len() >= t * qd);
    assert!(
        pos + t <= kv.n_ctx,
        "attention at {pos}+{t} past n_ctx {}",
        kv.n_ctx
    );
    #[cfg(target_arch = "x86_64")]
    assert!(isa != Isa::Avx2 || (x86::has_avx2() && d.is_multiple_of(8)));
    let rep = n_head / g_n;
    // up to QCHUNK queries per item; fewer when there are fewer KV heads than threads (decode), so
    // that every thread has work (a query's result does not depend on its chunk)
    let per_head = nt.div_ceil(g_n).max(1);
    let qc = (t * rep).div_ceil(per_head).clamp(1, QCHUNK);
    let chunks = (t * rep).div_ceil(qc);
    let o = SendPtr(out.as_mut_ptr());
    pool().for_chunks(nt, g_n * chunks, 1, &|items| {
        SCRATCH.with(|s| {
            let s = &mut *s.borrow_mut();
            for item in items {
                let (g, c) = (item / chunks, item % chunks);
                let i1 = ((c + 1) * qc).min(t * rep);
                run_chunk(isa, kv, q, n_head, pos, g, c * qc..i1, o, s);
            }
        })
    });
}

/// Queries `qs` of KV head `g`; query `i` is token `i / rep` of query head `g * rep + i % rep`.
#[allow(clippy::too_many_arguments)]
fn run_chunk(
    isa: Isa,
    kv: &KvLayer,
    q: &[f32],
    n_head: usize,
    pos: usize,
    g: usize,
    qs: std::ops::Range<usize>,
    out: SendPtr<f32>,
    s: &mut Scratch,
) {
    let d = kv.head_dim;
    let rep = n_head / kv.n_head_kv;
    let nq = qs.len();
    // row offset (in q and out) of query i, and the number of positions it sees
    let row = |i: usize| ((i / rep) * n_head + g * rep + i % rep) * d;
    let seen = |i: usize| pos + i / rep + 1;
    for (buf, n) in [
        (&mut s.k, TILE * d),
        (&mut s.v, TILE * d),
        (&mut s.s, QCHUNK * TILE),
        (&mut s.o, QCHUNK * d),
    ] {
        if buf.len() < n {
            buf.resize(n, 0.0);
        }
    }
    s.o[..nq * d].fill(0.0);
    s.m.clear();
    s.m.resize(nq, f32::NEG_INFINITY);
    s.sum.clear();
    s.sum.resize(nq, 0.0);
    let scale = 1.0 / (d as f32).sqrt();
    let last = seen(qs.end - 1);
    for t0 in (0..last).step_by(TILE) {
        let rows = TILE.min(last - t0);
        let r0 = g * kv.n_ctx + t0;
        kv.k.to_f32(isa, r0, rows, d, &mut s.k);
        kv.v.to_f32(isa, r0, rows, d, &mut s.v);
        // queries are in token order, so those that see this tile are a suffix
        let first = t0.saturating_sub(pos) * rep;
        let first = first.max(qs.start) - qs.start;
        let mut a = first;
        while a < nq {
            let pair = a + 1 < nq;
            let n = |i: usize| TILE.min(seen(qs.start + i) - t0);
            let (na, nb) = (n(a), if pair { n(a + 1) } else { 0 });
            let (sa, rest) = s.s[a * TILE..].split_at_mut(TILE);
            let (oa, orest) = s.o[a * d..].split_at_mut(d);
            let qa = &q[row(qs.start + a)..][..d];
            if pair {
                let qb = &q[row(qs.start + a + 1)..][..d];
                let (sb, ob) = (&mut rest[..TILE], &mut orest[..d]);
                scores(isa, d, [qa, qb], &s.k, na.max(nb), [&mut *sa, &mut *sb]);
                online_softmax(isa, sa, na, scale, &mut s.m[a], &mut s.sum[a], oa);
                online_softmax(isa, sb, nb, scale, &mut s.m[a + 1], &mut s.sum[a + 1], ob);
                let common = na.min(nb);
                accumulate(
                    isa,
                    d,
                    [&sa[..common], &sb[..common]],
                    &s.v,
                    [&mut *oa, &mut *ob],
                );
                // the longer one's remaining positions: the same per-lane order as alone
                let (p, o, nl) = if na > nb {
                    (&*sa, oa, na)
                } else {
                    (&*sb, ob, nb)
                };
                accumulate(isa, d, [&p[common..nl]], &s.v[common * d..], [o]);
            } else {
                scores(isa, d, [qa], &s.k, na, [&mut *sa]);
                online_softmax(isa, sa, na, scale, &mut s.m[a], &mut s.sum[a], oa);
                accumulate(isa, d, [&sa[..na]], &s.v, [oa]);
            }
            a += if pair { 2 } else { 1 };
        }
    }
    for i in 0..nq {
        let inv = (1.0 / s.sum[i]) as f32;
        // SAFETY: query rows are disjoint between chunks (each query is in exactly one chunk) and
        // lie inside `out` (checked by `attention_with`).
        let dst = unsafe { std::slice::from_raw_parts_mut(out.get().add(row(qs.start + i)), d) };
        for (o, &v) in dst.iter_mut().zip(&s.o[i * d..(i + 1) * d]) {
            *o = v * inv;
        }
    }
}

/// Scale a tile's dot products `s[..n]` into scores, fold them into the running maximum `m`
/// (rescaling the running `sum` and output `o` when it grows) and turn them into weights
/// `exp(score - m)`. `s` has room for [`TILE`] values.
fn online_softmax(
    isa: Isa,
    s: &mut [f32],
    n: usize,
    scale: f32,
    m: &mut f32,
    sum: &mut f64,
    o: &mut [f32],
) {
    assert!(n <= TILE && s.len() >= TILE);
    let mut mt = f32::NEG_INFINITY;
    for x in s[..n].iter_mut() {
        *x *= scale;
        mt = mt.max(*x);
    }
    if mt > *m {
        let f = (*m - mt).exp(); // 0 for the first tile (m = -inf)
        *sum *= f as f64;
        for v in o.iter_mut() {
            *v *= f;
        }
        *m = mt;
    }
    let ts = match isa {
        // SAFETY: Avx2 only after detection; `s` holds TILE >= n rounded up to 8 values.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { avx2::attn::exp_sum(n, s.as_mut_ptr(), *m) as f64 },
        Isa::Scalar => s[..n].iter_mut().fold(0f64, |acc, x| {
            *x = (*x - *m).exp();
            acc + *x as f64
        }),
    };
    *sum += ts;
}

/// `s[i][j] = q[i] . k[j]` for tile rows `j < n` (rounded up to a group of [`GROUP`]; the extra
/// entries are left unused by the caller) and `N` (1 or 2) queries.
fn scores<const N: usize>(
    isa: Isa,
    d: usize,
    q: [&[f32]; N],
    k: &[f32],
    n: usize,
    s: [&mut [f32]; N],
) {
    let groups = n.div_ceil(GROUP);
    assert!(groups * GROUP <= TILE && k.len() >= TILE * d);
    assert!(q.iter().all(|q| q.len() >= d) && s.iter().all(|s| s.len() >= TILE));
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: Avx2 only after detection with d % 8 == 0 (`attention_with`); lengths above.
        Isa::Avx2 => unsafe {
            avx2::attn::scores::<N>(
                d,
                q.map(|q| q.as_ptr()),
                k.as_ptr(),
                groups,
                s.map(|s| s.as_mut_ptr()),
            )
        },
        Isa::Scalar => {
            for (qi, si) in q.iter().zip(s) {
                for (j, sj) in si[..groups * GROUP].iter_mut().enumerate() {
                    let kj = &k[j * d..(j + 1) * d];
                    *sj = qi[..d].iter().zip(kj).fold(0f32, |a, (x, y)| a + x * y);
                }
            }
        }
    }
}

/// `o[i] += sum_j p[i][j] * v[j]` over the rows of `v` (each of `d` values), `j` in order.
fn accumulate<const N: usize>(isa: Isa, d: usize, p: [&[f32]; N], v: &[f32], o: [&mut [f32]; N]) {
    let n = p[0].len();
    assert!(p.iter().all(|p| p.len() == n) && v.len() >= n * d);
    assert!(o.iter().all(|o| o.len() >= d));
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as in `scores`; lengths checked above.
        Isa::Avx2 => unsafe {
            avx2::attn::accumulate::<N>(
                d,
                p.map(|p| p.as_ptr()),
                v.as_ptr(),
                n,
                o.map(|o| o.as_mut_ptr()),
            )
        },
        Isa::Scalar => {
            for (pi, oi) in p.iter().zip(o) {
                for (j, &pj) in pi.iter().enumerate() {
                    for (ov, &vv) in oi[..d].iter_mut().zip(&v[j * d..(j + 1) * d]) {
                        *ov += pj * vv;
                    }
                }
            }
        }
    }
}
