//! Per-instruction tests of the interpreter: small PTX snippets run through the [`Driver`]
//! surface, checked against values worked out by hand or by the host's IEEE arithmetic.

use super::SimDriver;
use crate::backend::ptx::driver::{Driver, LaunchConfig, Param};
use crate::error::Result;

/// A kernel `t(out, in)` with a register set every snippet can use; `%rd14` is `out` and
/// `%rd15` is `in`, both as global addresses; `sm` is 1 KiB of shared memory.
fn kernel(body: &str) -> String {
    format!(
        r#"
.version 7.8
.target sm_80
.address_size 64
.visible .entry t(
    .param .u64 p_out,
    .param .u64 p_in
)
{{
    .reg .pred %p<8>;
    .reg .b32 %r<16>;
    .reg .f32 %f<16>;
    .reg .b64 %rd<16>;
    .shared .align 16 .b8 sm[1024];
    ld.param.u64 %rd14, [p_out];
    cvta.to.global.u64 %rd14, %rd14;
    ld.param.u64 %rd15, [p_in];
    cvta.to.global.u64 %rd15, %rd15;
{body}
    ret;
}}
"#
    )
}

/// Run `body` on `grid` x `block` threads; return the `out_len` words of `out` as bits.
fn launch(
    body: &str,
    grid: [u32; 3],
    block: [u32; 3],
    input: &[f32],
    out_len: usize,
) -> Result<Vec<u32>> {
    let drv = SimDriver::new();
    drv.load_module("m", &kernel(body))?;
    let out = drv.alloc_zeroed(out_len)?;
    let inp = drv.upload(if input.is_empty() { &[0.0] } else { input })?;
    let cfg = LaunchConfig {
        grid,
        block,
        shared_bytes: 0,
    };
    drv.launch(
        "m",
        "t",
        cfg,
        &[
            Param::Ptr {
                buf: &out,
                byte_offset: 0,
            },
            Param::Ptr {
                buf: &inp,
                byte_offset: 0,
            },
        ],
    )?;
    Ok(drv
        .download(&out, out_len)?
        .iter()
        .map(|x| x.to_bits())
        .collect())
}

fn run1(body: &str, input: &[f32], out_len: usize) -> Result<Vec<u32>> {
    launch(body, [1, 1, 1], [1, 1, 1], input, out_len)
}

/// `body` leaves a 32-bit result in `%r0`.
fn int(body: &str) -> u32 {
    run1(&format!("{body}\n    st.global.u32 [%rd14], %r0;"), &[], 1).unwrap()[0]
}

/// `body` leaves an f32 result in `%f0`.
fn float(body: &str) -> f32 {
    f32::from_bits(run1(&format!("{body}\n    st.global.f32 [%rd14], %f0;"), &[], 1).unwrap()[0])
}

/// The error message of a failing run.
fn error(body: &str, grid: [u32; 3], block: [u32; 3]) -> String {
    match launch(body, grid, block, &[1.0; 64], 64) {
        Ok(_) => panic!("the kernel ran without error:\n{body}"),
        Err(e) => e.to_string(),
    }
}

fn f32_lit(x: f32) -> String {
    format!("0f{:08X}", x.to_bits())
}

// ---- integer arithmetic

#[test]
fn add_sub_mul_wrap_at_32_bits() {
    assert_eq!(int("mov.u32 %r1, 4294967295;\n add.u32 %r0, %r1, 2;"), 1);
    assert_eq!(int("mov.u32 %r1, 1;\n sub.u32 %r0, %r1, 3;"), u32::MAX - 1);
    assert_eq!(
        int("mov.u32 %r1, 65536;\n mul.lo.u32 %r0, %r1, 65537;"),
        65536
    );
    assert_eq!(
        int("mov.u32 %r1, -7;\n add.s32 %r0, %r1, 3;"),
        (-4i32) as u32
    );
}

#[test]
fn mul_hi_and_wide() {
    assert_eq!(
        int("mov.u32 %r1, 4294967295;\n mul.hi.u32 %r0, %r1, %r1;"),
        0xFFFF_FFFE
    );
    assert_eq!(int("mov.u32 %r1, -2;\n mul.hi.s32 %r0, %r1, 3;"), u32::MAX);
    let body = "mov.u32 %r1, 4294967295;\n mul.wide.u32 %rd1, %r1, 16;\n \
                st.global.u64 [%rd14], %rd1;";
    let w = run1(body, &[], 2).unwrap();
    assert_eq!((w[0], w[1]), (0xFFFF_FFF0, 0xF));
    let body = "mov.u32 %r1, -3;\n mul.wide.s32 %rd1, %r1, 5;\n st.global.u64 [%rd14], %rd1;";
    let w = run1(body, &[], 2).unwrap();
    assert_eq!(((w[1] as u64) << 32 | w[0] as u64) as i64, -15);
    let body = "mov.u32 %r1, 7;\n mov.u64 %rd2, 100;\n mad.wide.u32 %rd1, %r1, 3, %rd2;\n \
                st.global.u64 [%rd14], %rd1;";
    assert_eq!(run1(body, &[], 2).unwrap(), vec![121, 0]);
    assert_eq!(int("mov.u32 %r1, 6;\n mad.lo.u32 %r0, %r1, 7, 8;"), 50);
}

#[test]
fn div_rem_min_max_signed_and_unsigned() {
    assert_eq!(int("mov.u32 %r1, 17;\n div.u32 %r0, %r1, 5;"), 3);
    assert_eq!(int("mov.u32 %r1, 17;\n rem.u32 %r0, %r1, 5;"), 2);
    assert_eq!(
        int("mov.u32 %r1, -17;\n div.s32 %r0, %r1, 5;"),
        (-3i32) as u32
    );
    assert_eq!(
        int("mov.u32 %r1, -17;\n rem.s32 %r0, %r1, 5;"),
        (-2i32) as u32
    );
    assert_eq!(int("mov.u32 %r1, -1;\n min.u32 %r0, %r1, 5;"), 5);
    assert_eq!(int("mov.u32 %r1, -1;\n min.s32 %r0, %r1, 5;"), u32::MAX);
    assert_eq!(int("mov.u32 %r1, -1;\n max.u32 %r0, %r1, 5;"), u32::MAX);
    assert_eq!(int("mov.u32 %r1, -1;\n max.s32 %r0, %r1, 5;"), 5);
}

#[test]
fn integer_division_by_zero_is_an_error() {
    let e = error(
        "mov.u32 %r1, 0;\n div.u32 %r0, %r2, %r1;",
        [1, 1, 1],
        [1, 1, 1],
    );
    assert!(
        e.contains("division by zero") && e.contains("div.u32 %r0, %r2, %r1"),
        "{e}"
    );
}

