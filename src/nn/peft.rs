//! HuggingFace PEFT LoRA adapters: each particle written as PEFT's `save_pretrained` writes a
//! LoRA adapter (`adapter_config.json` + `adapter_model.safetensors`), and read back.
//!
//! The format, for a torch module whose linear layers carry the base file's names (a layer
//! `net.0` is the module `net.0`):
//! - `adapter_model.safetensors`: `base_model.model.<layer>.lora_A.weight [r, I]` and
//!   `base_model.model.<layer>.lora_B.weight [O, r]` for every adapted layer, header metadata
//!   `{"format": "pt"}`;
//! - `adapter_config.json`: `peft_type: "LORA"`, `r`, `lora_alpha`, `target_modules` (the
//!   adapted layers' names), `bias: "none"`, `lora_dropout: 0`, `fan_in_fan_out: false`,
//!   `use_rslora: false`, `use_dora: false`, and PEFT's other fields at their defaults.
//!
//! PEFT's forward is `y = x W0ᵀ + b + (lora_alpha / r) · x Aᵀ Bᵀ`, which is Bella's with
//! `alpha = lora_alpha`. Reading accepts exactly what has that meaning: other PEFT options
//! (rsLoRA, DoRA, per-layer rank or alpha patterns, trained biases, `fan_in_fan_out`, saved
//! extra modules) are refused with an error that names the option.

use super::lora::LoraParticles;
use super::model::MlpSpec;
use crate::error::{BellaError, Result};
use crate::io::safetensors as st;
use crate::ops::named::HostTensor;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// The config file of a PEFT adapter directory.
pub const CONFIG_FILE: &str = "adapter_config.json";
/// The weights file of a PEFT adapter directory.
pub const WEIGHTS_FILE: &str = "adapter_model.safetensors";
const KEY_PREFIX: &str = "base_model.model.";

/// One PEFT LoRA adapter as read from its directory.
#[derive(Clone, Debug, PartialEq)]
pub struct PeftAdapter {
    /// Where it was read from.
    pub dir: PathBuf,
    /// The rank `r`.
    pub r: usize,
    /// `lora_alpha` (the scale is `lora_alpha / r`).
    pub lora_alpha: f32,
    /// Per adapted layer (by name): `A [r, I]` and `B [O, r]`, row-major.
    pub layers: BTreeMap<String, (Vec<f32>, Vec<f32>)>,
}

impl PeftAdapter {
    /// The adapted layers' names, in the model's layer order.
    pub fn targets(&self, spec: &MlpSpec) -> Vec<String> {
        spec.layers
            .iter()
            .filter(|l| self.layers.contains_key(&l.name))
            .map(|l| l.name.clone())
            .collect()
    }
}

/// `lora_alpha` as PEFT writes it: an integer when it is one.
fn alpha_json(alpha: f32) -> Value {
    if alpha.fract() == 0.0 && alpha.abs() < 1e9 {
        json!(alpha as i64)
    } else {
        json!(alpha)
    }
}

/// Write particle `k` of `model` (its adapters in the host `arena`, `K·D` values) into
/// `dir` as a PEFT LoRA adapter. `dir` is created; both files are written atomically.
pub fn write_adapter(dir: &Path, model: &LoraParticles, arena: &[f32], k: usize) -> Result<()> {
    std::fs::create_dir_all(dir)
        .map_err(|e| BellaError::io(format!("cannot create {}: {e}", dir.display())))?;
    let mut tensors = Vec::new();
    for ad in model.particle_adapters(arena, k) {
        let (r, i, o) = (model.rank, ad.layer.in_features, ad.layer.out_features);
        let name = &ad.layer.name;
        tensors.push((
            format!("{KEY_PREFIX}{name}.lora_A.weight"),
            HostTensor::float(&[r, i], ad.a.to_vec()),
        ));
        tensors.push((
            format!("{KEY_PREFIX}{name}.lora_B.weight"),
            HostTensor::float(&[o, r], ad.b.to_vec()),
        ));
    }
    let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    st::write_with_metadata(&dir.join(WEIGHTS_FILE), &tensors, Some(meta))?;
    let config = json!({
        "alpha_pattern": {},
        "auto_mapping": null,
        "base_model_name_or_path": null,
        "bias": "none",
        "fan_in_fan_out": false,
        "inference_mode": true,
        "init_lora_weights": true,
        "layers_pattern": null,
        "layers_to_transform": null,
        "lora_alpha": alpha_json(model.alpha),
        "lora_dropout": 0.0,
        "modules_to_save": null,
        "peft_type": "LORA",
        "r": model.rank,
        "rank_pattern": {},
        "revision": null,
        "target_modules": model.targets(),
        "task_type": null,
        "use_dora": false,
        "use_rslora": false,
    });
    let text = serde_json::to_string_pretty(&config).map_err(|e| BellaError::io(e.to_string()))?;
    let path = dir.join(CONFIG_FILE);
    let tmp = st::temp_path(&path);
    std::fs::write(&tmp, text + "\n")
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|e| BellaError::io(format!("cannot write {}: {e}", path.display())))
}

