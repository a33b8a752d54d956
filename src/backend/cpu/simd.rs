//! 16-lane f32 vectors for the hand-vectorised CPU kernels, with the instruction set picked
//! at run time.
//!
//! Every kernel is written once, generic over [`F32x16`], and compiled three times by
//! [`simd_dispatch!`]: [`Avx512`] (one `zmm` register, fused multiply-add) where the CPU has
//! AVX-512F, [`Avx2`] (two `ymm` registers, FMA) where it has AVX2 and FMA, else
//! [`Portable`] (a plain array the compiler maps onto whatever SIMD the build targets,
//! separate multiply and add). [`isa`] decides once per process; `BELLA_CPU_ISA`
//! (`avx512`, `avx2` or `portable`) caps it, for measuring one path against another.

use std::mem::MaybeUninit;
use std::sync::OnceLock;

/// f32 lanes of one [`F32x16`].
pub const LANES: usize = 16;

/// The instruction set the kernels run with, best first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Isa {
    Avx512,
    Avx2,
    Portable,
}

impl Isa {
    /// Every path this CPU can run (best first): the tests check each against f64 sums.
    #[cfg(test)]
    pub fn available() -> Vec<Isa> {
        [Isa::Avx512, Isa::Avx2, Isa::Portable]
            .into_iter()
            .filter(|&i| i >= detect())
            .collect()
    }
}

/// The best instruction set this CPU has.
fn detect() -> Isa {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if has!("avx512f") && has!("avx2") && has!("fma") {
            return Isa::Avx512;
        }
        if has!("avx2") && has!("fma") {
            return Isa::Avx2;
        }
    }
    Isa::Portable
}

/// `isa`, or the best this CPU has where it lacks `isa`: what [`simd_dispatch!`] runs.
pub fn supported(isa: Isa) -> Isa {
    isa.max(detect())
}

/// The instruction set in use: the best the CPU has, capped by `BELLA_CPU_ISA`.
pub fn isa() -> Isa {
    static ISA: OnceLock<Isa> = OnceLock::new();
    *ISA.get_or_init(|| {
        let cap = match std::env::var("BELLA_CPU_ISA").as_deref() {
            Ok("avx2") => Isa::Avx2,
            Ok("portable") => Isa::Portable,
            _ => Isa::Avx512,
        };
        detect().max(cap)
    })
}

/// One vector of [`LANES`] f32: all the SIMD the kernels use.
pub trait F32x16: Copy {
    /// Whether [`F32x16::madd`] rounds once (FMA) or twice.
    const FUSED: bool;
    /// How many of these a register tile may hold as accumulators (4 × 2 rows fill half of
    /// AVX-512's 32 registers; AVX2 has 16 half-width ones, so 2).
    const TILE_VECS: usize;
    fn zero() -> Self;
    fn splat(x: f32) -> Self;
    fn load(s: &[f32; LANES]) -> Self;
    fn store_uninit(self, out: &mut [MaybeUninit<f32>; LANES]);
    /// `self · b + c`.
    fn madd(self, b: Self, c: Self) -> Self;
    fn sub(self, b: Self) -> Self;
    /// Adds the lanes, widened to f64, into `acc` lane by lane.
    fn add_to_f64(self, acc: &mut [f64; LANES]);
}

