//! `gemm_tiled` / `gemm_tiled_128` / `gemm_narrow_splitk` (kernels/matmul.ptx): the `matmul`
//! op, and the GEMMs `lora_backward` and the per-particle path of `lora_forward` are built
//! from.
//!
//! Three kernels, one contract and one parameter list: `gemm_tiled_128` (128×128 tiles, 8×8
//! per thread, double-buffered) for large products, `gemm_tiled` (64×64 tiles, 4×4 per
//! thread) for small ones, `gemm_narrow_splitk` (64×16 tiles, k split 16 ways inside the
//! CTA, 8×8 per thread) for narrow ones: n ≤ 16, or m ≤ 16 run as the transposed product. [`choose`] picks
//! per launch (the rule is on it).

use super::driver::{Driver, Param};
use super::modules::{grid_1d, resident_ctas, u32_of, MATMUL};
use super::{ptr_at, PtxBackend};
use crate::backend::MatmulArgs;
use crate::error::Result;
use crate::tensor::Tensor;

/// A matrix operand: a buffer, the element offset of block 0, the block stride (0 =
/// shared by every block), and the strides of its two logical dimensions.
pub(crate) struct Operand<'a, B> {
    pub buf: &'a B,
    pub offset: usize,
    pub block_stride: usize,
    /// Stride of the first logical index (row of op(A); k of op(B)).
    pub s0: usize,
    /// Stride of the second logical index (k of op(A); column of op(B)).
    pub s1: usize,
}

/// `C_b = alpha · Σ_{q<nred} opA_{b·nred+q} opB_{b·nred+q} (+ beta·C_b) (+ bias)` for
/// `b < batch`; `C_b` is `[m, n]` with row stride `c_row` at `c_offset + b·c_block`.
pub(crate) struct Gemm<'a, B> {
    pub m: usize,
    pub n: usize,
    pub inner: usize,
    pub batch: usize,
    pub nred: usize,
    pub a: Operand<'a, B>,
    pub b: Operand<'a, B>,
    pub c: &'a B,
    pub c_offset: usize,
    pub c_block: usize,
    pub c_row: usize,
    pub alpha: f32,
    /// `Some(beta)`: add `beta · C` (C is read); `None`: overwrite C.
    pub beta: Option<f32>,
    pub bias: Option<&'a B>,
}

/// One GEMM kernel of kernels/matmul.ptx and what the host sizes its launches from.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Kernel {
    pub name: &'static str,
    /// the output tile of one work unit: rows (m) × columns (n)
    pub tile_m: usize,
    pub tile_n: usize,
    /// registers per thread: the larger of ptxas' sm_80 and sm_90 reports (a unit test
    /// checks these against ptxas when it is installed)
    pub regs: u32,
    /// static shared memory per CTA, bytes (ptxas)
    pub smem: u32,
    /// modelled time of one tile relative to one `gemm_tiled` tile over the same `inner`
    /// (`bella profile --op matmul --scale gpu`, 4096³ on H100: 2424 µs for 1024/132 tiles
    /// of 128 per SM = 312 µs a tile, 4766 µs for 4096/132 tiles of 64 = 154 µs: 2.0)
    pub tile_cost: f64,
}

/// 64×64 tiles, 16-deep slices, 4×4 per thread.
pub(crate) const SMALL: Kernel = Kernel {
    name: "gemm_tiled",
    tile_m: 64,
    tile_n: 64,
    regs: 48,
    smem: 8704,
    tile_cost: 1.0,
};

/// 128×128 tiles, 8-deep double-buffered slices, 8×8 per thread.
pub(crate) const LARGE: Kernel = Kernel {
    name: "gemm_tiled_128",
    tile_m: 128,
    tile_n: 128,
    regs: 128,
    smem: 16896,
    tile_cost: 2.0,
};

