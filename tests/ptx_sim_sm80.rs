//! The PTX simulator's sm_80 data path besides the tensor cores: conversions to and from
//! `.f16` / `.bf16` (every rounding mode, ties, NaN, infinities, subnormals, `.relu`,
//! `.satfinite`, the packed forms' operand order) checked against bits worked out by hand;
//! 16-bit loads, stores, packing and unpacking; and `cp.async` with its groups, where
//! touching a destination before its wait (and barrier) is a reported race. Every kernel here
//! assembles with ptxas for sm_80 and sm_90.
#![cfg(feature = "ptx-sim")]

use bella::backend::ptx::driver::{Driver, LaunchConfig, Param};
use bella::backend::ptx_sim::{SimBuf, SimDriver};

/// `.satfinite` on half conversions needs PTX ISA 8.1; everything else here is 7.8.
const HEADER: &str = ".version 8.1\n.target sm_80\n.address_size 64\n";

/// Run `t(out, in)` of `src` on one CTA of `block` threads; `out_words` words of `out`.
fn run(src: &str, block: u32, input: &[u32], out_words: usize) -> Result<Vec<u32>, String> {
    let d = SimDriver::new();
    d.load_module("m", &format!("{HEADER}{src}"))
        .map_err(|e| e.to_string())?;
    let out = d.alloc_zeroed(out_words).map_err(|e| e.to_string())?;
    let data: Vec<f32> = input.iter().map(|&b| f32::from_bits(b)).collect();
    let inp = d
        .upload(if data.is_empty() { &[0.0] } else { &data })
        .map_err(|e| e.to_string())?;
    let cfg = LaunchConfig {
        grid: [1, 1, 1],
        block: [block, 1, 1],
        shared_bytes: 0,
    };
    d.launch("m", "t", cfg, &[ptr(&out), ptr(&inp)])
        .map_err(|e| e.to_string())?;
    let words = d.download(&out, out_words).map_err(|e| e.to_string())?;
    Ok(words.iter().map(|x| x.to_bits()).collect())
}

fn ptr(buf: &SimBuf) -> Param<'_, SimBuf> {
    Param::Ptr {
        buf,
        byte_offset: 0,
    }
}

/// `t(out, in)` with `%r0 = %tid.x`, `%rd0` = out and `%rd1` = in (global addresses).
fn kernel(body: &str) -> String {
    format!(
        r#"
.visible .entry t(.param .u64 p_out, .param .u64 p_in)
{{
    .reg .pred %p<4>;
    .reg .b16 %h<4>;
    .reg .b32 %r<16>;
    .reg .f32 %f<4>;
    .reg .b64 %rd<8>;
    .shared .align 16 .b8 sm[1024];
    ld.param.u64 %rd0, [p_out];
    cvta.to.global.u64 %rd0, %rd0;
    ld.param.u64 %rd1, [p_in];
    cvta.to.global.u64 %rd1, %rd1;
    mov.u32 %r0, %tid.x;
{body}
    ret;
}}
"#
    )
}

/// The 1-based line of the only line of the module containing `needle`.
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

// ---- conversions: f32 to a 16-bit float

/// Thread i converts the f32 `in[i]` with `cvt` (opcode `op`) and stores the 16 bits.
fn to_half_kernel(op: &str) -> String {
    kernel(&format!(
        "    mul.wide.u32 %rd2, %r0, 4;\n    add.u64 %rd2, %rd1, %rd2;\n    \
         ld.global.f32 %f0, [%rd2];\n    {op} %h0, %f0;\n    mul.wide.u32 %rd3, %r0, 2;\n    \
         add.u64 %rd3, %rd0, %rd3;\n    st.global.b16 [%rd3], %h0;"
    ))
}

/// `op` on every input (f32 bits); the 16-bit results.
fn to_half(op: &str, inputs: &[u32]) -> Vec<u16> {
    let n = inputs.len();
    let out = run(&to_half_kernel(op), n as u32, inputs, n.div_ceil(2)).expect("cvt runs");
    (0..n)
        .map(|i| (out[i / 2] >> (16 * (i % 2))) as u16)
        .collect()
}

