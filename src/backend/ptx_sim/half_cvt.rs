//! Conversions between `.f32` and the 16-bit floats `.f16` / `.bf16`, on register bits.
//!
//! Round to nearest (ties to even) is the `half` crate's IEEE conversion; the directed modes
//! start from it and step one unit in the last place when the nearest value lies on the wrong
//! side of the input (16-bit floats are sign-magnitude, so a step is ±1 on the bits).
//! Subnormals are kept (no flush unless `.ftz`), overflow gives infinity except where the
//! rounding mode or `.satfinite` says otherwise. A NaN input gives the canonical NaN 0x7fff
//! (the ISA leaves the bits unspecified, except that `.relu` gives the canonical NaN; 0x7fff
//! is what CUDA's conversions return).

use super::isa::{Half, Rnd, ToHalf};
use half::{bf16, f16};

/// The canonical NaN of both 16-bit formats.
pub const CANONICAL_NAN: u16 = 0x7fff;

const SIGN: u16 = 0x8000;

/// The bits of the infinity of `h`.
fn infinity(h: Half) -> u16 {
    match h {
        Half::F16 => 0x7c00,
        Half::Bf16 => 0x7f80,
    }
}

/// The exact f32 value of the bits `b` of format `h`.
pub fn widen(h: Half, b: u16) -> f32 {
    match h {
        Half::F16 => f16::from_bits(b).to_f32(),
        Half::Bf16 => f32::from_bits((b as u32) << 16),
    }
}

fn nearest(h: Half, x: f32) -> u16 {
    match h {
        Half::F16 => f16::from_f32(x).to_bits(),
        Half::Bf16 => bf16::from_f32(x).to_bits(),
    }
}

/// One unit in the last place toward zero or away from it (finite, non-NaN bits).
fn toward_zero(b: u16) -> u16 {
    b - 1
}
fn away_from_zero(b: u16) -> u16 {
    b + 1
}

/// `x` rounded to format `h` in mode `rnd`.
fn round(h: Half, x: f32, rnd: Rnd) -> u16 {
    let r = nearest(h, x);
    let back = widen(h, r);
    let negative = r & SIGN != 0;
    match rnd {
        Rnd::Rn => r,
        Rnd::Rz if back.abs() > x.abs() => toward_zero(r),
        Rnd::Rm if back > x && negative => away_from_zero(r),
        Rnd::Rm if back > x => toward_zero(r),
        Rnd::Rp if back < x && negative => toward_zero(r),
        Rnd::Rp if back < x => away_from_zero(r),
        Rnd::Rz | Rnd::Rm | Rnd::Rp => r,
    }
}

/// `cvt` from the f32 bits `a` to format `m.half` with its modifiers.
pub fn to_half(m: &ToHalf, a: u32) -> u16 {
    let mut x = f32::from_bits(a);
    if m.ftz && x.is_subnormal() {
        x = 0.0f32.copysign(x);
    }
    if m.sat {
        x = if x.is_nan() { 0.0 } else { x.clamp(0.0, 1.0) };
    }
    if x.is_nan() {
        return CANONICAL_NAN;
    }
    let mut r = round(m.half, x, m.rnd);
    if m.relu && r & SIGN != 0 {
        r = 0;
    }
    if m.satfinite && r & !SIGN == infinity(m.half) {
        r = toward_zero(r);
    }
    r
}

/// `cvt.f32.{f16,bf16}` of the bits `a` (the low 16 bits of the register).
pub fn from_half(h: Half, ftz: bool, sat: bool, a: u64) -> u32 {
    let mut x = widen(h, a as u16);
    if ftz && x.is_subnormal() {
        x = 0.0f32.copysign(x);
    }
    if sat {
        x = if x.is_nan() { 0.0 } else { x.clamp(0.0, 1.0) };
    }
    x.to_bits()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cvt(half: Half, rnd: Rnd, x: f32) -> u16 {
        let m = ToHalf {
            half,
            rnd,
            relu: false,
            satfinite: false,
            ftz: false,
            sat: false,
        };
        to_half(&m, x.to_bits())
    }

    /// Every mode against its definition on a sweep of f32 values around each f16/bf16
    /// value: the result is the nearest representable value on the required side.
    #[test]
    fn directed_modes_bracket_the_input() {
        for half in [Half::F16, Half::Bf16] {
            let mut x = 1.0e-9f32;
            while x < 3.0e38 {
                for v in [x, -x, x * 1.000_03, -x * 0.999_97] {
                    let (rz, rm, rp) = (
                        widen(half, cvt(half, Rnd::Rz, v)),
                        widen(half, cvt(half, Rnd::Rm, v)),
                        widen(half, cvt(half, Rnd::Rp, v)),
                    );
                    assert!(rm <= v && v <= rp, "{half:?} {v}: rm {rm} rp {rp}");
                    assert!(rz.abs() <= v.abs(), "{half:?} {v}: rz {rz}");
                    let rn = widen(half, cvt(half, Rnd::Rn, v));
                    assert!(rn == rm || rn == rp, "{half:?} {v}: rn {rn}");
                    if rm != rp && rm.is_finite() && rp.is_finite() {
                        // rm and rp are neighbours
                        let (a, b) = (cvt(half, Rnd::Rm, v), cvt(half, Rnd::Rp, v));
                        assert_eq!((a as i32 - b as i32).abs(), 1, "{half:?} {v}");
                    }
                }
                x *= 1.37;
            }
        }
    }
}
