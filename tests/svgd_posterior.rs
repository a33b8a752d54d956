//! SVGD against a posterior known in closed form, through the very step `bella_svgd` takes
//! in training (`bella::train::trainer::svgd_update`: score = −N ∇(mean NLL) − θ/σ²,
//! `rbf_kernel` with the median heuristic, `svgd_direction`, AdamW with −φ/N as its
//! gradient), on the CPU backend.
//!
//! The problem: Bayesian linear regression, `y_n = x_nᵀθ + ε`, `ε ~ N(0, s²)`, prior
//! `θ ~ N(0, σ² I)`, D = 2 with correlated features (posterior correlation ≈ −0.7). The
//! posterior is Gaussian with precision `Λ = XᵀX/s² + I/σ²` and mean `μ = Λ⁻¹ Xᵀy / s²`.
//! The check whitens the particles by the posterior, `z = Rᵀ(θ − μ)` with `Λ = R Rᵀ`
//! (under the posterior z has mean 0 and covariance I), and asks for `‖mean z‖ < 0.1` and
//! every eigenvalue of `cov z` (the particles' variance along each posterior axis, relative
//! to the posterior's) in [0.75, 1.15].
//!
//! Measured (seeds 0–23, K = 64, 1500 steps): `‖mean z‖` ≤ 0.003 and both eigenvalues
//! 0.90–0.92. Finite-particle SVGD with the median-heuristic kernel sits slightly inside
//! the posterior, and less so as K grows (K = 16, 48, 96, 192 gave 0.65, 0.80, 0.86, 0.91 in
//! a D = 3 version of this problem), which is why the band is not centred on 1. A factor
//! two in the repulsive term either way (the variance scales with it: ×0.5 and ×2 here)
//! already leaves the band, and so does each sign flip below.
//!
//! Then the same procedure with each SVGD term's sign flipped (the driving term, the
//! repulsive term) and with the likelihood gradient's sign flipped must fail the check:
//! the check is not one that any particle cloud passes.

use bella::backend::cpu::CpuBackend;
use bella::ops;
use bella::rng::Rng;
use bella::train::trainer::{svgd_update, Direction, RunState, Svgd};
use bella::{Backend, Result, Tensor};

const D: usize = 2;
const K: usize = 64;
const N: usize = 12;
const NOISE_STD: f64 = 0.5;
const PRIOR_STD: f32 = 1.0;
/// Optimizer steps. AdamW's steps stay ~lr in size near a fixed point, so the rate decays
/// linearly for the particles to settle on SVGD's fixed point rather than jitter around it.
const STEPS: usize = 1500;

fn lr(step: usize) -> f32 {
    let t = step as f32 / STEPS as f32;
    0.05 * (1.0 - t) + 2e-4
}

const MEAN_TOL: f64 = 0.1;
const VAR_BAND: (f64, f64) = (0.75, 1.15);

struct Problem {
    x: Vec<[f64; D]>,
    y: Vec<f64>,
    mean: [f64; D],
    /// `R` with `Λ = R Rᵀ` (lower triangular), for whitening.
    chol: [[f64; D]; D],
}

fn cholesky(a: &[[f64; D]; D]) -> [[f64; D]; D] {
    let mut l = [[0.0; D]; D];
    for i in 0..D {
        for j in 0..=i {
            let s: f64 = a[i][j] - (0..j).map(|k| l[i][k] * l[j][k]).sum::<f64>();
            l[i][j] = if i == j { s.sqrt() } else { s / l[j][j] };
        }
    }
    l
}

/// Solve `L Lᵀ x = b`.
fn chol_solve(l: &[[f64; D]; D], b: &[f64; D]) -> [f64; D] {
    let mut z = [0.0; D];
    for i in 0..D {
        z[i] = (b[i] - (0..i).map(|k| l[i][k] * z[k]).sum::<f64>()) / l[i][i];
    }
    let mut x = [0.0; D];
    for i in (0..D).rev() {
        x[i] = (z[i] - (i + 1..D).map(|k| l[k][i] * x[k]).sum::<f64>()) / l[i][i];
    }
    x
}

fn problem() -> Problem {
    let mut rng = Rng::new(2024);
    let truth = [1.0, -0.5];
    let (mut x, mut y) = (Vec::new(), Vec::new());
    for _ in 0..N {
        let (a, b) = (rng.normal() as f64, rng.normal() as f64);
        // Correlated features: the posterior is not axis-aligned.
        let xn = [a, 0.7 * a + 0.7 * b];
        let mean: f64 = (0..D).map(|i| xn[i] * truth[i]).sum();
        y.push(mean + NOISE_STD * rng.normal() as f64);
        x.push(xn);
    }
    let s2 = NOISE_STD * NOISE_STD;
    let mut precision = [[0.0; D]; D];
    let mut xty = [0.0; D];
    for (xn, yn) in x.iter().zip(&y) {
        for i in 0..D {
            xty[i] += xn[i] * yn / s2;
            for j in 0..D {
                precision[i][j] += xn[i] * xn[j] / s2;
            }
        }
    }
    for (i, row) in precision.iter_mut().enumerate() {
        row[i] += 1.0 / (PRIOR_STD as f64 * PRIOR_STD as f64);
    }
    let chol = cholesky(&precision);
    Problem {
        mean: chol_solve(&chol, &xty),
        x,
        y,
        chol,
    }
}

