//! Element types of a [`Tensor`](crate::Tensor): f32, and the 16-bit floats bf16 and f16 that
//! the products may take as inputs (f32 accumulation; see `ops::cast` and `ops::matmul`).
//!
//! **Storage.** Every backend stores tensors in 32-bit words. An f32 tensor of `n` elements
//! is `n` words; a bf16 or f16 tensor is `ceil(n / 2)` words, element `2i` in the low 16 bits
//! of word `i` and element `2i + 1` in the high 16 bits (an odd count leaves the last high
//! half zero). This is the layout the PTX kernels read (`bf16x2` / `f16x2` in
//! `kernels/abi.json`) and the WGSL shaders unpack from `u32`.
//!
//! **Rounding** (one rule for every backend): f32 to bf16/f16 rounds to nearest, ties to
//! even, bit for bit as the `half` crate's `from_f32`, keeping subnormals and rounding
//! overflow to infinity; a NaN becomes the canonical NaN `0x7fff` (what CUDA's conversions
//! return). bf16/f16 to f32 is exact.

use crate::error::{BellaError, Result};
use half::{bf16, f16};
use std::fmt;
use std::str::FromStr;

/// The element type of a tensor (`"f32"`, `"bf16"`, `"f16"` in `run.json`).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    /// IEEE binary32: every op's compute and accumulation type.
    #[default]
    F32,
    /// bfloat16 (8 exponent bits, 7 mantissa bits), two per 32-bit word.
    BF16,
    /// IEEE binary16 (5 exponent bits, 10 mantissa bits), two per 32-bit word.
    F16,
}

/// The canonical NaN of both 16-bit formats.
pub const HALF_NAN: u16 = 0x7fff;

impl DType {
    /// Every dtype, in the order `--dtype` lists them.
    pub const ALL: [DType; 3] = [DType::F32, DType::BF16, DType::F16];

    /// The name used by `--dtype`, safetensors headers (upper-cased) and messages.
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::BF16 => "bf16",
            DType::F16 => "f16",
        }
    }
    /// Bytes per element.
    pub fn size_bytes(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::BF16 | DType::F16 => 2,
        }
    }
    /// A 16-bit float type.
    pub fn is_half(self) -> bool {
        self != DType::F32
    }
    /// 32-bit words of storage for `n` elements.
    pub fn words(self, n: usize) -> usize {
        match self {
            DType::F32 => n,
            DType::BF16 | DType::F16 => n.div_ceil(2),
        }
    }
    /// `x` rounded to this 16-bit type, as bits (see the module notes).
    ///
    /// # Panics
    /// For [`DType::F32`] (a caller's bug, never an input's).
    pub fn round_bits(self, x: f32) -> u16 {
        if x.is_nan() {
            return HALF_NAN;
        }
        match self {
            DType::BF16 => bf16::from_f32(x).to_bits(),
            DType::F16 => f16::from_f32(x).to_bits(),
            DType::F32 => panic!("round_bits on f32"),
        }
    }
    /// The exact value of the bits `b` of this 16-bit type.
    ///
    /// # Panics
    /// For [`DType::F32`].
    pub fn widen_bits(self, b: u16) -> f32 {
        match self {
            DType::BF16 => f32::from_bits((b as u32) << 16),
            DType::F16 => f16::from_bits(b).to_f32(),
            DType::F32 => panic!("widen_bits on f32"),
        }
    }
    /// `x` rounded to this type and back (the identity for f32).
    pub fn round(self, x: f32) -> f32 {
        match self {
            DType::F32 => x,
            _ => self.widen_bits(self.round_bits(x)),
        }
    }
}

/// 16-bit values packed two per 32-bit word (see the module notes).
pub fn pack_bits(bits: &[u16]) -> Vec<u32> {
    bits.chunks(2)
        .map(|p| p[0] as u32 | (p.get(1).copied().unwrap_or(0) as u32) << 16)
        .collect()
}

/// The first `n` 16-bit values of packed words.
pub fn unpack_bits(words: &[u32], n: usize) -> Vec<u16> {
    (0..n)
        .map(|i| (words[i / 2] >> (16 * (i % 2))) as u16)
        .collect()
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for DType {
    type Err = BellaError;
    fn from_str(s: &str) -> Result<DType> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "float32" => Ok(DType::F32),
            "bf16" | "bfloat16" => Ok(DType::BF16),
            "f16" | "float16" | "half" => Ok(DType::F16),
            _ => Err(BellaError::invalid(format!(
                "unknown dtype {s:?} (expected f32, bf16 or f16)"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packing_round_trips_odd_counts() {
        let bits = [1u16, 2, 3, 0xffff, 0x8000];
        let words = pack_bits(&bits);
        assert_eq!(words, vec![0x0002_0001, 0xffff_0003, 0x0000_8000]);
        assert_eq!(unpack_bits(&words, 5), bits);
        assert_eq!(DType::BF16.words(5), 3);
        assert_eq!(DType::F32.words(5), 5);
    }

    #[test]
    fn rounding_is_nearest_even_with_canonical_nan() {
        // 1 + 2^-8 is a bf16 tie between 1 and 1 + 2^-7: even mantissa (1) wins.
        assert_eq!(DType::BF16.round(1.0 + 1.0 / 256.0), 1.0);
        assert_eq!(DType::BF16.round(1.0 + 3.0 / 256.0), 1.0 + 4.0 / 256.0);
        assert_eq!(DType::F16.round(65520.0), f32::INFINITY);
        assert_eq!(DType::F16.round_bits(f32::NAN), HALF_NAN);
        assert_eq!(DType::F16.widen_bits(1), 2f32.powi(-24));
        assert_eq!("BF16".parse::<DType>().unwrap(), DType::BF16);
        assert!("f64".parse::<DType>().is_err());
    }
}
