//! The public `Backend` surface is safe to misuse and to share, on every backend:
//! - mismatched tensors passed straight through the trait (not through `ops`) are errors,
//!   never a panic or an access past a buffer;
//! - outputs past the memory budget are errors that name the op and the budget;
//! - NaN/Inf inputs to every op finish (NaN out is fine, an error is fine, a hang is not);
//! - every op from several threads at once on one backend instance gives the right answer
//!   every time (with wgpu kernel timing switched on and read by another thread meanwhile).
//!
//! Run one backend: `cargo test --features ptx-sim --test backend_safety wgpu`.

use bella::backend::{AdamW, GradTargets, LoraBackwardArgs, LoraDims, LoraForwardArgs, MatmulArgs};
use bella::ops::named::{run_named, HostData, HostTensor, Named};
use bella::rng::Rng;
use bella::tensor::{OutSlot, Strided};
use bella::testing::{backend_for_test, cases, Sizes};
use bella::{Backend, BackendKind, BellaError, Tensor};
use std::sync::Arc;

fn open(kind: BackendKind) -> Option<Arc<dyn Backend>> {
    backend_for_test(kind)
}

fn expect_err<T>(what: &str, r: bella::Result<T>, needles: &[&str]) {
    match r {
        Ok(_) => panic!("{what}: accepted mismatched tensors"),
        Err(e) => {
            let msg = e.to_string();
            for n in needles {
                assert!(
                    msg.contains(n),
                    "{what}: error `{msg}` does not mention `{n}`"
                );
            }
        }
    }
}

