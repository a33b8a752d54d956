//! What arithmetic, comparison and conversion instructions compute, on raw register bits.
//!
//! Integers are computed at their declared width (wrapping, as the ISA does). f32 results are
//! correctly rounded in the requested mode: `.rn` by the host's IEEE operations, `.rz/.rm/.rp`
//! from an f64 value plus the sign of its error (see [`round_f32`]). The `.approx` functions
//! (`ex2`, `lg2`, `rsqrt`, `sin`, `cos`, `tanh`) return the f64 result rounded to f32: within
//! the ISA's documented error, like the hardware.

use super::isa::{BinOp, Cmp, FMods, Rnd, TerOp, Ty, UnOp};

pub fn mask(v: u64, bits: u32) -> u64 {
    if bits >= 64 {
        v
    } else {
        v & ((1u64 << bits) - 1)
    }
}

pub fn sext(v: u64, bits: u32) -> i64 {
    if bits >= 64 {
        v as i64
    } else {
        let s = 64 - bits;
        ((v << s) as i64) >> s
    }
}

fn f32_of(v: u64) -> f32 {
    f32::from_bits(v as u32)
}

fn bits_f32(x: f32) -> u64 {
    x.to_bits() as u64
}

/// `.ftz`: subnormals become zero of the same sign.
fn ftz(x: f32) -> f32 {
    if x.is_subnormal() {
        0.0f32.copysign(x)
    } else {
        x
    }
}

/// `.sat`: clamp to [0, 1], NaN to 0.
fn sat(x: f32) -> f32 {
    if x.is_nan() {
        0.0
    } else {
        x.clamp(0.0, 1.0)
    }
}

fn next_up(x: f32) -> f32 {
    if x.is_nan() || x == f32::INFINITY {
        x
    } else if x == 0.0 {
        f32::from_bits(1)
    } else if x > 0.0 {
        f32::from_bits(x.to_bits() + 1)
    } else {
        f32::from_bits(x.to_bits() - 1)
    }
}

fn next_down(x: f32) -> f32 {
    -next_up(-x)
}

/// Round the exact value `hi + lo` to f32 in mode `rnd`. `hi` is the f64 nearest the exact
/// value and `lo` the rest (only its sign is used when `hi` is not a tie between two f32s).
pub fn round_f32(hi: f64, lo: f64, rnd: Rnd) -> f32 {
    let r = hi as f32;
    if hi.is_nan() || hi.is_infinite() {
        return r;
    }
    if r.is_infinite() {
        // |hi| is at least halfway between f32::MAX and 2^128: MAX or infinity
        let max = f32::MAX.copysign(hi as f32);
        let halfway = (f32::MAX as f64 + 2f64.powi(103)).copysign(hi);
        return match rnd {
            Rnd::Rn if hi == halfway && lo * hi < 0.0 => max,
            Rnd::Rn => r,
            Rnd::Rz => max,
            Rnd::Rm if hi > 0.0 => max,
            Rnd::Rp if hi < 0.0 => max,
            Rnd::Rm | Rnd::Rp => r,
        };
    }
    let rd = r as f64;
    let diff = if hi == rd { lo } else { hi - rd };
    if diff == 0.0 {
        return r;
    }
    match rnd {
        Rnd::Rn => {
            // hi as f32 is already nearest unless hi is exactly halfway and lo breaks the tie
            let other = if diff > 0.0 { next_up(r) } else { next_down(r) };
            let exact_tie = other.is_finite() && (other as f64 - hi) == (hi - rd);
            if exact_tie && lo != 0.0 && (lo > 0.0) == (diff > 0.0) {
                other
            } else {
                r
            }
        }
        Rnd::Rz if (diff > 0.0) != (rd > 0.0) => {
            if rd > 0.0 {
                next_down(r)
            } else {
                next_up(r)
            }
        }
        Rnd::Rz => r,
        Rnd::Rm if diff < 0.0 => next_down(r),
        Rnd::Rp if diff > 0.0 => next_up(r),
        Rnd::Rm | Rnd::Rp => r,
    }
}

