//! Finite-difference checks of every backward rule of the tape (LoRA, dense, ReLU, GELU,
//! softmax cross-entropy with shared and per-particle labels) and through 3-layer networks
//! of LoRA particles and of dense particles. The objective is the tape's `Σ_k loss_k`;
//! central differences in f32 on the CPU backend.

use bella::autograd::{Activation, Arena, DenseSlots, FrozenRef, LoraSlots, Tape, Var};
use bella::backend::cpu::CpuBackend;
use bella::nn::{DenseParticles, FrozenMlp, LoraParticles, Particles};
use bella::rng::Rng;
use bella::{Backend, Result};
use std::sync::Arc;

const EPS: f32 = 1e-2;

/// Compare an analytic gradient with central differences of `f` at `n` sampled coordinates.
fn check(what: &str, x: &[f32], analytic: &[f32], rng: &mut Rng, f: &mut dyn FnMut(&[f32]) -> f32) {
    assert_eq!(x.len(), analytic.len(), "{what}: gradient length");
    let picks: Vec<usize> = if x.len() <= 24 {
        (0..x.len()).collect()
    } else {
        (0..24).map(|_| rng.below(x.len())).collect()
    };
    let mut xp = x.to_vec();
    for i in picks {
        xp[i] = x[i] + EPS;
        let up = f(&xp);
        xp[i] = x[i] - EPS;
        let down = f(&xp);
        xp[i] = x[i];
        let fd = (up - down) / (2.0 * EPS);
        let tol = 2e-3 + 2e-2 * fd.abs().max(analytic[i].abs());
        assert!(
            (fd - analytic[i]).abs() <= tol,
            "{what}[{i}]: finite difference {fd}, backward {}",
            analytic[i]
        );
    }
}

fn labels(rng: &mut Rng, n: usize, c: usize) -> Vec<u32> {
    (0..n).map(|_| rng.below(c) as u32).collect()
}

/// Values away from 0 (ReLU has a kink there).
fn away_from_zero(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let v = rng.normal();
            v.signum() * (v.abs() + 0.1)
        })
        .collect()
}

/// logits = act(x); checks d(Σ_k loss_k)/dx for both activations and both label forms.
#[test]
fn activations_and_softmax_xent() {
    let be = CpuBackend::new();
    let mut rng = Rng::new(11);
    let (k, m, c) = (3, 5, 4);
    for act in [None, Some(Activation::Relu), Some(Activation::Gelu)] {
        for per_particle in [false, true] {
            let x = away_from_zero(&mut rng, k * m * c);
            let y = labels(&mut rng, if per_particle { k * m } else { m }, c);
            let run = |xs: &[f32], grad: bool| -> Result<(f32, Vec<f32>)> {
                let mut tape = Tape::new(&be);
                let xv = tape.input(be.upload(&[k, m, c], xs)?, grad);
                let out = match act {
                    Some(a) => tape.activation(xv, a)?,
                    None => xv,
                };
                let loss = tape.softmax_xent(out, &y)?;
                let total = loss.total(&be)?;
                let mut arena = be.zeros(&[1, 1])?;
                let g = tape.backward(loss, &mut arena)?;
                let g = if grad {
                    be.download(g.get(xv).expect("input gradient"))?
                } else {
                    vec![]
                };
                Ok((total, g))
            };
            let (_, g) = run(&x, true).unwrap();
            let what = format!("{act:?} per_particle={per_particle}");
            check(&what, &x, &g, &mut rng, &mut |xs| run(xs, false).unwrap().0);
        }
    }
}

/// One LoRA layer: gradients of the arena (A and B of every particle) and of x, for a
/// shared x and for per-particle x.
#[test]
fn lora_layer() {
    let be = CpuBackend::new();
    let mut rng = Rng::new(12);
    let (k, m, i, o, r) = (3, 4, 5, 6, 2);
    let w = be.upload(&[o, i], &rng.normal_vec(o * i)).unwrap();
    let b = be.upload(&[o], &rng.normal_vec(o)).unwrap();
    // Arena row: a gap (other layers), then A [r, I], B [O, r], then another gap.
    let slots = LoraSlots {
        a_offset: 3,
        b_offset: 3 + r * i,
        rank: r,
    };
    let d = 3 + r * i + o * r + 2;
    let y = labels(&mut rng, m, o);
    for shared in [true, false] {
        let xshape: Vec<usize> = if shared { vec![m, i] } else { vec![k, m, i] };
        let x = rng.normal_vec(xshape.iter().product());
        let theta = rng.normal_vec(k * d);
        let run = |xs: &[f32], th: &[f32]| -> Result<(f32, Vec<f32>, Vec<f32>)> {
            let params = be.upload(&[k, d], th)?;
            let mut tape = Tape::new(&be);
            let xv = tape.input(be.upload(&xshape, xs)?, true);
            let base = FrozenRef {
                weight: &w,
                bias: Some(&b),
            };
            let out = tape.lora(
                xv,
                base,
                Arena {
                    params: &params,
                    k,
                    d,
                },
                slots,
                0.7,
            )?;
            let loss = tape.softmax_xent(out, &y)?;
            let total = loss.total(&be)?;
            let mut grad = be.zeros(&[k, d])?;
            let g = tape.backward(loss, &mut grad)?;
            let gx = be.download(g.get(xv).expect("x gradient"))?;
            Ok((total, be.download(&grad)?, gx))
        };
        let (_, g_theta, g_x) = run(&x, &theta).unwrap();
        // Slots outside the layer's blocks must stay untouched (zero).
        for kk in 0..k {
            assert_eq!(&g_theta[kk * d..kk * d + 3], &[0.0; 3]);
        }
        check(
            &format!("lora arena shared={shared}"),
            &theta,
            &g_theta,
            &mut rng,
            &mut |th| run(&x, th).unwrap().0,
        );
        check(
            &format!("lora x shared={shared}"),
            &x,
            &g_x,
            &mut rng,
            &mut |xs| run(xs, &theta).unwrap().0,
        );
    }
}

