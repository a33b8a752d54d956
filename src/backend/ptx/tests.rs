//! Launch paths the shared cross-backend cases do not reach, run on the PTX simulator
//! against the CPU reference: the r > 64 path of `lora_forward` (h computed first), several
//! particle groups for a shared x (K·r > 64), the r = 64 boundary, and adapters that are
//! strided views into a `[K, D]` parameter arena at odd offsets (misaligned rows: the scalar
//! load paths), with gradients written back into the arena; tiles past 128, K·r past 256,
//! several 16-rank stages, and the split-over-I path of `lora_forward`; the 64 × 32 tile
//! kernel `lora_forward_64x32` (shared x, fewer 128 × 128 tiles than SMs) on a simulator
//! sized for 132 SMs; and the r ≤ 16 products on `gemm_narrow_splitk`.

use super::PtxBackend;
use crate::backend::cpu::CpuBackend;
use crate::backend::ptx_sim::SimDriver;
use crate::backend::{Backend, GradTargets, LoraBackwardArgs, LoraDims, LoraForwardArgs};
use crate::rng::Rng;
use crate::tensor::{OutSlot, Strided, Tensor};
use crate::testing::{rel_err, TOLERANCE};

/// One LoRA layer's inputs, with A and B living in an arena row of `d` floats per particle:
/// A at `off`, B right after it, `pad` spare floats at the end of each row.
struct Layer {
    dims: LoraDims,
    x: Vec<f32>,
    w: Vec<f32>,
    bias: Vec<f32>,
    arena: Vec<f32>,
    dy: Vec<f32>,
    off: usize,
    row: usize,
    with_bias: bool,
}

impl Layer {
    fn new(k: usize, m: usize, i: usize, o: usize, r: usize, x_shared: bool, off: usize) -> Self {
        let mut rng = Rng::new(Rng::fresh_seed());
        let row = off + r * i + o * r + 3;
        let xn = if x_shared { m * i } else { k * m * i };
        let scaled = |v: Vec<f32>, s: f32| v.into_iter().map(|x| x * s).collect::<Vec<_>>();
        Layer {
            dims: LoraDims {
                k,
                m,
                i,
                o,
                r,
                x_shared,
            },
            x: rng.normal_vec(xn),
            w: scaled(rng.normal_vec(o * i), 0.3),
            bias: rng.normal_vec(o),
            arena: scaled(rng.normal_vec(k * row), 0.3),
            dy: rng.normal_vec(k * m * o),
            off,
            row,
            with_bias: true,
        }
    }

    fn without_bias(mut self) -> Self {
        self.with_bias = false;
        self
    }

    /// y, h, dx and the gradient arena on one backend.
    fn run(&self, be: &dyn Backend) -> Vec<(&'static str, Vec<f32>)> {
        let d = self.dims;
        let x_shape = if d.x_shared {
            vec![d.m, d.i]
        } else {
            vec![d.k, d.m, d.i]
        };
        let up = |shape: &[usize], v: &[f32]| be.upload(shape, v).expect("upload");
        let x = up(&x_shape, &self.x);
        let w = up(&[d.o, d.i], &self.w);
        let bias = up(&[d.o], &self.bias);
        let arena = up(&[d.k, self.row], &self.arena);
        let dy = up(&[d.k, d.m, d.o], &self.dy);
        let a = Strided {
            tensor: &arena,
            offset: self.off,
            stride: self.row,
        };
        let b = Strided {
            tensor: &arena,
            offset: self.off + d.r * d.i,
            stride: self.row,
        };
        let fwd = LoraForwardArgs {
            dims: d,
            x: &x,
            weight: &w,
            bias: self.with_bias.then_some(&bias),
            a,
            b,
            scale: 0.5,
        };
        let (y, h) = be.lora_forward(&fwd).expect("lora_forward");
        let mut grad: Tensor = be.zeros(&[d.k, self.row]).expect("zeros");
        let bwd = LoraBackwardArgs {
            dims: d,
            dy: &dy,
            x: &x,
            weight: &w,
            a,
            b,
            h: &h,
            scale: 0.5,
            need_dx: true,
            da: OutSlot {
                offset: self.off,
                stride: self.row,
            },
            db: OutSlot {
                offset: self.off + d.r * d.i,
                stride: self.row,
            },
        };
        let dx = be
            .lora_backward(&bwd, GradTargets::Arena(&mut grad))
            .expect("lora_backward")
            .expect("dx");
        let down = |t: &Tensor| be.download(t).expect("download");
        vec![
            ("y", down(&y)),
            ("h", down(&h)),
            ("dx", down(&dx)),
            ("grad", down(&grad)),
        ]
    }

    fn check(&self) {
        self.check_on(SimDriver::new());
    }

    /// `check` on a simulator that reports `sms` SMs (the launch code sizes its grids and
    /// picks its paths for that many); returns the kernels launched.
    fn check_sms(&self, sms: u32) -> Vec<String> {
        let drv = SimDriver::with_sm_count(sms);
        let prof = drv.profiler();
        prof.set_enabled(true);
        self.check_on(drv);
        prof.take().into_iter().map(|l| l.kernel).collect()
    }