/// 64×16 tiles, 32-deep slices split 16 ways (2 k per group of 16 threads), 8×8 per thread,
/// the groups' partial tiles summed through shared memory in a fixed tree.
pub(crate) const NARROW: Kernel = Kernel {
    name: "gemm_narrow_splitk",
    tile_m: 64,
    tile_n: 16,
    regs: 128,
    smem: 32768,
    // a quarter of a 64-tile's FMAs per k (not used by `choose`, which takes this kernel by
    // shape)
    tile_cost: 0.25,
};

/// `gemm_narrow_splitk` takes products with n (or, transposed, m) at most this.
pub(crate) const NARROW_MAX: usize = 16;

/// `flags` bit 2 of `gemm_narrow_splitk`: store the product transposed.
const FLAG_TRANSPOSED: u32 = 4;

impl Kernel {
    fn tiles(&self, m: usize, n: usize, batch: usize) -> usize {
        m.div_ceil(self.tile_m) * n.div_ceil(self.tile_n) * batch
    }

    /// Resident 256-thread CTAs per SM on sm_80 and sm_90 (the smaller), from the
    /// kernel's registers and shared memory: the grid holds that many CTAs per SM.
    pub fn blocks_per_sm(&self) -> u32 {
        resident_ctas(self.regs, self.smem)
    }
}

/// The kernel for an `m × n` output over `batch` blocks on `sms` SMs.
///
/// **Narrow**: `min(m, n) ≤ 16` ([`NARROW_MAX`]) takes `gemm_narrow_splitk` (64×16 tiles: a
/// quarter of the FMAs of a 64×64 tile on a 16-wide product, and four times the tiles to
/// spread over the SMs; LoRA's `g = dy B`, `d_lora_b`, `d_lora_a` at r ≤ 16 and the
/// per-particle `h = x Aᵀ` at r ≤ 16). When `m < n` it runs as the transposed product
/// `cᵀ = op(B)ᵀ op(A)ᵀ` ([`Gemm::launch_with`] swaps the operands' strides and the kernel
/// stores transposed), so the 16-wide side is always the tile's 16.
///
/// **Otherwise** each kernel's time is
/// estimated as its waves of tiles, `ceil(tiles / sms)` (tiles spread evenly over the SMs;
/// CTAs resident on one SM share its pipes), times its per-tile cost ([`Kernel::tile_cost`]);
/// `gemm_tiled_128` is taken when that is strictly lower. So large products (4096³ on 132
/// SMs: 8 waves of 128-tiles, cost 16, against 32 waves of 64-tiles) take `gemm_tiled_128`;
/// products with m or n ≤ 64 (half as many 128-tiles at twice the cost: never strictly
/// cheaper), or too few tiles to fill the SMs (130×133: one wave either way), keep
/// `gemm_tiled`, whose smaller tiles waste less of a skinny edge and spread over more SMs.
pub(crate) fn choose(m: usize, n: usize, batch: usize, sms: usize) -> &'static Kernel {
    if m.min(n) <= NARROW_MAX {
        return &NARROW;
    }
    let sms = sms.max(1);
    let est = |k: &Kernel| k.tiles(m, n, batch).div_ceil(sms) as f64 * k.tile_cost;
    if est(&LARGE) < est(&SMALL) {
        &LARGE
    } else {
        &SMALL
    }
}

impl<'a, B> Gemm<'a, B> {
    pub fn launch<D: Driver<Buf = B>>(&self, be: &PtxBackend<D>) -> Result<()> {
        let sms = be.props().sm_count as usize;
        self.launch_with(be, choose(self.m, self.n, self.batch, sms))
    }

    /// Launch on a given kernel (tests run each on the same shapes); `gemm_narrow_splitk`
    /// runs the transposed product when `m < n` (see [`choose`]).
    pub(crate) fn launch_with<D: Driver<Buf = B>>(
        &self,
        be: &PtxBackend<D>,
        kernel: &Kernel,
    ) -> Result<()> {
        let transposed = kernel.name == NARROW.name && self.m < self.n;
        self.launch_as(be, kernel, transposed)
    }