#[test]
fn shifts_and_bit_operations() {
    assert_eq!(int("mov.u32 %r1, 3;\n shl.b32 %r0, %r1, 4;"), 48);
    assert_eq!(int("mov.u32 %r1, 3;\n shl.b32 %r0, %r1, 32;"), 0);
    assert_eq!(int("mov.u32 %r1, -16;\n shr.u32 %r0, %r1, 2;"), 0x3FFF_FFFC);
    assert_eq!(
        int("mov.u32 %r1, -16;\n shr.s32 %r0, %r1, 2;"),
        (-4i32) as u32
    );
    assert_eq!(int("mov.u32 %r1, -16;\n shr.s32 %r0, %r1, 40;"), u32::MAX);
    assert_eq!(
        int("mov.u32 %r1, 0xF0F0;\n and.b32 %r0, %r1, 0xFF00;"),
        0xF000
    );
    assert_eq!(
        int("mov.u32 %r1, 0xF0F0;\n or.b32 %r0, %r1, 0x0F00;"),
        0xFFF0
    );
    assert_eq!(
        int("mov.u32 %r1, 0xF0F0;\n xor.b32 %r0, %r1, 0xFFFF;"),
        0x0F0F
    );
    assert_eq!(int("mov.u32 %r1, 0;\n not.b32 %r0, %r1;"), u32::MAX);
    assert_eq!(int("mov.u32 %r1, 0xF0F0;\n popc.b32 %r0, %r1;"), 8);
    assert_eq!(int("mov.u32 %r1, 0x00F0;\n clz.b32 %r0, %r1;"), 24);
    assert_eq!(int("mov.u32 %r1, 1;\n brev.b32 %r0, %r1;"), 0x8000_0000);
    assert_eq!(int("mov.u32 %r1, 5;\n neg.s32 %r0, %r1;"), (-5i32) as u32);
    assert_eq!(int("mov.u32 %r1, -5;\n abs.s32 %r0, %r1;"), 5);
    let body = "mov.u64 %rd1, 0x123456789;\n and.b64 %rd2, %rd1, 0xF0000000F;\n \
                st.global.u64 [%rd14], %rd2;";
    assert_eq!(run1(body, &[], 2).unwrap(), vec![9, 1]);
}

// ---- f32 arithmetic and rounding

#[test]
fn f32_round_to_nearest_matches_ieee() {
    let (a, b) = (1.1f32, 3.3f32);
    let set = format!(
        "mov.f32 %f1, {};\n mov.f32 %f2, {};\n",
        f32_lit(a),
        f32_lit(b)
    );
    assert_eq!(float(&format!("{set} add.f32 %f0, %f1, %f2;")), a + b);
    assert_eq!(float(&format!("{set} sub.f32 %f0, %f1, %f2;")), a - b);
    assert_eq!(float(&format!("{set} mul.f32 %f0, %f1, %f2;")), a * b);
    assert_eq!(float(&format!("{set} div.rn.f32 %f0, %f1, %f2;")), a / b);
    assert_eq!(float(&format!("{set} sqrt.rn.f32 %f0, %f2;")), b.sqrt());
    assert_eq!(float(&format!("{set} neg.f32 %f0, %f1;")), -a);
    assert_eq!(
        float(&format!("{set} neg.f32 %f3, %f1;\n abs.f32 %f0, %f3;")),
        a
    );
}

#[test]
fn fma_rounds_once() {
    // (1+e)(1-e) - 1 = -e^2 exactly; an unfused multiply-add would give 0
    let e = f32::EPSILON;
    let body = format!(
        "mov.f32 %f1, {};\n mov.f32 %f2, {};\n mov.f32 %f3, 0fBF800000;\n fma.rn.f32 %f0, %f1, %f2, %f3;",
        f32_lit(1.0 + e),
        f32_lit(1.0 - e)
    );
    assert_eq!(float(&body), -(e * e));
    let mad = body.replace("fma.rn.f32", "mad.rn.f32");
    assert_eq!(float(&mad), -(e * e));
    // (1 + 2^-23) * 1.5 lies exactly halfway between two f32; a tiny addend decides
    let a = f32_lit(1.0 + e);
    let lo = 1.5 + e; // odd mantissa
    let hi = 1.5 + 2.0 * e; // even mantissa
    let tie = |c: f32| float(&format!("fma.rn.f32 %f0, {a}, 0f3FC00000, {};", f32_lit(c)));
    assert_eq!(tie(0.0), hi);
    assert_eq!(tie(2f32.powi(-80)), hi);
    assert_eq!(tie(-(2f32.powi(-80))), lo);
    let rz = float(&format!(
        "fma.rz.f32 %f0, {a}, 0f3FC00000, {};",
        f32_lit(2f32.powi(-80))
    ));
    assert_eq!(rz, lo);
}

#[test]
fn directed_rounding_modes() {
    let one = f32_lit(1.0);
    let tiny = f32_lit(2f32.powi(-30));
    let up = f32::from_bits(1.0f32.to_bits() + 1);
    let add = |m: &str| {
        float(&format!(
            "mov.f32 %f1, {one};\n add{m}.f32 %f0, %f1, {tiny};"
        ))
    };
    assert_eq!(add(".rn"), 1.0);
    assert_eq!(add(".rz"), 1.0);
    assert_eq!(add(".rm"), 1.0);
    assert_eq!(add(".rp"), up);
    let sub = |m: &str| {
        float(&format!(
            "mov.f32 %f1, {one};\n sub{m}.f32 %f0, %f1, {tiny};"
        ))
    };
    assert_eq!(sub(".rn"), 1.0);
    assert_eq!(sub(".rz"), f32::from_bits(1.0f32.to_bits() - 1));
    assert_eq!(sub(".rp"), 1.0);
    // 1/3 rounds up to nearest; toward zero it is one ulp lower
    let div = |m: &str| {
        float(&format!(
            "mov.f32 %f1, {one};\n div{m}.f32 %f0, %f1, 0f40400000;"
        ))
    };
    assert_eq!(div(".rn").to_bits(), 0x3EAA_AAAB);
    assert_eq!(div(".rz").to_bits(), 0x3EAA_AAAA);
    assert_eq!(div(".rp").to_bits(), 0x3EAA_AAAB);
    assert_eq!(
        float(&format!(
            "mov.f32 %f1, {one};\n neg.f32 %f1, %f1;\n div.rm.f32 %f0, %f1, 0f40400000;"
        ))
        .to_bits(),
        0xBEAA_AAAB
    );
    // sqrt(2) rounds down to nearest
    let sqrt = |m: &str| float(&format!("sqrt{m}.f32 %f0, 0f40000000;"));
    assert_eq!(sqrt(".rn").to_bits(), 0x3FB5_04F3);
    assert_eq!(sqrt(".rz").to_bits(), 0x3FB5_04F3);
    assert_eq!(sqrt(".rp").to_bits(), 0x3FB5_04F4);
    // products: 3 * (1 + 2^-23) needs rounding
    let x = f32_lit(1.0 + f32::EPSILON);
    let mul = |m: &str| {
        float(&format!(
            "mov.f32 %f1, {x};\n mul{m}.f32 %f0, %f1, 0f40400000;"
        ))
    };
    assert_eq!(mul(".rz").to_bits() + 1, mul(".rp").to_bits());
    // overflow: toward zero stays finite
    let big = f32_lit(f32::MAX);
    assert_eq!(
        float(&format!("mov.f32 %f1, {big};\n add.rz.f32 %f0, %f1, %f1;")),
        f32::MAX
    );
    assert_eq!(
        float(&format!("mov.f32 %f1, {big};\n add.rn.f32 %f0, %f1, %f1;")),
        f32::INFINITY
    );
}

