//! The matmul drivers: one weight matrix in the file mapping times a batch of converted
//! activation rows, split over the thread pool. Decode splits the weight rows; prompts are tiled
//! so that activations and weights stay in cache, through the multi-row kernels or, for long
//! prompts, the packed GEMM.

use super::acts::QActs;
use super::dispatch::{Kernels, Packed};
use super::layout::{
    combine, DotRowsN, PACK_GROUP, PACK_PAIR, PACK_ROWS, PARTS, ROWS, ROWS2, ROWS4,
};
use super::pool;
use super::send_ptr::SendPtr;
use crate::gguf::GgmlType;

/// A weight matrix `[n_out, k]` as raw rows in the mapping.
#[derive(Clone, Copy)]
pub struct WeightView<'a> {
    pub dtype: GgmlType,
    pub n_out: usize,
    pub k: usize,
    pub data: &'a [u8],
    pub kernels: Kernels,
}

impl WeightView<'_> {
    #[inline]
    pub(super) fn row(&self, j: usize) -> &[u8] {
        let rb = self.data.len() / self.n_out;
        &self.data[j * rb..(j + 1) * rb]
    }
}

/// Weight rows per task where a matmul streams every weight once (decode, and batches that fit
/// one tile): 8 tasks per thread for load balance, at most 256 rows (at least 8), so that each
/// task reads a long contiguous run of weights. On the Intel(R) Xeon(R) Processor (avx2
/// avx512_vnni avx512f avx_vnni), 2 cores, a 1024-row cap decoded within noise of this one and
/// half the matrix per thread 4-9% slower (Q4_K_M and Q6_K slices, 1 and 4 sequences).
fn stream_rows(n: usize, n_threads: usize) -> usize {
    (n / (n_threads.max(1) * 8)).clamp(8, 256)
}

/// Tile of a prompt matmul: (activation rows, weight rows), from the bytes of one activation row
/// and one weight row: ~256 KiB of activations and ~128 KiB of weights. The height is a whole
/// number of multi-row groups (at least one, even when 8 rows of a long `k` exceed the budget), so
/// only the prompt's last `m % ROWS` rows take the 4-row and one-row kernels.
pub(super) fn tile_shape(
    act_row_bytes: usize,
    w_row_bytes: usize,
    m: usize,
    n: usize,
) -> (usize, usize) {
    let groups = (256 * 1024 / act_row_bytes.max(1)) / ROWS;
    let t_blk = (groups.clamp(1, 64 / ROWS) * ROWS).min(m);
    let j_blk = (128 * 1024 / w_row_bytes.max(1)).clamp(4, 64).min(n);
    (t_blk, j_blk)
}

