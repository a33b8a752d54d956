//! Gradient checks of every backward rule of the tape (LoRA, dense, ReLU, GELU, softmax
//! cross-entropy with shared and per-particle labels) and through 3-layer networks of LoRA
//! particles and of dense particles. The objective is the tape's `Σ_k loss_k`.
//!
//! The reference is float64: the same network written out below as plain f64 loops
//! ([`Net64`]), evaluated at the very f32 point the tape saw, and differentiated by central
//! differences in f64 in every coordinate. The tape's gradient (f32, CPU backend) must match
//! it element-wise, `|g − g_fd| ≤ RTOL · max|g_fd| + ATOL`, so one wrong entry fails even
//! when it is small next to the others ([`planted_gradient_bugs_are_caught`] shows it).
//! The f64 forward is also checked against the tape's f32 loss, so the reference is the
//! function the tape computes.

use bella::autograd::{Activation, Arena, DenseSlots, FrozenRef, LoraSlots, Tape, Var};
use bella::backend::cpu::CpuBackend;
use bella::nn::{DenseParticles, FrozenMlp, LoraParticles, Particles};
use bella::rng::Rng;
use bella::{Backend, Result};
use std::sync::Arc;

/// Element-wise tolerance relative to the largest reference entry. The f32 gradients of
/// these small networks are good to 3e-7 of it (worst case seen); a 0.1 % error in the
/// largest entry is 1e-3 of it.
const RTOL: f64 = 1e-5;
/// Absolute floor, for gradients that are exactly zero.
const ATOL: f64 = 1e-7;
/// Central-difference step (relative to `max(1, |x|)`): its f64 truncation error is ~1e-10,
/// its rounding error ~1e-11, both far below `RTOL`.
const STEP: f64 = 1e-5;

fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

// ---------------------------------------------------------------- the float64 reference

/// One layer of the float64 reference network.
enum Layer64 {
    /// Frozen `weight [O, I]` and `bias [O]`, adapted by the particle's `A [r, I]` and
    /// `B [O, r]` at `slots`: `y = x Wᵀ + b + scale · (x Aᵀ) Bᵀ`; without slots (a layer
    /// that is not a target module) `y = x Wᵀ + b`.
    Lora {
        weight: Vec<f64>,
        bias: Option<Vec<f64>>,
        out_features: usize,
        in_features: usize,
        slots: Option<LoraSlots>,
        scale: f64,
    },
    /// The particle's own `W [O, I]` and bias at `slots`: `y = x Wᵀ + b`.
    Dense(DenseSlots),
    Act(Activation),
}

/// K particles through `layers`, then the mean softmax cross-entropy of each; the value is
/// `Σ_k loss_k`, the objective the tape differentiates.
struct Net64 {
    k: usize,
    d: usize,
    layers: Vec<Layer64>,
}

/// `y [m, o] = h [m, i] · wᵀ (+ b)`, `w` row-major `[o, i]`.
fn linear(h: &[f64], m: usize, i: usize, w: &[f64], o: usize, b: Option<&[f64]>) -> Vec<f64> {
    let mut y = vec![0.0; m * o];
    for r in 0..m {
        for c in 0..o {
            let mut acc = b.map_or(0.0, |b| b[c]);
            for j in 0..i {
                acc += h[r * i + j] * w[c * i + j];
            }
            y[r * o + c] = acc;
        }
    }
    y
}

fn act64(kind: Activation, x: f64) -> f64 {
    match kind {
        Activation::Relu => x.max(0.0),
        // PyTorch's approximate="tanh".
        Activation::Gelu => {
            let u = (2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x);
            0.5 * x * (1.0 + u.tanh())
        }
    }
}

/// Mean over the m rows of `−log softmax(z)[label]`.
fn xent64(z: &[f64], m: usize, c: usize, labels: &[u32]) -> f64 {
    let mut total = 0.0;
    for r in 0..m {
        let row = &z[r * c..(r + 1) * c];
        let top = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let lse = top + row.iter().map(|v| (v - top).exp()).sum::<f64>().ln();
        total += lse - row[labels[r] as usize];
    }
    total / m as f64
}

