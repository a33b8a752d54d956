//! The stacked path of the tensor-core `lora_backward` (shared x, M a multiple of 8: ĝ
//! computed transposed, the rank term one product over K·r) on the PTX simulator: against
//! float64 with the contract's roundings (ĝ = rnd(dy B), rnd(Σ_k dy_k)) within the
//! f32-accumulation bound, for K = 1, K = 3, lora_a contiguous (read in place), in a
//! parameter arena (blocks D > r·I apart: gathered) and one block shared by every particle
//! (stride 0: gathered), past one 128-tile in M and I; against the per-particle layout of ĝ
//! on the same case (d_lora_a and d_lora_b bit for bit: the same sums in the same order); the
//! kernels each path launches; M not a multiple of 8 on the K-launch path; a planted wrong
//! stride in `gather_blocks` caught through the whole backward.
use super::*;
use crate::backend::ptx::modules::{ACTIVATION, MODULES};
use crate::backend::ptx_sim::SimDriver;
use crate::backend::{Backend, LoraDims};
use crate::rng::Rng;
use crate::tensor::{OutSlot, Strided};
use crate::testing::half::RoundedBackward;

const HALVES: [DType; 2] = [DType::BF16, DType::F16];

/// Where the lora_a / lora_b blocks live.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Blocks {
    /// `lora_a [K, r, I]`, `lora_b [K, O, r]` tensors; gradients into two tensors
    Contiguous,
    /// one `[K, D]` arena, A at `OFF`, B after it, D > r·I + O·r; gradients into a `[K, D]`
    /// arena at the same slots (training's layout)
    Arena,
    /// one lora_a block for every particle (stride 0), lora_b contiguous
    SharedA,
}

/// Arena: elements before A in each row, spare elements after B (multiples of 8).
const OFF: usize = 8;
const PAD: usize = 16;

/// One case's 16-bit inputs (bits) and the float64 results with their bounds.
struct Case {
    d: DType,
    dims: LoraDims,
    blocks: Blocks,
    x: Vec<u16>,
    w: Vec<u16>,
    /// per particle `[r, I]` (SharedA: one block)
    a: Vec<u16>,
    /// per particle `[O, r]`
    b: Vec<u16>,
    dy: Vec<u16>,
    h: Vec<u16>,
    s: f32,
}

impl Case {
    fn new(d: DType, (k, m, i, o, r): Shape, blocks: Blocks) -> Self {
        let mut rng = Rng::new(Rng::fresh_seed());
        let mut draw = |n: usize, f: &dyn Fn(&mut Rng) -> f32| -> Vec<u16> {
            (0..n).map(|_| d.round_bits(f(&mut rng))).collect()
        };
        let uniform = |scale: f32| move |g: &mut Rng| (g.uniform() * 2.0 - 1.0) * scale;
        let a_blocks = if blocks == Blocks::SharedA { 1 } else { k };
        Case {
            d,
            dims: LoraDims {
                k,
                m,
                i,
                o,
                r,
                x_shared: true,
            },
            blocks,
            x: draw(m * i, &uniform(1.0)),
            w: draw(o * i, &uniform(1.0 / (i as f32).sqrt())),
            a: draw(a_blocks * r * i, &uniform(1.0 / (i as f32).sqrt())),
            b: draw(k * o * r, &|g| ((g.uniform() * 33.0).floor() - 16.0) / 16.0),
            dy: draw(k * m * o, &|g| {
                let n = (g.uniform() * 511.0).floor() - 255.0;
                n * 2f32.powi(-((g.uniform() * 5.0).floor() as i32))
            }),
            h: draw(k * m * r, &uniform(1.0)),
            s: 2.0 / r as f32,
        }
    }

    /// `(dx, d_lora_a, d_lora_b)` in float64 with the contract's roundings, each element
    /// `(value, bound)`: the reference `testing::half` checks every backend against.
    fn want(&self) -> [Vec<(f64, f64)>; 3] {
        RoundedBackward {
            d: self.d,
            dims: self.dims,
            x: &self.x,
            w: &self.w,
            a: &self.a,
            a_blocks: if self.blocks == Blocks::SharedA {
                1
            } else {
                self.dims.k
            },
            b: &self.b,
            dy: &self.dy,
            h: &self.h,
            s: self.s,
        }
        .want()
    }

