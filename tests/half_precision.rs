//! bf16/f16 tensors per backend (the bodies are `bella::testing::half`, which `bella doctor`
//! runs too): `cast` bit for bit against the rule of `bella::dtype`, the 16-bit `matmul`
//! against a float64 product of the exact 16-bit values (element-wise within the
//! f32-accumulation bound, and norm-wise), the bits round trip, and the refusals. On ptx-sim
//! the `a · bᵀ` cases run the tensor-core kernel, the others the widen-then-f32 fallback. A
//! backend that is not built or not present is skipped with a notice, unless `BELLA_REQUIRE`
//! names it.
//!
//! Run one backend: `cargo test --features ptx-sim --test half_precision ptx_sim`.

macro_rules! half_tests {
    ($kind:expr) => {
        use bella::testing::half;
        fn backend() -> Option<std::sync::Arc<dyn bella::Backend>> {
            bella::testing::backend_for_test($kind)
        }
        #[test]
        fn cast_matches_the_rounding_rule_bit_for_bit() {
            if let Some(be) = backend() {
                half::check_cast(be.as_ref(), bella::rng::Rng::fresh_seed()).unwrap();
            }
        }
        #[test]
        fn bits_round_trip() {
            if let Some(be) = backend() {
                half::check_bits_round_trip(be.as_ref()).unwrap();
            }
        }
        #[test]
        fn half_matmul_matches_float64() {
            if let Some(be) = backend() {
                half::check_matmul(be.as_ref(), bella::rng::Rng::fresh_seed()).unwrap();
            }
        }
        #[test]
        fn half_lora_forward_matches_the_oracle() {
            if let Some(be) = backend() {
                let seed = bella::rng::Rng::fresh_seed();
                half::check_lora(be.as_ref(), "lora_forward", seed).unwrap();
            }
        }
        #[test]
        fn half_lora_backward_matches_the_oracle() {
            if let Some(be) = backend() {
                let seed = bella::rng::Rng::fresh_seed();
                half::check_lora(be.as_ref(), "lora_backward", seed).unwrap();
            }
        }
        #[test]
        fn half_lora_backward_16bit_dy_rounds_where_the_contract_says() {
            if let Some(be) = backend() {
                let seed = bella::rng::Rng::fresh_seed();
                half::check_lora_backward_rounded(be.as_ref(), seed).unwrap();
            }
        }
        #[test]
        fn refuses_mixed_dtypes_and_f32_only_ops() {
            if let Some(be) = backend() {
                half::check_refusals(be.as_ref()).unwrap();
            }
        }
    };
}

mod cpu {
    half_tests!(bella::BackendKind::Cpu);
}
mod wgpu {
    half_tests!(bella::BackendKind::Wgpu);
}
mod cuda {
    half_tests!(bella::BackendKind::Cuda);
}
mod ptx_sim {
    half_tests!(bella::BackendKind::PtxSim);
}

#[test]
fn dtype_names_parse() {
    for d in bella::DType::ALL {
        assert_eq!(d.name().parse::<bella::DType>().unwrap(), d);
    }
}