impl Layer64 {
    /// This layer on `h [m, width]` with particle parameters `row`; the output and its width.
    fn forward(&self, h: &[f64], m: usize, width: usize, row: &[f64]) -> (Vec<f64>, usize) {
        match self {
            Layer64::Lora {
                weight,
                bias,
                out_features: o,
                in_features: i,
                slots,
                scale,
            } => {
                let (o, i) = (*o, *i);
                assert_eq!(width, i, "LoRA layer input width");
                let mut y = linear(h, m, i, weight, o, bias.as_deref());
                let Some(slots) = slots else {
                    return (y, o);
                };
                let r = slots.rank;
                let a = &row[slots.a_offset..slots.a_offset + r * i];
                let b = &row[slots.b_offset..slots.b_offset + o * r];
                let z = linear(h, m, i, a, r, None);
                let lora = linear(&z, m, r, b, o, None);
                y.iter_mut().zip(&lora).for_each(|(y, l)| *y += scale * l);
                (y, o)
            }
            Layer64::Dense(s) => {
                let (o, i) = (s.out_features, s.in_features);
                assert_eq!(width, i, "dense layer input width");
                let w = &row[s.w_offset..s.w_offset + o * i];
                let b = s.b_offset.map(|off| &row[off..off + o]);
                (linear(h, m, i, w, o, b), o)
            }
            Layer64::Act(kind) => (h.iter().map(|&v| act64(*kind, v)).collect(), width),
        }
    }
}

impl Net64 {
    /// `Σ_k loss_k` for `x` of shape `[M, I]` (shared) or `[K, M, I]`, the `[K, D]` arena
    /// `theta`, and `labels` (M shared, or K·M with particle k's at `k·M..`).
    fn loss(&self, x: &[f64], xshape: &[usize], theta: &[f64], labels: &[u32]) -> f64 {
        let (m, i, shared) = match *xshape {
            [m, i] => (m, i, true),
            [k, m, i] if k == self.k => (m, i, false),
            _ => panic!("x shape {xshape:?}"),
        };
        (0..self.k)
            .map(|p| {
                let mut h = if shared {
                    x.to_vec()
                } else {
                    x[p * m * i..(p + 1) * m * i].to_vec()
                };
                let mut width = i;
                let row = &theta[p * self.d..(p + 1) * self.d];
                for layer in &self.layers {
                    (h, width) = layer.forward(&h, m, width, row);
                }
                let own = if labels.len() == m {
                    labels
                } else {
                    &labels[p * m..(p + 1) * m]
                };
                xent64(&h, m, width, own)
            })
            .sum()
    }

    /// The reference for a LoRA particle model: its frozen base and adapter slots.
    fn of_lora(model: &LoraParticles) -> Net64 {
        let spec = &model.base.spec;
        let n = spec.layers.len();
        let mut layers = Vec::new();
        for (l, (lin, slots)) in spec.layers.iter().zip(&model.slots).enumerate() {
            layers.push(Layer64::Lora {
                weight: f64s(&lin.weight),
                bias: lin.bias.as_deref().map(f64s),
                out_features: lin.out_features,
                in_features: lin.in_features,
                slots: *slots,
                scale: model.scale as f64,
            });
            if l + 1 < n {
                layers.push(Layer64::Act(spec.activation));
            }
        }
        Net64 {
            k: model.k(),
            d: model.d(),
            layers,
        }
    }

    /// The reference for a dense particle model.
    fn of_dense(model: &DenseParticles) -> Net64 {
        let n = model.slots.len();
        let mut layers = Vec::new();
        for (l, s) in model.slots.iter().enumerate() {
            layers.push(Layer64::Dense(*s));
            if l + 1 < n {
                layers.push(Layer64::Act(model.spec.activation));
            }
        }
        Net64 {
            k: model.k(),
            d: model.d(),
            layers,
        }
    }
}

/// Central differences of `f` in f64, every coordinate.
fn central_diff(x: &[f64], f: &dyn Fn(&[f64]) -> f64) -> Vec<f64> {
    let mut xp = x.to_vec();
    (0..x.len())
        .map(|i| {
            let h = STEP * x[i].abs().max(1.0);
            xp[i] = x[i] + h;
            let (up, hi) = (f(&xp), xp[i]);
            xp[i] = x[i] - h;
            let (down, lo) = (f(&xp), xp[i]);
            xp[i] = x[i];
            (up - down) / (hi - lo)
        })
        .collect()
}

