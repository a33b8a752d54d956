//! The tensor-core LoRA forward on the PTX simulator against a float64 loop over the exact
//! 16-bit x, W, B and the f32 h: minimal, edge, odd-rank and multi-step-rank shapes, bias,
//! offsets and a strided B, x shared or per particle (with gaps between the x_k); y outside
//! the output untouched; planted bugs (every particle reading x_0, a swapped B fragment, the old two-way split (mid folded into a rounded lo), the lo term dropped, the
//! mid mma dropped, an unswizzled staging store) caught against a bound with no split error,
//! and staging plants (a misplaced staged row, a missing barrier, one buffer instead of two)
//! reported by the simulator; the two entries' texts in step; preconditions refused.
use super::*;
use crate::backend::ptx::modules::MODULES;
use crate::backend::ptx_sim::SimDriver;
use crate::dtype::pack_bits;
use crate::rng::Rng;

const TYPES: [DType; 2] = [DType::BF16, DType::F16];

fn text() -> &'static str {
    MODULES.iter().find(|(n, _)| *n == LORA).unwrap().1
}

/// The text of entry `name` in `src`: from its `.visible .entry` line to the closing `}`.
fn entry_text<'s>(src: &'s str, name: &str) -> &'s str {
    let start = src
        .find(&format!(".visible .entry {name}("))
        .expect("entry");
    let end = start + src[start..].find("\n}\n").expect("entry end") + 3;
    &src[start..end]
}

#[derive(Clone, Copy)]
struct Case {
    m: usize,
    o: usize,
    i: usize,
    r: usize,
    k: usize,
    bias: bool,
    /// words in front of x (a multiple of 4), h, B and y; extra elements between B_k blocks
    x_offset: usize,
    h_offset: usize,
    b_offset: usize,
    b_gap: usize,
    y_offset: usize,
    /// h is normal · h_scale (a power of two: a large one makes the rank term dominate)
    h_scale: f32,
    /// `Some(gap)`: x per particle, x_k `m·i + gap` elements apart (gap a multiple of 8)
    x_gap: Option<usize>,
    /// `Some(v)`: h's first element set so that s·h there is about v
    sh_first: Option<f32>,
}

fn case(m: usize, o: usize, i: usize, r: usize, k: usize) -> Case {
    Case {
        m,
        o,
        i,
        r,
        k,
        bias: false,
        x_offset: 0,
        h_offset: 0,
        b_offset: 0,
        b_gap: 0,
        y_offset: 0,
        h_scale: 1.0,
        x_gap: None,
        sh_first: None,
    }
}

/// [`case`] with x per particle, the x_k `gap` elements apart.
fn per_particle(m: usize, o: usize, i: usize, r: usize, k: usize, gap: usize) -> Case {
    Case {
        x_gap: Some(gap),
        ..case(m, o, i, r, k)
    }
}

/// The kernel's output, the float64 reference and each element's error bound.
struct Outcome {
    got: Vec<f32>,
    want: Vec<f64>,
    bound: Vec<f64>,
}

impl Outcome {
    /// Indices of elements outside their bound (a NaN counts as outside).
    fn bad(&self) -> Vec<usize> {
        (0..self.got.len())
            .filter(|&i| {
                let e = (self.got[i] as f64 - self.want[i]).abs();
                e.is_nan() || e > self.bound[i]
            })
            .collect()
    }

    /// ‖got − want‖₂ / ‖want‖₂.
    fn rel_norm(&self) -> f64 {
        let (mut d, mut w) = (0f64, 0f64);
        for (g, r) in self.got.iter().zip(&self.want) {
            d += (*g as f64 - r).powi(2);
            w += r * r;
        }
        (d / w.max(1e-300)).sqrt()
    }
}

/// Values rounded to `dtype` (their bits and exact values).
fn halves(dtype: DType, v: &[f32]) -> (Vec<u16>, Vec<f64>) {
    let bits: Vec<u16> = v.iter().map(|&x| dtype.round_bits(x)).collect();
    let vals = bits.iter().map(|&b| dtype.widen_bits(b) as f64).collect();
    (bits, vals)
}

