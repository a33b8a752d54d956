//! The PTX simulator's tensor-core instructions against the PTX ISA: the fragment layouts of
//! `mma.m16n8k16` (A row, B col, C/D) and of `ldmatrix .m8n8` (`.x1/.x2/.x4`, with and
//! without `.trans`) are checked element by element against tables copied from the ISA's
//! figures (not from the simulator's formulas); a 16×16 · 16×8 product through `cp.async`,
//! `ldmatrix` and `mma` (bf16 and f16) matches an f64 reference of the rounded inputs, and
//! the same kernel with two A registers swapped must not; misuse is reported; the profile
//! counts of the product are exact; every kernel here assembles with ptxas for sm_80/sm_90.
#![cfg(feature = "ptx-sim")]

use bella::backend::ptx::driver::{Driver, LaunchConfig, Param};
use bella::backend::ptx_sim::profile::Class;
use bella::backend::ptx_sim::{Counters, SimBuf, SimDriver};
use half::{bf16, f16};
use std::collections::HashMap;

// ---- the ISA's figures: which lane holds each element, and as which element

/// Figure "MMA .m16n8k16 fragment layout for matrix A with .f16/.bf16 type": cell (row, col)
/// names the lane and the element `ai` it holds.
#[rustfmt::skip]
const A_FIGURE: [&str; 16] = [
    "T0:a0  T0:a1  T1:a0  T1:a1  T2:a0  T2:a1  T3:a0  T3:a1  T0:a4  T0:a5  T1:a4  T1:a5  T2:a4  T2:a5  T3:a4  T3:a5",
    "T4:a0  T4:a1  T5:a0  T5:a1  T6:a0  T6:a1  T7:a0  T7:a1  T4:a4  T4:a5  T5:a4  T5:a5  T6:a4  T6:a5  T7:a4  T7:a5",
    "T8:a0  T8:a1  T9:a0  T9:a1  T10:a0 T10:a1 T11:a0 T11:a1 T8:a4  T8:a5  T9:a4  T9:a5  T10:a4 T10:a5 T11:a4 T11:a5",
    "T12:a0 T12:a1 T13:a0 T13:a1 T14:a0 T14:a1 T15:a0 T15:a1 T12:a4 T12:a5 T13:a4 T13:a5 T14:a4 T14:a5 T15:a4 T15:a5",
    "T16:a0 T16:a1 T17:a0 T17:a1 T18:a0 T18:a1 T19:a0 T19:a1 T16:a4 T16:a5 T17:a4 T17:a5 T18:a4 T18:a5 T19:a4 T19:a5",
    "T20:a0 T20:a1 T21:a0 T21:a1 T22:a0 T22:a1 T23:a0 T23:a1 T20:a4 T20:a5 T21:a4 T21:a5 T22:a4 T22:a5 T23:a4 T23:a5",
    "T24:a0 T24:a1 T25:a0 T25:a1 T26:a0 T26:a1 T27:a0 T27:a1 T24:a4 T24:a5 T25:a4 T25:a5 T26:a4 T26:a5 T27:a4 T27:a5",
    "T28:a0 T28:a1 T29:a0 T29:a1 T30:a0 T30:a1 T31:a0 T31:a1 T28:a4 T28:a5 T29:a4 T29:a5 T30:a4 T30:a5 T31:a4 T31:a5",
    "T0:a2  T0:a3  T1:a2  T1:a3  T2:a2  T2:a3  T3:a2  T3:a3  T0:a6  T0:a7  T1:a6  T1:a7  T2:a6  T2:a7  T3:a6  T3:a7",
    "T4:a2  T4:a3  T5:a2  T5:a3  T6:a2  T6:a3  T7:a2  T7:a3  T4:a6  T4:a7  T5:a6  T5:a7  T6:a6  T6:a7  T7:a6  T7:a7",
    "T8:a2  T8:a3  T9:a2  T9:a3  T10:a2 T10:a3 T11:a2 T11:a3 T8:a6  T8:a7  T9:a6  T9:a7  T10:a6 T10:a7 T11:a6 T11:a7",
    "T12:a2 T12:a3 T13:a2 T13:a3 T14:a2 T14:a3 T15:a2 T15:a3 T12:a6 T12:a7 T13:a6 T13:a7 T14:a6 T14:a7 T15:a6 T15:a7",
    "T16:a2 T16:a3 T17:a2 T17:a3 T18:a2 T18:a3 T19:a2 T19:a3 T16:a6 T16:a7 T17:a6 T17:a7 T18:a6 T18:a7 T19:a6 T19:a7",
    "T20:a2 T20:a3 T21:a2 T21:a3 T22:a2 T22:a3 T23:a2 T23:a3 T20:a6 T20:a7 T21:a6 T21:a7 T22:a6 T22:a7 T23:a6 T23:a7",
    "T24:a2 T24:a3 T25:a2 T25:a3 T26:a2 T26:a3 T27:a2 T27:a3 T24:a6 T24:a7 T25:a6 T25:a7 T26:a6 T26:a7 T27:a6 T27:a7",
    "T28:a2 T28:a3 T29:a2 T29:a3 T30:a2 T30:a3 T31:a2 T31:a3 T28:a6 T28:a7 T29:a6 T29:a7 T30:a6 T30:a7 T31:a6 T31:a7",
];

