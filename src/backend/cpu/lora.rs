//! CPU reference for `lora_forward` and `lora_backward` (DESIGN.md ops 1 and 2).
//!
//! The big products are few and large: the base product `x Wᵀ` once for a shared `x`, or
//! for per-particle `x` one GEMM over the stacked `[K·M, I]` rows (W packed once, not K
//! times); `dx` from one `(Σ_k dy_k) W` for a shared `x`, or one task per particle
//! (`dy_k W` then `+= s·g_k A_k` while `dx_k` is in cache). All particles' `A`
//! go through one GEMM where `x` is shared (`x·[A_1; …; A_K]ᵀ`, and `gᵀx` / `g A` for the
//! backward), so the rank-r products are `K·r` wide instead of `r`. The rank-r expansions
//! `s·h_k B_kᵀ` and `s·g_k A_k` are row updates ([`RowUpdate`]) finishing each output row
//! in registers and writing it once, straight into the output.

use super::gemm::{gemm, gemm_uninit, RowUpdate, SMALL_INNER};
use super::{data, data_mut, output_buffer, tensor};
use crate::backend::{GradTargets, LoraBackwardArgs, LoraDims, LoraForwardArgs};
use crate::error::Result;
use crate::tensor::{OutSlot, Strided, Tensor};
use rayon::prelude::*;
use std::borrow::Cow;
use std::mem::MaybeUninit;

/// Block `k` of a strided view, `len` elements long.
fn block<'a>(all: &'a [f32], view: &Strided, k: usize, len: usize) -> &'a [f32] {
    let start = view.offset + k * view.stride;
    &all[start..start + len]
}

/// The `k` blocks of a strided view as one `[k·len]` matrix: a borrow when they are back
/// to back (a `[K, r, I]` tensor), else gathered (the `[K, D]` arena).
fn stacked<'a>(all: &'a [f32], view: &Strided, k: usize, len: usize) -> Cow<'a, [f32]> {
    if view.stride == len {
        Cow::Borrowed(&all[view.offset..view.offset + k * len])
    } else {
        Cow::Owned(
            (0..k)
                .flat_map(|p| block(all, view, p, len))
                .copied()
                .collect(),
        )
    }
}

/// `x_k`: the shared `[M, I]` input or particle k's slice of `[K, M, I]`.
fn x_of<'a>(x: &'a [f32], d: &LoraDims, k: usize) -> &'a [f32] {
    let n = d.m * d.i;
    if d.x_shared {
        &x[..n]
    } else {
        &x[k * n..(k + 1) * n]
    }
}

/// `[rows, k·r]` (particle p in columns `p·r..`) to `[k, rows, r]`.
fn unstack_cols(src: &[f32], rows: usize, k: usize, r: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; k * rows * r];
    for (row, s) in src[..rows * k * r].chunks_exact(k * r).enumerate() {
        for (p, s) in s.chunks_exact(r).enumerate() {
            out[(p * rows + row) * r..][..r].copy_from_slice(s);
        }
    }
    out
}

/// `[k, rows, r]` to `[rows, k·r]`.
fn stack_cols(src: &[f32], rows: usize, k: usize, r: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; rows * k * r];
    for (row, o) in out.chunks_exact_mut(k * r).enumerate() {
        for (p, o) in o.chunks_exact_mut(r).enumerate() {
            o.copy_from_slice(&src[(p * rows + row) * r..][..r]);
        }
    }
    out
}

/// `out = x Wᵀ + bias` for `rows` rows of `x`, written in full.
fn base_product(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    rows: usize,
    d: &LoraDims,
    out: &mut [MaybeUninit<f32>],
) {
    match bias {
        Some(b) => {
            for row in out.chunks_mut(d.o) {
                for (o, &v) in row.iter_mut().zip(b) {
                    o.write(v);
                }
            }
            // SAFETY: every element was just written.
            let out = unsafe { &mut *(out as *mut [MaybeUninit<f32>] as *mut [f32]) };
            gemm(rows, d.o, d.i, 1.0, x, false, w, true, 1.0, out);
        }
        None => gemm_uninit(rows, d.o, d.i, 1.0, x, false, w, true, out),
    }
}

/// An output of `n` f32 that the caller writes in full before `assume_init`.
struct Out(Vec<f32>, usize);

