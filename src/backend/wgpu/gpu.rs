//! The device: adapter choice, limits, error capture, submission, timestamp queries.

use crate::error::{BellaError, Result};
use std::sync::{Arc, Mutex};

pub(super) const NAME: &str = "wgpu";

/// Adapter, device and queue, with the limits the kernels are checked against.
pub struct Gpu {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pub limits: wgpu::Limits,
    /// The adapter offers `SHADER_F16` (WGSL's `f16` type, `enable f16;`).
    pub f16_offered: bool,
    /// The device was opened with `SHADER_F16`: f16 products run `gemm_tiled_f16_native`
    /// (`shaders/matmul_f16.wgsl`); without it, the packed-u32 `gemm_tiled_f16`.
    pub shader_f16: bool,
    /// Errors raised outside an error scope (device loss, late failures), reported by the
    /// next call instead of wgpu's default handler, which panics.
    uncaptured: Arc<Mutex<Option<String>>>,
    pub timer: Option<Timer>,
}

pub(super) fn instance() -> wgpu::Instance {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    // `WGPU_BACKEND=vulkan|gl|metal|dx12` picks one; by default every native API is tried.
    desc.backends =
        wgpu::Backends::from_env().unwrap_or(wgpu::Backends::PRIMARY | wgpu::Backends::GL);
    wgpu::Instance::new(desc)
}

/// True when some adapter is a hardware one (lavapipe and other software rasterizers
/// report `DeviceType::Cpu`). Probed once per process.
pub fn has_real_gpu() -> bool {
    static REAL: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *REAL.get_or_init(|| {
        let adapters = pollster::block_on(instance().enumerate_adapters(wgpu::Backends::all()));
        adapters
            .iter()
            .any(|a| a.get_info().device_type != wgpu::DeviceType::Cpu)
    })
}

/// How to open the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenOptions {
    /// Request `SHADER_F16` where the adapter offers it (false: never, so the f16 products
    /// take the packed-u32 fallback kernel as on an adapter without the feature).
    pub shader_f16: bool,
}

/// The variable that switches `SHADER_F16` off for the process's device.
pub const F16_ENV: &str = "BELLA_WGPU_F16";

impl OpenOptions {
    /// The defaults, except `BELLA_WGPU_F16=off` (or `0`, `false`, `no`), read here, which
    /// does not request `SHADER_F16`.
    pub fn from_env() -> OpenOptions {
        let off = std::env::var(F16_ENV).is_ok_and(|v| {
            matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "off" | "0" | "false" | "no"
            )
        });
        OpenOptions { shader_f16: !off }
    }
}

impl Gpu {
    pub fn open(options: OpenOptions) -> Result<Gpu> {
        let instance = instance();
        let adapter = pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions {
            power_preference: wgpu::PowerPreference::HighPerformance,
            ..Default::default()
        }))
        .map_err(|e| {
            BellaError::unavailable(
                NAME,
                format!(
                    "no wgpu adapter found ({e}); a Vulkan, Metal, DX12 or GL driver is needed \
                     (on Debian/Ubuntu without a GPU, `apt-get install mesa-vulkan-drivers` \
                     provides the lavapipe CPU driver)"
                ),
            )
        })?;
        let info = adapter.get_info();
        let limits = adapter.limits();
        let offered = adapter.features();
        let timestamps = offered.contains(wgpu::Features::TIMESTAMP_QUERY);
        let f16_offered = offered.contains(wgpu::Features::SHADER_F16);
        let shader_f16 = f16_offered && options.shader_f16;
        let mut required_features = wgpu::Features::empty();
        if timestamps {
            required_features |= wgpu::Features::TIMESTAMP_QUERY;
        }
        if shader_f16 {
            required_features |= wgpu::Features::SHADER_F16;
        }
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("bella"),
            required_features,
            required_limits: limits.clone(),
            ..Default::default()
        }))
        .map_err(|e| {
            BellaError::unavailable(
                NAME,
                format!("adapter `{}` refused a device: {e}", info.name),
            )
        })?;
        let uncaptured = Arc::new(Mutex::new(None));
        let sink = uncaptured.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            if let Ok(mut slot) = sink.lock() {
                slot.get_or_insert_with(|| e.to_string());
            }
        }));
        let timer = timestamps.then(|| Timer::new(&device, &queue));
        // What the device was granted, not only what was asked for.
        let granted_f16 = device.features().contains(wgpu::Features::SHADER_F16);
        Ok(Gpu {
            device,
            queue,
            info,
            limits,
            f16_offered,
            shader_f16: granted_f16,
            uncaptured,
            timer,
        })
    }

    /// Run `body` with validation, out-of-memory and internal errors captured as `Err`.
    pub fn scoped<T>(&self, what: &str, body: impl FnOnce() -> Result<T>) -> Result<T> {
        let internal = self.device.push_error_scope(wgpu::ErrorFilter::Internal);
        let oom = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let validation = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let out = body();
        let errors = [
            pollster::block_on(validation.pop()),
            pollster::block_on(oom.pop()),
            pollster::block_on(internal.pop()),
        ];
        if let Some(e) = errors.into_iter().flatten().next() {
            return Err(BellaError::device(NAME, format!("{what}: {e}")));
        }
        self.take_uncaptured(what)?;
        out
    }

    pub fn take_uncaptured(&self, what: &str) -> Result<()> {
        let taken = self.uncaptured.lock().ok().and_then(|mut s| s.take());
        match taken {
            Some(msg) => Err(BellaError::device(NAME, format!("{what}: {msg}"))),
            None => Ok(()),
        }
    }

    /// Block until the queue is idle.
    pub fn wait(&self, what: &str) -> Result<()> {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| {
                BellaError::device(NAME, format!("{what}: waiting for the device: {e}"))
            })?;
        self.take_uncaptured(what)
    }

    /// Largest buffer one storage binding may cover.
    pub fn max_binding_bytes(&self) -> u64 {
        self.limits
            .max_storage_buffer_binding_size
            .min(self.limits.max_buffer_size)
    }

    /// Fold a linear workgroup count into (x, y) under the per-dimension limit; kernels
    /// recover the linear index as `x + y · num_workgroups.x` and skip the excess.
    pub fn fold(&self, what: &str, groups: u64) -> Result<(u32, u32)> {
        let max = self.limits.max_compute_workgroups_per_dimension.max(1) as u64;
        let x = groups.clamp(1, max);
        let y = groups.div_ceil(x).max(1);
        if y > max {
            return Err(BellaError::device(
                NAME,
                format!(
                    "{what}: {groups} workgroups exceed the adapter's {max}×{max} dispatch limit"
                ),
            ));
        }
        Ok((x as u32, y as u32))
    }
}