/// One dense layer (weights and bias in the arena), shared and per-particle x.
#[test]
fn dense_layer() {
    let be = CpuBackend::new();
    let mut rng = Rng::new(13);
    let (k, m, i, o) = (2, 3, 5, 4);
    let slots = DenseSlots {
        w_offset: 1,
        b_offset: Some(1 + o * i),
        in_features: i,
        out_features: o,
    };
    let d = 1 + o * i + o;
    let y = labels(&mut rng, m, o);
    for shared in [true, false] {
        let xshape: Vec<usize> = if shared { vec![m, i] } else { vec![k, m, i] };
        let x = rng.normal_vec(xshape.iter().product());
        let theta = rng.normal_vec(k * d);
        let run = |xs: &[f32], th: &[f32]| -> Result<(f32, Vec<f32>, Vec<f32>)> {
            let params = be.upload(&[k, d], th)?;
            let mut tape = Tape::new(&be);
            let xv = tape.input(be.upload(&xshape, xs)?, true);
            let out = tape.dense(
                xv,
                Arena {
                    params: &params,
                    k,
                    d,
                },
                slots,
            )?;
            let loss = tape.softmax_xent(out, &y)?;
            let total = loss.total(&be)?;
            let mut grad = be.zeros(&[k, d])?;
            let g = tape.backward(loss, &mut grad)?;
            let gx = be.download(g.get(xv).expect("x gradient"))?;
            Ok((total, be.download(&grad)?, gx))
        };
        let (_, g_theta, g_x) = run(&x, &theta).unwrap();
        check(
            &format!("dense arena shared={shared}"),
            &theta,
            &g_theta,
            &mut rng,
            &mut |th| run(&x, th).unwrap().0,
        );
        check(
            &format!("dense x shared={shared}"),
            &x,
            &g_x,
            &mut rng,
            &mut |xs| run(xs, &theta).unwrap().0,
        );
    }
}

fn random_spec(widths: &[usize], rng_seed: u64) -> bella::nn::MlpSpec {
    DenseParticles::random_spec(widths, Activation::Gelu, rng_seed)
}

/// Gradient of `Σ_k loss_k` of a 3-layer network w.r.t. its arena and its input.
fn net_grads(
    be: &dyn Backend,
    model: &dyn Particles,
    x: &[f32],
    xshape: &[usize],
    th: &[f32],
    y: &[u32],
) -> Result<(f32, Vec<f32>, Vec<f32>)> {
    let params = be.upload(&[model.k(), model.d()], th)?;
    let mut tape = Tape::new(be);
    let xv: Var = tape.input(be.upload(xshape, x)?, true);
    let out = model.forward(&mut tape, xv, &params)?;
    let loss = tape.softmax_xent(out, y)?;
    let total = loss.total(be)?;
    let mut grad = be.zeros(&[model.k(), model.d()])?;
    let g = tape.backward(loss, &mut grad)?;
    let gx = be.download(g.get(xv).expect("x gradient"))?;
    Ok((total, be.download(&grad)?, gx))
}

#[test]
fn three_layer_lora_network() {
    let be = CpuBackend::new();
    let mut rng = Rng::new(14);
    let spec = random_spec(&[6, 7, 5, 4], 3);
    let base = Arc::new(FrozenMlp::upload(&be, spec).unwrap());
    let model = LoraParticles::new(base, 3, 2, 2.0).unwrap();
    // Random B too, so every path carries gradient.
    let theta: Vec<f32> = rng
        .normal_vec(model.k() * model.d())
        .iter()
        .map(|v| 0.5 * v)
        .collect();
    let (m, per_particle) = (5, true);
    let xshape = [model.k(), m, 6];
    let x = rng.normal_vec(xshape.iter().product());
    let y = labels(&mut rng, if per_particle { model.k() * m } else { m }, 4);
    let (_, g_theta, g_x) = net_grads(&be, &model, &x, &xshape, &theta, &y).unwrap();
    check("lora net arena", &theta, &g_theta, &mut rng, &mut |th| {
        net_grads(&be, &model, &x, &xshape, th, &y).unwrap().0
    });
    check("lora net x", &x, &g_x, &mut rng, &mut |xs| {
        net_grads(&be, &model, xs, &xshape, &theta, &y).unwrap().0
    });
}

#[test]
fn three_layer_dense_network() {
    let be = CpuBackend::new();
    let mut rng = Rng::new(15);
    let model = DenseParticles::new(random_spec(&[5, 6, 6, 3], 4), 2);
    let theta = model.init();
    let m = 4;
    let xshape = [m, 5];
    let x = rng.normal_vec(m * 5);
    let y = labels(&mut rng, m, 3);
    let (_, g_theta, g_x) = net_grads(&be, &model, &x, &xshape, &theta, &y).unwrap();
    check("dense net arena", &theta, &g_theta, &mut rng, &mut |th| {
        net_grads(&be, &model, &x, &xshape, th, &y).unwrap().0
    });
    check("dense net x", &x, &g_x, &mut rng, &mut |xs| {
        net_grads(&be, &model, xs, &xshape, &theta, &y).unwrap().0
    });
}