/// Figure "... for matrix B with .f16/.bf16 type": rows are k, columns n.
#[rustfmt::skip]
const B_FIGURE: [&str; 16] = [
    "T0:b0  T4:b0  T8:b0  T12:b0 T16:b0 T20:b0 T24:b0 T28:b0",
    "T0:b1  T4:b1  T8:b1  T12:b1 T16:b1 T20:b1 T24:b1 T28:b1",
    "T1:b0  T5:b0  T9:b0  T13:b0 T17:b0 T21:b0 T25:b0 T29:b0",
    "T1:b1  T5:b1  T9:b1  T13:b1 T17:b1 T21:b1 T25:b1 T29:b1",
    "T2:b0  T6:b0  T10:b0 T14:b0 T18:b0 T22:b0 T26:b0 T30:b0",
    "T2:b1  T6:b1  T10:b1 T14:b1 T18:b1 T22:b1 T26:b1 T30:b1",
    "T3:b0  T7:b0  T11:b0 T15:b0 T19:b0 T23:b0 T27:b0 T31:b0",
    "T3:b1  T7:b1  T11:b1 T15:b1 T19:b1 T23:b1 T27:b1 T31:b1",
    "T0:b2  T4:b2  T8:b2  T12:b2 T16:b2 T20:b2 T24:b2 T28:b2",
    "T0:b3  T4:b3  T8:b3  T12:b3 T16:b3 T20:b3 T24:b3 T28:b3",
    "T1:b2  T5:b2  T9:b2  T13:b2 T17:b2 T21:b2 T25:b2 T29:b2",
    "T1:b3  T5:b3  T9:b3  T13:b3 T17:b3 T21:b3 T25:b3 T29:b3",
    "T2:b2  T6:b2  T10:b2 T14:b2 T18:b2 T22:b2 T26:b2 T30:b2",
    "T2:b3  T6:b3  T10:b3 T14:b3 T18:b3 T22:b3 T26:b3 T30:b3",
    "T3:b2  T7:b2  T11:b2 T15:b2 T19:b2 T23:b2 T27:b2 T31:b2",
    "T3:b3  T7:b3  T11:b3 T15:b3 T19:b3 T23:b3 T27:b3 T31:b3",
];

/// Figure "... for accumulator matrix C/D" (the f32 accumulators).
#[rustfmt::skip]
const C_FIGURE: [&str; 16] = [
    "T0:c0  T0:c1  T1:c0  T1:c1  T2:c0  T2:c1  T3:c0  T3:c1",
    "T4:c0  T4:c1  T5:c0  T5:c1  T6:c0  T6:c1  T7:c0  T7:c1",
    "T8:c0  T8:c1  T9:c0  T9:c1  T10:c0 T10:c1 T11:c0 T11:c1",
    "T12:c0 T12:c1 T13:c0 T13:c1 T14:c0 T14:c1 T15:c0 T15:c1",
    "T16:c0 T16:c1 T17:c0 T17:c1 T18:c0 T18:c1 T19:c0 T19:c1",
    "T20:c0 T20:c1 T21:c0 T21:c1 T22:c0 T22:c1 T23:c0 T23:c1",
    "T24:c0 T24:c1 T25:c0 T25:c1 T26:c0 T26:c1 T27:c0 T27:c1",
    "T28:c0 T28:c1 T29:c0 T29:c1 T30:c0 T30:c1 T31:c0 T31:c1",
    "T0:c2  T0:c3  T1:c2  T1:c3  T2:c2  T2:c3  T3:c2  T3:c3",
    "T4:c2  T4:c3  T5:c2  T5:c3  T6:c2  T6:c3  T7:c2  T7:c3",
    "T8:c2  T8:c3  T9:c2  T9:c3  T10:c2 T10:c3 T11:c2 T11:c3",
    "T12:c2 T12:c3 T13:c2 T13:c3 T14:c2 T14:c3 T15:c2 T15:c3",
    "T16:c2 T16:c3 T17:c2 T17:c3 T18:c2 T18:c3 T19:c2 T19:c3",
    "T20:c2 T20:c3 T21:c2 T21:c3 T22:c2 T22:c3 T23:c2 T23:c3",
    "T24:c2 T24:c3 T25:c2 T25:c3 T26:c2 T26:c3 T27:c2 T27:c3",
    "T28:c2 T28:c3 T29:c2 T29:c3 T30:c2 T30:c3 T31:c2 T31:c3",
];

/// Figure "ldmatrix fragment layout for one 8x8 matrix with 16-bit elements": cell (row,
/// col) of the matrix (rows as addressed) names the lane and the half of its register.
#[rustfmt::skip]
const LDMATRIX_FIGURE: [&str; 8] = [
    "T0:lo  T0:hi  T1:lo  T1:hi  T2:lo  T2:hi  T3:lo  T3:hi",
    "T4:lo  T4:hi  T5:lo  T5:hi  T6:lo  T6:hi  T7:lo  T7:hi",
    "T8:lo  T8:hi  T9:lo  T9:hi  T10:lo T10:hi T11:lo T11:hi",
    "T12:lo T12:hi T13:lo T13:hi T14:lo T14:hi T15:lo T15:hi",
    "T16:lo T16:hi T17:lo T17:hi T18:lo T18:hi T19:lo T19:hi",
    "T20:lo T20:hi T21:lo T21:hi T22:lo T22:hi T23:lo T23:hi",
    "T24:lo T24:hi T25:lo T25:hi T26:lo T26:hi T27:lo T27:hi",
    "T28:lo T28:hi T29:lo T29:hi T30:lo T30:hi T31:lo T31:hi",
];

