//! [`Driver`] over the CUDA driver API (cudarc, loaded at run time): one context on device
//! 0 (the primary context, the one PyTorch and JAX use), one stream at a time (bella's own,
//! or a caller's: [`CudaDriver::set_stream`]), modules JIT-compiled from PTX once and
//! cached with their functions. Buffers are bella's allocations or the caller's device
//! memory ([`CudaBuf`]), which bella never frees.

use crate::backend::ptx::driver::{DeviceProps, Driver, LaunchConfig, Param};
use crate::backend::BackendKind;
use crate::error::{BellaError, Result};
use cudarc::driver::sys::{self, CUdevice_attribute as Attr};
use cudarc::driver::{result, CudaContext, CudaSlice, CudaStream, DevicePtr};
use std::collections::HashMap;
use std::ffi::{c_void, CString};
use std::mem::ManuallyDrop;
use std::ops::Deref;
use std::sync::{Arc, Mutex, RwLock};

// Kernel arguments are passed as 8-byte slots whose low bytes hold 4-byte values.
const _: () = assert!(cfg!(target_endian = "little"));

fn err(msg: impl Into<String>) -> BellaError {
    BellaError::device("cuda", msg)
}

/// Raw driver handles; used only with the context bound, behind the driver's locks.
struct RawModule(sys::CUmodule);
struct RawFunction(sys::CUfunction);
unsafe impl Send for RawModule {}
unsafe impl Sync for RawModule {}
unsafe impl Send for RawFunction {}
unsafe impl Sync for RawFunction {}

/// A device buffer of f32: bella's own allocation (freed, stream-ordered, when the last
/// tensor holding it goes) or memory the caller owns ([`CudaDriver::borrow_device_ptr`]),
/// which is never freed here.
pub struct CudaBuf {
    slice: ManuallyDrop<CudaSlice<f32>>,
    borrowed: bool,
}

impl Deref for CudaBuf {
    type Target = CudaSlice<f32>;
    fn deref(&self) -> &CudaSlice<f32> {
        &self.slice
    }
}

impl Drop for CudaBuf {
    fn drop(&mut self) {
        // SAFETY: `slice` is taken exactly once, here.
        let slice = unsafe { ManuallyDrop::take(&mut self.slice) };
        if self.borrowed {
            // The caller's memory: forget it without freeing.
            slice.leak();
        }
    }
}

impl CudaBuf {
    fn owned(slice: CudaSlice<f32>) -> Self {
        CudaBuf {
            slice: ManuallyDrop::new(slice),
            borrowed: false,
        }
    }
}

/// The CUDA [`Driver`](crate::backend::ptx::driver::Driver): one context on device 0 and
/// the stream work goes to, through cudarc with the driver library loaded at run time.
pub struct CudaDriver {
    ctx: Arc<CudaContext>,
    /// bella's own stream, used unless a caller's is set
    own_stream: Arc<CudaStream>,
    /// where launches, copies and allocations go now
    stream: RwLock<Arc<CudaStream>>,
    props: DeviceProps,
    modules: Mutex<HashMap<String, RawModule>>,
    functions: Mutex<HashMap<(String, String), RawFunction>>,
    /// The last kernel launched: faults surface asynchronously, at the next sync.
    last_kernel: Mutex<Option<String>>,
}