    /// `(dx, d_lora_a, d_lora_b)` from `be`: through `Backend::lora_backward` (`None`) or
    /// [`backward_with`] on the stacked path or not (`Some`).
    fn run(&self, be: &PtxBackend<SimDriver>, stacked: Option<bool>) -> [Vec<f32>; 3] {
        let (t, dm) = (self.d, self.dims);
        let (k, m, i, o, r) = (dm.k, dm.m, dm.i, dm.o, dm.r);
        let (ri, or) = (r * i, o * r);
        let up = |shape: &[usize], bits: &[u16]| be.upload_bits(shape, t, bits).expect("upload");
        let x = up(&[m, i], &self.x);
        let w = up(&[o, i], &self.w);
        let dy = up(&[k, m, o], &self.dy);
        let h = up(&[k, m, r], &self.h);
        let row = OFF + ri + or + PAD;
        let b_t = (self.blocks != Blocks::Arena).then(|| up(&[k, o, r], &self.b));
        let (a_t, a, b, da, db);
        match self.blocks {
            Blocks::Arena => {
                let mut arena = vec![t.round_bits(7.0); k * row];
                for kk in 0..k {
                    arena[kk * row + OFF..][..ri].copy_from_slice(&self.a[kk * ri..][..ri]);
                    arena[kk * row + OFF + ri..][..or].copy_from_slice(&self.b[kk * or..][..or]);
                }
                a_t = up(&[k, row], &arena);
                let at = |offset| OutSlot {
                    offset,
                    stride: row,
                };
                (da, db) = (at(OFF), at(OFF + ri));
                a = Strided {
                    tensor: &a_t,
                    offset: OFF,
                    stride: row,
                };
                b = Strided {
                    tensor: &a_t,
                    offset: OFF + ri,
                    stride: row,
                };
            }
            Blocks::Contiguous | Blocks::SharedA => {
                let shared = self.blocks == Blocks::SharedA;
                a_t = up(&[if shared { 1 } else { k }, r, i], &self.a);
                a = Strided::contiguous(&a_t, ri, shared);
                b = Strided::contiguous(b_t.as_ref().unwrap(), or, false);
                (da, db) = (
                    OutSlot {
                        offset: 0,
                        stride: ri,
                    },
                    OutSlot {
                        offset: 0,
                        stride: or,
                    },
                );
            }
        }
        let args = LoraBackwardArgs {
            dims: dm,
            dy: &dy,
            x: &x,
            weight: &w,
            a,
            b,
            h: &h,
            scale: self.s,
            need_dx: true,
            da,
            db,
        };
        assert!(
            covers(&args),
            "{:?}: the tensor-core path covers the case",
            self.blocks
        );
        let go = |grads: GradTargets<'_>| match stacked {
            None => be.lora_backward(&args, grads),
            Some(st) => backward_with(be, &args, grads, st),
        };
        let down = |t: &Tensor| be.download(t).expect("download");
        let block = |v: &[f32], slot: OutSlot, len: usize| -> Vec<f32> {
            (0..k)
                .flat_map(|kk| v[slot.offset + kk * slot.stride..][..len].to_vec())
                .collect()
        };
        if self.blocks == Blocks::Arena {
            let mut grad = be.upload(&[k, row], &vec![3.0; k * row]).unwrap();
            let dx = go(GradTargets::Arena(&mut grad))
                .expect("runs")
                .expect("dx");
            let g = down(&grad);
            // the arena's other elements are left as they were
            for (e, &v) in g.iter().enumerate() {
                let col = e % row;
                if col < OFF || col >= OFF + ri + or {
                    assert_eq!(v, 3.0, "arena element {e} (column {col}) written");
                }
            }
            [down(&dx), block(&g, da, ri), block(&g, db, or)]
        } else {
            let mut ga = be.zeros(&[k, r, i]).unwrap();
            let mut gb = be.zeros(&[k, o, r]).unwrap();
            let dx = go(GradTargets::Split(&mut ga, &mut gb))
                .expect("runs")
                .expect("dx");
            [down(&dx), down(&ga), down(&gb)]
        }
    }

    fn name(&self) -> String {
        let dm = self.dims;
        format!(
            "{} K={} M={} I={} O={} r={} {:?}",
            self.d, dm.k, dm.m, dm.i, dm.o, dm.r, self.blocks
        )
    }

    /// `got` against [`Case::want`]: every element within its bound, norm-wise 1e-6.
    fn check(&self, got: &[Vec<f32>; 3], what: &str) -> std::result::Result<(), String> {
        let want = self.want();
        for (name, g, w) in [
            ("dx", &got[0], &want[0]),
            ("d_lora_a", &got[1], &want[1]),
            ("d_lora_b", &got[2], &want[2]),
        ] {
            if g.len() != w.len() {
                return Err(format!(
                    "[{} {what}] `{name}`: {} elements, want {}",
                    self.name(),
                    g.len(),
                    w.len()
                ));
            }
            let (mut diff, mut norm) = (0f64, 0f64);
            for (e, (&gv, &(wv, bound))) in g.iter().zip(w).enumerate() {
                let err = (gv as f64 - wv).abs();
                let within = err <= bound; // false for NaN too
                if !within {
                    return Err(format!(
                        "[{} {what}] `{name}`[{e}] = {gv}, float64 {wv}: |Δ| {err:e} > {bound:e}",
                        self.name()
                    ));
                }
                diff += err * err;
                norm += wv * wv;
            }
            let rel = diff.sqrt() / norm.sqrt().max(1e-30);
            if rel > 1e-6 {
                return Err(format!(
                    "[{} {what}] `{name}`: norm-wise {rel:e} > 1e-6",
                    self.name()
                ));
            }
        }
        Ok(())
    }
}