#[test]
fn ftz_sat_min_max_and_nan() {
    let sub = f32_lit(f32::from_bits(1)); // smallest subnormal
    assert_eq!(
        float(&format!("mov.f32 %f1, {sub};\n add.f32 %f0, %f1, {sub};")),
        f32::from_bits(2)
    );
    assert_eq!(
        float(&format!(
            "mov.f32 %f1, {sub};\n add.ftz.f32 %f0, %f1, {sub};"
        )),
        0.0
    );
    assert_eq!(
        float("mov.f32 %f1, 0f40000000;\n add.sat.f32 %f0, %f1, %f1;"),
        1.0
    );
    assert_eq!(
        float("mov.f32 %f1, 0fC0000000;\n mul.sat.f32 %f0, %f1, %f1;"),
        1.0
    );
    assert_eq!(
        float("mov.f32 %f1, 0fC0000000;\n add.sat.f32 %f0, %f1, 0f3F800000;"),
        0.0
    );
    let nan = "0f7FC00000";
    assert_eq!(
        float(&format!(
            "mov.f32 %f1, {nan};\n min.f32 %f0, %f1, 0f40000000;"
        )),
        2.0
    );
    assert_eq!(
        float(&format!(
            "mov.f32 %f1, {nan};\n max.f32 %f0, 0f40000000, %f1;"
        )),
        2.0
    );
    assert_eq!(
        float("mov.f32 %f1, 0fC0000000;\n min.f32 %f0, %f1, 0f40000000;"),
        -2.0
    );
    assert_eq!(
        float("mov.f32 %f1, 0fC0000000;\n max.f32 %f0, %f1, 0f40000000;"),
        2.0
    );
    assert!(float(&format!(
        "mov.f32 %f1, {nan};\n add.f32 %f0, %f1, 0f40000000;"
    ))
    .is_nan());
}

#[test]
fn approximate_functions_within_the_isa_error() {
    let approx =
        |op: &str, x: f32| float(&format!("mov.f32 %f1, {};\n {op} %f0, %f1;", f32_lit(x)));
    let close = |got: f32, want: f64| {
        let rel = ((got as f64 - want) / want).abs();
        assert!(
            rel < 2f64.powi(-21),
            "{got} vs {want}: relative error {rel}"
        );
    };
    assert_eq!(approx("ex2.approx.ftz.f32", 3.0), 8.0);
    close(approx("ex2.approx.ftz.f32", 0.5), 2f64.sqrt());
    close(approx("ex2.approx.f32", -10.25), 2f64.powf(-10.25));
    assert_eq!(approx("lg2.approx.ftz.f32", 8.0), 3.0);
    close(approx("lg2.approx.f32", 10.0), 10f64.log2());
    assert_eq!(approx("lg2.approx.f32", 0.0), f32::NEG_INFINITY);
    assert!(approx("lg2.approx.f32", -1.0).is_nan());
    assert_eq!(approx("rsqrt.approx.f32", 4.0), 0.5);
    close(approx("rsqrt.approx.ftz.f32", 3.0), 1.0 / 3f64.sqrt());
    assert_eq!(approx("rcp.approx.f32", 4.0), 0.25);
    close(approx("rcp.rn.f32", 3.0), 1.0 / 3.0);
    close(approx("sqrt.approx.f32", 3.0), 3f64.sqrt());
    close(approx("tanh.approx.f32", 0.5), 0.5f64.tanh());
    close(approx("sin.approx.f32", 0.5), 0.5f64.sin());
    close(approx("cos.approx.f32", 0.5), 0.5f64.cos());
}

// ---- comparisons, predicates, selection

#[test]
fn setp_every_comparison() {
    // %r0 gets one bit per comparison of (a, b)
    let bits = |ty: &str, a: &str, b: &str, cmps: &[&str]| -> u32 {
        let mut body = format!("mov.{ty} %r1, {a};\n mov.{ty} %r2, {b};\n mov.u32 %r0, 0;\n");
        if ty == "f32" {
            body = body.replace("%r1", "%f1").replace("%r2", "%f2");
        }
        let (x, y) = if ty == "f32" {
            ("%f1", "%f2")
        } else {
            ("%r1", "%r2")
        };
        for (i, c) in cmps.iter().enumerate() {
            body += &format!(
                "setp.{c}.{ty} %p1, {x}, {y};\n selp.b32 %r3, {}, 0, %p1;\n or.b32 %r0, %r0, %r3;\n",
                1 << i
            );
        }
        int(&body)
    };
    let int_cmps = ["eq", "ne", "lt", "le", "gt", "ge"];
    // -1 vs 1: signed less, unsigned greater
    assert_eq!(bits("s32", "-1", "1", &int_cmps), 0b001110);
    assert_eq!(bits("u32", "-1", "1", &int_cmps), 0b110010);
    assert_eq!(bits("u32", "-1", "1", &["lo", "ls", "hi", "hs"]), 0b1100);
    assert_eq!(bits("u32", "5", "5", &int_cmps), 0b101001);
    let fcmps = [
        "eq", "ne", "lt", "le", "gt", "ge", "equ", "neu", "ltu", "leu", "gtu", "geu", "num", "nan",
    ];
    // -1 vs 1: ne lt le, neu ltu leu, num
    let want = [1, 2, 3, 7, 8, 9, 12].iter().map(|b| 1 << b).sum::<u32>();
    assert_eq!(bits("f32", "0fBF800000", "0f3F800000", &fcmps), want);
    // with a NaN every ordered comparison is false, every unordered one true
    assert_eq!(
        bits("f32", "0f7FC00000", "0f3F800000", &fcmps),
        0b10_1111_1100_0000
    );
    let wide = "mov.u64 %rd1, 0x100000000;\n setp.gt.u64 %p1, %rd1, 1;\n selp.b32 %r0, 1, 0, %p1;";
    assert_eq!(int(wide), 1);
}