impl CudaDriver {
    /// Initialise the driver and open device 0. Call only once `is_culib_present()` holds.
    pub fn new() -> Result<Self> {
        let count = CudaContext::device_count()
            .map_err(|e| BellaError::unavailable("cuda", format!("cuInit failed: {e}")))?;
        if count < 1 {
            return Err(BellaError::unavailable(
                "cuda",
                "the driver reports no CUDA device",
            ));
        }
        let ctx = CudaContext::new(0)
            .map_err(|e| BellaError::unavailable("cuda", format!("cannot open device 0: {e}")))?;
        // One stream orders everything; per-allocation event tracking is not needed.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.default_stream();
        let attr = |a: Attr| {
            ctx.attribute(a)
                .map(|v| v.max(0) as u32)
                .map_err(|e| err(format!("cannot read device attribute {a:?}: {e}")))
        };
        let name = ctx.name().unwrap_or_else(|_| "CUDA device".to_string());
        let (major, minor) = ctx.compute_capability().unwrap_or((0, 0));
        let mut version = 0i32;
        unsafe { sys::cuDriverGetVersion(&mut version) };
        let props = DeviceProps {
            name: format!(
                "{name} (sm_{major}{minor}, driver CUDA {}.{})",
                version / 1000,
                (version % 1000) / 10
            ),
            max_grid: [
                attr(Attr::CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_X)?,
                attr(Attr::CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Y)?,
                attr(Attr::CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Z)?,
            ],
            max_threads_per_block: attr(Attr::CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK)?,
            max_shared_per_block: attr(Attr::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK)?,
            sm_count: attr(Attr::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?,
        };
        Ok(CudaDriver {
            ctx,
            own_stream: stream.clone(),
            stream: RwLock::new(stream),
            props,
            modules: Mutex::new(HashMap::new()),
            functions: Mutex::new(HashMap::new()),
            last_kernel: Mutex::new(None),
        })
    }

    /// The stream work goes to now.
    fn stream(&self) -> Arc<CudaStream> {
        match self.stream.read() {
            Ok(s) => s.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn raw_ptr(&self, buf: &CudaSlice<f32>) -> sys::CUdeviceptr {
        buf.device_ptr(&self.stream()).0
    }

    /// Queue all later work (kernels, copies, allocations and frees of new buffers) on the
    /// caller's stream `raw` (a `CUstream`, e.g. PyTorch's
    /// `torch.cuda.current_stream().cuda_stream`; 0 is the legacy default stream), or, with
    /// `None`, on bella's own stream again. Work already queued is first ordered before
    /// the switch (the new stream waits for the old one), so nothing is reordered.
    ///
    /// # Safety
    /// `raw` must be a valid stream of this device's primary context, and it must outlive
    /// every tensor created while it is set (their memory is freed on it).
    pub unsafe fn set_stream(&self, raw: Option<usize>) -> Result<()> {
        let next = match raw {
            Some(raw) => unsafe { self.ctx.wrap_borrowed_stream(raw as sys::CUstream) },
            None => self.own_stream.clone(),
        };
        let prev = self.stream();
        next.join(&prev)
            .map_err(|e| err(format!("cannot order the new stream after the old: {e}")))?;
        match self.stream.write() {
            Ok(mut s) => *s = next,
            Err(poisoned) => *poisoned.into_inner() = next,
        }
        Ok(())
    }

    /// The caller's device memory as a buffer of `len` f32, read and written in place and
    /// never freed by bella.
    ///
    /// # Safety
    /// `ptr` must point to at least `len` f32 of device memory of this context, 4-byte
    /// aligned (16-byte alignment lets the kernels use vector loads), valid for as long as
    /// any tensor holding the buffer lives, and not written by other work while bella's
    /// queued work uses it.
    pub unsafe fn borrow_device_ptr(&self, ptr: u64, len: usize) -> Result<CudaBuf> {
        if ptr == 0 || !ptr.is_multiple_of(4) {
            return Err(err(format!(
                "device pointer {ptr:#x} is null or not 4-byte aligned"
            )));
        }
        let slice = unsafe { self.stream().upgrade_device_ptr::<f32>(ptr, len.max(1)) };
        Ok(CudaBuf {
            slice: ManuallyDrop::new(slice),
            borrowed: true,
        })
    }

    /// The device address of a buffer (for a caller that reads bella's outputs in place).
    pub fn device_ptr(&self, buf: &CudaBuf) -> u64 {
        self.raw_ptr(buf)
    }

    fn last_kernel(&self) -> String {
        match self.last_kernel.lock().ok().and_then(|k| k.clone()) {
            Some(k) => format!(" (last kernel launched: {k})"),
            None => String::new(),
        }
    }

    fn function(&self, module: &str, kernel: &str) -> Result<sys::CUfunction> {
        let key = (module.to_string(), kernel.to_string());
        let mut fns = self
            .functions
            .lock()
            .map_err(|_| err("function cache poisoned"))?;
        if let Some(f) = fns.get(&key) {
            return Ok(f.0);
        }
        let modules = self
            .modules
            .lock()
            .map_err(|_| err("module cache poisoned"))?;
        let m = modules.get(module).ok_or_else(|| {
            err(format!(
                "kernel {kernel}: module {module}.ptx is not loaded"
            ))
        })?;
        let name = CString::new(kernel).map_err(|_| err(format!("bad kernel name {kernel:?}")))?;
        self.ctx
            .bind_to_thread()
            .map_err(|e| err(format!("bind context: {e}")))?;
        let f = unsafe { result::module::get_function(m.0, name) }
            .map_err(|e| err(format!("kernel {kernel} not found in {module}.ptx: {e}")))?;
        fns.insert(key, RawFunction(f));
        Ok(f)
    }

    /// Milliseconds of GPU time between two events around `work` (for benchmarks).
    pub fn time_ms(&self, work: impl FnOnce() -> Result<()>) -> Result<f32> {
        let ev = || {
            self.ctx
                .new_event(Some(sys::CUevent_flags::CU_EVENT_DEFAULT))
                .map_err(|e| err(format!("cannot create a timing event: {e}")))
        };
        let (start, end) = (ev()?, ev()?);
        let stream = self.stream();
        start
            .record(&stream)
            .map_err(|e| err(format!("event record: {e}")))?;
        work()?;
        end.record(&stream)
            .map_err(|e| err(format!("event record: {e}")))?;
        start
            .elapsed_ms(&end)
            .map_err(|e| err(format!("timed work failed{}: {e}", self.last_kernel())))
    }
}

impl Drop for CudaDriver {
    fn drop(&mut self) {
        if self.ctx.bind_to_thread().is_err() {
            return;
        }
        if let Ok(mods) = self.modules.get_mut() {
            for (_, m) in mods.drain() {
                unsafe {
                    let _ = result::module::unload(m.0);
                }
            }
        }
    }
}

impl Driver for CudaDriver {
    type Buf = CudaBuf;

    fn kind(&self) -> BackendKind {
        BackendKind::Cuda
    }

    fn props(&self) -> &DeviceProps {
        &self.props
    }

    fn memory_budget(&self) -> crate::backend::MemoryBudget {
        let free = self
            .ctx
            .bind_to_thread()
            .ok()
            .and_then(|_| result::mem_get_info().ok())
            .map(|(free, _total)| free as u64);
        crate::backend::MemoryBudget {
            total_bytes: free.unwrap_or(u64::MAX),
            // The kernels index buffers with 32-bit element counts.
            max_buffer_bytes: 4 * u32::MAX as u64,
            source: "free device memory (cuMemGetInfo)",
        }
    }

    fn alloc_zeroed(&self, len: usize) -> Result<Self::Buf> {
        // Never a zero-byte allocation: an empty tensor still gets a valid pointer.
        self.stream()
            .alloc_zeros::<f32>(len.max(1))
            .map(CudaBuf::owned)
            .map_err(|e| {
                err(format!(
                    "cannot allocate {} floats ({:.1} MiB) on the device: {e}",
                    len,
                    len as f64 * 4.0 / (1 << 20) as f64
                ))
            })
    }

    fn upload(&self, data: &[f32]) -> Result<Self::Buf> {
        if data.is_empty() {
            return self.alloc_zeroed(0);
        }
        self.stream()
            .clone_htod(data)
            .map(CudaBuf::owned)
            .map_err(|e| {
                err(format!(
                    "cannot upload {} floats: {e}{}",
                    data.len(),
                    self.last_kernel()
                ))
            })
    }

    fn download(&self, buf: &Self::Buf, len: usize) -> Result<Vec<f32>> {
        if len == 0 {
            return Ok(Vec::new());
        }
        if len > buf.len() {
            return Err(err(format!(
                "download of {len} floats from a buffer of {}",
                buf.len()
            )));
        }
        self.stream()
            .clone_dtoh(&buf.slice(0..len))
            .map_err(|e| err(format!("download failed: {e}{}", self.last_kernel())))
    }

    fn buf_len(&self, buf: &Self::Buf) -> usize {
        buf.len()
    }

    fn copy(
        &self,
        src: &Self::Buf,
        src_off: usize,
        dst: &Self::Buf,
        dst_off: usize,
        len: usize,
    ) -> Result<()> {
        if src_off + len > src.len() || dst_off + len > dst.len() {
            return Err(err("device copy out of the buffers' bounds"));
        }
        let (s, d) = (self.raw_ptr(src), self.raw_ptr(dst));
        self.ctx
            .bind_to_thread()
            .map_err(|e| err(format!("bind context: {e}")))?;
        unsafe {
            result::memcpy_dtod_async(
                d + (dst_off * 4) as u64,
                s + (src_off * 4) as u64,
                len * 4,
                self.stream().cu_stream(),
            )
        }
        .map_err(|e| err(format!("device copy failed: {e}{}", self.last_kernel())))
    }

    fn load_module(&self, name: &str, ptx: &str) -> Result<()> {
        let mut modules = self
            .modules
            .lock()
            .map_err(|_| err("module cache poisoned"))?;
        if modules.contains_key(name) {
            return Ok(());
        }
        let src = CString::new(ptx).map_err(|_| err(format!("{name}.ptx contains a NUL byte")))?;
        // JIT with an error log, so a rejected module says why (e.g. a .version newer
        // than the driver supports).
        let mut log = vec![0u8; 8192];
        let mut options = [
            sys::CUjit_option::CU_JIT_ERROR_LOG_BUFFER,
            sys::CUjit_option::CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES,
        ];
        let mut values = [log.as_mut_ptr() as *mut c_void, log.len() as *mut c_void];
        let mut module = std::ptr::null_mut();
        self.ctx
            .bind_to_thread()
            .map_err(|e| err(format!("bind context: {e}")))?;
        let status = unsafe {
            sys::cuModuleLoadDataEx(
                &mut module,
                src.as_ptr() as *const c_void,
                options.len() as u32,
                options.as_mut_ptr(),
                values.as_mut_ptr(),
            )
        };
        if let Err(e) = status.result() {
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            let text = String::from_utf8_lossy(&log[..end]);
            return Err(err(format!(
                "the driver rejected kernels/{name}.ptx: {e}{}{}",
                if text.is_empty() { "" } else { "\n" },
                text.trim_end()
            )));
        }
        modules.insert(name.to_string(), RawModule(module));
        Ok(())
    }

    fn launch(
        &self,
        module: &str,
        kernel: &str,
        cfg: LaunchConfig,
        params: &[Param<'_, Self::Buf>],
    ) -> Result<()> {
        let p = &self.props;
        let threads: u64 = cfg.block.iter().map(|&b| b as u64).product();
        if threads == 0 || threads > p.max_threads_per_block as u64 {
            return Err(err(format!("{kernel}: block {:?} not allowed", cfg.block)));
        }
        if cfg
            .grid
            .iter()
            .zip(p.max_grid)
            .any(|(&g, m)| g == 0 || g > m)
        {
            return Err(err(format!(
                "{kernel}: grid {:?} exceeds {:?}",
                cfg.grid, p.max_grid
            )));
        }
        if cfg.shared_bytes > p.max_shared_per_block {
            return Err(err(format!(
                "{kernel}: {} bytes of shared memory",
                cfg.shared_bytes
            )));
        }
        let f = self.function(module, kernel)?;
        let mut slots = Vec::with_capacity(params.len());
        for (i, param) in params.iter().enumerate() {
            slots.push(match *param {
                Param::Ptr { buf, byte_offset } => {
                    if byte_offset > buf.len() * 4 {
                        return Err(err(format!(
                            "{kernel}: argument {i} points past its buffer"
                        )));
                    }
                    self.raw_ptr(buf) + byte_offset as u64
                }
                Param::U32(v) => v as u64,
                Param::I32(v) => v as u32 as u64,
                Param::F32(v) => v.to_bits() as u64,
                Param::U64(v) => v,
            });
        }
        let mut args: Vec<*mut c_void> = slots
            .iter_mut()
            .map(|s| s as *mut u64 as *mut c_void)
            .collect();
        self.ctx
            .bind_to_thread()
            .map_err(|e| err(format!("bind context: {e}")))?;
        unsafe {
            result::launch_kernel(
                f,
                (cfg.grid[0], cfg.grid[1], cfg.grid[2]),
                (cfg.block[0], cfg.block[1], cfg.block[2]),
                cfg.shared_bytes,
                self.stream().cu_stream(),
                &mut args,
            )
        }
        .map_err(|e| {
            err(format!(
                "launch of {kernel} ({module}.ptx, grid {:?}, block {:?}) failed: {e}{}",
                cfg.grid,
                cfg.block,
                self.last_kernel()
            ))
        })?;
        if let Ok(mut last) = self.last_kernel.lock() {
            *last = Some(kernel.to_string());
        }
        Ok(())
    }

    fn synchronize(&self) -> Result<()> {
        self.stream()
            .synchronize()
            .map_err(|e| err(format!("a kernel failed: {e}{}", self.last_kernel())))
    }
}