/// Every method of the trait given tensors that disagree with the sizes it is told.
fn mismatched_tensors_are_errors(kind: BackendKind) {
    let Some(be) = open(kind) else { return };
    let be = be.as_ref();
    let t = |shape: &[usize]| be.zeros(shape).unwrap();
    let (k, m, i, o, r) = (2, 3, 4, 5, 2);
    let dims = LoraDims {
        k,
        m,
        i,
        o,
        r,
        x_shared: false,
    };
    let x = t(&[k, m, i]);
    let short_x = t(&[k, m, i - 1]);
    let w = t(&[o, i]);
    let a = t(&[k, r, i]);
    let b = t(&[k, o, r]);
    let short_b = t(&[k, o, r - 1]);
    let fwd = |x: &Tensor, b: &Tensor, dims: LoraDims| {
        be.lora_forward(&LoraForwardArgs {
            dims,
            x,
            weight: &w,
            bias: None,
            a: Strided::contiguous(&a, r * i, false),
            b: Strided::contiguous(b, o * r, false),
            scale: 1.0,
        })
    };
    assert!(fwd(&x, &b, dims).is_ok(), "the well-formed call must pass");
    expect_err(
        "lora_forward short x",
        fwd(&short_x, &b, dims),
        &["lora_forward", "`x`"],
    );
    expect_err(
        "lora_forward short b",
        fwd(&x, &short_b, dims),
        &["lora_forward", "lora_b"],
    );
    let big_k = LoraDims { k: 3, ..dims };
    expect_err(
        "lora_forward K past the tensors",
        fwd(&x, &b, big_k),
        &["lora_forward"],
    );

    let dy = t(&[k, m, o]);
    let h = t(&[k, m, r]);
    let mut grad = t(&[k * (r * i + o * r)]);
    let mut small_grad = t(&[k * r * i]);
    let bwd = |grad: &mut Tensor, h: &Tensor| {
        be.lora_backward(
            &LoraBackwardArgs {
                dims,
                dy: &dy,
                x: &x,
                weight: &w,
                a: Strided::contiguous(&a, r * i, false),
                b: Strided::contiguous(&b, o * r, false),
                h,
                scale: 1.0,
                need_dx: true,
                da: OutSlot {
                    offset: 0,
                    stride: r * i + o * r,
                },
                db: OutSlot {
                    offset: r * i,
                    stride: r * i + o * r,
                },
            },
            GradTargets::Arena(grad),
        )
    };
    assert!(bwd(&mut grad, &h).is_ok(), "the well-formed call must pass");
    expect_err(
        "lora_backward grad too small",
        bwd(&mut small_grad, &h),
        &["lora_backward", "do not fit"],
    );
    expect_err(
        "lora_backward short h",
        bwd(&mut grad, &t(&[k, m, r - 1])),
        &["`h`"],
    );
    // Two gradient tensors (what `ops::lora_backward` passes): each slot checked against
    // its own tensor, and the two must not share storage.
    let bwd_split = |da: &mut Tensor, db: &mut Tensor| {
        be.lora_backward(
            &LoraBackwardArgs {
                dims,
                dy: &dy,
                x: &x,
                weight: &w,
                a: Strided::contiguous(&a, r * i, false),
                b: Strided::contiguous(&b, o * r, false),
                h: &h,
                scale: 1.0,
                need_dx: false,
                da: OutSlot {
                    offset: 0,
                    stride: r * i,
                },
                db: OutSlot {
                    offset: 0,
                    stride: o * r,
                },
            },
            GradTargets::Split(da, db),
        )
    };
    let (mut da, mut db) = (t(&[k, r, i]), t(&[k, o, r]));
    assert!(
        bwd_split(&mut da, &mut db).is_ok(),
        "the well-formed split call must pass"
    );
    expect_err(
        "lora_backward d_lora_b too small",
        bwd_split(&mut da, &mut t(&[k * o * r - 1])),
        &["lora_backward", "d_lora_b", "do not fit"],
    );
    let mut both = t(&[k * (r * i + o * r)]);
    let mut alias = both.clone();
    expect_err(
        "lora_backward d_lora_a and d_lora_b share storage",
        bwd_split(&mut both, &mut alias),
        &["lora_backward", "d_lora_b", "d_lora_a"],
    );

    let (ma, mb) = (t(&[3, 4]), t(&[4, 5]));
    let mm = |inner: usize, out: &mut Tensor| {
        be.matmul(
            &MatmulArgs {
                batch: 1,
                m: 3,
                n: 5,
                inner,
                a: Strided::contiguous(&ma, 12, true),
                b: Strided::contiguous(&mb, 20, true),
                trans_a: false,
                trans_b: false,
                alpha: 1.0,
                out: OutSlot {
                    offset: 0,
                    stride: 15,
                },
            },
            out,
        )
    };
    assert!(
        mm(4, &mut t(&[3, 5])).is_ok(),
        "the well-formed call must pass"
    );
    expect_err(
        "matmul inner past a",
        mm(5, &mut t(&[3, 5])),
        &["matmul", "`a`"],
    );
    expect_err("matmul small c", mm(4, &mut t(&[3, 4])), &["matmul", "`c`"]);

    let theta = t(&[4, 6]);
    expect_err(
        "pairwise_sqdist",
        be.pairwise_sqdist(&theta, 4, 7),
        &["theta"],
    );
    expect_err("rbf_kernel", be.rbf_kernel(&theta, 5, 6, None), &["theta"]);
    let kern = t(&[4, 4]);
    expect_err(
        "svgd_direction short score",
        be.svgd_direction(&theta, &t(&[4, 5]), &kern, 4, 6, 1.0),
        &["score"],
    );
    expect_err(
        "svgd_direction small kernel",
        be.svgd_direction(&theta, &theta.clone(), &t(&[3, 3]), 4, 6, 1.0),
        &["kernel"],
    );

    let hp = AdamW {
        lr: 0.1,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.0,
        step: 1,
    };
    let (mut p, mut mm_, mut v) = (t(&[10]), t(&[10]), t(&[9]));
    expect_err(
        "adamw_step short v",
        be.adamw_step(&mut p, &t(&[10]), &mut mm_, &mut v, &hp),
        &["adamw_step", "`v`"],
    );
    let mut v = t(&[10]);
    expect_err(
        "adamw_step long grad",
        be.adamw_step(&mut p, &t(&[11]), &mut mm_, &mut v, &hp),
        &["`grad`"],
    );

    expect_err(
        "relu_backward",
        be.relu_backward(&t(&[8]), &t(&[7])),
        &["`dy`"],
    );
    expect_err(
        "gelu_backward",
        be.gelu_backward(&t(&[8]), &t(&[9])),
        &["`dy`"],
    );
    expect_err("axpby", be.axpby(1.0, &t(&[8]), 1.0, &t(&[3])), &["`y`"]);

    let logits = t(&[2, 3, 4]);
    expect_err(
        "softmax_xent label past C",
        be.softmax_xent(&logits, &[0, 4, 1], 2, 3, 4),
        &["label 4"],
    );
    expect_err(
        "softmax_xent few labels",
        be.softmax_xent(&logits, &[0, 1], 2, 3, 4),
        &["labels"],
    );
    expect_err(
        "softmax_xent dims past logits",
        be.softmax_xent(&logits, &[0, 1, 2], 2, 3, 5),
        &["logits"],
    );
    expect_err(
        "ensemble_stats",
        be.ensemble_stats(&logits, 3, 3, 4),
        &["logits"],
    );

    // A tensor of another backend is refused, not reinterpreted.
    let other = if kind == BackendKind::Cpu {
        None
    } else {
        Some(bella::backend::cpu::CpuBackend::new())
    };
    if let Some(cpu) = other {
        let foreign = cpu.zeros(&[8]).unwrap();
        expect_err("foreign tensor", be.relu_forward(&foreign), &["cpu"]);
    }
}