    /// Launch on a given kernel, as the product itself or (`transposed`, `gemm_narrow_splitk`
    /// only) as `cᵀ = op(B)ᵀ op(A)ᵀ`: an `n × m` product with op(A)' = op(B)ᵀ, op(B)' =
    /// op(A)ᵀ (the operands and their strides swapped), stored transposed into C (flags bit 2,
    /// the bias indexed by the product's row, C's column).
    pub(crate) fn launch_as<D: Driver<Buf = B>>(
        &self,
        be: &PtxBackend<D>,
        kernel: &Kernel,
        transposed: bool,
    ) -> Result<()> {
        if self.m == 0 || self.n == 0 || self.batch == 0 {
            return Ok(());
        }
        let k = kernel.name;
        assert!(
            !transposed || k == NARROW.name,
            "{k} has no transposed store"
        );
        // op(A)' (row, k) = op(B)(k, row): row stride b.s1, k stride b.s0; op(B)' (k, col) =
        // op(A)(col, k): k stride a.s1, column stride a.s0.
        let (m, n, a, b) = if transposed {
            let a = (&self.b, self.b.s1, self.b.s0);
            let b = (&self.a, self.a.s1, self.a.s0);
            (self.n, self.m, a, b)
        } else {
            let a = (&self.a, self.a.s0, self.a.s1);
            let b = (&self.b, self.b.s0, self.b.s1);
            (self.m, self.n, a, b)
        };
        let tiles = kernel.tiles(m, n, self.batch);
        u32_of(k, "tile count", tiles)?;
        let flags = u32::from(self.beta.is_some())
            | (u32::from(self.bias.is_some()) << 1)
            | if transposed { FLAG_TRANSPOSED } else { 0 };
        let params = vec![
            ("p_c", ptr_at(self.c, self.c_offset)),
            ("p_a", ptr_at(a.0.buf, a.0.offset)),
            ("p_b", ptr_at(b.0.buf, b.0.offset)),
            // the bias pointer is never read without flag bit 1; any valid buffer will do
            ("p_bias", ptr_at(self.bias.unwrap_or(self.c), 0)),
            ("p_m", Param::U32(u32_of(k, "m", m)?)),
            ("p_n", Param::U32(u32_of(k, "n", n)?)),
            ("p_inner", Param::U32(u32_of(k, "inner", self.inner)?)),
            ("p_batch", Param::U32(u32_of(k, "batch", self.batch)?)),
            ("p_nred", Param::U32(u32_of(k, "nred", self.nred)?)),
            (
                "p_a_bs",
                Param::U32(u32_of(k, "a block stride", a.0.block_stride)?),
            ),
            ("p_a_sm", Param::U32(u32_of(k, "a row stride", a.1)?)),
            ("p_a_sk", Param::U32(u32_of(k, "a k stride", a.2)?)),
            (
                "p_b_bs",
                Param::U32(u32_of(k, "b block stride", b.0.block_stride)?),
            ),
            ("p_b_sk", Param::U32(u32_of(k, "b k stride", b.1)?)),
            ("p_b_sn", Param::U32(u32_of(k, "b column stride", b.2)?)),
            (
                "p_c_bs",
                Param::U32(u32_of(k, "c block stride", self.c_block)?),
            ),
            ("p_c_sm", Param::U32(u32_of(k, "c row stride", self.c_row)?)),
            ("p_alpha", Param::F32(self.alpha)),
            ("p_beta", Param::F32(self.beta.unwrap_or(0.0))),
            ("p_flags", Param::U32(flags)),
        ];
        // Tiles are heavy (a full sweep of `inner`): one CTA per tile, up to as many per SM
        // as are resident together (occupancy); the CTAs loop over the rest.
        let grid = grid_1d(be.props(), tiles, kernel.blocks_per_sm());
        be.launch_named(MATMUL, k, grid, params)
    }
}