/// Rows of (f32 bits, results in the modes .rn .rz .rm .rp), worked out by hand.
fn check_table(half: &str, rows: &[(u32, [u16; 4])]) {
    let inputs: Vec<u32> = rows.iter().map(|r| r.0).collect();
    for (m, mode) in ["rn", "rz", "rm", "rp"].iter().enumerate() {
        let got = to_half(&format!("cvt.{mode}.{half}.f32"), &inputs);
        for (row, g) in rows.iter().zip(got) {
            assert_eq!(
                g,
                row.1[m],
                "cvt.{mode}.{half}.f32 of {:#010x} ({}): got {g:#06x}, want {:#06x}",
                row.0,
                f32::from_bits(row.0),
                row.1[m]
            );
        }
    }
}

#[test]
fn cvt_to_f16_rounds_ties_to_even_and_keeps_subnormals() {
    #[rustfmt::skip]
    check_table("f16", &[
        // input        rn      rz      rm      rp
        (0x3F80_0000, [0x3C00, 0x3C00, 0x3C00, 0x3C00]), // 1
        (0x3F80_1000, [0x3C00, 0x3C00, 0x3C00, 0x3C01]), // 1 + 2^-11: tie, to even
        (0x3F80_3000, [0x3C02, 0x3C01, 0x3C01, 0x3C02]), // 1 + 3·2^-11: tie, to even
        (0x3F80_1001, [0x3C01, 0x3C00, 0x3C00, 0x3C01]), // just above a tie
        (0xBF80_1000, [0xBC00, 0xBC00, 0xBC01, 0xBC00]), // -(1 + 2^-11)
        (0x0000_0000, [0x0000, 0x0000, 0x0000, 0x0000]), // +0
        (0x8000_0000, [0x8000, 0x8000, 0x8000, 0x8000]), // -0
        (0x477F_E000, [0x7BFF, 0x7BFF, 0x7BFF, 0x7BFF]), // 65504, the largest finite
        (0x477F_EFFF, [0x7BFF, 0x7BFF, 0x7BFF, 0x7C00]), // just below 65520
        (0x477F_F000, [0x7C00, 0x7BFF, 0x7BFF, 0x7C00]), // 65520: halfway to 2^16, overflows
        (0x4974_2400, [0x7C00, 0x7BFF, 0x7BFF, 0x7C00]), // 1e6
        (0xC974_2400, [0xFC00, 0xFBFF, 0xFC00, 0xFBFF]), // -1e6
        (0x7F80_0000, [0x7C00, 0x7C00, 0x7C00, 0x7C00]), // +inf
        (0xFF80_0000, [0xFC00, 0xFC00, 0xFC00, 0xFC00]), // -inf
        (0x7FC0_0000, [0x7FFF, 0x7FFF, 0x7FFF, 0x7FFF]), // NaN: the canonical NaN
        (0xFF80_0001, [0x7FFF, 0x7FFF, 0x7FFF, 0x7FFF]), // negative signalling NaN
        (0x3880_0000, [0x0400, 0x0400, 0x0400, 0x0400]), // 2^-14, the smallest normal
        (0x387F_C000, [0x03FF, 0x03FF, 0x03FF, 0x03FF]), // 1023·2^-24, the largest subnormal
        (0x3380_0000, [0x0001, 0x0001, 0x0001, 0x0001]), // 2^-24, the smallest subnormal
        (0x3300_0000, [0x0000, 0x0000, 0x0000, 0x0001]), // 2^-25: tie between 0 and 2^-24
        (0x3340_0000, [0x0001, 0x0000, 0x0000, 0x0001]), // 0.75·2^-24
        (0x33C0_0000, [0x0002, 0x0001, 0x0001, 0x0002]), // 1.5·2^-24: tie, to even
        (0xB340_0000, [0x8001, 0x8000, 0x8001, 0x8000]), // -0.75·2^-24
        (0x0000_0001, [0x0000, 0x0000, 0x0000, 0x0001]), // the smallest f32 subnormal
        (0x8000_0001, [0x8000, 0x8000, 0x8001, 0x8000]),
    ]);
}