/// Packed words of `bits` after `offset` zero words.
fn words(offset: usize, bits: &[u16]) -> Vec<f32> {
    let mut w = vec![0f32; offset];
    w.extend(pack_bits(bits).into_iter().map(f32::from_bits));
    w
}

fn run(dtype: DType, c: &Case, module: Option<&str>) -> Outcome {
    try_run(dtype, c, module).expect("the kernel runs")
}

/// [`run`], with the launch's error (the simulator reports shared-memory races and reads of
/// shared memory no thread wrote) returned instead of a panic.
fn try_run(dtype: DType, c: &Case, module: Option<&str>) -> Result<Outcome> {
    // 2 SMs: a grid of at most 2 CTAs (1 per SM), so multi-tile shapes loop over tiles
    // (tile += nctaid.x) whatever this machine's core count
    let be = PtxBackend::new(SimDriver::with_sm_count(2)).expect("simulator loads kernels/");
    if let Some(text) = module {
        be.driver().load_module("planted", text).expect("loads");
    }
    let mut rng = Rng::new(Rng::fresh_seed());
    let (m, o, i, r, k) = (c.m, c.o, c.i, c.r, c.k);
    let b_ps = o * r + c.b_gap;
    // x: one [m, i] block, or k of them x_ps apart (the gaps hold other values, never read)
    let x_ps = c.x_gap.map(|gap| m * i + gap);
    let x_len = (k - 1) * x_ps.unwrap_or(0) + m * i;
    let (xb, x) = halves(dtype, &rng.normal_vec(x_len));
    let (wb, w) = halves(dtype, &rng.normal_vec(o * i));
    // B: k blocks of o·r elements b_ps apart (the gaps hold other values, never read)
    let (bb, b) = halves(dtype, &rng.normal_vec((k - 1) * b_ps + o * r));
    // h: full f32 mantissas (the split has work to do), scale not a power of two
    let scale = 0.3f32;
    let mut h: Vec<f32> = rng
        .normal_vec(k * m * r)
        .into_iter()
        .map(|v| v * c.h_scale)
        .collect();
    if let Some(v) = c.sh_first {
        h[0] = v / scale;
    }
    let bias: Vec<f32> = rng.normal_vec(o);
    let d = be.driver();
    let mut h_words = vec![0f32; c.h_offset];
    h_words.extend(&h);
    // y: NaN before, inside (written in full) and after the output
    let tail = 5;
    let y0 = vec![f32::NAN; c.y_offset + k * m * o + tail];
    let (xbuf, wbuf, hbuf, bbuf, biasbuf, ybuf) = (
        d.upload(&words(c.x_offset, &xb)).unwrap(),
        d.upload(&words(0, &wb)).unwrap(),
        d.upload(&h_words).unwrap(),
        d.upload(&words(c.b_offset, &bb)).unwrap(),
        d.upload(&bias).unwrap(),
        d.upload(&y0).unwrap(),
    );
    let l = LoraMma {
        dtype,
        m,
        o,
        i,
        r,
        k,
        x: &xbuf,
        x_offset: c.x_offset,
        x_ps,
        w: &wbuf,
        w_offset: 0,
        bias: c.bias.then_some((&biasbuf, 0)),
        h: &hbuf,
        h_offset: c.h_offset,
        b: &bbuf,
        b_offset: c.b_offset,
        b_ps,
        y: &ybuf,
        y_offset: c.y_offset,
        scale,
    };
    match module {
        Some(_) => launch_in(&be, "planted", &l),
        None => lora_forward_mma(&be, &l),
    }?;
    let out = d.download(&ybuf, y0.len()).unwrap();
    let n = k * m * o;
    assert!(
        out[..c.y_offset].iter().all(|v| v.is_nan())
            && out[c.y_offset + n..].iter().all(|v| v.is_nan()),
        "y outside the output was written"
    );
    let eps = f64::powi(2.0, -24);
    // the three-way split v = s·h = hi + mid + lo is exact (each part a 16-bit value
    // exactly; the kernel's header): no relative error on the rank term. Only f16's
    // subnormals (parts below 2^-14 round to the grid 2^-24) cost at most 2^-25 absolute
    // per part, 3·2^-25 per element of v; bf16's (|v| < 2^-110) are far below the 1e-30
    let sub = match dtype {
        DType::BF16 => 0.0,
        _ => 3.0 * f64::powi(2.0, -25),
    };
    let (mut want, mut bound) = (Vec::new(), Vec::new());
    let s = scale as f64;
    for p in 0..k {
        for row in 0..m {
            for col in 0..o {
                let (mut base, mut base_abs) = (0f64, 0f64);
                let x0 = p * x_ps.unwrap_or(0) + row * i;
                for q in 0..i {
                    let v = x[x0 + q] * w[col * i + q];
                    base += v;
                    base_abs += v.abs();
                }
                let (mut rank, mut rank_abs, mut b_abs) = (0f64, 0f64, 0f64);
                for q in 0..r {
                    let bv = b[p * b_ps + col * r + q];
                    let v = h[(p * m + row) * r + q] as f64 * bv;
                    rank += v;
                    rank_abs += v.abs();
                    b_abs += bv.abs();
                }
                let bv = if c.bias { bias[col] as f64 } else { 0.0 };
                want.push(base + bv + s * rank);
                // f32 accumulation: one rounding per mma (i/16 base, 3 per k16 step of r),
                // the bias add and s·h, of partial sums bounded by the sum of magnitudes
                // (a factor 2 of slack); plus f16's subnormal parts on the rank term
                let steps = i as f64 / 16.0 + 3.0 * r.div_ceil(16) as f64 + 5.0;
                let mag = base_abs + bv.abs() + s * rank_abs;
                bound.push(2.0 * eps * steps * mag + 2.0 * sub * b_abs + 1e-30);
            }
        }
    }
    Ok(Outcome {
        got: out[c.y_offset..c.y_offset + n].to_vec(),
        want,
        bound,
    })
}

