//! CPU reference for `lora_forward` and `lora_backward` (DESIGN.md ops 1 and 2).

use super::{data, data_mut, gemm, tensor};
use crate::backend::{LoraBackwardArgs, LoraDims, LoraForwardArgs};
use crate::error::Result;
use crate::tensor::{Strided, Tensor};
use rayon::prelude::*;

/// Block `k` of a strided view, `len` elements long.
fn block<'a>(all: &'a [f32], view: &Strided, k: usize, len: usize) -> &'a [f32] {
    let start = view.offset + k * view.stride;
    &all[start..start + len]
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

/// `base = x Wᵀ + bias` for `rows` rows of `x`.
fn base_product(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    rows: usize,
    d: &LoraDims,
    out: &mut [f32],
) {
    match bias {
        Some(b) => {
            for row in out.chunks_mut(d.o) {
                row.copy_from_slice(b);
            }
            gemm(rows, d.o, d.i, 1.0, x, false, w, true, 1.0, out);
        }
        None => gemm(rows, d.o, d.i, 1.0, x, false, w, true, 0.0, out),
    }
}

/// Ranks up to this use row updates for `s·h_k B_kᵀ`; larger ones a GEMM.
const ROW_UPDATE_MAX_RANK: usize = 16;

/// `y_k = base + s · h_k B_kᵀ` (`base` given) or `y_k += s · h_k B_kᵀ` (`base` None).
/// For small r each output row is finished while it sits in L1: copy its base row, then r
/// scaled rows of `B_kᵀ`; one pass over `y_k` instead of a copy and a GEMM update.
fn add_low_rank(
    y_k: &mut [f32],
    base: Option<&[f32]>,
    h_k: &[f32],
    b_k: &[f32],
    d: &LoraDims,
    s: f32,
) {
    let (o, r) = (d.o, d.r);
    if r > ROW_UPDATE_MAX_RANK {
        if let Some(base) = base {
            y_k.copy_from_slice(base);
        }
        gemm(d.m, o, r, s, h_k, false, b_k, true, 1.0, y_k);
        return;
    }
    // B_kᵀ, [r, O], so each rank's column of B_k is a contiguous row.
    let bt: Vec<f32> = (0..r * o).map(|t| b_k[(t % o) * r + t / o]).collect();
    for (mi, y_row) in y_k.chunks_mut(o).enumerate() {
        if let Some(base) = base {
            y_row.copy_from_slice(&base[mi * o..(mi + 1) * o]);
        }
        for (rr, bt_r) in bt.chunks(o).enumerate() {
            let c = s * h_k[mi * r + rr];
            y_row.iter_mut().zip(bt_r).for_each(|(y, &b)| *y += c * b);
        }
    }
}

pub fn forward(args: &LoraForwardArgs) -> Result<(Tensor, Tensor)> {
    let d = args.dims;
    let (x, w) = (data(args.x)?, data(args.weight)?);
    let bias = args.bias.map(data).transpose()?;
    let (a_all, b_all) = (data(args.a.tensor)?, data(args.b.tensor)?);
    let (mo, mr) = (d.m * d.o, d.m * d.r);
    let mut y = vec![0.0f32; d.k * mo];
    let mut h = vec![0.0f32; d.k * mr];

    // h_k = x_k A_kᵀ.
    h.par_chunks_mut(mr).enumerate().for_each(|(k, h_k)| {
        let a_k = block(a_all, &args.a, k, d.r * d.i);
        gemm(
            d.m,
            d.r,
            d.i,
            1.0,
            x_of(x, &d, k),
            false,
            a_k,
            true,
            0.0,
            h_k,
        );
    });
    // The base product: once for a shared x; for per-particle x one GEMM over the stacked
    // [K·M, I] rows, so W is packed once rather than K times.
    let shared_base = if d.x_shared {
        let mut base = vec![0.0f32; mo];
        base_product(x, w, bias, d.m, &d, &mut base);
        Some(base)
    } else {
        base_product(x, w, bias, d.k * d.m, &d, &mut y);
        None
    };
    y.par_chunks_mut(mo)
        .zip(h.par_chunks(mr))
        .enumerate()
        .for_each(|(k, (y_k, h_k))| {
            let b_k = block(b_all, &args.b, k, d.o * d.r);
            add_low_rank(y_k, shared_base.as_deref(), h_k, b_k, &d, args.scale);
        });
    Ok((tensor(&[d.k, d.m, d.o], y)?, tensor(&[d.k, d.m, d.r], h)?))
}