/// The same with `.trans` (the stored matrix read column-major: the figure transposed).
#[rustfmt::skip]
const LDMATRIX_TRANS_FIGURE: [&str; 8] = [
    "T0:lo  T4:lo  T8:lo  T12:lo T16:lo T20:lo T24:lo T28:lo",
    "T0:hi  T4:hi  T8:hi  T12:hi T16:hi T20:hi T24:hi T28:hi",
    "T1:lo  T5:lo  T9:lo  T13:lo T17:lo T21:lo T25:lo T29:lo",
    "T1:hi  T5:hi  T9:hi  T13:hi T17:hi T21:hi T25:hi T29:hi",
    "T2:lo  T6:lo  T10:lo T14:lo T18:lo T22:lo T26:lo T30:lo",
    "T2:hi  T6:hi  T10:hi T14:hi T18:hi T22:hi T26:hi T30:hi",
    "T3:lo  T7:lo  T11:lo T15:lo T19:lo T23:lo T27:lo T31:lo",
    "T3:hi  T7:hi  T11:hi T15:hi T19:hi T23:hi T27:hi T31:hi",
];

/// `(lane, element) -> (row, col)` of a figure. Elements are `x<i>`, or `lo`/`hi` (0/1).
fn figure(rows: &[&str]) -> HashMap<(usize, usize), (usize, usize)> {
    let mut out = HashMap::new();
    for (r, line) in rows.iter().enumerate() {
        for (c, cell) in line.split_whitespace().enumerate() {
            let (lane, elem) = cell[1..].split_once(':').expect("T<lane>:<element>");
            let elem = match elem {
                "lo" => 0,
                "hi" => 1,
                e => e[1..].parse().expect("element index"),
            };
            let lane = lane.parse().expect("lane");
            assert!(out.insert((lane, elem), (r, c)).is_none(), "{cell} twice");
        }
    }
    out
}

// ---- running kernels

const HEADER: &str = ".version 7.8\n.target sm_80\n.address_size 64\n";

/// Run entry `kernel` of `src` (with `HEADER`) on one CTA of `block` threads with
/// `(out, inputs...)` as parameters; the first `out_words` words of `out`.
fn run(
    src: &str,
    kernel: &str,
    block: u32,
    inputs: &[&[u32]],
    out_words: usize,
) -> Result<Vec<u32>, String> {
    Ok(run_counted(src, kernel, block, inputs, out_words, false)?.0)
}

fn run_counted(
    src: &str,
    kernel: &str,
    block: u32,
    inputs: &[&[u32]],
    out_words: usize,
    counting: bool,
) -> Result<(Vec<u32>, Option<Counters>), String> {
    let d = SimDriver::new();
    d.load_module("m", &format!("{HEADER}{src}"))
        .map_err(|e| e.to_string())?;
    let prof = d.profiler();
    prof.set_enabled(counting);
    let out = d.alloc_zeroed(out_words).map_err(|e| e.to_string())?;
    let ins: Vec<SimBuf> = inputs
        .iter()
        .map(|w| d.upload(&w.iter().map(|&b| f32::from_bits(b)).collect::<Vec<_>>()))
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    let mut params = vec![ptr(&out)];
    params.extend(ins.iter().map(ptr));
    let cfg = LaunchConfig {
        grid: [1, 1, 1],
        block: [block, 1, 1],
        shared_bytes: 0,
    };
    d.launch("m", kernel, cfg, &params)
        .map_err(|e| e.to_string())?;
    let words = d.download(&out, out_words).map_err(|e| e.to_string())?;
    let counters = prof.take().pop().map(|p| p.counters);
    Ok((words.iter().map(|x| x.to_bits()).collect(), counters))
}

fn ptr(buf: &SimBuf) -> Param<'_, SimBuf> {
    Param::Ptr {
        buf,
        byte_offset: 0,
    }
}

/// The 1-based line of the only line of `src` (after `HEADER`) containing `needle`.
fn line_of(src: &str, needle: &str) -> usize {
    let full = format!("{HEADER}{src}");
    let hits: Vec<usize> = (full.lines().enumerate())
        .filter(|(_, l)| l.contains(needle))
        .map(|(i, _)| i + 1)
        .collect();
    assert_eq!(hits.len(), 1, "`{needle}` must be on one line");
    hits[0]
}

fn assert_mentions(err: &str, parts: &[&str]) {
    for p in parts {
        assert!(err.contains(p), "error lacks `{p}`:\n{err}");
    }
}

/// The 16-bit input formats of `mma`.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Bf16,
    F16,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Bf16 => "bf16",
            Kind::F16 => "f16",
        }
    }
    fn bits(self, x: f32) -> u16 {
        match self {
            Kind::Bf16 => bf16::from_f32(x).to_bits(),
            Kind::F16 => f16::from_f32(x).to_bits(),
        }
    }
    fn value(self, b: u16) -> f32 {
        match self {
            Kind::Bf16 => bf16::from_bits(b).to_f32(),
            Kind::F16 => f16::from_bits(b).to_f32(),
        }
    }
}