#[test]
fn setp_combinations_pairs_and_predicate_logic() {
    let body = "mov.u32 %r1, 3;\n setp.lt.u32 %p2, %r1, 5;\n \
                setp.gt.and.u32 %p1|%p3, %r1, 1, !%p2;\n \
                selp.b32 %r4, 1, 0, %p1;\n selp.b32 %r5, 2, 0, %p3;\n or.b32 %r0, %r4, %r5;";
    // (3>1) and !true = false; !(3>1) and !true = false
    assert_eq!(int(body), 0);
    let body = body.replace("!%p2", "%p2");
    // p = true, q = !(3>1) and true = false
    assert_eq!(int(&body), 1);
    let body = "setp.eq.u32 %p1|%p2, %r1, 0;\n selp.b32 %r0, 4, 8, %p2;";
    assert_eq!(int(body), 8);
    let logic = "setp.eq.u32 %p1, %r1, 0;\n setp.ne.u32 %p2, %r1, 0;\n \
                 and.pred %p3, %p1, %p2;\n or.pred %p4, %p1, %p2;\n not.pred %p5, %p3;\n \
                 xor.pred %p6, %p4, %p5;\n selp.b32 %r2, 1, 0, %p3;\n selp.b32 %r3, 2, 0, %p4;\n \
                 selp.b32 %r4, 4, 0, %p5;\n selp.b32 %r5, 8, 0, %p6;\n \
                 or.b32 %r0, %r2, %r3;\n or.b32 %r0, %r0, %r4;\n or.b32 %r0, %r0, %r5;";
    assert_eq!(int(logic), 0b0110);
}

// ---- conversions

#[test]
fn cvt_int_to_float_rounding() {
    assert_eq!(
        float("mov.u32 %r1, 16777217;\n cvt.rn.f32.u32 %f0, %r1;"),
        16777216.0
    );
    assert_eq!(
        float("mov.u32 %r1, 16777219;\n cvt.rn.f32.u32 %f0, %r1;"),
        16777220.0
    );
    assert_eq!(
        float("mov.u32 %r1, 16777219;\n cvt.rz.f32.u32 %f0, %r1;"),
        16777218.0
    );
    assert_eq!(
        float("mov.u32 %r1, 16777217;\n cvt.rp.f32.u32 %f0, %r1;"),
        16777218.0
    );
    assert_eq!(float("mov.u32 %r1, -3;\n cvt.rn.f32.s32 %f0, %r1;"), -3.0);
    assert_eq!(
        float("mov.u32 %r1, -16777217;\n cvt.rm.f32.s32 %f0, %r1;"),
        -16777218.0
    );
    assert_eq!(
        float("mov.u32 %r1, -1;\n cvt.rz.f32.u32 %f0, %r1;"),
        4294967040.0
    );
}

#[test]
fn cvt_float_to_int_rounds_and_saturates() {
    let cvt = |m: &str, ty: &str, x: f32| {
        int(&format!(
            "mov.f32 %f1, {};\n cvt.{m}.{ty}.f32 %r0, %f1;",
            f32_lit(x)
        ))
    };
    assert_eq!(cvt("rzi", "s32", -2.7), (-2i32) as u32);
    assert_eq!(cvt("rmi", "s32", -2.2), (-3i32) as u32);
    assert_eq!(cvt("rpi", "s32", 2.2), 3);
    assert_eq!(cvt("rni", "s32", 2.5), 2);
    assert_eq!(cvt("rni", "s32", 3.5), 4);
    assert_eq!(cvt("rzi", "s32", 1e20), i32::MAX as u32);
    assert_eq!(cvt("rzi", "s32", -1e20), i32::MIN as u32);
    assert_eq!(cvt("rzi", "u32", -1.0), 0);
    assert_eq!(cvt("rzi", "u32", f32::NAN), 0);
    assert_eq!(
        float("mov.f32 %f1, 0fC0300000;\n cvt.rmi.f32.f32 %f0, %f1;"),
        -3.0
    );
    assert_eq!(
        float("mov.f32 %f1, 0fC0300000;\n cvt.rzi.f32.f32 %f0, %f1;"),
        -2.0
    );
}

#[test]
fn cvt_between_integer_widths_and_float_widths() {
    let st64 = "\n st.global.u64 [%rd14], %rd1;";
    let w = run1(
        &format!("mov.u32 %r1, -2;\n cvt.u64.u32 %rd1, %r1;{st64}"),
        &[],
        2,
    )
    .unwrap();
    assert_eq!(w, vec![0xFFFF_FFFE, 0]);
    let w = run1(
        &format!("mov.u32 %r1, -2;\n cvt.s64.s32 %rd1, %r1;{st64}"),
        &[],
        2,
    )
    .unwrap();
    assert_eq!(w, vec![0xFFFF_FFFE, 0xFFFF_FFFF]);
    assert_eq!(
        int("mov.u64 %rd1, 0x100000005;\n cvt.u32.u64 %r0, %rd1;"),
        5
    );
    assert_eq!(int("mov.u32 %r1, 300;\n cvt.sat.u8.u32 %r0, %r1;"), 255);
    assert_eq!(int("mov.u32 %r1, -300;\n cvt.sat.s8.s32 %r0, %r1;"), 0x80);
    let body = "mov.f32 %f1, 0f3DCCCCCD;\n .reg .f64 %d<2>;\n cvt.f64.f32 %d0, %f1;\n \
                mul.f64 %d1, %d0, 0d4024000000000000;\n cvt.rn.f32.f64 %f0, %d1;";
    assert_eq!(float(body), (0.1f32 as f64 * 10.0) as f32);
    let body = body.replace("cvt.rn.f32.f64", "cvt.rz.f32.f64");
    assert!(float(&body) <= (0.1f32 as f64 * 10.0) as f32);
}

// ---- moves, special registers, memory

#[test]
fn mov_pack_unpack_and_bit_moves() {
    let body = "mov.u32 %r1, 0x11111111;\n mov.u32 %r2, 0x22222222;\n mov.b64 %rd1, {%r1, %r2};\n \
                st.global.u64 [%rd14], %rd1;\n mov.b64 {%r3, %r4}, %rd1;\n \
                st.global.u32 [%rd14+8], %r4;\n mov.b32 %f1, 0f40490FDB;\n mov.b32 %r5, %f1;\n \
                st.global.u32 [%rd14+12], %r5;";
    assert_eq!(
        run1(body, &[], 4).unwrap(),
        vec![0x1111_1111, 0x2222_2222, 0x2222_2222, 0x4049_0FDB]
    );
}