impl Out {
    fn new(n: usize) -> Self {
        Out(output_buffer(n), n)
    }
    fn uninit(&mut self) -> &mut [MaybeUninit<f32>] {
        &mut self.0.spare_capacity_mut()[..self.1]
    }
    /// SAFETY: every element of `uninit()` has been written.
    unsafe fn assume_init(mut self) -> Vec<f32> {
        self.0.set_len(self.1);
        self.0
    }
}

/// Rows per parallel task of the shared-x row updates.
const ROW_TASK: usize = 32;

/// Whether to run per-particle work as one parallel task per particle (or group), with
/// the GEMMs inside single-threaded: one barrier per call instead of several per GEMM,
/// which matters most when the cores are shared with other work.
fn particle_parallel(tasks: usize) -> bool {
    tasks >= rayon::current_num_threads() && rayon::current_num_threads() > 1
}

/// `(particle, first row, rows)` work items of `ROW_TASK` output rows over every particle's
/// `[M, O]` block of `y` (`mo = M·O` elements each), for one parallel loop over all of them.
fn row_tasks<T>(y: &mut [T], mo: usize, o: usize) -> Vec<(usize, usize, &mut [T])> {
    let mut tasks = Vec::with_capacity(y.len().div_ceil(ROW_TASK * o));
    for (p, y_k) in y.chunks_mut(mo).enumerate() {
        for (c, part) in y_k.chunks_mut(ROW_TASK * o).enumerate() {
            tasks.push((p, c * ROW_TASK, part));
        }
    }
    tasks
}

/// `(first row, [every particle's rows])` work items of `ROW_TASK` output rows, each
/// holding the same rows of every particle's `[M, O]` block of `y` (`mo = M·O` each).
fn row_chunk_tasks<T>(y: &mut [T], mo: usize, o: usize) -> Vec<(usize, Vec<&mut [T]>)> {
    let chunks = mo.div_ceil(ROW_TASK * o);
    let mut tasks: Vec<(usize, Vec<&mut [T]>)> =
        (0..chunks).map(|c| (c * ROW_TASK, Vec::new())).collect();
    for y_k in y.chunks_mut(mo) {
        for (task, part) in tasks.iter_mut().zip(y_k.chunks_mut(ROW_TASK * o)) {
            task.1.push(part);
        }
    }
    tasks
}

/// `y_k += s · h_k B_kᵀ` for every particle by GEMM (ranks past the row-update width);
/// `bt[k]` is `B_kᵀ` (`[r, O]`).
fn add_rank_products(y: &mut [f32], h: &[f32], bt: &[Vec<f32>], d: &LoraDims, s: f32) {
    let (mo, mr) = (d.m * d.o, d.m * d.r);
    for (p, y_k) in y.chunks_mut(mo).enumerate() {
        gemm(
            d.m,
            d.o,
            d.r,
            s,
            &h[p * mr..(p + 1) * mr],
            false,
            &bt[p],
            false,
            1.0,
            y_k,
        );
    }
}