/// `out[t, j] = dot(W[j], act[t])` for all `t < acts.rows()`, `j < n_out`, on `n_threads`.
///
/// Decode (one row) splits the weight rows across threads. Prefill tiles the work into blocks of
/// activation rows × weight rows, sized so both stay in cache, so the weights are streamed from
/// memory a few times per batch instead of once per token; prompts of [`PACKED_MIN_ROWS`] rows
/// or more go through the packed GEMM where the type has one ([`matmul_packed`]).
pub fn matmul(w: &WeightView<'_>, acts: &QActs, out: &mut [f32], n_threads: usize) {
    let m = acts.rows();
    let n = w.n_out;
    assert!(out.len() >= m * n);
    let dst = SendPtr(out.as_mut_ptr());
    let p = pool::pool();
    let kern = &w.kernels;
    if m == 1 {
        let (dot, a) = kern.single_row(acts, 0);
        let chunk = stream_rows(n, n_threads);
        p.for_chunks(n_threads, n, chunk, &|r| {
            for j in r {
                // SAFETY: each j is written by exactly one chunk.
                unsafe { *dst.get().add(j) = dot(w.k, w.row(j), a) };
            }
        });
        return;
    }
    if let Some(pk) = w.kernels.packed.filter(|_| m >= PACKED_MIN_ROWS) {
        #[cfg(target_arch = "x86_64")]
        if pk.amx() && m >= amx_min_rows(w.dtype) {
            return matmul_amx(w, acts, out, n_threads);
        }
        return matmul_packed(w, &pk, acts, out, n_threads);
    }
    let (t_blk, mut j_blk) = tile_shape(acts.stride(), w.data.len() / n, m, n);
    let n_tb = m.div_ceil(t_blk);
    if n_tb == 1 {
        // one tile of activation rows (a batched decode step, a short prompt): the weights pass
        // once, so a task streams as long a run of rows as decode does; 128 KiB tasks restart
        // the prefetch and the hardware streams every few rows (4 sequences of the 70B-shaped
        // slice decode 8% (Q4_K_M) to 16% (Q8_0) slower with them on the 2-core Xeon above)
        j_blk = j_blk.max(stream_rows(n, n_threads));
    }
    let n_jb = n.div_ceil(j_blk);
    p.for_chunks(n_threads, n_tb * n_jb, 1, &|r| {
        for task in r {
            // activation-block major: consecutive tasks reuse the same activations
            let (tb, jb) = (task / n_jb, task % n_jb);
            let t0 = tb * t_blk;
            let t1 = (t0 + t_blk).min(m);
            let j0 = jb * j_blk;
            let j1 = (j0 + j_blk).min(n);
            let mut tail = t0;
            // SAFETY (each rows_tile): the rows and weight rows are this task's tile, and
            // (t, j) pairs of different tasks are disjoint.
            if let Some(dot_rows) = w.kernels.dot_rows {
                // a group of activation rows stays in cache while the tile's weight rows stream past
                while tail + ROWS <= t1 {
                    let a = std::array::from_fn(|i| acts.row_with_scales(tail + i));
                    unsafe { rows_tile(dot_rows, w, a, tail, ROWS, j0..j1, dst, n) };
                    tail += ROWS;
                }
            }
            if let Some(dot_rows4) = w.kernels.dot_rows4 {
                while tail + ROWS4 <= t1 {
                    let a = std::array::from_fn(|i| acts.row_with_scales(tail + i));
                    unsafe { rows_tile(dot_rows4, w, a, tail, ROWS4, j0..j1, dst, n) };
                    tail += ROWS4;
                }
                // 3 rows left: one 4-row call with the last row twice costs less than 3
                // single-row calls (`benches/rows.rs`), and each row's result is its own
                if t1 - tail == ROWS4 - 1 {
                    let a = std::array::from_fn(|i| acts.row_with_scales(tail + i.min(ROWS4 - 2)));
                    unsafe { rows_tile(dot_rows4, w, a, tail, ROWS4 - 1, j0..j1, dst, n) };
                    tail = t1;
                }
            }
            if let Some(dot_rows2) = w.kernels.dot_rows2.filter(|_| t1 - tail == ROWS2) {
                // 2 rows left (a batched step of 2 or 6 sequences): one call shares each weight
                // block's unpacking, where two single-row calls unpack it twice
                let a = std::array::from_fn(|i| acts.row_with_scales(tail + i));
                unsafe { rows_tile(dot_rows2, w, a, tail, ROWS2, j0..j1, dst, n) };
                tail = t1;
            }
            for j in j0..j1 {
                let wr = w.row(j);
                for t in tail..t1 {
                    // SAFETY: as above.
                    unsafe { *dst.get().add(t * n + j) = kern.dot_single(w.k, wr, acts, t) };
                }
            }
        }
    });
}