#[test]
fn special_registers_of_a_3d_launch() {
    // each thread writes 12 words (10 used): tid.x,y,z ntid.x ctaid.x,y nctaid.x,y laneid warpid
    let body = "mov.u32 %r1, %tid.x;\n mov.u32 %r2, %tid.y;\n mov.u32 %r3, %tid.z;\n \
                mov.u32 %r4, %ntid.x;\n mov.u32 %r5, %ntid.y;\n mov.u32 %r6, %ctaid.x;\n \
                mov.u32 %r7, %ctaid.y;\n mov.u32 %r8, %nctaid.x;\n \
                mad.lo.u32 %r9, %r3, %r5, %r2;\n mad.lo.u32 %r9, %r9, %r4, %r1;\n \
                mov.u32 %r10, %ntid.z;\n mul.lo.u32 %r10, %r10, %r5;\n mul.lo.u32 %r10, %r10, %r4;\n \
                mad.lo.u32 %r11, %r7, %r8, %r6;\n mad.lo.u32 %r9, %r11, %r10, %r9;\n \
                mul.lo.u32 %r9, %r9, 48;\n cvt.u64.u32 %rd1, %r9;\n add.u64 %rd1, %rd14, %rd1;\n \
                st.global.v4.u32 [%rd1], {%r1, %r2, %r3, %r4};\n \
                st.global.v2.u32 [%rd1+16], {%r6, %r7};\n mov.u32 %r12, %nctaid.y;\n \
                st.global.v2.u32 [%rd1+24], {%r8, %r12};\n mov.u32 %r13, %laneid;\n \
                mov.u32 %r14, %warpid;\n st.global.v2.u32 [%rd1+32], {%r13, %r14};";
    let (grid, block) = ([3, 2, 1], [8, 5, 1]);
    let n = 6 * 40;
    let out = launch(body, grid, block, &[], n * 12).unwrap();
    for (t, w) in out.chunks(12).enumerate() {
        let (cta, local) = (t / 40, t % 40);
        let want = [
            local % 8,
            local / 8,
            0,
            8,
            cta % 3,
            cta / 3,
            3,
            2,
            local % 32,
            local / 32,
        ];
        let got: Vec<usize> = w[..10].iter().map(|&x| x as usize).collect();
        assert_eq!(got, want, "thread {t}");
    }
}

#[test]
fn vector_loads_offsets_and_params() {
    let input: Vec<f32> = (0..8).map(|i| i as f32 + 0.5).collect();
    let body = "ld.global.v4.f32 {%f1, %f2, %f3, %f4}, [%rd15+16];\n \
                ld.global.v2.f32 {%f5, %f6}, [%rd15];\n ld.global.nc.f32 %f7, [%rd15+12];\n \
                st.global.v4.f32 [%rd14], {%f4, %f3, %f2, %f1};\n \
                st.global.v2.f32 [%rd14+16], {%f6, %f5};\n st.global.f32 [%rd14+24], %f7;";
    let out = run1(body, &input, 7).unwrap();
    let got: Vec<f32> = out.iter().map(|&b| f32::from_bits(b)).collect();
    assert_eq!(got, vec![7.5, 6.5, 5.5, 4.5, 1.5, 0.5, 3.5]);
}

#[test]
fn generic_addressing_of_shared_and_local_memory() {
    let body = "mov.u32 %r1, 0x1234;\n st.shared.u32 [sm+8], %r1;\n mov.u64 %rd1, sm;\n \
                cvta.shared.u64 %rd2, %rd1;\n ld.u32 %r2, [%rd2+8];\n add.u32 %r2, %r2, 1;\n \
                st.u32 [%rd2+12], %r2;\n ld.shared.u32 %r0, [sm+12];\n \
                .local .align 8 .b8 depot[16];\n mov.u64 %rd3, depot;\n cvta.local.u64 %rd4, %rd3;\n \
                st.u32 [%rd4+4], %r0;\n ld.local.u32 %r0, [depot+4];\n add.u32 %r0, %r0, 1;";
    assert_eq!(int(body), 0x1236);
}

#[test]
fn loops_and_predicated_instructions() {
    // sum of 0..9 by a counted loop, with a predicated add that skips odd numbers
    let body = "mov.u32 %r0, 0;\n mov.u32 %r1, 0;\n mov.u32 %r5, 0;\n LOOP:\n \
                add.u32 %r0, %r0, %r1;\n and.b32 %r2, %r1, 1;\n setp.eq.u32 %p2, %r2, 0;\n \
                @%p2 add.u32 %r5, %r5, %r1;\n @!%p2 add.u32 %r5, %r5, 100;\n \
                add.u32 %r1, %r1, 1;\n setp.lt.u32 %p1, %r1, 10;\n @%p1 bra.uni LOOP;\n \
                st.global.u32 [%rd14+4], %r5;";
    let out = run1(&format!("{body}\n st.global.u32 [%rd14], %r0;"), &[], 2).unwrap();
    assert_eq!(out, vec![45, 20 + 500]);
}

#[test]
fn a_kernel_that_never_ends_is_reported() {
    let e = error("SPIN:\n bra SPIN;", [1, 1, 1], [1, 1, 1]);
    assert!(
        e.contains("does not terminate") && e.contains("bra SPIN"),
        "{e}"
    );
}

// ---- barriers and shared memory checks

/// Each thread stores its index in shared memory and reads its mirror's after a barrier.
const REVERSE: &str = "mov.u32 %r1, %tid.x;\n mov.u32 %r2, %ntid.x;\n shl.b32 %r3, %r1, 2;\n \
    mov.u32 %r4, sm;\n add.u32 %r5, %r4, %r3;\n st.shared.u32 [%r5], %r1;\n BARRIER\n \
    sub.u32 %r6, %r2, %r1;\n sub.u32 %r6, %r6, 1;\n shl.b32 %r6, %r6, 2;\n add.u32 %r6, %r4, %r6;\n \
    ld.shared.u32 %r7, [%r6];\n cvt.u64.u32 %rd1, %r3;\n add.u64 %rd1, %rd14, %rd1;\n \
    st.global.u32 [%rd1], %r7;";