/// Two 16-bit elements per register, the lower-numbered in the low half ("Elements (low to
/// high)" in the ISA's fragment tables).
fn pack(elems: &[u16]) -> Vec<u32> {
    elems
        .chunks(2)
        .map(|p| p[0] as u32 | (p[1] as u32) << 16)
        .collect()
}

/// A small deterministic generator of values in [-1, 1).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

// ---- mma fragments, one lane's registers at a time

/// Each lane loads A (4 regs), B (2) and C (4) from `in[lane*12..]`, runs one mma, and
/// stores D to `out[lane*4..]`.
fn mma_regs_kernel(kind: Kind) -> String {
    let t = kind.name();
    format!(
        r#"
.visible .entry mma_regs(.param .u64 p_out, .param .u64 p_in)
{{
    .reg .b32 %r<8>;
    .reg .f32 %f<8>;
    .reg .b64 %rd<4>;
    ld.param.u64 %rd0, [p_out];
    cvta.to.global.u64 %rd0, %rd0;
    ld.param.u64 %rd1, [p_in];
    cvta.to.global.u64 %rd1, %rd1;
    mov.u32 %r0, %tid.x;
    mul.wide.u32 %rd2, %r0, 48;
    add.u64 %rd2, %rd1, %rd2;
    ld.global.v4.b32 {{%r1, %r2, %r3, %r4}}, [%rd2];
    ld.global.v2.b32 {{%r5, %r6}}, [%rd2+16];
    ld.global.v4.f32 {{%f0, %f1, %f2, %f3}}, [%rd2+32];
    mma.sync.aligned.m16n8k16.row.col.f32.{t}.{t}.f32 {{%f4, %f5, %f6, %f7}}, {{%r1, %r2, %r3, %r4}}, {{%r5, %r6}}, {{%f0, %f1, %f2, %f3}};
    mul.wide.u32 %rd3, %r0, 16;
    add.u64 %rd3, %rd0, %rd3;
    st.global.v4.f32 [%rd3], {{%f4, %f5, %f6, %f7}};
    ret;
}}
"#
    )
}

type Mat16x16 = [[f32; 16]; 16];
type Mat16x8 = [[f32; 8]; 16];

/// `A·B + C` by the simulator, the fragments placed and read back by the ISA's figures.
fn mma_by_figures(kind: Kind, a: &Mat16x16, b: &Mat16x8, c: &Mat16x8) -> Mat16x8 {
    let (fa, fb, fc) = (figure(&A_FIGURE), figure(&B_FIGURE), figure(&C_FIGURE));
    let mut input = Vec::new();
    for lane in 0..32 {
        let av: Vec<u16> = (0..8)
            .map(|i| {
                let (r, k) = fa[&(lane, i)];
                kind.bits(a[r][k])
            })
            .collect();
        let bv: Vec<u16> = (0..4)
            .map(|i| {
                let (k, n) = fb[&(lane, i)];
                kind.bits(b[k][n])
            })
            .collect();
        input.extend(pack(&av));
        input.extend(pack(&bv));
        input.extend([0, 0]);
        input.extend((0..4).map(|i| {
            let (r, n) = fc[&(lane, i)];
            c[r][n].to_bits()
        }));
    }
    let out = run(&mma_regs_kernel(kind), "mma_regs", 32, &[&input], 128).expect("mma runs");
    let mut d = [[f32::NAN; 8]; 16];
    for lane in 0..32 {
        for i in 0..4 {
            let (r, n) = fc[&(lane, i)];
            d[r][n] = f32::from_bits(out[lane * 4 + i]);
        }
    }
    d
}

const KINDS: [Kind; 2] = [Kind::Bf16, Kind::F16];

#[test]
fn mma_a_fragment_follows_the_isa_figure() {
    // distinct integers, exact in both formats; B selects columns 0-7, then 8-15, of A
    let mut a = [[0f32; 16]; 16];
    for (r, row) in a.iter_mut().enumerate() {
        for (k, x) in row.iter_mut().enumerate() {
            *x = (r * 16 + k + 1) as f32;
        }
    }
    for kind in KINDS {
        for half in 0..2 {
            let mut b = [[0f32; 8]; 16];
            for (n, k) in (0..8).map(|n| (n, n + 8 * half)) {
                b[k][n] = 1.0;
            }
            let d = mma_by_figures(kind, &a, &b, &[[0.0; 8]; 16]);
            for r in 0..16 {
                for n in 0..8 {
                    assert_eq!(
                        d[r][n],
                        a[r][n + 8 * half],
                        "{kind:?} A[{r}][{}]",
                        n + 8 * half
                    );
                }
            }
        }
    }
}

