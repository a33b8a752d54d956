//! `bella profile` end to end: the JSON it writes for `adamw_step`, `lora_forward` and
//! `gelu_backward` at the quick shapes (run on the counting PTX simulator), whole and sampled.
#![cfg(feature = "ptx-sim")]

use serde_json::Value;
use std::process::Command;

fn profile(op: &str) -> Value {
    profile_with(op, &[])
}

fn profile_with(op: &str, extra: &[&str]) -> Value {
    let path = std::env::temp_dir().join(format!(
        "bella-profile-{op}-{}-{}.json",
        extra.join(""),
        std::process::id()
    ));
    let out = Command::new(env!("CARGO_BIN_EXE_bella"))
        .args(["profile", "--op", op, "--quick"])
        .args(extra)
        .arg("--json")
        .arg(&path)
        .output()
        .expect("bella runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bella profile failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("modelled"),
        "the table says modelled:\n{stdout}"
    );
    let text = std::fs::read_to_string(&path).expect("the JSON was written");
    let _ = std::fs::remove_file(&path);
    serde_json::from_str(&text).expect("valid JSON")
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("a number: {v}"))
}

#[test]
fn adamw_step_profile_has_the_keys_seven_passes_and_three_modelled_cards() {
    let json = profile("adamw_step");
    let profiles = json["profiles"].as_array().expect("profiles");
    assert_eq!(profiles.len(), 1, "one adamw_step case at --quick");
    let p = &profiles[0];
    assert_eq!(p["op"], "adamw_step");
    let shape = p["shape"].as_str().expect("shape");
    let n: f64 = shape.trim_start_matches("n=").parse().expect("shape n=N");
    let launches = p["launches"].as_array().expect("launches");
    assert!(!launches.is_empty());
    for l in launches {
        for key in ["kernel", "grid", "block", "counters", "occupancy", "ptxas"] {
            assert!(!l[key].is_null(), "launch key {key}: {l}");
        }
        assert!(l["counters"]["global"]["load_sectors"].is_u64());
        assert!(l["counters"]["warp_inst"]["fp32_fma"].is_u64());
        assert!(l["occupancy"]["sm_80"]["blocks_per_sm"].is_u64());
        assert!(l["occupancy"]["sm_90"]["blocks_per_sm"].is_u64());
        assert!(l["sample"].is_null(), "the whole grid ran: {}", l["sample"]);
        assert!(l["dram_bytes"].is_u64());
        assert_modelled_launch(l);
    }
    let t = &p["totals"];
    for key in [
        "useful_flops",
        "flops_executed",
        "min_bytes",
        "l2_bytes",
        "modelled",
    ] {
        assert!(!t[key].is_null(), "totals key {key}: {t}");
    }
    // read param, grad, m, v; write param, m, v
    let passes = 7.0 * 4.0 * n;
    let l2 = f(&t["l2_bytes"]);
    assert!(
        (l2 - passes).abs() <= 0.02 * passes,
        "l2_bytes {l2} against 7 passes of {passes}"
    );
    assert_eq!(f(&t["min_bytes"]), passes);
    // every sector of the 7 passes is distinct: the DRAM model moves each once
    let dram = f(&t["dram_bytes"]);
    assert!(
        (dram - passes).abs() <= 0.02 * passes,
        "dram_bytes {dram} against 7 passes of {passes}"
    );
    assert_eq!(json["sm_count"], 132);
    assert!(json["model"]
        .as_str()
        .unwrap()
        .contains("distinct 32-byte sectors"));
    for card in ["a100", "h100", "h200"] {
        let m = &t["modelled"][card];
        assert!(f(&m["us"]) > 0.0, "{card}: {m}");
        assert!(m["limiter"].is_string(), "{card}: {m}");
        let pct = f(&m["roofline_pct"]);
        assert!(pct > 0.0 && pct <= 100.0 + 1e-9, "{card}: {m}");
        // the op's time is the sum of its launches'
        let sum: f64 = launches.iter().map(|l| f(&l["modelled"][card]["us"])).sum();
        assert!((f(&m["us"]) - sum).abs() <= 1e-9 * sum, "{card}: {m}");
    }
}

/// A launch's modelled time on each card: positive, its limiter named, the largest pipe.
fn assert_modelled_launch(l: &Value) {
    for card in ["a100", "h100", "h200"] {
        let m = &l["modelled"][card];
        let us = f(&m["us"]);
        assert!(us > 0.0, "{card}: {m}");
        let limiter = m["limiter"].as_str().expect("a limiter");
        let pipes = m["pipes_us"].as_array().expect("pipes_us");
        let top = pipes
            .iter()
            .map(|p| (p[0].as_str().unwrap(), f(&p[1])))
            .fold(("none", 0.0), |a, b| if b.1 > a.1 { b } else { a });
        assert_eq!(top, (limiter, us), "{card}: {m}");
        assert!(m["ctas_per_sm"].as_u64().unwrap() >= 1);
    }
}

