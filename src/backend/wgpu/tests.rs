//! Checks specific to this backend (the shared op-by-op comparison with the CPU is
//! `tests/cross_backend.rs`): strided arena views at unaligned offsets, writes into slots
//! that keep the rest of a tensor, axpby, timestamps, dispatch folding, binding limits and
//! validation errors surfacing as `Err`, the SVGD kernels past the shared shapes.

use super::kernels::{Binding, Kernel, Params, Step};
use super::*;
use crate::backend::cpu::CpuBackend;
use crate::backend::{GradTargets, LoraDims};
use crate::rng::Rng;
use crate::tensor::{OutSlot, Strided};
use crate::testing::{rel_err, required};

/// `words` as a new storage buffer of `gpu` (at least one word long).
pub(super) fn upload_words(gpu: &WgpuBackend, words: &[u32]) -> super::pool::WgpuStorage {
    let s = gpu.alloc(words.len()).unwrap();
    if !words.is_empty() {
        gpu.ctx
            .gpu
            .queue
            .write_buffer(s.buffer(), 0, bytemuck::cast_slice(words));
    }
    s
}

/// `entry` of the WGSL `text` (a copy of a shader, perhaps with a planted bug) on raw wgpu,
/// not through the host's cached pipelines: `inputs` at bindings 0.. (the parameters first),
/// then an f32 output of `out_len` NaNs at the next binding, `groups` workgroups; returns it.
pub(super) fn run_text(
    gpu: &WgpuBackend,
    text: &str,
    entry: &str,
    inputs: &[&[u32]],
    out_len: usize,
    groups: u32,
) -> Vec<f32> {
    let g = &gpu.ctx.gpu;
    let mut buffers: Vec<_> = inputs.iter().map(|w| upload_words(gpu, w)).collect();
    buffers.push(upload_words(gpu, &vec![f32::NAN.to_bits(); out_len]));
    g.scoped("planted kernel text", || {
        let module = g.device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("planted kernel text"),
            source: wgpu::ShaderSource::Wgsl(text.into()),
        });
        let pipeline = g
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(entry),
                layout: None,
                module: &module,
                entry_point: Some(entry),
                compilation_options: Default::default(),
                cache: None,
            });
        let entries: Vec<wgpu::BindGroupEntry> = buffers
            .iter()
            .enumerate()
            .map(|(i, s)| wgpu::BindGroupEntry {
                binding: i as u32,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: s.buffer(),
                    offset: 0,
                    size: wgpu::BufferSize::new(s.binding_bytes()),
                }),
            })
            .collect();
        let bind_group = g.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &pipeline.get_bind_group_layout(0),
            entries: &entries,
        });
        let mut encoder = g.device.create_command_encoder(&Default::default());
        {
            let mut pass = encoder.begin_compute_pass(&Default::default());
            pass.set_pipeline(&pipeline);
            pass.set_bind_group(0, &bind_group, &[]);
            pass.dispatch_workgroups(groups, 1, 1);
        }
        g.queue.submit([encoder.finish()]);
        Ok(())
    })
    .unwrap();
    gpu.read(buffers.last().unwrap()).unwrap()
}

pub(super) fn gpu_or_skip() -> Option<WgpuBackend> {
    match WgpuBackend::new() {
        Ok(b) => Some(b),
        Err(e) if required("wgpu") => {
            panic!("BELLA_REQUIRE names wgpu but it is not available: {e}")
        }
        Err(e) => {
            eprintln!("notice: skipping wgpu unit tests: {e}");
            None
        }
    }
}

/// The same host data on both backends.
fn both(gpu: &WgpuBackend, shape: &[usize], data: &[f32]) -> (Tensor, Tensor) {
    (
        CpuBackend::new().upload(shape, data).unwrap(),
        gpu.upload(shape, data).unwrap(),
    )
}

fn assert_close(what: &str, got: &[f32], want: &[f32]) {
    let e = rel_err(got, want);
    assert!(e <= 1e-5, "{what}: relative error {e:.3e}");
}

