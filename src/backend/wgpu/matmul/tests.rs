//! `gemm_tiled_bf16` / `gemm_tiled_f16` of `shaders/matmul.wgsl` dispatched from a copy of the
//! shader text on raw wgpu (not the host's cached pipelines), against an f64 reference of the
//! header's stride formulas over the exactly widened halves: the unchanged text passes, and
//! copies with a planted bug (the low and high halves of a word swapped; f16 subnormals
//! widened one binade off) fail. `tests/half_precision.rs` covers the host path (`matmul`
//! on 16-bit tensors, many layouts) against float64.

use super::super::tests::gpu_or_skip;
use super::super::WgpuBackend;
use crate::dtype::{pack_bits, DType};
use crate::rng::Rng;

/// `GemmParams` in field order (see the shader), for a batched product with transposed a,
/// offsets, and a shared (batch stride 0) transposed b.
struct Case {
    m: u32,
    n: u32,
    inner: u32,
    batch: u32,
    a: [u32; 4], // off, bs, rs, ks
    b: [u32; 4], // off, bs, ks, cs
    c_bs: u32,
}

impl Case {
    fn words(&self) -> Vec<u32> {
        let (m, n) = (self.m, self.n);
        let [ao, abs, ars, aks] = self.a;
        let [bo, bbs, bks, bcs] = self.b;
        vec![
            m,
            n,
            self.inner,
            self.batch,
            ao,
            abs,
            ars,
            aks,
            bo,
            bbs,
            bks,
            bcs,
            n, // b_grp
            0, // b_gs
            n, // c_grp
            0, // c_gs
            0, // c_off
            self.c_bs,
            n, // c_rs
            1, // c_cs
            0.5f32.to_bits(),
            m.div_ceil(64),
            n.div_ceil(64),
            0,
        ]
    }

    fn groups(&self) -> u32 {
        self.m.div_ceil(64) * self.n.div_ceil(64) * self.batch
    }

    /// c by the stride formulas, in f64, from the widened operands.
    fn reference(&self, a: &[f64], b: &[f64]) -> Vec<f64> {
        let u = |x: u32| x as usize;
        let (m, n, inner) = (u(self.m), u(self.n), u(self.inner));
        let [ao, abs, ars, aks] = self.a.map(u);
        let [bo, bbs, bks, bcs] = self.b.map(u);
        let mut c = vec![0.0; u(self.batch) * u(self.c_bs)];
        for bt in 0..u(self.batch) {
            for row in 0..m {
                for col in 0..n {
                    let s: f64 = (0..inner)
                        .map(|k| {
                            a[ao + bt * abs + row * ars + k * aks]
                                * b[bo + bt * bbs + k * bks + col * bcs]
                        })
                        .sum();
                    c[bt * u(self.c_bs) + row * n + col] = 0.5 * s;
                }
            }
        }
        c
    }
}

/// Random finite 16-bit patterns with biased exponents in `exps` (random sign and mantissa).
fn random_halves(rng: &mut Rng, dt: DType, exps: (u64, u64), n: usize) -> Vec<u16> {
    let man_bits = if dt == DType::BF16 { 7 } else { 10 };
    (0..n)
        .map(|_| {
            let r = rng.next_u64();
            let sign = ((r & 1) as u16) << 15;
            let e = exps.0 + (r >> 1) % (exps.1 - exps.0 + 1);
            let man = (r >> 16) as u16 & ((1 << man_bits) - 1);
            sign | (e as u16) << man_bits | man
        })
        .collect()
}

fn upload_words(gpu: &WgpuBackend, words: &[u32]) -> super::super::pool::WgpuStorage {
    let s = gpu.alloc(words.len()).unwrap();
    gpu.ctx
        .gpu
        .queue
        .write_buffer(s.buffer(), 0, bytemuck::cast_slice(words));
    s
}

/// `entry` of the WGSL `text` on raw wgpu: c (f32, `c_len` long) from the packed words.
fn gemm_with_text(
    gpu: &WgpuBackend,
    text: &str,
    entry: &str,
    case: &Case,
    a: &[u32],
    b: &[u32],
    c_len: usize,
) -> Vec<f32> {
    let g = &gpu.ctx.gpu;
    let params = upload_words(gpu, &case.words());
    let (a, b) = (upload_words(gpu, a), upload_words(gpu, b));
    let c = upload_words(gpu, &vec![f32::NAN.to_bits(); c_len]);
    g.scoped("planted gemm", || {
        let module = g.device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("planted matmul.wgsl"),
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
        let entries: Vec<wgpu::BindGroupEntry> = [&params, &a, &b, &c]
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
            pass.dispatch_workgroups(case.groups(), 1, 1);
        }
        g.queue.submit([encoder.finish()]);
        Ok(())
    })
    .unwrap();
    gpu.read(&c).unwrap()
}