#[test]
fn a_sampled_run_scales_to_the_whole_runs_counts() {
    // an op whose kernel is not being rewritten: 16 CTAs at the quick shape
    let whole = profile("gelu_backward");
    let sampled = profile_with("gelu_backward", &["--max-ctas", "4"]);
    let (w, s) = (&whole["profiles"][0], &sampled["profiles"][0]);
    let (wl, sl) = (&w["launches"][0], &s["launches"][0]);
    assert_eq!(wl["kernel"], "gelu_backward");
    assert!(wl["sample"].is_null());
    let total = sl["sample"]["ctas_total"]
        .as_u64()
        .expect("a sampled launch");
    assert_eq!(sl["sample"]["ctas_run"], 4);
    assert!(total > 4, "the grid is wider than the sample: {total}");
    assert_eq!(wl["grid"], sl["grid"]);
    assert_eq!(s["sampling"]["max_ctas_per_launch"], 4);
    assert_eq!(s["sampling"]["sampled_launches"], 1);
    assert_modelled_launch(sl);
    let near = |what: &str, a: f64, b: f64| {
        assert!(
            (a - b).abs() <= 0.03 * b.abs().max(1.0),
            "{what}: sampled {a} against whole {b}"
        );
    };
    let (wc, sc) = (&wl["counters"], &sl["counters"]);
    for key in [
        "fp32_fma",
        "fp32_mul",
        "integer",
        "ld_global",
        "st_global",
        "control",
    ] {
        near(key, f(&sc["warp_inst"][key]), f(&wc["warp_inst"][key]));
    }
    near("flops", f(&sc["flops"]), f(&wc["flops"]));
    for key in ["load_requests", "load_sectors", "store_sectors"] {
        near(key, f(&sc["global"][key]), f(&wc["global"][key]));
    }
    near("l2_bytes", f(&sl["l2_bytes"]), f(&wl["l2_bytes"]));
    // no CTA shares a sector with another: the scaled distinct sectors are the whole run's
    near("dram_bytes", f(&sl["dram_bytes"]), f(&wl["dram_bytes"]));
    near(
        "h100 us",
        f(&s["totals"]["modelled"]["h100"]["us"]),
        f(&w["totals"]["modelled"]["h100"]["us"]),
    );
}

#[test]
fn lora_forward_useful_flops_are_its_contract_count() {
    let json = profile("lora_forward");
    let profiles = json["profiles"].as_array().expect("profiles");
    assert_eq!(profiles.len(), 2, "shared and per-particle x");
    for p in profiles {
        assert_eq!(p["op"], "lora_forward");
        let shape = p["shape"].as_str().unwrap();
        let dim = |name: &str| -> f64 {
            shape
                .split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{name}=")))
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{name} in {shape}"))
        };
        let (k, m, i, o, r) = (dim("K"), dim("M"), dim("I"), dim("O"), dim("r"));
        // DESIGN.md: h_k = x_k A_kᵀ, y_k = x_k Wᵀ + s·h_k B_kᵀ; with a shared x the base
        // product x Wᵀ is computed once, not K times.
        let base_rows = if shape.contains("shared x") { m } else { k * m };
        let contract = 2.0 * base_rows * i * o + k * (2.0 * m * i * r + 2.0 * m * r * o);
        assert_eq!(f(&p["totals"]["useful_flops"]), contract, "{shape}");
        // h = x Aᵀ (the kernel's h mode, or a GEMM for a per-particle x: gemm_narrow_splitk
        // at r ≤ 16), then the y tiles; each may be split over I (a split and a finish launch;
        // for the 64 × 32 tile kernel of a shared x with few tiles, h chunks summed by
        // sum_blocks)
        let launches = p["launches"].as_array().unwrap();
        assert!((2..=4).contains(&launches.len()), "{shape}: h, then y");
        let kernels = [
            "lora_forward",
            "lora_forward_64x32",
            "gemm_tiled",
            "gemm_narrow_splitk",
            "sum_blocks",
        ];
        for l in launches {
            assert!(
                kernels.contains(&l["kernel"].as_str().unwrap()),
                "{shape}: {}",
                l["kernel"]
            );
            assert_modelled_launch(l);
        }
        let last = launches.last().unwrap()["kernel"].as_str().unwrap();
        assert!(
            last.starts_with("lora_forward"),
            "{shape}: y last, not {last}"
        );
        assert!(f(&p["totals"]["flops_executed"]) >= contract);
    }
}

#[test]
fn particles_sets_the_svgd_cases_k() {
    let v = profile_with("svgd_direction", &["--particles", "3"]);
    let p = &v["profiles"][0];
    assert_eq!(p["shape"].as_str().unwrap().split(' ').next(), Some("K=3"));
    // theta and score read and phi written (3 K·D f32) and the K×K kernel read, at K = 3.
    let d: f64 = p["shape"]
        .as_str()
        .unwrap()
        .split("D=")
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(f(&p["totals"]["min_bytes"]), (3.0 * 3.0 * d + 9.0) * 4.0);
}

/// The tensor-core GEMM as a profile case: its FLOPs run on the tensor pipe (counted as
/// tensor FLOPs, none of them FP32), and its roofline is the card's `mma.sync` peak, so the
/// modelled share stays at or below 100 %.
#[test]
fn gemm_mma_profile_counts_tensor_flops_against_the_mma_peak() {
    let v = profile("gemm_mma_bf16");
    let p = &v["profiles"][0];
    assert_eq!(p["op"], "gemm_mma_bf16");
    let t = &p["totals"];
    let tensor = f(&t["counters"]["tensor"]["flops"]);
    assert_eq!(
        tensor,
        f(&t["useful_flops"]),
        "every useful FLOP on the tensor pipe"
    );
    assert!(f(&t["flops_executed"]) >= tensor);
    let l = &p["launches"][0];
    assert_eq!(l["kernel"], "gemm_mma_bf16");
    assert_modelled_launch(l);
    for card in ["a100", "h100", "h200"] {
        let pct = f(&t["modelled"][card]["roofline_pct"]);
        assert!(pct > 0.0 && pct <= 100.0, "{card}: {pct}");
    }
}