/// The weight rows `js` times the activation rows `a` through the `N`-row kernel `f`, written to
/// output rows `t..t + keep` of `dst` (`n` columns): `keep < N` where a row fills the call twice.
///
/// # Safety
/// `dst` holds rows `t..t + keep` of `n` floats, and no other thread writes their columns `js`.
#[allow(clippy::too_many_arguments)]
unsafe fn rows_tile<const N: usize>(
    f: DotRowsN<N>,
    w: &WeightView<'_>,
    a: [&[u8]; N],
    t: usize,
    keep: usize,
    js: std::ops::Range<usize>,
    dst: SendPtr<f32>,
    n: usize,
) {
    for j in js {
        let r = f(w.k, w.row(j), a);
        for (i, &v) in r[..keep].iter().enumerate() {
            // SAFETY: the caller's contract.
            unsafe { *dst.get().add((t + i) * n + j) = v };
        }
    }
}

/// Prompt rows from which the packed GEMM is used where a type has one: below, packing a weight
/// group costs more than it saves.
pub const PACKED_MIN_ROWS: usize = 16;
/// Activation rows per tile of the packed GEMM: each packed weight chunk serves them all, so
/// packing is paid once per 256 prompt rows; the K-quant packs (scale and min vectors) cost more
/// than Q4_0's and read their weights from memory, so they gain most from the reuse.
pub(super) const PACKED_TILE: usize = 256;
/// Bytes of packed weights per chunk of `k`: small enough to stay in L2 while a tile's rows pass
/// over it, large enough that each [`PACK_ROWS`] rows stream a long run of their blocks per call.
pub(super) const PACKED_CHUNK_BYTES: usize = 64 * 1024;

