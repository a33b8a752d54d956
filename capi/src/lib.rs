//! The C ABI of bella: open a backend by name, move f32 tensors in and out, run every op.
//! The declarations are `include/bella.h` (checked in; `tests/c_abi.rs` checks that it
//! declares exactly the exported symbols).
//!
//! Conventions, for every function:
//! - The return value is a [`BellaStatus`]: `BELLA_OK` (0) or an error code; the message of
//!   the last failure on the calling thread is [`bella_last_error`].
//! - No panic crosses the boundary: a caught panic is `BELLA_ERR_PANIC` with its message.
//! - Outputs are written through `out` pointers only on success; every tensor handle they
//!   return is the caller's, freed with [`bella_tensor_free`]. In-place ops (`adamw_step`,
//!   `svgd_step`) update the tensors whose handles they are given.
//! - Null handles and pointers are refused with `BELLA_ERR_INVALID`.
//!
//! On the `cuda` backend, tensors may also wrap the caller's device memory (a PyTorch
//! `data_ptr()`), never freed by bella, and work may be queued on the caller's stream
//! ([`bella_tensor_from_device_ptr`], [`bella_tensor_device_ptr`],
//! [`bella_cuda_set_stream`]; not run on a GPU yet: no session had one).
//!
//! Tensors are f32, bf16 or f16 (`BELLA_F32`, `BELLA_BF16`, `BELLA_F16`): 16-bit tensors
//! come in as bit patterns ([`bella_tensor_upload_bits`], or a device pointer with
//! [`bella_tensor_from_device_ptr_as`]), go out as bits ([`bella_tensor_download_bits`]) or
//! widened ([`bella_tensor_download`]), and convert on the device ([`bella_cast`]). Which
//! ops take them, and the rounding rule, are the Rust ones (README "Half precision"):
//! `matmul`, `lora_forward`, `lora_backward` take 16-bit operands (f32 outputs); the other
//! ops refuse them with an error saying to cast.

#![allow(clippy::missing_safety_doc)] // the safety contract is the header's, stated once above

use bella::backend::{AdamW, Backend};
use bella::{ops, BellaError, DType, Tensor};
use std::cell::RefCell;
use std::ffi::{c_char, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

/// An open backend (opaque to C); for `cuda` also its concrete type, for device pointers
/// and streams.
pub struct BellaBackend(Arc<dyn Backend>, Option<CudaHandle>);

#[cfg(feature = "cuda")]
type CudaHandle = Arc<bella::backend::cuda::CudaBackend>;
#[cfg(not(feature = "cuda"))]
type CudaHandle = std::convert::Infallible;

/// A tensor on a backend (opaque to C).
pub struct BellaTensor(Tensor);

/// AdamW's hyper-parameters and step (`step ≥ 1`), as [`bella::backend::AdamW`].
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BellaAdamW {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    pub step: u32,
}

/// Status codes (`BellaStatus` in the header).
pub type BellaStatus = i32;
pub const BELLA_OK: BellaStatus = 0;
/// A value or pointer out of range, a missing input, a null handle.
pub const BELLA_ERR_INVALID: BellaStatus = 1;
/// A tensor of the wrong shape.
pub const BELLA_ERR_SHAPE: BellaStatus = 2;
/// An unknown backend name, or a backend not built in or not present.
pub const BELLA_ERR_UNAVAILABLE: BellaStatus = 3;
/// The device refused (launch failure, out of memory, limits).
pub const BELLA_ERR_DEVICE: BellaStatus = 4;
/// NaN or Inf where finite numbers were required.
pub const BELLA_ERR_NON_FINITE: BellaStatus = 5;
/// A panic inside the library, caught at the boundary.
pub const BELLA_ERR_PANIC: BellaStatus = 6;
/// Anything else (I/O).
pub const BELLA_ERR_OTHER: BellaStatus = 7;

/// Element types (`bella_tensor_dtype`, `bella_tensor_upload_bits`, `bella_cast`).
pub const BELLA_F32: i32 = 0;
/// bfloat16: 1 sign, 8 exponent, 7 mantissa bits.
pub const BELLA_BF16: i32 = 1;
/// IEEE binary16 (`_Float16`, NumPy's `float16`).
pub const BELLA_F16: i32 = 2;

/// The dtype of a `BELLA_*` element-type code.
fn dtype_of(code: i32) -> bella::Result<DType> {
    match code {
        BELLA_F32 => Ok(DType::F32),
        BELLA_BF16 => Ok(DType::BF16),
        BELLA_F16 => Ok(DType::F16),
        other => Err(BellaError::invalid(format!(
            "dtype code {other}: BELLA_F32 (0), BELLA_BF16 (1) or BELLA_F16 (2)"
        ))),
    }
}

/// The `BELLA_*` code of a dtype.
fn code_of(dtype: DType) -> i32 {
    match dtype {
        DType::F32 => BELLA_F32,
        DType::BF16 => BELLA_BF16,
        DType::F16 => BELLA_F16,
    }
}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_error(msg: &str) {
    let c = CString::new(msg.replace('\0', " ")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = c);
}

fn code(e: &BellaError) -> BellaStatus {
    match e {
        BellaError::Shape { .. } => BELLA_ERR_SHAPE,
        BellaError::Invalid(_) | BellaError::Missing { .. } => BELLA_ERR_INVALID,
        BellaError::Unknown { .. } | BellaError::BackendUnavailable { .. } => BELLA_ERR_UNAVAILABLE,
        BellaError::Device { .. } => BELLA_ERR_DEVICE,
        BellaError::NonFinite(_) => BELLA_ERR_NON_FINITE,
        _ => BELLA_ERR_OTHER,
    }
}

/// Runs `f`, turning its error or panic into a status and the thread's last error.
fn guard(f: impl FnOnce() -> bella::Result<()>) -> BellaStatus {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => BELLA_OK,
        Ok(Err(e)) => {
            set_error(&e.to_string());
            code(&e)
        }
        Err(panic) => {
            let msg = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            set_error(&format!("panic inside bella: {msg}"));
            BELLA_ERR_PANIC
        }
    }
}

