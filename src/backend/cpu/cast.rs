//! `cast` on the CPU: the rule of `crate::dtype` through the `half` crate (`DType::round_bits`
//! / `widen_bits`), on the packed 32-bit-word storage, rows of words in parallel.

use super::{data, CpuStorage};
use crate::device::BackendKind;
use crate::dtype::DType;
use crate::error::Result;
use crate::tensor::Tensor;
use rayon::prelude::*;

/// `x` converted to `to`; one of the two dtypes is f32, the other 16-bit.
pub fn cast(x: &Tensor, to: DType) -> Result<Tensor> {
    let (from, n) = (x.dtype(), x.numel());
    let src = data(x)?;
    let out: Vec<f32> = if to == DType::F32 {
        // widen: word i holds elements 2i (low half) and 2i + 1 (high half)
        (0..n)
            .into_par_iter()
            .map(|e| {
                let bits = (src[e / 2].to_bits() >> (16 * (e % 2))) as u16;
                from.widen_bits(bits)
            })
            .collect()
    } else {
        (0..to.words(n))
            .into_par_iter()
            .map(|w| {
                let lo = to.round_bits(src[2 * w]) as u32;
                let hi = src.get(2 * w + 1).map_or(0, |&v| to.round_bits(v) as u32);
                f32::from_bits(lo | hi << 16)
            })
            .collect()
    };
    Tensor::from_storage_as(x.shape(), to, BackendKind::Cpu, Box::new(CpuStorage(out)))
}
