//! Host side of `shaders/lora.wgsl`: `lora_forward` (h on the matmul kernels, for a shared
//! x as one product over the K particles' stacked A, then the fused base + low-rank pass)
//! and `lora_backward` (g, d_lora_b, d_lora_a on the matmul kernels, then the fused dx
//! pass), each one submission. The fused passes run on 64×64 tiles, or on the 128×128
//! `_128` variants where the GEMMs would take `gemm_tiled_128`.

use super::kernels::{Kernel, Params, Step};
use super::matmul::{self, Gemm, Groups, Operand};
use super::{bind, bind4, storage, storage_mut, tensor, WgpuBackend};
use crate::backend::{GradTargets, LoraBackwardArgs, LoraForwardArgs};
use crate::dtype::DType;
use crate::error::Result;
use crate::tensor::Tensor;

/// The fused kernel and its square tile for a `rows × cols` output: the 128×128 variants
/// (8×8 per invocation) where [`matmul::prefers_128`] says so, else 64×64.
fn fused(
    be: &WgpuBackend,
    rows: usize,
    cols: usize,
    small: Kernel,
    big: Kernel,
) -> (Kernel, usize) {
    if matmul::prefers_128(rows, cols, 1, be.min_big_tiles()) {
        (big, 128)
    } else {
        (small, 64)
    }
}

/// `lora_forward`, f32 or 16-bit: for bf16 / f16 operands (x, weight, lora_a, lora_b all one
/// type) h runs on the 16-bit GEMM ([`matmul::half_step`]) and y on `lora_forward_bf16` /
/// `lora_forward_f16` (or their `_128` variants, chosen as the f32 ones), both reading the
/// packed operands as stored (no f32 copy; a 16-bit bias, O elements, is widened).
pub fn forward(be: &WgpuBackend, args: &LoraForwardArgs) -> Result<(Tensor, Tensor)> {
    let op = "lora_forward";
    let d = args.dims;
    let dt = args.x.dtype();
    let rows = if d.x_shared { d.m } else { d.k * d.m };
    let x = storage(op, args.x)?;
    let w = storage(op, args.weight)?;
    let wide_bias = match args.bias {
        Some(b) if b.dtype().is_half() => Some(super::cast::cast(be, b, DType::F32)?),
        _ => None,
    };
    let bias = wide_bias.as_ref().or(args.bias);
    let bias = bias.map(|b| storage(op, b)).transpose()?;
    let a = storage(op, args.a.tensor)?;
    let b = storage(op, args.b.tensor)?;
    let h = be.alloc(d.k * d.m * d.r)?;
    let y = be.alloc(d.k * d.m * d.o)?;
    // The f32 kernels read vec4 operands (bindings rounded up to 16 bytes), the 16-bit ones
    // the packed words as they are.
    let operand = if dt.is_half() { bind } else { bind4 };

    // h_k = x_k A_kᵀ: [M, I] · [r, I]ᵀ. For a shared x, one product x [A_0; …; A_K-1]ᵀ
    // ([M, I] · [I, K·r], the A rows read through the arena stride, h written as [K, M, r]);
    // for a per-particle x, a batch of K.
    let x_op = Operand {
        binding: operand(x),
        offset: 0,
        stride: if d.x_shared { 0 } else { d.m * d.i },
    };
    let a_op = Operand {
        binding: operand(a),
        offset: args.a.offset,
        stride: args.a.stride,
    };
    let h_op = Operand {
        binding: bind(&h),
        offset: 0,
        stride: d.m * d.r,
    };
    let (batch, n, groups) = if d.x_shared {
        let groups = Groups {
            cols: d.r,
            b_stride: args.a.stride,
            c_stride: d.m * d.r,
        };
        (1, d.k * d.r, Some(groups))
    } else {
        (d.k, d.r, None)
    };
    let gemm = Gemm {
        batch,
        m: d.m,
        n,
        inner: d.i,
        trans_a: false,
        trans_b: true,
        alpha: 1.0,
    };
    let h_step = if dt.is_half() {
        matmul::half_step(be, dt, &gemm, x_op, a_op, h_op, groups)?
    } else {
        matmul::step_with(be, &gemm, x_op, a_op, h_op, groups)
    };
    let (small, big) = match dt {
        DType::BF16 => (Kernel::LoraForwardBf16, Kernel::LoraForwardBf16_128),
        DType::F16 => (Kernel::LoraForwardF16, Kernel::LoraForwardF16_128),
        DType::F32 => (Kernel::LoraForward, Kernel::LoraForward128),
    };
    let (kernel, tile) = fused(be, rows, d.o, small, big);
    let (tiles_rows, tiles_cols) = (rows.div_ceil(tile), d.o.div_ceil(tile));
    let params = Params::named()
        .set_u("k", d.k)
        .set_u("m", d.m)
        .set_u("i", d.i)
        .set_u("o", d.o)
        .set_u("r", d.r)
        .set_u("x_shared", d.x_shared as usize)
        .set_u("has_bias", bias.is_some() as usize)
        .set_u("rows", rows)
        .set_u("f_off", args.b.offset)
        .set_u("f_stride", args.b.stride)
        .set_u("tiles_rows", tiles_rows)
        .set_u("tiles_cols", tiles_cols)
        .set_f("scale", args.scale);
    let y_step = Step {
        kernel,
        params,
        // Without a bias, the weight stands in for the unused bias binding.
        bindings: vec![
            operand(x),
            operand(w),
            operand(b),
            bind4(&h),
            bind(bias.unwrap_or(w)),
            bind(&y),
        ],
        groups: (tiles_rows * tiles_cols) as u64,
    };
    be.run(op, &[h_step, y_step])?;
    Ok((tensor(&[d.k, d.m, d.o], y)?, tensor(&[d.k, d.m, d.r], h)?))
}