#[test]
fn mma_b_and_c_fragments_follow_the_isa_figures() {
    // A = I: D = B + C, every element of B and C distinct
    let mut a = [[0f32; 16]; 16];
    for (i, row) in a.iter_mut().enumerate() {
        row[i] = 1.0;
    }
    let mut b = [[0f32; 8]; 16];
    let mut c = [[0f32; 8]; 16];
    for k in 0..16 {
        for n in 0..8 {
            b[k][n] = (k * 8 + n + 1) as f32;
            c[k][n] = 1024.0 * (k * 8 + n + 1) as f32;
        }
    }
    for kind in KINDS {
        let d = mma_by_figures(kind, &a, &b, &c);
        for m in 0..16 {
            for n in 0..8 {
                assert_eq!(d[m][n], b[m][n] + c[m][n], "{kind:?} D[{m}][{n}]");
            }
        }
        // and C alone reaches D unchanged
        let d = mma_by_figures(kind, &[[0.0; 16]; 16], &b, &c);
        assert_eq!(d, c, "{kind:?}");
    }
}

#[test]
fn mma_computes_exact_products_summed_in_f64_and_rounded_once() {
    let mut g = Lcg(7);
    for kind in KINDS {
        let mut a = [[0f32; 16]; 16];
        let mut b = [[0f32; 8]; 16];
        let mut c = [[0f32; 8]; 16];
        for x in a.iter_mut().flatten() {
            *x = kind.value(kind.bits(g.next() * 4.0));
        }
        for x in b.iter_mut().flatten() {
            *x = kind.value(kind.bits(g.next()));
        }
        for x in c.iter_mut().flatten() {
            *x = g.next() * 8.0;
        }
        let d = mma_by_figures(kind, &a, &b, &c);
        for m in 0..16 {
            for n in 0..8 {
                // the simulator's model: exact products, c + p0 + ... + p15 in f64, one
                // rounding to f32
                let mut sum = c[m][n] as f64;
                for k in 0..16 {
                    sum += a[m][k] as f64 * b[k][n] as f64;
                }
                assert_eq!(d[m][n], sum as f32, "{kind:?} D[{m}][{n}]");
            }
        }
    }
}

#[test]
fn mma_needs_every_lane_of_a_full_warp() {
    let src = mma_regs_kernel(Kind::Bf16);
    let input = vec![0u32; 12 * 32];
    // a 16-thread CTA: half a warp
    let e = run(&src, "mma_regs", 16, &[&input], 128).unwrap_err();
    assert_mentions(&e, &["mma.sync.aligned", "full warp", "16 threads"]);
    // lane 5 exits before the mma
    let early = src.replace(
        "    mul.wide.u32 %rd2, %r0, 48;",
        "    .reg .pred %p0;\n    setp.eq.u32 %p0, %r0, 5;\n    @%p0 ret;\n    mul.wide.u32 %rd2, %r0, 48;",
    );
    let e = run(&early, "mma_regs", 32, &[&input], 128).unwrap_err();
    let line = line_of(&early, "mma.sync");
    assert_mentions(&e, &[&format!("line {line}"), "lane 5", "has exited"]);
}

#[test]
fn forms_the_simulator_does_not_run_are_errors_naming_the_line() {
    let src = mma_regs_kernel(Kind::Bf16);
    let mma = "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32";
    for (form, why) in [
        (
            "mma.sync.aligned.m16n8k8.row.col.f32.bf16.bf16.f32",
            "m16n8k8.row.col.f32.bf16.bf16.f32 is not supported",
        ),
        (
            "mma.sync.aligned.m16n8k16.row.col.f32.f16.bf16.f32",
            "is not supported",
        ),
        (
            "mma.sync.m16n8k16.row.col.f32.bf16.bf16.f32",
            "needs .aligned",
        ),
    ] {
        let bad = src.replace(mma, form);
        let e = run(&bad, "mma_regs", 32, &[&[0; 384]], 128).unwrap_err();
        assert_mentions(&e, &[&format!("line {}", line_of(&bad, form)), why]);
    }
    let src = ldmatrix_kernel(1, false);
    let ldm = "ldmatrix.sync.aligned.m8n8.x1.shared.b16";
    for (form, why) in [
        (
            "ldmatrix.sync.aligned.m16n16.x1.trans.shared.b8",
            "needs .m8n8",
        ),
        (
            "ldmatrix.sync.aligned.m8n8.x2.shared.b16",
            "vector of 2 registers",
        ),
    ] {
        let bad = src.replace(ldm, form);
        let e = run(&bad, "ldm", 32, &[&ldmatrix_input(1)], 128).unwrap_err();
        assert_mentions(&e, &[&format!("line {}", line_of(&bad, form)), why]);
    }
}

// ---- ldmatrix