/// Row/k strides of a stored `[rows, cols]` row-major matrix used as `op(X)` (`[r, c]`).
/// Not transposed: stored `[r, c]`, strides (c, 1). Transposed: stored `[c, r]`, (1, r).
pub(crate) fn op_strides(rows: usize, cols: usize, transposed: bool) -> (usize, usize) {
    if transposed {
        (1, rows)
    } else {
        (cols, 1)
    }
}

pub fn matmul<D: Driver>(be: &PtxBackend<D>, args: &MatmulArgs, out: &mut Tensor) -> Result<()> {
    let (a_buf, b_buf) = (be.buf(args.a.tensor)?, be.buf(args.b.tensor)?);
    let c = be.buf_mut(out)?;
    let (a0, a1) = op_strides(args.m, args.inner, args.trans_a);
    let (b0, b1) = op_strides(args.inner, args.n, args.trans_b);
    Gemm {
        m: args.m,
        n: args.n,
        inner: args.inner,
        batch: args.batch,
        nred: 1,
        a: Operand {
            buf: a_buf,
            offset: args.a.offset,
            block_stride: args.a.stride,
            s0: a0,
            s1: a1,
        },
        b: Operand {
            buf: b_buf,
            offset: args.b.offset,
            block_stride: args.b.stride,
            s0: b0,
            s1: b1,
        },
        c,
        c_offset: args.out.offset,
        c_block: args.out.stride,
        c_row: args.n,
        alpha: args.alpha,
        beta: None,
        bias: None,
    }
    .launch(be)
}

#[cfg(all(test, feature = "ptx-sim"))]
mod tests {
    //! Both kernels on the same strided, batched, reduced, broadcast, beta and bias cases,
    //! on the PTX simulator against a float64 loop; and the host's kernel choice.
    use super::*;
    use crate::backend::ptx_sim::SimDriver;
    use crate::rng::Rng;

    /// Element offsets and strides of one operand in its own buffer of `len` floats.
    #[derive(Clone, Copy)]
    struct Layout {
        offset: usize,
        block_stride: usize,
        s0: usize,
        s1: usize,
        len: usize,
    }

    /// A `rows × cols` operand per block (`blocks` of them; `shared`: one, block stride 0),
    /// stored transposed or not, with `pad` spare floats per stored row and `offset` floats
    /// in front (odd values make rows and blocks misaligned).
    fn layout(
        rows: usize,
        cols: usize,
        t: bool,
        blocks: usize,
        shared: bool,
        pad: usize,
        offset: usize,
    ) -> Layout {
        let (srows, scols) = if t { (cols, rows) } else { (rows, cols) };
        let pitch = scols + pad;
        let block = srows * pitch;
        let (s0, s1) = if t { (1, pitch) } else { (pitch, 1) };
        let nblocks = if shared { 1 } else { blocks };
        Layout {
            offset,
            block_stride: if shared { 0 } else { block },
            s0,
            s1,
            len: offset + nblocks * block,
        }
    }

    struct Case {
        m: usize,
        n: usize,
        inner: usize,
        batch: usize,
        nred: usize,
        ta: bool,
        tb: bool,
        shared_a: bool,
        shared_b: bool,
        pad: usize,
        offset: usize,
        beta: Option<f32>,
        bias: bool,
    }

    impl Case {
        /// The route `launch_with` takes for the kernel.
        fn run(&self, kernel: &Kernel) {
            self.run_as(kernel, kernel.name == NARROW.name && self.m < self.n);
        }