fn null(what: &str) -> BellaError {
    BellaError::invalid(format!("`{what}` is a null pointer"))
}

unsafe fn backend<'a>(be: *const BellaBackend) -> bella::Result<&'a dyn Backend> {
    unsafe { be.as_ref() }
        .map(|b| b.0.as_ref())
        .ok_or_else(|| null("backend"))
}

unsafe fn tensor<'a>(t: *const BellaTensor, what: &str) -> bella::Result<&'a Tensor> {
    unsafe { t.as_ref() }
        .map(|t| &t.0)
        .ok_or_else(|| null(what))
}

unsafe fn tensor_mut<'a>(t: *mut BellaTensor, what: &str) -> bella::Result<&'a mut Tensor> {
    unsafe { t.as_mut() }
        .map(|t| &mut t.0)
        .ok_or_else(|| null(what))
}

/// Writes a new handle for `t` through `out`.
unsafe fn put(out: *mut *mut BellaTensor, t: Tensor) {
    unsafe { *out = Box::into_raw(Box::new(BellaTensor(t))) };
}

/// Every `out` pointer must be non-null before anything runs.
fn outs<T>(ptrs: &[(*mut *mut T, &str)]) -> bella::Result<()> {
    match ptrs.iter().find(|(p, _)| p.is_null()) {
        Some((_, name)) => Err(null(name)),
        None => Ok(()),
    }
}

/// The caller's `n` values at `p` (`what` names them): null only when there are none.
unsafe fn input<'a, T>(p: *const T, n: usize, what: &str) -> bella::Result<&'a [T]> {
    if n == 0 {
        return Ok(&[]);
    }
    if p.is_null() {
        return Err(null(what));
    }
    Ok(unsafe { std::slice::from_raw_parts(p, n) })
}

/// The caller's buffer of `len` values at `p` for tensor `t`'s elements (`call` and `unit` for
/// the message): `len` must be its element count, `p` null only when there are none.
unsafe fn output<'a, T>(
    p: *mut T,
    len: usize,
    t: &Tensor,
    (call, unit, what): (&str, &str, &str),
) -> bella::Result<&'a mut [T]> {
    if len != t.numel() {
        return Err(BellaError::invalid(format!(
            "{call}: the buffer holds {len} {unit}, the tensor {} ({:?})",
            t.numel(),
            t.shape()
        )));
    }
    if len == 0 {
        return Ok(&mut []);
    }
    if p.is_null() {
        return Err(null(what));
    }
    Ok(unsafe { std::slice::from_raw_parts_mut(p, len) })
}

unsafe fn shape<'a>(shape: *const usize, rank: usize) -> bella::Result<&'a [usize]> {
    if rank == 0 {
        return Ok(&[]);
    }
    if shape.is_null() {
        return Err(null("shape"));
    }
    Ok(unsafe { std::slice::from_raw_parts(shape, rank) })
}

// ---------------------------------------------------------------- library, backends