/// `x*y + z` rounded once. The product of two f32 is exact in f64 and TwoSum adds `z` with
/// an exact error term, so one rounding to f32 gives the fused result. (The host's
/// `f32::mul_add` may be a slow software routine.)
#[inline]
pub fn fma_f32(x: f32, y: f32, z: f32, rnd: Rnd) -> f32 {
    let (s, e) = two_sum(x as f64 * y as f64, z as f64);
    if rnd == Rnd::Rn {
        // rounding s instead of s + e only matters when s is exactly halfway between two f32
        // (the 29 bits f32 drops from a normal f64 are 1000...0)
        let bits = s.to_bits();
        let exp = ((bits >> 52) & 0x7ff) as i32 - 1023;
        let halfway = bits & ((1 << 29) - 1) == 1 << 28;
        if e == 0.0 || (!halfway && (-126..=127).contains(&exp)) {
            return s as f32;
        }
    }
    round_f32(s, e, rnd)
}

/// `a + b` as an f64 and its exact error (TwoSum).
#[inline]
fn two_sum(a: f64, b: f64) -> (f64, f64) {
    let s = a + b;
    let bb = s - a;
    (s, (a - (s - bb)) + (b - bb))
}

fn f32_binary(op: BinOp, fm: FMods, a: f32, b: f32) -> f32 {
    let (a, b) = if fm.ftz { (ftz(a), ftz(b)) } else { (a, b) };
    let directed = fm.rnd != Rnd::Rn;
    let (x, y) = (a as f64, b as f64);
    let r = match op {
        BinOp::Add if directed => {
            let (s, e) = two_sum(x, y);
            round_f32(s, e, fm.rnd)
        }
        BinOp::Sub if directed => {
            let (s, e) = two_sum(x, -y);
            round_f32(s, e, fm.rnd)
        }
        // the product of two f32 is exact in f64
        BinOp::Mul if directed => round_f32(x * y, 0.0, fm.rnd),
        BinOp::Div if directed => {
            let q = x / y;
            // the remainder x - q*y is exact with one fma; its sign gives the error's
            let rem = (-q).mul_add(y, x);
            round_f32(q, rem * y.signum(), fm.rnd)
        }
        BinOp::Add => a + b,
        BinOp::Sub => a - b,
        BinOp::Mul => a * b,
        BinOp::Div => a / b,
        BinOp::Min => fmin(a, b),
        BinOp::Max => -fmin(-a, -b),
        _ => unreachable!("decode rejects {op:?} on floats"),
    };
    finish_f32(r, fm)
}

/// PTX `min.f32`: the non-NaN operand if one is NaN, and -0 < +0.
fn fmin(a: f32, b: f32) -> f32 {
    if a.is_nan() {
        b
    } else if b.is_nan() || a < b || (a == b && a.is_sign_negative()) {
        a
    } else {
        b
    }
}

fn fmin64(a: f64, b: f64) -> f64 {
    if a.is_nan() {
        b
    } else if b.is_nan() || a < b || (a == b && a.is_sign_negative()) {
        a
    } else {
        b
    }
}

fn finish_f32(r: f32, fm: FMods) -> f32 {
    let r = if fm.ftz { ftz(r) } else { r };
    if fm.sat {
        sat(r)
    } else {
        r
    }
}

fn f32_unary(op: UnOp, fm: FMods, a: f32) -> f32 {
    let a = if fm.ftz { ftz(a) } else { a };
    let x = a as f64;
    let r = match op {
        UnOp::Neg => -a,
        UnOp::Abs => a.abs(),
        UnOp::Rcp if fm.rnd != Rnd::Rn => return f32_binary(BinOp::Div, fm, 1.0, a),
        UnOp::Rcp => 1.0 / a,
        UnOp::Sqrt if fm.rnd != Rnd::Rn => {
            let q = x.sqrt();
            // x - q*q is exact with one fma
            round_f32(q, (-q).mul_add(q, x), fm.rnd)
        }
        UnOp::Sqrt => a.sqrt(),
        UnOp::Rsqrt => (1.0 / x.sqrt()) as f32,
        UnOp::Ex2 => x.exp2() as f32,
        UnOp::Lg2 => x.log2() as f32,
        UnOp::Sin => x.sin() as f32,
        UnOp::Cos => x.cos() as f32,
        UnOp::Tanh => x.tanh() as f32,
        _ => unreachable!("decode rejects {op:?} on floats"),
    };
    finish_f32(r, fm)
}