/// Read the PEFT LoRA adapter in `dir` and check that it fits `spec`: every adapted module
/// is a layer of the model, with `A [r, I]` and `B [O, r]` of that layer's sizes.
pub fn read_adapter(dir: &Path, spec: &MlpSpec) -> Result<PeftAdapter> {
    let bad = |m: String| BellaError::invalid(format!("PEFT adapter {}: {m}", dir.display()));
    let cfg_path = dir.join(CONFIG_FILE);
    let text = std::fs::read_to_string(&cfg_path)
        .map_err(|e| bad(format!("cannot read {CONFIG_FILE}: {e}")))?;
    let cfg: Value = serde_json::from_str(&text)
        .map_err(|e| bad(format!("{CONFIG_FILE} is not valid JSON: {e}")))?;
    let field = |k: &str| cfg.get(k).filter(|v| !v.is_null());
    match field("peft_type").and_then(Value::as_str) {
        Some("LORA") => {}
        other => {
            return Err(bad(format!(
                "peft_type is {}, only LORA adapters are read",
                other.map_or("missing".to_string(), |s| format!("`{s}`"))
            )))
        }
    }
    let r = field("r")
        .and_then(Value::as_u64)
        .filter(|&r| r > 0)
        .ok_or_else(|| bad("`r` must be a positive integer".into()))? as usize;
    let lora_alpha = field("lora_alpha")
        .and_then(Value::as_f64)
        .filter(|a| a.is_finite() && *a > 0.0)
        .ok_or_else(|| bad("`lora_alpha` must be a positive number".into()))?
        as f32;
    // Options that change what the adapter computes: refused rather than misread.
    for (key, neutral) in [
        ("use_rslora", json!(false)),
        ("use_dora", json!(false)),
        ("fan_in_fan_out", json!(false)),
        ("bias", json!("none")),
        ("lora_bias", json!(false)),
    ] {
        if let Some(v) = field(key) {
            if *v != neutral {
                return Err(bad(format!(
                    "`{key}: {v}` is not supported (Bella adapters are plain LoRA: {key} {neutral})"
                )));
            }
        }
    }
    for key in ["rank_pattern", "alpha_pattern"] {
        if field(key)
            .and_then(Value::as_object)
            .is_some_and(|m| !m.is_empty())
        {
            return Err(bad(format!(
                "`{key}` gives layers their own rank or alpha; Bella uses one for all layers"
            )));
        }
    }
    if field("modules_to_save").is_some_and(|v| v.as_array().is_none_or(|a| !a.is_empty())) {
        return Err(bad(
            "`modules_to_save` holds trained copies of whole modules; only LoRA factors are read"
                .into(),
        ));
    }

    let w_path = dir.join(WEIGHTS_FILE);
    if !w_path.exists() {
        let hint = if dir.join("adapter_model.bin").exists() {
            " (only adapter_model.bin is there: save with safe_serialization=True)"
        } else {
            ""
        };
        return Err(bad(format!("{WEIGHTS_FILE} does not exist{hint}")));
    }
    let named = st::read(&w_path).map_err(|e| bad(e.to_string()))?;
    // Per layer: (A, B) as found so far.
    type Found = (Option<Vec<f32>>, Option<Vec<f32>>);
    let mut found: BTreeMap<String, Found> = BTreeMap::new();
    for (key, t) in &named {
        let Some(rest) = key.strip_prefix(KEY_PREFIX) else {
            return Err(bad(format!(
                "tensor `{key}` is not `{KEY_PREFIX}<layer>.lora_A.weight` or `.lora_B.weight`"
            )));
        };
        let (layer, is_a) = if let Some(l) = rest.strip_suffix(".lora_A.weight") {
            (l, true)
        } else if let Some(l) = rest.strip_suffix(".lora_B.weight") {
            (l, false)
        } else {
            return Err(bad(format!(
                "tensor `{key}` is not a LoRA factor (`.lora_A.weight` or `.lora_B.weight`)"
            )));
        };
        let Some(lin) = spec.layers.iter().find(|l| l.name == layer) else {
            let names: Vec<&str> = spec.layers.iter().map(|l| l.name.as_str()).collect();
            return Err(bad(format!(
                "`{key}` adapts `{layer}`, which is not a layer of the model (its layers: {})",
                names.join(", ")
            )));
        };
        let want = if is_a {
            [r, lin.in_features]
        } else {
            [lin.out_features, r]
        };
        if t.shape != want {
            return Err(bad(format!(
                "`{key}` has shape {:?}; layer `{layer}` ({} → {}) with r = {r} needs {want:?}",
                t.shape, lin.in_features, lin.out_features
            )));
        }
        let values = t.to_f32();
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(bad(format!(
                "`{key}` holds a non-finite value at element {i}"
            )));
        }
        let slot = found.entry(layer.to_string()).or_default();
        if is_a {
            slot.0 = Some(values);
        } else {
            slot.1 = Some(values);
        }
    }
    let mut layers = BTreeMap::new();
    for (layer, (a, b)) in found {
        match (a, b) {
            (Some(a), Some(b)) => {
                layers.insert(layer, (a, b));
            }
            (a, _) => {
                let missing = if a.is_none() { "lora_A" } else { "lora_B" };
                return Err(bad(format!("layer `{layer}` has no {missing} weight")));
            }
        }
    }
    if layers.is_empty() {
        return Err(bad(format!("{WEIGHTS_FILE} holds no LoRA factors")));
    }
    // The config's target modules must be what the weights adapt (PEFT matches a target
    // `t` to a module whose name is `t` or ends in `.t`).
    if let Some(targets) = field("target_modules") {
        let list: Vec<&str> = match targets {
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            Value::String(s) => vec![s.as_str()],
            _ => vec![],
        };
        for layer in layers.keys() {
            let hit = list
                .iter()
                .any(|t| layer == t || layer.ends_with(&format!(".{t}")));
            if !hit {
                return Err(bad(format!(
                    "{WEIGHTS_FILE} adapts `{layer}`, which target_modules {targets} does not name"
                )));
            }
        }
    }
    Ok(PeftAdapter {
        dir: dir.to_path_buf(),
        r,
        lora_alpha,
        layers,
    })
}

