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