thread_local! {
    /// Each thread's buffer for one packed weight chunk.
    static PACK_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The prompt matmul through a [`Packed`] GEMM: tasks are (activation tile, pair of groups of
/// [`PACK_GROUP`] weight rows; with an odd group count the last pair is that group twice, its
/// results written once); each packs its groups chunk by chunk along `k` and runs the tile's
/// activation rows over every chunk, [`PACK_ROWS`] at a time, accumulating in f32 per weight lane.
fn matmul_packed(w: &WeightView<'_>, pk: &Packed, acts: &QActs, out: &mut [f32], n_threads: usize) {
    let (m, n) = (acts.rows(), w.n_out);
    let row_nb = w.k / w.dtype.block_size();
    let kc = (PACKED_CHUNK_BYTES / pk.block_bytes()).clamp(1, row_nb.max(1));
    let groups = n / PACK_GROUP;
    let pairs = groups.div_ceil(PACK_PAIR);
    let n_tb = m.div_ceil(PACKED_TILE);
    let dst = SendPtr(out.as_mut_ptr());
    let p = pool::pool();
    p.for_chunks(n_threads, n_tb * pairs, 1, &|r| {
        PACK_BUF.with_borrow_mut(|buf| {
            let cb = kc * pk.block_bytes();
            buf.resize(PACK_PAIR * cb, 0);
            for task in r {
                let (tb, pair) = (task / pairs, task % pairs);
                let (t0, t1) = (tb * PACKED_TILE, ((tb + 1) * PACKED_TILE).min(m));
                let gs: [usize; PACK_PAIR] =
                    std::array::from_fn(|i| (pair * PACK_PAIR + i).min(groups - 1));
                let mut acc = [[[[0f32; PACK_GROUP]; PARTS]; PACKED_TILE]; PACK_PAIR];
                let mut b0 = 0;
                while b0 < row_nb {
                    let nb = kc.min(row_nb - b0);
                    for (i, g) in gs.iter().enumerate() {
                        let rows: [&[u8]; PACK_GROUP] =
                            std::array::from_fn(|j| w.row(g * PACK_GROUP + j));
                        pk.pack(b0, nb, rows, &mut buf[i * cb..(i + 1) * cb]);
                    }
                    let packed: [&[u8]; PACK_PAIR] =
                        std::array::from_fn(|i| &buf[i * cb..(i + 1) * cb]);
                    for t in (t0..t1).step_by(PACK_ROWS) {
                        let e = (t + PACK_ROWS).min(t1);
                        let a: [&[u8]; PACK_ROWS] =
                            std::array::from_fn(|i| acts.row_with_scales((t + i).min(e - 1)));
                        let [c0, c1] = &mut acc;
                        let c = [&mut c0[t - t0..e - t0], &mut c1[t - t0..e - t0]];
                        pk.gemm(row_nb, b0, nb, packed, &a[..e - t], c);
                    }
                    b0 += nb;
                }
                let written = if gs[0] == gs[1] { 1 } else { PACK_PAIR };
                for (g, acc) in gs.iter().zip(&acc).take(written) {
                    for t in t0..t1 {
                        for i in 0..PACK_GROUP {
                            let v = combine(&acc[t - t0], i);
                            // SAFETY: (t, j) pairs of different tasks are disjoint.
                            unsafe { *dst.get().add(t * n + g * PACK_GROUP + i) = v };
                        }
                    }
                }
            }
        })
    });
    single_row_tail(w, acts, dst, groups * PACK_GROUP, n_threads);
}

/// Weight rows `j0..` (after the last whole group of a packed GEMM) times every activation row,
/// one activation row at a time, into the `n_out` columns of `dst`.
fn single_row_tail(
    w: &WeightView<'_>,
    acts: &QActs,
    dst: SendPtr<f32>,
    j0: usize,
    n_threads: usize,
) {
    let n = w.n_out;
    if j0 >= n {
        return;
    }
    let kern = &w.kernels;
    pool::pool().for_chunks(n_threads, acts.rows(), 8, &|r| {
        for t in r {
            for j in j0..n {
                // SAFETY: each t is written by exactly one chunk.
                unsafe { *dst.get().add(t * n + j) = kern.dot_single(w.k, w.row(j), acts, t) };
            }
        }
    });
}

thread_local! {
    /// Each thread's buffers for one AMX task: its packed weights, the AVX2 packing of one
    /// super-block they are made from, and its f32 accumulators.
    #[cfg(target_arch = "x86_64")]
    #[allow(clippy::type_complexity)]
    static AMX_BUF: std::cell::RefCell<(Vec<u8>, Vec<u8>, Vec<f32>)> =
        const { std::cell::RefCell::new((Vec::new(), Vec::new(), Vec::new())) };
    /// The calling thread's buffer for the activations of an AMX matmul.
    #[cfg(target_arch = "x86_64")]
    static AMX_ACTS: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Prompt rows from which the AMX GEMM runs where it can: below, packing a super-block of each
/// 16 weight rows for AMX costs more than the tiles save over the VNNI packed GEMM. On the Intel(R)
/// Xeon(R) Processor (avx2 avx512_vnni avx512f avx_vnni), 2 cores (with AMX; 70B-shaped slices,
/// all logits) the two break even at about 44 rows for Q4_K_M and 30 for Q6_K; at 16 rows AMX
/// takes 1.5x the time on Q4_K_M.
#[cfg(target_arch = "x86_64")]
fn amx_min_rows(t: GgmlType) -> usize {
    match t {
        GgmlType::Q4_K | GgmlType::Q5_K => 48,
        _ => 32,
    }
}

/// Groups of [`super::x86::amx::AMX_ROWS`] weight rows per AMX task: each activation tile
/// loaded from memory serves them all (the activations of a long prompt do not fit in L2, and
/// one group per pass over them left the tiles waiting on that read).
#[cfg(target_arch = "x86_64")]
const AMX_GROUPS: usize = 8;

/// The prompt matmul through the AMX GEMM ([`super::x86::amx`]: the K-quants): the
/// activations laid out once per call for the tiles, then tasks of
/// [`super::x86::amx::AMX_ROWS`] weight rows, each packing its rows one super-block at a time
/// (which then stays in L1) and running every tile of [`super::x86::amx::AMX_COLS`] prompt rows
/// over it; the weight rows after the last whole group take the single-row kernel.
#[cfg(target_arch = "x86_64")]
fn matmul_amx(w: &WeightView<'_>, acts: &QActs, out: &mut [f32], n_threads: usize) {
    use super::x86::amx::{self, AMX_ACT, AMX_COLS, AMX_PACKED, AMX_ROWS};
    use super::x86::avx2::packed_k::K16_PACKED;
    let (m, n) = (acts.rows(), w.n_out);
    let row_nb = w.k / 256;
    let tiles = m.div_ceil(AMX_COLS);
    let groups = n / AMX_ROWS;
    let dst = SendPtr(out.as_mut_ptr());
    let p = pool::pool();
    AMX_ACTS.with_borrow_mut(|ua| {
        let ua = amx::aligned(ua, tiles * row_nb * AMX_ACT);
        amx::unsigned_acts(acts, m, row_nb, ua);
        let ua: &[u8] = ua;
        p.for_chunks(n_threads, groups, AMX_GROUPS, &|r| {
            AMX_BUF.with_borrow_mut(|(buf, tmp, accs)| {
                let gs = r.len();
                let packed = amx::aligned(buf, AMX_GROUPS * AMX_PACKED).as_mut_ptr();
                tmp.resize(2 * K16_PACKED, 0);
                // f32 accumulators of every group and tile: [group][prompt row][weight row]
                let per_group = tiles * AMX_COLS * AMX_ROWS;
                accs.clear();
                accs.resize(gs * per_group, 0.0);
                // SAFETY: `amx()` is set only where `amx::available()` (AVX-512 with AMX, the
                // tile state granted) and for its types; the buffers hold the blocks passed.
                unsafe {
                    let tiles_cfg = amx::Tiles::new();
                    let weights: Vec<[*const u8; AMX_ROWS]> = r
                        .clone()
                        .map(|g| std::array::from_fn(|i| w.row(g * AMX_ROWS + i).as_ptr()))
                        .collect();
                    let block = w.dtype.type_size();
                    for b in 0..row_nb {
                        for (gi, rows) in weights.iter().enumerate() {
                            let o = packed.add(gi * AMX_PACKED);
                            amx::pack(w.dtype, b, *rows, tmp.as_mut_ptr(), o);
                        }
                        if b + 1 < row_nb {
                            // the task's next super-block comes into L2 while the tiles run
                            // over this one (the packing read it from memory, and waited)
                            for &r in weights.iter().flatten() {
                                amx::prefetch(r.add((b + 1) * block), block);
                            }
                        }
                        for pair in 0..tiles.div_ceil(2) {
                            // two tiles per call (the last one alone: its twin computes nothing)
                            let ts = [2 * pair, (2 * pair + 1).min(tiles - 1)];
                            let t0 = ts.map(|i| i * AMX_COLS);
                            let used = [
                                (m - t0[0]).min(AMX_COLS),
                                if ts[1] == ts[0] {
                                    0
                                } else {
                                    (m - t0[1]).min(AMX_COLS)
                                },
                            ];
                            let x = ts.map(|i| ua.as_ptr().add((i * row_nb + b) * AMX_ACT));
                            for gi in 0..gs {
                                let base = accs.as_mut_ptr().add(gi * per_group);
                                let a = t0.map(|t| base.add(t * AMX_ROWS));
                                let o = packed.add(gi * AMX_PACKED);
                                amx::gemm(o, x, acts, t0, used, b, a);
                            }
                        }
                    }
                    drop(tiles_cfg);
                    for (gi, g) in r.enumerate() {
                        // SAFETY: (t, j) pairs of different tasks are disjoint.
                        let acc = accs.as_ptr().add(gi * per_group);
                        amx::store_results(acc, m, dst.get(), n, g * AMX_ROWS);
                    }
                }
            })
        });
    });
    single_row_tail(w, acts, dst, groups * AMX_ROWS, n_threads);
}