/// LoRA forward and backward through a `[K, D]` arena with A and B at odd (not 256-byte
/// aligned) offsets, gradients written into an arena whose other entries must survive.
#[test]
fn lora_through_unaligned_arena_views() {
    let Some(gpu) = gpu_or_skip() else { return };
    let cpu = CpuBackend::new();
    let mut rng = Rng::new(Rng::fresh_seed());
    for x_shared in [true, false] {
        let (k, m, i, o, r) = (3, 5, 70, 66, 3);
        let a_off = 7;
        let b_off = a_off + r * i + 2;
        let d = b_off + o * r + 5;
        let arena = rng.normal_vec(k * d);
        let x_shape = if x_shared { vec![m, i] } else { vec![k, m, i] };
        let x = rng.normal_vec(x_shape.iter().product());
        let w = rng.normal_vec(o * i);
        let bias = rng.normal_vec(o);
        let dy = rng.normal_vec(k * m * o);
        let grad0 = rng.normal_vec(k * d);
        let dims = LoraDims {
            k,
            m,
            i,
            o,
            r,
            x_shared,
        };
        let mut outs = Vec::new();
        for be in [&cpu as &dyn Backend, &gpu] {
            let ar = be.upload(&[k, d], &arena).unwrap();
            let xt = be.upload(&x_shape, &x).unwrap();
            let wt = be.upload(&[o, i], &w).unwrap();
            let bt = be.upload(&[o], &bias).unwrap();
            let a = Strided {
                tensor: &ar,
                offset: a_off,
                stride: d,
            };
            let b = Strided {
                tensor: &ar,
                offset: b_off,
                stride: d,
            };
            let (y, h) = be
                .lora_forward(&LoraForwardArgs {
                    dims,
                    x: &xt,
                    weight: &wt,
                    bias: Some(&bt),
                    a,
                    b,
                    scale: 0.5,
                })
                .unwrap();
            let dyt = be.upload(&[k, m, o], &dy).unwrap();
            let mut grad = be.upload(&[k, d], &grad0).unwrap();
            let args = LoraBackwardArgs {
                dims,
                dy: &dyt,
                x: &xt,
                weight: &wt,
                a,
                b,
                h: &h,
                scale: 0.5,
                need_dx: true,
                da: OutSlot {
                    offset: a_off,
                    stride: d,
                },
                db: OutSlot {
                    offset: b_off,
                    stride: d,
                },
            };
            let dx = be
                .lora_backward(&args, GradTargets::Arena(&mut grad))
                .unwrap()
                .unwrap();
            outs.push([y, h, grad, dx].map(|t| be.download(&t).unwrap()));
        }
        for (name, (want, got)) in ["y", "h", "grad arena", "dx"]
            .iter()
            .zip(outs[0].iter().zip(&outs[1]))
        {
            assert_close(&format!("{name} (x shared: {x_shared})"), got, want);
        }
    }
}

/// A batched product of more workgroups than one dispatch dimension holds (one 64×16 tile
/// per block: 65 600 workgroups), at an odd output offset; a short wide block (1×17), so the
/// narrow kernel computes cᵀ. About 15 s on lavapipe.
#[test]
fn gemm_past_the_dispatch_limit() {
    let Some(gpu) = gpu_or_skip() else { return };
    let mut rng = Rng::new(Rng::fresh_seed());
    for (batch, m, n, inner) in [(65_600, 1, 17, 2)] {
        let a = rng.normal_vec(batch * m * inner);
        let b = rng.normal_vec(inner * n);
        let mut results = Vec::new();
        for be in [&CpuBackend::new() as &dyn Backend, &gpu] {
            let at = be.upload(&[batch, inner, m], &a).unwrap();
            let bt = be.upload(&[inner, n], &b).unwrap();
            let mut out = be.zeros(&[batch * m * n + 3]).unwrap();
            let args = MatmulArgs {
                batch,
                m,
                n,
                inner,
                a: Strided {
                    tensor: &at,
                    offset: 0,
                    stride: m * inner,
                },
                b: Strided {
                    tensor: &bt,
                    offset: 0,
                    stride: 0,
                },
                trans_a: true,
                trans_b: false,
                alpha: 0.75,
                out: OutSlot {
                    offset: 3,
                    stride: m * n,
                },
            };
            be.matmul(&args, &mut out).unwrap();
            results.push(be.download(&out).unwrap());
        }
        assert_close(
            &format!("matmul batch {batch} m {m} n {n}"),
            &results[1],
            &results[0],
        );
    }
}

