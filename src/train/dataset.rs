//! A user's dataset, read from one safetensors or `.npz` file (see [`crate::io::read_named`]).
//!
//! Tensor names: `train.x [N, I]` (a float dtype) and `train.y [N]` (an integer dtype,
//! labels ≥ 0) are required; `test.x`/`test.y` and `shifted.x`/`shifted.y` are optional
//! labeled splits, `ood.x` an optional unlabeled one. Every split has the same feature
//! width I. Anything else is refused with a one-line error naming the tensor: an unknown
//! name (with the accepted ones, and the likely intended one for a typo such as `train.X`),
//! half a pair, a wrong rank, an empty split, a wrong dtype, a negative label, a NaN or Inf
//! input (with its row and column), differing widths. [`Dataset::check_model`] then checks
//! the data against a model's inputs and outputs.

use super::split::Split;
use crate::error::{BellaError, Result};
use crate::ops::named::{HostData, HostTensor, Named};
use std::path::Path;

/// The tensor names a dataset file may hold, in split order.
pub const NAMES: [&str; 7] = [
    "train.x",
    "train.y",
    "test.x",
    "test.y",
    "shifted.x",
    "shifted.y",
    "ood.x",
];

/// The splits of a user's dataset.
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    /// Training rows and labels (`train.x`, `train.y`).
    pub train: Split,
    /// Held-out rows and labels from the training distribution (`test.x`, `test.y`).
    pub test: Option<Split>,
    /// Labeled rows from a shifted distribution (`shifted.x`, `shifted.y`).
    pub shifted: Option<Split>,
    /// Unlabeled out-of-distribution rows (`ood.x`); its `y` is empty.
    pub ood: Option<Split>,
}

impl Dataset {
    /// Read a dataset file (safetensors or `.npz`) and validate it; every error starts with
    /// the path.
    pub fn load(path: &Path) -> Result<Dataset> {
        let named = crate::io::read_named(path)?;
        Self::build(&named, &path.display().to_string())
    }

    /// Validate named tensors as a dataset; errors start with `dataset:`.
    pub fn from_named(named: &Named) -> Result<Dataset> {
        Self::build(named, "dataset")
    }

    fn build(named: &Named, origin: &str) -> Result<Dataset> {
        let unknown: Vec<&str> = named
            .keys()
            .map(|k| k.as_str())
            .filter(|k| !NAMES.contains(k))
            .collect();
        if let Some(&first) = unknown.first() {
            return Err(unknown_error(origin, first, unknown.len()));
        }
        let labeled = |split: &str, required: bool| -> Result<Option<Split>> {
            let (xn, yn) = (format!("{split}.x"), format!("{split}.y"));
            match (named.get(&xn), named.get(&yn)) {
                (Some(x), Some(y)) => {
                    let mut s = x_split(origin, &xn, x)?;
                    s.y = labels(origin, &yn, y, s.len(), &xn)?;
                    Ok(Some(s))
                }
                (None, None) if !required => Ok(None),
                (None, _) if required => Err(BellaError::Missing {
                    op: origin.to_string(),
                    tensor: xn,
                }),
                (None, _) => Err(BellaError::invalid(format!(
                    "{origin}: `{yn}` has no inputs: add `{xn} [N, I]` (floats), or drop `{yn}`"
                ))),
                (Some(_), None) if required => Err(BellaError::Missing {
                    op: origin.to_string(),
                    tensor: yn,
                }),
                (Some(_), None) => Err(BellaError::invalid(format!(
                    "{origin}: `{xn}` has no labels: add `{yn} [N]` (integers), or drop `{xn}` \
                     (only `ood.x` is unlabeled)"
                ))),
            }
        };
        // `train.x` is reported before anything about the optional splits.
        let train = labeled("train", true)?.expect("required");
        let test = labeled("test", false)?;
        let shifted = labeled("shifted", false)?;
        let ood = named
            .get("ood.x")
            .map(|x| x_split(origin, "ood.x", x))
            .transpose()?;
        let ds = Dataset {
            train,
            test,
            shifted,
            ood,
        };
        for (name, s) in ds.splits().skip(1) {
            if s.features != ds.train.features {
                return Err(BellaError::invalid(format!(
                    "{origin}: `{name}.x` has {} features per row, `train.x` has {}; every \
                     split needs the same width",
                    s.features, ds.train.features
                )));
            }
        }
        Ok(ds)
    }