/// The library version, a static NUL-terminated string.
#[no_mangle]
pub extern "C" fn bella_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// The message of the last failed call on this thread ("" if none); valid until the
/// thread's next failing call.
#[no_mangle]
pub extern "C" fn bella_last_error() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ptr())
}

/// Opens `cpu`, `wgpu`, `cuda`, `ptx-sim` (if built in) or `auto`.
#[no_mangle]
pub unsafe extern "C" fn bella_backend_open(
    name: *const c_char,
    out: *mut *mut BellaBackend,
) -> BellaStatus {
    guard(|| {
        if name.is_null() || out.is_null() {
            return Err(null(if name.is_null() { "name" } else { "out" }));
        }
        let name = unsafe { CStr::from_ptr(name) }
            .to_str()
            .map_err(|_| BellaError::invalid("backend name is not UTF-8"))?;
        let handle = open(name)?;
        unsafe { *out = Box::into_raw(Box::new(handle)) };
        Ok(())
    })
}

/// The backend of that name; `cuda` (or `auto` choosing it) keeps its concrete type.
fn open(name: &str) -> bella::Result<BellaBackend> {
    #[cfg(feature = "cuda")]
    if name == "cuda" {
        let cuda = bella::backend::cuda::open_cuda()?;
        return Ok(BellaBackend(cuda.clone(), Some(cuda)));
    }
    let be = bella::backend::open_named(name)?;
    #[cfg(feature = "cuda")]
    if be.kind() == bella::BackendKind::Cuda {
        // `auto` chose cuda: reopen it with its type (the same primary context).
        drop(be);
        let cuda = bella::backend::cuda::open_cuda()?;
        return Ok(BellaBackend(cuda.clone(), Some(cuda)));
    }
    Ok(BellaBackend(be, None))
}

/// The backend's CUDA type, or an error saying the call needs `cuda`.
#[cfg(feature = "cuda")]
unsafe fn cuda<'a>(be: *const BellaBackend, call: &str) -> bella::Result<&'a CudaHandle> {
    let be = unsafe { be.as_ref() }.ok_or_else(|| null("backend"))?;
    be.1.as_ref().ok_or_else(|| {
        BellaError::invalid(format!(
            "{call} needs the cuda backend (this one is {})",
            be.0.kind()
        ))
    })
}
#[cfg(not(feature = "cuda"))]
unsafe fn cuda<'a>(be: *const BellaBackend, call: &str) -> bella::Result<&'a CudaHandle> {
    let be = unsafe { be.as_ref() }.ok_or_else(|| null("backend"))?;
    Err(BellaError::invalid(format!(
        "{call} needs the cuda backend (this one is {}; this build has no cuda)",
        be.0.kind()
    )))
}

/// Closes a backend (null is ignored). Tensors made on it must be freed first.
#[no_mangle]
pub unsafe extern "C" fn bella_backend_free(be: *mut BellaBackend) {
    if !be.is_null() {
        drop(unsafe { Box::from_raw(be) });
    }
}

/// Waits for all work queued on the backend.
#[no_mangle]
pub unsafe extern "C" fn bella_synchronize(be: *const BellaBackend) -> BellaStatus {
    guard(|| unsafe { backend(be) }?.synchronize())
}

// ---------------------------------------------------------------- tensors

/// A tensor of `shape[0..rank]` holding `data` (row-major, as many f32 as the shape holds).
#[no_mangle]
pub unsafe extern "C" fn bella_tensor_upload(
    be: *const BellaBackend,
    data: *const f32,
    shape_ptr: *const usize,
    rank: usize,
    out: *mut *mut BellaTensor,
) -> BellaStatus {
    guard(|| {
        outs(&[(out, "out")])?;
        let (be, shape) = (unsafe { backend(be) }?, unsafe { shape(shape_ptr, rank) }?);
        let data = unsafe { input(data, shape.iter().product(), "data") }?;
        let t = be.upload(shape, data)?;
        unsafe { put(out, t) };
        Ok(())
    })
}

/// A tensor of zeros of `shape[0..rank]`.
#[no_mangle]
pub unsafe extern "C" fn bella_tensor_zeros(
    be: *const BellaBackend,
    shape_ptr: *const usize,
    rank: usize,
    out: *mut *mut BellaTensor,
) -> BellaStatus {
    guard(|| {
        outs(&[(out, "out")])?;
        let (be, shape) = (unsafe { backend(be) }?, unsafe { shape(shape_ptr, rank) }?);
        let t = be.zeros(shape)?;
        unsafe { put(out, t) };
        Ok(())
    })
}