/// A batched product written into a slot of a larger tensor leaves the rest untouched.
#[test]
fn matmul_writes_only_its_slot() {
    let Some(gpu) = gpu_or_skip() else { return };
    let mut rng = Rng::new(Rng::fresh_seed());
    let (batch, m, n, inner) = (2, 3, 5, 4);
    let a = rng.normal_vec(batch * m * inner);
    let b = rng.normal_vec(inner * n);
    let out0 = rng.normal_vec(100);
    let mut results = Vec::new();
    for be in [&CpuBackend::new() as &dyn Backend, &gpu] {
        let at = be.upload(&[batch, m, inner], &a).unwrap();
        let bt = be.upload(&[inner, n], &b).unwrap();
        let mut out = be.upload(&[100], &out0).unwrap();
        let args = MatmulArgs {
            batch,
            m,
            n,
            inner,
            a: Strided {
                tensor: &at,
                offset: 0,
                stride: m * inner,
            },
            b: Strided {
                tensor: &bt,
                offset: 0,
                stride: 0,
            },
            trans_a: false,
            trans_b: false,
            alpha: -1.5,
            out: OutSlot {
                offset: 9,
                stride: 41,
            },
        };
        be.matmul(&args, &mut out).unwrap();
        results.push(be.download(&out).unwrap());
    }
    assert_close("matmul slot", &results[1], &results[0]);
    assert_eq!(
        results[1][..9],
        out0[..9],
        "entries before the slot changed"
    );
}

#[test]
fn axpby_matches_cpu() {
    let Some(gpu) = gpu_or_skip() else { return };
    let mut rng = Rng::new(Rng::fresh_seed());
    let n = 1031;
    let (x, y) = (rng.normal_vec(n), rng.normal_vec(n));
    let (xc, xg) = both(&gpu, &[n], &x);
    let (yc, yg) = both(&gpu, &[n], &y);
    let want = CpuBackend::new().axpby(0.3, &xc, -2.0, &yc).unwrap();
    let got = gpu.axpby(0.3, &xg, -2.0, &yg).unwrap();
    let want = CpuBackend::new().download(&want).unwrap();
    assert_close("axpby", &gpu.download(&got).unwrap(), &want);
}

/// Copy-on-write: an in-place update of a tensor whose storage is shared leaves the other
/// handle's values as they were.
#[test]
fn in_place_update_copies_shared_storage() {
    let Some(gpu) = gpu_or_skip() else { return };
    let n = 10;
    let p = gpu.upload(&[n], &[1.0; 10]).unwrap();
    let mut param = p.clone();
    let grad = gpu.upload(&[n], &[0.5; 10]).unwrap();
    let mut m = gpu.zeros(&[n]).unwrap();
    let mut v = gpu.zeros(&[n]).unwrap();
    let hp = AdamW {
        lr: 0.1,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.0,
        step: 1,
    };
    gpu.adamw_step(&mut param, &grad, &mut m, &mut v, &hp)
        .unwrap();
    assert_eq!(gpu.download(&p).unwrap(), vec![1.0; 10]);
    let updated = gpu.download(&param).unwrap();
    assert!(
        updated.iter().all(|&u| (u - 0.9).abs() < 1e-5),
        "{updated:?}"
    );
}

#[test]
fn timestamps_measure_a_kernel() {
    let Some(gpu) = gpu_or_skip() else { return };
    if !gpu.set_timing(true) {
        eprintln!("notice: adapter has no timestamp queries; nothing to check");
        return;
    }
    let x = gpu.upload(&[1 << 16], &vec![1.0; 1 << 16]).unwrap();
    gpu.gelu_forward(&x).unwrap();
    let ns = gpu.time_last_submit_ns();
    gpu.set_timing(false);
    let ns = ns.expect("a timed submission was made");
    assert!(ns > 0.0 && ns < 1e11, "implausible kernel time {ns} ns");
}