#[test]
fn cvt_to_bf16_rounds_ties_to_even_and_keeps_subnormals() {
    #[rustfmt::skip]
    check_table("bf16", &[
        // input        rn      rz      rm      rp
        (0x3F80_0000, [0x3F80, 0x3F80, 0x3F80, 0x3F80]), // 1
        (0x3F80_8000, [0x3F80, 0x3F80, 0x3F80, 0x3F81]), // 1 + 2^-8: tie, to even
        (0x3F81_8000, [0x3F82, 0x3F81, 0x3F81, 0x3F82]), // 1 + 3·2^-8: tie, to even
        (0x3F80_8001, [0x3F81, 0x3F80, 0x3F80, 0x3F81]), // just above a tie
        (0xBF80_8000, [0xBF80, 0xBF80, 0xBF81, 0xBF80]),
        (0x8000_0000, [0x8000, 0x8000, 0x8000, 0x8000]), // -0
        (0x7F7F_7FFF, [0x7F7F, 0x7F7F, 0x7F7F, 0x7F80]), // below halfway past the largest
        (0x7F7F_FFFF, [0x7F80, 0x7F7F, 0x7F7F, 0x7F80]), // f32::MAX overflows to nearest
        (0xFF7F_FFFF, [0xFF80, 0xFF7F, 0xFF80, 0xFF7F]),
        (0x7F80_0000, [0x7F80, 0x7F80, 0x7F80, 0x7F80]), // +inf
        (0xFF80_0000, [0xFF80, 0xFF80, 0xFF80, 0xFF80]), // -inf
        (0x7FC0_0000, [0x7FFF, 0x7FFF, 0x7FFF, 0x7FFF]), // NaN: the canonical NaN
        (0xFFC1_2345, [0x7FFF, 0x7FFF, 0x7FFF, 0x7FFF]),
        (0x0000_8000, [0x0000, 0x0000, 0x0000, 0x0001]), // subnormal tie between 0 and 1
        (0x0001_8000, [0x0002, 0x0001, 0x0001, 0x0002]), // subnormal tie, to even
        (0x0000_8001, [0x0001, 0x0000, 0x0000, 0x0001]),
        (0x8000_0001, [0x8000, 0x8000, 0x8001, 0x8000]),
    ]);
}

#[test]
fn cvt_relu_satfinite_ftz_and_sat() {
    let inputs = [
        0xBF80_0000u32, // -1
        0x8000_0000,    // -0
        0x7FC0_0000,    // NaN
        0x4000_0000,    // 2
        0x4974_2400,    // 1e6
        0xFF80_0000,    // -inf
        0x0000_0001,    // f32 subnormal
        0x3FC0_0000,    // 1.5
    ];
    let cases: [(&str, [u16; 8]); 6] = [
        (
            "cvt.rn.relu.f16.f32",
            [
                0x0000, 0x0000, 0x7FFF, 0x4000, 0x7C00, 0x0000, 0x0000, 0x3E00,
            ],
        ),
        (
            "cvt.rn.satfinite.f16.f32",
            [
                0xBC00, 0x8000, 0x7FFF, 0x4000, 0x7BFF, 0xFBFF, 0x0000, 0x3E00,
            ],
        ),
        (
            "cvt.rz.relu.satfinite.bf16.f32",
            [
                0x0000, 0x0000, 0x7FFF, 0x4000, 0x4974, 0x0000, 0x0000, 0x3FC0,
            ],
        ),
        (
            "cvt.rn.satfinite.bf16.f32",
            [
                0xBF80, 0x8000, 0x7FFF, 0x4000, 0x4974, 0xFF7F, 0x0000, 0x3FC0,
            ],
        ),
        // the smallest f32 subnormal rounds up to bf16's unless flushed first
        (
            "cvt.ftz.rp.bf16.f32",
            [
                0xBF80, 0x8000, 0x7FFF, 0x4000, 0x4975, 0xFF80, 0x0000, 0x3FC0,
            ],
        ),
        // .sat clamps to [0, 1] first (-0 stays, as `.sat` on f32 does); NaN gives +0
        (
            "cvt.rn.sat.f16.f32",
            [
                0x0000, 0x8000, 0x0000, 0x3C00, 0x3C00, 0x0000, 0x0000, 0x3C00,
            ],
        ),
    ];
    for (op, want) in cases {
        assert_eq!(to_half(op, &inputs), want, "{op}");
    }
    assert_eq!(to_half("cvt.rp.bf16.f32", &[1]), [0x0001]);
}