/// Each thread copies 64 bytes of `in` into `sm` (2 KiB), then after a barrier every lane
/// loads its row address offset from `in[512 + lane]` and runs one ldmatrix, storing its
/// registers to `out[lane*4..]`.
fn ldmatrix_kernel(num: usize, trans: bool) -> String {
    let regs: Vec<String> = (0..num).map(|j| format!("%r{}", 8 + j)).collect();
    let stores: String = (0..num)
        .map(|j| format!("    st.global.b32 [%rd4+{}], %r{};\n", 4 * j, 8 + j))
        .collect();
    let trans = if trans { ".trans" } else { "" };
    format!(
        r#"
.visible .entry ldm(.param .u64 p_out, .param .u64 p_in)
{{
    .reg .b32 %r<12>;
    .reg .b64 %rd<5>;
    .shared .align 16 .b8 sm[2048];
    ld.param.u64 %rd0, [p_out];
    cvta.to.global.u64 %rd0, %rd0;
    ld.param.u64 %rd1, [p_in];
    cvta.to.global.u64 %rd1, %rd1;
    mov.u32 %r0, %tid.x;
    mul.wide.u32 %rd2, %r0, 64;
    add.u64 %rd2, %rd1, %rd2;
    mov.u32 %r1, sm;
    shl.b32 %r2, %r0, 6;
    add.u32 %r1, %r1, %r2;
    ld.global.v4.b32 {{%r4, %r5, %r6, %r7}}, [%rd2];
    st.shared.v4.b32 [%r1], {{%r4, %r5, %r6, %r7}};
    ld.global.v4.b32 {{%r4, %r5, %r6, %r7}}, [%rd2+16];
    st.shared.v4.b32 [%r1+16], {{%r4, %r5, %r6, %r7}};
    ld.global.v4.b32 {{%r4, %r5, %r6, %r7}}, [%rd2+32];
    st.shared.v4.b32 [%r1+32], {{%r4, %r5, %r6, %r7}};
    ld.global.v4.b32 {{%r4, %r5, %r6, %r7}}, [%rd2+48];
    st.shared.v4.b32 [%r1+48], {{%r4, %r5, %r6, %r7}};
    bar.sync 0;
    mul.wide.u32 %rd3, %r0, 4;
    add.u64 %rd3, %rd1, %rd3;
    ld.global.u32 %r3, [%rd3+2048];
    mov.u32 %r2, sm;
    add.u32 %r3, %r2, %r3;
    ldmatrix.sync.aligned.m8n8.x{num}{trans}.shared.b16 {{{regs}}}, [%r3];
    mul.wide.u32 %rd4, %r0, 16;
    add.u64 %rd4, %rd0, %rd4;
{stores}    ret;
}}
"#,
        regs = regs.join(", ")
    )
}

/// The 16-byte slot of shared memory holding row `r` of matrix `j` (scattered, so that
/// only the lanes' addresses can find the rows).
fn row_slot(j: usize, r: usize) -> usize {
    (7 * (8 * j + r) + 3) % 128
}

/// The element (row `r`, column `c`) of matrix `j`.
fn element(j: usize, r: usize, c: usize) -> u16 {
    (0x4000 + 0x100 * j + 8 * r + c) as u16
}

/// Shared memory (1024 halves), then each lane's row offset: lanes past `8·num` get a
/// misaligned, out-of-bounds offset the instruction must not use.
fn ldmatrix_input(num: usize) -> Vec<u32> {
    let mut halves = vec![0xEEEEu16; 1024];
    for j in 0..4 {
        for r in 0..8 {
            for c in 0..8 {
                halves[row_slot(j, r) * 8 + c] = element(j, r, c);
            }
        }
    }
    let mut input = pack(&halves);
    input.extend((0..32).map(|lane| {
        if lane < 8 * num {
            (row_slot(lane / 8, lane % 8) * 16) as u32
        } else {
            0x7_FFF1
        }
    }));
    input
}