pub fn forward(args: &LoraForwardArgs) -> Result<(Tensor, Tensor)> {
    let d = args.dims;
    let (x, w) = (data(args.x)?, data(args.weight)?);
    let bias = args.bias.map(data).transpose()?;
    let (a_all, b_all) = (data(args.a.tensor)?, data(args.b.tensor)?);
    let (kk, m, o, r, s) = (d.k, d.m, d.o, d.r, args.scale);
    let (mo, mr, ri, or) = (m * o, m * r, r * d.i, o * r);
    let y_shape = [kk, m, o];
    let h_shape = [kk, m, r];
    // The checked entry points refuse zero sizes (`checks::lora_forward`).
    debug_assert!(kk * mo * r * d.i > 0);

    // B_kᵀ ([r, O]) per particle: each rank's column of B_k as a contiguous row.
    let bt: Vec<Vec<f32>> = (0..kk)
        .map(|p| super::transpose::transpose(block(b_all, &args.b, p, or), o, r))
        .collect();
    let mut y = Out::new(kk * mo);
    let h = if d.x_shared {
        // h for all particles from one GEMM against their stacked A ([K·r, I]).
        let a_cat = stacked(a_all, &args.a, kk, ri);
        let mut hx = vec![0.0f32; m * kk * r];
        gemm(m, kk * r, d.i, 1.0, x, false, &a_cat, true, 0.0, &mut hx);
        let h = unstack_cols(&hx, m, kk, r);
        // The base product once; each y_k = base + s·h_k B_kᵀ written in one pass, all
        // particles' rows in one parallel loop.
        let mut base = Out::new(mo);
        base_product(x, w, bias, m, &d, base.uninit());
        // SAFETY: `base_product` writes all of it.
        let base = unsafe { base.assume_init() };
        if r <= SMALL_INNER {
            let ups: Vec<RowUpdate> = (0..kk)
                .map(|p| RowUpdate::with_base(o, r, s, &h[p * mr..(p + 1) * mr], &bt[p], &base))
                .collect();
            // By row chunk, all particles in each: the chunk's base rows are read from
            // memory once and reused from cache for every particle.
            row_chunk_tasks(y.uninit(), mo, o)
                .into_par_iter()
                .for_each(|(row0, parts)| {
                    for (up, part) in ups.iter().zip(parts) {
                        up.write_rows(row0, part);
                    }
                });
        } else {
            for y_k in y.uninit().chunks_mut(mo) {
                for (y, &b) in y_k.iter_mut().zip(&base) {
                    y.write(b);
                }
            }
            // SAFETY: every particle's block was just written in full.
            let y_all = unsafe { &mut *(y.uninit() as *mut [MaybeUninit<f32>] as *mut [f32]) };
            add_rank_products(y_all, &h, &bt, &d, s);
        }
        h
    } else {
        // h_k per particle, then one GEMM over the stacked [K·M, I] rows (W packed once;
        // tall, so the crate's own threads), then += s·h_k B_kᵀ over all particles' rows
        // in one parallel loop.
        let mut h = vec![0.0f32; kk * mr];
        for (p, h_k) in h.chunks_mut(mr).enumerate() {
            let a_k = block(a_all, &args.a, p, ri);
            gemm(m, r, d.i, 1.0, x_of(x, &d, p), false, a_k, true, 0.0, h_k);
        }
        base_product(x, w, bias, kk * m, &d, y.uninit());
        // SAFETY: `base_product` wrote all K·M·O elements.
        let y_all = unsafe { &mut *(y.uninit() as *mut [MaybeUninit<f32>] as *mut [f32]) };
        if r <= SMALL_INNER {
            let ups: Vec<RowUpdate> = (0..kk)
                .map(|p| RowUpdate::in_place(o, r, s, &h[p * mr..(p + 1) * mr], &bt[p]))
                .collect();
            row_tasks(y_all, mo, o)
                .into_par_iter()
                .for_each(|(p, row0, part)| ups[p].add_rows(row0, part));
        } else {
            add_rank_products(y_all, &h, &bt, &d, s);
        }
        h
    };
    // SAFETY: every element of y was written above (both branches cover all K particles).
    let y = unsafe { y.assume_init() };
    Ok((tensor(&y_shape, y)?, tensor(&h_shape, h)?))
}