/// `neg abs not cnot popc clz brev rcp sqrt rsqrt ex2 lg2 sin cos tanh`.
#[inline]
pub fn unary(op: UnOp, ty: Ty, fm: FMods, a: u64) -> u64 {
    let bits = ty.bits();
    match ty {
        Ty::F32 => bits_f32(f32_unary(op, fm, f32_of(a))),
        Ty::F64 => {
            let x = f64::from_bits(a);
            let r = match op {
                UnOp::Neg => -x,
                UnOp::Abs => x.abs(),
                UnOp::Rcp => 1.0 / x,
                UnOp::Sqrt => x.sqrt(),
                UnOp::Rsqrt => 1.0 / x.sqrt(),
                UnOp::Ex2 => x.exp2(),
                UnOp::Lg2 => x.log2(),
                UnOp::Sin => x.sin(),
                UnOp::Cos => x.cos(),
                UnOp::Tanh => x.tanh(),
                _ => unreachable!("decode rejects {op:?} on floats"),
            };
            r.to_bits()
        }
        Ty::Pred => match op {
            UnOp::Not => (a == 0) as u64,
            UnOp::Cnot => (a == 0) as u64,
            _ => a,
        },
        _ => {
            let v = mask(a, bits);
            match op {
                UnOp::Neg => mask(v.wrapping_neg(), bits),
                UnOp::Abs => mask(sext(v, bits).wrapping_abs() as u64, bits),
                UnOp::Not => mask(!v, bits),
                UnOp::Cnot => (v == 0) as u64,
                UnOp::Popc => v.count_ones() as u64,
                UnOp::Clz => (v.leading_zeros() - (64 - bits)) as u64,
                UnOp::Brev => v.reverse_bits() >> (64 - bits),
                _ => unreachable!("decode rejects {op:?} on integers"),
            }
        }
    }
}

/// Two-operand instructions. Integer division by zero is an error (the ISA leaves the result
/// unspecified; a kernel that relies on it has a bug).
#[inline]
pub fn binary(op: BinOp, ty: Ty, fm: FMods, a: u64, b: u64) -> Result<u64, &'static str> {
    let bits = ty.bits();
    Ok(match ty {
        Ty::F32 => bits_f32(f32_binary(op, fm, f32_of(a), f32_of(b))),
        Ty::F64 => {
            let (x, y) = (f64::from_bits(a), f64::from_bits(b));
            let r = match op {
                BinOp::Add => x + y,
                BinOp::Sub => x - y,
                BinOp::Mul => x * y,
                BinOp::Div => x / y,
                BinOp::Min => fmin64(x, y),
                BinOp::Max => -fmin64(-x, -y),
                _ => unreachable!("decode rejects {op:?} on floats"),
            };
            r.to_bits()
        }
        _ => {
            let signed = ty.is_signed();
            let (ua, ub) = (mask(a, bits), mask(b, bits));
            let (sa, sb) = (sext(a, bits), sext(b, bits));
            match op {
                BinOp::Add => mask(ua.wrapping_add(ub), bits),
                BinOp::Sub => mask(ua.wrapping_sub(ub), bits),
                BinOp::Mul => mask(ua.wrapping_mul(ub), bits),
                BinOp::MulHi if signed => mask(((sa as i128 * sb as i128) >> bits) as u64, bits),
                BinOp::MulHi => mask(((ua as u128 * ub as u128) >> bits) as u64, bits),
                BinOp::MulWide if signed => mask((sa as i128 * sb as i128) as u64, 2 * bits),
                BinOp::MulWide => mask((ua as u128 * ub as u128) as u64, 2 * bits),
                BinOp::Div | BinOp::Rem if ub == 0 => return Err("integer division by zero"),
                BinOp::Div if signed => mask(sa.wrapping_div(sb) as u64, bits),
                BinOp::Div => ua / ub,
                BinOp::Rem if signed => mask(sa.wrapping_rem(sb) as u64, bits),
                BinOp::Rem => ua % ub,
                BinOp::Min if signed => mask(sa.min(sb) as u64, bits),
                BinOp::Min => ua.min(ub),
                BinOp::Max if signed => mask(sa.max(sb) as u64, bits),
                BinOp::Max => ua.max(ub),
                BinOp::And => ua & ub,
                BinOp::Or => ua | ub,
                BinOp::Xor => ua ^ ub,
                // shift amounts are .u32 and saturate at the width
                BinOp::Shl => {
                    let n = mask(b, 32);
                    if n >= bits as u64 {
                        0
                    } else {
                        mask(ua << n, bits)
                    }
                }
                BinOp::Shr if signed => {
                    let n = mask(b, 32).min(bits as u64 - 1);
                    mask((sa >> n) as u64, bits)
                }
                BinOp::Shr => {
                    let n = mask(b, 32);
                    if n >= bits as u64 {
                        0
                    } else {
                        ua >> n
                    }
                }
            }
        }
    })
}