#[test]
fn bar_sync_orders_shared_memory() {
    let out = launch(
        &REVERSE.replace("BARRIER", "bar.sync 0;"),
        [1, 1, 1],
        [64, 1, 1],
        &[],
        64,
    )
    .unwrap();
    assert_eq!(out, (0..64).rev().collect::<Vec<u32>>());
}

#[test]
fn a_missing_barrier_is_a_race_or_an_uninitialised_read() {
    let e = error(&REVERSE.replace("BARRIER", ""), [1, 1, 1], [64, 1, 1]);
    // thread 0 runs first and reads the slot of thread 63 before anyone wrote it
    assert!(
        e.contains("uninitialised shared memory") && e.contains("thread (0,0,0)"),
        "{e}"
    );
    assert!(
        e.contains("ld.shared.u32 %r7, [%r6]") && e.contains("at 0xfc"),
        "{e}"
    );
    // once every slot was written in an earlier interval, the stale read is a race
    let twice = format!(
        "{}\n bar.sync 0;\n {}",
        REVERSE.replace("BARRIER", "bar.sync 0;"),
        REVERSE.replace("BARRIER", "")
    );
    let e = error(&twice, [1, 1, 1], [64, 1, 1]);
    // (thread 32 overwrites the slot thread 31 read in the same interval)
    assert!(
        e.contains("race at 0x80: written after a read by thread (31,0,0)"),
        "{e}"
    );
    assert!(e.contains("thread (32,0,0) of CTA (0,0,0)"), "{e}");
}

#[test]
fn two_threads_writing_one_shared_word_is_a_race() {
    let body = "mov.u32 %r1, %tid.x;\n shr.u32 %r2, %r1, 1;\n shl.b32 %r2, %r2, 2;\n \
                st.shared.u32 [%r2], %r1;";
    let e = error(body, [1, 1, 1], [4, 1, 1]);
    assert!(
        e.contains("race at 0x0") && e.contains("thread (0,0,0) and by thread (1,0,0)"),
        "{e}"
    );
    assert!(
        e.contains("st.shared.u32 [%r2], %r1") && e.contains("line 22"),
        "{e}"
    );
}

#[test]
fn shared_out_of_bounds_and_misaligned_accesses() {
    let e = error(
        "mov.u32 %r1, 1024;\n st.shared.f32 [%r1], %f1;",
        [1, 1, 1],
        [1, 1, 1],
    );
    assert!(
        e.contains("out-of-bounds shared write") && e.contains("0x400"),
        "{e}"
    );
    let e = error(
        "mov.u32 %r1, 8;\n st.shared.v4.f32 [%r1], {%f1, %f1, %f1, %f1};",
        [1, 1, 1],
        [1, 1, 1],
    );
    assert!(
        e.contains("misaligned shared write of 16 bytes at 0x8"),
        "{e}"
    );
}

#[test]
fn global_out_of_bounds_names_kernel_line_thread_and_address() {
    // 64 elements in; thread 0 of CTA 1 reads element 64, the first past the end
    let body = "mov.u32 %r1, %ctaid.x;\n mov.u32 %r2, %tid.x;\n mad.lo.u32 %r3, %r1, 64, %r2;\n \
                mul.wide.u32 %rd1, %r3, 4;\n add.u64 %rd2, %rd15, %rd1;\n ld.global.f32 %f1, [%rd2];";
    let e = error(body, [3, 1, 1], [64, 1, 1]);
    assert!(
        e.contains("kernel `t` line 24 `ld.global.f32 %f1, [%rd2];`"),
        "{e}"
    );
    assert!(e.contains("thread (0,0,0) of CTA (1,0,0)"), "{e}");
    assert!(
        e.contains("byte 256 of the buffer of parameter `p_in`"),
        "{e}"
    );
    let e = error(
        "ld.global.v2.f32 {%f1, %f2}, [%rd15+4];",
        [1, 1, 1],
        [1, 1, 1],
    );
    assert!(e.contains("misaligned global read of 8 bytes"), "{e}");
    let e = error(
        "mov.u64 %rd1, 64;\n ld.global.f32 %f1, [%rd1];",
        [1, 1, 1],
        [1, 1, 1],
    );
    assert!(e.contains("not inside any buffer"), "{e}");
}

#[test]
fn early_exit_does_not_hold_up_a_barrier_but_divergent_barriers_are_errors() {
    // threads >= 16 exit; the rest still meet at the barrier (the ISA releases it)
    let body = "mov.u32 %r1, %tid.x;\n setp.ge.u32 %p1, %r1, 16;\n @%p1 bra DONE;\n \
                shl.b32 %r2, %r1, 2;\n st.shared.u32 [%r2], %r1;\n bar.sync 0;\n \
                xor.b32 %r3, %r2, 4;\n ld.shared.u32 %r4, [%r3];\n cvt.u64.u32 %rd1, %r2;\n \
                add.u64 %rd1, %rd14, %rd1;\n st.global.u32 [%rd1], %r4;\n DONE:";
    let out = launch(body, [1, 1, 1], [64, 1, 1], &[], 16).unwrap();
    assert_eq!(out, (0..16).map(|i| i ^ 1).collect::<Vec<u32>>());
    let body =
        "mov.u32 %r1, %tid.x;\n setp.ge.u32 %p1, %r1, 16;\n @%p1 bra OTHER;\n bar.sync 0;\n \
                bra DONE;\n OTHER:\n bar.sync 0;\n DONE:";
    let e = error(body, [1, 1, 1], [64, 1, 1]);
    assert!(
        e.contains("divergent bar.sync") && e.contains("thread (16,0,0)"),
        "{e}"
    );
    let body = "mov.u32 %r1, %tid.x;\n setp.ge.u32 %p1, %r1, 16;\n selp.b32 %r2, 1, 0, %p1;\n \
                barrier.sync %r2;";
    let e = error(body, [1, 1, 1], [64, 1, 1]);
    assert!(e.contains("deadlock"), "{e}");
}

// ---- warp collectives

#[test]
fn shfl_butterfly_reduction_sums_a_warp() {
    let body = "mov.u32 %r1, %tid.x;\n mov.u32 %r2, %r1;\n mov.u32 %r3, 16;\n LOOP:\n \
                shfl.sync.bfly.b32 %r4, %r2, %r3, 31, 0xffffffff;\n add.u32 %r2, %r2, %r4;\n \
                shr.u32 %r3, %r3, 1;\n setp.ne.u32 %p1, %r3, 0;\n @%p1 bra LOOP;\n \
                shl.b32 %r5, %r1, 2;\n cvt.u64.u32 %rd1, %r5;\n add.u64 %rd1, %rd14, %rd1;\n \
                st.global.u32 [%rd1], %r2;";
    let out = launch(body, [2, 1, 1], [64, 1, 1], &[], 64).unwrap();
    // lanes of warp 0 hold 0..31, warp 1 hold 32..63
    assert!(out[..32].iter().all(|&s| s == 496), "{out:?}");
    assert!(out[32..].iter().all(|&s| s == 496 + 32 * 32), "{out:?}");
}

