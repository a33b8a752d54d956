//! The tensor-core GEMM (`gemm_mma_bf16`, 4096³) counted on the PTX simulator on a sample of
//! its CTAs and **modelled** (not measured) on each card with `profile::model`, the grid
//! sized for that card's SMs. Prints the modelled time and its share of the card's
//! `mma.sync` tensor peak; asserts only what the model guarantees (the counts, and that no
//! modelled time beats the peak). Run with `--nocapture` to see the figures:
//!
//! ```text
//! cargo test --release --features ptx-sim --test ptx_mma_profile -- --nocapture
//! ```
#![cfg(feature = "ptx-sim")]

use bella::backend::ptx::gemm_mma::HalfType;
use bella::backend::ptx::PtxBackend;
use bella::backend::ptx_sim::profile::Class;
use bella::backend::ptx_sim::{Counters, SimDriver};
use bella::bench::tensor_core::gemm_mma_case;
use bella::profile::cards::CARDS;
use bella::profile::model::{model_launch, LaunchInputs};
use bella::rng::Rng;
use bella::Backend;
use std::sync::Arc;

const SIZE: usize = 4096;
/// CTAs simulated per launch (their counts are scaled to the grid).
const SAMPLE_CTAS: u64 = 4;

fn inputs(c: &Counters, ctas: u64) -> LaunchInputs {
    let fp32 = [
        Class::Fp32Fma,
        Class::Fp32Add,
        Class::Fp32Mul,
        Class::Fp32Other,
    ]
    .iter()
    .map(|&k| c.warp_inst.get(k))
    .sum();
    LaunchInputs {
        ctas,
        warp_inst: c.warp_inst.total(),
        fp32_warp_inst: fp32,
        sfu_warp_inst: c.warp_inst.get(Class::Fp32Special),
        shared_wavefronts: c.shared.wavefronts(),
        l2_bytes: c.global.l2_bytes(),
        dram_bytes: c.global.dram_bytes(),
        tensor_flops: c.tensor.flops,
    }
}

#[test]
fn gemm_mma_4096_cubed_is_modelled_near_the_tensor_peak() {
    let n = SIZE;
    let useful = 2.0 * (n as f64).powi(3);
    for card in &CARDS {
        let be = Arc::new(PtxBackend::new(SimDriver::with_sm_count(card.sms)).expect("loads"));
        let prof = be.driver().profiler();
        // the profiler's case (`bella profile --op gemm_mma_bf16`), on this card's SM count
        let case = gemm_mma_case(be.clone(), HalfType::Bf16, n);
        let dyn_be: Arc<dyn Backend> = be.clone();
        let mut run = case.prepare(&dyn_be, &mut Rng::new(5)).expect("inputs");
        prof.set_enabled(true);
        prof.set_max_ctas(Some(SAMPLE_CTAS));
        run().expect("runs");
        let p = prof.take().pop().expect("one launch");
        let ctas = p.grid.iter().map(|&g| g as u64).product::<u64>();
        let tc = &p.counters.tensor;
        // the sample's tensor FLOPs scaled to the grid: within 5 % of 2 n³ (CTAs take 3 or
        // 4 tiles of the 1024)
        let rel = tc.flops as f64 / useful;
        assert!(
            (0.95..1.05).contains(&rel),
            "{}: tensor FLOPs {rel} of 2n³",
            card.key
        );
        // the swizzle leaves no bank conflicts: ldmatrix and cp.async at the ideal wavefronts
        let sh = &p.counters.shared;
        assert_eq!(
            sh.wavefronts(),
            sh.ideal_wavefronts,
            "{}: bank conflicts",
            card.key
        );
        let l = model_launch(card, &inputs(&p.counters, ctas));
        let peak = card.mma_flops_per_s();
        let share = useful / (l.us * 1e-6) / peak;
        let pipes: Vec<String> = l
            .pipes_us
            .iter()
            .map(|(k, us)| format!("{k} {us:.0}"))
            .collect();
        println!(
            "modelled {} ({} CTAs, {} per SM): {:.0} µs, {} bound, {:.1} TFLOP/s = {:.1} % of \
             the mma.sync peak {:.1} TFLOP/s; pipes µs: {}",
            card.key,
            ctas,
            l.ctas_per_sm,
            l.us,
            l.limiter,
            useful / (l.us * 1e-6) / 1e12,
            100.0 * share,
            peak / 1e12,
            pipes.join(", ")
        );
        // an average-CTA model may under-weight the CTAs that take one tile more; never
        // more than a few % past the peak
        assert!(share < 1.05, "{}: {share}", card.key);
    }
}