pub fn backward(args: &LoraBackwardArgs, grad: &mut Tensor) -> Result<Option<Tensor>> {
    let d = args.dims;
    let s = args.scale;
    let (dy, x, w, h) = (
        data(args.dy)?,
        data(args.x)?,
        data(args.weight)?,
        data(args.h)?,
    );
    let (a_all, b_all) = (data(args.a.tensor)?, data(args.b.tensor)?);
    let (mo, mr, ri, or) = (d.m * d.o, d.m * d.r, d.r * d.i, d.o * d.r);

    // Per particle: g_k = dy_k B_k, d_lora_b_k = s dy_kᵀ h_k, d_lora_a_k = s g_kᵀ x_k.
    let per_particle: Vec<(Vec<f32>, Vec<f32>, Vec<f32>)> = (0..d.k)
        .into_par_iter()
        .map(|k| {
            let dy_k = &dy[k * mo..(k + 1) * mo];
            let h_k = &h[k * mr..(k + 1) * mr];
            let b_k = block(b_all, &args.b, k, or);
            let mut g = vec![0.0f32; mr];
            gemm(d.m, d.r, d.o, 1.0, dy_k, false, b_k, false, 0.0, &mut g);
            let mut db = vec![0.0f32; or];
            gemm(d.o, d.r, d.m, s, dy_k, true, h_k, false, 0.0, &mut db);
            let mut da = vec![0.0f32; ri];
            gemm(
                d.r,
                d.i,
                d.m,
                s,
                &g,
                true,
                x_of(x, &d, k),
                false,
                0.0,
                &mut da,
            );
            (g, da, db)
        })
        .collect();

    let dx = if args.need_dx {
        Some(input_grad(args, &d, dy, w, a_all, &per_particle)?)
    } else {
        None
    };

    let out = data_mut(grad)?;
    for (k, (_, da, db)) in per_particle.iter().enumerate() {
        let a0 = args.da.offset + k * args.da.stride;
        out[a0..a0 + ri].copy_from_slice(da);
        let b0 = args.db.offset + k * args.db.stride;
        out[b0..b0 + or].copy_from_slice(db);
    }
    Ok(dx)
}

/// `dx_k = dy_k W + s g_k A_k`; for a shared x, `dx = (Σ_k dy_k) W + s Σ_k g_k A_k`.
fn input_grad(
    args: &LoraBackwardArgs,
    d: &LoraDims,
    dy: &[f32],
    w: &[f32],
    a_all: &[f32],
    per_particle: &[(Vec<f32>, Vec<f32>, Vec<f32>)],
) -> Result<Tensor> {
    let (mo, mi, ri) = (d.m * d.o, d.m * d.i, d.r * d.i);
    if d.x_shared {
        let mut dy_sum = vec![0.0f32; mo];
        for dy_k in dy.chunks(mo.max(1)).take(d.k) {
            dy_sum.iter_mut().zip(dy_k).for_each(|(s, v)| *s += v);
        }
        let mut dx = vec![0.0f32; mi];
        gemm(d.m, d.i, d.o, 1.0, &dy_sum, false, w, false, 0.0, &mut dx);
        for (k, (g, _, _)) in per_particle.iter().enumerate() {
            let a_k = block(a_all, &args.a, k, ri);
            gemm(
                d.m, d.i, d.r, args.scale, g, false, a_k, false, 1.0, &mut dx,
            );
        }
        tensor(&[d.m, d.i], dx)
    } else {
        let mut dx = vec![0.0f32; d.k * mi];
        dx.par_chunks_mut(mi.max(1))
            .enumerate()
            .for_each(|(k, dx_k)| {
                let dy_k = &dy[k * mo..(k + 1) * mo];
                gemm(d.m, d.i, d.o, 1.0, dy_k, false, w, false, 0.0, dx_k);
                let a_k = block(a_all, &args.a, k, ri);
                let g = &per_particle[k].0;
                gemm(d.m, d.i, d.r, args.scale, g, false, a_k, false, 1.0, dx_k);
            });
        tensor(&[d.k, d.m, d.i], dx)
    }
}