#[test]
fn shfl_modes_follow_the_isa() {
    let shfl = |instr: &str| -> Vec<u32> {
        let body = format!(
            "mov.u32 %r1, %tid.x;\n mul.lo.u32 %r2, %r1, 10;\n {instr}\n selp.b32 %r5, 1000, 0, %p1;\n \
             add.u32 %r4, %r4, %r5;\n shl.b32 %r6, %r1, 2;\n cvt.u64.u32 %rd1, %r6;\n \
             add.u64 %rd1, %rd14, %rd1;\n st.global.u32 [%rd1], %r4;"
        );
        launch(&body, [1, 1, 1], [32, 1, 1], &[], 32).unwrap()
    };
    let down = shfl("shfl.sync.down.b32 %r4|%p1, %r2, 3, 31, 0xffffffff;");
    for (l, v) in down.iter().enumerate() {
        let want = if l + 3 <= 31 {
            (l + 3) * 10 + 1000
        } else {
            l * 10
        };
        assert_eq!(*v as usize, want, "down lane {l}");
    }
    let up = shfl("shfl.sync.up.b32 %r4|%p1, %r2, 2, 0, 0xffffffff;");
    for (l, v) in up.iter().enumerate() {
        let want = if l >= 2 { (l - 2) * 10 + 1000 } else { l * 10 };
        assert_eq!(*v as usize, want, "up lane {l}");
    }
    // idx with 8-lane segments (c = 0x181f): lane reads lane 5 of its segment
    let idx = shfl("shfl.sync.idx.b32 %r4|%p1, %r2, 5, 0x181f, 0xffffffff;");
    for (l, v) in idx.iter().enumerate() {
        assert_eq!(*v as usize, (l / 8 * 8 + 5) * 10 + 1000, "idx lane {l}");
    }
}

#[test]
fn shfl_with_diverged_or_missing_lanes_is_an_error() {
    let body = "mov.u32 %r1, %tid.x;\n setp.lt.u32 %p1, %r1, 16;\n @%p1 bra A;\n \
                shfl.sync.bfly.b32 %r2, %r1, 1, 31, 0xffffffff;\n bra DONE;\n A:\n \
                shfl.sync.bfly.b32 %r2, %r1, 1, 31, 0xffffffff;\n DONE:";
    let e = error(body, [1, 1, 1], [32, 1, 1]);
    assert!(
        e.contains("warp divergence") && e.contains("shfl.sync.bfly"),
        "{e}"
    );
    // half the warp exited: lane 0 reads lane 16
    let body = "mov.u32 %r1, %tid.x;\n setp.ge.u32 %p1, %r1, 16;\n @%p1 bra DONE;\n \
                shfl.sync.bfly.b32 %r2, %r1, 16, 31, 0xffffffff;\n DONE:";
    let e = error(body, [1, 1, 1], [32, 1, 1]);
    assert!(e.contains("reads lane 16, which does not take part"), "{e}");
    // with a half-warp membermask the same shuffle within the half is fine
    let body = "mov.u32 %r1, %tid.x;\n setp.ge.u32 %p1, %r1, 16;\n @%p1 bra DONE;\n \
                shfl.sync.bfly.b32 %r2, %r1, 8, 31, 0x0000ffff;\n shl.b32 %r3, %r1, 2;\n \
                cvt.u64.u32 %rd1, %r3;\n add.u64 %rd1, %rd14, %rd1;\n st.global.u32 [%rd1], %r2;\n DONE:";
    let out = launch(body, [1, 1, 1], [32, 1, 1], &[], 16).unwrap();
    assert_eq!(out, (0..16).map(|l| l ^ 8).collect::<Vec<u32>>());
}

#[test]
fn vote_ballot_all_any_uni() {
    let body = "mov.u32 %r1, %tid.x;\n and.b32 %r2, %r1, 1;\n setp.eq.u32 %p1, %r2, 1;\n \
                vote.sync.ballot.b32 %r3, %p1, 0xffffffff;\n vote.sync.any.pred %p2, %p1, 0xffffffff;\n \
                vote.sync.all.pred %p3, %p1, 0xffffffff;\n setp.lt.u32 %p4, %r1, 64;\n \
                vote.sync.uni.pred %p5, %p4, 0xffffffff;\n vote.sync.all.pred %p6, !%p4, 0xffffffff;\n \
                selp.b32 %r4, 1, 0, %p2;\n selp.b32 %r5, 2, 0, %p3;\n selp.b32 %r6, 4, 0, %p5;\n \
                selp.b32 %r7, 8, 0, %p6;\n or.b32 %r4, %r4, %r5;\n or.b32 %r4, %r4, %r6;\n \
                or.b32 %r4, %r4, %r7;\n setp.eq.u32 %p7, %r1, 0;\n \
                @%p7 st.global.v2.u32 [%rd14], {%r3, %r4};";
    assert_eq!(
        launch(body, [1, 1, 1], [32, 1, 1], &[], 2).unwrap(),
        vec![0xAAAA_AAAA, 0b101]
    );
}

// ---- atomics

#[test]
fn atomics_on_global_and_shared_memory() {
    // every thread of 40 CTAs adds 0.5 to out[0] and 1 to out[1]; thread 0 of each CTA
    // counts its CTA's threads in shared memory and adds that to out[2]
    let body = "mov.u32 %r1, %tid.x;\n setp.eq.u32 %p1, %r1, 0;\n mov.u32 %r9, 0;\n \
                @%p1 st.shared.u32 [sm], %r9;\n bar.sync 0;\n atom.shared.add.u32 %r2, [sm], 1;\n \
                atom.global.add.f32 %f1, [%rd14], 0f3F000000;\n red.global.add.u32 [%rd14+4], 1;\n \
                bar.sync 0;\n ld.shared.u32 %r3, [sm];\n @%p1 atom.global.add.u32 %r4, [%rd14+8], %r3;\n \
                atom.global.cas.b32 %r5, [%rd14+12], 0, 7;\n atom.global.max.s32 %r6, [%rd14+16], %r1;";
    let out = launch(body, [40, 1, 1], [96, 1, 1], &[], 5).unwrap();
    assert_eq!(f32::from_bits(out[0]), 40.0 * 96.0 * 0.5);
    assert_eq!(&out[1..], &[40 * 96, 40 * 96, 7, 95]);
}

// ---- errors for what is not supported or not valid

