//! The default task's data: the UCI handwritten digits (8×8 images, values 0..16), embedded.
//!
//! - Classes 0–7 are the task; classes 8 and 9 are held out as the OOD set.
//! - Each in-distribution class is split in half (fixed seed): the *source* half pre-trains
//!   the base as the images are; the *target* half is seen through a domain shift, the
//!   digits rotated by 90° (a scanner fed sideways), which the base has never seen.
//! - Target domain: `per_class` images per class adapt the particles (few-shot), the rest
//!   are the in-distribution test split.
//! - Shifted test split: the same test images with a further, unseen corruption: Gaussian
//!   pixel noise (σ = 0.2 on the [0, 1] scale, clamped) on every image, and 30% of the images
//!   moved by one pixel in a random direction (on an 8×8 image, a large move). It measures
//!   how calibration holds up under a shift no method trained on.
//! - OOD: classes 8 and 9, rotated like the target domain (so only their content is new).

pub use super::split::Split;
use crate::error::{BellaError, Result};
use crate::rng::Rng;
use std::io::Read;

const DIGITS_GZ: &[u8] = include_bytes!("data/digits.csv.gz");
/// The splits are fixed (the training seed changes initialisation and batch orders only).
const DATA_SEED: u64 = 0x0D16_1750;
/// Image side in pixels (8 × 8 digits).
pub const SIDE: usize = 8;
/// Inputs per image.
pub const FEATURES: usize = SIDE * SIDE;
/// Classes 0..CLASSES are in distribution; the rest are OOD.
pub const CLASSES: usize = 8;
/// The shifted split: pixel noise (on the [0, 1] scale) and the chance of a one-pixel move.
pub const SHIFT_NOISE_STD: f32 = 0.2;
/// (The chance of a one-pixel move.)
pub const SHIFT_MOVE_PROB: f32 = 0.3;

/// The embedded digits task: a source and a shifted target domain, in-distribution
/// classes 0–7, held-out classes 8 and 9 as OOD inputs.
pub struct DigitsTask {
    /// Pre-training data for the base (source domain).
    pub source: Split,
    /// Few-shot adaptation data (target domain).
    pub target_train: Split,
    /// Target-domain test split.
    pub in_dist: Split,
    /// Target-domain test split under a further, unseen shift.
    pub shifted: Split,
    /// Held-out classes 8 and 9 (target domain).
    pub ood: Split,
}

/// Every image of the embedded file, as ([0, 1] pixels, label).
pub fn load_digits() -> Result<Vec<(Vec<f32>, u32)>> {
    let mut text = String::new();
    flate2::read::GzDecoder::new(DIGITS_GZ)
        .read_to_string(&mut text)
        .map_err(|e| BellaError::io(format!("embedded digits.csv.gz: {e}")))?;
    let mut rows = Vec::new();
    for (n, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let vals: Vec<f32> = line
            .split(',')
            .map(|v| v.trim().parse::<f32>())
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| BellaError::io(format!("digits.csv line {}: {e}", n + 1)))?;
        if vals.len() != FEATURES + 1 {
            return Err(BellaError::io(format!(
                "digits.csv line {}: {} values",
                n + 1,
                vals.len()
            )));
        }
        let img = vals[..FEATURES].iter().map(|v| v / 16.0).collect();
        rows.push((img, vals[FEATURES] as u32));
    }
    Ok(rows)
}

/// The target domain's view of an image: rotated by 90° counter-clockwise.
pub fn to_target_domain(img: &[f32]) -> Vec<f32> {
    let mut out = vec![0.0; FEATURES];
    for r in 0..SIDE {
        for c in 0..SIDE {
            out[r * SIDE + c] = img[c * SIDE + (SIDE - 1 - r)];
        }
    }
    out
}

/// The unseen test-time shift: sometimes a one-pixel move in a random direction, then noise.
pub fn corrupt(img: &[f32], rng: &mut Rng) -> Vec<f32> {
    const MOVES: [(isize, isize); 8] = [
        (-1, -1),
        (-1, 0),
        (-1, 1),
        (0, -1),
        (0, 1),
        (1, -1),
        (1, 0),
        (1, 1),
    ];
    let (dr, dc) = if rng.uniform() < SHIFT_MOVE_PROB {
        MOVES[rng.below(MOVES.len())]
    } else {
        (0, 0)
    };
    let mut out = vec![0.0; FEATURES];
    for r in 0..SIDE as isize {
        for c in 0..SIDE as isize {
            let (sr, sc) = (r - dr, c - dc);
            let v = if (0..SIDE as isize).contains(&sr) && (0..SIDE as isize).contains(&sc) {
                img[(sr as usize) * SIDE + sc as usize]
            } else {
                0.0
            };
            out[(r as usize) * SIDE + c as usize] =
                (v + SHIFT_NOISE_STD * rng.normal()).clamp(0.0, 1.0);
        }
    }
    out
}

/// Build the task; `per_class` target images per class are used for adaptation.
pub fn digits_task(per_class: usize) -> Result<DigitsTask> {
    let rows = load_digits()?;
    let mut rng = Rng::new(DATA_SEED);
    let mut noise = Rng::new(DATA_SEED ^ 0xC0_22A7);
    let mut task = DigitsTask {
        source: Split::new(FEATURES),
        target_train: Split::new(FEATURES),
        in_dist: Split::new(FEATURES),
        shifted: Split::new(FEATURES),
        ood: Split::new(FEATURES),
    };
    for (img, label) in rows.iter().filter(|(_, l)| *l as usize >= CLASSES) {
        task.ood.push(&to_target_domain(img), *label);
    }
    for class in 0..CLASSES as u32 {
        let mut idx: Vec<usize> = (0..rows.len()).filter(|&i| rows[i].1 == class).collect();
        rng.shuffle(&mut idx);
        let half = idx.len() / 2;
        if half <= per_class {
            return Err(BellaError::invalid(format!(
                "class {class} has {} target images; cannot take {per_class} for training",
                idx.len() - half
            )));
        }
        for &i in &idx[..half] {
            task.source.push(&rows[i].0, class);
        }
        for (j, &i) in idx[half..].iter().enumerate() {
            let img = to_target_domain(&rows[i].0);
            if j < per_class {
                task.target_train.push(&img, class);
            } else {
                task.in_dist.push(&img, class);
                task.shifted.push(&corrupt(&img, &mut noise), class);
            }
        }
    }
    Ok(task)
}
