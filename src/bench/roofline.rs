//! The measured ceilings of a backend, taken in the same run as the ops: a copy bandwidth
//! and a large GEMM. Each op is reported against them as a roofline share: the time the op
//! would take at the ceilings (`max(flops / peak, bytes / bandwidth)`) over its measured time.

use super::cases::{matmul_case, random, RunOnce, Scale, Work};
use super::measure::{measure, Budget};
use super::timer::{op_timer, WallClock};
use crate::backend::{Backend, BackendKind};
use crate::error::Result;
use crate::rng::Rng;
use rayon::prelude::*;
use serde::Serialize;
use std::sync::Arc;

#[derive(Clone, Debug, Serialize)]
pub struct Ceilings {
    /// Bytes read plus bytes written per second, in GB/s (STREAM's copy convention).
    pub copy_gbs: f64,
    pub copy_how: String,
    pub gemm_gflops: f64,
    pub gemm_shape: String,
}

impl Ceilings {
    /// Seconds the work would take at the ceilings.
    pub fn floor_s(&self, w: &Work) -> f64 {
        (w.flops / (self.gemm_gflops * 1e9)).max(w.bytes / (self.copy_gbs * 1e9))
    }
    /// The roofline share of a measured time, in percent.
    pub fn roofline_pct(&self, w: &Work, seconds: f64) -> f64 {
        100.0 * self.floor_s(w) / seconds
    }
    /// Which ceiling limits this work: `memory` or `compute`.
    pub fn bound(&self, w: &Work) -> &'static str {
        if w.flops / (self.gemm_gflops * 1e9) >= w.bytes / (self.copy_gbs * 1e9) {
            "compute"
        } else {
            "memory"
        }
    }
}

/// Copy size: far past the last-level cache of any CPU or GPU.
pub fn copy_elems(scale: Scale) -> usize {
    match scale {
        Scale::Small => 1 << 16,
        Scale::Cpu => 1 << 24,
        Scale::Gpu => 1 << 28,
    }
}

fn gemm_side(scale: Scale, quick: bool) -> usize {
    match scale {
        Scale::Small => 64,
        Scale::Cpu if quick => 768,
        Scale::Cpu => 1024,
        Scale::Gpu => 8192,
    }
}

pub fn measure_ceilings(
    be: &Arc<dyn Backend>,
    budget: &Budget,
    scale: Scale,
    quick: bool,
) -> Result<Ceilings> {
    let wall = WallClock::new(be.clone());
    let n = copy_elems(scale);
    let (copy_s, copy_how) = if be.kind() == BackendKind::Cpu {
        host_copy(be, &wall, budget, n)?
    } else {
        let (mut body, _, how) = stream_probe(be, n)?;
        (measure(&wall, budget, &mut body)?.median_s, how)
    };
    let side = gemm_side(scale, quick);
    let gemm = matmul_case(1, side, side, side);
    let mut body = gemm.prepare(be, &mut Rng::new(2))?;
    // The same clock the ops are timed by, so that shares stay at or under 100 %.
    let g = measure(op_timer(be).as_ref(), budget, &mut body)?;
    Ok(Ceilings {
        copy_gbs: 2.0 * 4.0 * n as f64 / copy_s / 1e9,
        copy_how,
        gemm_gflops: gemm.work.flops / g.median_s / 1e9,
        gemm_shape: format!("matmul {side}×{side}×{side}"),
    })
}

/// A body that streams memory on `be` and the bytes it moves: the bandwidth probe that
/// floors are measured against, side by side with the work they bound. On the CPU an
/// in-place update (`a = 2a`: reads and writes the same lines, so no write-allocate reads);
/// elsewhere the backend's buffer-to-buffer copy. Either moves 2·n·4 bytes.
pub fn stream_probe(be: &Arc<dyn Backend>, n: usize) -> Result<(RunOnce, f64, String)> {
    let bytes = 2.0 * 4.0 * n as f64;
    if be.kind() == BackendKind::Cpu {
        let mut buf = vec![1.0f32; n];
        let body = move || -> Result<()> {
            buf.par_chunks_mut(1 << 16)
                .for_each(|d| d.iter_mut().for_each(|v| *v *= 2.0));
            Ok(())
        };
        let how = format!(
            "host in-place update of {}, {} threads",
            size(n),
            rayon::current_num_threads()
        );
        Ok((Box::new(body), bytes, how))
    } else {
        let t = random(be.as_ref(), &mut Rng::new(1), &[n], 1.0)?;
        let body = move || -> Result<()> { t.storage().duplicate().map(drop) };
        Ok((
            Box::new(body),
            bytes,
            format!("device buffer copy of {}", size(n)),
        ))
    }
}

/// Host memory, in parallel, on buffers touched beforehand (no page faults): the faster of
/// a copy into a second buffer and the in-place update of [`stream_probe`].
fn host_copy(
    be: &Arc<dyn Backend>,
    wall: &WallClock,
    budget: &Budget,
    n: usize,
) -> Result<(f64, String)> {
    const CHUNK: usize = 1 << 16;
    let src = vec![1.0f32; n];
    let mut dst = vec![0.0f32; n];
    let mut copy = || -> Result<()> {
        dst.par_chunks_mut(CHUNK)
            .zip(src.par_chunks(CHUNK))
            .for_each(|(d, s)| d.copy_from_slice(s));
        Ok(())
    };
    let c = measure(wall, budget, &mut copy)?.median_s;
    let (mut update, _, how) = stream_probe(be, n)?;
    let u = measure(wall, budget, &mut update)?.median_s;
    let threads = rayon::current_num_threads();
    Ok(if c <= u {
        (c, format!("host copy of {}, {threads} threads", size(n)))
    } else {
        (u, format!("{how} (faster than a copy: no write-allocate)"))
    })
}

/// `n` f32 in MiB, or KiB below one MiB.
fn size(n: usize) -> String {
    match n * 4 {
        b if b >= 1 << 20 => format!("{} MiB", b >> 20),
        b => format!("{} KiB", b >> 10),
    }
}