    fn check_on(&self, drv: SimDriver) {
        let sim = PtxBackend::new(drv).expect("simulator loads kernels/");
        let cpu = CpuBackend::new();
        for ((name, got), (_, want)) in self.run(&sim).into_iter().zip(self.run(&cpu)) {
            let e = rel_err(&got, &want);
            assert!(
                e <= TOLERANCE,
                "{:?} off {}: `{name}` relative error {e:.3e}",
                self.dims,
                self.off
            );
        }
    }
}

#[test]
fn lora_rank_above_one_tile_uses_precomputed_h() {
    Layer::new(2, 5, 9, 11, 70, true, 1).check();
    Layer::new(2, 5, 9, 11, 70, false, 0).check();
}

#[test]
fn lora_shared_x_with_several_particle_groups() {
    // r = 16: groups of 4 particles, K = 5 -> two groups (the second with one particle).
    Layer::new(5, 3, 20, 70, 16, true, 0).check();
    // r = 23: groups of 2 (46 of the 64 rank columns live), K = 3.
    Layer::new(3, 66, 18, 5, 23, true, 2).check();
}

#[test]
fn lora_rank_exactly_one_tile() {
    Layer::new(1, 4, 17, 9, 64, true, 4).check();
    Layer::new(2, 4, 17, 9, 64, false, 3).check();
}

#[test]
fn lora_tiles_past_128_and_rank_stages() {
    // M, O past one 128 tile; r = 50: four 16-rank stages (the last with 2); K·r = 150 > 128
    // stacked h columns (two h-mode tiles); misaligned arena rows.
    Layer::new(3, 130, 35, 260, 50, true, 1).check();
    Layer::new(3, 130, 35, 260, 50, false, 1).check();
    // K·r = 297 > 256 with a shared x (no particle-group limit), odd everything.
    Layer::new(9, 5, 7, 3, 33, true, 0).check();
    // aligned rows (the 16-byte fast paths) and I past one 16-deep slice with a remainder
    Layer::new(2, 129, 52, 132, 16, true, 0).check();
    Layer::new(2, 129, 52, 132, 16, false, 0).check();
    // few tiles, long I: split into chunks of 80 (the last 40 deep), then the finish pass
    Layer::new(2, 3, 200, 5, 3, true, 1).check();
    Layer::new(2, 3, 200, 5, 3, false, 2).check();
}

/// The 64 × 32 tile path: a shared x with fewer 128 × 128 tiles of y than SMs runs h in
/// `lora_forward_64x32`'s h mode (split over I when the tiles are few, the chunks summed by
/// `sum_blocks`), then its y mode; a per-particle x keeps `lora_forward`.
#[test]
fn lora_narrow_tiles_for_a_shared_x_with_few_tiles() {
    let narrow = |k: &[String]| k.iter().filter(|n| *n == "lora_forward_64x32").count();
    // M past three 64-row tiles, O past two 32-column tiles (odd), I = 150: h split into
    // three 64-deep chunks (the last 22 deep), misaligned arena rows (scalar paths)
    let k = Layer::new(3, 200, 150, 70, 5, true, 1).check_sms(132);
    assert_eq!(narrow(&k), 2, "{k:?}");
    assert!(k.iter().any(|n| n == "sum_blocks"), "{k:?}");
    // aligned x, W and I (the 16-byte paths), r = 8, no bias; O = 68 (16-byte y stores)
    let k = Layer::new(2, 70, 256, 68, 8, true, 0)
        .without_bias()
        .check_sms(132);
    assert_eq!(narrow(&k), 2, "{k:?}");
    // K = 1, r = 1, M = 1; I below one chunk: no split
    let k = Layer::new(1, 1, 33, 40, 1, true, 0).check_sms(132);
    assert_eq!(narrow(&k), 2, "{k:?}");
    assert!(!k.iter().any(|n| n == "sum_blocks"), "{k:?}");
    // K = 9 > 8 warps (two particle passes), r = 10 (two rank stages), K·r = 90 (three
    // 32-column h tiles)
    let k = Layer::new(9, 65, 70, 33, 10, true, 2).check_sms(132);
    assert_eq!(narrow(&k), 2, "{k:?}");
    // the M = 256 shape of the profile, scaled down in I and O: 4 x 8 tiles
    let k = Layer::new(8, 256, 128, 256, 8, true, 0).check_sms(132);
    assert_eq!(narrow(&k), 2, "{k:?}");
    // per-particle x: lora_forward (split over I)
    let k = Layer::new(3, 200, 150, 70, 5, false, 1).check_sms(132);
    assert_eq!(narrow(&k), 0, "{k:?}");
}

#[test]
fn lora_narrow_products_on_the_split_k_gemm() {
    // r ≤ 16: g = dy B, d_lora_b and the per-particle h run on gemm_narrow_splitk (n = r),
    // d_lora_a as its transposed product (m = r); M and O past one 64-row tile and one
    // 32-deep slice with a remainder; aligned (interior loads) and misaligned arena rows.
    Layer::new(3, 70, 40, 75, 16, true, 0).check();
    Layer::new(3, 70, 40, 75, 16, false, 0).check();
    Layer::new(2, 66, 36, 68, 1, false, 1).check();
    Layer::new(2, 33, 20, 130, 9, true, 3).check();
}