// ---------------------------------------------------------------- the comparison

/// How far a gradient is from the reference: the worst `|g − g_fd|` and the scale it is
/// measured against (`max |g_fd|`).
#[derive(Debug)]
struct Fit {
    worst: f64,
    scale: f64,
}

/// Element-wise `|g − g_fd| ≤ RTOL · max|g_fd| + ATOL`; the error lists the entries that fail.
fn compare(what: &str, g: &[f32], fd: &[f64]) -> std::result::Result<Fit, String> {
    if g.len() != fd.len() {
        return Err(format!(
            "{what}: gradient has {} entries, reference {}",
            g.len(),
            fd.len()
        ));
    }
    let scale = fd.iter().fold(0.0f64, |a, v| a.max(v.abs()));
    let tol = RTOL * scale + ATOL;
    let mut worst = 0.0f64;
    let mut bad = Vec::new();
    for (i, (&g, &r)) in g.iter().zip(fd).enumerate() {
        let err = (g as f64 - r).abs();
        // NaN in either fails too.
        if err > tol || err.is_nan() {
            bad.push(format!(
                "[{i}]: backward {g:e}, f64 central difference {r:e}"
            ));
        }
        worst = worst.max(err);
    }
    if bad.is_empty() {
        Ok(Fit { worst, scale })
    } else {
        let n = bad.len();
        bad.truncate(8);
        Err(format!(
            "{what}: {n} of {} entries off by more than {tol:e} (= {RTOL:e} · max|g_fd| {scale:e} + {ATOL:e}):\n  {}",
            g.len(),
            bad.join("\n  ")
        ))
    }
}

/// [`compare`], failing the test.
fn check(what: &str, g: &[f32], fd: &[f64]) {
    match compare(what, g, fd) {
        Ok(fit) => println!(
            "ok   {what}: worst |g − g_fd| / max|g_fd| = {:.1e}, max|g_fd| = {:.3e}",
            fit.worst / fit.scale.max(f64::MIN_POSITIVE),
            fit.scale
        ),
        Err(e) => panic!("{e}"),
    }
}

/// The tape's f32 loss is the function the f64 reference differentiates.
fn check_forward(what: &str, tape_loss: f32, reference: f64) {
    let err = (tape_loss as f64 - reference).abs();
    assert!(
        err <= 1e-5 * reference.abs().max(1.0),
        "{what}: tape loss {tape_loss}, f64 reference {reference}: not the same function"
    );
}

// ---------------------------------------------------------------- the cases

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
            let mut tape = Tape::new(&be);
            let xv = tape.input(be.upload(&[k, m, c], &x).unwrap(), true);
            let out = match act {
                Some(a) => tape.activation(xv, a).unwrap(),
                None => xv,
            };
            let loss = tape.softmax_xent(out, &y).unwrap();
            let total = loss.total(&be).unwrap();
            let mut arena = be.zeros(&[1, 1]).unwrap();
            let grads = tape.backward(loss, &mut arena).unwrap();
            let g = be.download(grads.get(xv).expect("input gradient")).unwrap();

            let net = Net64 {
                k,
                d: 0,
                layers: act.map(Layer64::Act).into_iter().collect(),
            };
            let xshape = [k, m, c];
            let f = |xs: &[f64]| net.loss(xs, &xshape, &[], &y);
            let what = format!("{act:?} per_particle={per_particle}");
            check_forward(&what, total, f(&f64s(&x)));
            check(&what, &g, &central_diff(&f64s(&x), &f));
        }
    }
}

/// The tape's loss and gradients (arena, x) of one LoRA layer.
struct LoraCase {
    k: usize,
    d: usize,
    slots: LoraSlots,
    /// Entries of each particle's `B`.
    b_len: usize,
    xshape: Vec<usize>,
    x: Vec<f32>,
    theta: Vec<f32>,
    y: Vec<u32>,
    net: Net64,
    loss: f32,
    g_theta: Vec<f32>,
    g_x: Vec<f32>,
}