#[test]
fn dispatches_fold_past_the_per_dimension_limit() {
    let Some(gpu) = gpu_or_skip() else { return };
    let max = gpu.limits().max_compute_workgroups_per_dimension as u64;
    let g = &gpu.ctx.gpu;
    assert_eq!(g.fold("t", 1).unwrap(), (1, 1));
    assert_eq!(g.fold("t", max).unwrap(), (max as u32, 1));
    let (x, y) = g.fold("t", max + 1).unwrap();
    assert!(x as u64 * y as u64 > max && y == 2);
    assert!(g.fold("t", max * max + 1).is_err());
}

/// A tensor past the storage-binding limit is refused with an error, not a panic.
#[test]
fn binding_past_the_limit_is_an_error() {
    let Some(gpu) = gpu_or_skip() else { return };
    let limit = gpu.ctx.gpu.max_binding_bytes();
    if limit > 1 << 30 || (limit as u128) >= gpu.limits().max_buffer_size as u128 {
        eprintln!("notice: storage-binding limit {limit} too large to test here");
        return;
    }
    let n = (limit / 4) as usize + 1;
    let x = gpu.zeros(&[n]).unwrap();
    let err = gpu.relu_forward(&x).unwrap_err();
    assert!(err.to_string().contains("storage-binding limit"), "{err}");
}

/// A wgpu validation error (here a binding larger than its buffer) comes back as `Err`.
#[test]
fn validation_errors_are_results() {
    let Some(gpu) = gpu_or_skip() else { return };
    let x = gpu.alloc(16).unwrap();
    let y = gpu.alloc(16).unwrap();
    let step = Step {
        kernel: Kernel::ReluForward,
        params: Params::default().u(16).f(1.0).f(1.0),
        bindings: vec![
            Binding {
                buffer: x.buffer(),
                bytes: x.buffer().size() + 1024,
            },
            Binding {
                buffer: y.buffer(),
                bytes: 64,
            },
        ],
        groups: 1,
    };
    let err = gpu.run("bad binding", &[step]).unwrap_err();
    assert!(matches!(err, BellaError::Device { .. }), "{err:?}");
    // The device is still usable afterwards.
    let t = gpu.upload(&[3], &[-1.0, 0.0, 2.0]).unwrap();
    assert_eq!(
        gpu.download(&gpu.relu_forward(&t).unwrap()).unwrap(),
        vec![0.0, 0.0, 2.0]
    );
}

/// Every kernel the host dispatches has a well-formed `shaders/abi.json` entry (file, params
/// at binding 0, read-only then read-write storage bindings from 1), and every ABI entry is
/// one the host knows. Needs no adapter.
#[test]
fn every_kernel_resolves_in_the_abi() {
    use Kernel::*;
    let all = [
        LoraForward,
        LoraForward128,
        LoraForwardBf16,
        LoraForwardF16,
        LoraForwardBf16_128,
        LoraForwardF16_128,
        LoraDx,
        LoraDx128,
        GemmTiled,
        GemmTiled128,
        GemmNarrowSplitK,
        GemmTiledBf16,
        GemmTiledF16,
        GemmTiledF16Native,
        GemmNarrowSplitKBf16,
        GemmNarrowSplitKF16,
        SqdistPartial,
        SqdistFinalize,
        RbfFromSqdist,
        SvgdDirection,
        AdamwStep,
        ReluForward,
        ReluBackward,
        GeluForward,
        GeluBackward,
        Axpby,
        SoftmaxXentRows,
        RowMean,
        EnsembleStats,
        CastF32ToBf16,
        CastF32ToF16,
        CastBf16ToF32,
        CastF16ToF32,
    ];
    for k in all {
        k.spec().unwrap_or_else(|e| panic!("{k:?}: {e}"));
    }
    let names: Vec<&str> = all.iter().map(|k| k.entry_name()).collect();
    for e in &super::abi::abi().entries {
        assert!(
            names.contains(&e.name.as_str()),
            "ABI entry `{}` has no Kernel",
            e.name
        );
    }
}