#[test]
fn packed_cvt_puts_a_in_the_upper_half_and_b_in_the_lower() {
    // thread i: cvt d, in[2i], in[2i+1]
    let body = "    mul.wide.u32 %rd2, %r0, 8;\n    add.u64 %rd2, %rd1, %rd2;\n    \
                ld.global.v2.f32 {%f0, %f1}, [%rd2];\n    CVT %r1, %f0, %f1;\n    \
                mul.wide.u32 %rd3, %r0, 4;\n    add.u64 %rd3, %rd0, %rd3;\n    \
                st.global.b32 [%rd3], %r1;";
    let input = [
        1.0f32.to_bits(),
        (-2.0f32).to_bits(),
        0x3F80_1000, // ties
        0x3F80_8000,
    ];
    let cases = [
        ("cvt.rn.f16x2.f32", [0x3C00_C000u32, 0x3C00_3C04]),
        ("cvt.rn.bf16x2.f32", [0x3F80_C000, 0x3F80_3F80]),
        ("cvt.rz.bf16x2.f32", [0x3F80_C000, 0x3F80_3F80]),
        ("cvt.rn.relu.bf16x2.f32", [0x3F80_0000, 0x3F80_3F80]),
    ];
    for (op, want) in cases {
        let out = run(&kernel(&body.replace("CVT", op)), 2, &input, 2).unwrap();
        assert_eq!(out, want, "{op}");
    }
}

#[test]
fn cvt_to_f32_widens_exactly() {
    // thread i widens the i-th 16-bit value of `in`
    let body = "    mul.wide.u32 %rd2, %r0, 2;\n    add.u64 %rd2, %rd1, %rd2;\n    \
                ld.global.b16 %h0, [%rd2];\n    CVT %f0, %h0;\n    \
                mul.wide.u32 %rd3, %r0, 4;\n    add.u64 %rd3, %rd0, %rd3;\n    \
                st.global.f32 [%rd3], %f0;";
    let widen = |op: &str, halves: &[u16]| -> Vec<u32> {
        let input: Vec<u32> = halves
            .chunks(2)
            .map(|p| p[0] as u32 | (*p.get(1).unwrap_or(&0) as u32) << 16)
            .collect();
        run(
            &kernel(&body.replace("CVT", op)),
            halves.len() as u32,
            &input,
            halves.len(),
        )
        .unwrap()
    };
    let f16 = widen(
        "cvt.f32.f16",
        &[
            0x3C00, 0x0001, 0x03FF, 0x7BFF, 0x7C00, 0xFC00, 0x8000, 0xC000,
        ],
    );
    assert_eq!(
        f16,
        [
            0x3F80_0000, // 1
            0x3380_0000, // 2^-24
            0x387F_C000, // 1023·2^-24
            0x477F_E000, // 65504
            0x7F80_0000,
            0xFF80_0000,
            0x8000_0000,
            0xC000_0000, // -2
        ]
    );
    let nan = widen("cvt.f32.f16", &[0x7E00])[0];
    assert!(f32::from_bits(nan).is_nan());
    let bf16 = widen("cvt.f32.bf16", &[0x3F80, 0x0001, 0x8001, 0xFF80]);
    assert_eq!(bf16, [0x3F80_0000, 0x0001_0000, 0x8001_0000, 0xFF80_0000]);
    // .ftz flushes the f32 subnormals bf16 subnormals widen to
    let ftz = widen("cvt.ftz.f32.bf16", &[0x0001, 0x8001, 0x0080]);
    assert_eq!(ftz, [0x0000_0000, 0x8000_0000, 0x0080_0000]);
}