/// One LoRA layer, shared x or per-particle x. The arena row holds a gap (other layers),
/// then `A [r, I]`, `B [O, r]`, then another gap.
fn lora_case(rng: &mut Rng, shared: bool) -> LoraCase {
    let be = CpuBackend::new();
    let (k, m, i, o, r) = (3, 4, 5, 6, 2);
    let (w, b) = (rng.normal_vec(o * i), rng.normal_vec(o));
    let slots = LoraSlots {
        a_offset: 3,
        b_offset: 3 + r * i,
        rank: r,
    };
    let d = 3 + r * i + o * r + 2;
    let y = labels(rng, m, o);
    let xshape: Vec<usize> = if shared { vec![m, i] } else { vec![k, m, i] };
    let x = rng.normal_vec(xshape.iter().product());
    let theta = rng.normal_vec(k * d);
    let scale = 0.7;

    let run = || -> Result<(f32, Vec<f32>, Vec<f32>)> {
        let (wt, bt) = (be.upload(&[o, i], &w)?, be.upload(&[o], &b)?);
        let params = be.upload(&[k, d], &theta)?;
        let mut tape = Tape::new(&be);
        let xv = tape.input(be.upload(&xshape, &x)?, true);
        let base = FrozenRef {
            weight: &wt,
            bias: Some(&bt),
        };
        let arena = Arena {
            params: &params,
            k,
            d,
        };
        let out = tape.lora(xv, base, arena, slots, scale)?;
        let loss = tape.softmax_xent(out, &y)?;
        let total = loss.total(&be)?;
        let mut grad = be.zeros(&[k, d])?;
        let g = tape.backward(loss, &mut grad)?;
        let gx = be.download(g.get(xv).expect("x gradient"))?;
        Ok((total, be.download(&grad)?, gx))
    };
    let (loss, g_theta, g_x) = run().unwrap();
    let net = Net64 {
        k,
        d,
        layers: vec![Layer64::Lora {
            weight: f64s(&w),
            bias: Some(f64s(&b)),
            out_features: o,
            in_features: i,
            slots: Some(slots),
            scale: scale as f64,
        }],
    };
    LoraCase {
        k,
        d,
        slots,
        b_len: o * r,
        xshape,
        x,
        theta,
        y,
        net,
        loss,
        g_theta,
        g_x,
    }
}

impl LoraCase {
    /// The f64 reference loss and its central differences in the arena and in x.
    fn reference(&self) -> (f64, Vec<f64>, Vec<f64>) {
        let (x, theta) = (f64s(&self.x), f64s(&self.theta));
        let loss = self.net.loss(&x, &self.xshape, &theta, &self.y);
        let fd_theta = central_diff(&theta, &|th| self.net.loss(&x, &self.xshape, th, &self.y));
        let fd_x = central_diff(&x, &|xs| self.net.loss(xs, &self.xshape, &theta, &self.y));
        (loss, fd_theta, fd_x)
    }
}