/// Parameters that do not fit the kernel's `shaders/abi.json` struct (too few words, a
/// float where a u32 belongs, a missing or unknown name) are refused before any dispatch,
/// with an error naming the kernel.
#[test]
fn params_are_checked_against_the_abi() {
    let Some(gpu) = gpu_or_skip() else { return };
    let x = gpu.alloc(16).unwrap();
    let y = gpu.alloc(16).unwrap();
    let relu = |params: Params| Step {
        kernel: Kernel::ReluForward,
        params,
        bindings: vec![bind(&x), bind(&y)],
        groups: 1,
    };
    let wrong = [
        (Params::default().u(16), "3 of them needed"),
        (Params::default().f(16.0).f(1.0).f(1.0), "`n` is U32"),
        (
            Params::named().set_u("n", 16).set_f("alpha", 1.0),
            "`beta` not given",
        ),
        (
            Params::named()
                .set_u("n", 16)
                .set_f("alpha", 1.0)
                .set_f("beta", 1.0)
                .set_u("m", 2),
            "no parameter named `m`",
        ),
    ];
    for (params, says) in wrong {
        let err = gpu
            .run("abi check", &[relu(params)])
            .unwrap_err()
            .to_string();
        assert!(err.contains("relu_forward") && err.contains(says), "{err}");
    }
    let ok = Params::named()
        .set_f("beta", 1.0)
        .set_u("n", 16)
        .set_f("alpha", 1.0);
    gpu.run("abi check", &[relu(ok)]).unwrap();
}

/// lavapipe / llvmpipe are CPU adapters (so `auto` does not take them for a GPU), and
/// `describe` says so.
#[test]
fn software_adapter_reports_cpu() {
    let Some(gpu) = gpu_or_skip() else { return };
    let info = &gpu.ctx.gpu.info;
    if info.name.contains("llvmpipe") {
        assert_eq!(info.device_type, wgpu::DeviceType::Cpu);
        assert!(gpu.describe().contains("Cpu"), "{}", gpu.describe());
    }
}

/// The SVGD kernels' geometries the shared shapes of `crate::testing` do not reach: hundreds
/// of pair-block tiles (`sqdist_partial` at K = 200), thousands of rows of partial sums for
/// `sqdist_finalize` (K = 7, D = 300 000), several row blocks of `svgd_direction` (K > 64),
/// and D = 1. Distances are checked element-wise against the float64 oracle, with an exact
/// zero diagonal and symmetry; directions norm-wise.
#[test]
fn svgd_kernels_over_block_tiles_row_blocks_and_chunks() {
    let Some(gpu) = gpu_or_skip() else { return };
    let mut rng = Rng::new(Rng::fresh_seed());
    for (k, d) in [
        (2usize, 1usize),
        (3, 2049),
        (4, 5001),
        (7, 300_000),
        (33, 517),
        (64, 1),
        (65, 300),
        (97, 1030),
        (130, 700),
        (200, 41),
    ] {
        let theta: Vec<f32> = rng.normal_vec(k * d).iter().map(|v| 0.1 * v).collect();
        let score = rng.normal_vec(k * d);
        let kern: Vec<f32> = (0..k * k).map(|_| rng.uniform()).collect();
        let h = 0.3 + rng.uniform();
        let f64s = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<f64>>();
        let t = gpu.upload(&[k, d], &theta).unwrap();
        let sq = gpu
            .download(&gpu.pairwise_sqdist(&t, k, d).unwrap())
            .unwrap();
        let want = crate::oracle::pairwise_sqdist(&f64s(&theta), k, d);
        for i in 0..k {
            assert_eq!(sq[i * k + i], 0.0, "K={k} D={d}: diagonal {i}");
            for j in 0..k {
                let (o, w) = (sq[i * k + j] as f64, want[i * k + j]);
                assert_eq!(sq[i * k + j], sq[j * k + i], "K={k} D={d}: ({i}, {j})");
                assert!(
                    (o - w).abs() <= 1e-5 * w.abs() + 1e-7,
                    "K={k} D={d} ({i}, {j}): {o} vs {w}"
                );
            }
        }
        let s = gpu.upload(&[k, d], &score).unwrap();
        let kn = gpu.upload(&[k, k], &kern).unwrap();
        let phi = gpu
            .download(&gpu.svgd_direction(&t, &s, &kn, k, d, h).unwrap())
            .unwrap();
        let want = crate::oracle::svgd_direction(
            &f64s(&theta),
            &f64s(&score),
            &f64s(&kern),
            k,
            d,
            h as f64,
        );
        let want: Vec<f32> = want.iter().map(|&x| x as f32).collect();
        assert_close(&format!("svgd_direction K={k} D={d}"), &phi, &want);
    }
}