/// `∇L̄` per particle, `L̄(θ) = (1/N) Σ (y_n − x_nᵀθ)² / (2 s²)`: the mean negative
/// log-likelihood, as the tape's backward gives it to `svgd_update` in training.
fn mean_nll_grad(p: &Problem, theta: &[f32]) -> Vec<f32> {
    let mut g = vec![0.0f32; theta.len()];
    for (th, gk) in theta.chunks(D).zip(g.chunks_mut(D)) {
        for (xn, yn) in p.x.iter().zip(&p.y) {
            let r = yn - (0..D).map(|i| xn[i] * th[i] as f64).sum::<f64>();
            for i in 0..D {
                gk[i] -= (xn[i] * r / (NOISE_STD * NOISE_STD) / N as f64) as f32;
            }
        }
    }
    g
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Variant {
    Correct,
    /// `φ` with the driving term `k_ji · score_j` negated.
    DriveFlipped,
    /// `φ` with the repulsive term `(2/h) k_ji (θ_i − θ_j)` negated.
    RepulsionFlipped,
    /// The repulsive term at half or twice its size (as a 1/h or 4/h slip would give).
    RepulsionScaled(f32),
    /// The likelihood gradient negated before the score is formed.
    ScoreFlipped,
}

/// `a·x + b·y`.
fn lin(be: &dyn Backend, a: f32, x: &Tensor, b: f32, y: &Tensor) -> Result<Tensor> {
    ops::axpby(be, a, x, b, y)
}

/// `φ = drive + repel` is linear in the score with the repulsive term independent of it, so
/// with `φ₊ = svgd_direction(θ, s)` and `φ₋ = svgd_direction(θ, −s)`:
/// `drive = (φ₊ − φ₋)/2` and `repel = (φ₊ + φ₋)/2`. The broken directions are made from the
/// real op this way; the result is `c_drive · drive + c_repel · repel`.
fn recombined(
    be: &dyn Backend,
    theta: &Tensor,
    score: &Tensor,
    kernel: &Tensor,
    h: f32,
    c_drive: f32,
    c_repel: f32,
) -> Result<Tensor> {
    let plus = ops::svgd_direction(be, theta, score, kernel, h)?;
    let minus_score = lin(be, -1.0, score, 0.0, score)?;
    let minus = ops::svgd_direction(be, theta, &minus_score, kernel, h)?;
    let (a, b) = ((c_drive + c_repel) / 2.0, (c_repel - c_drive) / 2.0);
    lin(be, a, &plus, b, &minus)
}

/// Particles after `STEPS` SVGD steps from a seeded start (drawn from the prior, shifted so
/// that they must travel to the posterior).
fn run_svgd(p: &Problem, seed: u64, variant: Variant) -> Vec<f32> {
    let be = CpuBackend::new();
    let mut state = RunState::fresh(&be, K, D, &start(seed)).unwrap();
    let svgd = Svgd {
        n: N,
        prior_std: PRIOR_STD,
        bandwidth: None,
    };
    let (c_drive, c_repel) = match variant {
        Variant::DriveFlipped => (-1.0, 1.0),
        Variant::RepulsionFlipped => (1.0, -1.0),
        Variant::RepulsionScaled(c) => (1.0, c),
        Variant::Correct | Variant::ScoreFlipped => (1.0, 1.0),
    };
    let broken = move |be: &dyn Backend, th: &Tensor, s: &Tensor, k: &Tensor, h: f32| {
        recombined(be, th, s, k, h, c_drive, c_repel)
    };
    // The correct variant uses exactly what the trainer passes (the op, `None`).
    let direction: Option<&Direction> = if (c_drive, c_repel) == (1.0, 1.0) {
        None
    } else {
        Some(&broken)
    };
    for step in 0..STEPS {
        let theta = be.download(&state.arena).unwrap();
        let mut g = mean_nll_grad(p, &theta);
        if variant == Variant::ScoreFlipped {
            g.iter_mut().for_each(|v| *v = -*v);
        }
        let grad = be.upload(&[K, D], &g).unwrap();
        // A broken variant may blow up (non-finite values are refused): the check fails it.
        if svgd_update(&be, &mut state, &grad, &svgd, lr(step), direction).is_err() {
            return vec![f32::NAN; K * D];
        }
    }
    be.download(&state.arena).unwrap()
}

fn start(seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..K * D)
        .map(|i| rng.normal() + if i % D == 0 { -1.0 } else { 1.0 })
        .collect()
}