/// Copies the tensor's values (row-major) into `data`, which holds `len` f32: `len` must be
/// the tensor's element count. A bf16/f16 tensor is widened (exactly).
#[no_mangle]
pub unsafe extern "C" fn bella_tensor_download(
    be: *const BellaBackend,
    t: *const BellaTensor,
    data: *mut f32,
    len: usize,
) -> BellaStatus {
    guard(|| {
        let (be, t) = (unsafe { backend(be) }?, unsafe { tensor(t, "tensor") }?);
        let dst = unsafe { output(data, len, t, ("download", "f32", "data")) }?;
        dst.copy_from_slice(&be.download(t)?);
        Ok(())
    })
}

/// The tensor's rank (0 for a null handle).
#[no_mangle]
pub unsafe extern "C" fn bella_tensor_rank(t: *const BellaTensor) -> usize {
    unsafe { t.as_ref() }.map_or(0, |t| t.0.rank())
}

/// Writes up to `cap` dimensions into `shape`; returns the rank.
#[no_mangle]
pub unsafe extern "C" fn bella_tensor_shape(
    t: *const BellaTensor,
    shape: *mut usize,
    cap: usize,
) -> usize {
    let Some(t) = (unsafe { t.as_ref() }) else {
        return 0;
    };
    let dims = t.0.shape();
    if !shape.is_null() {
        for (i, &d) in dims.iter().take(cap).enumerate() {
            unsafe { *shape.add(i) = d };
        }
    }
    dims.len()
}

/// The tensor's element count (0 for a null handle).
#[no_mangle]
pub unsafe extern "C" fn bella_tensor_numel(t: *const BellaTensor) -> usize {
    unsafe { t.as_ref() }.map_or(0, |t| t.0.numel())
}

/// The element type: `BELLA_F32`, `BELLA_BF16` or `BELLA_F16` (-1 for a null handle).
#[no_mangle]
pub unsafe extern "C" fn bella_tensor_dtype(t: *const BellaTensor) -> i32 {
    unsafe { t.as_ref() }.map_or(-1, |t| code_of(t.0.dtype()))
}

/// A bf16 or f16 tensor (`dtype` `BELLA_BF16` / `BELLA_F16`) of `shape[0..rank]` from the
/// bit patterns `bits` (row-major, one `uint16_t` per element: NumPy's `float16` or
/// `ml_dtypes.bfloat16` viewed as `uint16`, a PyTorch tensor's `.view(torch.int16)`), kept
/// as they are (not widened).
#[no_mangle]
pub unsafe extern "C" fn bella_tensor_upload_bits(
    be: *const BellaBackend,
    bits: *const u16,
    shape_ptr: *const usize,
    rank: usize,
    dtype: i32,
    out: *mut *mut BellaTensor,
) -> BellaStatus {
    guard(|| {
        outs(&[(out, "out")])?;
        let (be, shape) = (unsafe { backend(be) }?, unsafe { shape(shape_ptr, rank) }?);
        let dtype = dtype_of(dtype)?;
        if !dtype.is_half() {
            return Err(BellaError::invalid(
                "bella_tensor_upload_bits takes BELLA_BF16 or BELLA_F16 (f32 data: \
                 bella_tensor_upload)",
            ));
        }
        let bits = unsafe { input(bits, shape.iter().product(), "bits") }?;
        let t = be.upload_bits(shape, dtype, bits)?;
        unsafe { put(out, t) };
        Ok(())
    })
}

/// Copies a bf16/f16 tensor's bit patterns (row-major, one `uint16_t` per element) into
/// `bits`, which holds `len` of them: `len` must be the element count. (An f32 tensor is
/// refused: `bella_tensor_download`, which also widens a 16-bit tensor exactly.)
#[no_mangle]
pub unsafe extern "C" fn bella_tensor_download_bits(
    be: *const BellaBackend,
    t: *const BellaTensor,
    bits: *mut u16,
    len: usize,
) -> BellaStatus {
    guard(|| {
        let (be, t) = (unsafe { backend(be) }?, unsafe { tensor(t, "tensor") }?);
        let dst = unsafe { output(bits, len, t, ("download_bits", "values", "bits")) }?;
        dst.copy_from_slice(&be.download_bits(t)?);
        Ok(())
    })
}