#[test]
fn ldmatrix_fragments_follow_the_isa_figure() {
    for trans in [false, true] {
        let fig = figure(if trans {
            &LDMATRIX_TRANS_FIGURE
        } else {
            &LDMATRIX_FIGURE
        });
        for num in [1, 2, 4] {
            let out = run(
                &ldmatrix_kernel(num, trans),
                "ldm",
                32,
                &[&ldmatrix_input(num)],
                128,
            )
            .expect("ldmatrix runs");
            for lane in 0..32 {
                for j in 0..num {
                    for half in 0..2 {
                        let (r, c) = fig[&(lane, half)];
                        let got = (out[lane * 4 + j] >> (16 * half)) as u16;
                        assert_eq!(
                            got,
                            element(j, r, c),
                            "x{num} trans={trans}: lane {lane} register {j} half {half}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn ldmatrix_checks_alignment_bounds_initialisation_and_races() {
    let src = ldmatrix_kernel(4, false);
    let line = line_of(&src, "ldmatrix");
    let mut input = ldmatrix_input(4);
    input[512 + 3] += 2;
    let e = run(&src, "ldm", 32, &[&input], 128).unwrap_err();
    assert_mentions(
        &e,
        &[
            &format!("line {line}"),
            "ldmatrix row",
            "misaligned",
            "(3,0,0)",
        ],
    );
    let mut input = ldmatrix_input(4);
    input[512 + 9] = 2048;
    let e = run(&src, "ldm", 32, &[&input], 128).unwrap_err();
    assert_mentions(&e, &[&format!("line {line}"), "out-of-bounds shared read"]);
    // without the barrier, lanes read rows other threads wrote
    let racy = src.replace("    bar.sync 0;\n", "");
    let e = run(&racy, "ldm", 32, &[&ldmatrix_input(4)], 128).unwrap_err();
    assert_mentions(&e, &["race", "read after a write by thread"]);
    // rows nobody wrote
    let unwritten = src.replace("    st.shared.v4.b32 [%r1+48], {%r4, %r5, %r6, %r7};\n", "");
    let e = run(&unwritten, "ldm", 32, &[&ldmatrix_input(4)], 128).unwrap_err();
    assert_mentions(&e, &["uninitialised shared memory"]);
}

// ---- a 16×16 · 16×8 product: cp.async, ldmatrix, mma

/// `D = A·B` for one warp: A (16×16, row-major) and B (bf16: 16×8 row-major, loaded with
/// `ldmatrix.trans`; f16: stored transposed, 8×16, loaded without) copied to shared memory
/// with `cp.async`, fragments by `ldmatrix`, one `mma`, D (16×8 f32, row-major) stored.
fn gemm_kernel(kind: Kind) -> String {
    let t = kind.name();
    let (b_rows, b_trans) = match kind {
        // lane l < 16 addresses row k = l (16-byte rows)
        Kind::Bf16 => (
            "    and.b32 %r15, %r0, 15;\n    shl.b32 %r15, %r15, 4;\n",
            ".trans",
        ),
        // lane l < 8 addresses row n = l, columns 0-7; lanes 8-15 columns 8-15 (32-byte rows)
        Kind::F16 => (
            "    and.b32 %r15, %r0, 7;\n    shl.b32 %r15, %r15, 5;\n    shr.u32 %r16, %r0, 3;\n    \
             and.b32 %r16, %r16, 1;\n    shl.b32 %r16, %r16, 4;\n    add.u32 %r15, %r15, %r16;\n",
            "",
        ),
    };
    format!(
        r#"
.visible .entry gemm16x8(.param .u64 p_d, .param .u64 p_a, .param .u64 p_b)
{{
    .reg .pred %p0;
    .reg .b32 %r<24>;
    .reg .f32 %f<4>;
    .reg .b64 %rd<8>;
    .shared .align 16 .b8 sa[512];
    .shared .align 16 .b8 sb[256];
    ld.param.u64 %rd0, [p_d];
    cvta.to.global.u64 %rd0, %rd0;
    ld.param.u64 %rd1, [p_a];
    cvta.to.global.u64 %rd1, %rd1;
    ld.param.u64 %rd2, [p_b];
    cvta.to.global.u64 %rd2, %rd2;
    mov.u32 %r0, %tid.x;
    shl.b32 %r1, %r0, 4;
    cvt.u64.u32 %rd3, %r1;
    mov.u32 %r2, sa;
    add.u32 %r3, %r2, %r1;
    add.u64 %rd4, %rd1, %rd3;
    cp.async.cg.shared.global [%r3], [%rd4], 16;
    setp.lt.u32 %p0, %r0, 16;
    mov.u32 %r4, sb;
    add.u32 %r5, %r4, %r1;
    add.u64 %rd5, %rd2, %rd3;
    @%p0 cp.async.cg.shared.global [%r5], [%rd5], 16;
    cp.async.commit_group;
    cp.async.wait_group 0;
    bar.sync 0;
    and.b32 %r6, %r0, 7;
    shr.u32 %r7, %r0, 3;
    and.b32 %r8, %r7, 1;
    shl.b32 %r8, %r8, 3;
    add.u32 %r6, %r6, %r8;
    shr.u32 %r9, %r0, 4;
    shl.b32 %r9, %r9, 4;
    shl.b32 %r10, %r6, 5;
    add.u32 %r10, %r10, %r9;
    add.u32 %r10, %r2, %r10;
    ldmatrix.sync.aligned.m8n8.x4.shared.b16 {{%r11, %r12, %r13, %r14}}, [%r10];
{b_rows}    add.u32 %r16, %r4, %r15;
    ldmatrix.sync.aligned.m8n8.x2{b_trans}.shared.b16 {{%r17, %r18}}, [%r16];
    mma.sync.aligned.m16n8k16.row.col.f32.{t}.{t}.f32 {{%f0, %f1, %f2, %f3}}, {{%r11, %r12, %r13, %r14}}, {{%r17, %r18}}, {{0f00000000, 0f00000000, 0f00000000, 0f00000000}};
    shr.u32 %r19, %r0, 2;
    and.b32 %r20, %r0, 3;
    shl.b32 %r20, %r20, 1;
    shl.b32 %r21, %r19, 3;
    add.u32 %r21, %r21, %r20;
    mul.wide.u32 %rd6, %r21, 4;
    add.u64 %rd6, %rd0, %rd6;
    st.global.v2.f32 [%rd6], {{%f0, %f1}};
    st.global.v2.f32 [%rd6+256], {{%f2, %f3}};
    ret;
}}
"#
    )
}

/// Random A and B rounded to `kind`, the kernel's inputs, and the f64 reference of `A·B`.
fn gemm_case(kind: Kind, seed: u64) -> (Vec<u32>, Vec<u32>, Vec<f64>) {
    let mut g = Lcg(seed);
    let a: Vec<u16> = (0..256).map(|_| kind.bits(g.next() * 3.0)).collect();
    let b: Vec<u16> = (0..128).map(|_| kind.bits(g.next())).collect();
    let (av, bv) = (
        |m: usize, k: usize| kind.value(a[m * 16 + k]) as f64,
        |k: usize, n: usize| kind.value(b[k * 8 + n]) as f64,
    );
    let reference = (0..128)
        .map(|i| (0..16).map(|k| av(i / 8, k) * bv(k, i % 8)).sum())
        .collect();
    let b_stored: Vec<u16> = match kind {
        Kind::Bf16 => b,
        Kind::F16 => (0..128).map(|i| b[(i % 16) * 8 + i / 16]).collect(),
    };
    (pack(&a), pack(&b_stored), reference)
}

fn gemm(src: &str, a: &[u32], b: &[u32]) -> Vec<f32> {
    let out = run(src, "gemm16x8", 32, &[a, b], 128).expect("the product runs");
    out.iter().map(|&w| f32::from_bits(w)).collect()
}

fn close(d: &[f32], reference: &[f64]) -> bool {
    d.iter()
        .zip(reference)
        .all(|(&x, &r)| (x as f64 - r).abs() <= 1e-6 * (1.0 + r.abs()))
}

#[test]
fn a_16x16_by_16x8_product_through_cp_async_ldmatrix_and_mma() {
    for kind in KINDS {
        let (a, b, reference) = gemm_case(kind, 11);
        let d = gemm(&gemm_kernel(kind), &a, &b);
        assert!(close(&d, &reference), "{kind:?}: {d:?}\nvs {reference:?}");
    }
}

#[test]
fn a_wrong_fragment_mapping_gives_a_wrong_product() {
    // a1 and a2 swapped: rows 8-15 and columns 8-15 of A trade places
    for kind in KINDS {
        let src = gemm_kernel(kind);
        let from = "{%r11, %r12, %r13, %r14}, {%r17, %r18}";
        assert_eq!(src.matches(from).count(), 1);
        let planted = src.replace(from, "{%r11, %r13, %r12, %r14}, {%r17, %r18}");
        let (a, b, reference) = gemm_case(kind, 11);
        let d = gemm(&planted, &a, &b);
        assert!(!close(&d, &reference), "{kind:?}: the swap went unnoticed");
    }
}

#[test]
fn the_product_is_counted_exactly() {
    let (a, b, _) = gemm_case(Kind::Bf16, 3);
    let (_, c) = run_counted(
        &gemm_kernel(Kind::Bf16),
        "gemm16x8",
        32,
        &[&a, &b],
        128,
        true,
    )
    .expect("the product runs");
    let c = c.expect("counted");
    assert_eq!(c.tensor.mma_m16n8k16_bf16, 1);
    assert_eq!(c.tensor.mma_m16n8k16_f16, 0);
    assert_eq!(c.tensor.flops, 2 * 16 * 8 * 16);
    assert_eq!(c.flops, 0, "tensor FLOPs are not FP32 FLOPs");
    assert_eq!(c.warp_inst.get(Class::Mma), 1);
    assert_eq!(c.thread_inst.get(Class::Mma), 32);
    assert_eq!(c.warp_inst.get(Class::Ldmatrix), 2);
    assert_eq!(c.warp_inst.get(Class::CpAsync), 2);
    assert_eq!(c.thread_inst.get(Class::CpAsync), 32 + 16);
    // commit, wait, bar.sync
    assert_eq!(c.warp_inst.get(Class::Barrier), 3);
    // cp.async: A's 512 bytes (16 sectors) and B's 256 (8) read from global memory
    assert_eq!((c.global.load_requests, c.global.load_sectors), (2, 24));
    // D: two stores of 8 rows × 32 bytes
    assert_eq!((c.global.store_requests, c.global.store_sectors), (2, 16));
    // cp.async writes to shared memory: 4 phases of 8 lanes × 16 bytes for A, 2 for B
    assert_eq!((c.shared.store_requests, c.shared.store_wavefronts), (2, 6));
    // ldmatrix: A's 32-byte rows put rows r and r+4 in the same banks (2 wavefronts per
    // phase of 8 rows, 4 phases); B's 16-byte rows are conflict-free (2 phases)
    assert_eq!(
        (c.shared.load_requests, c.shared.load_wavefronts),
        (2, 8 + 2)
    );
    assert_eq!(c.shared.ideal_wavefronts, 6 + 4 + 2);
}

// ---- the syntax accepted is the real one

#[test]
fn every_kernel_here_assembles_for_sm80_and_sm90() {
    let Some(ptxas) = bella::profile::ptxas::find() else {
        println!("notice: ptxas not found; skipping");
        return;
    };
    let mut kernels = Vec::new();
    for kind in KINDS {
        kernels.push(mma_regs_kernel(kind));
        kernels.push(gemm_kernel(kind));
    }
    for num in [1, 2, 4] {
        for trans in [false, true] {
            kernels.push(ldmatrix_kernel(num, trans));
        }
    }
    let dir = std::env::temp_dir().join(format!("bella-ptx-sim-tensor-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut failures = Vec::new();
    for (i, k) in kernels.iter().enumerate() {
        let file = dir.join(format!("k{i}.ptx"));
        std::fs::write(&file, format!("{HEADER}{k}")).unwrap();
        for arch in ["sm_80", "sm_90"] {
            let o = std::process::Command::new(&ptxas)
                .arg(format!("-arch={arch}"))
                .arg(&file)
                .args(["-o", "/dev/null"])
                .output()
                .expect("ptxas runs");
            if !o.status.success() {
                failures.push(format!(
                    "{arch}: {}\n{k}",
                    String::from_utf8_lossy(&o.stderr)
                ));
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