    /// Inputs per row (the same in every split).
    pub fn features(&self) -> usize {
        self.train.features
    }

    /// Check the data against a model with `in_features` inputs and `classes` outputs: the
    /// widths must agree and every label must be below `classes`. A split that lacks some
    /// classes is fine.
    pub fn check_model(&self, in_features: usize, classes: usize) -> Result<()> {
        if self.features() != in_features {
            return Err(BellaError::invalid(format!(
                "the data has {} features per row, the model takes {in_features} inputs",
                self.features()
            )));
        }
        for (name, s) in self.splits() {
            if let Some((row, &l)) =
                s.y.iter()
                    .enumerate()
                    .find(|&(_, &l)| l as usize >= classes)
            {
                let range = match classes {
                    0 => "none".to_string(),
                    1 => "label 0".to_string(),
                    c => format!("labels 0..{}", c - 1),
                };
                return Err(BellaError::invalid(format!(
                    "`{name}.y` holds label {l} at row {row}; the model has {classes} output{} \
                     ({range})",
                    if classes == 1 { "" } else { "s" }
                )));
            }
        }
        Ok(())
    }

    /// A 64-bit FNV-1a hash (hex) of the splits' names, shapes, inputs and labels (as
    /// loaded: f32 inputs, integer labels), so a run can record which data it saw.
    pub fn fingerprint(&self) -> String {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut eat = |bytes: &[u8]| {
            for &b in bytes {
                h ^= b as u64;
                h = h.wrapping_mul(0x0000_0100_0000_01b3);
            }
        };
        for (name, s) in self.splits() {
            eat(name.as_bytes());
            eat(&[0]);
            eat(&(s.len() as u64).to_le_bytes());
            eat(&(s.features as u64).to_le_bytes());
            for v in &s.x {
                eat(&v.to_bits().to_le_bytes());
            }
            eat(&(s.y.len() as u64).to_le_bytes());
            for l in &s.y {
                eat(&l.to_le_bytes());
            }
        }
        format!("{h:016x}")
    }

    /// The splits present, in the order train, test, shifted, ood, with their names.
    pub fn splits(&self) -> impl Iterator<Item = (&'static str, &Split)> {
        [
            ("train", Some(&self.train)),
            ("test", self.test.as_ref()),
            ("shifted", self.shifted.as_ref()),
            ("ood", self.ood.as_ref()),
        ]
        .into_iter()
        .filter_map(|(n, s)| s.map(|s| (n, s)))
    }
}

/// Read a file of inputs to predict on: exactly one float tensor `name [N, I]` (validated as
/// a dataset's `x`), returned as an unlabeled split. Any other tensor in the file is an error
/// naming it.
pub fn load_inputs(path: &Path, name: &str) -> Result<Split> {
    let named = crate::io::read_named(path)?;
    let origin = path.display().to_string();
    let others: Vec<String> = named
        .keys()
        .filter(|k| k.as_str() != name)
        .map(|k| format!("`{k}`"))
        .collect();
    if !others.is_empty() {
        return Err(BellaError::invalid(format!(
            "{origin}: unexpected tensor{} {}: an inputs file holds one tensor, `{name} [N, I]`",
            if others.len() > 1 { "s" } else { "" },
            others.join(", ")
        )));
    }
    let x = named.get(name).ok_or_else(|| BellaError::Missing {
        op: origin.clone(),
        tensor: name.to_string(),
    })?;
    x_split(&origin, name, x)
}