/// The starting arena (host, `K·D` values) of `model` from `adapters` (one per particle):
/// each must adapt exactly `model`'s target layers at its rank and alpha.
pub fn arena_from_adapters(model: &LoraParticles, adapters: &[PeftAdapter]) -> Result<Vec<f32>> {
    use super::Particles;
    if adapters.len() != model.k() {
        return Err(BellaError::invalid(format!(
            "{} PEFT adapters for {} particles",
            adapters.len(),
            model.k()
        )));
    }
    let spec = &model.base.spec;
    let targets = model.targets();
    let mut arena = vec![0.0; model.k() * model.d()];
    for (k, ad) in adapters.iter().enumerate() {
        let bad =
            |m: String| BellaError::invalid(format!("PEFT adapter {}: {m}", ad.dir.display()));
        if ad.r != model.rank || ad.lora_alpha != model.alpha {
            return Err(bad(format!(
                "r = {}, lora_alpha = {}; the run uses rank {} and alpha {}",
                ad.r, ad.lora_alpha, model.rank, model.alpha
            )));
        }
        let theirs = ad.targets(spec);
        if theirs != targets {
            return Err(bad(format!(
                "adapts layers [{}]; the run adapts [{}]",
                theirs.join(", "),
                targets.join(", ")
            )));
        }
        let d = model.d();
        let row = &mut arena[k * d..(k + 1) * d];
        for (name, slots) in spec.layers.iter().map(|l| &l.name).zip(&model.slots) {
            let (Some(s), Some((a, b))) = (slots, ad.layers.get(name)) else {
                continue;
            };
            row[s.a_offset..s.a_offset + a.len()].copy_from_slice(a);
            row[s.b_offset..s.b_offset + b.len()].copy_from_slice(b);
        }
    }
    Ok(arena)
}

/// The settings a set of PEFT adapters implies for a run: one rank, one alpha and one set of
/// target layers for all of them (an error names the first adapter that differs).
pub fn common_settings(
    adapters: &[PeftAdapter],
    spec: &MlpSpec,
) -> Result<(usize, f32, Vec<String>)> {
    let Some(first) = adapters.first() else {
        return Err(BellaError::invalid(
            "--init-from-peft names no adapter directory",
        ));
    };
    let targets = first.targets(spec);
    for ad in &adapters[1..] {
        if ad.r != first.r || ad.lora_alpha != first.lora_alpha || ad.targets(spec) != targets {
            return Err(BellaError::invalid(format!(
                "PEFT adapters differ: {} has r = {}, lora_alpha = {}, layers [{}]; {} has r = {}, lora_alpha = {}, layers [{}]",
                first.dir.display(),
                first.r,
                first.lora_alpha,
                targets.join(", "),
                ad.dir.display(),
                ad.r,
                ad.lora_alpha,
                ad.targets(spec).join(", ")
            )));
        }
    }
    Ok((first.r, first.lora_alpha, targets))
}