/// `cast`: `x` converted to `dtype` on the device (f32 to bf16/f16 rounds to nearest, ties
/// to even, as `ops::cast`; a 16-bit type to f32 is exact; the same dtype is a copy of the
/// handle's data reference).
#[no_mangle]
pub unsafe extern "C" fn bella_cast(
    be: *const BellaBackend,
    x: *const BellaTensor,
    dtype: i32,
    out: *mut *mut BellaTensor,
) -> BellaStatus {
    guard(|| unsafe {
        outs(&[(out, "out")])?;
        let y = ops::cast(backend(be)?, tensor(x, "x")?, dtype_of(dtype)?)?;
        put(out, y);
        Ok(())
    })
}

/// `cuda` only: a tensor of `shape[0..rank]` over the caller's device memory at `ptr`
/// (row-major f32, e.g. a PyTorch tensor's `data_ptr()`), read and written in place by the
/// ops and never freed by bella. `ptr` must stay valid until the handle is freed and not be
/// written by other work while bella's queued work uses it (queue both on one stream:
/// [`bella_cuda_set_stream`]).
#[no_mangle]
pub unsafe extern "C" fn bella_tensor_from_device_ptr(
    be: *const BellaBackend,
    ptr: u64,
    shape_ptr: *const usize,
    rank: usize,
    out: *mut *mut BellaTensor,
) -> BellaStatus {
    guard(|| {
        outs(&[(out, "out")])?;
        let cuda = unsafe { cuda(be, "bella_tensor_from_device_ptr") }?;
        let shape = unsafe { shape(shape_ptr, rank) }?;
        #[cfg(feature = "cuda")]
        {
            let t = unsafe { cuda.tensor_from_device_ptr(ptr, shape) }?;
            unsafe { put(out, t) };
            Ok(())
        }
        #[cfg(not(feature = "cuda"))]
        {
            let _ = (ptr, shape);
            match *cuda {}
        }
    })
}

/// `cuda` only: as [`bella_tensor_from_device_ptr`] with an element type (`BELLA_F32`,
/// `BELLA_BF16`, `BELLA_F16`): a PyTorch `bfloat16` / `float16` tensor's memory used in
/// place. A 16-bit tensor needs an even element count (bella's storage is 32-bit words of
/// two values) and a 4-byte aligned `ptr`.
#[no_mangle]
pub unsafe extern "C" fn bella_tensor_from_device_ptr_as(
    be: *const BellaBackend,
    ptr: u64,
    shape_ptr: *const usize,
    rank: usize,
    dtype: i32,
    out: *mut *mut BellaTensor,
) -> BellaStatus {
    guard(|| {
        outs(&[(out, "out")])?;
        let cuda = unsafe { cuda(be, "bella_tensor_from_device_ptr_as") }?;
        let shape = unsafe { shape(shape_ptr, rank) }?;
        let dtype = dtype_of(dtype)?;
        #[cfg(feature = "cuda")]
        {
            let t = unsafe { cuda.tensor_from_device_ptr_as(ptr, shape, dtype) }?;
            unsafe { put(out, t) };
            Ok(())
        }
        #[cfg(not(feature = "cuda"))]
        {
            let _ = (ptr, shape, dtype);
            match *cuda {}
        }
    })
}

/// `cuda` only: the device address of a tensor's data (valid while the handle lives), to
/// read an output in place.
#[no_mangle]
pub unsafe extern "C" fn bella_tensor_device_ptr(
    be: *const BellaBackend,
    t: *const BellaTensor,
    out: *mut u64,
) -> BellaStatus {
    guard(|| {
        if out.is_null() {
            return Err(null("out"));
        }
        let cuda = unsafe { cuda(be, "bella_tensor_device_ptr") }?;
        let t = unsafe { tensor(t, "t") }?;
        #[cfg(feature = "cuda")]
        {
            let p = cuda.device_ptr(t)?;
            unsafe { *out = p };
            Ok(())
        }
        #[cfg(not(feature = "cuda"))]
        {
            let _ = t;
            match *cuda {}
        }
    })
}

/// `cuda` only: queue all later work on the caller's stream (a `CUstream`; 0 is the legacy
/// default stream) when `use_stream` is non-zero, else on bella's own stream again. Work
/// queued before is ordered before the switch. The stream must outlive the tensors made
/// while it is set.
#[no_mangle]
pub unsafe extern "C" fn bella_cuda_set_stream(
    be: *const BellaBackend,
    stream: usize,
    use_stream: i32,
) -> BellaStatus {
    guard(|| {
        let cuda = unsafe { cuda(be, "bella_cuda_set_stream") }?;
        #[cfg(feature = "cuda")]
        {
            unsafe { cuda.set_stream((use_stream != 0).then_some(stream)) }
        }
        #[cfg(not(feature = "cuda"))]
        {
            let _ = (stream, use_stream);
            match *cuda {}
        }
    })
}