pub fn backward(
    be: &WgpuBackend,
    args: &LoraBackwardArgs,
    grads: GradTargets<'_>,
) -> Result<Option<Tensor>> {
    let op = "lora_backward";
    let d = args.dims;
    let rows = if d.x_shared { d.m } else { d.k * d.m };
    let dy = storage(op, args.dy)?;
    let x = storage(op, args.x)?;
    let w = storage(op, args.weight)?;
    let a = storage(op, args.a.tensor)?;
    let b = storage(op, args.b.tensor)?;
    let h = storage(op, args.h)?;
    let (ga, gb) = match grads {
        GradTargets::Arena(grad) => {
            let g = storage_mut(op, grad)?;
            (g, g)
        }
        GradTargets::Split(da, db) => (storage_mut(op, da)?, storage_mut(op, db)?),
    };
    let g = be.alloc(d.k * d.m * d.r)?;
    let dx = if args.need_dx {
        Some(be.alloc(rows * d.i)?)
    } else {
        None
    };
    let dy_blocks = Operand {
        binding: bind4(dy),
        offset: 0,
        stride: d.m * d.o,
    };
    let g_out = Operand {
        binding: bind(&g),
        offset: 0,
        stride: d.m * d.r,
    };
    let g_blocks = Operand {
        binding: bind4(&g),
        ..g_out
    };
    let mut steps = vec![
        // g_k = dy_k B_k: [M, O] · [O, r].
        matmul::step(
            be,
            &Gemm {
                batch: d.k,
                m: d.m,
                n: d.r,
                inner: d.o,
                trans_a: false,
                trans_b: false,
                alpha: 1.0,
            },
            dy_blocks,
            Operand {
                binding: bind4(b),
                offset: args.b.offset,
                stride: args.b.stride,
            },
            g_out,
        ),
        // d_lora_b_k = s · dy_kᵀ h_k: [O, M] · [M, r].
        matmul::step(
            be,
            &Gemm {
                batch: d.k,
                m: d.o,
                n: d.r,
                inner: d.m,
                trans_a: true,
                trans_b: false,
                alpha: args.scale,
            },
            dy_blocks,
            Operand {
                binding: bind4(h),
                offset: 0,
                stride: d.m * d.r,
            },
            Operand {
                binding: bind(gb),
                offset: args.db.offset,
                stride: args.db.stride,
            },
        ),
        // d_lora_a_k = s · g_kᵀ x_k: [r, M] · [M, I].
        matmul::step(
            be,
            &Gemm {
                batch: d.k,
                m: d.r,
                n: d.i,
                inner: d.m,
                trans_a: true,
                trans_b: false,
                alpha: args.scale,
            },
            g_blocks,
            Operand {
                binding: bind4(x),
                offset: 0,
                stride: if d.x_shared { 0 } else { d.m * d.i },
            },
            Operand {
                binding: bind(ga),
                offset: args.da.offset,
                stride: args.da.stride,
            },
        ),
    ];
    if let Some(dx) = &dx {
        let (kernel, tile) = fused(be, rows, d.i, Kernel::LoraDx, Kernel::LoraDx128);
        let (tiles_rows, tiles_cols) = (rows.div_ceil(tile), d.i.div_ceil(tile));
        let params = Params::named()
            .set_u("k", d.k)
            .set_u("m", d.m)
            .set_u("i", d.i)
            .set_u("o", d.o)
            .set_u("r", d.r)
            .set_u("x_shared", d.x_shared as usize)
            .set_u("has_bias", 0)
            .set_u("rows", rows)
            .set_u("f_off", args.a.offset)
            .set_u("f_stride", args.a.stride)
            .set_u("tiles_rows", tiles_rows)
            .set_u("tiles_cols", tiles_cols)
            .set_f("scale", args.scale);
        steps.push(Step {
            kernel,
            params,
            bindings: vec![bind4(dy), bind4(w), bind4(a), bind4(&g), bind(dx)],
            groups: (tiles_rows * tiles_cols) as u64,
        });
    }
    be.run(op, &steps)?;
    drop(steps);
    match dx {
        Some(dx) if d.x_shared => Ok(Some(tensor(&[d.m, d.i], dx)?)),
        Some(dx) => Ok(Some(tensor(&[d.k, d.m, d.i], dx)?)),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests;