/// `mad.lo/.hi/.wide` and `fma` (`mad.f32` is an fma).
#[inline]
pub fn ternary(op: TerOp, ty: Ty, fm: FMods, a: u64, b: u64, c: u64) -> u64 {
    let bits = ty.bits();
    match (op, ty) {
        (TerOp::Fma, Ty::F32) => {
            let (x, y, z) = if fm.ftz {
                (ftz(f32_of(a)), ftz(f32_of(b)), ftz(f32_of(c)))
            } else {
                (f32_of(a), f32_of(b), f32_of(c))
            };
            bits_f32(finish_f32(fma_f32(x, y, z, fm.rnd), fm))
        }
        (TerOp::Fma, _) => {
            let (x, y, z) = (f64::from_bits(a), f64::from_bits(b), f64::from_bits(c));
            x.mul_add(y, z).to_bits()
        }
        (TerOp::MadWide, _) => {
            let p = binary(BinOp::MulWide, ty, fm, a, b).expect("mul.wide cannot fail");
            mask(p.wrapping_add(c), 2 * bits)
        }
        (TerOp::MadHi, _) => {
            let p = binary(BinOp::MulHi, ty, fm, a, b).expect("mul.hi cannot fail");
            mask(p.wrapping_add(c), bits)
        }
        (TerOp::MadLo, _) => mask(a.wrapping_mul(b).wrapping_add(c), bits),
    }
}

/// `setp`'s comparison.
#[inline]
pub fn compare(cmp: Cmp, ty: Ty, ftz_inputs: bool, a: u64, b: u64) -> bool {
    if ty.is_float() {
        let (x, y) = if ty == Ty::F32 {
            let (x, y) = (f32_of(a), f32_of(b));
            if ftz_inputs {
                (ftz(x) as f64, ftz(y) as f64)
            } else {
                (x as f64, y as f64)
            }
        } else {
            (f64::from_bits(a), f64::from_bits(b))
        };
        let unordered = x.is_nan() || y.is_nan();
        return match cmp {
            Cmp::Eq => x == y,
            Cmp::Ne => !unordered && x != y,
            Cmp::Lt => x < y,
            Cmp::Le => x <= y,
            Cmp::Gt => x > y,
            Cmp::Ge => x >= y,
            Cmp::Equ => unordered || x == y,
            Cmp::Neu => x != y,
            Cmp::Ltu => unordered || x < y,
            Cmp::Leu => unordered || x <= y,
            Cmp::Gtu => unordered || x > y,
            Cmp::Geu => unordered || x >= y,
            Cmp::Num => !unordered,
            Cmp::Nan => unordered,
            Cmp::Lo | Cmp::Ls | Cmp::Hi | Cmp::Hs => unreachable!("decode rejects these"),
        };
    }
    let bits = ty.bits();
    let (ua, ub) = (mask(a, bits), mask(b, bits));
    let (sa, sb) = (sext(a, bits), sext(b, bits));
    let signed = ty.is_signed();
    match cmp {
        Cmp::Eq => ua == ub,
        Cmp::Ne => ua != ub,
        Cmp::Lt if signed => sa < sb,
        Cmp::Le if signed => sa <= sb,
        Cmp::Gt if signed => sa > sb,
        Cmp::Ge if signed => sa >= sb,
        Cmp::Lt | Cmp::Lo => ua < ub,
        Cmp::Le | Cmp::Ls => ua <= ub,
        Cmp::Gt | Cmp::Hi => ua > ub,
        Cmp::Ge | Cmp::Hs => ua >= ub,
        _ => unreachable!("decode rejects float comparisons on integers"),
    }
}