/// Frees a tensor (null is ignored).
#[no_mangle]
pub unsafe extern "C" fn bella_tensor_free(t: *mut BellaTensor) {
    if !t.is_null() {
        drop(unsafe { Box::from_raw(t) });
    }
}

// ---------------------------------------------------------------- ops (DESIGN.md order)

/// `lora_forward`: `y [K, M, O]`, `h [K, M, r]` (`bias` may be null).
#[no_mangle]
pub unsafe extern "C" fn bella_lora_forward(
    be: *const BellaBackend,
    x: *const BellaTensor,
    weight: *const BellaTensor,
    bias: *const BellaTensor,
    lora_a: *const BellaTensor,
    lora_b: *const BellaTensor,
    scale: f32,
    y_out: *mut *mut BellaTensor,
    h_out: *mut *mut BellaTensor,
) -> BellaStatus {
    guard(|| unsafe {
        outs(&[(y_out, "y_out"), (h_out, "h_out")])?;
        let (a, b) = (tensor(lora_a, "lora_a")?, tensor(lora_b, "lora_b")?);
        let adapter = ops::Adapter::from_tensors("lora_forward", a, b)?;
        let bias = if bias.is_null() {
            None
        } else {
            Some(tensor(bias, "bias")?)
        };
        let r = ops::lora_forward(
            backend(be)?,
            tensor(x, "x")?,
            tensor(weight, "weight")?,
            bias,
            &adapter,
            scale,
        )?;
        put(y_out, r.y);
        put(h_out, r.h);
        Ok(())
    })
}

/// `lora_backward`: `dx`, `d_lora_a [K, r, I]`, `d_lora_b [K, O, r]`.
#[no_mangle]
pub unsafe extern "C" fn bella_lora_backward(
    be: *const BellaBackend,
    dy: *const BellaTensor,
    x: *const BellaTensor,
    weight: *const BellaTensor,
    lora_a: *const BellaTensor,
    lora_b: *const BellaTensor,
    h: *const BellaTensor,
    scale: f32,
    dx_out: *mut *mut BellaTensor,
    d_lora_a_out: *mut *mut BellaTensor,
    d_lora_b_out: *mut *mut BellaTensor,
) -> BellaStatus {
    guard(|| unsafe {
        outs(&[
            (dx_out, "dx_out"),
            (d_lora_a_out, "d_lora_a_out"),
            (d_lora_b_out, "d_lora_b_out"),
        ])?;
        let adapter = ops::Adapter::from_tensors(
            "lora_backward",
            tensor(lora_a, "lora_a")?,
            tensor(lora_b, "lora_b")?,
        )?;
        let g = ops::lora_backward(
            backend(be)?,
            tensor(dy, "dy")?,
            tensor(x, "x")?,
            tensor(weight, "weight")?,
            &adapter,
            tensor(h, "h")?,
            scale,
        )?;
        put(dx_out, g.dx);
        put(d_lora_a_out, g.d_lora_a);
        put(d_lora_b_out, g.d_lora_b);
        Ok(())
    })
}

/// `matmul`: `c = alpha · op(a) · op(b)` (2-D or batched 3-D operands).
#[no_mangle]
pub unsafe extern "C" fn bella_matmul(
    be: *const BellaBackend,
    a: *const BellaTensor,
    b: *const BellaTensor,
    trans_a: bool,
    trans_b: bool,
    alpha: f32,
    c_out: *mut *mut BellaTensor,
) -> BellaStatus {
    guard(|| unsafe {
        outs(&[(c_out, "c_out")])?;
        let c = ops::matmul(
            backend(be)?,
            tensor(a, "a")?,
            tensor(b, "b")?,
            trans_a,
            trans_b,
            alpha,
        )?;
        put(c_out, c);
        Ok(())
    })
}

/// `pairwise_sqdist`: `[K, K]` squared distances of the rows of `theta [K, D]`.
#[no_mangle]
pub unsafe extern "C" fn bella_pairwise_sqdist(
    be: *const BellaBackend,
    theta: *const BellaTensor,
    out: *mut *mut BellaTensor,
) -> BellaStatus {
    guard(|| unsafe {
        outs(&[(out, "out")])?;
        let d = ops::pairwise_sqdist(backend(be)?, tensor(theta, "theta")?)?;
        put(out, d);
        Ok(())
    })
}

