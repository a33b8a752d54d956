//! `bella profile` end to end: the JSON it writes for `adamw_step` and `lora_forward` at the
//! quick shapes (run on the counting PTX simulator).
#![cfg(feature = "ptx-sim")]

use serde_json::Value;
use std::process::Command;

fn profile(op: &str) -> Value {
    let path = std::env::temp_dir().join(format!("bella-profile-{op}-{}.json", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_bella"))
        .args(["profile", "--op", op, "--quick", "--json"])
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
    for card in ["a100", "h100", "h200"] {
        let m = &t["modelled"][card];
        assert!(f(&m["us"]) > 0.0, "{card}: {m}");
        assert!(m["limiter"].is_string(), "{card}: {m}");
        let pct = f(&m["roofline_pct"]);
        assert!(pct > 0.0 && pct <= 100.0 + 1e-9, "{card}: {m}");
    }
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
        let launches = p["launches"].as_array().unwrap();
        assert_eq!(launches.len(), 1, "one fused launch");
        assert_eq!(launches[0]["kernel"], "lora_forward");
        assert!(f(&p["totals"]["flops_executed"]) >= contract);
    }
}