fn profiled() -> (PtxBackend<SimDriver>, crate::backend::ptx_sim::Profiler) {
    let drv = SimDriver::new();
    let prof = drv.profiler();
    (PtxBackend::new(drv).expect("loads kernels/"), prof)
}

/// The kernels a run launched, in order.
fn kernels(prof: &crate::backend::ptx_sim::Profiler) -> Vec<String> {
    prof.take().into_iter().map(|l| l.kernel).collect()
}

/// (K, M, I, O, r).
type Shape = (usize, usize, usize, usize, usize);

/// Shapes with M a multiple of 8 (the stacked path) and where their lora_a blocks live.
const STACKED: [(Shape, Blocks); 6] = [
    ((1, 8, 16, 24, 8), Blocks::Contiguous),
    ((1, 16, 24, 16, 16), Blocks::Arena),
    ((3, 16, 40, 24, 8), Blocks::Contiguous),
    ((3, 24, 40, 32, 16), Blocks::Arena),
    ((2, 8, 16, 8, 8), Blocks::SharedA),
    ((2, 136, 136, 16, 8), Blocks::Arena),
];

#[test]
fn the_stacked_path_matches_float64_and_the_per_particle_layout() {
    for d in HALVES {
        for (shape, blocks) in STACKED {
            let case = Case::new(d, shape, blocks);
            let (be, prof) = profiled();
            prof.set_enabled(true);
            let got = case.run(&be, None);
            let launched = kernels(&prof);
            prof.set_enabled(false);
            case.check(&got, "op").unwrap();
            // one gemm_mma per product: g, d_lora_b, d_lora_a, base dx, the rank term
            let mma = launched
                .iter()
                .filter(|k| k.starts_with("gemm_mma_"))
                .count();
            assert_eq!(mma, 5, "[{}] {launched:?}", case.name());
            let k = shape.0;
            let gathers = launched.iter().filter(|k| *k == "gather_blocks").count();
            let gathered = k > 1 && blocks != Blocks::Contiguous;
            assert_eq!(
                gathers,
                usize::from(gathered),
                "[{}] {launched:?}",
                case.name()
            );
            // the same case with ĝ [K, M, r] and K rank launches
            let old = case.run(&be, Some(false));
            case.check(&old, "per-particle layout").unwrap();
            for (n, (a, b)) in ["d_lora_a", "d_lora_b"]
                .iter()
                .zip(got[1..].iter().zip(&old[1..]))
            {
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert!(
                    bits(a) == bits(b),
                    "[{}] `{n}` differs from the per-particle layout",
                    case.name()
                );
            }
            // forced on through the internal entry: the same as the op's dispatch
            let forced = case.run(&be, Some(true));
            assert_eq!(forced, got, "[{}]", case.name());
        }
    }
}

#[test]
fn m_not_a_multiple_of_8_keeps_the_k_rank_launches() {
    for d in HALVES {
        for (shape, blocks) in [
            ((3, 37, 40, 24, 8), Blocks::Arena),
            ((2, 9, 16, 8, 8), Blocks::Contiguous),
        ] {
            let case = Case::new(d, shape, blocks);
            let (be, prof) = profiled();
            prof.set_enabled(true);
            let got = case.run(&be, None);
            let launched = kernels(&prof);
            case.check(&got, "op").unwrap();
            let mma = launched
                .iter()
                .filter(|k| k.starts_with("gemm_mma_"))
                .count();
            assert_eq!(mma, 4 + shape.0, "[{}] {launched:?}", case.name());
            assert!(
                !launched.iter().any(|k| k == "gather_blocks"),
                "{launched:?}"
            );
        }
    }
}

#[test]
fn a_planted_gather_stride_is_caught_through_the_backward() {
    let text = MODULES.iter().find(|(n, _)| *n == ACTIVATION).unwrap().1;
    let good = "mul.wide.u32 %rd1, %b, %bstride;";
    assert_eq!(text.matches(good).count(), 1, "{good}");
    // the arena's blocks read as if contiguous (`len` apart)
    let planted = text.replace(good, "mul.wide.u32 %rd1, %b, %len;");
    let drv = SimDriver::new();
    drv.load_module(ACTIVATION, &planted).expect("loads");
    let be = PtxBackend::new(drv).expect("keeps the planted module");
    let case = Case::new(DType::BF16, (3, 16, 16, 16, 8), Blocks::Arena);
    let got = case.run(&be, None);
    let err = case
        .check(&got, "planted")
        .expect_err("the planted stride went unnoticed");
    assert!(err.contains("`dx`"), "{err}");
    // and the real kernel passes the same case
    let (be, _) = profiled();
    case.check(&case.run(&be, None), "op").unwrap();
}