/// Outputs past the budget are refused before anything is allocated.
fn huge_outputs_are_budget_errors(kind: BackendKind) {
    let Some(be) = open(kind) else { return };
    let be = be.as_ref();
    let theta = be.zeros(&[1 << 20, 1]).unwrap();
    expect_err(
        "pairwise_sqdist 2^40 outputs",
        be.pairwise_sqdist(&theta, 1 << 20, 1),
        &["pairwise_sqdist", "budget", "TiB"],
    );
    expect_err(
        "zeros 2^42 elements",
        be.zeros(&[1 << 21, 1 << 21]),
        &["zeros"],
    );
    expect_err(
        "ops::matmul 2^40 outputs",
        bella::ops::matmul(
            be,
            &theta,
            &be.zeros(&[1, 1 << 20]).unwrap(),
            false,
            false,
            1.0,
        ),
        &["matmul", "budget"],
    );
    let overflow: bella::Result<Tensor> = be.zeros(&[usize::MAX, 3]);
    assert!(
        matches!(overflow, Err(BellaError::Invalid(_))),
        "{overflow:?}"
    );
}

/// Every float input of every case poisoned with NaN and ±Inf: each op returns (anything).
fn non_finite_inputs_finish(kind: BackendKind) {
    let Some(be) = open(kind) else { return };
    let mut rng = Rng::new(Rng::fresh_seed());
    for op in bella::ops::OP_NAMES {
        for case in cases(op, Sizes::Small, &mut rng).into_iter().take(3) {
            for poison in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
                let mut inputs: Named = case.inputs.clone();
                for t in inputs.values_mut() {
                    if let HostData::Float(v) = &mut t.data {
                        if v.len() > 1 {
                            let n = v.len();
                            v[rng.below(n)] = poison;
                            v[0] = poison;
                        }
                    }
                }
                // Ok (NaN out) or a clear error; what matters is that it returns.
                let _ = run_named(be.as_ref(), op, &inputs);
            }
        }
    }
}

/// One op, its inputs, and its outputs when run alone.
type Job = (String, Named, Vec<(String, HostTensor)>);

/// Every op from 4 threads on one backend instance, many times, each result checked
/// bit-for-bit against the same op run alone (kernels are deterministic per backend).
fn shared_between_threads(kind: BackendKind, rounds: usize) {
    let Some(be) = open(kind) else { return };
    let mut rng = Rng::new(Rng::fresh_seed());
    let mut work: Vec<Job> = Vec::new();
    for op in bella::ops::OP_NAMES {
        for case in cases(op, Sizes::Small, &mut rng).into_iter().take(2) {
            let want = run_named(be.as_ref(), op, &case.inputs).unwrap();
            work.push((op.to_string(), case.inputs, want));
        }
    }
    let work = Arc::new(work);
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let (be, work) = (be.clone(), work.clone());
            std::thread::spawn(move || {
                for round in 0..rounds {
                    for (n, (op, inputs, want)) in work.iter().enumerate() {
                        // Each thread walks the work list from its own place.
                        if (n + t + round) % 2 == 0 {
                            continue;
                        }
                        let got = run_named(be.as_ref(), op, inputs)
                            .unwrap_or_else(|e| panic!("{op} on thread {t}: {e}"));
                        assert_eq!(&got, want, "{op} on thread {t}, round {round}");
                    }
                }
            })
        })
        .collect();
    #[cfg(feature = "wgpu")]
    let timing = timing_reader(kind);
    for h in threads {
        h.join().expect("a worker thread failed");
    }
    #[cfg(feature = "wgpu")]
    if let Some(h) = timing {
        h.join().expect("the timing thread failed");
    }
}

/// On wgpu, a fifth thread switches kernel timing on and reads timestamps while the
/// workers submit: the shared timestamp readback must never be mapped under a submission.
#[cfg(feature = "wgpu")]
fn timing_reader(kind: BackendKind) -> Option<std::thread::JoinHandle<()>> {
    if kind != BackendKind::Wgpu {
        return None;
    }
    let gpu = bella::backend::wgpu::WgpuBackend::new().ok()?;
    if !gpu.set_timing(true) {
        return None;
    }
    Some(std::thread::spawn(move || {
        let x = gpu.upload(&[4096], &vec![1.0; 4096]).unwrap();
        for _ in 0..200 {
            gpu.gelu_forward(&x).unwrap();
            let _ = gpu.time_last_submit_ns();
        }
        gpu.set_timing(false);
    }))
}

macro_rules! safety_tests {
    ($name:ident, $kind:expr, $rounds:expr) => {
        mod $name {
            use super::*;
            #[test]
            fn mismatched_tensors_through_the_trait_are_errors() {
                mismatched_tensors_are_errors($kind);
            }
            #[test]
            fn outputs_past_the_memory_budget_are_errors() {
                huge_outputs_are_budget_errors($kind);
            }
            #[test]
            fn nan_and_inf_inputs_finish() {
                non_finite_inputs_finish($kind);
            }
            #[test]
            fn one_backend_shared_by_four_threads() {
                shared_between_threads($kind, $rounds);
            }
        }
    };
}

safety_tests!(cpu, BackendKind::Cpu, 50);
safety_tests!(wgpu, BackendKind::Wgpu, 10);
safety_tests!(ptx_sim, BackendKind::PtxSim, 4);
safety_tests!(cuda, BackendKind::Cuda, 20);