/// `rbf_kernel`: the `[K, K]` kernel and, through `bandwidth_out`, the bandwidth used
/// (`bandwidth` null: the median heuristic).
#[no_mangle]
pub unsafe extern "C" fn bella_rbf_kernel(
    be: *const BellaBackend,
    theta: *const BellaTensor,
    bandwidth: *const f32,
    kernel_out: *mut *mut BellaTensor,
    bandwidth_out: *mut f32,
) -> BellaStatus {
    guard(|| unsafe {
        outs(&[(kernel_out, "kernel_out")])?;
        if bandwidth_out.is_null() {
            return Err(null("bandwidth_out"));
        }
        let given = bandwidth.as_ref().copied();
        let (k, h) = ops::rbf_kernel(backend(be)?, tensor(theta, "theta")?, given)?;
        put(kernel_out, k);
        *bandwidth_out = h;
        Ok(())
    })
}

/// `svgd_direction`: `phi [K, D]`.
#[no_mangle]
pub unsafe extern "C" fn bella_svgd_direction(
    be: *const BellaBackend,
    theta: *const BellaTensor,
    score: *const BellaTensor,
    kernel: *const BellaTensor,
    bandwidth: f32,
    phi_out: *mut *mut BellaTensor,
) -> BellaStatus {
    guard(|| unsafe {
        outs(&[(phi_out, "phi_out")])?;
        let phi = ops::svgd_direction(
            backend(be)?,
            tensor(theta, "theta")?,
            tensor(score, "score")?,
            tensor(kernel, "kernel")?,
            bandwidth,
        )?;
        put(phi_out, phi);
        Ok(())
    })
}

fn adamw(hp: *const BellaAdamW) -> bella::Result<AdamW> {
    let hp = unsafe { hp.as_ref() }.ok_or_else(|| null("hp"))?;
    Ok(AdamW {
        lr: hp.lr,
        beta1: hp.beta1,
        beta2: hp.beta2,
        eps: hp.eps,
        weight_decay: hp.weight_decay,
        step: hp.step,
    })
}

/// `adamw_step`, in place on `param`, `m`, `v`.
#[no_mangle]
pub unsafe extern "C" fn bella_adamw_step(
    be: *const BellaBackend,
    param: *mut BellaTensor,
    grad: *const BellaTensor,
    m: *mut BellaTensor,
    v: *mut BellaTensor,
    hp: *const BellaAdamW,
) -> BellaStatus {
    guard(|| unsafe {
        let hp = adamw(hp)?;
        ops::adamw_step(
            backend(be)?,
            tensor_mut(param, "param")?,
            tensor(grad, "grad")?,
            tensor_mut(m, "m")?,
            tensor_mut(v, "v")?,
            &hp,
        )
    })
}

/// `svgd_step`: `svgd_direction` then AdamW with gradient `grad_scale · φ`, in place on
/// `theta`, `m`, `v`.
#[no_mangle]
pub unsafe extern "C" fn bella_svgd_step(
    be: *const BellaBackend,
    theta: *mut BellaTensor,
    score: *const BellaTensor,
    kernel: *const BellaTensor,
    bandwidth: f32,
    grad_scale: f32,
    m: *mut BellaTensor,
    v: *mut BellaTensor,
    hp: *const BellaAdamW,
) -> BellaStatus {
    guard(|| unsafe {
        let hp = adamw(hp)?;
        ops::svgd_step(
            backend(be)?,
            tensor_mut(theta, "theta")?,
            tensor(score, "score")?,
            tensor(kernel, "kernel")?,
            bandwidth,
            grad_scale,
            tensor_mut(m, "m")?,
            tensor_mut(v, "v")?,
            &hp,
        )
    })
}

/// One input, one output: `relu_forward`, `gelu_forward`.
unsafe fn unary(
    be: *const BellaBackend,
    x: *const BellaTensor,
    out: *mut *mut BellaTensor,
    f: fn(&dyn Backend, &Tensor) -> bella::Result<Tensor>,
) -> BellaStatus {
    guard(|| unsafe {
        outs(&[(out, "out")])?;
        let y = f(backend(be)?, tensor(x, "x")?)?;
        put(out, y);
        Ok(())
    })
}

/// `x` and `dy` in, `dx` out: `relu_backward`, `gelu_backward`.
unsafe fn binary(
    be: *const BellaBackend,
    x: *const BellaTensor,
    dy: *const BellaTensor,
    out: *mut *mut BellaTensor,
    f: fn(&dyn Backend, &Tensor, &Tensor) -> bella::Result<Tensor>,
) -> BellaStatus {
    guard(|| unsafe {
        outs(&[(out, "out")])?;
        let dx = f(backend(be)?, tensor(x, "x")?, tensor(dy, "dy")?)?;
        put(out, dx);
        Ok(())
    })
}