pub fn backward(args: &LoraBackwardArgs, grads: GradTargets<'_>) -> Result<Option<Tensor>> {
    let d = args.dims;
    let s = args.scale;
    let (dy, x, w, h) = (
        data(args.dy)?,
        data(args.x)?,
        data(args.weight)?,
        data(args.h)?,
    );
    let (a_all, b_all) = (data(args.a.tensor)?, data(args.b.tensor)?);
    let (kk, m, i, o, r) = (d.k, d.m, d.i, d.o, d.r);
    let (mo, mr, ri, or) = (m * o, m * r, r * i, o * r);
    // The checked entry points refuse zero sizes (`checks::lora_backward`).
    debug_assert!(kk * m * i * o * r > 0);

    // Per particle: g_k = dy_k B_k, d_lora_b_k = s dy_kᵀ h_k; for per-particle x also
    // d_lora_a_k = s g_kᵀ x_k and dx_k = dy_k W + s g_k A_k (the update while dx_k is in
    // cache). One parallel task per particle when there are enough of them.
    let mut g = vec![0.0f32; kk * mr];
    let mut db = vec![0.0f32; kk * or];
    let mut da = vec![0.0f32; kk * ri];
    let mut dx_pp = (args.need_dx && !d.x_shared).then(|| Out::new(kk * m * i));
    let one = |p: usize,
               g_k: &mut [f32],
               db_k: &mut [f32],
               da_k: &mut [f32],
               dx_k: Option<&mut [MaybeUninit<f32>]>| {
        let dy_k = &dy[p * mo..(p + 1) * mo];
        let b_k = block(b_all, &args.b, p, or);
        gemm(m, r, o, 1.0, dy_k, false, b_k, false, 0.0, g_k);
        gemm(
            o,
            r,
            m,
            s,
            dy_k,
            true,
            &h[p * mr..(p + 1) * mr],
            false,
            0.0,
            db_k,
        );
        if d.x_shared {
            return;
        }
        gemm(r, i, m, s, g_k, true, x_of(x, &d, p), false, 0.0, da_k);
        if let Some(dx_k) = dx_k {
            gemm_uninit(m, i, o, 1.0, dy_k, false, w, false, dx_k);
            // SAFETY: `gemm_uninit` wrote all of dx_k.
            let dx_k = unsafe { &mut *(dx_k as *mut [MaybeUninit<f32>] as *mut [f32]) };
            let a_k = block(a_all, &args.a, p, ri);
            if r <= SMALL_INNER {
                RowUpdate::in_place(i, r, s, g_k, a_k).add_rows(0, dx_k);
            } else {
                gemm(m, i, r, s, g_k, false, a_k, false, 1.0, dx_k);
            }
        }
    };
    let dx_parts: Vec<Option<&mut [MaybeUninit<f32>]>> = match dx_pp.as_mut() {
        Some(dx) => dx.uninit().chunks_mut(m * i).map(Some).collect(),
        None => (0..kk).map(|_| None).collect(),
    };
    let parts = g
        .chunks_mut(mr)
        .zip(db.chunks_mut(or))
        .zip(da.chunks_mut(ri))
        .zip(dx_parts)
        .enumerate();
    if particle_parallel(kk) {
        let parts: Vec<_> = parts.collect();
        parts
            .into_par_iter()
            .for_each(|(p, (((g_k, db_k), da_k), dx_k))| one(p, g_k, db_k, da_k, dx_k));
    } else {
        for (p, (((g_k, db_k), da_k), dx_k)) in parts {
            one(p, g_k, db_k, da_k, dx_k);
        }
    }

    // d_lora_a for a shared x: one GEMM, s·[g_1 … g_K]ᵀ x ([M, K·r]ᵀ · [M, I]).
    let g_cat = d.x_shared.then(|| stack_cols(&g, m, kk, r));
    if let Some(g_cat) = &g_cat {
        gemm(kk * r, i, m, s, g_cat, true, x, false, 0.0, &mut da);
    }
    let place = |out: &mut [f32], slot: OutSlot, blocks: &[f32], len: usize| {
        for (p, block) in blocks.chunks(len).enumerate() {
            let at = slot.offset + p * slot.stride;
            out[at..at + len].copy_from_slice(block);
        }
    };
    match grads {
        GradTargets::Arena(grad) => {
            let out = data_mut(grad)?;
            place(out, args.da, &da, ri);
            place(out, args.db, &db, or);
        }
        GradTargets::Split(ga, gb) => {
            place(data_mut(ga)?, args.da, &da, ri);
            place(data_mut(gb)?, args.db, &db, or);
        }
    }

    if !args.need_dx {
        return Ok(None);
    }
    let Some(g_cat) = g_cat else {
        // SAFETY: the per-particle tasks wrote every dx_k.
        let dx = unsafe { dx_pp.expect("per-particle dx").assume_init() };
        return tensor(&[kk, m, i], dx).map(Some);
    };
    // dx = (Σ_k dy_k) W + s·[g_1 … g_K]·[A_1; …; A_K]: one base product, not K.
    let mut dy_sum = vec![0.0f32; mo];
    let rows = 16usize;
    dy_sum
        .par_chunks_mut(rows * o)
        .enumerate()
        .for_each(|(t, acc)| {
            let (at, len) = (t * rows * o, acc.len());
            for dy_k in dy.chunks(mo).take(kk) {
                acc.iter_mut()
                    .zip(&dy_k[at..at + len])
                    .for_each(|(s, v)| *s += v);
            }
        });
    let mut dx = Out::new(m * i);
    gemm_uninit(m, i, o, 1.0, &dy_sum, false, w, false, dx.uninit());
    // SAFETY: `gemm_uninit` wrote all M·I elements.
    let mut dx = unsafe { dx.assume_init() };
    let a_cat = stacked(a_all, &args.a, kk, ri);
    gemm(m, i, kk * r, s, &g_cat, false, &a_cat, false, 1.0, &mut dx);
    tensor(&[m, i], dx).map(Some)
}