/// Round a float to an integral value (`.rni .rzi .rmi .rpi`).
fn round_integral(x: f64, rnd: Rnd) -> f64 {
    match rnd {
        Rnd::Rn => x.round_ties_even(),
        Rnd::Rz => x.trunc(),
        Rnd::Rm => x.floor(),
        Rnd::Rp => x.ceil(),
    }
}

/// The range of an integer type, as i128.
fn int_range(ty: Ty) -> (i128, i128) {
    let bits = ty.bits();
    if ty.is_signed() {
        (-(1i128 << (bits - 1)), (1i128 << (bits - 1)) - 1)
    } else {
        (0, (1i128 << bits) - 1)
    }
}

/// `cvt`. Float-to-integer conversions saturate (NaN gives 0), as the ISA specifies.
#[allow(clippy::too_many_arguments)]
pub fn convert(dty: Ty, sty: Ty, rnd: Rnd, int_rnd: bool, ftz_: bool, sat_: bool, a: u64) -> u64 {
    let dbits = dty.bits();
    let sbits = sty.bits();
    let src_float = |a: u64| -> f64 {
        if sty == Ty::F32 {
            let x = f32_of(a);
            (if ftz_ { ftz(x) } else { x }) as f64
        } else {
            f64::from_bits(a)
        }
    };
    let finish = |r: f64| -> u64 {
        if dty == Ty::F32 {
            let r = if ftz_ { ftz(r as f32) } else { r as f32 };
            bits_f32(if sat_ { sat(r) } else { r })
        } else {
            let r = if sat_ {
                if r.is_nan() {
                    0.0
                } else {
                    r.clamp(0.0, 1.0)
                }
            } else {
                r
            };
            r.to_bits()
        }
    };
    match (sty.is_float(), dty.is_float()) {
        (false, false) => {
            let v: i128 = if sty.is_signed() {
                sext(a, sbits) as i128
            } else {
                mask(a, sbits) as i128
            };
            let v = if sat_ {
                let (lo, hi) = int_range(dty);
                v.clamp(lo, hi)
            } else {
                v
            };
            mask(v as u64, dbits)
        }
        (false, true) => {
            let v: i128 = if sty.is_signed() {
                sext(a, sbits) as i128
            } else {
                mask(a, sbits) as i128
            };
            let hi = v as f64;
            let lo = (v - hi as i128) as f64;
            if dty == Ty::F32 {
                finish(round_f32(hi, lo, rnd) as f64)
            } else {
                finish(hi)
            }
        }
        (true, false) => {
            let x = src_float(a);
            if x.is_nan() {
                return 0;
            }
            let (lo, hi) = int_range(dty);
            let r = round_integral(x, rnd);
            let v = if r <= lo as f64 {
                lo
            } else if r >= hi as f64 {
                hi
            } else {
                r as i128
            };
            mask(v as u64, dbits)
        }
        (true, true) => {
            let x = src_float(a);
            if int_rnd {
                finish(round_integral(x, rnd))
            } else if dty == Ty::F32 && sty == Ty::F64 {
                finish(round_f32(x, 0.0, rnd) as f64)
            } else {
                finish(x)
            }
        }
    }
}
