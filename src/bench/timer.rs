//! How one run is timed. The default is the host wall clock between two device
//! synchronisations, which works on every backend and is what a caller of the library sees.
//! Backends with device clocks (wgpu timestamp queries, CUDA events) plug in here as
//! further [`Timer`]s; they time the kernels alone, without launch and host overhead.

use crate::backend::Backend;
use crate::error::Result;
use std::sync::Arc;
use std::time::Instant;

/// A body to time: one op, or a sequence of ops (a baseline loop, a full SVGD step).
pub type Body<'a> = dyn FnMut() -> Result<()> + 'a;

pub trait Timer {
    /// What the clock is, for the report (`wall` or `gpu`).
    fn clock(&self) -> &'static str;
    /// Seconds one run of `body` takes.
    fn time(&self, body: &mut Body) -> Result<f64>;
}

/// Host wall clock around `body`, with the device synchronised before and after so queued
/// work is neither counted for the next run nor missed.
pub struct WallClock {
    backend: Arc<dyn Backend>,
}

impl WallClock {
    pub fn new(backend: Arc<dyn Backend>) -> Self {
        WallClock { backend }
    }
}

impl Timer for WallClock {
    fn clock(&self) -> &'static str {
        "wall"
    }
    fn time(&self, body: &mut Body) -> Result<f64> {
        self.backend.synchronize()?;
        let start = Instant::now();
        body()?;
        self.backend.synchronize()?;
        Ok(start.elapsed().as_secs_f64())
    }
}

/// wgpu timestamp queries: the GPU time of the last submission's compute pass. Every op of
/// the wgpu backend is one submission, so this times single ops only; sequences of ops
/// (baselines, the SVGD step) use the wall clock.
#[cfg(feature = "wgpu")]
pub struct WgpuTimestamps {
    gpu: crate::backend::wgpu::WgpuBackend,
}

#[cfg(feature = "wgpu")]
impl WgpuTimestamps {
    /// `None` when the adapter has no timestamp queries.
    pub fn open() -> Option<Self> {
        let gpu = crate::backend::wgpu::WgpuBackend::new().ok()?;
        gpu.set_timing(true).then_some(WgpuTimestamps { gpu })
    }
}

#[cfg(feature = "wgpu")]
impl Timer for WgpuTimestamps {
    fn clock(&self) -> &'static str {
        "gpu"
    }
    fn time(&self, body: &mut Body) -> Result<f64> {
        use crate::backend::Backend as _;
        self.gpu.synchronize()?;
        body()?;
        match self.gpu.time_last_submit_ns() {
            Some(ns) => Ok(ns * 1e-9),
            None => Err(crate::error::BellaError::device(
                "wgpu",
                "timestamp query returned no time",
            )),
        }
    }
}

/// The best timer for a single op on `backend`: its device clock where one exists.
pub fn op_timer(backend: &Arc<dyn Backend>) -> Box<dyn Timer> {
    #[cfg(feature = "wgpu")]
    if backend.kind() == crate::backend::BackendKind::Wgpu {
        if let Some(t) = WgpuTimestamps::open() {
            return Box::new(t);
        }
    }
    Box::new(WallClock::new(backend.clone()))
}
