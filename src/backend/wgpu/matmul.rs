//! Host side of `shaders/matmul.wgsl`: the general batched GEMM, also used for the small
//! products of `lora_forward` / `lora_backward`.

use super::kernels::{Binding, Kernel, Params, Step};
use super::{bind, storage, storage_mut, WgpuBackend};
use crate::backend::MatmulArgs;
use crate::error::Result;
use crate::tensor::Tensor;

/// Output tiles (rows × columns) of `matmul` and of `matmul_skinny`, which takes products
/// at most 16 columns wide (the r-wide LoRA products) so that fewer lanes idle.
const TILE: (usize, usize) = (64, 64);
const SKINNY_TILE: (usize, usize) = (128, 16);

/// A buffer with per-batch blocks at `offset + b · stride` (stride 0: shared).
#[derive(Clone, Copy)]
pub struct Operand<'a> {
    pub binding: Binding<'a>,
    pub offset: usize,
    pub stride: usize,
}

/// The shape of one batched product `c = alpha · op(a) op(b)`.
pub struct Gemm {
    pub batch: usize,
    pub m: usize,
    pub n: usize,
    pub inner: usize,
    pub trans_a: bool,
    pub trans_b: bool,
    pub alpha: f32,
}

/// One dispatch of the matmul kernel; `c` is written, never accumulated into.
pub fn step<'a>(g: &Gemm, a: Operand<'a>, b: Operand<'a>, c: Operand<'a>) -> Step<'a> {
    let (kernel, (tm, tn)) = if g.n <= SKINNY_TILE.1 {
        (Kernel::MatmulSkinny, SKINNY_TILE)
    } else {
        (Kernel::Matmul, TILE)
    };
    let (tiles_m, tiles_n) = (g.m.div_ceil(tm), g.n.div_ceil(tn));
    let params = Params::default()
        .u(g.m)
        .u(g.n)
        .u(g.inner)
        .u(g.batch)
        .u(a.offset)
        .u(a.stride)
        .u(b.offset)
        .u(b.stride)
        .u(c.offset)
        .u(c.stride)
        .u(g.trans_a as usize)
        .u(g.trans_b as usize)
        .f(g.alpha)
        .u(tiles_m)
        .u(tiles_n);
    Step {
        kernel,
        params,
        bindings: vec![a.binding, b.binding, c.binding],
        groups: (tiles_m * tiles_n * g.batch) as u64,
    }
}

pub fn matmul(be: &WgpuBackend, args: &MatmulArgs, out: &mut Tensor) -> Result<()> {
    let op = "matmul";
    let a = storage(op, args.a.tensor)?;
    let b = storage(op, args.b.tensor)?;
    let c = storage_mut(op, out)?;
    let gemm = Gemm {
        batch: args.batch,
        m: args.m,
        n: args.n,
        inner: args.inner,
        trans_a: args.trans_a,
        trans_b: args.trans_b,
        alpha: args.alpha,
    };
    let s = step(
        &gemm,
        Operand {
            binding: bind(a),
            offset: args.a.offset,
            stride: args.a.stride,
        },
        Operand {
            binding: bind(b),
            offset: args.b.offset,
            stride: args.b.stride,
        },
        Operand {
            binding: bind(c),
            offset: args.out.offset,
            stride: args.out.stride,
        },
    );
    be.run(op, &[s])
}