fn check(dtype: DType, c: &Case) {
    let o = run(dtype, c, None);
    let bad = o.bad();
    let shape = format!(
        "{dtype:?} m {} o {} i {} r {} k {} x gap {:?}",
        c.m, c.o, c.i, c.r, c.k, c.x_gap
    );
    assert!(
        bad.is_empty(),
        "{shape}: {} elements off, first at {} ({} vs {}, bound {})",
        bad.len(),
        bad[0],
        o.got[bad[0]],
        o.want[bad[0]],
        o.bound[bad[0]]
    );
    let rel = o.rel_norm();
    assert!(rel <= 1e-6, "{shape}: relative error {rel}");
}

#[test]
fn minimal_shape() {
    for dtype in TYPES {
        check(dtype, &case(1, 1, 8, 1, 1));
    }
}

#[test]
fn edge_tiles_odd_rank_three_particles_with_bias_and_offsets() {
    for dtype in TYPES {
        check(
            dtype,
            &Case {
                bias: true,
                x_offset: 4,
                h_offset: 3,
                b_offset: 1,
                b_gap: 3,
                y_offset: 3,
                ..case(130, 129, 40, 5, 3)
            },
        );
    }
}

#[test]
fn even_o_stores_pairs_aligned_and_not() {
    // O even: with y 8-byte aligned every lane's column pairs go out as st.global.v2.f32
    // (the last column tile partial: O = 130); with y at an odd word offset, and with O
    // odd, the scalar stores
    for dtype in TYPES {
        for y_offset in [0, 2, 1] {
            check(
                dtype,
                &Case {
                    bias: true,
                    y_offset,
                    ..case(67, 130, 24, 16, 2)
                },
            );
        }
        check(dtype, &case(9, 2, 8, 3, 3));
    }
}

#[test]
fn per_particle_x_minimal_and_one_particle() {
    for dtype in TYPES {
        check(dtype, &per_particle(1, 1, 8, 1, 1, 0));
        check(dtype, &per_particle(3, 5, 16, 2, 1, 8));
    }
}

