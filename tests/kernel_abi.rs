//! `kernels/abi.json` against the kernels: (a) its entries are exactly the `.entry` points of
//! `kernels/*.ptx` with the same parameters (names, types, order), checked by a signature
//! parser here; (b) its registers and shared bytes are ptxas's (when ptxas is installed);
//! (c) every entry's example launch, built from the JSON alone, runs clean on the PTX
//! simulator, writes finite values, gives the same bits at any grid, and matches a
//! reference computed here, also (kernels whose vector accesses are checked at run time)
//! with every pointer 4-byte but not 16-byte aligned.
#![cfg(feature = "ptx-sim")]

#[path = "kernel_abi/launch.rs"]
mod launch;
#[path = "kernel_abi/references.rs"]
mod references;
#[path = "kernel_abi/signature.rs"]
mod signature;

use bella::backend::ptx::abi::{abi, Access, Entry, VectorLoads};
use std::path::Path;

fn kernel_sources() -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("kernels");
    let mut files: Vec<(String, String)> = std::fs::read_dir(&dir)
        .expect("kernels/ exists")
        .map(|e| e.expect("readable entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "ptx"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read_to_string(&p).expect("readable .ptx"))
        })
        .collect();
    files.sort();
    files
}

#[test]
fn the_abi_lists_every_entry_with_its_ptx_signature() {
    let sources = kernel_sources();
    assert!(sources.len() >= 6, "the six kernel families: {sources:?}");
    let problems = signature::mismatches(&abi().entries, &sources);
    assert!(
        problems.is_empty(),
        "kernels/abi.json is out of date:\n{}",
        problems.join("\n")
    );
}

/// The check above fails when a kernel's signature changes without the ABI: a parameter
/// added, one renamed, a type changed, a new entry.
#[test]
fn a_planted_signature_change_is_caught() {
    let sources = kernel_sources();
    let plant = |file: &str, from: &str, to: &str| -> Vec<String> {
        let planted: Vec<(String, String)> = sources
            .iter()
            .map(|(f, src)| {
                if f == file {
                    assert_eq!(src.matches(from).count(), 1, "`{from}` must occur once");
                    (f.clone(), src.replacen(from, to, 1))
                } else {
                    (f.clone(), src.clone())
                }
            })
            .collect();
        signature::mismatches(&abi().entries, &planted)
    };
    let added = plant(
        "optim.ptx",
        "\t.param .u32 p_n,\n",
        "\t.param .u32 p_n,\n\t.param .u32 p_extra,\n",
    );
    assert!(added.iter().any(|p| p.contains("adamw_step")), "{added:?}");
    let retyped = plant(
        "activation.ptx",
        "\t.param .f32 p_alpha,",
        "\t.param .u32 p_alpha,",
    );
    assert!(retyped.iter().any(|p| p.contains("axpby")), "{retyped:?}");
    let renamed = plant(
        "softmax.ptx",
        "\t.param .u32 p_groups,",
        "\t.param .u32 p_nrows,",
    );
    assert!(
        renamed.iter().any(|p| p.contains("row_mean")),
        "{renamed:?}"
    );
    let new_entry = plant(
        "svgd.ptx",
        ".visible .entry rbf_from_sqdist(",
        ".visible .entry rbf_from_sqdist_v2(",
    );
    assert!(
        new_entry.iter().any(|p| p.contains("rbf_from_sqdist_v2")),
        "{new_entry:?}"
    );
}

#[test]
fn registers_and_shared_bytes_are_ptxas_figures() {
    let mut ptxas = bella::profile::ptxas::Ptxas::new();
    if !ptxas.available() {
        assert!(
            !bella::testing::required("ptxas"),
            "BELLA_REQUIRE names ptxas but no ptxas was found"
        );
        println!("notice: ptxas not found (pip install nvidia-cuda-nvcc-cu12); skipping");
        return;
    }
    let mut wrong = Vec::new();
    for e in &abi().entries {
        let module = e.file.trim_end_matches(".ptx");
        for (arch, regs) in [("sm_80", e.registers.sm_80), ("sm_90", e.registers.sm_90)] {
            let info = ptxas
                .info(module, &e.name, arch)
                .unwrap_or_else(|| panic!("ptxas assembles {} for {arch}", e.file));
            if info.registers != regs || info.smem != e.shared_bytes {
                wrong.push(format!(
                    "{} on {arch}: ptxas {} registers, {} bytes shared; abi.json {regs}, {}",
                    e.name, info.registers, info.smem, e.shared_bytes
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// Every example of the ABI, launched from the JSON alone on the simulator (which fails a
/// launch on out-of-bounds accesses, races and uninitialised reads): every `nan`-filled
/// buffer is overwritten with finite values, every written buffer is finite, grid 1 gives
/// the bits of the example's grid, and where a reference exists the values match it; with
/// misaligned pointers too, where the ABI says any 4-byte aligned pointer works.
#[test]
fn every_example_launch_runs_clean_and_matches_its_reference() {
    let mut checked = Vec::new();
    for e in &abi().entries {
        let mut named: Vec<&String> = e.example.scalars.keys().collect();
        named.extend(e.example.buffers.keys());
        named.sort();
        let mut params: Vec<&String> = e.params.iter().map(|p| &p.name).collect();
        params.sort();
        assert_eq!(
            named, params,
            "{}: the example names each parameter once",
            e.name
        );
        let run = launch::run_example(e, e.example.grid, false)
            .unwrap_or_else(|err| panic!("{}: the example launch failed: {err}", e.name));
        check_written_finite(e, &run);
        if e.example.grid != 1 {
            let one = launch::run_example(e, 1, false)
                .unwrap_or_else(|err| panic!("{} at grid 1: {err}", e.name));
            for (name, out) in &run.outputs {
                assert!(
                    bits(out) == bits(&one.outputs[name]),
                    "{}: `{name}` differs between grid {} and grid 1",
                    e.name,
                    e.example.grid
                );
            }
        }
        if references::check(e, &run) {
            checked.push(e.name.as_str());
        }
        if e.vector_loads == VectorLoads::RuntimeChecked {
            let off = launch::run_example(e, e.example.grid, true)
                .unwrap_or_else(|err| panic!("{} with misaligned pointers: {err}", e.name));
            check_written_finite(e, &off);
            references::check(e, &off);
        }
    }
    println!("compared with a reference: {checked:?}");
    assert!(
        checked.len() >= 12,
        "references for most kernels: {checked:?}"
    );
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn check_written_finite(e: &Entry, run: &launch::Run) {
    for p in &e.params {
        let Some(access) = p.access else { continue };
        let spec = &e.example.buffers[&p.name];
        let out = &run.outputs[&p.name];
        let float = matches!(p.elem, Some(bella::backend::ptx::abi::Elem::F32));
        if spec.fill == "nan" || (access != Access::Read && float) {
            if let Some(i) = out.iter().position(|x| !x.is_finite()) {
                panic!(
                    "{}: `{}`[{i}] = {} after the launch",
                    e.name, p.name, out[i]
                );
            }
        }
    }
}