/// `a · b + c` for scalar tails: fused (one rounding) alongside FMA vectors.
#[inline(always)]
pub fn madd<V: F32x16>(a: f32, b: f32, c: f32) -> f32 {
    if V::FUSED {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// `&s[at..at + LANES]` as an array (panics past the end, like indexing).
#[inline(always)]
pub fn lanes(s: &[f32], at: usize) -> &[f32; LANES] {
    s[at..at + LANES].try_into().unwrap()
}

#[derive(Clone, Copy)]
pub struct Portable([f32; LANES]);

impl F32x16 for Portable {
    const FUSED: bool = false;
    const TILE_VECS: usize = 2;
    #[inline(always)]
    fn zero() -> Self {
        Portable([0.0; LANES])
    }
    #[inline(always)]
    fn splat(x: f32) -> Self {
        Portable([x; LANES])
    }
    #[inline(always)]
    fn load(s: &[f32; LANES]) -> Self {
        Portable(*s)
    }
    #[inline(always)]
    fn store_uninit(self, out: &mut [MaybeUninit<f32>; LANES]) {
        for (o, &x) in out.iter_mut().zip(&self.0) {
            o.write(x);
        }
    }
    #[inline(always)]
    fn madd(self, b: Self, c: Self) -> Self {
        Portable(std::array::from_fn(|l| self.0[l] * b.0[l] + c.0[l]))
    }
    #[inline(always)]
    fn sub(self, b: Self) -> Self {
        Portable(std::array::from_fn(|l| self.0[l] - b.0[l]))
    }
    #[inline(always)]
    fn add_to_f64(self, acc: &mut [f64; LANES]) {
        for (a, &x) in acc.iter_mut().zip(&self.0) {
            *a += x as f64;
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub use x86::{Avx2, Avx512};

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{F32x16, LANES};
    use std::arch::x86_64::*;
    use std::mem::MaybeUninit;

    /// One AVX-512 register. Only used (inlined) inside functions compiled with
    /// `avx512f` enabled, which run only where [`super::isa`] found it.
    #[derive(Clone, Copy)]
    pub struct Avx512(__m512);

    // SAFETY (every method): the intrinsics need AVX-512F, which the CPU has (see the type's
    // docs); loads and stores go through references to exactly LANES f32 (or f64).
    impl F32x16 for Avx512 {
        const FUSED: bool = true;
        const TILE_VECS: usize = 4;
        #[inline(always)]
        fn zero() -> Self {
            Avx512(unsafe { _mm512_setzero_ps() })
        }
        #[inline(always)]
        fn splat(x: f32) -> Self {
            Avx512(unsafe { _mm512_set1_ps(x) })
        }
        #[inline(always)]
        fn load(s: &[f32; LANES]) -> Self {
            Avx512(unsafe { _mm512_loadu_ps(s.as_ptr()) })
        }
        #[inline(always)]
        fn store_uninit(self, out: &mut [MaybeUninit<f32>; LANES]) {
            unsafe { _mm512_storeu_ps(out.as_mut_ptr().cast(), self.0) }
        }
        #[inline(always)]
        fn madd(self, b: Self, c: Self) -> Self {
            Avx512(unsafe { _mm512_fmadd_ps(self.0, b.0, c.0) })
        }
        #[inline(always)]
        fn sub(self, b: Self) -> Self {
            Avx512(unsafe { _mm512_sub_ps(self.0, b.0) })
        }
        #[inline(always)]
        fn add_to_f64(self, acc: &mut [f64; LANES]) {
            unsafe {
                let lo = _mm512_cvtps_pd(_mm512_castps512_ps256(self.0));
                let hi = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(
                    _mm512_castps_pd(self.0),
                    1,
                )));
                let p = acc.as_mut_ptr();
                _mm512_storeu_pd(p, _mm512_add_pd(_mm512_loadu_pd(p), lo));
                _mm512_storeu_pd(p.add(8), _mm512_add_pd(_mm512_loadu_pd(p.add(8)), hi));
            }
        }
    }

    /// Two AVX2 registers. Only used (inlined) inside functions compiled with `avx2,fma`
    /// enabled, which run only where [`super::isa`] found them.
    #[derive(Clone, Copy)]
    pub struct Avx2([__m256; 2]);

    // SAFETY (every method): as for Avx512, with AVX2 and FMA.
    impl F32x16 for Avx2 {
        const FUSED: bool = true;
        const TILE_VECS: usize = 2;
        #[inline(always)]
        fn zero() -> Self {
            unsafe { Avx2([_mm256_setzero_ps(); 2]) }
        }
        #[inline(always)]
        fn splat(x: f32) -> Self {
            unsafe { Avx2([_mm256_set1_ps(x); 2]) }
        }
        #[inline(always)]
        fn load(s: &[f32; LANES]) -> Self {
            unsafe {
                Avx2([
                    _mm256_loadu_ps(s.as_ptr()),
                    _mm256_loadu_ps(s.as_ptr().add(8)),
                ])
            }
        }
        #[inline(always)]
        fn store_uninit(self, out: &mut [MaybeUninit<f32>; LANES]) {
            let p: *mut f32 = out.as_mut_ptr().cast();
            unsafe {
                _mm256_storeu_ps(p, self.0[0]);
                _mm256_storeu_ps(p.add(8), self.0[1]);
            }
        }
        #[inline(always)]
        fn madd(self, b: Self, c: Self) -> Self {
            unsafe {
                Avx2([
                    _mm256_fmadd_ps(self.0[0], b.0[0], c.0[0]),
                    _mm256_fmadd_ps(self.0[1], b.0[1], c.0[1]),
                ])
            }
        }
        #[inline(always)]
        fn sub(self, b: Self) -> Self {
            unsafe {
                Avx2([
                    _mm256_sub_ps(self.0[0], b.0[0]),
                    _mm256_sub_ps(self.0[1], b.0[1]),
                ])
            }
        }
        #[inline(always)]
        fn add_to_f64(self, acc: &mut [f64; LANES]) {
            unsafe {
                let p = acc.as_mut_ptr();
                for (h, &v) in self.0.iter().enumerate() {
                    let lo = _mm256_cvtps_pd(_mm256_castps256_ps128(v));
                    let hi = _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1));
                    let q = p.add(8 * h);
                    _mm256_storeu_pd(q, _mm256_add_pd(_mm256_loadu_pd(q), lo));
                    _mm256_storeu_pd(q.add(4), _mm256_add_pd(_mm256_loadu_pd(q.add(4)), hi));
                }
            }
        }
    }
}

/// `fn $name(args)` running `$generic::<V>(args)` with the best [`Isa`], and
/// `fn $with(isa, args)` with a chosen one (the tests run every path). `$generic` must be
/// `#[inline(always)]` so that each copy is compiled with its target features.
macro_rules! simd_dispatch {
    ($vis:vis fn $name:ident, $with:ident => $generic:ident ($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)?) => {
        #[allow(dead_code)]
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            $with($crate::backend::cpu::simd::isa(), $($arg),*)
        }
        #[allow(clippy::too_many_arguments)]
        $vis fn $with(isa: $crate::backend::cpu::simd::Isa, $($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                use $crate::backend::cpu::simd::{Avx2, Avx512, Isa};
                #[target_feature(enable = "avx512f,avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn v4($($arg: $ty),*) $(-> $ret)? {
                    $generic::<Avx512>($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn v3($($arg: $ty),*) $(-> $ret)? {
                    $generic::<Avx2>($($arg),*)
                }
                match $crate::backend::cpu::simd::supported(isa) {
                    // SAFETY: `supported` gives only what this CPU has.
                    Isa::Avx512 => return unsafe { v4($($arg),*) },
                    Isa::Avx2 => return unsafe { v3($($arg),*) },
                    Isa::Portable => {}
                }
            }
            let _ = isa;
            $generic::<$crate::backend::cpu::simd::Portable>($($arg),*)
        }
    };
}
pub(crate) use simd_dispatch;