#[test]
fn per_particle_x_edge_tiles_odd_rank_with_bias_offsets_and_gaps() {
    // 2 x 2 tiles x 3 particles = 12 units over the 2 CTAs (each loops), x_k 8 elements
    // apart beyond their m·i
    for dtype in TYPES {
        check(
            dtype,
            &Case {
                bias: true,
                x_offset: 4,
                h_offset: 3,
                b_offset: 1,
                b_gap: 3,
                y_offset: 3,
                ..per_particle(130, 129, 40, 5, 3, 8)
            },
        );
    }
}

#[test]
fn per_particle_x_two_rank_steps_and_paired_stores() {
    for dtype in TYPES {
        check(dtype, &per_particle(67, 130, 24, 24, 2, 0));
    }
}

#[test]
fn per_particle_x_read_from_x_0_is_caught() {
    // every unit's x rows from x_0 (the particle's x offset dropped): particles 1.. wrong
    caught(
        |e| e.replace("mul.lo.u32 %r0, %part0, %xps;", "mov.u32 %r0, 0;"),
        &per_particle(19, 21, 16, 5, 2, 8),
        "x_0 for every particle",
    );
}

#[test]
fn rank_16_wide_output() {
    for dtype in TYPES {
        check(dtype, &case(19, 257, 24, 16, 2));
    }
}

#[test]
fn rank_24_two_k16_steps_tall_output() {
    for dtype in TYPES {
        check(
            dtype,
            &Case {
                bias: true,
                ..case(257, 17, 64, 24, 1)
            },
        );
    }
}

#[test]
fn rank_dominated_output_at_f32_accuracy() {
    // the rank term ~100x the base: the bound has no split error (the split is exact)
    for dtype in TYPES {
        check(dtype, &rank_heavy());
    }
}

#[test]
fn f16_rank_term_is_exact_up_to_its_range_limit_and_not_finite_past_it() {
    // s·h near 2^15 everywhere: the split's parts are large f16 normals, still exact
    check(
        DType::F16,
        &Case {
            h_scale: 32768.0,
            ..case(24, 16, 16, 3, 2)
        },
    );
    // hi = s·h rounded to 8 bits: 65280 below 65408, 65536 (f16 infinity) from there on
    // (the limit ops::lora_forward documents); bf16 has f32's range
    let at = |v: f32, dtype: DType| {
        let c = Case {
            sh_first: Some(v),
            ..case(8, 16, 16, 3, 2)
        };
        run(dtype, &c, None)
    };
    let below = at(65400.0, DType::F16);
    assert!(
        below.bad().is_empty(),
        "f16, s·h = 65400: {:?}",
        below.bad()
    );
    let past = at(65420.0, DType::F16);
    // h[0] is particle 0, row 0: its o outputs (and only those) lose finiteness
    assert!(
        past.got[..16].iter().all(|v| !v.is_finite()),
        "{:?}",
        &past.got[..16]
    );
    assert!(past.got[16..].iter().all(|v| v.is_finite()));
    let bf16 = at(1e9, DType::BF16);
    assert!(bf16.bad().is_empty(), "bf16, s·h = 1e9: {:?}", bf16.bad());
}

/// The planted text must fail the check, the unaltered text (loaded the same way) pass.
fn caught(planted_entry: impl Fn(&str) -> String, c: &Case, what: &str) {
    let src = text();
    let entry = entry_text(src, "lora_forward_mma_bf16");
    let planted = planted_entry(entry);
    assert_ne!(entry, planted, "{what}: the plant changed nothing");
    let o = run(DType::BF16, c, Some(&src.replace(entry, &planted)));
    assert!(!o.bad().is_empty(), "{what} went unnoticed");
    let o = run(DType::BF16, c, Some(src));
    assert!(o.bad().is_empty());
}

/// [`caught`] for a plant in the staging that the simulator itself must report (a shared
/// memory race or a read of shared memory no thread wrote: `expect` in its error), and the
/// unaltered text pass.
fn reported(planted_entry: impl Fn(&str) -> String, c: &Case, what: &str, expect: &str) {
    let src = text();
    let entry = entry_text(src, "lora_forward_mma_bf16");
    let planted = planted_entry(entry);
    assert_ne!(entry, planted, "{what}: the plant changed nothing");
    match try_run(DType::BF16, c, Some(&src.replace(entry, &planted))) {
        Err(e) => assert!(e.to_string().contains(expect), "{what}: {e}"),
        Ok(_) => panic!("{what} went unreported"),
    }
    let o = run(DType::BF16, c, Some(src));
    assert!(o.bad().is_empty());
}