#[test]
fn unsupported_half_conversions_are_errors_naming_the_line() {
    for (op, why) in [
        ("cvt.rm.f16x2.f32 %r1, %f0, %f1;", "take .rn or .rz"),
        ("cvt.rm.relu.f16.f32 %h0, %f0;", "take .rn or .rz"),
        ("cvt.f16.f32 %h0, %f0;", "needs .rn, .rz, .rm or .rp"),
        ("cvt.rn.f32.f16 %f0, %h0;", "takes no rounding"),
        ("cvt.rn.f16.f64 %h0, %rd0;", "is not supported"),
        ("cvt.rn.f16.s32 %h0, %r0;", "is not supported"),
        ("cvt.rn.f16x2.f32 %r1, %f0;", "expected 3 operands"),
    ] {
        let src = kernel(&format!("    {op}"));
        let e = run(&src, 1, &[], 1).unwrap_err();
        let line = line_of(&src, op);
        assert_mentions(&e, &[&format!("line {line}"), why]);
    }
}

// ---- 16-bit moves

#[test]
fn sixteen_bit_loads_stores_packing_and_unpacking() {
    // in: halves 0x1111, 0x2222, 0x3333, 0x4444
    let body = "    ld.global.b16 %h0, [%rd1];\n    ld.global.u16 %h1, [%rd1+2];\n    \
                mov.b32 %r1, {%h0, %h1};\n    st.global.b32 [%rd0], %r1;\n    \
                mov.b32 {%h2, %h3}, %r1;\n    st.global.v2.b16 [%rd0+4], {%h3, %h2};\n    \
                mov.u32 %r2, sm;\n    ld.global.v2.b16 {%h0, %h1}, [%rd1+4];\n    \
                st.shared.v2.b16 [%r2], {%h1, %h0};\n    ld.shared.b16 %h2, [%r2+2];\n    \
                st.global.b16 [%rd0+8], %h2;\n    ld.shared.v4.b16 {%h0, %h1, %h2, %h3}, [%r2];\n    \
                st.global.v4.b16 [%rd0+16], {%h0, %h1, %h2, %h3};";
    let src = kernel(&format!("    st.shared.b32 [sm+4], %r0;\n{body}"));
    let out = run(&src, 1, &[0x2222_1111, 0x4444_3333], 6).unwrap();
    // mov.b32 d, {a, b} is a | b << 16; the unpacked halves stored swapped
    assert_eq!(out[0], 0x2222_1111);
    assert_eq!(out[1], 0x1111_2222);
    assert_eq!(out[2], 0x3333);
    assert_eq!(&out[4..6], &[0x3333_4444, 0]);
}

// ---- cp.async

/// 64 threads each copy 16 bytes of `in` to `sm` (thread t to bytes 16t..), then read the
/// next thread's 16 bytes into `out`. `pre` comes before the copies, `sync` between the
/// copies and the reads.
fn copy_kernel(pre: &str, sync: &str) -> String {
    kernel(&format!(
        "    shl.b32 %r1, %r0, 4;\n    mov.u32 %r2, sm;\n    add.u32 %r3, %r2, %r1;\n    \
         cvt.u64.u32 %rd2, %r1;\n    add.u64 %rd3, %rd1, %rd2;\n{pre}\n    \
         cp.async.cg.shared.global [%r3], [%rd3], 16;\n{sync}\n    add.u32 %r4, %r0, 1;\n    \
         and.b32 %r4, %r4, 63;\n    shl.b32 %r4, %r4, 4;\n    add.u32 %r4, %r2, %r4;\n    \
         ld.shared.v4.b32 {{%r5, %r6, %r7, %r8}}, [%r4];\n    add.u64 %rd4, %rd0, %rd2;\n    \
         st.global.v4.b32 [%rd4], {{%r5, %r6, %r7, %r8}};"
    ))
}