/// The tensor-core `lora_backward`'s stacked path (shared x, M a multiple of 8: the rank
/// term one product over K·r, an arena's lora_a blocks gathered first) through the public
/// ops on ptx-sim, against the CPU backend's composed path on the same 16-bit inputs: K = 1
/// and 3, lora_a contiguous (`lora_backward`) and in a `[K, D]` parameter arena with the
/// gradients written back into a gradient arena (`lora_backward_into`), M past one 128-tile;
/// and M = 37 (the K rank launches). The data sit on grids that keep `dy B` and `Σ_k dy_k`
/// exact in f32, so both backends round ĝ and the dy sum alike and differ only in f32
/// accumulation order: within 1e-5 of each output's largest magnitude.
#[test]
fn ptx_sim_shared_x_rank_term_matches_cpu() {
    use bella::ops::{lora_backward, lora_backward_into, Adapter};
    use bella::tensor::{OutSlot, Strided};
    let Some(sim) = bella::testing::backend_for_test(bella::BackendKind::PtxSim) else {
        return;
    };
    let cpu = bella::testing::backend_for_test(bella::BackendKind::Cpu).expect("cpu");
    let mut rng = bella::rng::Rng::new(bella::rng::Rng::fresh_seed());
    // (K, M, I, O, r, arena)
    let plans = [
        (1, 8, 16, 24, 8, false),
        (3, 16, 40, 24, 8, false),
        (3, 24, 32, 16, 16, true),
        (2, 136, 136, 16, 8, true),
        (3, 37, 40, 24, 8, true),
    ];
    for d in [bella::DType::BF16, bella::DType::F16] {
        for (k, m, i, o, r, arena) in plans {
            let mut draw = |n: usize, f: &dyn Fn(&mut bella::rng::Rng) -> f32| -> Vec<u16> {
                (0..n).map(|_| d.round_bits(f(&mut rng))).collect()
            };
            let x = draw(m * i, &|g| g.uniform() * 2.0 - 1.0);
            let w = draw(o * i, &|g| (g.uniform() * 2.0 - 1.0) / (i as f32).sqrt());
            let a = draw(k * r * i, &|g| {
                (g.uniform() * 2.0 - 1.0) / (i as f32).sqrt()
            });
            let b = draw(k * o * r, &|g| ((g.uniform() * 33.0).floor() - 16.0) / 16.0);
            let dy = draw(k * m * o, &|g| {
                let n = (g.uniform() * 511.0).floor() - 255.0;
                n * 2f32.powi(-((g.uniform() * 5.0).floor() as i32))
            });
            let h = draw(k * m * r, &|g| g.uniform() * 2.0 - 1.0);
            let (ri, or) = (r * i, o * r);
            // arena rows: 8 spare elements, A, B, 16 spare (multiples of 8: aligned blocks)
            let row = 8 + ri + or + 16;
            let run = |be: &dyn bella::Backend| -> Vec<Vec<f32>> {
                let up = |s: &[usize], v: &[u16]| be.upload_bits(s, d, v).unwrap();
                let (xt, wt, dyt, ht) = (
                    up(&[m, i], &x),
                    up(&[o, i], &w),
                    up(&[k, m, o], &dy),
                    up(&[k, m, r], &h),
                );
                let s = 2.0 / r as f32;
                if arena {
                    let mut p = vec![d.round_bits(5.0); k * row];
                    for kk in 0..k {
                        p[kk * row + 8..][..ri].copy_from_slice(&a[kk * ri..][..ri]);
                        p[kk * row + 8 + ri..][..or].copy_from_slice(&b[kk * or..][..or]);
                    }
                    let pt = up(&[k, row], &p);
                    let view = |offset| Strided {
                        tensor: &pt,
                        offset,
                        stride: row,
                    };
                    let adapter = Adapter {
                        a: view(8),
                        b: view(8 + ri),
                        k,
                        r,
                    };
                    let mut grad = be.zeros(&[k, row]).unwrap();
                    let slot = |offset| OutSlot {
                        offset,
                        stride: row,
                    };
                    let dx = lora_backward_into(
                        be,
                        &dyt,
                        &xt,
                        &wt,
                        &adapter,
                        &ht,
                        s,
                        true,
                        &mut grad,
                        slot(8),
                        slot(8 + ri),
                    )
                    .unwrap()
                    .unwrap();
                    vec![be.download(&dx).unwrap(), be.download(&grad).unwrap()]
                } else {
                    let (at, bt) = (up(&[k, r, i], &a), up(&[k, o, r], &b));
                    let adapter = Adapter::from_tensors("lora_backward", &at, &bt).unwrap();
                    let g = lora_backward(be, &dyt, &xt, &wt, &adapter, &ht, s).unwrap();
                    [&g.dx, &g.d_lora_a, &g.d_lora_b]
                        .iter()
                        .map(|t| be.download(t).unwrap())
                        .collect()
                }
            };
            let (got, want) = (run(sim.as_ref()), run(cpu.as_ref()));
            for (n, (g, w)) in got.iter().zip(&want).enumerate() {
                assert_eq!(g.len(), w.len());
                let top = w.iter().fold(0f32, |t, v| t.max(v.abs())).max(1e-30);
                for (e, (gv, wv)) in g.iter().zip(w).enumerate() {
                    assert!(
                        (gv - wv).abs() <= 1e-5 * top,
                        "{d} K={k} M={m} I={i} O={o} r={r} arena={arena}: output {n}[{e}] \
                         = {gv}, cpu {wv} (largest {top})"
                    );
                }
            }
        }
    }
}