/// `‖mean z‖` and the eigenvalues of `cov z` (population covariance of the particles as an
/// empirical measure), z the particles whitened by the posterior.
fn whitened(p: &Problem, theta: &[f32]) -> (f64, [f64; 2]) {
    let z: Vec<[f64; D]> = theta
        .chunks(D)
        .map(|th| {
            let mut z = [0.0; D];
            for (j, zj) in z.iter_mut().enumerate() {
                // (Rᵀ (θ − μ))_j = Σ_i R_ij (θ_i − μ_i)
                *zj = (j..D)
                    .map(|i| p.chol[i][j] * (th[i] as f64 - p.mean[i]))
                    .sum();
            }
            z
        })
        .collect();
    let k = z.len() as f64;
    let mut mean = [0.0; D];
    for zk in &z {
        for i in 0..D {
            mean[i] += zk[i] / k;
        }
    }
    let mut c = [[0.0; D]; D];
    for (i, row) in c.iter_mut().enumerate() {
        for (j, cij) in row.iter_mut().enumerate() {
            *cij = z
                .iter()
                .map(|zk| (zk[i] - mean[i]) * (zk[j] - mean[j]))
                .sum::<f64>()
                / k;
        }
    }
    // Eigenvalues of the symmetric 2×2.
    let (half_tr, det) = (
        (c[0][0] + c[1][1]) / 2.0,
        c[0][0] * c[1][1] - c[0][1] * c[1][0],
    );
    let disc = (half_tr * half_tr - det).max(0.0).sqrt();
    let norm = mean.iter().map(|m| m * m).sum::<f64>().sqrt();
    (norm, [half_tr - disc, half_tr + disc])
}

/// `Ok` with a description when the particles match the posterior, `Err` saying how not.
/// Written so that NaN fails.
fn check(p: &Problem, theta: &[f32]) -> std::result::Result<String, String> {
    let (m, [lo, hi]) = whitened(p, theta);
    let what = format!("whitened mean norm {m:.4}, whitened variances {lo:.3} and {hi:.3}");
    let mean_ok = m < MEAN_TOL;
    let var_ok = lo >= VAR_BAND.0 && hi <= VAR_BAND.1;
    if mean_ok && var_ok {
        Ok(what)
    } else {
        Err(what)
    }
}

#[test]
fn svgd_matches_the_closed_form_posterior() {
    let p = problem();
    // The start is far from the posterior: passing means the particles moved there.
    let e = check(&p, &start(0)).unwrap_err();
    println!("start: {e}");
    for seed in 0..4 {
        let theta = run_svgd(&p, seed, Variant::Correct);
        match check(&p, &theta) {
            Ok(what) => println!("seed {seed}: {what}"),
            Err(what) => panic!(
                "seed {seed}: SVGD particles do not match the closed-form posterior: {what} \
                 (want mean < {MEAN_TOL}, variances in {VAR_BAND:?})"
            ),
        }
    }
}

#[test]
fn broken_svgd_terms_fail_the_check() {
    let p = problem();
    for variant in [
        Variant::DriveFlipped,
        Variant::RepulsionFlipped,
        Variant::ScoreFlipped,
        Variant::RepulsionScaled(0.5),
        Variant::RepulsionScaled(2.0),
    ] {
        for seed in 0..2 {
            let theta = run_svgd(&p, seed, variant);
            let (m, [lo, hi]) = whitened(&p, &theta);
            let what = check(&p, &theta).expect_err(&format!(
                "{variant:?} seed {seed}: a broken SVGD step passed the posterior check"
            ));
            println!("{variant:?} seed {seed}: {what}");
            // And it fails the way the broken term predicts.
            match variant {
                // Particles run away from the posterior (or overflow to non-finite).
                Variant::DriveFlipped | Variant::ScoreFlipped => {
                    assert!(m.is_nan() || m >= 10.0, "{variant:?}: {what}")
                }
                // Attraction only: the particles collapse onto the mode.
                Variant::RepulsionFlipped => assert!(hi < 0.25, "{variant:?}: {what}"),
                Variant::RepulsionScaled(c) if c < 1.0 => {
                    assert!(hi < VAR_BAND.0, "{variant:?}: {what}")
                }
                Variant::RepulsionScaled(_) => assert!(lo > VAR_BAND.1, "{variant:?}: {what}"),
                Variant::Correct => unreachable!(),
            }
        }
    }
}