const WAIT_THEN_BARRIER: &str =
    "    cp.async.commit_group;\n    cp.async.wait_group 0;\n    bar.sync 0;";

fn words(n: usize) -> Vec<u32> {
    (0..n as u32).map(|i| 0x1000_0000 + i * 0x0101).collect()
}

#[test]
fn cp_async_lands_at_the_wait_and_is_shared_after_a_barrier() {
    let input = words(256);
    let rotated: Vec<u32> = (0..256).map(|i| input[(i + 4) % 256]).collect();
    for sync in [
        WAIT_THEN_BARRIER,
        "    cp.async.wait_all;\n    bar.sync 0;",
        // an empty group after the copy's: wait_group 1 still covers it
        "    cp.async.commit_group;\n    cp.async.commit_group;\n    cp.async.wait_group 1;\n    \
         bar.sync 0;",
    ] {
        let out = run(&copy_kernel("", sync), 64, &input, 256).unwrap();
        assert_eq!(out, rotated, "{sync}");
    }
}

#[test]
fn reading_a_cp_async_destination_before_its_wait_is_a_race() {
    let input = words(256);
    // no wait at all: the barrier does not complete the copy
    let src = copy_kernel("", "    cp.async.commit_group;\n    bar.sync 0;");
    let e = run(&src, 64, &input, 256).unwrap_err();
    let read = line_of(&src, "ld.shared");
    let copy = line_of(&src, "cp.async.cg");
    assert_mentions(
        &e,
        &[
            &format!("line {read}"),
            "race",
            "read while the cp.async of thread",
            &format!("at line {copy}"),
            "in flight",
        ],
    );
    // the thread's own destination, before its wait
    let own = kernel(
        "    mov.u32 %r2, sm;\n    cp.async.ca.shared.global [%r2], [%rd1], 4;\n    \
         cp.async.commit_group;\n    ld.shared.u32 %r5, [%r2];\n    cp.async.wait_group 0;",
    );
    let e = run(&own, 1, &input, 1).unwrap_err();
    assert_mentions(
        &e,
        &[
            &format!("line {}", line_of(&own, "ld.shared")),
            "read while the cp.async of thread (0,0,0)",
        ],
    );
    // waited for, but read by another thread without a barrier (the destination holds
    // older data, so the read itself passes; the copy landing after it is the race)
    let src = copy_kernel(
        ZERO_FIRST,
        "    cp.async.commit_group;\n    cp.async.wait_group 0;",
    );
    let e = run(&src, 64, &input, 256).unwrap_err();
    assert_mentions(
        &e,
        &[
            &format!("line {}", line_of(&src, "cp.async.cg")),
            "shared memory race",
            "written after a read by thread (0,0,0)",
        ],
    );
}

/// Each thread zeroes its destination, then a barrier.
const ZERO_FIRST: &str =
    "    mov.u32 %r9, 0;\n    st.shared.v4.b32 [%r3], {%r9, %r9, %r9, %r9};\n    bar.sync 0;";

#[test]
fn wait_group_completes_all_but_the_most_recent_groups() {
    // thread 0 copies word 0 then word 1 in two groups; wait_group 1 lands only the first
    let body = "    mov.u32 %r2, sm;\n    cp.async.ca.shared.global [%r2], [%rd1], 4;\n    \
                cp.async.commit_group;\n    cp.async.ca.shared.global [%r2+4], [%rd1+4], 4;\n    \
                cp.async.commit_group;\n    cp.async.wait_group 1;\n    \
                ld.shared.u32 %r5, [%r2];\n    st.global.u32 [%rd0], %r5;\n    READ";
    let ok = kernel(&body.replace(
        "READ",
        "cp.async.wait_group 0;\n    ld.shared.u32 %r6, [%r2+4];\n    st.global.u32 [%rd0+4], %r6;",
    ));
    assert_eq!(run(&ok, 1, &[7, 9], 2).unwrap(), [7, 9]);
    let early = kernel(&body.replace("READ", "ld.shared.u32 %r6, [%r2+4];"));
    let e = run(&early, 1, &[7, 9], 2).unwrap_err();
    assert_mentions(
        &e,
        &[
            &format!("line {}", line_of(&early, "[%r2+4];")),
            "in flight",
        ],
    );
}