#[test]
fn unsupported_instructions_and_modifiers_are_errors_with_their_line() {
    let e = error("prmt.b32 %r1, %r2, %r3, %r4;", [1, 1, 1], [1, 1, 1]);
    assert!(
        e.contains("line 19") && e.contains("unsupported instruction `prmt`"),
        "{e}"
    );
    let e = error(
        "mov.u32 %r2, 1;\n add.cc.u32 %r1, %r2, %r3;",
        [1, 1, 1],
        [1, 1, 1],
    );
    assert!(
        e.contains("line 20") && e.contains("unsupported modifier `.cc`"),
        "{e}"
    );
    let e = error("mul.wide.u64 %rd1, %rd2, %rd3;", [1, 1, 1], [1, 1, 1]);
    assert!(e.contains(".wide does not take .u64"), "{e}");
    let e = error("mov.f32 %f1, 1;", [1, 1, 1], [1, 1, 1]);
    assert!(e.contains("integer literal for a float operand"), "{e}");
}

#[test]
fn launch_configuration_and_arguments_are_checked() {
    let drv = SimDriver::new();
    drv.load_module("m", &kernel("")).unwrap();
    let buf = drv.alloc_zeroed(4).unwrap();
    let ptr = || Param::Ptr {
        buf: &buf,
        byte_offset: 0,
    };
    let cfg = |block: [u32; 3], shared_bytes| LaunchConfig {
        grid: [1, 1, 1],
        block,
        shared_bytes,
    };
    let e = drv
        .launch("m", "t", cfg([1, 1, 1], 0), &[ptr()])
        .unwrap_err()
        .to_string();
    assert!(e.contains("1 arguments given, the kernel takes 2"), "{e}");
    let e = drv
        .launch("m", "t", cfg([1, 1, 1], 0), &[ptr(), Param::F32(1.0)])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("argument 1 is an f32 but parameter `p_in` is .u64"),
        "{e}"
    );
    let e = drv
        .launch("m", "t", cfg([2048, 1, 1], 0), &[ptr(), ptr()])
        .unwrap_err()
        .to_string();
    assert!(e.contains("too large"), "{e}");
    let e = drv
        .launch("m", "t", cfg([32, 1, 1], 48 * 1024), &[ptr(), ptr()])
        .unwrap_err()
        .to_string();
    assert!(e.contains("shared memory"), "{e}");
    let e = drv
        .launch("m", "nope", cfg([1, 1, 1], 0), &[])
        .unwrap_err()
        .to_string();
    assert!(e.contains("no kernel `nope`"), "{e}");
    let e = drv
        .launch("other", "t", cfg([1, 1, 1], 0), &[])
        .unwrap_err()
        .to_string();
    assert!(e.contains("not loaded"), "{e}");
}

#[test]
fn buffers_copy_and_round_trip() {
    let drv = SimDriver::new();
    let a = drv.upload(&[1.0, 2.0, 3.0, 4.0]).unwrap();
    let b = drv.alloc_zeroed(6).unwrap();
    drv.copy(&a, 1, &b, 2, 3).unwrap();
    assert_eq!(
        drv.download(&b, 6).unwrap(),
        vec![0.0, 0.0, 2.0, 3.0, 4.0, 0.0]
    );
    drv.copy(&a, 0, &a, 1, 3).unwrap();
    assert_eq!(drv.download(&a, 4).unwrap(), vec![1.0, 1.0, 2.0, 3.0]);
    assert!(drv.copy(&a, 2, &b, 0, 3).is_err());
    assert!(drv.download(&a, 5).is_err());
    assert_eq!(drv.buf_len(&b), 6);
}

#[test]
fn a_grid_past_65535_ctas_runs_every_cta() {
    let body =
        "mov.u32 %r1, %ctaid.x;\n mul.wide.u32 %rd1, %r1, 4;\n add.u64 %rd1, %rd14, %rd1;\n \
                st.global.u32 [%rd1], %r1;";
    let n = 70_000;
    let out = launch(body, [n, 1, 1], [1, 1, 1], &[], n as usize).unwrap();
    assert!(out.iter().enumerate().all(|(i, &v)| v == i as u32));
}

#[test]
fn fma_matches_a_correctly_rounded_reference_on_many_operands() {
    // a small LCG over f32 bit patterns of moderate exponents, checked against an exact
    // reference in f64 arithmetic (the product is exact, the sum rounded once via i128)
    use super::alu::fma_f32;
    use super::isa::Rnd;
    let mut state = 0x1234_5678_9abc_def0u64;
    let mut next = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let mant = (state >> 40) as u32 & 0x7f_ffff;
        let exp = 100 + ((state >> 20) as u32 % 50);
        let sign = ((state >> 10) as u32 & 1) << 31;
        f32::from_bits(sign | exp << 23 | mant)
    };
    for _ in 0..200_000 {
        let (a, b, c) = (next(), next(), next());
        // reference: exact a*b + c as a rational with a common power-of-two denominator
        let exact = |x: f32| -> (i128, i32) {
            let b = x.to_bits();
            let m = (b & 0x7f_ffff | 0x80_0000) as i128;
            let e = ((b >> 23) & 0xff) as i32 - 150;
            (if b >> 31 == 1 { -m } else { m }, e)
        };
        let ((ma, ea), (mb, eb), (mc, ec)) = (exact(a), exact(b), exact(c));
        let (mp, ep) = (ma * mb, ea + eb);
        let e0 = ep.min(ec);
        if (ep - e0) > 60 || (ec - e0) > 60 {
            continue;
        }
        let sum = (mp << (ep - e0)) + (mc << (ec - e0));
        // round sum * 2^e0 to f32 by hand: nearest, ties to even
        let want = if sum == 0 {
            0.0
        } else {
            let neg = sum < 0;
            let mag = sum.unsigned_abs();
            let bits = 128 - mag.leading_zeros() as i32;
            let shift = bits - 24;
            let (mut m, mut e) = if shift > 0 {
                let q = mag >> shift;
                let rem = mag & ((1u128 << shift) - 1);
                let half = 1u128 << (shift - 1);
                let up = rem > half || (rem == half && q & 1 == 1);
                (q + up as u128, e0 + shift)
            } else {
                (mag << -shift, e0 + shift)
            };
            if m == 1 << 24 {
                m >>= 1;
                e += 1;
            }
            let v = m as f64 * 2f64.powi(e);
            (if neg { -v } else { v }) as f32
        };
        assert_eq!(
            fma_f32(a, b, c, Rnd::Rn).to_bits(),
            want.to_bits(),
            "fma({a:e}, {b:e}, {c:e})"
        );
    }
}