#[test]
fn a_swapped_b_fragment_in_the_rank_update_is_caught() {
    // the rank mma of m16 tile 0, n8 tile 0 take {b0, b1} as {b1, b0}: ranks 0-7 and 8-15
    // trade places
    caught(
        |e| e.replace("{%fb0, %fb1}, {%u0,", "{%fb1, %fb0}, {%u0,"),
        &case(32, 16, 16, 5, 2),
        "the swap",
    );
}

/// A shape whose rank term dominates (h · 2^8): a split error of 2^-16 |s h| (the old
/// two-way split's) is well above the accumulation bound there.
fn rank_heavy() -> Case {
    Case {
        h_scale: 256.0,
        ..case(32, 16, 16, 5, 2)
    }
}

#[test]
fn the_old_two_way_split_is_caught() {
    // mid := 0, so lo = v - hi (<= 15 significant bits) is rounded to bf16: the two-way
    // split, error up to 2^-16 |s h|
    caught(
        |e| {
            e.replace(
                "sub.rn.f32 %vm0, %vm0, %vq0;",
                "sub.rn.f32 %vm0, %vq0, %vq0;",
            )
            .replace(
                "sub.rn.f32 %vm1, %vm1, %vq1;",
                "sub.rn.f32 %vm1, %vq1, %vq1;",
            )
        },
        &rank_heavy(),
        "the two-way split",
    );
}

#[test]
fn a_dropped_lo_term_is_caught() {
    // lo := 0: s·h carried as hi + mid only (16 significant bits)
    caught(
        |e| {
            e.replace(
                "sub.rn.f32 %hv0, %hv0, %vm0;",
                "sub.rn.f32 %hv0, %hv0, %hv0;",
            )
            .replace(
                "sub.rn.f32 %hv1, %hv1, %vm1;",
                "sub.rn.f32 %hv1, %hv1, %hv1;",
            )
        },
        &rank_heavy(),
        "the dropped lo",
    );
}

#[test]
fn a_dropped_mid_mma_is_caught() {
    // the mid mma of m16 tile 0, n8 tile 0 is gone: u loses mid B_0 (about 2^-8 |s h B|)
    caught(
        |e| {
            e.replace(
                "\tmma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%u0, %u1, %u2, %u3}, \
                 {%am0, %am1, %am2, %am3}, {%fb0, %fb1}, {%u0, %u1, %u2, %u3};\n",
                "",
            )
        },
        &case(32, 16, 16, 5, 2),
        "the dropped mid mma",
    );
}

#[test]
fn an_unswizzled_staging_store_is_caught() {
    // the staging stores without the half swap of rows with (row >> 2) & 1 set, the
    // ldmatrix reads with it: those rows read ranks 8-15 as 0-7 and the other way round
    caught(
        |e| {
            e.replacen(
                "xor.b32 %r2, %r2, %r3;\n\tshl.b32 %r2, %r2, 4;\n\tand.b32 %r4, %r1, 3;",
                "shl.b32 %r2, %r2, 4;\n\tand.b32 %r4, %r1, 3;",
                1,
            )
        },
        &case(32, 16, 16, 5, 2),
        "the unswizzled staging store",
    );
}

#[test]
fn a_staged_tile_at_the_wrong_offset_is_caught() {
    // the B tile's row j = 1 (tile columns srow + 32) stored over row j = 0's place: columns
    // 0-31 of the tile read the B_k rows of columns 32-63, and those read shared memory no
    // thread wrote (the first tile's buffer 1), which the simulator reports
    reported(
        |e| e.replace("[%r2+13312], %fb0;", "[%r2+12288], %fb0;"),
        &case(19, 70, 16, 16, 2),
        "the misplaced B row",
        "uninitialised shared memory",
    );
}