#[test]
fn writing_a_cp_async_destination_in_flight_is_a_race() {
    let src = kernel(
        "    mov.u32 %r2, sm;\n    cp.async.cg.shared.global [%r2], [%rd1], 16;\n    \
         st.shared.u32 [%r2+8], %r0;\n    cp.async.wait_all;",
    );
    let e = run(&src, 1, &[1, 2, 3, 4], 1).unwrap_err();
    assert_mentions(
        &e,
        &[
            &format!("line {}", line_of(&src, "st.shared")),
            "written while the cp.async",
            &format!("at line {}", line_of(&src, "cp.async.cg")),
        ],
    );
    // a second copy to the same bytes, too
    let src = kernel(
        "    mov.u32 %r2, sm;\n    cp.async.ca.shared.global [%r2], [%rd1], 8;\n    \
         cp.async.ca.shared.global [%r2+4], [%rd1], 4;\n    cp.async.wait_all;",
    );
    let e = run(&src, 1, &[1, 2, 3, 4], 1).unwrap_err();
    assert_mentions(&e, &["written while the cp.async"]);
}

#[test]
fn cp_async_src_size_and_ignore_src_fill_with_zeros() {
    // thread 0: 5 source bytes of 16; thread 1: src-size 0 from address 64, outside every
    // buffer (nothing is read); thread 2: ignore-src true; thread 3: ignore-src false
    let body = "    shl.b32 %r1, %r0, 4;\n    mov.u32 %r2, sm;\n    add.u32 %r3, %r2, %r1;\n    \
                setp.eq.u32 %p0, %r0, 0;\n    setp.eq.u32 %p1, %r0, 1;\n    setp.eq.u32 %p2, %r0, 2;\n    \
                setp.eq.u32 %p3, %r0, 3;\n    mov.u32 %r4, 0;\n    \
                @%p0 cp.async.ca.shared.global [%r3], [%rd1], 16, 5;\n    \
                mov.u64 %rd5, 64;\n    @%p1 cp.async.cg.shared.global [%r3], [%rd5], 16, %r4;\n    \
                @%p2 cp.async.cg.shared.global [%r3], [%rd1], 16, %p2;\n    \
                @%p3 cp.async.cg.shared.global [%r3], [%rd1], 16, %p2;\n    \
                cp.async.wait_all;\n    ld.shared.v4.b32 {%r5, %r6, %r7, %r8}, [%r3];\n    \
                cvt.u64.u32 %rd2, %r1;\n    add.u64 %rd2, %rd0, %rd2;\n    \
                st.global.v4.b32 [%rd2], {%r5, %r6, %r7, %r8};";
    let out = run(
        &kernel(body),
        4,
        &[0x4433_2211, 0x8877_6655, 0xCCBB_AA99, 0x1],
        16,
    )
    .unwrap();
    assert_eq!(&out[0..4], &[0x4433_2211, 0x55, 0, 0]);
    assert_eq!(&out[4..12], &[0; 8]);
    assert_eq!(&out[12..16], &[0x4433_2211, 0x8877_6655, 0xCCBB_AA99, 0x1]);
}