/// Elements of `got` off the reference by more than 1e-5 of its largest magnitude.
fn mismatches(got: &[f32], want: &[f64]) -> usize {
    let scale = want.iter().fold(0.0f64, |m, w| m.max(w.abs())).max(1e-30);
    got.iter()
        .zip(want)
        .filter(|(&g, &w)| {
            let within = (g as f64 - w).abs() <= 1e-5 * scale; // false for NaN too
            !within
        })
        .count()
}

/// A plant: the text replaced, its replacement, the entries it breaks.
type Plant = (&'static str, &'static str, &'static [&'static str]);

#[test]
fn planted_half_gemm_bugs_are_caught() {
    let Some(gpu) = gpu_or_skip() else { return };
    let text = include_str!("../../../../shaders/matmul.wgsl");
    // 37×45 = op(a) 37×29 (transposed, offset 3) · op(b) 29×45 (transposed, offset 1, shared
    // by both batch blocks); odd offsets, so elements straddle the halves of words.
    let case = Case {
        m: 37,
        n: 45,
        inner: 29,
        batch: 2,
        a: [3, 37 * 29, 1, 37],
        b: [1, 0, 1, 29],
        c_bs: 37 * 45,
    };
    let (a_len, b_len) = (3 + 2 * 37 * 29, 1 + 29 * 45);
    let c_len = 2 * 37 * 45;
    let plants: [Plant; 2] = [
        (
            "(w >> ((e & 1u) * 16u))",
            "(w >> ((1u - (e & 1u)) * 16u))",
            &["gemm_tiled_bf16", "gemm_tiled_f16"],
        ),
        (
            "((q + 103u) << 23u)",
            "((q + 104u) << 23u)",
            &["gemm_tiled_f16"],
        ),
    ];
    // Operand sets: bf16 over about 2^-15 .. 2^8; f16 over subnormals .. 2^2, and one of
    // subnormals and the smallest normals only (where a subnormal's value is visible in c).
    let sets: [(DType, &str, (u64, u64)); 3] = [
        (DType::BF16, "gemm_tiled_bf16", (112, 135)),
        (DType::F16, "gemm_tiled_f16", (0, 17)),
        (DType::F16, "gemm_tiled_f16", (0, 2)),
    ];
    let mut rng = Rng::new(0x05ee_df16);
    let mut caught = vec![Vec::new(); plants.len()];
    for (dt, entry, exps) in sets {
        let ha = random_halves(&mut rng, dt, exps, a_len);
        let hb = random_halves(&mut rng, dt, exps, b_len);
        let wide = |h: &[u16]| -> Vec<f64> { h.iter().map(|&x| dt.widen_bits(x) as f64).collect() };
        let want = case.reference(&wide(&ha), &wide(&hb));
        let (wa, wb) = (pack_bits(&ha), pack_bits(&hb));
        let good = gemm_with_text(&gpu, text, entry, &case, &wa, &wb, c_len);
        assert_eq!(
            mismatches(&good, &want),
            0,
            "{entry} {exps:?}: the unchanged text"
        );
        for (i, (from, to, breaks)) in plants.iter().enumerate() {
            if !breaks.contains(&entry) {
                continue;
            }
            assert!(text.contains(from), "the plant's text `{from}` is gone");
            let planted = text.replacen(from, to, 1);
            let bad = gemm_with_text(&gpu, &planted, entry, &case, &wa, &wb, c_len);
            let wrong = mismatches(&bad, &want);
            eprintln!("{entry} {exps:?}: `{to}` is wrong on {wrong} of {c_len} outputs");
            if wrong > 0 {
                caught[i].push(entry);
            }
        }
    }
    for ((_, to, breaks), caught) in plants.iter().zip(&caught) {
        for entry in breaks.iter() {
            assert!(caught.contains(entry), "{entry}: `{to}` not caught");
        }
    }
}