/// `relu_forward`: `max(x, 0)`.
#[no_mangle]
pub unsafe extern "C" fn bella_relu_forward(
    be: *const BellaBackend,
    x: *const BellaTensor,
    y_out: *mut *mut BellaTensor,
) -> BellaStatus {
    unsafe { unary(be, x, y_out, ops::relu_forward) }
}

/// `relu_backward`: `dy · 1[x > 0]`.
#[no_mangle]
pub unsafe extern "C" fn bella_relu_backward(
    be: *const BellaBackend,
    x: *const BellaTensor,
    dy: *const BellaTensor,
    dx_out: *mut *mut BellaTensor,
) -> BellaStatus {
    unsafe { binary(be, x, dy, dx_out, ops::relu_backward) }
}

/// `gelu_forward` (tanh form).
#[no_mangle]
pub unsafe extern "C" fn bella_gelu_forward(
    be: *const BellaBackend,
    x: *const BellaTensor,
    y_out: *mut *mut BellaTensor,
) -> BellaStatus {
    unsafe { unary(be, x, y_out, ops::gelu_forward) }
}

/// `gelu_backward`: `dy · gelu'(x)`.
#[no_mangle]
pub unsafe extern "C" fn bella_gelu_backward(
    be: *const BellaBackend,
    x: *const BellaTensor,
    dy: *const BellaTensor,
    dx_out: *mut *mut BellaTensor,
) -> BellaStatus {
    unsafe { binary(be, x, dy, dx_out, ops::gelu_backward) }
}

/// `softmax_xent`: per-particle mean loss `[K]` and `dlogits [K, M, C]`; `labels` holds
/// `n_labels = M` class indices.
#[no_mangle]
pub unsafe extern "C" fn bella_softmax_xent(
    be: *const BellaBackend,
    logits: *const BellaTensor,
    labels: *const u32,
    n_labels: usize,
    loss_out: *mut *mut BellaTensor,
    dlogits_out: *mut *mut BellaTensor,
) -> BellaStatus {
    guard(|| unsafe {
        outs(&[(loss_out, "loss_out"), (dlogits_out, "dlogits_out")])?;
        if labels.is_null() && n_labels > 0 {
            return Err(null("labels"));
        }
        let labels = if n_labels == 0 {
            &[][..]
        } else {
            std::slice::from_raw_parts(labels, n_labels)
        };
        let (loss, dl) = ops::softmax_xent(backend(be)?, tensor(logits, "logits")?, labels)?;
        put(loss_out, loss);
        put(dlogits_out, dl);
        Ok(())
    })
}

/// `ensemble_stats`: `probs [M, C]`, `entropy`, `expected_entropy`, `mutual_info` `[M]`.
#[no_mangle]
pub unsafe extern "C" fn bella_ensemble_stats(
    be: *const BellaBackend,
    logits: *const BellaTensor,
    probs_out: *mut *mut BellaTensor,
    entropy_out: *mut *mut BellaTensor,
    expected_entropy_out: *mut *mut BellaTensor,
    mutual_info_out: *mut *mut BellaTensor,
) -> BellaStatus {
    guard(|| unsafe {
        outs(&[
            (probs_out, "probs_out"),
            (entropy_out, "entropy_out"),
            (expected_entropy_out, "expected_entropy_out"),
            (mutual_info_out, "mutual_info_out"),
        ])?;
        let s = ops::ensemble_stats(backend(be)?, tensor(logits, "logits")?)?;
        put(probs_out, s.probs);
        put(entropy_out, s.entropy);
        put(expected_entropy_out, s.expected_entropy);
        put(mutual_info_out, s.mutual_info);
        Ok(())
    })
}

/// `axpby`: `alpha · x + beta · y`.
#[no_mangle]
pub unsafe extern "C" fn bella_axpby(
    be: *const BellaBackend,
    alpha: f32,
    x: *const BellaTensor,
    beta: f32,
    y: *const BellaTensor,
    out: *mut *mut BellaTensor,
) -> BellaStatus {
    guard(|| unsafe {
        outs(&[(out, "out")])?;
        let r = ops::axpby(backend(be)?, alpha, tensor(x, "x")?, beta, tensor(y, "y")?)?;
        put(out, r);
        Ok(())
    })
}