#[test]
fn cp_async_checks_alignment_bounds_and_its_operands() {
    let one = |body: &str| run(&kernel(body), 1, &[0; 8], 1).unwrap_err();
    let e = one("    mov.u32 %r2, sm;\n    cp.async.cg.shared.global [%r2+8], [%rd1], 16;");
    assert_mentions(&e, &["misaligned shared write of 16 bytes"]);
    let e = one("    mov.u32 %r2, sm;\n    cp.async.ca.shared.global [%r2], [%rd1+4], 8;");
    assert_mentions(&e, &["misaligned global read of 8 bytes"]);
    let e = one("    mov.u32 %r2, sm;\n    cp.async.ca.shared.global [%r2], [%rd1+32], 4;");
    assert_mentions(&e, &["out-of-bounds global read"]);
    let e = one("    mov.u32 %r2, sm;\n    cp.async.ca.shared.global [%r2+1024], [%rd1], 4;");
    assert_mentions(&e, &["out-of-bounds shared cp.async write"]);
    let e = one("    mov.u32 %r2, sm;\n    mov.u32 %r4, 17;\n    cp.async.ca.shared.global [%r2], [%rd1], 16, %r4;");
    assert_mentions(&e, &["src-size 17 exceeds cp-size 16"]);
    let e = one("    mov.u32 %r2, sm;\n    cp.async.cg.shared.global [%r2], [%rd1], 8;");
    assert_mentions(&e, &["cp.async.cg copies 16 bytes"]);
}

// ---- the syntax accepted is the real one

#[test]
fn the_kernels_here_assemble_for_sm80_and_sm90() {
    let Some(ptxas) = bella::profile::ptxas::find() else {
        println!("notice: ptxas not found; skipping");
        return;
    };
    let mut kernels: Vec<String> = [
        "cvt.rn.f16.f32",
        "cvt.rz.f16.f32",
        "cvt.rm.f16.f32",
        "cvt.rp.f16.f32",
        "cvt.rn.bf16.f32",
        "cvt.rz.bf16.f32",
        "cvt.rm.bf16.f32",
        "cvt.rp.bf16.f32",
        "cvt.rn.relu.f16.f32",
        "cvt.rn.satfinite.f16.f32",
        "cvt.rz.relu.satfinite.bf16.f32",
        "cvt.rn.satfinite.bf16.f32",
        "cvt.ftz.rp.bf16.f32",
        "cvt.rn.sat.f16.f32",
    ]
    .iter()
    .map(|op| to_half_kernel(op))
    .collect();
    for sync in [
        WAIT_THEN_BARRIER,
        "    cp.async.wait_all;\n    bar.sync 0;",
        "    cp.async.commit_group;\n    bar.sync 0;",
    ] {
        kernels.push(copy_kernel("", sync));
    }
    kernels.push(copy_kernel(ZERO_FIRST, WAIT_THEN_BARRIER));
    kernels.push(kernel(
        "    cvt.rn.f16x2.f32 %r1, %f0, %f1;\n    cvt.rz.bf16x2.f32 %r1, %f0, %f1;\n    \
         cvt.rn.relu.bf16x2.f32 %r1, %f0, %f1;\n    cvt.f32.f16 %f0, %h0;\n    \
         cvt.f32.bf16 %f0, %h0;\n    cvt.ftz.f32.bf16 %f0, %h0;\n    mov.b32 %r1, {%h0, %h1};\n    \
         mov.b32 {%h2, %h3}, %r1;\n    ld.global.v2.b16 {%h0, %h1}, [%rd1];\n    \
         st.global.v4.b16 [%rd0], {%h0, %h1, %h2, %h3};\n    mov.u32 %r2, sm;\n    \
         cp.async.ca.shared.global [%r2], [%rd1], 16, 5;\n    \
         cp.async.cg.shared.global [%r2], [%rd1], 16, %r4;\n    \
         cp.async.cg.shared.global [%r2], [%rd1], 16, %p2;\n    \
         cp.async.cg.shared.global.L2::128B [%r2+16], [%rd1+16], 16;\n    \
         cp.async.commit_group;\n    cp.async.wait_group 1;\n    cp.async.wait_all;",
    ));
    let dir = std::env::temp_dir().join(format!("bella-ptx-sim-sm80-{}", std::process::id()));
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