#[test]
fn a_missing_staging_barrier_is_caught() {
    // no barrier between the staging stores and the ldmatrix reads of a step: the
    // simulator reports the race
    reported(
        |e| {
            e.replace(
                "\tbar.sync 0;\n\t// ==== compute the step",
                "\t// ==== compute the step",
            )
        },
        &case(130, 129, 40, 24, 3),
        "the missing staging barrier",
        "shared memory race",
    );
}

#[test]
fn a_single_staging_buffer_is_caught() {
    // every step into buffer 0: step s + 1's stores race with other warps' reads of step s
    // (one barrier per step is enough only with two buffers); the simulator reports it
    reported(
        |e| {
            e.replace(
                "\txor.b32 %sbuf, %sbuf, 16384;",
                "\tadd.u32 %sbuf, %sbuf, 0;",
            )
        },
        &case(130, 129, 40, 24, 3),
        "the single staging buffer",
        "shared memory race",
    );
}

#[test]
fn the_f16_entry_is_the_bf16_entry_with_its_type_replaced() {
    let src = text();
    let bf = entry_text(src, "lora_forward_mma_bf16");
    assert_eq!(
        bf.replace("bf16", "f16"),
        entry_text(src, "lora_forward_mma_f16")
    );
}

#[test]
fn preconditions_are_refused() {
    let be = PtxBackend::new(SimDriver::new()).unwrap();
    let buf = be.driver().alloc_zeroed(4096).unwrap();
    let l = |dtype: DType, i: usize, x_offset: usize| LoraMma {
        dtype,
        m: 4,
        o: 4,
        i,
        r: 2,
        k: 2,
        x: &buf,
        x_offset,
        x_ps: None,
        w: &buf,
        w_offset: 0,
        bias: None,
        h: &buf,
        h_offset: 0,
        b: &buf,
        b_offset: 0,
        b_ps: 8,
        y: &buf,
        y_offset: 0,
        scale: 1.0,
    };
    for i in [4, 12] {
        let e = lora_forward_mma(&be, &l(DType::F16, i, 0))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("lora_forward_mma_f16") && e.contains("multiple of 8"),
            "{e}"
        );
    }
    let e = lora_forward_mma(&be, &l(DType::BF16, 16, 2))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("lora_forward_mma_bf16") && e.contains("multiples of 4"),
        "{e}"
    );
    let e = lora_forward_mma(&be, &l(DType::F32, 16, 0))
        .unwrap_err()
        .to_string();
    assert!(e.contains("bf16 or f16"), "{e}");
    let e = lora_forward_mma(
        &be,
        &LoraMma {
            m: 1024,
            ..l(DType::BF16, 16, 0)
        },
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("x needs"), "{e}");
    let e = lora_forward_mma(
        &be,
        &LoraMma {
            r: 0,
            ..l(DType::BF16, 16, 0)
        },
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("empty shape"), "{e}");
    // per-particle x: the stride must keep rows 16-byte aligned, the K blocks fit the buffer
    let e = lora_forward_mma(
        &be,
        &LoraMma {
            x_ps: Some(68),
            ..l(DType::BF16, 16, 0)
        },
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("x_ps = 68") && e.contains("multiple of 8"),
        "{e}"
    );
    let e = lora_forward_mma(
        &be,
        &LoraMma {
            x_ps: Some(8192),
            ..l(DType::BF16, 16, 0)
        },
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("x needs"), "{e}");
}

/// The registers and shared memory the grid is sized from are ptxas' (when installed).
#[test]
fn resources_match_ptxas() {
    // 216 registers: 1 CTA of 256 threads per SM
    assert_eq!(blocks_per_sm(), 1);
    let mut ptxas = crate::profile::ptxas::Ptxas::new();
    if !ptxas.available() {
        println!("notice: ptxas not found; skipping");
        return;
    }
    for dtype in TYPES {
        let mut regs = 0;
        for arch in ["sm_80", "sm_90"] {
            let info = ptxas
                .info(LORA, kernel(dtype).unwrap(), arch)
                .expect("ptxas assembles lora.ptx");
            regs = regs.max(info.registers);
            assert_eq!(info.smem, SMEM, "{dtype:?} {arch} shared memory");
        }
        assert_eq!(regs, REGS, "{dtype:?} registers (max of sm_80, sm_90)");
    }
}
