//! The small driver surface shared by the CUDA backend (cudarc) and the PTX simulator:
//! allocate, copy, load a module, launch. The host launch code in `backend::ptx` is written
//! once against this trait, so a bug in a kernel *or* in its launch code shows up on the
//! simulator too.

use crate::backend::BackendKind;
use crate::error::Result;

/// One kernel argument, in the order of the kernel's `.param` list.
pub enum Param<'a, B> {
    /// A device pointer (`.param .u64`): the buffer's base address plus `byte_offset`.
    Ptr {
        /// The buffer.
        buf: &'a B,
        /// Offset into it, in bytes.
        byte_offset: usize,
    },
    /// `.param .u32`.
    U32(u32),
    /// `.param .s32`.
    I32(i32),
    /// `.param .f32`.
    F32(f32),
    /// `.param .u64` (a value, not a pointer).
    U64(u64),
}

/// Grid, block and dynamic shared memory of one launch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LaunchConfig {
    /// CTAs in x, y, z (each within [`DeviceProps::max_grid`]).
    pub grid: [u32; 3],
    /// Threads per CTA in x, y, z.
    pub block: [u32; 3],
    /// Dynamic shared memory per CTA, bytes.
    pub shared_bytes: u32,
}

/// Device properties the launch code sizes its grids from.
#[derive(Clone, Debug)]
pub struct DeviceProps {
    /// The device's name, for reports.
    pub name: String,
    /// Largest grid in x, y, z.
    pub max_grid: [u32; 3],
    /// Most threads in one CTA.
    pub max_threads_per_block: u32,
    /// Most shared memory one CTA may use, bytes.
    pub max_shared_per_block: u32,
    /// Streaming multiprocessors (grids are sized from it).
    pub sm_count: u32,
}

/// What the PTX host code needs of a device: real CUDA (`CudaDriver`, feature `cuda`) or
/// the simulator (`SimDriver`, feature `ptx-sim`). Buffers hold f32 elements; offsets and
/// lengths count elements unless named in bytes.
pub trait Driver: Send + Sync + 'static {
    /// A device allocation of f32 elements.
    type Buf: Send + Sync + 'static;

    /// The backend kind tensors of this driver carry.
    fn kind(&self) -> BackendKind;
    /// The device's limits.
    fn props(&self) -> &DeviceProps;
    /// What may still be allocated (free device memory on CUDA, host memory on the simulator).
    fn memory_budget(&self) -> crate::backend::MemoryBudget;
    /// A new allocation of `len` zeros.
    fn alloc_zeroed(&self, len: usize) -> Result<Self::Buf>;
    /// A new allocation holding `data`.
    fn upload(&self, data: &[f32]) -> Result<Self::Buf>;
    /// The first `len` elements of `buf`, copied to the host after queued work.
    fn download(&self, buf: &Self::Buf, len: usize) -> Result<Vec<f32>>;
    /// Number of f32 elements in the allocation.
    fn buf_len(&self, buf: &Self::Buf) -> usize;
    /// Device-to-device copy of `len` elements.
    fn copy(
        &self,
        src: &Self::Buf,
        src_off: usize,
        dst: &Self::Buf,
        dst_off: usize,
        len: usize,
    ) -> Result<()>;
    /// Load (and cache) a PTX module under `name`; loading the same name twice is a no-op.
    fn load_module(&self, name: &str, ptx: &str) -> Result<()>;
    /// Launch `kernel` of module `module`. Errors name the kernel.
    fn launch(
        &self,
        module: &str,
        kernel: &str,
        cfg: LaunchConfig,
        params: &[Param<'_, Self::Buf>],
    ) -> Result<()>;
    /// Wait for all queued work.
    fn synchronize(&self) -> Result<()>;
}