/// Validate inputs `[N, I]`: a float dtype, 2-D, non-empty, finite.
fn x_split(origin: &str, name: &str, t: &HostTensor) -> Result<Split> {
    let v = &match &t.data {
        HostData::Float(_) | HostData::Half(..) => t.to_f32(),
        HostData::Int(_) => {
            return Err(BellaError::invalid(format!(
                "{origin}: `{name}` has an integer dtype; inputs must be floats (f32, f16, bf16 \
                 or f64), e.g. x.astype(np.float32)"
            )))
        }
    };
    let &[n, features] = &t.shape[..] else {
        return Err(BellaError::shape(
            origin,
            name,
            "[N, I] (rows × features, 2-D)",
            &t.shape,
        ));
    };
    if n == 0 || features == 0 {
        return Err(BellaError::invalid(format!(
            "{origin}: `{name}` has shape {:?}: {}",
            t.shape,
            if n == 0 {
                "no rows"
            } else {
                "no features per row"
            }
        )));
    }
    if let Some(i) = v.iter().position(|x| !x.is_finite()) {
        return Err(BellaError::NonFinite(format!(
            "{origin}: `{name}` has {} at row {}, column {}",
            v[i],
            i / features,
            i % features
        )));
    }
    Ok(Split {
        features,
        x: v.clone(),
        y: Vec::new(),
    })
}

/// Validate labels `[rows]`: an integer dtype, 1-D, one per row of `x_name`, each in
/// `0..=u32::MAX`.
fn labels(origin: &str, name: &str, t: &HostTensor, rows: usize, x_name: &str) -> Result<Vec<u32>> {
    let HostData::Int(v) = &t.data else {
        return Err(BellaError::invalid(format!(
            "{origin}: `{name}` has a float dtype; labels must be integers (any integer dtype), \
             e.g. y.astype(np.int64)"
        )));
    };
    if t.shape.len() != 1 {
        return Err(BellaError::shape(
            origin,
            name,
            format!("[N] = [{rows}] (one label per row of `{x_name}`, 1-D)"),
            &t.shape,
        ));
    }
    if v.len() != rows {
        return Err(BellaError::invalid(format!(
            "{origin}: `{name}` has {} labels, `{x_name}` has {rows} rows",
            v.len()
        )));
    }
    v.iter()
        .enumerate()
        .map(|(row, &l)| {
            u32::try_from(l).map_err(|_| {
                BellaError::invalid(if l < 0 {
                    format!("{origin}: `{name}` holds label {l} at row {row}; labels must be ≥ 0")
                } else {
                    format!(
                        "{origin}: `{name}` holds label {l} at row {row}, above the largest \
                         supported ({})",
                        u32::MAX
                    )
                })
            })
        })
        .collect()
}

/// An unknown tensor name: the accepted names, and the one meant if it looks like a typo.
fn unknown_error(origin: &str, name: &str, count: usize) -> BellaError {
    let more = match count {
        1 => String::new(),
        n => format!(" (and {} more)", n - 1),
    };
    let hint = if name == "ood.y" || normalize(name) == "ood.y" {
        " (the OOD split is unlabeled: give only `ood.x`)".to_string()
    } else {
        suggestion(name)
            .map(|s| format!(" (did you mean `{s}`?)"))
            .unwrap_or_default()
    };
    BellaError::invalid(format!(
        "{origin}: unknown tensor `{name}`{hint}{more}; a dataset holds {}",
        NAMES
            .iter()
            .map(|n| format!("`{n}`"))
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

/// Lower case, with `_ - / : ` and space read as `.`.
fn normalize(name: &str) -> String {
    name.trim()
        .chars()
        .map(|c| match c {
            '_' | '-' | '/' | ':' | ' ' => '.',
            c => c.to_ascii_lowercase(),
        })
        .collect()
}

/// The accepted name `name` most likely means: equal up to case and separators, or within
/// two edits of it.
fn suggestion(name: &str) -> Option<&'static str> {
    let n = normalize(name);
    if let Some(&exact) = NAMES.iter().find(|&&a| a == n) {
        return Some(exact);
    }
    NAMES
        .iter()
        .map(|&a| (edit_distance(&n, a), a))
        .filter(|&(d, _)| d <= 2)
        .min_by_key(|&(d, _)| d)
        .map(|(_, a)| a)
}

/// Levenshtein distance over chars.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, &cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + (ca != cb) as usize)
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions() {
        assert_eq!(suggestion("train.X"), Some("train.x"));
        assert_eq!(suggestion("test_x"), Some("test.x"));
        assert_eq!(suggestion("Train/Y"), Some("train.y"));
        assert_eq!(suggestion("shift.x"), Some("shifted.x"));
        assert_eq!(suggestion("tran.y"), Some("train.y"));
        assert_eq!(suggestion("weights"), None);
    }
}
