//! `shaders/abi.json` against the shaders: (a) with naga reflection, every `@compute` entry of
//! `shaders/*.wgsl` is listed with its workgroup size, the globals it uses (binding, access,
//! element type) and its parameter struct's layout, and planted changes to a shader text are
//! caught; (b) every entry's example dispatch, built from the JSON alone on raw wgpu, writes
//! finite values everywhere it is said to, gives the same bits with its workgroups folded 3
//! wide, and matches a reference computed here. (b) skips
//! with a notice without an adapter, unless `BELLA_REQUIRE` names `wgpu`; the entries of a
//! module beginning with `enable f16;` are skipped, with a notice, on a device without
//! `SHADER_F16`.
#![cfg(feature = "wgpu")]

#[path = "shader_abi/launch.rs"]
mod launch;
#[path = "shader_abi/references.rs"]
mod references;
#[path = "shader_abi/reflect.rs"]
mod reflect;

use bella::backend::wgpu::abi::{abi, Entry, Fill};
use bella::testing::required;
use std::collections::BTreeMap;
use std::path::Path;

fn shader_sources() -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders");
    let mut files: Vec<(String, String)> = std::fs::read_dir(&dir)
        .expect("shaders/ exists")
        .map(|e| e.expect("readable entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "wgsl"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read_to_string(&p).expect("readable .wgsl"))
        })
        .collect();
    files.sort();
    files
}

fn source_of(file: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("shaders")
        .join(file);
    std::fs::read_to_string(path).expect("the ABI's file exists")
}