        fn run_as(&self, kernel: &Kernel, transposed: bool) {
            let sim = PtxBackend::new(SimDriver::new()).expect("simulator loads kernels/");
            let d = sim.driver();
            let mut rng = Rng::new(Rng::fresh_seed());
            let blocks = self.batch * self.nred;
            let la = layout(
                self.m,
                self.inner,
                self.ta,
                blocks,
                self.shared_a,
                self.pad,
                self.offset,
            );
            let lb = layout(
                self.inner,
                self.n,
                self.tb,
                blocks,
                self.shared_b,
                self.pad,
                2 * self.offset,
            );
            let c_row = self.n + self.pad;
            let c_block = self.m * c_row + self.pad;
            let c_off = self.offset;
            let c_len = c_off + self.batch * c_block;
            let (a, b, c0, bias) = (
                rng.normal_vec(la.len),
                rng.normal_vec(lb.len),
                rng.normal_vec(c_len),
                rng.normal_vec(self.n),
            );
            let (alpha, beta) = (0.75f32, self.beta);
            // the float64 reference, C outside the m × n blocks untouched
            let mut want: Vec<f64> = c0.iter().map(|&v| v as f64).collect();
            for bi in 0..self.batch {
                for i in 0..self.m {
                    for j in 0..self.n {
                        let mut acc = 0f64;
                        for q in 0..self.nred {
                            let blk = bi * self.nred + q;
                            for k in 0..self.inner {
                                let av =
                                    a[la.offset + blk * la.block_stride + i * la.s0 + k * la.s1];
                                let bv =
                                    b[lb.offset + blk * lb.block_stride + k * lb.s0 + j * lb.s1];
                                acc += av as f64 * bv as f64;
                            }
                        }
                        let at = c_off + bi * c_block + i * c_row + j;
                        let mut v = alpha as f64 * acc;
                        if let Some(beta) = beta {
                            v += beta as f64 * c0[at] as f64;
                        }
                        if self.bias {
                            v += bias[j] as f64;
                        }
                        want[at] = v;
                    }
                }
            }
            let (abuf, bbuf, cbuf, biasbuf) = (
                d.upload(&a).unwrap(),
                d.upload(&b).unwrap(),
                d.upload(&c0).unwrap(),
                d.upload(&bias).unwrap(),
            );
            Gemm {
                m: self.m,
                n: self.n,
                inner: self.inner,
                batch: self.batch,
                nred: self.nred,
                a: Operand {
                    buf: &abuf,
                    offset: la.offset,
                    block_stride: la.block_stride,
                    s0: la.s0,
                    s1: la.s1,
                },
                b: Operand {
                    buf: &bbuf,
                    offset: lb.offset,
                    block_stride: lb.block_stride,
                    s0: lb.s0,
                    s1: lb.s1,
                },
                c: &cbuf,
                c_offset: c_off,
                c_block,
                c_row,
                alpha,
                beta,
                bias: self.bias.then_some(&biasbuf),
            }
            .launch_as(&sim, kernel, transposed)
            .expect("launch");
            let got = d.download(&cbuf, c_len).unwrap();
            let scale = want.iter().fold(1f64, |s, v| s.max(v.abs()));
            let tol = 1e-5 * scale * ((self.inner * self.nred) as f64).sqrt().max(1.0);
            for (at, (&g, &w)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (g as f64 - w).abs() <= tol,
                    "{} (transposed {transposed}): m={} n={} inner={} batch={} nred={} ta={} \
                     tb={} pad={} off={}: C[{at}] = {g}, want {w}",
                    kernel.name,
                    self.m,
                    self.n,
                    self.inner,
                    self.batch,
                    self.nred,
                    self.ta,
                    self.tb,
                    self.pad,
                    self.offset
                );
            }
        }
    }

    fn plain(m: usize, n: usize, inner: usize, ta: bool, tb: bool) -> Case {
        Case {
            m,
            n,
            inner,
            batch: 1,
            nred: 1,
            ta,
            tb,
            shared_a: false,
            shared_b: false,
            pad: 0,
            offset: 0,
            beta: None,
            bias: false,
        }
    }

    #[test]
    fn both_kernels_on_odd_shapes_and_every_transpose() {
        for (m, n, inner) in [
            (130, 133, 17),
            (1, 131, 9),
            (129, 1, 12),
            (140, 135, 1),
            (128, 128, 16),
        ] {
            for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
                for k in [&SMALL, &LARGE] {
                    plain(m, n, inner, ta, tb).run(k);
                }
                // the narrow kernel on any shape, both routes
                for t in [false, true] {
                    plain(m, n, inner, ta, tb).run_as(&NARROW, t);
                }
            }
        }
    }

    #[test]
    fn both_kernels_batched_reduced_broadcast_beta_bias_misaligned() {
        let cases = [
            // aligned interior tiles, batched, shared B, beta and bias
            Case {
                m: 256,
                n: 136,
                inner: 24,
                batch: 2,
                nred: 1,
                ta: false,
                tb: true,
                shared_a: false,
                shared_b: true,
                pad: 0,
                offset: 0,
                beta: Some(0.5),
                bias: true,
            },
            // nred = 3: the prefetch runs across reduction blocks; shared A
            Case {
                m: 131,
                n: 129,
                inner: 13,
                batch: 2,
                nred: 3,
                ta: true,
                tb: false,
                shared_a: true,
                shared_b: false,
                pad: 0,
                offset: 0,
                beta: None,
                bias: true,
            },
            // misaligned rows and base (scalar edge path everywhere), beta
            Case {
                m: 133,
                n: 130,
                inner: 21,
                batch: 1,
                nred: 2,
                ta: false,
                tb: false,
                shared_a: false,
                shared_b: false,
                pad: 1,
                offset: 3,
                beta: Some(-1.25),
                bias: false,
            },
            // padded but aligned rows (pitch multiple of 4): interior vector path with strides
            Case {
                m: 128,
                n: 256,
                inner: 32,
                batch: 1,
                nred: 1,
                ta: true,
                tb: true,
                shared_a: false,
                shared_b: false,
                pad: 4,
                offset: 4,
                beta: Some(2.0),
                bias: true,
            },
            // inner = 0: C = beta C + bias
            Case {
                m: 130,
                n: 131,
                inner: 0,
                batch: 1,
                nred: 1,
                ta: false,
                tb: false,
                shared_a: false,
                shared_b: false,
                pad: 0,
                offset: 0,
                beta: Some(0.5),
                bias: true,
            },
        ];
        for c in &cases {
            for k in [&SMALL, &LARGE] {
                c.run(k);
            }
            for t in [false, true] {
                c.run_as(&NARROW, t);
            }
        }
    }

    /// `gemm_narrow_splitk` where `choose` sends it: n or m ≤ 16 (m ≤ 16 transposed), inner
    /// past one 32-deep slice with a remainder, batched, reduced, beta, bias, every transpose.
    #[test]
    fn narrow_kernel_on_narrow_shapes() {
        let case = |m, n, inner, batch, nred, ta, tb, beta, bias, pad, offset| Case {
            m,
            n,
            inner,
            batch,
            nred,
            ta,
            tb,
            shared_a: false,
            shared_b: false,
            pad,
            offset,
            beta,
            bias,
        };
        let cases = [
            // n = 16: the LoRA g = dy B shape, 3 slices + a remainder, batched
            case(130, 16, 77, 2, 1, false, false, None, false, 0, 0),
            // n = 1, odd m, beta and bias
            case(67, 1, 45, 1, 1, false, true, Some(0.5), true, 0, 0),
            // n = 17: two column tiles (choose keeps gemm_tiled there; the kernel still works)
            case(65, 17, 33, 1, 1, true, false, None, true, 0, 0),
            // d_lora_b's shape: op(A) read transposed (row-contiguous), nred = 2, beta
            case(131, 8, 70, 2, 2, true, false, Some(-1.25), false, 0, 0),
            // m = 1 and m = 16, n wide: the transposed route (d_lora_a), bias per column
            case(1, 70, 40, 1, 1, false, false, None, true, 0, 0),
            case(16, 130, 97, 3, 1, true, false, Some(2.0), true, 0, 0),
            case(13, 67, 64, 1, 2, false, true, None, true, 0, 0),
            // misaligned strides and base: scalar loads and stores everywhere
            case(70, 15, 50, 2, 1, true, true, Some(0.5), true, 1, 3),
            case(15, 66, 50, 1, 1, false, false, Some(0.5), true, 1, 3),
            // padded but aligned rows: vector loads with strides
            case(128, 16, 96, 1, 1, false, false, None, false, 4, 4),
            // aligned interior tiles and slices (the unguarded loads), batched, reduced, and
            // the transposed route of the same
            case(192, 16, 128, 2, 2, false, false, Some(0.5), true, 0, 0),
            case(16, 192, 96, 2, 1, true, false, None, true, 0, 0),
            case(128, 12, 64, 1, 1, true, true, None, false, 0, 0),
        ];
        for c in &cases {
            assert_eq!(
                choose(c.m, c.n, c.batch, 132).name,
                if c.m.min(c.n) <= NARROW_MAX {
                    NARROW.name
                } else {
                    SMALL.name
                }
            );
            c.run(&NARROW);
            if c.m.min(c.n) <= NARROW_MAX {
                c.run(choose(c.m, c.n, c.batch, 132));
            }
        }
    }

    #[test]
    fn the_kernel_follows_the_size() {
        // 4096²: 1024 tiles of 128 (8 waves) against 4096 of 64 (32 waves)
        assert_eq!(choose(4096, 4096, 1, 132).name, LARGE.name);
        assert_eq!(choose(4096, 4096, 8, 132).name, LARGE.name);
        // narrow: m or n ≤ 16 takes the 64×16 split-k tile (m ≤ 16 transposed)
        assert_eq!(choose(4096, 16, 8, 132).name, NARROW.name);
        assert_eq!(choose(16, 4096, 8, 132).name, NARROW.name);
        assert_eq!(choose(16, 16, 1, 132).name, NARROW.name);
        assert_eq!(choose(1, 1, 1, 132).name, NARROW.name);
        assert_eq!(choose(256, 8, 8, 132).name, NARROW.name);
        // skinny but wider than 16: m or n ≤ 64 keeps the 64 tile
        assert_eq!(choose(4096, 17, 8, 132).name, SMALL.name);
        assert_eq!(choose(64, 4096, 8, 132).name, SMALL.name);
        // a few tiles: one wave of either, the 64 tile is cheaper
        assert_eq!(choose(130, 133, 1, 132).name, SMALL.name);
        // src/testing.rs's matmul case (3, 600, 580, 9) takes the 128 tile on any SM count
        // up to 132 (300 tiles of 64, 75 of 128), so the op tests run both kernels
        for sms in [1, 2, 4, 16, 64, 108, 132] {
            assert_eq!(choose(600, 580, 3, sms).name, LARGE.name, "{sms} SMs");
        }
    }

    /// The registers and shared memory the grid is sized from are ptxas' (when installed).
    #[test]
    fn kernel_resources_match_ptxas() {
        let mut ptxas = crate::profile::ptxas::Ptxas::new();
        if !ptxas.available() {
            println!("notice: ptxas not found; skipping");
            return;
        }
        for k in [&SMALL, &LARGE, &NARROW] {
            let mut regs = 0;
            for arch in ["sm_80", "sm_90"] {
                let info = ptxas
                    .info(MATMUL, k.name, arch)
                    .expect("ptxas assembles matmul.ptx");
                regs = regs.max(info.registers);
                assert_eq!(info.smem, k.smem, "{} {arch} shared memory", k.name);
            }
            assert_eq!(regs, k.regs, "{} registers (max of sm_80, sm_90)", k.name);
        }
        assert_eq!(LARGE.blocks_per_sm(), 2);
        assert_eq!(SMALL.blocks_per_sm(), 5);
        assert_eq!(NARROW.blocks_per_sm(), 2);
    }
}