/// Timestamp queries around the compute pass of each submission (when the adapter has them
/// and timing is switched on).
///
/// One query set and one readback buffer serve the device, so their use is serialized by
/// `state`: a timed submission holds the lock from encoding to `submit` (see
/// [`Timer::begin`]), and reading the result holds it from `map_async` to `unmap`. Without
/// that, one thread's submission can copy into the readback buffer while another thread
/// has it mapped, which wgpu rejects ("still mapped").
pub struct Timer {
    pub query_set: wgpu::QuerySet,
    resolve: wgpu::Buffer,
    readback: wgpu::Buffer,
    period_ns: f64,
    state: Mutex<TimerState>,
}

#[derive(Default)]
pub struct TimerState {
    pub enabled: bool,
    /// A resolved measurement sits in `readback`, not yet read.
    pending: bool,
    last_ns: Option<f64>,
}

/// A timed submission in progress: holds the timer until the work is submitted.
pub struct TimedSubmit<'a> {
    timer: &'a Timer,
    state: std::sync::MutexGuard<'a, TimerState>,
}

impl TimedSubmit<'_> {
    pub fn query_set(&self) -> &wgpu::QuerySet {
        &self.timer.query_set
    }

    /// Record the resolve and the copy to the readback buffer after the timed pass. The
    /// lock is released when `self` drops, after the caller has submitted `encoder`.
    pub fn resolve(&mut self, encoder: &mut wgpu::CommandEncoder) {
        let t = self.timer;
        encoder.resolve_query_set(&t.query_set, 0..2, &t.resolve, 0);
        encoder.copy_buffer_to_buffer(&t.resolve, 0, &t.readback, 0, 16);
        self.state.pending = true;
    }
}

impl Timer {
    fn new(device: &wgpu::Device, queue: &wgpu::Queue) -> Timer {
        let query_set = device.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("bella timestamps"),
            ty: wgpu::QueryType::Timestamp,
            count: 2,
        });
        let resolve = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("bella timestamp resolve"),
            size: 16,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let readback = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("bella timestamp readback"),
            size: 16,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        Timer {
            query_set,
            resolve,
            readback,
            period_ns: queue.get_timestamp_period() as f64,
            state: Mutex::new(TimerState::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TimerState> {
        // The state is a few plain fields, valid whatever a panicking holder left.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn set_enabled(&self, on: bool) {
        self.lock().enabled = on;
    }

    /// When timing is on, take the timer for one submission; `None` when it is off.
    pub fn begin(&self) -> Option<TimedSubmit<'_>> {
        let state = self.lock();
        state.enabled.then_some(TimedSubmit { timer: self, state })
    }

    /// The duration of the last timed submission in nanoseconds (blocks on its readback).
    pub fn last_ns(&self, gpu: &Gpu) -> Result<Option<f64>> {
        let mut state = self.lock();
        if state.pending {
            let (tx, rx) = std::sync::mpsc::channel();
            self.readback
                .map_async(wgpu::MapMode::Read, .., move |r| drop(tx.send(r)));
            gpu.wait("timestamp readback")?;
            rx.recv()
                .map_err(|_| BellaError::device(NAME, "timestamp readback was dropped"))?
                .map_err(|e| BellaError::device(NAME, format!("timestamp readback: {e}")))?;
            let ticks: Result<[u64; 2]> = self
                .readback
                .get_mapped_range(..)
                .map(|view| bytemuck::pod_read_unaligned(&view[..16]))
                .map_err(|e| BellaError::device(NAME, format!("timestamp readback: {e}")));
            self.readback.unmap();
            let ticks = ticks?;
            state.pending = false;
            state.last_ns = Some(ticks[1].wrapping_sub(ticks[0]) as f64 * self.period_ns);
        }
        Ok(state.last_ns)
    }
}