#[test]
fn abi_agrees_with_the_shaders() {
    let entries = &abi().entries;
    let sources = shader_sources();
    assert_eq!(
        sources.len(),
        8,
        "shaders/*.wgsl: {:?}",
        sources.iter().map(|s| &s.0).collect::<Vec<_>>()
    );
    let mut problems = Vec::new();
    for (file, text) in &sources {
        problems.extend(reflect::disagreements(file, text, entries));
    }
    for e in entries {
        if !sources.iter().any(|(f, _)| *f == e.file) {
            problems.push(format!("{}: file {} is not in shaders/", e.name, e.file));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert_eq!(entries.len(), 33);
}

/// Each planted change to a shader text is caught, naming what changed.
#[test]
fn planted_changes_are_caught() {
    let entries = &abi().entries;
    let plants: [(&str, &str, &str, &str); 6] = [
        (
            "activation.wgsl",
            "    _pad: u32,\n}",
            "    _pad: u32,\n    extra: u32,\n}",
            "extra: u32 @ 16",
        ),
        (
            "optim.wgsl",
            "var<storage, read> grad",
            "var<storage, read_write> grad",
            "grad: storage read_write",
        ),
        (
            "softmax.wgsl",
            "fn row_mean(",
            "fn row_average(",
            "`row_average` is not in the ABI",
        ),
        (
            "matmul.wgsl",
            "    c_cs: u32,\n    alpha: f32,",
            "    alpha: f32,\n    c_cs: u32,",
            "alpha: f32 @ 76",
        ),
        (
            "svgd.wgsl",
            "@compute @workgroup_size(256)\nfn rbf_from_sqdist",
            "@compute @workgroup_size(128)\nfn rbf_from_sqdist",
            "workgroup size [128, 1, 1]",
        ),
        (
            "matmul_f16.wgsl",
            "var<storage, read> bh: array<f16>",
            "var<storage, read> bh: array<u32>",
            "bh: storage read u32",
        ),
    ];
    for (file, from, to, says) in plants {
        let text = source_of(file);
        assert!(reflect::disagreements(file, &text, entries).is_empty());
        assert!(
            text.contains(from),
            "{file}: the plant's text `{from}` is gone"
        );
        let planted = text.replacen(from, to, 1);
        let problems = reflect::disagreements(file, &planted, entries).join("\n");
        assert!(
            problems.contains(says),
            "{file}: `{to}` not caught as `{says}`: {problems}"
        );
    }
}

/// A small deterministic generator (so the test needs nothing but the JSON).
struct Lcg(u64);

impl Lcg {
    fn unit(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn example_buffers(entry: &Entry) -> BTreeMap<String, Vec<u32>> {
    let mut rng = Lcg(0x5eed ^ entry.name.len() as u64);
    let ex = &entry.example;
    entry
        .bindings
        .iter()
        .map(|b| {
            let spec = ex
                .buffers
                .get(&b.var)
                .unwrap_or_else(|| panic!("{}: the example has no buffer `{}`", entry.name, b.var));
            let words = (0..spec.len.max(1))
                .map(|_| match spec.fill {
                    Fill::Uniform => ((2.0 * rng.unit() - 1.0) as f32).to_bits(),
                    Fill::Positive => ((0.01 + 0.99 * rng.unit()) as f32).to_bits(),
                    Fill::Index => {
                        (rng.unit() * spec.below.expect("index fill has below") as f64) as u32
                    }
                    Fill::Nan => f32::NAN.to_bits(),
                    Fill::Halves => {
                        let half = |u: f64| (u * 65536.0) as u32 & 0xbfff;
                        half(rng.unit()) | half(rng.unit()) << 16
                    }
                })
                .collect();
            (b.var.clone(), words)
        })
        .collect()
}

fn as_f32(buffers: &BTreeMap<String, Vec<u32>>) -> BTreeMap<String, Vec<f32>> {
    buffers
        .iter()
        .map(|(k, v)| (k.clone(), v.iter().map(|w| f32::from_bits(*w)).collect()))
        .collect()
}

#[test]
fn every_example_runs_from_the_abi_alone() {
    let device = match launch::open() {
        Ok(d) => d,
        Err(e) if required("wgpu") => panic!("BELLA_REQUIRE names wgpu but: {e}"),
        Err(e) => {
            eprintln!("notice: skipping the shader ABI launches: {e}");
            return;
        }
    };
    let mut checked = Vec::new();
    let mut skipped = Vec::new();
    for entry in &abi().entries {
        // A module beginning with `enable f16;` does not compile on a device without
        // SHADER_F16 (lavapipe has it: src/backend/wgpu/matmul/tests.rs checks that).
        if source_of(&entry.file).starts_with("enable f16;") && !device.shader_f16 {
            eprintln!(
                "notice: {}: the adapter lacks SHADER_F16; skipped",
                entry.name
            );
            skipped.push(entry.name.as_str());
            continue;
        }
        let ex = &entry.example;
        let mut buffers = example_buffers(entry);
        let inputs = as_f32(&buffers);
        let params = launch::pack_params(entry, &ex.params);
        let source = source_of(&entry.file);
        let mut refolded = buffers.clone();
        device
            .dispatch(entry, &source, &params, (ex.workgroups, None), &mut buffers)
            .unwrap_or_else(|e| panic!("{e}"));
        // The same workgroups folded 3 wide (x = 3, y = ⌈G / 3⌉, the excess skipped): the
        // same bits.
        device
            .dispatch(
                entry,
                &source,
                &params,
                (ex.workgroups, Some(3)),
                &mut refolded,
            )
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            buffers == refolded,
            "{}: folding 3 wide changes the output",
            entry.name
        );
        let outputs = as_f32(&buffers);
        for (var, spec) in &ex.buffers {
            let got = &outputs[var];
            if spec.fill == Fill::Nan || got != &inputs[var] {
                if let Some(i) = got.iter().position(|x| !x.is_finite()) {
                    panic!(
                        "{}: `{var}`[{i}] = {} after the dispatch",
                        entry.name, got[i]
                    );
                }
            }
        }
        let Some(expected) = references::expected(&entry.name, &inputs, &ex.params) else {
            continue;
        };
        for (var, want) in expected {
            let observed = references::observed(&entry.name, var, &outputs[var], &ex.params);
            let got = &observed[..want.len()];
            let scale = want.iter().fold(0.0f64, |m, w| m.max(w.abs())).max(1e-30);
            let err = got
                .iter()
                .zip(&want)
                .fold(0.0f64, |m, (g, w)| m.max((g - w).abs()));
            assert!(
                err / scale <= 1e-5,
                "{} `{var}`: max error {err:.3e} against max |reference| {scale:.3e}",
                entry.name
            );
        }
        checked.push(entry.name.as_str());
    }
    eprintln!("compared with a reference: {checked:?}");
    assert_eq!(
        checked.len() + skipped.len(),
        abi().entries.len(),
        "references for {checked:?}"
    );
}