/// One LoRA layer: gradients of the arena (A and B of every particle) and of x, for a
/// shared x and for per-particle x.
#[test]
fn lora_layer() {
    let mut rng = Rng::new(12);
    for shared in [true, false] {
        let c = lora_case(&mut rng, shared);
        // Slots outside the layer's blocks must stay untouched (zero).
        for kk in 0..c.k {
            assert_eq!(&c.g_theta[kk * c.d..kk * c.d + 3], &[0.0; 3]);
            assert_eq!(&c.g_theta[(kk + 1) * c.d - 2..(kk + 1) * c.d], &[0.0; 2]);
        }
        let (loss, fd_theta, fd_x) = c.reference();
        check_forward(&format!("lora shared={shared}"), c.loss, loss);
        check(
            &format!("lora arena shared={shared}"),
            &c.g_theta,
            &fd_theta,
        );
        check(&format!("lora x shared={shared}"), &c.g_x, &fd_x);
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
    let net = Net64 {
        k,
        d,
        layers: vec![Layer64::Dense(slots)],
    };
    for shared in [true, false] {
        let xshape: Vec<usize> = if shared { vec![m, i] } else { vec![k, m, i] };
        let x = rng.normal_vec(xshape.iter().product());
        let theta = rng.normal_vec(k * d);
        let run = || -> Result<(f32, Vec<f32>, Vec<f32>)> {
            let params = be.upload(&[k, d], &theta)?;
            let mut tape = Tape::new(&be);
            let xv = tape.input(be.upload(&xshape, &x)?, true);
            let arena = Arena {
                params: &params,
                k,
                d,
            };
            let out = tape.dense(xv, arena, slots)?;
            let loss = tape.softmax_xent(out, &y)?;
            let total = loss.total(&be)?;
            let mut grad = be.zeros(&[k, d])?;
            let g = tape.backward(loss, &mut grad)?;
            let gx = be.download(g.get(xv).expect("x gradient"))?;
            Ok((total, be.download(&grad)?, gx))
        };
        let (loss, g_theta, g_x) = run().unwrap();
        let (x64, th64) = (f64s(&x), f64s(&theta));
        check_forward(
            &format!("dense shared={shared}"),
            loss,
            net.loss(&x64, &xshape, &th64, &y),
        );
        let fd_theta = central_diff(&th64, &|th| net.loss(&x64, &xshape, th, &y));
        let fd_x = central_diff(&x64, &|xs| net.loss(xs, &xshape, &th64, &y));
        check(&format!("dense arena shared={shared}"), &g_theta, &fd_theta);
        check(&format!("dense x shared={shared}"), &g_x, &fd_x);
    }
}

fn random_spec(widths: &[usize], rng_seed: u64) -> bella::nn::MlpSpec {
    DenseParticles::random_spec(widths, Activation::Gelu, rng_seed)
}

/// Loss (`Σ_k loss_k`) and gradients of a 3-layer network w.r.t. its arena and its input.
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

/// The tape's gradients of a network against the f64 reference `net`, arena and input.
fn check_net(
    what: &str,
    model: &dyn Particles,
    net: &Net64,
    x: &[f32],
    xshape: &[usize],
    theta: &[f32],
    y: &[u32],
) {
    let be = CpuBackend::new();
    let (loss, g_theta, g_x) = net_grads(&be, model, x, xshape, theta, y).unwrap();
    let (x64, th64) = (f64s(x), f64s(theta));
    check_forward(what, loss, net.loss(&x64, xshape, &th64, y));
    let fd_theta = central_diff(&th64, &|th| net.loss(&x64, xshape, th, y));
    let fd_x = central_diff(&x64, &|xs| net.loss(xs, xshape, &th64, y));
    check(&format!("{what} arena"), &g_theta, &fd_theta);
    check(&format!("{what} x"), &g_x, &fd_x);
}

#[test]
fn three_layer_lora_network() {
    let be = CpuBackend::new();
    let mut rng = Rng::new(14);
    let spec = random_spec(&[6, 7, 5, 4], 3);
    let base = Arc::new(FrozenMlp::upload(&be, spec).unwrap());
    let full = LoraParticles::new(base.clone(), 3, 2, 2.0).unwrap();
    // Target modules: the first and last layer (a frozen one between), and the middle one
    // only (frozen layers before and after, so `dx` flows through a frozen layer).
    let names = |ls: &[usize]| -> Vec<String> {
        ls.iter()
            .map(|&l| base.spec.layers[l].name.clone())
            .collect()
    };
    let ends = LoraParticles::with_targets(base.clone(), 3, 2, 2.0, &names(&[0, 2])).unwrap();
    let middle = LoraParticles::with_targets(base.clone(), 3, 2, 2.0, &names(&[1])).unwrap();
    assert!(ends.d() < full.d() && middle.d() < ends.d());
    for (which, model) in [("all", &full), ("ends", &ends), ("middle", &middle)] {
        // Random B too, so every path carries gradient.
        let theta: Vec<f32> = rng
            .normal_vec(model.k() * model.d())
            .iter()
            .map(|v| 0.5 * v)
            .collect();
        let net = Net64::of_lora(model);
        let m = 5;
        for per_particle in [false, true] {
            let xshape = if per_particle {
                vec![model.k(), m, 6]
            } else {
                vec![m, 6]
            };
            let x = rng.normal_vec(xshape.iter().product());
            let y = labels(&mut rng, if per_particle { model.k() * m } else { m }, 4);
            let what = format!("lora net ({which} layers) per_particle={per_particle}");
            check_net(&what, model, &net, &x, &xshape, &theta, &y);
        }
    }
}

#[test]
fn three_layer_dense_network() {
    let mut rng = Rng::new(15);
    let model = DenseParticles::new(random_spec(&[5, 6, 6, 3], 4), 2);
    // Particles apart from each other (init() gives every particle the same start).
    let theta: Vec<f32> = model
        .init()
        .iter()
        .map(|v| v + 0.3 * rng.normal())
        .collect();
    let net = Net64::of_dense(&model);
    let m = 4;
    for per_particle in [false, true] {
        let xshape = if per_particle {
            vec![model.k(), m, 5]
        } else {
            vec![m, 5]
        };
        let x = rng.normal_vec(xshape.iter().product());
        let y = labels(&mut rng, if per_particle { model.k() * m } else { m }, 3);
        let what = format!("dense net per_particle={per_particle}");
        check_net(&what, &model, &net, &x, &xshape, &theta, &y);
    }
}

/// The check is tight enough to matter: one wrong entry of a correct gradient fails it,
/// even a small entry, and even errors that the old rule (`2e-3 + 2 %` of the entry, f32
/// differences) let through.
#[test]
fn planted_gradient_bugs_are_caught() {
    let mut rng = Rng::new(16);
    let c = lora_case(&mut rng, true);
    let (_, fd, _) = c.reference();
    let fit = compare("lora arena", &c.g_theta, &fd).expect("the true gradient passes");
    let tol = RTOL * fit.scale + ATOL;
    let old_rule_accepts = |g: &[f32]| {
        g.iter()
            .zip(&fd)
            .all(|(&g, &r)| (g as f64 - r).abs() <= 2e-3 + 2e-2 * r.abs().max(g.abs() as f64))
    };
    assert!(old_rule_accepts(&c.g_theta));

    // In-block entries (A and B of particle 0) sorted by size.
    let block: Vec<usize> = (3..c.d - 2).collect();
    let mut by_size = block.clone();
    by_size.sort_by(|&a, &b| fd[a].abs().total_cmp(&fd[b].abs()));
    let largest = *by_size.last().unwrap();
    // The smallest entry that is clearly non-zero (ten tolerances).
    let small = *by_size
        .iter()
        .find(|&&i| fd[i].abs() > 10.0 * tol)
        .expect("a non-zero entry");
    println!(
        "max|g_fd| {:.3e}, tolerance {tol:.1e}, small entry [{small}] {:.3e}",
        fit.scale, fd[small]
    );

    let mut plants: Vec<(String, Vec<f32>)> = Vec::new();
    let mut plant = |what: String, f: &dyn Fn(&mut Vec<f32>)| {
        let mut g = c.g_theta.clone();
        f(&mut g);
        plants.push((what, g));
    };
    plant(format!("small entry [{small}] sign flipped"), &|g| {
        g[small] = -g[small]
    });
    plant(format!("small entry [{small}] dropped"), &|g| {
        g[small] = 0.0
    });
    plant(format!("small entry [{small}] off by 5 tolerances"), &|g| {
        g[small] += (5.0 * tol) as f32
    });
    plant(format!("largest entry [{largest}] scaled by 1.001"), &|g| {
        g[largest] *= 1.001
    });
    plant("gap slot [0] (must be zero) set".to_string(), &|g| {
        g[0] = (5.0 * tol) as f32
    });
    plant("B of the last particle scaled by 1.01".to_string(), &|g| {
        let b = (c.k - 1) * c.d + c.slots.b_offset;
        g[b..b + c.b_len].iter_mut().for_each(|v| *v *= 1.01);
    });

    let mut old_missed = 0;
    for (what, g) in &plants {
        let verdict = compare(what, g, &fd);
        assert!(verdict.is_err(), "planted bug not caught: {what}");
        if old_rule_accepts(g) {
            old_missed += 1;
        }
        println!("caught {what}; the old rule would have {}", {
            if old_rule_accepts(g) {
                "missed it"
            } else {
                "caught it too"
            }
        });
    }
    assert!(
        old_missed >= 3,
        "the planted bugs should include ones the old tolerance missed ({old_missed})"
    );
}
